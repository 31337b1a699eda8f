"""The console's incident list over 10,000 incidents (issue 16: server time p95 <= 100 ms).

Set-up: a SQLite store in a temporary directory is filled with ``--incidents``
incidents shaped like the storms the sidecar folds (an interface or device
down at one of 12 sites as the root cause, 0 to 15 probe or HTTP alerts
downstream of it, most resolved, a third analysed, priorities P1 to P4),
saved through :meth:`Store.save_incidents` as the worker saves them. The
sidecar's app runs in this process (``create_app``, inline pipeline, idle)
with a session backend that signs every request in as a viewer.

Measured: the server's time per request (an outermost middleware, from the
request's arrival to the response being ready, the health banner included)
for ``--requests`` requests per case after 20 warm-up ones:

- the console's list: the first page; a filtered page (open, P1 or P2, one
  site); a text search; a deep page (three quarters down: offset 7,450 of
  10,000);
- its peer side by side: the JSON incidents API on the same store,
  ``GET /api/v1/incidents?limit=50`` (newest 50, every incident decoded with
  its members), the same page size.

Printed: p50 and p95 per case, and the ratio of each console case to the
API's first page. Nothing is asserted; figures go to docs/benchmarks.md.

Usage: python -m benchmarks.console_list [--incidents N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ai_sidecar.app import create_app
from ai_sidecar.console.session import SESSIONS, ConsoleUser, Role
from ai_sidecar.models import PRIORITIES, Analysis, Incident, Member
from ai_sidecar.notify import fingerprint
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import SqliteStore

TOKEN = "benchmark-token-0123456789"
START = datetime(2026, 9, 1, tzinfo=UTC)
SITES = tuple(f"site-{n}" for n in range(12))
WARM_UP = 20
SAVE_BATCH = 500
SYMPTOMS = ("ProbeLoss", "HttpDown", "ProbeLatencyHigh")
PAGE = 50


def _member(alertname: str, instance: str, site: str, at: datetime, **labels: str) -> Member:
    all_labels = {
        "alertname": alertname,
        "severity": "critical" if alertname.endswith("Down") else "warning",
        "instance": instance,
        "site": site,
        "job": "snmp" if alertname == "InterfaceDown" else "blackbox",
        **labels,
    }
    return Member(
        fingerprint=fingerprint(all_labels),
        labels=all_labels,
        annotations={"summary": f"{alertname} on {instance}"},
        status="firing",
        starts_at=at,
        first_starts_at=at,
        generator_url="http://prometheus.example:9090/graph?g0.expr=up",
    )


def build_incidents(count: int, seed: int = 0) -> list[Incident]:
    """``count`` storm-shaped incidents, one every few minutes from START, the last open."""
    rng = random.Random(seed)
    incidents = []
    for n in range(count):
        site = rng.choice(SITES)
        created = START + timedelta(minutes=4 * n, seconds=rng.randrange(200))
        switch = f"sw-{site}-{rng.randrange(40)}"
        root = _member("InterfaceDown", switch, site, created, ifName=f"Gi1/0/{rng.randrange(48)}")
        members = [root] + [
            _member(
                rng.choice(SYMPTOMS),
                f"srv-{site}-{rng.randrange(400)}",
                site,
                created,
                upstream=switch,
            )
            for _ in range(rng.randrange(16))
        ]
        resolved = n < count - 200 or rng.random() < 0.3
        ended = created + timedelta(minutes=rng.randrange(2, 90))
        if resolved:
            members = [replace(m, status="resolved", ends_at=ended) for m in members]
        analysed = rng.random() < 0.33
        incidents.append(
            Incident(
                id=f"inc-{n:06}",
                status="resolved" if resolved else "open",
                group={"site": site},
                members={m.fingerprint: m for m in members},
                created_at=created,
                updated_at=ended if resolved else created,
                root_cause=root.fingerprint,
                root_cause_reasons=("upstream of the other alerts",),
                priority=rng.choice(PRIORITIES),
                priority_reasons=("critical alert",),
                analysis=Analysis(
                    f"{switch} lost its uplink",
                    f"{switch} Gi1/0/1 down: the core link failed",
                    f"site {site} degraded",
                    ("check the optic",),
                    0.7,
                    0.1,
                )
                if analysed
                else None,
                analyst="local" if analysed else None,
                resolved_at=ended if resolved else None,
            )
        )
    return incidents


async def fill_store(path: Path, incidents: list[Incident]) -> None:
    store = await SqliteStore.open(path)
    try:
        for start in range(0, len(incidents), SAVE_BATCH):
            await store.save_incidents(incidents[start : start + SAVE_BATCH])
    finally:
        await store.close()


class Viewer:
    """Every request is a signed-in viewer's."""

    async def user_for(self, request: web.Request) -> ConsoleUser:
        return ConsoleUser("benchmark", Role.VIEWER, "benchmark-csrf-token")


