"""Fence epochs are unique along a journal: a fence must be strictly newer than every
epoch before it, even when two writers race with the same one (issue 11)."""

from __future__ import annotations

from typing import cast

import pytest
from tests.support.fake_api import FakeObjects

from shardkeeper.storage import errors
from shardkeeper.storage.faults import FaultPoint
from shardkeeper.storage.fragment import FragmentKind
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.objectstore import ObjectStore

PREFIX = "recovery/ns/task/00000000-00000000/journal"


class Bucket(FakeObjects):
    """An in-memory bucket that honours ``If-None-Match: *`` (``create``)."""

    def __init__(self) -> None:
        super().__init__("test", {})

    def ensure_conditional_writes(self) -> None:
        return None


class BeforeFirstPut:
    """Runs ``action`` once, right before the first fragment is sent: another writer
    that gets in between this writer's listing and its append."""

    def __init__(self, action: object) -> None:
        self.action = action
        self.done = False

    def reached(self, point: FaultPoint) -> None:
        if point is FaultPoint.APPEND_BEFORE_PUT and not self.done:
            self.done = True
            self.action()  # type: ignore[operator]


def journal(bucket: Bucket, faults: BeforeFirstPut | None = None) -> Journal:
    if faults is None:
        return Journal(cast(ObjectStore, bucket), PREFIX)
    return Journal(cast(ObjectStore, bucket), PREFIX, faults=faults)


def epochs(bucket: Bucket) -> list[tuple[FragmentKind, int]]:
    return [(f.kind, f.epoch) for f in journal(bucket).read(0)]


def test_a_fence_of_the_newest_epoch_is_refused() -> None:
    bucket = Bucket()
    first, _ = journal(bucket).fence(1)
    first.append(b"commit of epoch 1")
    # a second writer that computed the same "newest + 1" as the first one did
    with pytest.raises(errors.StaleEpoch) as raised:
        journal(bucket).fence(1)
    assert (raised.value.our_epoch, raised.value.their_epoch) == (1, 1)
    assert epochs(bucket) == [(FragmentKind.FENCE, 1), (FragmentKind.DATA, 1)]
    # and the first writer was not fenced by it
    first.append(b"another commit of epoch 1")


def test_a_race_between_two_writers_of_one_epoch_has_one_winner() -> None:
    bucket = Bucket()
    journal(bucket).fence(1)
    won: list[object] = []

    # the other writer fences with epoch 2 (and commits) between our listing and our append
    def other() -> None:
        writer, _ = journal(bucket).fence(2)
        writer.append(b"commit of the other epoch 2")
        won.append(writer)

    with pytest.raises(errors.StaleEpoch):
        journal(bucket, BeforeFirstPut(other)).fence(2)
    assert won
    assert epochs(bucket) == [
        (FragmentKind.FENCE, 1),
        (FragmentKind.FENCE, 2),
        (FragmentKind.DATA, 2),
    ]


def test_a_fence_still_goes_after_an_older_writers_late_append() -> None:
    bucket = Bucket()
    old, _ = journal(bucket).fence(1)
    new = journal(bucket, BeforeFirstPut(lambda: old.append(b"late commit of epoch 1")))
    _, fence = new.fence(2)
    assert epochs(bucket) == [
        (FragmentKind.FENCE, 1),
        (FragmentKind.DATA, 1),
        (FragmentKind.FENCE, 2),
    ]
    assert fence.epoch == 2
    with pytest.raises(errors.Fenced):
        old.append(b"one commit too many")


def test_fence_after_shares_the_epoch_only_with_the_writers_own_fragment() -> None:
    bucket = Bucket()
    # two forkers of one epoch write the same first record (the second finds it identical)
    ours = journal(bucket).writer(3, 0)
    theirs = journal(bucket).writer(3, 0)
    ours.append(b"fork record")
    theirs.append(b"fork record")
    _, fence = journal(bucket).fence_after(ours)
    assert fence.epoch == 3
    with pytest.raises(errors.StaleEpoch):
        journal(bucket).fence_after(theirs)
    assert epochs(bucket) == [(FragmentKind.DATA, 3), (FragmentKind.FENCE, 3)]
