"""A kill -9 of the sidecar during a burst of alerts loses nothing.

Two bursts: 10,000 alerts in requests of 50 (the writer thread's group
commit), and 2,000 alerts one per request from many concurrent senders (the
quick writes' group commit, where many requests share one COMMIT).

The sender behaves like Alertmanager: it retries a request until it gets a 2xx.
Before the restart the test reads the store itself, so an alert acknowledged
before the kill but not written would show up as missing rather than being
hidden by a retry.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ai_sidecar.models import Alert
from scripts.localstack import Service, free_port, sidecar_service
from tests.ai_sidecar.builders import alert, payload

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


TOKEN = "durability-token"
SITES = 40


@dataclass(frozen=True, slots=True)
class Burst:
    """How many alerts, how many per request, and how many senders at once."""

    alerts: int
    per_request: int
    senders: int


BURSTS = {
    "batches": Burst(alerts=10_000, per_request=50, senders=8),
    "single-alert requests": Burst(alerts=2_000, per_request=1, senders=32),
}


def storm(count: int) -> list[Alert]:
    return [
        alert(
            "InterfaceDown" if i % 25 == 0 else "ProbeLoss",
            at=timedelta(milliseconds=i),
            site=f"site{i % SITES}",
            instance=f"dev{i}",
        )
        for i in range(count)
    ]


def sidecar(tmp_path: Path, port: int) -> Service:
    env = {"SCOUT_WEBHOOK_TOKEN": TOKEN, "SCOUT_DATA_DIR": str(tmp_path / "data")}
    return sidecar_service(tmp_path, port, env=env)


def stored_identities(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return connection.execute("SELECT fingerprint, status, starts_at FROM alerts").fetchall()


async def send_all(
    url: str,
    burst: Burst,
    batches: Sequence[list[Alert]],
    acked: list[list[Alert]],
    first_acks: asyncio.Event,
) -> None:
    """Post every batch until it is acknowledged, the way Alertmanager retries."""
    queue: asyncio.Queue[list[Alert]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            while True:
                try:
                    async with session.post(url, json=payload(*batch), headers=headers) as reply:
                        if reply.status == 200:
                            acked.append(batch)
                            if sum(map(len, acked)) >= burst.alerts // 4:
                                first_acks.set()
                            break
                        assert reply.status >= 500, await reply.text()
                except (aiohttp.ClientError, ConnectionError):
                    pass
                await asyncio.sleep(0.05)

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(sender(session) for _ in range(burst.senders)))


async def incidents(base: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/incidents?limit=1000", headers=headers) as reply,
    ):
        assert reply.status == 200
        result: list[dict[str, Any]] = await reply.json()
        return result


@pytest.mark.parametrize("burst", BURSTS.values(), ids=BURSTS.keys())
async def test_kill_9_during_a_burst_loses_nothing(tmp_path, start_service, burst: Burst):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    alerts = storm(burst.alerts)
    size = burst.per_request
    batches = [alerts[i : i + size] for i in range(0, burst.alerts, size)]
    acked: list[list[Alert]] = []
    first_acks = asyncio.Event()
    first = start_service(sidecar(tmp_path, port))
    sending = asyncio.create_task(
        send_all(f"{base}/api/v1/alertmanager", burst, batches, acked, first_acks)
    )

    await asyncio.wait_for(first_acks.wait(), 60)
    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(first.process.wait, 10)
    acked_before_kill = [a for batch in list(acked) for a in batch]
    assert burst.alerts // 4 <= len(acked_before_kill) < burst.alerts, (
        "the kill must land mid-burst"
    )

    # Read the store as the killed process left it: every acknowledged alert is there.
    stored = {row[0] for row in stored_identities(tmp_path / "data" / "scout.db")}
    missing = [a.fingerprint for a in acked_before_kill if a.fingerprint not in stored]
    assert missing == [], f"{len(missing)} acknowledged alerts lost by kill -9"

    start_service(sidecar(tmp_path, port))
    await asyncio.wait_for(sending, 90)

    rows = stored_identities(tmp_path / "data" / "scout.db")
    assert len(rows) == burst.alerts
    assert len(set(rows)) == burst.alerts
    assert {r[0] for r in rows} == {a.fingerprint for a in alerts}

    # The worker resumed where it stopped: each alert sits in exactly one incident.
    async def all_correlated() -> list[dict[str, Any]]:
        found = await incidents(base)
        return found if sum(len(i["members"]) for i in found) == burst.alerts else []

    deadline = asyncio.get_running_loop().time() + 60
    while not (found := await all_correlated()):
        assert asyncio.get_running_loop().time() < deadline, "worker did not catch up"
        await asyncio.sleep(0.2)
    members = [m for i in found for m in i["members"]]
    assert len(members) == len(set(members)) == burst.alerts
    assert {i["group"]["site"] for i in found} == {f"site{s}" for s in range(SITES)}
