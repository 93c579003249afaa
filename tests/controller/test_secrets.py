"""Secrets against the real API server: the operator's watch receives their metadata only,
keeps only the ones a Task or StorageMapping names, and still follows their changes."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from tests.controller.support import Kubectl, OperatorProcess, apply, examples, wait_condition
from tests.support.wait import wait_for

from shardkeeper.controller.engine import secrets
from shardkeeper.controller.engine.secrets import RESTART, SecretEvent, SecretWatch
from shardkeeper.kube.client import ApiClientTransport
from shardkeeper_dev.environment import EnvInfo

VALUE = "hunter2-never-in-a-watch"
NAMED = [
    ("Secret", "s3-credentials"),
    ("StorageMapping", "local"),
    ("Collection", "customer-totals"),
    ("Task", "totals-to-postgres"),
]


def test_the_watch_receives_metadata_only(
    kube_api: Any, kubectl: Kubectl, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[str] = []
    read_lines = secrets.lines

    def recording(response: urllib3.BaseHTTPResponse) -> Iterator[str]:
        for line in read_lines(response):
            received.append(line)
            yield line

    monkeypatch.setattr(secrets, "lines", recording)
    events: list[SecretEvent] = []
    watch = SecretWatch(ApiClientTransport(kube_api), namespace, events.append)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        # from the listed version on, every change is reported
        wait_for(lambda: RESTART in events, timeout=20, what="the watch to start")
        kubectl("create", "secret", "generic", "s", "-n", namespace, f"--from-literal=k={VALUE}")
        wait_for(lambda: len(events) > 1, timeout=20, what="the Secret's event")
    finally:
        watch.stop()
        thread.join(timeout=10)
    assert events[1:] == [SecretEvent(namespace, "s", events[1].resource_version)]
    assert any('"PartialObjectMetadata"' in line for line in received)
    encoded = base64.b64encode(VALUE.encode()).decode()
    assert not [line for line in received if VALUE in line or encoded in line]


def test_only_named_secrets_are_kept_and_their_changes_reach_the_task(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    kubectl(
        "create", "secret", "generic", "unrelated", "-n", namespace, f"--from-literal=k={VALUE}"
    )
    apply(kubectl, namespace, examples(dev_env, bucket, *NAMED))
    task = "task/totals-to-postgres"
    wait_condition(kubectl, namespace, task, "Ready=False", reason="SecretNotFound", timeout=60)
    # A Task that cannot run is not looked at again on a timer: only the Secret's watch
    # event brings the news (the mapping's next check, a minute on, would too)
    kubectl(
        "create", "secret", "generic", "postgres-password", "-n", namespace, "--from-literal=x=1"
    )
    wait_condition(kubectl, namespace, task, "Ready=False", reason="SecretKeyNotFound", timeout=20)
    events = operator.metric("shardkeeper_operator_watch_events_total", kind="Secret")
    kubectl("label", "secret", "unrelated", "-n", namespace, "touched=yes")
    wait_for(
        lambda: operator.metric("shardkeeper_operator_watch_events_total", kind="Secret") > events,
        timeout=20,
        what="the unrelated Secret's event",
    )
    # s3-credentials and postgres-password; the unrelated one was seen and dropped
    assert operator.metric("shardkeeper_operator_secrets_kept") == 2
    assert VALUE not in operator.log_text()
