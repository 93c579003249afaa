"""Snapshot parts are checked with CRC-32: the fast implementation must give zlib's values,
or snapshots written before it would no longer restore."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st

from shardkeeper.storage.snapshot import part_checksum


@given(st.binary(max_size=70_000), st.integers(0, 64))
def test_part_checksum_is_zlibs_crc32_for_bytes_and_views(data: bytes, skip: int) -> None:
    expected = f"crc32:{zlib.crc32(data):08x}"
    assert part_checksum(data) == expected
    view = memoryview(data)[skip:]
    assert part_checksum(view) == f"crc32:{zlib.crc32(view):08x}"


def test_part_checksum_of_a_known_value() -> None:
    assert part_checksum(b"123456789") == "crc32:cbf43926"
