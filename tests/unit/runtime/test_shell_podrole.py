"""The pod's role label follows the replica's state: removed at start, set while PRIMARY,
tried again after a failure, and left alone when there is no pod."""

from __future__ import annotations

from typing import Any

from tests.support.wait import wait_for

from shardkeeper.kube.client import ApiError
from shardkeeper.runtime.shell.podrole import RoleLabel, role_patch

SET = {"metadata": {"labels": {"shardkeeper.io/role": "primary"}}}
REMOVE = {"metadata": {"labels": {"shardkeeper.io/role": None}}}


class Pod:
    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.patches: list[dict[str, Any]] = []
        self.failures = failures or []

    def patch(self, body: dict[str, Any]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.patches.append(body)


def test_the_patch_sets_the_label_or_removes_it_with_null() -> None:
    assert role_patch(True) == SET
    assert role_patch(False) == REMOVE


def test_the_label_is_removed_first_then_follows_the_state_without_repeats() -> None:
    pod = Pod()
    label = RoleLabel(pod.patch)
    assert label.sync()
    assert pod.patches == [REMOVE]  # a restarted container drops its last life's label
    label.set(False)
    assert label.sync()
    label.set(True)
    assert label.sync()
    assert label.sync()
    label.set(False)
    assert label.sync()
    assert pod.patches == [REMOVE, SET, REMOVE]


def test_a_failed_patch_is_tried_again_by_the_thread() -> None:
    pod = Pod([ApiError(500, "Internal", {"message": "etcd"}), OSError("refused")])
    label = RoleLabel(pod.patch)
    label.start()
    label.set(True)
    wait_for(lambda: pod.patches, timeout=10, what="the label set after two failures")
    label.stop()
    assert pod.patches[-1] == SET
    assert not pod.failures


def test_no_pod_no_more_patches() -> None:
    pod = Pod([ApiError(404, "Not Found", {"message": 'pods "x" not found'})])
    label = RoleLabel(pod.patch)
    assert label.sync()
    label.set(True)
    assert label.sync()
    assert pod.patches == []
