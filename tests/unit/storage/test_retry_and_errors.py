"""Back-off policies, the meaning of S3 errors, and the retry loop that uses both."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from shardkeeper.storage import errors
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.retry import PollBackoff, PollPolicy, RetryPolicy
from shardkeeper.storage.s3errors import Kind, classify


def client_error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


def verdict(exc: Exception, conditional: bool = False) -> Any:
    return classify(
        exc, bucket="b", key="k", operation="op", endpoint="http://e", conditional=conditional
    )


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("SlowDown", 503), Kind.RETRY),
        (client_error("InternalError", 500), Kind.RETRY),
        (client_error("Whatever", 502), Kind.RETRY),
        (client_error("TooManyRequests", 429), Kind.RETRY),
        (client_error("ConditionalRequestConflict", 409), Kind.RETRY),
        (ReadTimeoutError(endpoint_url="http://e"), Kind.RETRY),
        (EndpointConnectionError(endpoint_url="http://e"), Kind.RETRY),
        (client_error("NoSuchKey", 404), Kind.NOT_FOUND),
        (client_error("PreconditionFailed", 412), Kind.PRECONDITION_FAILED),
        (client_error("NoSuchBucket", 404), Kind.FATAL),
        (client_error("AccessDenied", 403), Kind.FATAL),
        (client_error("InvalidArgument", 400), Kind.FATAL),
        (client_error("InvalidParameterValue", 400, "AssumeRoleWithWebIdentity"), Kind.FATAL),
        (client_error("ServiceUnavailable", 503, "AssumeRoleWithWebIdentity"), Kind.RETRY),
    ],
)
def test_classification(exc: Exception, kind: Kind) -> None:
    assert verdict(exc).kind is kind


def test_fatal_errors_name_what_to_fix() -> None:
    assert isinstance(verdict(client_error("NoSuchBucket", 404)).error, errors.BucketNotFound)
    denied = verdict(client_error("SignatureDoesNotMatch", 403)).error
    assert isinstance(denied, errors.AccessDenied)
    assert "s3:PutObject" in str(denied)
    unsupported = verdict(client_error("NotImplemented", 501), conditional=True).error
    assert isinstance(unsupported, errors.ConditionalWritesUnsupported)
    assert "If-None-Match" in str(unsupported)
    # the STS refusing a role is told apart from the bucket refusing the request
    refused = verdict(client_error("AccessDenied", 403, "AssumeRoleWithWebIdentity")).error
    assert isinstance(refused, errors.CredentialsRefused)
    assert isinstance(refused, errors.AccessDenied), "reported where a denial is"
    assert "the STS refused AssumeRoleWithWebIdentity (AccessDenied: " in str(refused)
    assert "webIdentity (roleArn, audience, stsEndpoint)" in str(refused)
    missing = verdict(NoCredentialsError()).error
    assert isinstance(missing, errors.NoCredentials)
    assert "op on s3://b/k has no credentials (Unable to locate credentials)" in str(missing)


def test_retry_delays_are_jittered_below_a_growing_cap() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    assert policy.delay(1, lambda low, high: high) == pytest.approx(0.1)
    assert policy.delay(3, lambda low, high: high) == pytest.approx(0.4)
    assert policy.delay(30, lambda low, high: high) == pytest.approx(1.0)
    assert policy.delay(30, lambda low, high: low) == 0.0
    assert policy.gives_up(policy.max_attempts, 0, 0)
    assert policy.gives_up(1, policy.deadline, 0.1)
    assert not policy.gives_up(1, 0, 0.1)


def test_poll_backoff_grows_while_idle_and_resets_on_data() -> None:
    backoff = PollBackoff(PollPolicy(min_delay=0.01, max_delay=0.08, factor=2))
    delays = []
    for _ in range(6):
        backoff = backoff.after(found=False)
        delays.append(backoff.current)
    assert delays == [0.01, 0.02, 0.04, 0.08, 0.08, 0.08]
    assert backoff.idle_at_max
    backoff = backoff.after(found=True)
    assert backoff.current == 0.0
    assert not backoff.idle_at_max


class ScriptedClient:
    """Answers put_object with a scripted list of exceptions and successes."""

    class meta:
        endpoint_url = "http://scripted"

    def __init__(self, script: list[Exception | None]) -> None:
        self.script = script
        self.calls = 0

    def put_object(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        outcome = self.script.pop(0)
        if outcome is not None:
            raise outcome
        return {}


def store_with(
    script: list[Exception | None], **policy: Any
) -> tuple[ObjectStore, ScriptedClient, list[float]]:
    client = ScriptedClient(script)
    slept: list[float] = []
    store = ObjectStore(
        client,  # type: ignore[arg-type]
        "b",
        retry=RetryPolicy(**{"max_attempts": 5, "base_delay": 0.1, "max_delay": 1, **policy}),
        sleep=slept.append,
        uniform=lambda low, high: high,
    )
    return store, client, slept


def test_throttling_and_5xx_are_retried_with_backoff() -> None:
    store, client, slept = store_with(
        [client_error("SlowDown", 503), client_error("InternalError", 500), None]
    )
    assert store.create("k", b"x") is True
    assert client.calls == 3
    assert slept == [pytest.approx(0.1), pytest.approx(0.2)]


def test_a_taken_key_is_an_answer_not_an_error() -> None:
    store, client, slept = store_with([client_error("PreconditionFailed", 412)])
    assert store.create("k", b"x") is False
    assert (client.calls, slept) == (1, [])


def test_fatal_errors_are_not_retried() -> None:
    store, client, _ = store_with([client_error("AccessDenied", 403)])
    with pytest.raises(errors.AccessDenied):
        store.put("k", b"x")
    assert client.calls == 1


def test_retries_end_with_storage_unavailable() -> None:
    store, client, _ = store_with([client_error("SlowDown", 503)] * 5)
    with pytest.raises(errors.StorageUnavailable, match="after 5 attempts"):
        store.put("k", b"x")
    assert client.calls == 5


def test_a_store_ignoring_conditional_writes_is_detected_once() -> None:
    class Ignoring(ScriptedClient):
        def delete_objects(self, **_: Any) -> dict[str, Any]:
            return {}

    client = Ignoring([None, None])
    store = ObjectStore(client, "ignoring-bucket")  # type: ignore[arg-type]
    with pytest.raises(errors.ConditionalWritesUnsupported, match="second create"):
        store.ensure_conditional_writes()
    assert ("http://scripted", "ignoring-bucket") not in ObjectStore._probed


def test_every_failed_request_is_reported_but_answers_are_not() -> None:
    failed: list[str] = []
    client = ScriptedClient(
        [client_error("SlowDown", 503), None, client_error("PreconditionFailed", 412)]
    )
    store = ObjectStore(
        client,  # type: ignore[arg-type]
        "b",
        sleep=lambda _: None,
        on_error=failed.append,
    )
    assert store.create("k", b"x") is True
    assert store.create("k", b"x") is False
    assert failed == ["PutObject"], "the retried 503 counts; a taken key is an answer"
    fatal = ObjectStore(client, "b", on_error=failed.append)  # type: ignore[arg-type]
    client.script.append(client_error("AccessDenied", 403))
    with pytest.raises(errors.AccessDenied):
        fatal.put("k", b"x")
    assert failed == ["PutObject", "PutObject"]


def test_poll_backoff_goes_on_to_long_delays_only_after_a_quiet_spell() -> None:
    policy = PollPolicy(min_delay=0.5, max_delay=1.0, idle_after=3.0, idle_max_delay=8.0)
    backoff = PollBackoff(policy)
    delays = []
    for _ in range(9):
        backoff = backoff.after(found=False)
        delays.append(backoff.current)
    # 0.5 + 1 + 1 waited: quiet for 2.5 s, under idle_after; then doubling up to 8
    assert delays == [0.5, 1.0, 1.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.idle_at_max
    assert backoff.quiet == pytest.approx(sum(delays[:-1]))
    # data: back to polling at once, and the quiet spell starts over
    backoff = backoff.after(found=True)
    assert (backoff.current, backoff.quiet) == (0.0, 0.0)
    assert [backoff.after(found=False).current] == [0.5]
    assert not PollBackoff(policy, current=1.0).idle_at_max


def test_poll_backoff_without_an_idle_phase_keeps_to_max_delay() -> None:
    backoff = PollBackoff(PollPolicy(min_delay=0.5, max_delay=1.0))
    for _ in range(100):
        backoff = backoff.after(found=False)
    assert backoff.current == 1.0
    assert backoff.idle_at_max
