"""The period a report covers: a day, a week or a month, in the report's time zone.

A period is half-open, ``[start, end)``. It ends now, at the end of a given
date (midnight after it, local time), or at a given instant (the digest's
scheduled time). It starts as far back as its kind says in local wall-clock
time, so a week across a daylight-saving change is still Monday 08:00 to
Monday 08:00, and a month back from 31 March is the last day of February.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ai_sidecar.config import ReportPeriod
from ai_sidecar.console.words import N_
from ai_sidecar.periods import REPORT_PERIODS

PERIODS = REPORT_PERIODS


@dataclass(frozen=True, slots=True)
class Period:
    kind: ReportPeriod
    # Aware, in UTC.
    start: datetime
    end: datetime
    zone: ZoneInfo

    @property
    def local_start(self) -> datetime:
        return self.start.astimezone(self.zone)

    @property
    def local_end(self) -> datetime:
        return self.end.astimezone(self.zone)

    @property
    def last_day(self) -> date:
        """The last local date the period covers (one ending at midnight ends the day before)."""
        return (self.local_end - timedelta(microseconds=1)).date()

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def title(self) -> str:
        """``Week of 2026-11-02 to 2026-11-09 (Europe/Paris)``."""
        return (
            f"{self.kind.capitalize()} from {self.local_start:%Y-%m-%d %H:%M} "
            f"to {self.local_end:%Y-%m-%d %H:%M} ({self.zone.key})"
        )


def _month_back(moment: datetime) -> datetime:
    """The same wall-clock time a calendar month earlier (clamped to the month's last day)."""
    year, month = (moment.year, moment.month - 1) if moment.month > 1 else (moment.year - 1, 12)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def period_ending(kind: ReportPeriod, end: datetime, zone: ZoneInfo) -> Period:
    """The ``kind`` period that ends at the instant ``end`` (aware)."""
    if end.tzinfo is None:
        raise ValueError("the end of a report period must carry a time zone")
    local_end = end.astimezone(zone)
    if kind == "month":
        local_start = _month_back(local_end)
    else:
        local_start = local_end - timedelta(days=1 if kind == "day" else 7)
    # Wall-clock arithmetic on the local time, then back to UTC: the zone's
    # offset at the start may differ from the one at the end.
    start = local_start.replace(tzinfo=None).replace(tzinfo=zone)
    return Period(kind, start.astimezone(UTC), end.astimezone(UTC), zone)


def report_period(
    kind: ReportPeriod, zone: ZoneInfo, *, now: datetime, end_date: date | None = None
) -> Period:
    """The ``kind`` period ending ``now``, or at the end of ``end_date`` in ``zone``."""
    if kind not in PERIODS:
        raise ValueError(f"unknown report period {kind!r}: expected one of {', '.join(PERIODS)}")
    if end_date is None:
        return period_ending(kind, now, zone)
    midnight = datetime.combine(end_date + timedelta(days=1), time(0), tzinfo=zone)
    return period_ending(kind, midnight, zone)


# End dates a report accepts: far enough from date's limits that a month back
# and the midnight after stay representable.
EARLIEST_END = date(1970, 1, 1)
LATEST_END = date(9000, 12, 31)


class EndDateError(ValueError):
    """An end date that makes no sense: ``message`` (a catalogue id, English) with
    ``values``; ``str()`` is the English sentence, which the CLI prints."""

    def __init__(self, message: str, **values: object) -> None:
        super().__init__(message.format(**values))
        self.message = message
        self.values = values


def parse_end_date(text: str) -> date:
    """A ``YYYY-MM-DD`` date, with a message fit to show a person."""
    try:
        parsed = date.fromisoformat(text)
    except ValueError:
        raise EndDateError(
            N_("the end date should be YYYY-MM-DD, got {text}"), text=repr(text[:32])
        ) from None
    if not EARLIEST_END <= parsed <= LATEST_END:
        raise EndDateError(
            N_("the end date should be between {earliest} and {latest}, got {date}"),
            earliest=EARLIEST_END,
            latest=LATEST_END,
            date=parsed,
        )
    return parsed
