"""Writing pages into the closed database file: concurrent runs, direct I/O and its
fallbacks, short writes, and the torn marker that covers all of it until it is durable."""

from __future__ import annotations

import concurrent.futures
import errno
import fcntl
import itertools
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardkeeper.storage import volume as volume_module
from shardkeeper.storage.volume import DIRECT_ALIGN, Volume

Pwrite = Callable[[int, bytes | memoryview, int], int]
REAL_PWRITE: Pwrite = os.pwrite


def supports_direct(directory: Path) -> bool:
    probe = directory / "probe"
    probe.touch()
    fd = volume_module._open_direct(probe)
    if fd is None:
        return False
    os.close(fd)
    return True


def is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))


def layout(total_pages: int, sizes: list[int]) -> list[tuple[int, int]]:
    """``(first page, pages)`` runs covering ``1..total_pages``."""
    runs, first = [], 1
    for size in sizes:
        if first > total_pages:
            break
        count = min(size, total_pages - first + 1)
        runs.append((first, count))
        first += count
    if first <= total_pages:
        runs.append((first, total_pages - first + 1))
    return runs


def write_runs(
    tmp_path: Path,
    page_size: int,
    runs: list[tuple[int, int]],
    *,
    threads: int = 4,
    run_bytes: int | None = None,
    lent: bool = False,
) -> tuple[bytes, bytes, int, int]:
    """Write ``runs`` of random pages in shuffled order from ``threads`` threads, copied
    from ``bytes`` or (``lent``) filled into the writer's own buffers."""
    total = sum(count for _, count in runs) * page_size
    expected = os.urandom(total)
    volume = Volume(tmp_path / "volume")
    volume.directory.mkdir(exist_ok=True)
    order = list(runs)
    random.shuffle(order)
    with volume.writing_pages(page_size) as pages:
        pages.preallocate(total // page_size)
        largest = max(count for _, count in runs) * page_size
        with pages.runs(writers=threads, run_bytes=run_bytes or largest) as writer:

            def one(run: tuple[int, int]) -> None:
                first, count = run
                start = (first - 1) * page_size
                data = expected[start : start + count * page_size]
                if not lent:
                    writer.write_run(first, data)
                    return
                with writer.lend() as buffer:
                    assert len(buffer) >= len(data)
                    buffer[: len(data)] = data
                    writer.write_lent(first, buffer[: len(data)])

            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, order))
            assert len(writer._allocated) <= threads
            direct, buffered = writer.direct_bytes, writer.buffered_bytes
    return expected, volume.db.read_bytes(), direct, buffered


@settings(max_examples=15, deadline=None)
@given(
    st.sampled_from([4096, 8192, 65536]),
    st.integers(1, 90),
    st.lists(st.integers(1, 24), min_size=1, max_size=12),
    st.integers(1, 4),
)
def test_runs_in_any_order_from_many_threads_land_at_their_offsets(
    tmp_path_factory: pytest.TempPathFactory,
    page_size: int,
    total_pages: int,
    sizes: list[int],
    threads: int,
) -> None:
    tmp_path = tmp_path_factory.mktemp("runs")
    runs = layout(total_pages, sizes)
    # runs bigger than one buffer are written in several direct writes
    expected, actual, direct, buffered = write_runs(
        tmp_path, page_size, runs, threads=threads, run_bytes=3 * page_size
    )
    assert actual == expected
    assert direct + buffered == len(expected)
    assert direct == (len(expected) if supports_direct(tmp_path) else 0)


@pytest.mark.parametrize("page_size", [4096, 65536])
def test_lent_buffers_are_written_where_they_are(tmp_path: Path, page_size: int) -> None:
    expected, actual, direct, buffered = write_runs(
        tmp_path, page_size, layout(90, [16, 3, 1, 16, 9]), threads=3, lent=True
    )
    assert actual == expected
    assert direct + buffered == len(expected)
    assert direct == (len(expected) if supports_direct(tmp_path) else 0)


def test_pages_smaller_than_a_memory_page_go_through_the_page_cache(tmp_path: Path) -> None:
    # 1 KiB pages: runs need not start or end on a memory page, so direct I/O is not used
    for lent in (False, True):
        expected, actual, direct, buffered = write_runs(
            tmp_path, 1024, layout(37, [5, 3, 8]), lent=lent
        )
        assert actual == expected
        assert (direct, buffered) == (0, len(expected))


