"""The manifests in examples/, pointed at a running development environment.

The examples name fixed endpoints (MinIO on 127.0.0.1:9000, PostgreSQL on 5432) and
``change-me`` secrets; ``shardkeeper dev up`` picks free ports and its own keys. This
fills in the real ones and changes nothing else::

    python -m shardkeeper_dev.examples [--state-dir DIR] | kubectl apply -f -
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from shardkeeper_dev.environment import EnvInfo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Manifest = dict[str, Any]


def load(directory: Path = EXAMPLES) -> list[Manifest]:
    """Every document of every example file, in file order."""
    docs: list[Manifest] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def point_at(doc: Manifest, env: EnvInfo, *, bucket: str | None = None) -> Manifest:
    """``doc`` with the environment's endpoints, keys and (optionally another) bucket."""
    out = copy.deepcopy(doc)
    kind, spec = out["kind"], out.get("spec", {})
    if kind == "Secret" and "accessKeyId" in out.get("stringData", {}):
        out["stringData"].update(accessKeyId=env.s3_access_key, secretAccessKey=env.s3_secret_key)
    elif kind == "Secret" and "password" in out.get("stringData", {}):
        out["stringData"]["password"] = env.postgres_password
    elif kind == "StorageMapping":
        for store in spec["stores"]:
            store.update(endpoint=env.s3_endpoint, region=env.s3_region)
            store["bucket"] = bucket or env.s3_bucket
    elif kind == "Task" and "materialize" in spec:
        postgres = spec["materialize"].get("postgres", {})
        if "host" in postgres:
            postgres.update(
                host=env.postgres_host,
                port=env.postgres_port,
                user=env.postgres_user,
                database=env.postgres_database,
            )
    return out


def render(env: EnvInfo, *, bucket: str | None = None) -> list[Manifest]:
    return [point_at(doc, env, bucket=bucket) for doc in load()]


def capture_port(task: str, directory: Path = EXAMPLES) -> int:
    """The ingest port of the example capture ``task``."""
    for doc in load(directory):
        if doc["kind"] == "Task" and doc["metadata"]["name"] == task:
            return int(doc["spec"]["capture"]["http"].get("port", 8080))
    raise KeyError(f"no example capture task {task!r}")


def main(argv: Sequence[str] | None = None) -> int:
    from shardkeeper_dev.environment import Environment, default_state_dir

    parser = argparse.ArgumentParser(prog="python -m shardkeeper_dev.examples")
    parser.add_argument("--state-dir", type=Path, default=None, help="the environment's")
    parser.add_argument("--bucket", default=None, help="another bucket than the environment's")
    args = parser.parse_args(argv)
    env = Environment(args.state_dir or default_state_dir()).info()
    yaml.safe_dump_all(render(env, bucket=args.bucket), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
