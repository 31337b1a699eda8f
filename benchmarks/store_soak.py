"""How big the data directory grows under a long stream of alerts, with and without retention.

The question an operator asks before leaving the sidecar running for months:
does ``data/`` stop growing? The soak drives the real SQLite store
(:class:`ai_sidecar.store.SqliteStore`, WAL, ``synchronous=FULL``) the way
production does, on a simulated clock so days pass in seconds:

- every simulated minute the webhook ingests a batch: ``--batch / 2`` new
  firing alerts and the resolutions of the previous minute's;
- the worker folds each batch with the real correlator (default config:
  incidents by site), saves the incidents it changed and moves its cursor; each
  incident that resolves gets one piece of feedback;
- with retention, every simulated hour the store prunes what was received or
  resolved more than ``--retention`` ago, 500 rows per transaction, as the
  worker process does (:mod:`ai_sidecar.store.retention`).

It prints the size of the database file plus its WAL at regular points of the
stream, for both runs, and the bytes each stored alert costs.

A third run, the **storm**, asks what one alert costs with everything the
sidecar keeps for it: ``--storm`` alerts (default 5,000) arrive in webhook
requests of 50; after each request the worker folds them, the local analyst
explains every incident that changed, the return trip records each member's
enriched copy for two Alertmanager peers and both peers accept what is due.
It prints the database, its WAL and the WAL index (``-shm``), and the bytes
per alert of all three. Nothing is asserted; the figures go to
``docs/benchmarks.md``.

Usage: python benchmarks/store_soak.py [--alerts N] [--batch N] [--retention HOURS]
       [--storm N] [--storm-only]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_sidecar.config import CorrelationConfig
from ai_sidecar.correlation import Correlator
from ai_sidecar.enrichment.base import IncidentContext
from ai_sidecar.enrichment.local import analyse
from ai_sidecar.models import Alert, Incident, ReceivedAlert
from ai_sidecar.notify.policy import ReturnTripPolicy
from ai_sidecar.notify.render import outbox_copies
from ai_sidecar.store import OutboxPlan, PruneResult, SqliteStore
from ai_sidecar.store.retention import PRUNE_BATCH

START = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
CHECKPOINTS = 10
# The storm: alerts per webhook request, the Alertmanager peers, the seconds
# between two requests.
STORM_REQUEST = 50
STORM_PEERS = ("http://alertmanager-1:9093", "http://alertmanager-2:9093")
STORM_GAP = timedelta(seconds=1)
# Seconds of quiet after the storm before the WAL is measured again.
STORM_IDLE = 4.0


def firing(index: int, at: datetime) -> Alert:
    site, port = divmod(index, 48)
    labels = {
        "alertname": "InterfaceDown",
        "severity": "warning",
        "job": "snmp",
        "site": f"site{site % 400}",
        "instance": f"sw{site}.site{site % 400}.example.net",
        "ifName": f"Gi0/{port}",
    }
    return Alert(
        fingerprint=f"{index:016x}",
        status="firing",
        labels=labels,
        annotations={
            "summary": f"Interface Gi0/{port} on sw{site} is down",
            "description": "The interface is administratively up but operationally down.",
            "runbook_url": "https://wiki.example.net/runbooks/interface-down",
        },
        starts_at=at,
        generator_url="http://prometheus.example.net:9090/graph?g0.expr=ifOperStatus",
    )


def fold(
    correlator: Correlator, received: list[ReceivedAlert], now: datetime
) -> dict[str, Incident]:
    """The worker's step: fold ``received`` in; the incidents that changed, by id."""
    changed: dict[str, Incident] = {}
    for item in received:
        change = correlator.apply(item.alert, now)
        if change is not None:
            changed[change.incident.id] = change.incident
    return changed


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@dataclass(frozen=True, slots=True)
class Point:
    simulated_hours: float
    ingested: int
    stored: int
    database: int
    wal: int

    @property
    def size(self) -> int:
        return self.database + self.wal


