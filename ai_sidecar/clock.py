"""The sidecar's one wall clock: aware UTC datetimes.

Everything that stamps or measures alert time takes a ``clock`` argument that
defaults to :func:`utc_now`, so tests replace time in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, in UTC, timezone-aware."""
    return datetime.now(UTC)
