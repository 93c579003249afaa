"""The roll order: one pod at a time, unready outdated pods first, then standbys from the
highest ordinal down, the primary last, each only once every updated pod is ready."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shardkeeper.controller.specs.rollout import next_step, replacement_order
from shardkeeper.controller.specs.views import PodView

OLD, NEW = "rev-1", "rev-2"


def pod(
    ordinal: int, revision: str = OLD, ready: bool = True, terminating: bool = False
) -> PodView:
    return PodView(f"s-{ordinal}", f"uid-{ordinal}", revision, ready, terminating)


def test_nothing_to_do_when_every_pod_is_current() -> None:
    step = next_step([pod(0, NEW), pod(1, NEW)], NEW, "s-0", 2)
    assert step.done


def test_standbys_go_first_from_the_highest_ordinal_and_the_primary_last() -> None:
    pods = [pod(0), pod(1), pod(2)]
    assert [p.name for p in replacement_order(pods, "s-1")] == ["s-2", "s-0", "s-1"]
    step = next_step(pods, NEW, "s-1", 3)
    assert (step.pod and step.pod.name, step.role) == ("s-2", "standby")


def test_the_primary_goes_once_it_is_the_only_outdated_pod() -> None:
    step = next_step([pod(0), pod(1, NEW), pod(2, NEW)], NEW, "s-0", 3)
    assert (step.pod and step.pod.name, step.role) == ("s-0", "primary")


def test_waits_for_the_replaced_pod_to_be_ready_before_the_next() -> None:
    step = next_step([pod(0), pod(1, NEW, ready=False)], NEW, "s-0", 2)
    assert step.pod is None
    assert "s-1 is not ready" in step.waiting


def test_one_at_a_time_while_a_pod_terminates_or_is_missing() -> None:
    assert next_step([pod(0), pod(1, terminating=True)], NEW, "s-0", 2).waiting
    assert "1 of 2" in next_step([pod(0)], NEW, "s-0", 2).waiting


def test_an_outdated_pod_that_is_not_ready_goes_first_it_serves_nothing() -> None:
    step = next_step([pod(0, ready=False), pod(1), pod(2)], NEW, None, 3)
    assert (step.pod and step.pod.name, step.role) == ("s-0", "not ready")


def test_waits_for_the_statefulset_to_name_its_revision() -> None:
    assert next_step([pod(0)], "", "s-0", 1).waiting


@given(
    st.integers(min_value=1, max_value=5).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n - 1))
    )
)
def test_a_whole_roll_replaces_each_pod_once_and_the_primary_last(sizes: tuple[int, int]) -> None:
    """Simulate the StatefulSet controller: a deleted pod comes back ready on the new
    revision at the next step."""
    count, primary_ordinal = sizes
    primary = f"s-{primary_ordinal}"
    pods = {i: pod(i) for i in range(count)}
    replaced = []
    for _ in range(2 * count + 1):
        step = next_step(list(pods.values()), NEW, primary, count)
        if step.done:
            break
        assert step.pod is not None, step.waiting
        ordinal = int(step.pod.name.rsplit("-", 1)[1])
        replaced.append(step.pod.name)
        pods[ordinal] = pod(ordinal, NEW)
    assert sorted(replaced) == sorted(f"s-{i}" for i in range(count))
    assert replaced[-1] == primary
    standbys = [int(name.rsplit("-", 1)[1]) for name in replaced[:-1]]
    assert standbys == sorted(standbys, reverse=True)
