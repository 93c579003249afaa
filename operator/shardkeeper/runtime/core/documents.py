"""Documents in journals: JSON-lines framing, JSON pointers and document UUIDs. Pure.

A collection journal's payload is a sequence of documents, each a JSON object written
compactly (no insignificant whitespace, UTF-8) and ended by ``\\n``. A fragment always
holds whole lines, so a document's offset (the journal offset of its first byte) and its
end (the offset just past its ``\\n``) can be computed from any fragment alone.

Every document a shard writes carries ``_meta.uuid``: a UUID version 5 of the journal name
and the offset of the document's line. The same output at the same place always gets the
same UUID, so a batch written again after a crash is byte for byte what the first attempt
wrote.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson

META = "_meta"
UUID_FIELD = "uuid"
CLOCK_FIELD = "clock"
# UUID namespace of Shardkeeper document ids (a fixed, random UUID)
DOCUMENT_NAMESPACE = uuid.UUID("6f1d3c9e-5a0b-4e7c-9f21-8d3b7a64c2e5")

Document = dict[str, Any]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""What :func:`resolve` returns where a pointer leads nowhere."""

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class DocumentError(ValueError):
    """A line of a journal, or a posted body, is not a JSON object."""


def encode_line(document: Mapping[str, Any]) -> bytes:
    """One document as a compact JSON line, ending in a newline."""
    return (_encoder.encode(document) + "\n").encode()


def encode_plain_line(document: Mapping[str, Any]) -> bytes:
    """:func:`encode_line` of a document whose leaves are only ``str``, ``int``, ``None``
    and floats that :func:`plain_float` admits (rows of SQL lambdas): the same bytes, written
    by orjson. On those values the two encoders agree byte for byte (property-tested); orjson
    differs on others (floats below 1e-4, NaN), which callers must send to
    :func:`encode_line`. A string holding a lone surrogate makes orjson refuse; the stdlib
    encoder then raises what it always raised."""
    try:
        return orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return encode_line(document)


def plain_float(value: float) -> bool:
    """Whether orjson writes ``value`` exactly as ``float.__repr__`` does: zero and finite
    magnitudes from 1e-4 up (below, orjson may avoid the exponent that repr uses; NaN and
    infinities the stdlib refuses, orjson writes as null)."""
    return 1e-4 <= abs(value) < _INFINITY or value == 0.0


_INFINITY = float("inf")


_NAMESPACE_BYTES = DOCUMENT_NAMESPACE.bytes


def document_uuid(journal: str, offset: int) -> str:
    """The UUID of the document whose line begins at ``offset`` of ``journal``: exactly
    ``uuid.uuid5(DOCUMENT_NAMESPACE, f"{journal}@{offset}")``, without the UUID object
    (this runs once per output document)."""
    return uuid_maker(journal)(offset)


def uuid_maker(journal: str) -> Callable[[int], str]:
    """:func:`document_uuid` for one journal: the hash of the namespace and the journal's
    name is computed once, and each call hashes only the offset."""
    prefix = hashlib.sha1(_NAMESPACE_BYTES + f"{journal}@".encode())

    def make(offset: int) -> str:
        hashed = prefix.copy()
        hashed.update(b"%d" % offset)
        text = hashed.hexdigest()
        # version 5 is the 13th hex digit; the RFC 4122 variant sets the top two bits of
        # byte 8 to 10, so the 17th digit becomes 8, 9, a or b
        return (
            f"{text[:8]}-{text[8:12]}-5{text[13:16]}-"
            f"{_VARIANT_DIGITS[text[16]]}{text[17:20]}-{text[20:32]}"
        )

    return make


_VARIANT_DIGITS = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def with_uuid(document: Mapping[str, Any], doc_uuid: str, clock: int | None = None) -> Document:
    """A copy of ``document`` whose ``_meta.uuid`` is ``doc_uuid`` and, if given,
    ``_meta.clock`` is ``clock`` (other ``_meta`` kept)."""
    meta = document.get(META)
    merged = dict(meta) if isinstance(meta, Mapping) else {}
    merged[UUID_FIELD] = doc_uuid
    if clock is not None:
        merged[CLOCK_FIELD] = clock
    return {**document, META: merged}


def clock_of(document: Mapping[str, Any]) -> int | None:
    """``_meta.clock``: the commit sequence number of the transaction that wrote the
    document, in its writer's store. Documents of one key from two writers (the halves of
    a split) are in the order of their clocks; ``None`` for a document without one."""
    meta = document.get(META)
    clock = meta.get(CLOCK_FIELD) if isinstance(meta, Mapping) else None
    return clock if isinstance(clock, int) and not isinstance(clock, bool) else None


