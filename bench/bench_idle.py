"""What an idle shard costs in S3 requests: a derivation with one hot standby, caught up and
fed nothing, counted at MinIO over a window and scaled to a shard-hour.

MinIO's own request counters for the shard's bucket (``minio_bucket_requests_total`` by
API, from its Prometheus endpoint) are read before and after the window, so every request
of the primary (polling its source journals and the collection's listing) and of the
standby (tailing the recovery log) is in the figure, whatever client code made it, and
nothing else's is: the bucket is the module's own. The figure is a count, not a speed, so
the machine's noise does not weigh on it: its baseline is the issue's budget of 360
requests per idle shard-hour (a ratio of at most 1 meets it).

The window starts once the shards have gone quiet: for :data:`SETTLE` seconds after the
last commit reached the standby, readers still poll the way they do between bursts of
data (every 0.5 s at most for 10 s, then slower and slower up to 30 s, see
``runtime/core/sources.py`` and ``runtime/shell/replica.py``). That ramp is paid once per
idle spell, not per hour, so it is left out of the hourly figure; its requests are
counted all the same and reported as ``settling_requests_by_api`` (``settle_s`` long), so
an idle spell of any length can be priced: settling + hours x the figure.

The source journal is written as a capture shard writes it, serving write hints
(:class:`HintingFeeder`), so the primary's reader long-polls it while idle (that costs no
S3 request). After the window one more document is sent: the time until its output is
appended is ``runtime.idle_wake_latency``, what a document costs after an idle spell
(without the hint it would wait for the reader's next poll, up to 30 s).

Run by hand with ``python -m bench.bench_idle --env-dir DIR [--quick]``. ``--quick``
counts 30 s, where each request weighs 120 to the hour: too coarse to tell 264 from 360.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.request
from typing import Any

from tests.runtime.shard_harness import HintingFeeder, pod_network, roles, wait_outputs
from tests.support.wait import wait_for

from bench.bench_failover import apply_crds, shard_setup, start_replicas
from bench.harness import Context, Result, Run, by_hand

BUDGET_PER_SHARD_HOUR = 360.0
# longer than the readers' ramp to their longest poll (10 s + 1 + 2 + 4 + 8 + 16 s) and the
# discovery's to its longest interval (1 + 2 + ... + 64 s)
SETTLE = 130.0


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def metrics_token(access_key: str, secret_key: str) -> str:
    """The bearer token MinIO's Prometheus endpoint accepts (what ``mc admin prometheus
    generate`` makes): a JWT for the access key, signed with its secret."""
    header = _b64(json.dumps({"alg": "HS512", "typ": "JWT"}).encode())
    claims = {"exp": int(time.time()) + 3600, "sub": access_key, "iss": "prometheus"}
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret_key.encode(), header + b"." + payload, hashlib.sha512).digest()
    return (header + b"." + payload + b"." + _b64(signature)).decode()


def s3_requests(env: Any, bucket: str) -> dict[str, float]:
    """MinIO's count of S3 requests to ``bucket`` so far, by API."""
    token = metrics_token(env.s3_access_key, env.s3_secret_key)
    request = urllib.request.Request(
        f"{env.s3_endpoint}/minio/v2/metrics/bucket", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
    counts: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("minio_bucket_requests_total{") and f'bucket="{bucket}"' in line:
            labels, value = line.rsplit(" ", 1)
            api = labels.split('api="', 1)[1].split('"', 1)[0]
            counts[api] = counts.get(api, 0.0) + float(value)
    return counts


def bench_idle(ctx: Context, kube_api: Any, out: Run, window: float) -> None:
    with shard_setup(ctx, kube_api, hot_standbys=1, prefix="bench-idle") as setup:
        replicas = start_replicas(ctx, setup, 2)
        feeder: HintingFeeder | None = None
        try:
            _, standby = wait_for(
                lambda: roles(*replicas), timeout=120, what="a PRIMARY and a STANDBY"
            )
            feeder = HintingFeeder(setup, f"{pod_network()}.1")
            feeder.send([f"k{i}" for i in range(100)])
            wait_outputs(setup, 100, timeout=60)
            # the standby has tailed the last commit, and the readers have backed off
            head = setup.get_shard()["status"]["recoveryLogHead"]
            wait_for(
                lambda: (setup.replica(standby.pod).get("recoveryLogHead") or 0) >= head,
                timeout=60,
                what=f"{standby.pod} to tail up to {head:#x}",
            )
            settling = s3_requests(ctx.env, setup.bucket)
            time.sleep(SETTLE)  # the readers' ramp to their idle polls, counted apart
            before = s3_requests(ctx.env, setup.bucket)
            started = time.monotonic()
            time.sleep(window)  # the measurement window itself, not a wait for a condition
            elapsed = time.monotonic() - started
            after = s3_requests(ctx.env, setup.bucket)
            assert all(r.running() for r in replicas), "a replica exited during the window"
            sent = time.monotonic()
            feeder.send(["after-the-window"])
            wait_outputs(setup, 101, timeout=60)
            woke = time.monotonic() - sent
            hints = feeder.hints_given
        finally:
            if feeder is not None:
                feeder.close()
            for replica in replicas:
                replica.stop()
    by_api = _difference(after, before)
    settled = _difference(before, settling)
    per_hour = sum(by_api.values()) * 3600 / elapsed
    out.add(
        Result(
            "runtime.idle_s3_requests_per_shard_hour",
            per_hour,
            "requests",
            BUDGET_PER_SHARD_HOUR,
            "lower",
            {
                "window_s": round(elapsed, 1),
                "hot_standbys": 1,
                "requests_in_window_by_api": by_api,
                "settle_s": SETTLE,
                "settling_requests_by_api": settled,
            },
            target=f"<= {BUDGET_PER_SHARD_HOUR:g} (ratio <= 1; the baseline is the budget)",
        )
    )
    out.add(
        Result(
            "runtime.idle_wake_latency",
            woke * 1000,
            "ms",
            None,
            "lower",
            {"idle_s": round(SETTLE + elapsed, 1), "hints_given_by_the_writer": hints},
            target="informational: a document's output after the idle spell; without a "
            "write hint, up to the reader's longest poll (30 s) more",
        )
    )


def _difference(later: dict[str, float], earlier: dict[str, float]) -> dict[str, float]:
    counts = {api: n - earlier.get(api, 0.0) for api, n in later.items()}
    return {api: n for api, n in counts.items() if n}


def run(ctx: Context, out: Run) -> None:
    from kubernetes import config

    apply_crds(ctx)
    kube_api = config.new_client_from_config(config_file=str(ctx.env.kubeconfig))
    bench_idle(ctx, kube_api, out, window=30.0 if ctx.quick else 300.0)


def main(argv: list[str] | None = None) -> int:
    return by_hand("bench_idle", argv, lambda ctx, out, _: run(ctx, out))


if __name__ == "__main__":
    sys.exit(main())
