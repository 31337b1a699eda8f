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
stream, for both runs, and the bytes each stored alert costs. Nothing is
asserted; the figures go to ``docs/benchmarks.md``.

Usage: python benchmarks/store_soak.py [--alerts N] [--batch N] [--retention HOURS]
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
from ai_sidecar.models import Alert, Incident
from ai_sidecar.store import PruneResult, SqliteStore
from ai_sidecar.store.retention import PRUNE_BATCH

START = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
CHECKPOINTS = 10


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
            changed: dict[str, Incident] = {}
            for item in received:
                change = correlator.apply(item.alert, now)
                if change is not None:
                    changed[change.incident.id] = change.incident
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
    args = parser.parse_args()
    if args.batch < 2:
        parser.error("--batch must be at least 2")
    retention = timedelta(hours=args.retention)
    with tempfile.TemporaryDirectory(prefix="scout-soak-") as tmp:
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
