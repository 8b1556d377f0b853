"""Time stamps: every one lvjob writes (run.json, metrics rows, study records, log lines) is UTC, ISO 8601.

One format everywhere, so records written on different nodes (and in different time zones) compare
and subtract as they are.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    """The current UTC time, ISO 8601 with milliseconds: `2026-11-26T14:03:07.512+00:00`."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def utc_compact() -> str:
    """The current UTC time for a file name: `20261126T140307Z`."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def parse_utc(stamp: str) -> datetime:
    """A record's ISO 8601 UTC time (`...+00:00` or `...Z`) as an aware datetime."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def clock() -> str:
    """The UTC time of day, `14:03:07Z`, for a screen that refreshes (`lvjob status --watch`)."""
    return datetime.now(timezone.utc).strftime("%H:%M:%SZ")
