"""Sidecar replicas on one PostgreSQL database, fed the way an Alertmanager HA pair feeds them.

Shared by ``tests/ai_sidecar/test_replicas.py`` and
``benchmarks/fault_tolerance.py``:

* :class:`Replicas`: ``scout-sidecar serve`` processes on free loopback ports,
  all on one database (password from a file, as an operator sets it), posting
  enriched copies to one Alertmanager-compatible receiver (a
  :class:`~tests.peers.notify.SlackSink`, which records every POST);
* :func:`send_storm`: every batch to every replica, each retried until that
  replica answers 2xx (Alertmanager's retry) or is known dead; an alert counts
  as acknowledged once any replica answered 200 for it;
* :func:`enriched_posts`, :func:`duplicated_copies`: what reached the receiver.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from psycopg.conninfo import conninfo_to_dict

from ai_sidecar.models import Alert
from scripts.localstack import Service, free_port, sidecar_service
from tests.ai_sidecar.builders import alert, payload
from tests.peers.postgres import PASSWORD, PostgresServer

TOKEN = "replica-test-token-0123456789"
# Short return-trip timings, so a storm's copies go out within a second or two.
SIDECAR_CONFIG = """\
return_trip:
  keepalive: 1m
  repost_interval: 30s
  resolved_repeat_for: 3s
  resolved_repeat_interval: 1s
  retry_backoff_max: 2s
"""


def storm(count: int, *, site: str = "hq", offset: int = 0) -> list[Alert]:
    """``count`` alerts of one site within seconds: what correlation makes one incident of."""
    return [
        alert(
            "LinkDown" if i == 0 else "ProbeLoss",
            at=timedelta(milliseconds=i),
            severity="critical",
            site=site,
            instance=f"dev{offset + i}",
        )
        for i in range(count)
    ]


@dataclass
class Replica:
    name: str
    service: Service
    url: str

    @property
    def pid(self) -> int:
        assert self.service.process is not None
        return self.service.process.pid

    def metric(self, name: str) -> float | None:
        """One unlabelled sample of the replica's /metrics, or None when unreachable."""
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def is_leader(self) -> bool:
        return self.metric("scout_sidecar_leader") == 1.0


@dataclass
class Replicas:
    """Sidecar replicas on one database; stopped (process groups) by :meth:`stop_all`."""

    root: Path
    # None: each replica on its own SQLite file (one replica, for comparison).
    dsn: str | None
    receiver_url: str
    started: list[Replica] = field(default_factory=list)

    def start(self, name: str, *, extra_env: dict[str, str] | None = None) -> Replica:
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True)
        password_file = home / "store-password"
        password_file.write_text(PASSWORD)
        password_file.chmod(0o600)
        config = home / "sidecar.yml"
        config.write_text(SIDECAR_CONFIG)
        port = free_port()
        env = {
            "SCOUT_WEBHOOK_TOKEN": TOKEN,
            "SCOUT_DATA_DIR": str(home / "data"),
            "SCOUT_ALERTMANAGER_URLS": self.receiver_url,
        }
        if self.dsn is not None:
            env["SCOUT_STORE_URL"] = self.dsn
            env["SCOUT_STORE_PASSWORD_FILE"] = str(password_file)
        env.update(extra_env or {})
        service = sidecar_service(home, port, args=[f"--config.file={config}"], env=env)
        service.start()
        service.wait_ready()
        replica = Replica(name, service, f"http://127.0.0.1:{port}")
        self.started.append(replica)
        return replica

    def leader(self, timeout: float = 30.0) -> Replica:
        """The one replica that reports itself leader, waiting up to ``timeout`` for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = [r for r in self.started if not r.service.exited() and r.is_leader()]
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.1)
        raise AssertionError(f"no single leader after {timeout:.0f}s")

    def stop_all(self) -> None:
        for replica in self.started:
            replica.service.stop(grace=5)


def stored_fingerprints(server: PostgresServer, dsn: str) -> list[str]:
    """Every alert row's fingerprint, read straight from the database."""
    with server.superuser(str(conninfo_to_dict(dsn)["dbname"])) as conn:
        return [str(row[0]) for row in conn.execute("SELECT fingerprint FROM alerts")]


@dataclass
class StormResult:
    acked: set[str] = field(default_factory=set)
    # (monotonic time, replica name, HTTP status or 0 for no answer)
    answers: list[tuple[float, str, int]] = field(default_factory=list)


async def send_storm(
    replicas: Sequence[Replica],
    alerts: Sequence[Alert],
    *,
    per_request: int,
    senders: int = 4,
    result: StormResult | None = None,
    dead: Callable[[Replica], bool] = lambda r: r.service.exited(),
    deadline: float = 120.0,
) -> StormResult:
    """Post every batch to every replica, retrying each until it answers 200 or is dead."""
    result = result or StormResult()
    batches = [list(alerts[i : i + per_request]) for i in range(0, len(alerts), per_request)]
    queue: asyncio.Queue[tuple[list[Alert], Replica]] = asyncio.Queue()
    for batch in batches:
        for replica in replicas:
            queue.put_nowait((batch, replica))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    give_up = time.monotonic() + deadline

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            batch, replica = queue.get_nowait()
            body = payload(*batch)
            while time.monotonic() < give_up and not dead(replica):
                status = 0
                try:
                    async with session.post(
                        replica.url + "/api/v1/alertmanager", json=body, headers=headers
                    ) as reply:
                        status = reply.status
                        await reply.read()
                except (aiohttp.ClientError, ConnectionError, TimeoutError):
                    pass
                result.answers.append((time.monotonic(), replica.name, status))
                if status == 200:
                    result.acked.update(a.fingerprint for a in batch)
                    break
                assert status == 0 or status >= 500, f"refused with {status}"
                await asyncio.sleep(0.1)

    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(sender(session) for _ in range(senders)))
    return result


def enriched_posts(receiver_bodies: list[Any]) -> list[dict[str, Any]]:
    """Every enriched alert posted to the receiver, oldest first."""
    return [
        item
        for body in receiver_bodies
        if isinstance(body, list)
        for item in body
        if item.get("labels", {}).get("scout_enriched") == "true"
    ]


def incident_ids(posts: list[dict[str, Any]]) -> set[str]:
    return {p["labels"]["scout_incident"] for p in posts}


def duplicated_copies(posts: list[dict[str, Any]]) -> int:
    """Raw alerts with more than one enriched copy per incident and label set beyond the
    first: copies that differ only in who made them (another incident id) count."""
    seen: dict[tuple[tuple[str, str], ...], set[str]] = {}
    for post in posts:
        raw = tuple(sorted((k, v) for k, v in post["labels"].items() if not k.startswith("scout_")))
        seen.setdefault(raw, set()).add(post["labels"]["scout_incident"])
    return sum(len(incidents) - 1 for incidents in seen.values())


async def quarter_acked(result: StormResult, total: int) -> None:
    """Return once a quarter of the storm is acknowledged: the moment to strike."""
    async with asyncio.timeout(60):
        while True:
            if len(result.acked) >= total // 4:
                return
            await asyncio.sleep(0.01)


def notified_members(receiver_bodies: list[Any]) -> set[str]:
    """Instances whose enriched copy reached the receiver."""
    return {p["labels"]["instance"] for p in enriched_posts(receiver_bodies)}
