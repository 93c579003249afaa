"""Compressing output payloads for the store (see :mod:`.checkpoint`), whole or as they
are written."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from concurrent.futures import Future

# JSON lines shrink several times even at the fastest level, and every byte stored is
# written again to the recovery log
LEVEL = 1

# runs a piece of compression work on another thread (zlib works without holding the GIL)
Submit = Callable[[Callable[[], bytes]], "Future[bytes]"]


def compress(payload: bytes) -> bytes:
    return zlib.compress(payload, LEVEL)


class StreamingCompression:
    """One payload compressed piece by piece through ``submit`` while it is still being
    written: the pieces make one zlib stream of the whole payload (what :func:`compress`
    makes of it, though perhaps in other bytes), so once the payload is complete only its
    last piece is left to compress, not all of it on the way to the commit."""

    def __init__(self, submit: Submit) -> None:
        self._submit = submit
        self._stream = zlib.compressobj(LEVEL)
        self._pieces: list[Future[bytes]] = []

    def add(self, piece: bytes) -> None:
        self._chain(functools.partial(self._stream.compress, piece))

    def finish(self, piece: bytes) -> Future[bytes]:
        """Add the last ``piece``; the whole payload compressed, once it is done."""
        if piece:
            self.add(piece)
        self._chain(self._stream.flush)
        pieces = self._pieces
        return self._submit(lambda: b"".join(p.result() for p in pieces))

    def _chain(self, work: Callable[[], bytes]) -> None:
        # the stream takes its pieces in order, whatever thread each one runs on
        previous = self._pieces[-1] if self._pieces else None

        def run() -> bytes:
            if previous is not None:
                previous.result()
            return work()

        self._pieces.append(self._submit(run))
