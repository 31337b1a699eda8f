"""What a kill -9 mid-storm costs: SQLite (one replica, restarted) and PostgreSQL (two replicas).

Each run sends a storm of ``--alerts`` alerts, ``--per-request`` per webhook
request, every request retried until it is answered 200 (as Alertmanager
does); the return trip posts to a local Alertmanager-compatible receiver.

- **sqlite**: one ``scout-sidecar`` on its SQLite file; kill -9 of its process
  group once a quarter of the storm is acknowledged, then started again at
  once (what systemd or Docker would do).
- **postgres**: two replicas on one PostgreSQL database (fsync on), every
  request sent to both, as an Alertmanager HA pair sends it; kill -9 of the
  replica holding the worker lease at the same point. Nobody restarts it.

Printed per run: alerts sent, acknowledged (a 200 from any replica), lost
(acknowledged but not in the store), duplicated notifications (a raw alert
with enriched copies from more than one incident), the time to take over
(kill until a replica reports ``scout_sidecar_leader 1`` again), the added
notification latency (the longest pause between two posts to the receiver
while copies were owed, and the time from the storm's end until every
member's copy arrived, each beside the same run without a kill) and the bytes
stored per alert (SQLite: database, WAL and shared memory files; PostgreSQL:
``pg_database_size`` growth).
Nothing is asserted; the figures go to ``docs/benchmarks.md``.

Usage: python benchmarks/fault_tolerance.py [--alerts N] [--per-request N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psycopg.conninfo import conninfo_to_dict

from tests.peers.notify import SlackSink
from tests.peers.postgres import PostgresServer
from tests.peers.replicas import (
    Replica,
    Replicas,
    StormResult,
    duplicated_copies,
    enriched_posts,
    notified_members,
    quarter_acked,
    send_storm,
    stored_fingerprints,
    storm,
)


@dataclass(frozen=True, slots=True)
class Outcome:
    store: str
    killed: bool
    sent: int
    acked: int
    lost: int
    duplicated: int
    takeover: float | None
    notified_after: float
    # The longest time no enriched copy reached the receiver while copies were
    # still owed (from the first post until the last member's).
    longest_silence: float
    bytes_per_alert: float


async def _watch_posts(receiver: SlackSink, members: int) -> float:
    """Until every member's copy arrived: the longest pause between two posts."""
    seen, last_change, longest = 0, None, 0.0
    while True:
        bodies = receiver.messages()
        now = time.monotonic()
        if len(bodies) != seen:
            if last_change is not None:
                longest = max(longest, now - last_change)
            seen, last_change = len(bodies), now
        if len(notified_members(bodies)) >= members:
            return longest
        await asyncio.sleep(0.05)


def _wait_leader(replicas: Replicas, started: float) -> float:
    replicas.leader(timeout=60)
    return time.monotonic() - started


def _kill(replica: Replica) -> None:
    assert replica.service.process is not None
    os.killpg(replica.service.process.pid, signal.SIGKILL)
    replica.service.process.wait(10)


def _sqlite_fingerprints(db: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT fingerprint FROM alerts")]


def _sqlite_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in data.glob("scout.db*"))


def _pg_bytes(server: PostgresServer, dsn: str) -> int:
    name = str(conninfo_to_dict(dsn)["dbname"])
    with server.superuser(name) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return int(row[0])


async def run(
    root: Path, server: PostgresServer | None, *, alerts: int, per_request: int, kill: bool
) -> Outcome:
    storm_alerts = storm(alerts)
    with SlackSink() as receiver:
        dsn = None if server is None else server.create_database("bench")
        empty = 0 if server is None or dsn is None else _pg_bytes(server, dsn)
        replicas = Replicas(root, dsn, receiver.base_url)
        try:
            names = ("a",) if server is None else ("a", "b")
            group = [replicas.start(name) for name in names]
            replicas.leader(timeout=60)
            result = StormResult()
            sending = asyncio.create_task(
                send_storm(group, storm_alerts, per_request=per_request, result=result)
            )
            watching = asyncio.create_task(_watch_posts(receiver, alerts))
            takeover = None
            if kill:
                await quarter_acked(result, alerts)
                leader = replicas.leader()
                killed_at = time.monotonic()
                await asyncio.to_thread(_kill, leader)
                if server is None:
                    replicas.started.remove(leader)
                    restarted = await asyncio.to_thread(replicas.start, "a")
                    sending.cancel()
                    sending = asyncio.create_task(
                        send_storm(
                            [restarted], storm_alerts, per_request=per_request, result=result
                        )
                    )
                takeover = await asyncio.to_thread(_wait_leader, replicas, killed_at)
            await sending
            storm_end = time.monotonic()
            longest_silence = await asyncio.wait_for(watching, 600)
            notified_after = time.monotonic() - storm_end
            if server is None or dsn is None:
                stored = _sqlite_fingerprints(root / "a" / "data" / "scout.db")
                size = _sqlite_bytes(root / "a" / "data")
            else:
                stored = stored_fingerprints(server, dsn)
                size = _pg_bytes(server, dsn) - empty
            posts = enriched_posts(receiver.messages())
        finally:
            replicas.stop_all()
    return Outcome(
        store="sqlite" if server is None else "postgres",
        killed=kill,
        sent=alerts,
        acked=len(result.acked),
        lost=len(result.acked - set(stored)),
        duplicated=duplicated_copies(posts),
        takeover=takeover,
        notified_after=notified_after,
        longest_silence=longest_silence,
        bytes_per_alert=size / max(len(set(stored)), 1),
    )


def report(baseline: Outcome, failover: Outcome) -> None:
    replicas = "1 replica, restarted" if failover.store == "sqlite" else "2 replicas"
    print(f"\n{failover.store} ({replicas}), kill -9 of the worker's process mid-storm")
    print(f"  alerts sent:                   {failover.sent:,}")
    print(f"  acknowledged:                  {failover.acked:,}")
    print(f"  lost (acknowledged, not kept): {failover.lost:,}")
    print(f"  duplicated notifications:      {failover.duplicated:,}")
    print(f"  time to take over:             {failover.takeover or 0.0:.1f} s")
    print(
        f"  notified after the storm:      {failover.notified_after:.1f} s "
        f"(without a kill {baseline.notified_after:.1f} s; "
        f"added {failover.notified_after - baseline.notified_after:+.1f} s)"
    )
    print(
        f"  longest pause in notifications: {failover.longest_silence:.1f} s "
        f"(without a kill {baseline.longest_silence:.1f} s; "
        f"added {failover.longest_silence - baseline.longest_silence:+.1f} s)"
    )
    print(f"  bytes stored per alert:        {failover.bytes_per_alert:,.0f}")


async def main_async(alerts: int, per_request: int) -> None:
    with tempfile.TemporaryDirectory(prefix="scout-fault-") as tmp:
        root = Path(tmp)
        outcomes = []
        for kill in (False, True):
            outcomes.append(
                await run(
                    root / f"sqlite-{kill}", None, alerts=alerts, per_request=per_request, kill=kill
                )
            )
        report(*outcomes)
        with PostgresServer(fsync=True) as server:
            outcomes = []
            for kill in (False, True):
                outcomes.append(
                    await run(
                        root / f"pg-{kill}",
                        server,
                        alerts=alerts,
                        per_request=per_request,
                        kill=kill,
                    )
                )
            report(*outcomes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--per-request", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main_async(args.alerts, args.per_request))
    return 0


if __name__ == "__main__":
    sys.exit(main())