@dataclass
class ServerTimes:
    """Seconds per request, in arrival order, as the outermost middleware saw them."""

    seen: list[float]

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        began = time.perf_counter()
        try:
            return await handler(request)
        finally:
            self.seen.append(time.perf_counter() - began)


CASES: tuple[tuple[str, str], ...] = (
    ("console: first page", "/console/incidents"),
    (
        "console: open, P1 or P2, one site",
        "/console/incidents?status=open&priority=P1&priority=P2&site=site-3",
    ),
    ("console: text search", "/console/incidents?q=gi1%2F0%2F7"),
)
PEER = ("peer: JSON API, newest 50", "/api/v1/incidents?limit=50")


def deep_page(incidents: int) -> tuple[str, str]:
    """The case of the page three quarters down the list (page 150 of 10,000 incidents):
    a page past the last would measure the refusal, not a page."""
    page = max(1, incidents * 3 // 4 // PAGE)
    return f"console: deep page (offset {(page - 1) * PAGE:,})", f"/console/incidents?page={page}"


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


async def measure(
    data_dir: Path, requests: int, incidents: int
) -> dict[str, tuple[float, float, int]]:
    """Per case: p50 and p95 server milliseconds, and the response's size in bytes."""
    settings = SidecarSettings(data_dir=data_dir, webhook_token=TOKEN)
    app = create_app(settings)
    times = ServerTimes([])
    app.middlewares.insert(0, times.middleware)

    async def install(app: web.Application) -> None:
        app[SESSIONS] = Viewer()

    app[SESSIONS] = Viewer()
    app.on_startup.append(install)
    results = {}
    async with TestClient(TestServer(app)) as client:
        for name, path in (*CASES, deep_page(incidents), PEER):
            size = 0
            times.seen.clear()
            for _ in range(WARM_UP + requests):
                response = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
                body = await response.read()
                assert response.status == 200, (path, response.status, body[:300])
                size = len(body)
            measured = [t * 1000 for t in times.seen[WARM_UP:]]
            results[name] = (percentile(measured, 0.5), percentile(measured, 0.95), size)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scout-console-bench-") as directory:
        data_dir = Path(directory) / "data"
        began = time.perf_counter()
        incidents = build_incidents(args.incidents)
        asyncio.run(fill_store(data_dir / "scout.db", incidents))
        members = sum(len(i.members) for i in incidents)
        print(
            f"{args.incidents} incidents ({members} member alerts) saved in "
            f"{time.perf_counter() - began:.1f} s"
        )
        results = asyncio.run(measure(data_dir, args.requests, args.incidents))
    peer_p50, peer_p95, _ = results[PEER[0]]
    header = ("case", "p50 ms", "p95 ms", "KiB", "p50 / peer", "p95 / peer")
    print("\n{:42} {:>8} {:>8} {:>7} {:>11} {:>11}".format(*header))
    for name, (p50, p95, size) in results.items():
        print(
            f"{name:42} {p50:8.2f} {p95:8.2f} {size / 1024:7.1f} "
            f"{p50 / peer_p50:10.2f}x {p95 / peer_p95:10.2f}x"
        )
    worst = max(p95 for name, (_, p95, _) in results.items() if name.startswith("console"))
    print(f"\nworst console p95: {worst:.1f} ms (goal: <= 100 ms)")


if __name__ == "__main__":
    main()
