"""The models: every example round-trips, every invalid manifest is refused here as the API
server refuses it, and the rules, defaults and helpers say what the docs say."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError
from tests.api.manifests import Invalid, at, example, example_documents, invalid_manifests, shard

from shardkeeper.api import KINDS, Collection, Duration, Shard, StorageMapping, Task
from shardkeeper.api.crd import crd
from shardkeeper.api.meta import (
    ApiModel,
    ConditionStatus,
    Resource,
    Rule,
    find_condition,
    quantity_value,
    set_condition,
)
from shardkeeper.api.shard import SHARD_NAME_MAX_LENGTH, shard_name
from shardkeeper.api.task import TASK_NAME_MAX_LENGTH, SplitBy, TaskType
from shardkeeper.storage.layout import recovery_log_name

MODELS: dict[str, type[Resource]] = {k.KIND: k for k in KINDS}
OURS = [
    (f"{name}:{doc['kind']}/{doc['metadata']['name']}", doc)
    for name, doc in example_documents()
    if doc["kind"] in MODELS
]


def test_the_examples_hold_every_kind_a_user_writes() -> None:
    kinds = [doc["kind"] for _, doc in OURS]
    assert kinds.count("StorageMapping") == 1
    assert kinds.count("Collection") == 2
    types = sorted(doc["spec"]["type"] for _, doc in OURS if doc["kind"] == "Task")
    assert types == ["capture", "derivation", "materialization"]
    secrets = [doc for _, doc in example_documents() if doc["kind"] == "Secret"]
    assert len(secrets) == 2  # the mapping's S3 keys and the materialization's password


@pytest.mark.parametrize("doc", [doc for _, doc in OURS], ids=[i for i, _ in OURS])
def test_every_example_round_trips(doc: dict[str, Any]) -> None:
    model = MODELS[doc["kind"]]
    parsed = model.from_k8s(doc)
    # What was written comes back as written (the examples use canonical forms)...
    assert parsed.to_k8s(exclude_unset=True) == doc
    # ...and the full form, defaults included, parses to the same object.
    full = parsed.to_k8s()
    assert model.from_k8s(full) == parsed
    assert model.from_k8s(full).to_k8s() == full


def test_a_shard_as_the_operator_writes_it_round_trips() -> None:
    parsed = Shard.from_k8s(shard())
    assert parsed.to_k8s(exclude_unset=True) == shard()
    assert (parsed.spec.key_begin, parsed.spec.key_end) == (0, 0x7FFFFFFF)
    assert Shard.from_k8s(parsed.to_k8s()) == parsed


def test_durations_come_back_canonical() -> None:
    task = Task.from_k8s(
        at(example("Task", "ingest-orders"), {"spec.shards.maxTxnDuration": "60s"})
    )
    assert task.to_k8s()["spec"]["shards"]["maxTxnDuration"] == "1m"
    assert task.spec.shards.max_txn_duration == Duration.parse("1m")


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def _rule_messages() -> list[str]:
    return [rule.message for rule in _all_rules() if rule.holds is not None]


def _all_rules() -> list[Rule]:
    seen: list[Rule] = []
    stack: list[type[ApiModel]] = [ApiModel]
    while stack:
        cls = stack.pop()
        seen += [r for r in cls.__dict__.get("RULES", ()) if r not in seen]
        stack += cls.__subclasses__()
    return seen


@pytest.mark.parametrize("case", invalid_manifests(), ids=lambda case: case.id)
def test_the_models_refuse_what_the_api_server_refuses(case: Invalid) -> None:
    with pytest.raises(ValidationError) as refused:
        MODELS[case.manifest["kind"]].from_k8s(case.manifest)
    errors = refused.value.errors()
    # A model reports a rule at the model that holds it, so its location is a prefix of
    # the path the API server names; a field's own check is at the field.
    assert any(case.field.startswith(_path(e["loc"])) for e in errors), errors
    rule = next((m for m in _rule_messages() if case.message in m), None)
    if rule is not None:
        assert any(rule in e["msg"] for e in errors), errors


def test_the_invalid_table_is_long_enough_and_covers_every_rule() -> None:
    cases = invalid_manifests()
    assert len(cases) >= 30
    assert len({c.id for c in cases}) == len(cases)
    for message in _rule_messages():
        assert any(case.message in message for case in cases), f"no case for rule: {message}"


def _schema_at(root: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The schema of the field at a path like spec.stores[0].bucket or spec.tables.x."""
    node = root
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        if index:
            node = node.get("items", {})
        elif name in node.get("properties", {}):
            node = node["properties"][name]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def _spec_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [node]
    for sub in node.get("properties", {}).values():
        nodes += _spec_nodes(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            nodes += _spec_nodes(node[key])
    return nodes


def test_the_invalid_table_covers_every_pattern_and_enum_users_write() -> None:
    roots = {k.KIND: crd(k)["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for k in KINDS}
    covered: set[str] = set()
    for case in invalid_manifests():
        node = _schema_at(roots[case.manifest["kind"]], case.field)
        if node is not None:
            covered |= {node.get("pattern", ""), repr(node.get("enum", ""))}
    for kind, root in roots.items():
        parts = root["properties"]
        for node in _spec_nodes(parts["spec"]) + _spec_nodes(parts["metadata"]):
            if "pattern" in node:
                assert node["pattern"] in covered, f"{kind}: no case for {node['pattern']}"
            if "enum" in node:
                assert repr(node["enum"]) in covered, f"{kind}: no case for {node['enum']}"


def _crd_rules(node: Any) -> list[dict[str, str]]:
    if isinstance(node, dict):
        found = list(node.get("x-kubernetes-validations", []))
        return found + [r for value in node.values() for r in _crd_rules(value)]
    if isinstance(node, list):
        return [r for value in node for r in _crd_rules(value)]
    return []


def test_every_rule_is_in_a_crd_as_written() -> None:
    in_crds = [r for kind in KINDS for r in _crd_rules(crd(kind))]
    for rule in _all_rules():
        assert rule.schema() in in_crds, rule


def test_typos_are_refused_by_the_models() -> None:
    doc = at(example("Collection", "orders"), {"spec.storagemapping": "local"})
    with pytest.raises(ValidationError, match="storagemapping"):
        Collection.from_k8s(doc)


def test_a_model_refuses_an_object_of_another_kind() -> None:
    with pytest.raises(ValidationError, match="kind Task"):
        Task.from_k8s(example("Collection", "orders"))


@pytest.mark.parametrize(
    ("name", "max_txn"),
    [("ingest-orders", "500ms"), ("customer-totals", "1s"), ("totals-to-postgres", "5m")],
)
def test_the_effective_max_txn_duration_depends_on_the_type(name: str, max_txn: str) -> None:
    assert Task.from_k8s(example("Task", name)).spec.effective_max_txn_duration() == (
        Duration.parse(max_txn)
    )


def test_task_defaults_are_flows() -> None:
    task = Task.from_k8s(example("Task", "ingest-orders"))
    shards = task.spec.shards
    assert task.spec.type == TaskType.CAPTURE
    assert shards.disable is False
    assert shards.min_txn_duration == Duration(0)
    assert (shards.hot_standbys, shards.ring_buffer_size, shards.read_channel_size) == (
        0,
        65536,
        4096,
    )
    assert shards.log_level == "info"
    assert shards.scaling.min_shards == 1
    assert shards.scaling.effective_max_shards() == 1
    assert task.spec.deletion_policy == "Retain"


def test_store_defaults() -> None:
    store = StorageMapping.from_k8s(example("StorageMapping", "local")).spec.stores[0]
    assert (store.provider, store.region) == ("s3", "us-east-1")
    assert store.credentials_secret_ref is not None
    assert store.credentials_secret_ref.access_key_id_key == "accessKeyId"


def test_shard_names_fit_their_bounds_and_pivots_halve_ranges() -> None:
    longest = shard_name("t" * TASK_NAME_MAX_LENGTH, 0xFFFFFFFF, 0x80000000)
    assert longest.endswith("-ffffffff-80000000")
    assert len(longest) == SHARD_NAME_MAX_LENGTH
    parsed = Shard.from_k8s(shard())
    assert parsed.metadata.name == shard_name("customer-totals", 0, 0)
    assert parsed.spec.recovery_log == recovery_log_name("default", "customer-totals", 0, 0)
    assert parsed.spec.pivot(SplitBy.KEY) == 0x40000000
    assert parsed.spec.pivot(SplitBy.R_CLOCK) == 0x80000000


def test_conditions_move_their_transition_time_only_on_a_change() -> None:
    t0, t1 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    conditions = set_condition([], "Ready", ConditionStatus.FALSE, "Starting", "", now=t0)
    conditions = set_condition(conditions, "Ready", ConditionStatus.FALSE, "Waiting", "x", now=t1)
    ready = find_condition(conditions, "Ready")
    assert ready is not None
    assert ready.last_transition_time == t0
    assert ready.reason == "Waiting"
    conditions = set_condition(conditions, "Degraded", ConditionStatus.FALSE, "Fine", "", now=t1)
    conditions = set_condition(conditions, "Ready", ConditionStatus.TRUE, "Running", "", now=t1)
    assert [c.type for c in conditions] == ["Ready", "Degraded"]
    ready = find_condition(conditions, "Ready")
    assert ready is not None
    assert ready.last_transition_time == t1


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        ("500m", "0.5"),
        ("2", "2"),
        ("1Ki", "1024"),
        ("1.5Gi", "1610612736"),
        ("1e3", "1000"),
        ("1E-3", "0.001"),
        ("2E", "2000000000000000000"),
        ("+3k", "3000"),
        ("-1Mi", "-1048576"),
        (".5", "0.5"),
        ("5n", "0.000000005"),
    ],
)
def test_a_quantity_stands_for_the_number_kubernetes_reads_in_it(quantity: str, value: str) -> None:
    assert quantity_value(quantity) == Decimal(value)
