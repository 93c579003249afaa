"""A real process death (``os._exit`` at a fault point) at every step of a commit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.storage.storage_helpers import integrity, rows

from shardkeeper.storage.faults import COMMIT_DURABLE_FROM, COMMIT_POINTS, FaultPoint
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.store import ShardStore, StoreOptions
from shardkeeper_dev.environment import EnvInfo

CHILD = """
import json, os, sys
from pathlib import Path
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.faults import FaultPoint
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.store import ShardStore, StoreOptions

spec = json.loads(sys.argv[1])

class DieAt:
    point = None
    def reached(self, point):
        if point is self.point:
            os._exit(17)

hook = DieAt()
client = make_s3_client(endpoint=spec["endpoint"], access_key=spec["key"],
                        secret_key=spec["secret"], region=spec["region"])
log = RecoveryLog(ObjectStore(client, spec["bucket"]), spec["log"], faults=hook)
store = ShardStore.open(Path(spec["volume"]), log, 1,
                        options=StoreOptions(background_snapshots=False))
store.fence()
with store.transaction() as txn:
    txn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB)")
    txn.execute("INSERT INTO kv VALUES ('before', x'01')")
hook.point = FaultPoint[spec["point"]]
with store.transaction() as txn:
    txn.execute("INSERT INTO kv VALUES ('crashing', x'02')")
sys.exit(0)
"""


@pytest.mark.parametrize("point", COMMIT_POINTS, ids=lambda p: p.name)
def test_killed_at_every_commit_step(
    tmp_path: Path, dev_env: EnvInfo, objects: ObjectStore, point: FaultPoint
) -> None:
    spec = {
        "endpoint": dev_env.s3_endpoint,
        "key": dev_env.s3_access_key,
        "secret": dev_env.s3_secret_key,
        "region": dev_env.s3_region,
        "bucket": objects.bucket,
        "log": f"killed/{point.name.lower()}",
        "volume": str(tmp_path / "volume"),
        "point": point.name,
    }
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 17, child.stderr
    durable = COMMIT_POINTS.index(point) >= COMMIT_POINTS.index(COMMIT_DURABLE_FROM)
    expected = [("before", b"\x01")] + ([("crashing", b"\x02")] if durable else [])
    log = RecoveryLog(objects, spec["log"])
    options = StoreOptions(background_snapshots=False)
    for volume in (tmp_path / "volume", tmp_path / "fresh"):
        recovered = ShardStore.open(volume, log, 2, options=options)
        assert rows(recovered.db_path) == expected
        assert integrity(recovered.db_path) == "ok"
