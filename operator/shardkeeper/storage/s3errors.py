"""What an S3 error means for the caller: retry it, treat it as an answer, or give up.

Only throttling, 5xx and network timeouts are worth retrying. Everything a person must fix
(a missing bucket, denied access, a store without conditional writes) maps to a specific
:mod:`shardkeeper.storage.errors` class at once, so it is never hidden behind retries.
"""

from __future__ import annotations

import dataclasses
import enum

from botocore.exceptions import (
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)

from shardkeeper.storage import errors

RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "XMinioServerNotInitialized",
        "XMinioReadQuorum",
        "XMinioWriteQuorum",
        # AWS answers 409 when two conditional writes race; a retry then gets 412
        "ConditionalRequestConflict",
    }
)
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AllAccessDisabled",
    }
)
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})
UNSUPPORTED_CONDITIONAL_CODES = frozenset({"NotImplemented", "501"})


class Kind(enum.Enum):
    RETRY = "retry"
    NOT_FOUND = "not found"
    PRECONDITION_FAILED = "precondition failed"
    FATAL = "fatal"


@dataclasses.dataclass(frozen=True)
class ErrorMeaning:
    """What one S3 error means: its kind, the error to raise for a fatal one, and for a
    retryable one the reason a retry is logged with."""

    kind: Kind
    error: errors.StorageError | None = None
    reason: str = ""


def classify(
    exc: Exception, *, bucket: str, key: str, operation: str, endpoint: str, conditional: bool
) -> ErrorMeaning:
    """Decide what ``exc``, raised by ``operation`` on ``bucket``/``key``, means."""
    if isinstance(exc, SSLError):
        return ErrorMeaning(Kind.FATAL, errors.UnexpectedStorageError(f"{operation} {key}: {exc}"))
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ErrorMeaning(Kind.FATAL, errors.NoCredentials(bucket, key, operation, str(exc)))
    if isinstance(exc, ConnectionError | HTTPClientError | IncompleteReadError):
        return ErrorMeaning(Kind.RETRY, reason=type(exc).__name__)
    if not isinstance(exc, ClientError):
        return ErrorMeaning(
            Kind.FATAL, errors.UnexpectedStorageError(f"{operation} {key}: {exc!r}")
        )
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    message = str(exc.response.get("Error", {}).get("Message", "")) or code
    sts_call = str(getattr(exc, "operation_name", ""))
    if sts_call.startswith("AssumeRole") and 400 <= status < 500 and status != 429:
        # raised by boto3's credential provider inside the S3 call, before it was sent;
        # the STS's throttling and 5xx are retried like the store's
        return ErrorMeaning(
            Kind.FATAL,
            errors.CredentialsRefused(bucket, key, operation, sts_call, f"{code}: {message}"),
        )
    if code == "NoSuchBucket":
        return ErrorMeaning(Kind.FATAL, errors.BucketNotFound(bucket, endpoint))
    if code in DENIED_CODES or status == 403:
        return ErrorMeaning(Kind.FATAL, errors.AccessDenied(bucket, key, operation, code or "403"))
    if code in PRECONDITION_CODES or status == 412:
        return ErrorMeaning(Kind.PRECONDITION_FAILED)
    if conditional and (code in UNSUPPORTED_CONDITIONAL_CODES or status == 501):
        return ErrorMeaning(
            Kind.FATAL,
            errors.ConditionalWritesUnsupported(bucket, endpoint, f"{code}: {message}"),
        )
    if code in NOT_FOUND_CODES or status == 404:
        return ErrorMeaning(Kind.NOT_FOUND)
    if code in RETRYABLE_CODES or status in (429, 500, 502, 503, 504):
        return ErrorMeaning(Kind.RETRY, reason=f"{code or status}")
    return ErrorMeaning(
        Kind.FATAL,
        errors.UnexpectedStorageError(f"{operation} s3://{bucket}/{key}: {code} {message}"),
    )
