"""Replaying alert storms: builders for alerts, storm files and a correlator run.

Storm files (``storms/*.yml``) list alerts by start time in seconds after T0;
the correlator's clock is fixed, so a replay is exactly repeatable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ai_sidecar.config import parse_config
from ai_sidecar.correlation import Change, Correlator
from ai_sidecar.models import Alert

STORMS = Path(__file__).parent / "storms"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
# The caller's clock; only used for a resolve without endsAt.
NOW = T0 + timedelta(hours=3)


def fingerprint(labels: dict[str, str]) -> str:
    text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make(
    alertname: str,
    at: float = 0,
    *,
    ends: float | None = None,
    severity: str = "warning",
    **labels: str,
) -> Alert:
    """An alert starting ``at`` seconds after T0; resolved when ``ends`` is given."""
    all_labels = {"alertname": alertname, "severity": severity, **labels}
    return Alert(
        fingerprint=fingerprint(all_labels),
        status="firing" if ends is None else "resolved",
        labels=all_labels,
        annotations={},
        starts_at=T0 + timedelta(seconds=at),
        ends_at=None if ends is None else T0 + timedelta(seconds=ends),
    )


def resolved(alert: Alert, ends: float) -> Alert:
    return Alert(
        alert.fingerprint,
        "resolved",
        alert.labels,
        alert.annotations,
        alert.starts_at,
        T0 + timedelta(seconds=ends),
    )


def refired(alert: Alert, at: float) -> Alert:
    return Alert(
        alert.fingerprint, "firing", alert.labels, alert.annotations, T0 + timedelta(seconds=at)
    )


def storm(name: str) -> list[Alert]:
    rows: list[dict[str, Any]] = yaml.safe_load((STORMS / name).read_text())["alerts"]
    alerts = []
    for row in rows:
        fields = dict(row)
        at, ends = fields.pop("at"), fields.pop("ends", None)
        alerts.append(make(fields.pop("alertname"), at, ends=ends, **fields))
    return alerts


def correlator(text: str = "{}") -> Correlator:
    return Correlator(parse_config(text, "test.yml").correlation)


def fold(c: Correlator, alerts: Iterable[Alert]) -> list[Change]:
    changes = []
    for alert in alerts:
        change = c.apply(alert, NOW)
        assert change is not None, alert
        changes.append(change)
    return changes
