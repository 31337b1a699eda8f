"""Webhook ingest of the sidecar, durable and with correlation, beside Alertmanager's own.

What an operator wants to know before pointing a storm at the sidecar: how many
alerts a second it acknowledges (each one written durably to SQLite before the
2xx), how long an acknowledgement takes (p50, p99), and whether correlation
keeps up (the time until every acknowledged alert is in an incident).

The sidecar runs as a real ``scout-sidecar`` process with a fresh data
directory, and first receives 10,000 firing alerts across 500 sites, so the
measured load lands on a store and correlator that already hold 10,000 open
alerts. The load generator is a separate process (aiohttp, N concurrent
senders) so it does not share the sidecar's interpreter.

The peer, run the same way on the same machine, is the distribution's
Alertmanager receiving the same alerts on ``POST /api/v2/alerts``: the endpoint
every Prometheus posts to. It keeps alerts in memory only, so it is a bar to
compare against, not a like-for-like durable store. Ratios are Scout divided by
Alertmanager: above 1x for rate means Scout is faster, below 1x for latency means
Scout answers sooner.

Targets (issue 4; issue 10 for one alert per request): at least 5,000 alerts/s
and p99 acknowledgement at most 50 ms.
Timings depend on the machine and its load; nothing here asserts on them.

Each batch size is measured twice: capacity (16 senders back to back: the most
alerts/s it takes) and latency at the target load (5,000 alerts/s offered on a
fixed schedule, p99 counted from when each request was due). The sidecar's
return trip runs against its own Alertmanager, as in production.

Usage: python benchmarks/webhook_ingest.py [--alerts N] [--batch 1,10,100]
       [--senders N] [--rate ALERTS_PER_S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import cpu_seconds, missing_programs, raise_interrupt, version_line
from scripts.localstack import Service, alertmanager_service, free_port, sidecar_service

TOKEN = "benchmark-token"
PRELOAD_ALERTS = 10_000
PRELOAD_SITES = 500
T0 = "2026-11-02T09:00:00Z"


def alert_body(index: int, site: int) -> dict[str, Any]:
    labels = {
        "alertname": "InterfaceDown" if index % 10 == 0 else "ProbeLoss",
        "severity": "warning",
        "site": f"site{site}",
        "instance": f"dev{index}",
        "job": "snmp",
    }
    return {
        "labels": labels,
        "annotations": {"summary": f"alert {index} at site {site}"},
        "startsAt": T0,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up",
    }


def webhook_payload(alerts: Sequence[dict[str, Any]]) -> bytes:
    items = [
        {
            **a,
            "status": "firing",
            "fingerprint": hashlib.sha256(a["labels"]["instance"].encode()).hexdigest()[:16],
        }
        for a in alerts
    ]
    return json.dumps(
        {
            "version": "4",
            "groupKey": "{}:{}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "scout-sidecar",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093",
            "alerts": items,
        }
    ).encode()


# -- the load generator (runs in its own process) ---------------------------


async def generate(
    url: str, kind: str, first: int, count: int, batch: int, senders: int, rate: float
) -> None:
    """Send ``count`` alerts, ``batch`` per request, and print the latencies as JSON.

    Closed loop (``rate`` 0): ``senders`` send back to back; this finds the
    most the server can take. Open loop (``rate`` alerts/s): requests leave on
    a fixed schedule whether or not earlier ones were answered, and latency is
    counted from the scheduled time, so a stalled server cannot hide its stall
    by slowing the sender down (coordinated omission).
    """
    import aiohttp

    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    bodies = []
    for start in range(first, first + count, batch):
        end = min(start + batch, first + count)
        alerts = [alert_body(i, i % PRELOAD_SITES) for i in range(start, end)]
        bodies.append(webhook_payload(alerts) if kind == "scout" else json.dumps(alerts).encode())
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=senders if rate == 0 else 256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(body: bytes, since: float) -> None:
            nonlocal failures
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status >= 300:
                    failures += 1
            latencies.append(time.perf_counter() - since)

        began = time.perf_counter()
        if rate == 0:
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            for body in bodies:
                queue.put_nowait(body)

            async def sender() -> None:
                while not queue.empty():
                    await send(queue.get_nowait(), time.perf_counter())

            await asyncio.gather(*(sender() for _ in range(senders)))
        else:
            interval = batch / rate
            tasks = []
            for index, body in enumerate(bodies):
                due = began + index * interval
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                tasks.append(asyncio.create_task(send(body, due)))
            await asyncio.gather(*tasks)
        wall = time.perf_counter() - began
    print(json.dumps({"wall": wall, "latencies": latencies, "failures": failures}))


def run_generator(
    url: str, kind: str, first: int, count: int, batch: int, senders: int, rate: float = 0
) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--generate", url, kind, str(first), str(count)]
    argv += [f"--batch={batch}", f"--senders={senders}", f"--rate={rate}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- the services ----------------------------------------------------------


def wait_processed(database: Path, expected: int, timeout: float = 600) -> float:
    """Seconds until the worker's cursor has passed ``expected`` stored alerts.

    Read from the store itself: the sidecar's queue-depth metric comes from
    the worker process once a second, too coarse to time a drain.
    """
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            (stored,) = db.execute("SELECT count(*) FROM alerts").fetchone()
            (cursor,) = db.execute("SELECT cursor FROM progress").fetchone()
            (last,) = db.execute("SELECT coalesce(max(seq), 0) FROM alerts").fetchone()
        if stored >= expected and cursor >= last:
            return time.perf_counter() - began
        time.sleep(0.02)
    raise RuntimeError(f"the sidecar did not process {expected} alerts in {timeout:.0f}s")


def start_sidecar(workdir: Path, peer: str) -> tuple[Service, str]:
    port = free_port()
    env = {
        "SCOUT_WEBHOOK_TOKEN": TOKEN,
        "SCOUT_DATA_DIR": str(workdir / "data"),
        # The return trip runs as in production, against its own peer.
        "SCOUT_ALERTMANAGER_URLS": peer,
    }
    sidecar = sidecar_service(workdir, port, ["--log.level=warn"], env)
    sidecar.start()
    sidecar.wait_ready()
    return sidecar, f"http://127.0.0.1:{port}"


def start_alertmanager(workdir: Path, name: str) -> tuple[Service, str]:
    port = free_port()
    home = workdir / name
    home.mkdir()
    config = home / "alertmanager.yml"
    config.write_text("route: {receiver: 'null', group_wait: 1h}\nreceivers: [{name: 'null'}]\n")
    am = alertmanager_service(config, home, port)
    am.start()
    am.wait_ready()
    return am, f"http://127.0.0.1:{port}"


def summary(result: dict[str, Any], alerts: int) -> dict[str, float]:
    latencies = sorted(result["latencies"])
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {
        "rate": alerts / result["wall"],
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": p99 * 1000,
        "failures": result["failures"],
    }


@dataclass(frozen=True, slots=True)
class Measured:
    batch: int
    mode: str
    scout: dict[str, float]
    peer: dict[str, float]
    correlated: float
    cpu: float


def measure(batch: int, alerts: int, senders: int, rate: float) -> Measured:
    """One run: a fresh sidecar (preloaded) and a fresh Alertmanager, the same load."""
    with tempfile.TemporaryDirectory(prefix="scout-bench-") as tmp:
        workdir = Path(tmp)
        # Alertmanager first and alone, so nothing else competes for the cores.
        peer, peer_url = start_alertmanager(workdir, "ingest-peer")
        try:
            theirs = run_generator(
                f"{peer_url}/api/v2/alerts", "am", PRELOAD_ALERTS, alerts, batch, senders, rate
            )
        finally:
            peer.stop(grace=10)
        trip, trip_url = start_alertmanager(workdir, "return-trip-peer")
        sidecar, sidecar_url = start_sidecar(workdir, trip_url)
        try:
            hook = f"{sidecar_url}/api/v1/alertmanager"
            database = workdir / "data" / "scout.db"
            run_generator(hook, "scout", 0, PRELOAD_ALERTS, 500, 4)
            wait_processed(database, PRELOAD_ALERTS)
            assert sidecar.process is not None
            cpu_before = cpu_seconds(sidecar.process.pid)
            scout = run_generator(hook, "scout", PRELOAD_ALERTS, alerts, batch, senders, rate)
            drained = wait_processed(database, PRELOAD_ALERTS + alerts)
            cpu = cpu_seconds(sidecar.process.pid) - cpu_before
        finally:
            for service in (sidecar, trip):
                service.stop(grace=10)
    mode = f"{senders} senders" if rate == 0 else f"{rate:,.0f}/s offered"
    return Measured(
        batch=batch,
        mode=mode,
        scout=summary(scout, alerts),
        peer=summary(theirs, alerts),
        correlated=alerts / (scout["wall"] + drained),
        cpu=cpu,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts per measured run")
    parser.add_argument("--batch", default="1,10,100", help="alerts per request, comma-separated")
    parser.add_argument("--senders", type=int, default=16, help="concurrent senders (capacity)")
    parser.add_argument("--rate", type=float, default=5000, help="offered alerts/s (latency)")
    parser.add_argument("--generate", nargs=4, metavar=("URL", "KIND", "FIRST", "COUNT"))
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    if args.generate:
        url, kind, first, count = args.generate
        asyncio.run(
            generate(url, kind, int(first), int(count), batches[0], args.senders, args.rate)
        )
        return 0
    missing = missing_programs(["prometheus-alertmanager", "scout-sidecar"])
    if missing:
        print(f"missing programs: {', '.join(missing)} (run `make bench`)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, raise_interrupt)
    print(f"peer: {version_line(['prometheus-alertmanager', '--version'])}")
    print(f"cores: {os.cpu_count()}, alerts per run: {args.alerts}")
    print(f"preloaded: {PRELOAD_ALERTS} open alerts across {PRELOAD_SITES} sites\n")
    rows = []
    for batch in batches:
        rows.append(measure(batch, args.alerts, args.senders, 0))
        rows.append(measure(batch, args.alerts, args.senders, args.rate))
    print(
        "| alerts/request | load | Scout alerts/s | Scout p50 ms | Scout p99 ms "
        "| correlated alerts/s | Scout CPU s | Alertmanager alerts/s | Alertmanager p99 ms "
        "| rate ratio | p99 ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        ours, theirs = row.scout, row.peer
        print(
            f"| {row.batch} | {row.mode} | {ours['rate']:,.0f} | {ours['p50_ms']:.1f} "
            f"| {ours['p99_ms']:.1f} | {row.correlated:,.0f} | {row.cpu:.1f} "
            f"| {theirs['rate']:,.0f} | {theirs['p99_ms']:.1f} "
            f"| {ours['rate'] / theirs['rate']:.2f}x | {ours['p99_ms'] / theirs['p99_ms']:.2f}x |"
        )
        if ours["failures"] or theirs["failures"]:
            print(f"  failed requests: Scout {ours['failures']}, Alertmanager {theirs['failures']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
