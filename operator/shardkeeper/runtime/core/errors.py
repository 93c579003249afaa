"""Errors of the processing core that stop a shard until a person acts.

:class:`TaskError` and its subclasses are final: the shard reports FAILED with the
message, and running it again fails the same way until the cause is fixed. Storage errors
(a fenced writer, an unreachable bucket) are not among them: the shell handles those by
stepping down or retrying.
"""

from __future__ import annotations


class TaskError(Exception):
    """The task cannot go on until a person fixes something; ``reason`` says what."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TaskFailed(TaskError):
    """A document, or the task's code on it, failed. Nothing was committed past it."""

    def __init__(self, journal: str, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.journal = journal
        self.offset = offset

    def __str__(self) -> str:
        return f"document at offset {self.offset} of journal {self.journal!r}: {self.reason}"


class TaskMisconfigured(TaskError):
    """The task's own definition is at fault: a migration, a lambda, a plug-in, a table."""


class DocumentRejected(Exception):
    """Task code failed on one document; the processor turns it into :class:`TaskFailed`
    naming the document."""


class CommitWithheld(Exception):
    """The shell withdrew the right to commit (``ProcessorOptions.may_commit``: the
    replica is past its Lease's renew deadline). The open transaction is rolled back; not
    a :class:`TaskError`, the shell steps down."""
