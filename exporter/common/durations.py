"""Durations as Prometheus writes them (``30s``, ``5m``, ``1h30m``), for both daemons."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

# Prometheus' duration grammar (model.ParseDuration): units largest first, each once.
_DURATION = re.compile(
    r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?"
)
_UNITS = (
    ("y", timedelta(days=365)),
    ("w", timedelta(weeks=1)),
    ("d", timedelta(days=1)),
    ("h", timedelta(hours=1)),
    ("m", timedelta(minutes=1)),
    ("s", timedelta(seconds=1)),
    ("ms", timedelta(milliseconds=1)),
)


def parse_duration(text: str) -> timedelta:
    """``1h30m`` -> 90 minutes; raises ValueError for anything Prometheus would refuse."""
    match = _DURATION.fullmatch(text)
    if text == "0":
        return timedelta(0)
    if not text or match is None:
        raise ValueError(f"invalid duration {text!r} (write it as Prometheus does: 30s, 5m, 1h30m)")
    total = timedelta(0)
    for amount, (_, unit) in zip(match.groups(), _UNITS, strict=True):
        if amount is not None:
            total += int(amount) * unit
    return total


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration`, in its shortest form (``0s`` for zero)."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for suffix, unit in _UNITS:
        size = round(unit.total_seconds() * 1000)
        if millis >= size:
            parts.append(f"{millis // size}{suffix}")
            millis %= size
    return "".join(parts)


def _duration(value: object) -> object:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        # YAML reads `window: 300` as a number; Prometheus would refuse it too.
        raise ValueError(f"should be a duration such as 30s, 5m or 1h30m, got {value!r}")
    return parse_duration(value)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("should be longer than 0s")
    return value


_DurationBase = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
]
Duration = Annotated[_DurationBase, AfterValidator(_positive)]
# Zero is meaningful here: "do it once, do not repeat".
DurationOrZero = _DurationBase
