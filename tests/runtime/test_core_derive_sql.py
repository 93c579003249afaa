"""SQL derivations end to end against MinIO: lambdas, migrations, checkpoint, restarts."""

from __future__ import annotations

from pathlib import Path

from tests.runtime.core_fixtures import (
    ShardRunner,
    collection,
    context,
    documents_of,
    objects,
    read,
    shard_for,
    task,
    writer,
)
from tests.support.wait import wait_for

from shardkeeper.storage.objectstore import ObjectStore

__all__ = ["objects"]

ORDERS = collection(
    "orders",
    key=["/id"],
    schema={
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "customer": {"type": "string"},
            "amount": {"type": "number"},
        },
        "required": ["id", "customer", "amount"],
        "additionalProperties": False,
    },
)
TOTALS = collection(
    "totals",
    key=["/customer"],
    schema={
        "type": "object",
        "properties": {"customer": {"type": "string"}, "total": {"type": "number"}},
        "required": ["customer", "total"],
    },
)
TOTALS_TASK = task(
    "totals",
    {
        "type": "derivation",
        "sources": ["orders"],
        "outputs": ["totals"],
        "derive": {
            "sql": {
                "migrations": [
                    "CREATE TABLE totals (customer TEXT PRIMARY KEY, total REAL NOT NULL)"
                ],
                "lambdas": {
                    "orders": (
                        "INSERT INTO totals (customer, total) VALUES ($customer, $amount) "
                        "ON CONFLICT (customer) DO UPDATE SET total = total + excluded.total "
                        "RETURNING customer, total"
                    )
                },
            }
        },
        "shards": {"maxTxnDuration": "200ms"},
    },
)


def orders(first: int, count: int) -> list[dict[str, object]]:
    return [{"id": i, "customer": f"c{i % 3}", "amount": i} for i in range(first, first + count)]


def test_lambda_outputs_are_committed_once_across_restarts(
    tmp_path: Path, objects: ObjectStore
) -> None:
    ctx = context(objects, TOTALS_TASK, shard_for("totals"), [ORDERS, TOTALS])
    runner = ShardRunner(tmp_path, ctx)
    source = writer(objects, "orders")
    source.append(orders(0, 6))
    first = runner.start()
    wait_for(lambda: len(read(objects, "totals")) == 6, timeout=30, what="6 outputs")
    source.append(orders(6, 6))
    wait_for(lambda: len(read(objects, "totals")) == 12, timeout=30, what="12 outputs")
    assert first.finish() is None
    progress = first.processor.progress()
    assert progress.checkpoint == {source.journal: source.head}
    assert progress.lag_bytes == 0

    # a new primary on a new volume restores from the log and goes on where it stopped
    source.append(orders(12, 3))
    second = runner.start()
    wait_for(lambda: len(read(objects, "totals")) == 15, timeout=30, what="15 outputs")
    assert second.finish() is None

    outputs = read(objects, "totals")
    running: dict[str, float] = {}
    expected = []
    for order in orders(0, 15):
        customer = str(order["customer"])
        running[customer] = running.get(customer, 0) + float(order["amount"])  # type: ignore[arg-type]
        expected.append({"customer": customer, "total": running[customer]})
    assert documents_of(outputs) == expected
    # one journal, written by this shard, with a unique deterministic UUID per document
    assert {d.journal for d in outputs} == {f"collections/core/totals/{ctx.shard_name}"}
    assert len({d.document["_meta"]["uuid"] for d in outputs}) == 15
    assert second.processor.progress().transactions >= 2
