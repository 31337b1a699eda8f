"""What the return-trip tests share: a fake clock, a ReturnTrip with its metrics, peers.

Alertmanagers run the shipped config. The clock starts at the real time,
because Alertmanager judges ``endsAt`` against its own clock, and is moved by
hand, so minutes of schedule take no wall time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ai_sidecar.metrics import SidecarMetrics, create_metrics
from ai_sidecar.models import Alert, Member
from ai_sidecar.notify import PostPermit, ReturnTrip, ReturnTripPolicy
from ai_sidecar.store import SqliteStore, Store
from tests.peers.alertmanager import Alertmanager, postable, render_config
from tests.peers.notify import SlackSink

POLICY = ReturnTripPolicy(
    external_url="http://127.0.0.1:8782/",
    grafana_url="http://grafana.example/d/scout",
    prometheus_url="http://prometheus.example",
)
ENRICHED = 'scout_enriched="true"'
SCOUT_LABELS = {"scout_enriched": "true", "scout_incident": "inc-1", "scout_priority": "P2"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def raw_postable(m: Member, ends_at: datetime | None = None) -> dict[str, Any]:
    return postable(
        m.labels,
        m.annotations,
        starts_at=m.starts_at,
        ends_at=ends_at,
        generator_url=m.generator_url,
    )


def counter(metrics: SidecarMetrics, name: str, peer: str) -> float:
    value = metrics.registry.get_sample_value(
        f"scout_sidecar_return_trip_{name}_total", {"peer": peer}
    )
    return value or 0.0


def enriched_in(am: Alertmanager) -> dict[str, dict[str, Any]]:
    """Active enriched copies in ``am`` by their scout_priority + alertname."""
    return {
        f"{a['labels']['alertname']}/{a['labels']['scout_priority']}": a
        for a in am.alerts(ENRICHED)
    }


async def table(db: Store) -> list[tuple[Any, ...]]:
    return [(row.peer, row.state, row.due_at) for row in await db.list_posts()]


# --- fixtures -------------------------------------------------------------------


@pytest.fixture
def hook() -> Iterator[SlackSink]:
    """Stands in for the sidecar's webhook (and for Slack) behind the Alertmanagers."""
    with SlackSink() as sink:
        yield sink


@pytest.fixture
def am_config(tmp_path: Path, hook: SlackSink) -> Path:
    return render_config(
        tmp_path, sidecar_url=hook.base_url, slack_url=hook.url, smtp_smarthost="127.0.0.1:9"
    )


@pytest.fixture
def alertmanager(tmp_path: Path, am_config: Path) -> Iterator[Alertmanager]:
    with Alertmanager(tmp_path, am_config) as am:
        yield am


@pytest.fixture
def sink() -> Iterator[SlackSink]:
    """A peer that records exactly what was posted (and has no GET)."""
    with SlackSink() as peer:
        yield peer


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Store]:
    database = await SqliteStore.open(tmp_path / "store" / "scout.db")
    yield database
    await database.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


class Trip:
    """A ReturnTrip with its clock, metrics and what it handed to take_in."""

    def __init__(
        self,
        db: Store,
        peers: list[str],
        session: aiohttp.ClientSession,
        policy: ReturnTripPolicy = POLICY,
        clock: Clock | None = None,
        permit: PostPermit | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.metrics = create_metrics()
        self.missing: list[list[Alert]] = []  # what take_in got, call by call

        async def take_in(alerts: Any) -> None:
            self.missing.append(list(alerts))

        self.trip = ReturnTrip(
            db,
            peers,
            policy,
            self.metrics,
            session,
            take_in=take_in,
            clock=self.clock,
            permit=permit,
        )

    def posts(self, peer: str) -> float:
        return counter(self.metrics, "posts", peer)

    def failures(self, peer: str) -> float:
        return counter(self.metrics, "failures", peer)