async def soak(
    path: Path, alerts: int, batch: int, retention: timedelta | None
) -> tuple[list[Point], PruneResult]:
    store = await SqliteStore.open(path)
    pruned = PruneResult()
    points: list[Point] = []
    per_batch = batch // 2
    batches = alerts // batch
    every = max(1, batches // CHECKPOINTS)
    previous: list[Alert] = []
    correlation = CorrelationConfig()
    correlator = Correlator(correlation)
    try:
        for number in range(batches):
            now = START + number * MINUTE
            new = [firing(number * per_batch + i, now) for i in range(per_batch)]
            resolved = [replace(a, status="resolved", ends_at=now) for a in previous]
            await store.ingest(new + resolved, now)
            # The worker: fold what arrived, save what changed, move the cursor.
            received = await store.pending(batch)
            changed = fold(correlator, received, now)
            await store.save_progress(received[-1].seq, list(changed.values()))
            for incident in changed.values():
                if incident.status == "resolved":
                    await store.add_feedback(incident.id, True, "", now)
            correlator.forget_resolved_before(now - correlation.flap_window)
            previous = new
            if retention is not None and number % 60 == 59:
                pruned += await store.prune(now - retention, PRUNE_BATCH)
            if number % every == every - 1 or number == batches - 1:
                points.append(
                    Point(
                        simulated_hours=(number + 1) / 60,
                        ingested=(number + 1) * batch,
                        stored=await store.alert_count(),
                        database=file_size(path),
                        wal=file_size(path.with_name(path.name + "-wal")),
                    )
                )
    finally:
        await store.close()
    return points, pruned


@dataclass(frozen=True, slots=True)
class StormSize:
    alerts: int
    database: int
    wal: int
    shm: int
    outbox_rows: int
    outbox_bytes: int
    # The WAL once the store has been idle a few seconds.
    wal_idle: int

    @property
    def size(self) -> int:
        return self.database + self.wal + self.shm


async def storm(path: Path, alerts: int) -> StormSize:
    """The storm run (see the module docstring): the sizes on disk at its end."""
    store = await SqliteStore.open(path)
    correlator = Correlator(CorrelationConfig())
    policy = ReturnTripPolicy(
        prometheus_url="http://prometheus:9090",
        grafana_url="http://grafana:3000",
        external_url="http://scout-sidecar:8782",
    )
    now = START
    try:
        for start in range(0, alerts, STORM_REQUEST):
            count = min(STORM_REQUEST, alerts - start)
            await store.ingest([firing(start + i, now) for i in range(count)], now)
            received = await store.pending(STORM_REQUEST)
            changed = fold(correlator, received, now)
            analysed = [
                replace(incident, analysis=analyse(incident, IncidentContext(), ()))
                for incident in changed.values()
            ]
            await store.save_progress(received[-1].seq, analysed)
            stamp = now.timestamp()
            plans = [
                OutboxPlan(i.id, frozenset(i.members), outbox_copies(i, policy, now))
                for i in analysed
            ]
            await store.enqueue_posts(
                plans,
                STORM_PEERS,
                now=stamp,
                repeat_for=policy.resolved_repeat_for.total_seconds(),
            )
            # Both peers accept everything due, as the poster would record it.
            due = await store.due_posts(STORM_PEERS, before=stamp)
            for peer in STORM_PEERS:
                await store.complete_accepted(
                    peer,
                    [row for row in due if row.peer == peer],
                    now=stamp,
                    firing_due=stamp + policy.repost_interval.total_seconds(),
                    resolved_due=stamp + policy.resolved_repeat_interval.total_seconds(),
                )
            now += STORM_GAP
        rows = await store.list_posts()
        # Measured open, as a running sidecar's directory looks: closing
        # checkpoints the WAL into the database and removes it.
        wal = path.with_name(path.name + "-wal")
        database, wal_size = file_size(path), file_size(wal)
        await asyncio.sleep(STORM_IDLE)
        return StormSize(
            alerts=alerts,
            database=database,
            wal=wal_size,
            shm=file_size(path.with_name(path.name + "-shm")),
            outbox_rows=len(rows),
            outbox_bytes=sum(len(row.alert) + len(row.raw) for row in rows),
            wal_idle=file_size(wal),
        )
    finally:
        await store.close()


def report_storm(size: StormSize, took: float) -> None:
    print(
        f"\nstorm ({size.alerts:,} alerts in requests of {STORM_REQUEST}, "
        f"{len(STORM_PEERS)} peers, {took:.0f} s)"
    )
    print(
        f"database {size.database / 1e6:.2f} MB, WAL {size.wal / 1e6:.2f} MB,"
        f" WAL index {size.shm / 1e6:.2f} MB: {size.size / 1e6:.2f} MB"
    )
    print(f"return-trip rows: {size.outbox_rows:,}, their JSON {size.outbox_bytes / 1e6:.2f} MB")
    print(
        f"bytes per alert: database {size.database / size.alerts:,.0f},"
        f" all three files {size.size / size.alerts:,.0f}"
    )
    print(
        f"after {STORM_IDLE:g} s idle: WAL {size.wal_idle / 1e6:.2f} MB, all three files"
        f" {(size.database + size.wal_idle + size.shm) / size.alerts:,.0f} bytes per alert"
    )


def report(title: str, points: list[Point], pruned: PruneResult) -> None:
    print(f"\n{title}")
    print(
        f"{'simulated h':>11} {'ingested':>10} {'stored':>9} {'db MB':>7} {'WAL MB':>7}"
        f" {'db+WAL MB':>10} {'db bytes/stored':>16}"
    )
    for p in points:
        print(
            f"{p.simulated_hours:>11.1f} {p.ingested:>10,} {p.stored:>9,} "
            f"{p.database / 1e6:>7.1f} {p.wal / 1e6:>7.1f} {p.size / 1e6:>10.1f}"
            f" {p.database / max(p.stored, 1):>16,.0f}"
        )
    if any(pruned.counts().values()):
        counts = ", ".join(f"{kind} {rows:,}" for kind, rows in pruned.counts().items())
        print(f"pruned: {counts}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--alerts", type=int, default=200_000, help="alerts ingested per run")
    parser.add_argument("--batch", type=int, default=100, help="alerts per simulated minute")
    parser.add_argument("--retention", type=float, default=6.0, help="retention in simulated hours")
    parser.add_argument("--storm", type=int, default=5_000, help="alerts in the storm run")
    parser.add_argument(
        "--storm-only", action="store_true", help="run the storm alone, not the soaks"
    )
    args = parser.parse_args()
    if args.batch < 2:
        parser.error("--batch must be at least 2")
    if args.storm < 1:
        parser.error("--storm must be at least 1")
    retention = timedelta(hours=args.retention)
    with tempfile.TemporaryDirectory(prefix="scout-soak-") as tmp:
        started = time.monotonic()
        size = asyncio.run(storm(Path(tmp) / "storm" / "scout.db", args.storm))
        report_storm(size, time.monotonic() - started)
        if args.storm_only:
            return 0
        runs = (("without retention", None), (f"retention {args.retention:g} h", retention))
        for name, keep in runs:
            started = time.monotonic()
            path = Path(tmp) / name.replace(" ", "-") / "scout.db"
            points, pruned = asyncio.run(soak(path, args.alerts, args.batch, keep))
            took = time.monotonic() - started
            report(f"{name} ({args.alerts:,} alerts, {took:.0f} s)", points, pruned)
            final = points[-1]
            print(f"db+WAL bytes per ingested alert at the end: {final.size / final.ingested:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