def uuid_of(document: Mapping[str, Any]) -> str | None:
    meta = document.get(META)
    if isinstance(meta, Mapping):
        value = meta.get(UUID_FIELD)
        if isinstance(value, str):
            return value
    return None


@dataclasses.dataclass(frozen=True)
class Line:
    """One line of a journal: where it sits, and its bytes without the newline."""

    begin: int
    end: int
    data: bytes


def split_lines(payload: bytes, begin: int) -> Iterator[Line]:
    """The lines of a fragment payload that starts at journal offset ``begin``.

    A last line without a newline is still a line (its end is the payload's end): only a
    writer that does not follow the framing produces one, and the parser then says so.
    """
    start = 0
    size = len(payload)
    while start < size:
        stop = payload.find(b"\n", start)
        if stop < 0:
            yield Line(begin + start, begin + size, payload[start:])
            return
        yield Line(begin + start, begin + stop + 1, payload[start:stop])
        start = stop + 1


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_refuse_constant)


def parse_json(data: bytes | str) -> Any:
    """Strict JSON in UTF-8: no ``NaN`` or ``Infinity``, which Python would otherwise accept."""
    return _decoder.decode(data.decode() if isinstance(data, bytes) else data)


# Lines are parsed by orjson where it gives exactly what parse_json gives, which is
# everywhere except: integers beyond 64 bits (orjson makes them floats, silently), numbers
# beyond the float range (parse_json makes them infinities) and lone surrogates (parse_json
# keeps them). orjson refuses the last two, and a line with 19 digits in a row (the first
# integers beyond 64 bits have 19 or 20) is left to parse_json: so every line parses to the
# same value, or fails with the same message, as it always did.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= c <= 0x39 else 0x2E for c in range(256))
_LONG_DIGIT_RUN = b"0" * 19


def orjson_parses(data: bytes) -> bool:
    """Whether orjson parses ``data`` (one line, or several joined by newlines) exactly as
    :func:`parse_json` does, or fails where it fails."""
    return _LONG_DIGIT_RUN not in data.translate(_DIGITS_AS_ZEROS)


def parse_line(data: bytes | str, *, checked: bool = False) -> Document:
    """A document from one line; raises :class:`DocumentError` unless it is a JSON object.
    ``checked`` says :func:`orjson_parses` already holds for ``data`` (a bytes line)."""
    value: Any = None
    if checked or (isinstance(data, bytes) and orjson_parses(data)):
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            value = None  # parse_json decides, and explains
        if isinstance(value, dict):
            return value
    if value is None:
        try:
            value = parse_json(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DocumentError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DocumentError(f"a document is a JSON object, not {type(value).__name__}")
    return value


def parse_body(body: bytes) -> list[Document]:
    """Documents of a request body: one JSON object, a JSON array of objects, or NDJSON."""
    text = body.strip()
    if not text:
        raise DocumentError("the body holds no document")
    try:
        value = parse_json(text)
    except ValueError:
        # not one JSON value: newline-delimited documents, one per non-blank line
        documents = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    documents.append(parse_line(line))
                except DocumentError as exc:
                    raise DocumentError(f"line {number}: {exc}") from None
        return documents
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise DocumentError(
                    f"document {index}: a document is a JSON object, not {type(item).__name__}"
                )
        return value
    raise DocumentError(f"a document is a JSON object, not {type(value).__name__}")


# --- JSON pointers (RFC 6901) ----------------------------------------------------------------


def pointer_tokens(pointer: str) -> tuple[str, ...]:
    """The reference tokens of a pointer: ``/a/b~1c`` -> ``("a", "b/c")``."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"a JSON pointer starts with '/': {pointer!r}")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/"))


def resolve_tokens(document: Any, tokens: Iterable[str]) -> Any:
    """The value at ``tokens`` in ``document``, or :data:`MISSING`."""
    value = document
    for token in tokens:
        if isinstance(value, dict):
            if token not in value:
                return MISSING
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and (token == "0" or token[0] != "0"):
            index = int(token)
            if index >= len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value


def resolve(document: Any, pointer: str) -> Any:
    """The value at JSON pointer ``pointer`` in ``document``, or :data:`MISSING`."""
    return resolve_tokens(document, pointer_tokens(pointer))
