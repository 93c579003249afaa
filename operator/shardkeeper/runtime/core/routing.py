"""Which shard a document belongs to: its key hash and its r-clock. Pure.

Key hash
    The values at the collection's key pointers, in the order of the key, packed as a
    canonical JSON array (compact separators, object members sorted by name, UTF-8 without
    escapes beyond JSON's own, a number with an integral value written as an integer, so
    ``1``, ``1.0`` and ``-0.0``/``0`` pack alike) and hashed with BLAKE2b (4-byte digest,
    personalisation ``sk-key``), read as a big-endian unsigned 32-bit integer.

r-clock
    BLAKE2b (4-byte digest, personalisation ``sk-rclock``) of the document's
    ``_meta.uuid``, big-endian. A document without one (written by something that is not a
    shard) hashes ``<journal>@<offset>`` instead, which is just as stable.

A shard owns a document iff ``keyBegin <= key hash <= keyEnd`` and ``rClockBegin <=
r-clock <= rClockEnd`` (inclusive bounds, as on the Shard).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any

from shardkeeper.api.meta import RANGE_MAX, RANGE_MIN
from shardkeeper.api.shard import ShardSpec
from shardkeeper.runtime.core.documents import MISSING, pointer_tokens, resolve_tokens, uuid_of

_KEY_PERSON = b"sk-key"
_RCLOCK_PERSON = b"sk-rclock"
_packer = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, sort_keys=True, allow_nan=False
)


class MissingKey(ValueError):
    """A document lacks a value at one of its collection's key pointers."""


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        return value
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def pack_key(values: Sequence[Any]) -> bytes:
    """The canonical packing of a key's values."""
    # most keys are strings and integers: write those directly, exactly as the encoder would
    parts = []
    for value in values:
        kind = type(value)
        if kind is str:
            parts.append(encode_basestring(value))
        elif kind is int:
            parts.append(int.__repr__(value))
        else:
            return _packer.encode([_canonical(v) for v in values]).encode()
    return ("[" + ",".join(parts) + "]").encode()


def hash32(data: bytes, person: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=4, person=person).digest(), "big")


# copying a keyed hasher costs half of making one with its parameters (once per document)
_KEY_HASHER = hashlib.blake2b(digest_size=4, person=_KEY_PERSON)
_RCLOCK_HASHER = hashlib.blake2b(digest_size=4, person=_RCLOCK_PERSON)


def key_hash(packed: bytes) -> int:
    hasher = _KEY_HASHER.copy()
    hasher.update(packed)
    return int.from_bytes(hasher.digest(), "big")


def r_clock(document: dict[str, Any], journal: str, offset: int) -> int:
    doc_uuid = uuid_of(document)
    source = doc_uuid if doc_uuid is not None else f"{journal}@{offset}"
    hasher = _RCLOCK_HASHER.copy()
    hasher.update(source.encode())
    return int.from_bytes(hasher.digest(), "big")


@dataclasses.dataclass(frozen=True)
class KeyExtractor:
    """Reads a collection's key out of its documents."""

    pointers: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]
    # keys of top-level fields only (the common case) are read with one C call: the value
    # (one pointer) or the values (several) of an object, or KeyError if one is missing
    _getter: Callable[[Any], Any] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )

    @classmethod
    def of(cls, pointers: Sequence[str]) -> KeyExtractor:
        tokens = tuple(pointer_tokens(p) for p in pointers)
        getter = None
        if tokens and all(len(t) == 1 for t in tokens):
            getter = itemgetter(*(t[0] for t in tokens))
        return cls(tuple(pointers), tokens, getter)

    @property
    def getter(self) -> Callable[[Any], Any] | None:
        """For a key of top-level fields only: what reads it from a dict in one C call
        (``KeyError`` if a field is missing); else ``None``."""
        return self._getter

    def values(self, document: Any) -> list[Any]:
        getter = self._getter
        if getter is not None and document.__class__ is dict:
            try:
                found = getter(document)
            except KeyError:
                pass  # the loop below names the missing pointer
            else:
                return [found] if len(self.tokens) == 1 else list(found)
        values = []
        for pointer, tokens in zip(self.pointers, self.tokens, strict=True):
            value = resolve_tokens(document, tokens)
            if value is MISSING:
                raise MissingKey(f"the document has no value at key pointer {pointer}")
            values.append(value)
        return values

    def require(self, document: Any) -> None:
        """Raise :class:`MissingKey` unless ``document`` has every value of the key (what
        :meth:`values` checks, without collecting them)."""
        getter = self._getter
        if getter is not None and document.__class__ is dict:
            try:
                getter(document)
            except KeyError:
                pass  # values names the missing pointer
            else:
                return
        self.values(document)

    def packed(self, document: Any) -> bytes:
        return pack_key(self.values(document))

    def hash(self, document: Any) -> int:
        return key_hash(self.packed(document))


@dataclasses.dataclass(frozen=True)
class Ranges:
    """A shard's key and r-clock ranges, inclusive."""

    key_begin: int = RANGE_MIN
    key_end: int = RANGE_MAX
    r_clock_begin: int = RANGE_MIN
    r_clock_end: int = RANGE_MAX

    @classmethod
    def of(cls, spec: ShardSpec) -> Ranges:
        return cls(spec.key_begin, spec.key_end, spec.r_clock_begin, spec.r_clock_end)

    @property
    def everything(self) -> bool:
        return self.all_keys and self.all_clocks

    @property
    def all_keys(self) -> bool:
        return (self.key_begin, self.key_end) == (RANGE_MIN, RANGE_MAX)

    @property
    def all_clocks(self) -> bool:
        return (self.r_clock_begin, self.r_clock_end) == (RANGE_MIN, RANGE_MAX)

    def owns(self, key: int, clock: int) -> bool:
        return self.owns_key(key) and self.owns_clock(clock)

    def owns_key(self, key: int) -> bool:
        return self.key_begin <= key <= self.key_end

    def owns_clock(self, clock: int) -> bool:
        return self.r_clock_begin <= clock <= self.r_clock_end

    def overlaps(self, other: Ranges) -> bool:
        """Whether some key and r-clock point is owned by both."""
        return (
            self.key_begin <= other.key_end
            and other.key_begin <= self.key_end
            and self.r_clock_begin <= other.r_clock_end
            and other.r_clock_begin <= self.r_clock_end
        )

    def claim(self) -> dict[str, str]:
        """The ranges as a fence claims them (docs/splits.md): 8 hex digits each."""
        return {
            "keyBegin": f"{self.key_begin:08x}",
            "keyEnd": f"{self.key_end:08x}",
            "rClockBegin": f"{self.r_clock_begin:08x}",
            "rClockEnd": f"{self.r_clock_end:08x}",
        }

    @classmethod
    def from_claim(cls, claim: Mapping[str, str]) -> Ranges:
        """The ranges of a fence's claim; ValueError for one that is not a claim."""
        try:
            return cls(
                int(claim["keyBegin"], 16),
                int(claim["keyEnd"], 16),
                int(claim["rClockBegin"], 16),
                int(claim["rClockEnd"], 16),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a claim of ranges: {claim!r}") from exc
