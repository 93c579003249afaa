"""A thin layer over one bucket of an S3-compatible store: the calls journals need, retried.

Transient faults are retried here with jittered back-off (see :mod:`.retry`); everything
else is raised at once as a specific :mod:`.errors` class. A conditional create that finds
the key taken returns ``False`` rather than raising: for a journal that is an answer, not a
failure.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

from botocore.exceptions import IncompleteReadError

from shardkeeper.storage import errors
from shardkeeper.storage.retry import RetryPolicy
from shardkeeper.storage.s3errors import Kind, classify

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ListObjectsV2OutputTypeDef as ListPage

T = TypeVar("T")

PROBE_PREFIX = ".shardkeeper-probe"
DELETE_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime.datetime


class _NotFound(Exception):
    pass


class _Taken(Exception):
    pass


#: how much of a body one read moves into a caller's buffer where botocore's ``readinto``
#: is used: small enough that the copy it makes stays in the CPU's cache
READ_CHUNK = 1 << 20


def _read_body_into(body: StreamingBody, view: memoryview) -> None:
    """Fill ``view`` from ``body``, which holds exactly ``len(view)`` bytes; a body that
    ends early or breaks off raises (a retryable) :class:`IncompleteReadError`.

    botocore's own ``readinto`` reads each chunk as new ``bytes`` and copies it; on a
    loopback store that costs a restore as much CPU as the checksum. When the body is the
    usual urllib3 response over ``http.client``, the socket is read straight into ``view``
    instead and the connection is handed back to urllib3's pool, as its own read would.
    """
    raw = getattr(body, "_raw_stream", None)  # urllib3's response
    source = getattr(raw, "_fp", None)
    release = getattr(raw, "release_conn", None)
    if isinstance(source, http.client.HTTPResponse) and callable(release):
        _fill(source.readinto, view, len(view))
        release()
    else:
        # botocore's stubs say IO[bytes]; its readinto takes any writable buffer
        _fill(body.readinto, view, READ_CHUNK)  # type: ignore[arg-type]


def _read_body_split(body: StreamingBody, head: int, size: int) -> tuple[bytes, bytes] | None:
    """``body``'s ``size`` bytes as its first ``head`` and the rest, each read straight
    from ``http.client`` into a ``bytes`` of its own; ``None`` when the body is not the
    usual urllib3 response (the caller reads it whole). A body that ends early raises (a
    retryable) :class:`IncompleteReadError`."""
    raw = getattr(body, "_raw_stream", None)
    source = getattr(raw, "_fp", None)
    release = getattr(raw, "release_conn", None)
    if not isinstance(source, http.client.HTTPResponse) or not callable(release):
        return None
    first = min(head, size)
    parts = []
    for want in (first, size - first):
        try:
            part = source.read(want) if want else b""
        except (OSError, http.client.HTTPException) as exc:
            raise IncompleteReadError(actual_bytes=0, expected_bytes=size) from exc
        if len(part) != want:
            raise IncompleteReadError(actual_bytes=len(part), expected_bytes=want)
        parts.append(part)
    release()
    return parts[0], parts[1]


def _fill(readinto: Callable[[memoryview], int], view: memoryview, chunk: int) -> None:
    done = 0
    while done < len(view):
        try:
            read = readinto(view[done : done + chunk])
        except (OSError, http.client.HTTPException) as exc:
            # a timeout or a reset half-way: the caller's retry reads the object again
            raise IncompleteReadError(actual_bytes=done, expected_bytes=len(view)) from exc
        if not read:
            raise IncompleteReadError(actual_bytes=done, expected_bytes=len(view))
        done += read


class ObjectStore:
    """One bucket. Thread-safe: boto3 clients are, and the rest is immutable or locked."""

    # (endpoint, bucket) pairs whose conditional writes were probed and found to work
    _probed: set[tuple[str, str]] = set()
    _probe_lock = threading.Lock()

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
        on_error: Callable[[str], None] = lambda _operation: None,
        on_created: Callable[[str, int], None] | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._uniform = uniform
        # told the operation of each failed request that is neither "no such key" nor
        # "precondition failed" (those are answers, not faults); retried ones count too,
        # so a store that fails and recovers shows before anything gives up
        self._on_error = on_error
        # told the key and size of each object a conditional create made (a journal's
        # writer learns its heads from its appends so, see runtime/core/hints.py)
        self.on_created = on_created

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def _call(self, operation: str, key: str, fn: Callable[[], T], *, conditional: bool) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:
                verdict = classify(
                    exc,
                    bucket=self.bucket,
                    key=key,
                    operation=operation,
                    endpoint=self.endpoint,
                    conditional=conditional,
                )
                if verdict.kind is Kind.NOT_FOUND:
                    raise _NotFound from exc
                if verdict.kind is Kind.PRECONDITION_FAILED:
                    raise _Taken from exc
                self._on_error(operation.split(" ", 1)[0])
                if verdict.kind is Kind.FATAL:
                    assert verdict.error is not None
                    raise verdict.error from exc
                delay = self.retry.delay(attempt, self._uniform)
                if self.retry.gives_up(attempt, time.monotonic() - started, delay):
                    raise errors.StorageUnavailable(
                        operation, key, attempt, verdict.reason
                    ) from exc
                self._sleep(delay)

    def create(self, key: str, body: bytes) -> bool:
        """Create ``key`` only if it does not exist. ``False`` means it already existed.

        A retried request whose first attempt did land also answers ``False``: callers that
        must tell "mine" from "someone else's" read the object back and compare.
        """

        def put() -> None:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")

        try:
            self._call("PutObject (If-None-Match: *)", key, put, conditional=True)
        except _Taken:
            return False
        if self.on_created is not None:
            self.on_created(key, len(body))
        return True

    def put(self, key: str, body: bytes) -> None:
        def put() -> None:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

        self._call("PutObject", key, put, conditional=False)

    def get(self, key: str) -> bytes | None:
        """The whole object, or ``None`` if there is no such key."""

        def get() -> bytes:
            # the body is read inside the retried call: a stream can time out half-way
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

        try:
            return self._call("GetObject", key, get, conditional=False)
        except _NotFound:
            return None

    def get_split(self, key: str, head: int) -> tuple[bytes, bytes] | None:
        """The whole object as its first ``head`` bytes (fewer if it is shorter) and the
        rest, or ``None`` if there is no such key. Each part is read from the connection
        into its own ``bytes``: a caller that wants the rest apart (a fragment's payload)
        copies nothing."""

        def get() -> tuple[bytes, bytes]:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            body = answer["Body"]
            size = answer.get("ContentLength")
            try:
                parts = None if size is None else _read_body_split(body, head, size)
                if parts is None:
                    data = body.read()
                    parts = data[:head], data[head:]
            except BaseException:
                body.close()  # its connection holds unread bytes: never reuse it
                raise
            return parts

        try:
            return self._call("GetObject", key, get, conditional=False)
        except _NotFound:
            return None

    def get_into(self, key: str, buffer: memoryview) -> int | None:
        """Read the whole object into the start of ``buffer`` and return its size, or
        ``None`` if there is no such key.

        Nothing is built as ``bytes``: large objects read this way into a reused buffer
        cost no allocation and no copy of the whole. An object larger than ``buffer`` is
        not read at all; its size, which the caller can report, is still returned.
        """

        def get() -> int:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            body = answer["Body"]
            if "ContentLength" not in answer:
                # no length announced (a chunked answer): read it as it comes
                data = body.read()
                if len(data) <= len(buffer):
                    buffer[: len(data)] = data
                return len(data)
            size = answer["ContentLength"]
            try:
                if size <= len(buffer):
                    _read_body_into(body, buffer[:size])
                    return size
            except BaseException:
                body.close()  # its connection holds unread bytes: never reuse it
                raise
            body.close()
            return size

        try:
            return self._call("GetObject", key, get, conditional=False)
        except _NotFound:
            return None

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in key order, after ``start_after`` if given."""
        token: str | None = None
        while True:
            # continuation tokens supersede StartAfter; S3 ignores it after the first page
            after = start_after if token is None else None

            def list_page(token: str | None = token, after: str | None = after) -> ListPage:
                if token is not None:
                    return self.client.list_objects_v2(
                        Bucket=self.bucket, Prefix=prefix, ContinuationToken=token
                    )
                if after is not None:
                    return self.client.list_objects_v2(
                        Bucket=self.bucket, Prefix=prefix, StartAfter=after
                    )
                return self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)

            page = self._call("ListObjectsV2", prefix, list_page, conditional=False)
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"], item["Size"], item["LastModified"])
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def directories(self, prefix: str) -> tuple[str, ...]:
        """The "directories" right under ``prefix`` (a ``/``-terminated key prefix): each
        key prefix ``prefix + name + "/"`` that some object's key starts with, in key
        order. One request per thousand of them (S3's CommonPrefixes), whatever lies in
        them."""
        found: tuple[str, ...] = ()
        token: str | None = None
        while True:

            def list_page(token: str | None = token) -> ListPage:
                if token is not None:
                    return self.client.list_objects_v2(
                        Bucket=self.bucket, Prefix=prefix, Delimiter="/", ContinuationToken=token
                    )
                return self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, Delimiter="/")

            page = self._call("ListObjectsV2", prefix, list_page, conditional=False)
            found += tuple(p["Prefix"] for p in page.get("CommonPrefixes", []) if "Prefix" in p)
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]

    def first_after(self, prefix: str, start_after: str) -> ObjectInfo | None:
        """The first object under ``prefix`` whose key sorts after ``start_after``."""

        def list_one() -> list[ObjectInfo]:
            page = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=prefix, StartAfter=start_after, MaxKeys=1
            )
            return [
                ObjectInfo(i["Key"], i["Size"], i["LastModified"]) for i in page.get("Contents", [])
            ]

        found = self._call("ListObjectsV2", prefix, list_one, conditional=False)
        return found[0] if found else None

    def delete(self, keys: Iterable[str]) -> int:
        """Delete ``keys`` (missing ones are fine). Returns how many were asked for."""
        pending = list(keys)
        for start in range(0, len(pending), DELETE_BATCH):
            batch = pending[start : start + DELETE_BATCH]

            def delete(batch: list[str] = batch) -> None:
                answer = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
                failed = answer.get("Errors", [])
                if failed:
                    first = failed[0]
                    raise errors.UnexpectedStorageError(
                        f"deleting {len(failed)} objects failed, first {first.get('Key')}: "
                        f"{first.get('Code')} {first.get('Message')}"
                    )

            self._call("DeleteObjects", batch[0], delete, conditional=False)
        return len(pending)

    def ensure_conditional_writes(self) -> None:
        """Fail with :class:`ConditionalWritesUnsupported` unless ``If-None-Match: *`` holds.

        Probed once per endpoint and bucket: create a fresh key twice; the second create
        must be refused. A store that ignores the header would let two writers extend one
        journal at the same offset, which is exactly what fencing relies on never happening.
        """
        marker = (self.endpoint, self.bucket)
        with self._probe_lock:
            if marker in self._probed:
                return
        key = f"{PROBE_PREFIX}/{uuid.uuid4().hex}"
        if not self.create(key, b"1"):
            raise errors.ConditionalWritesUnsupported(
                self.bucket, self.endpoint, "a fresh probe key was reported as existing"
            )
        honoured = not self.create(key, b"2")
        self.delete([key])
        if not honoured:
            raise errors.ConditionalWritesUnsupported(
                self.bucket,
                self.endpoint,
                "a second create of the same key succeeded instead of answering 412",
            )
        with self._probe_lock:
            self._probed.add(marker)