def test_a_file_system_refusing_direct_writes_falls_back_to_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = []

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        if is_direct(fd):
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return REAL_PWRITE(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    expected, actual, direct, buffered = write_runs(tmp_path, 4096, layout(64, [16]))
    assert actual == expected
    assert (direct, buffered) == (0, len(expected))
    # once refused, the writer stops trying (threads already under way may try once each)
    assert len(refused) <= 4


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        view = memoryview(data)
        # a direct write may stop at a block boundary; a buffered one anywhere
        limit = 2 * DIRECT_ALIGN if is_direct(fd) else 3000
        return REAL_PWRITE(fd, view[:limit], offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    for lent in (False, True):
        expected, actual, direct, buffered = write_runs(
            tmp_path, 4096, layout(40, [7, 9]), lent=lent
        )
        assert actual == expected
        assert direct + buffered == len(expected)
    page = os.urandom(4096)
    with Volume(tmp_path / "volume").writing_pages(4096) as pages:
        pages.write(3, page)
    assert (tmp_path / "volume" / "shard.db").read_bytes()[2 * 4096 : 3 * 4096] == page


def test_the_marker_stays_until_the_pages_are_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = Volume(tmp_path / "volume")
    volume.directory.mkdir()
    with volume.writing_pages(4096) as pages:
        assert volume.marker.exists()
        pages.write(1, bytes(4096))
    assert not volume.marker.exists()

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with (
        pytest.raises(OSError, match="Input/output"),
        volume.writing_pages(4096) as pages,
        pages.runs(writers=2, run_bytes=4096) as runs,
    ):
        runs.write_run(1, os.urandom(4096))
    assert volume.marker.exists()
    monkeypatch.undo()
    # a torn volume is never trusted: it is wiped
    assert volume.inspect() is None
    assert not volume.db.exists()
    assert not volume.marker.exists()


def commit_pages(numbers: list[int], page_size: int) -> list[tuple[int, bytes | memoryview]]:
    """A commit's pages as a log record holds them: sorted numbers, each a view into one
    payload with the page numbers between them (so no two pages are adjacent in memory)."""
    payload = b"".join(n.to_bytes(4, "big") + os.urandom(page_size) for n in sorted(numbers))
    view = memoryview(payload)
    step = 4 + page_size
    return [
        (int.from_bytes(view[at : at + 4], "big"), view[at + 4 : at + step])
        for at in range(0, len(payload), step)
    ]


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from([1024, 4096, 8192]),
    st.lists(st.sets(st.integers(1, 120), min_size=1, max_size=80), min_size=1, max_size=5),
)
def test_commits_written_page_by_page_or_in_runs_give_the_same_file(
    tmp_path_factory: pytest.TempPathFactory, page_size: int, commits: list[set[int]]
) -> None:
    directory = tmp_path_factory.mktemp("volume")
    expected = bytearray()
    volume = Volume(directory)
    with (
        volume.writing_pages(page_size) as pages,
        pages.runs(writers=1, run_bytes=8 * page_size) as runs,
    ):
        for numbers in commits:
            written = commit_pages(sorted(numbers), page_size)
            for number, data in written:
                end = number * page_size
                expected.extend(bytes(max(0, end - len(expected))))
                expected[end - page_size : end] = data
            pages.write_pages(written, runs)
        # long runs (16 pages and more) went straight to the device where it allows
        longest = max(_longest_run(n) for n in commits)
        if runs.direct and page_size % DIRECT_ALIGN == 0 and longest >= 16:
            assert runs.direct_bytes > 0
    assert volume.db.read_bytes() == bytes(expected)


def _longest_run(numbers: set[int]) -> int:
    ordered = sorted(numbers)
    best = length = 1
    for previous, number in itertools.pairwise(ordered):
        length = length + 1 if number == previous + 1 else 1
        best = max(best, length)
    return best


def test_short_vectored_writes_are_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwritev = os.pwritev

    def pwritev(fd: int, buffers: list[bytes | memoryview], offset: int) -> int:
        # a write that stops inside the second buffer
        if len(buffers) > 1:
            buffers = [buffers[0], memoryview(buffers[1])[:100]]
        return real_pwritev(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", pwritev)
    written = commit_pages([1, 2, 3, 5, 6, 9], 4096)
    volume = Volume(tmp_path / "volume")
    volume.directory.mkdir()
    with volume.writing_pages(4096) as pages:
        pages.write_pages(written)
    data = volume.db.read_bytes()
    for number, page in written:
        assert data[(number - 1) * 4096 : number * 4096] == page
