"""Kubernetes time formats: RFC 3339 seconds for most fields, microseconds for Leases."""

from __future__ import annotations

import datetime as dt


def rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp (with or without fractions)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
