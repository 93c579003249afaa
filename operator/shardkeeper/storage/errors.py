"""Errors of the storage layer, one class per cause a person can act on.

Transient faults (throttling, 5xx, timeouts) never surface as these: the object-store layer
retries them. What is raised here is final for the operation that raised it, and the
message says what to fix.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every storage error."""


class BucketNotFound(StorageError):
    def __init__(self, bucket: str, endpoint: str) -> None:
        super().__init__(
            f"bucket {bucket!r} does not exist at {endpoint}: create it, or fix the bucket "
            "name or endpoint in the StorageMapping"
        )
        self.bucket = bucket


class AccessDenied(StorageError):
    def __init__(self, bucket: str, key: str, operation: str, detail: str) -> None:
        super().__init__(
            f"{operation} on s3://{bucket}/{key} was denied ({detail}): check the credentials "
            "(the StorageMapping's Secret, or the role of the pods' ambient credentials) and "
            "grant them s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on this "
            "bucket and prefix"
        )
        self.bucket = bucket
        self.key = key


class CredentialsRefused(AccessDenied):
    """The STS would not give the temporary credentials that ``operation`` was to be signed
    with (ambient credentials with a web identity)."""

    def __init__(self, bucket: str, key: str, operation: str, sts_call: str, detail: str) -> None:
        StorageError.__init__(
            self,
            f"{operation} on s3://{bucket}/{key} has no credentials: the STS refused "
            f"{sts_call} ({detail}): check the StorageMapping's webIdentity (roleArn, "
            "audience, stsEndpoint) and that the role trusts the cluster's service-account "
            "token issuer and this audience",
        )
        self.bucket = bucket
        self.key = key


class NoCredentials(AccessDenied):
    """No Secret, and boto3's default chain found nothing (plain ambient credentials)."""

    def __init__(self, bucket: str, key: str, operation: str, detail: str) -> None:
        StorageError.__init__(
            self,
            f"{operation} on s3://{bucket}/{key} has no credentials ({detail}): the store "
            "names no Secret and boto3's default chain found none (no web identity, "
            "EKS Pod Identity, instance profile or AWS_* variables): set the StorageMapping's "
            "credentialsSecretRef or webIdentity",
        )
        self.bucket = bucket
        self.key = key


class ConditionalWritesUnsupported(StorageError):
    def __init__(self, bucket: str, endpoint: str, detail: str) -> None:
        super().__init__(
            f"the object store at {endpoint} (bucket {bucket!r}) does not honour conditional "
            f"writes (If-None-Match: *): {detail}. Fencing depends on them, so a journal cannot "
            "be written there safely: use a store that supports them (AWS S3, recent MinIO, R2)"
        )
        self.bucket = bucket


class StorageUnavailable(StorageError):
    """Transient faults went on past the retry budget."""

    def __init__(self, operation: str, key: str, attempts: int, last: str) -> None:
        super().__init__(
            f"{operation} {key} still failing after {attempts} attempts ({last}): check that "
            "the object store is reachable and not overloaded"
        )
        self.key = key


class UnexpectedStorageError(StorageError):
    """An S3 error this layer has no specific meaning for; the message keeps the original."""


class JournalCorrupt(StorageError):
    """A journal's content breaks an invariant; the message names the object to inspect."""


class JournalGap(JournalCorrupt):
    def __init__(self, journal: str, offset: int, next_begin: int | None) -> None:
        after = (
            "and nothing after it"
            if next_begin is None
            else f"but a fragment begins at {next_begin:#x}"
        )
        super().__init__(
            f"journal {journal!r} has no fragment at offset {offset:#x} {after}: the data "
            "there was lost or pruned. Restore the missing object, or restore the shard from "
            "a snapshot that is newer than this offset"
        )
        self.journal = journal
        self.offset = offset


class ChecksumMismatch(JournalCorrupt):
    def __init__(self, key: str, expected: str, actual: str) -> None:
        super().__init__(
            f"object {key} is corrupt (checksum {actual}, expected {expected}): restore "
            "it from a backup or replica; it cannot be read as it is"
        )
        self.key = key


class Fenced(StorageError):
    """A newer writer took the journal over; this writer must stop and never retry."""

    def __init__(self, journal: str, offset: int, our_epoch: int, their_epoch: int) -> None:
        super().__init__(
            f"journal {journal!r} was taken over at offset {offset:#x} by epoch {their_epoch} "
            f"(this writer has epoch {our_epoch}): this writer is fenced and must stop"
        )
        self.journal = journal
        self.offset = offset
        self.our_epoch = our_epoch
        self.their_epoch = their_epoch


class StaleEpoch(StorageError):
    def __init__(self, journal: str, our_epoch: int, their_epoch: int) -> None:
        super().__init__(
            f"journal {journal!r} already holds writes of epoch {their_epoch}, not older "
            f"than epoch {our_epoch}: another writer took it over; epochs are never shared"
        )
        self.journal = journal
        self.our_epoch = our_epoch
        self.their_epoch = their_epoch


class AppendOutcomeUnknown(StorageError):
    """An append may or may not have landed; only a recovery can tell."""

    def __init__(self, journal: str, offset: int, cause: str) -> None:
        super().__init__(
            f"append to journal {journal!r} at offset {offset:#x} has an unknown outcome "
            f"({cause}): this writer stops; reopen the store to recover what the log holds"
        )
        self.journal = journal
        self.offset = offset


class SnapshotCorrupt(StorageError):
    """A snapshot's manifest or data is unusable; the message names the object."""


class SnapshotCancelled(StorageError):
    """The store stopped while a snapshot was being written; it was abandoned."""


class StoreClosed(StorageError):
    """The store cannot commit any more (closed, fenced or failed); the message says why."""


class TransactionRolledBack(StorageError):
    """SQLite rolled the open transaction back by itself (it does when it interrupts a
    statement that writes): nothing more may run in it."""


class NotPrimary(StorageError):
    """A write was asked of a store that has not taken over its recovery log."""


class ForkMismatch(StorageError):
    """A fork was asked for that contradicts what the logs already hold."""
