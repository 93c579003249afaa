"""Helpers shared by the storage tests against MinIO."""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.faults import FaultPoint
from shardkeeper.storage.store import ShardStore, StoreOptions
from shardkeeper_dev.environment import EnvInfo

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def client_for(env: EnvInfo, **overrides: Any) -> S3Client:
    settings: dict[str, Any] = {
        "endpoint": env.s3_endpoint,
        "access_key": env.s3_access_key,
        "secret_key": env.s3_secret_key,
        "region": env.s3_region,
    }
    settings.update(overrides)
    return make_s3_client(**settings)


class Crash(BaseException):
    """Stands for the process dying: nothing in the storage code catches it."""


@dataclasses.dataclass
class CrashAt:
    """Fault hook that dies the ``nth`` time ``point`` is reached (0 = never)."""

    point: FaultPoint | None = None
    nth: int = 1
    seen: int = 0
    reached_points: list[FaultPoint] = dataclasses.field(default_factory=list)

    def reached(self, point: FaultPoint) -> None:
        self.reached_points.append(point)
        if point is self.point:
            self.seen += 1
            if self.seen == self.nth:
                raise Crash(point.value)


def killed_copy(volume: Path, into: Path) -> Path:
    """What a kill -9 at this moment would leave on the volume: its files as they are."""
    shutil.copytree(volume, into)
    return into


def rows(db: Path, sql: str = "SELECT k, v FROM kv ORDER BY k") -> list[tuple[Any, ...]]:
    """Rows of a closed database file, read without locks, WAL or side files."""
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


# a store that snapshots only when told, in small parts; a time after every retention
MANUAL = StoreOptions(background_snapshots=False, part_bytes=64 << 10)
LATER = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)


def put(store: ShardStore, tag: str, count: int = 10) -> None:
    with store.transaction() as txn:
        txn.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB)")
        txn.executemany(
            "INSERT OR REPLACE INTO kv VALUES (?, ?)",
            [(f"{tag}-{i:03d}", os.urandom(300)) for i in range(count)],
        )
