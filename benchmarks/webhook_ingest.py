"""Webhook ingest of the sidecar, durable and with correlation, beside Alertmanager's own.

What an operator wants to know before pointing a storm at the sidecar: how many
alerts a second it acknowledges (each one written durably to SQLite before the
2xx), how long an acknowledgement takes (p50, p99), and whether correlation
keeps up (the time until every acknowledged alert is in an incident).

The sidecar runs as a real ``scout-sidecar`` process with a fresh data
directory, and first receives 10,000 firing alerts across 500 sites, so the
measured load lands on a store and correlator that already hold 10,000 open
alerts. The load generators are separate processes that cost little beside
the servers (their CPU a request is printed too): capacity is measured with
wrk (C, Debian's ``wrk``, driven by ``webhook_ingest.lua``), and with the
Python generator here where wrk is not installed; the fixed-rate runs use the
Python generator, which writes pre-encoded requests on raw keep-alive
connections (wrk only sends back to back, so it cannot offer a fixed rate).

The peer, run the same way on the same machine, is the distribution's
Alertmanager receiving the same alerts on ``POST /api/v2/alerts``: the endpoint
every Prometheus posts to. It keeps alerts in memory only, so it is a bar to
compare against, not a like-for-like durable store. Ratios are Scout divided by
Alertmanager: above 1x for rate means Scout is faster, below 1x for latency means
Scout answers sooner.

Targets (issue 4; issue 10 for one alert per request): at least 5,000 alerts/s
and p99 acknowledgement at most 50 ms.
Timings depend on the machine and its load; nothing here asserts on them.

Each batch size is measured twice: capacity (16 connections back to back: the
most alerts/s it takes) and latency at the target load (5,000 alerts/s offered
on a fixed schedule over up to 256 connections, p99 counted from when each
request was due). The sidecar's return trip runs against its own
Alertmanager, as in production. "HTTP CPU ms/request" is the CPU time of the
sidecar's HTTP processes (not its worker) while the load ran, a request's share,
and "worker CPU ms/request" the same for its worker process; the generators'
CPU a request includes their start and building the bodies, and "generator
cores" is their CPU over the run's wall time against the sidecar (on a 2-core
machine, what the generator took from the servers). ``--worker stopped``
stops the sidecar's worker process (SIGSTOP) while the load runs and
continues it after, to see what the worker's CPU and its write transactions
cost the webhook; the correlation rate then includes the whole backlog.

``--web-processes 2`` runs the sidecar with a second HTTP process on the port
(``scout-sidecar serve --web.processes 2``); "HTTP CPU ms/request" is then
both processes' CPU.

Usage: python benchmarks/webhook_ingest.py [--alerts N] [--batch 1,10,100]
       [--senders N] [--rate ALERTS_PER_S] [--worker running|stopped]
       [--web-processes N]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import cpu_seconds, missing_programs, raise_interrupt, version_line
from scripts.localstack import Service, alertmanager_service, free_port, sidecar_service

TOKEN = "benchmark-token-0123456789"
PRELOAD_ALERTS = 10_000
PRELOAD_SITES = 500
T0 = "2026-11-02T09:00:00Z"
WRK_SCRIPT = Path(__file__).with_suffix(".lua")
# Connections of the open-loop generator: a request due when all are busy waits
# for one, and its wait counts in its latency.
OPEN_LOOP_CONNECTIONS = 256


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


# -- the load generators ------------------------------------------------------


def request_bodies(kind: str, first: int, count: int, batch: int) -> list[bytes]:
    """The bodies of a run: ``count`` alerts from ``first``, ``batch`` per request."""
    bodies = []
    for start in range(first, first + count, batch):
        end = min(start + batch, first + count)
        alerts = [alert_body(i, i % PRELOAD_SITES) for i in range(start, end)]
        bodies.append(webhook_payload(alerts) if kind == "scout" else json.dumps(alerts).encode())
    return bodies


class _Connection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection of the load generator, one request at a time.

    Requests are pre-encoded bytes and answers are split on Content-Length
    only: a few microseconds a request, so the generator's own CPU stays small
    beside the servers' (an aiohttp client cost about as much per request as
    the sidecar's handler).
    """

    def __init__(
        self,
        answered: Callable[[_Connection, int], None],
        lost: Callable[[_Connection, str], None],
    ) -> None:
        self._answered = answered
        self._lost = lost
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (head_end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._buffer[:head_end]).lower()
            length = re.search(rb"\r\ncontent-length: *(\d+)", head)
            if length is None:
                raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
            end = head_end + 4 + int(length.group(1))
            if len(self._buffer) < end:
                return
            del self._buffer[:end]
            self._answered(self, int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(self, f"the server closed a connection ({exc or 'no error'})")


async def generate(
    url: str, kind: str, first: int, count: int, batch: int, senders: int, rate: float
) -> None:
    """Send ``count`` alerts, ``batch`` per request, and print the summary as JSON.

    Closed loop (``rate`` 0): ``senders`` connections send back to back; this
    finds the most the server can take, and latency runs from each send.
    Open loop (``rate`` alerts/s): requests fall due on a fixed schedule
    whether or not earlier ones were answered, each goes out on the first idle
    one of ``senders`` connections, and latency is counted from when it was
    due, so a stalled server cannot hide its stall by slowing the sender down
    (coordinated omission).
    """
    target = urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    head = (
        f"POST {target.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {TOKEN}\r\n"
    )
    requests = [
        f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        for body in request_bodies(kind, first, count, batch)
    ]
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []
    # Requests no connection was free for, with when they fell due (None: closed loop).
    waiting: collections.deque[tuple[bytes, float | None]] = collections.deque()
    since: dict[_Connection, float] = {}
    latencies: list[float] = []
    failures = 0
    finished = loop.create_future()

    def dispatch(connection: _Connection, request: bytes, due: float | None) -> None:
        since[connection] = time.perf_counter() if due is None else due
        assert connection.transport is not None
        connection.transport.write(request)

    def submit(request: bytes, due: float | None) -> None:
        if idle:
            dispatch(idle.pop(), request, due)
        else:
            waiting.append((request, due))

    def answered(connection: _Connection, status: int) -> None:
        nonlocal failures
        latencies.append(time.perf_counter() - since.pop(connection))
        failures += not 200 <= status < 300
        if waiting:
            dispatch(connection, *waiting.popleft())
        else:
            idle.append(connection)
        if len(latencies) == len(requests):
            finished.set_result(None)

    def lost(connection: _Connection, why: str) -> None:
        # An idle connection the server let go of (its keep-alive timeout, at a
        # low offered rate) is simply not used again; one with a request in
        # flight loses that request, which fails the run.
        if connection not in since:
            with contextlib.suppress(ValueError):
                idle.remove(connection)
            return
        if not finished.done():
            finished.set_exception(RuntimeError(why))

    for _ in range(senders):
        _, connection = await loop.create_connection(
            lambda: _Connection(answered, lost), host, port
        )
        idle.append(connection)
    began = time.perf_counter()
    if rate == 0:
        for request in requests:
            submit(request, None)
    else:
        interval = batch / rate
        for index, request in enumerate(requests):
            due = began + index * interval
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            submit(request, due)
    await finished
    wall = time.perf_counter() - began
    for connection in idle:
        assert connection.transport is not None
        connection.transport.close()
    latencies.sort()
    print(json.dumps(latency_summary(wall, latencies, failures)))


def latency_summary(wall: float, latencies: Sequence[float], failures: int) -> dict[str, float]:
    """What a run reports; ``latencies`` sorted, in seconds."""
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {
        "wall": wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": p99 * 1000,
        "failures": failures,
    }


def children_cpu() -> float:
    """CPU seconds of this process's finished children (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_generator(
    url: str, kind: str, first: int, count: int, batch: int, senders: int, rate: float = 0
) -> dict[str, Any]:
    """A run of the Python generator, in a process of its own."""
    argv = [sys.executable, __file__, "--generate", url, kind, str(first), str(count)]
    argv += [f"--batch={batch}", f"--senders={senders}", f"--rate={rate}"]
    cpu = children_cpu()
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(done.stdout)
    result["generator_cpu"] = children_cpu() - cpu
    return result


def run_wrk(
    url: str, kind: str, first: int, count: int, batch: int, senders: int
) -> dict[str, Any]:
    """A closed-loop run of wrk (C): ``senders`` connections on one thread."""
    threads = 1
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as lines:
        for body in request_bodies(kind, first, count, batch):
            lines.write(body + b"\n")
        lines.flush()
        argv = [
            "wrk",
            f"-t{threads}",
            f"-c{max(senders, threads)}",
            "-d600s",
            "-s",
            str(WRK_SCRIPT),
        ]
        argv += [url, "--", lines.name, TOKEN, str(threads)]
        cpu = children_cpu()
        wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert wrk.stdout is not None
        output = []
        finished = 0
        for line in wrk.stdout:
            output.append(line)
            finished += line == "finished\n"
            if finished == threads:
                # wrk sleeps for its whole -d; its threads are done.
                wrk.send_signal(signal.SIGINT)
                output.append(wrk.stdout.read())
                break
        if wrk.wait(timeout=60) != 0:
            raise RuntimeError(f"wrk failed: {''.join(output)[-2000:]}")
    result: dict[str, Any] = json.loads("".join(output).strip().splitlines()[-1])
    result["generator_cpu"] = children_cpu() - cpu
    return result


def load(
    url: str, kind: str, first: int, count: int, batch: int, senders: int, rate: float
) -> dict[str, Any]:
    """Capacity with wrk where installed (the Python generator otherwise); a fixed rate with
    the Python generator, which wrk cannot offer (it is a closed loop)."""
    if rate == 0 and shutil.which("wrk"):
        return run_wrk(url, kind, first, count, batch, senders)
    return run_generator(
        url, kind, first, count, batch, senders if rate == 0 else OPEN_LOOP_CONNECTIONS, rate
    )


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


def start_sidecar(workdir: Path, peer: str, processes: int) -> tuple[Service, str]:
    port = free_port()
    env = {
        "SCOUT_WEBHOOK_TOKEN": TOKEN,
        "SCOUT_DATA_DIR": str(workdir / "data"),
        # The return trip runs as in production, against its own peer.
        "SCOUT_ALERTMANAGER_URLS": peer,
    }
    sidecar = sidecar_service(
        workdir, port, ["--log.level=warn", f"--web.processes={processes}"], env
    )
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


def summary(result: dict[str, Any], alerts: int, batch: int) -> dict[str, float]:
    """Rate, latency, and the load generator's CPU a request."""
    requests = math.ceil(alerts / batch)
    return {
        "rate": alerts / result["wall"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "failures": result["failures"],
        "generator_cpu_ms": result["generator_cpu"] / requests * 1000,
    }


@dataclass(frozen=True, slots=True)
class Measured:
    batch: int
    mode: str
    scout: dict[str, float]
    peer: dict[str, float]
    correlated: float
    # CPU milliseconds a request of the sidecar's HTTP process, while the load ran.
    cpu_ms: float
    # The same for its worker process (correlation, analysis, the return trip).
    worker_cpu_ms: float
    # Cores the load generator used on average while it ran against the sidecar.
    generator_cores: float


def split_processes(sidecar: psutil.Process) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The sidecar's HTTP processes (the main one, and its intake processes: the
    children that listen on its port too), and its other children (the worker,
    multiprocessing's helpers)."""
    listening = {c.laddr for c in sidecar.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    http, others = [sidecar], []
    for child in sidecar.children(recursive=True):
        mine = {c.laddr for c in child.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        (http if mine & listening else others).append(child)
    return http, others


def measure(
    batch: int,
    alerts: int,
    senders: int,
    rate: float,
    *,
    stop_worker: bool = False,
    processes: int = 1,
) -> Measured:
    """One run: a fresh sidecar (preloaded) and a fresh Alertmanager, the same load.

    ``stop_worker``: the sidecar's worker process is stopped (SIGSTOP) while
    the load runs and continued after it, to see what the worker's share of the
    cores and of the write lock costs the webhook.
    """
    with tempfile.TemporaryDirectory(prefix="scout-bench-") as tmp:
        workdir = Path(tmp)
        # Alertmanager first and alone, so nothing else competes for the cores.
        peer, peer_url = start_alertmanager(workdir, "ingest-peer")
        try:
            theirs = load(
                f"{peer_url}/api/v2/alerts", "am", PRELOAD_ALERTS, alerts, batch, senders, rate
            )
        finally:
            peer.stop(grace=10)
        trip, trip_url = start_alertmanager(workdir, "return-trip-peer")
        sidecar, sidecar_url = start_sidecar(workdir, trip_url, processes)
        try:
            hook = f"{sidecar_url}/api/v1/alertmanager"
            database = workdir / "data" / "scout.db"
            run_generator(hook, "scout", 0, PRELOAD_ALERTS, 500, 4)
            wait_processed(database, PRELOAD_ALERTS)
            assert sidecar.process is not None
            http, children = split_processes(psutil.Process(sidecar.process.pid))
            if len(http) != processes:
                raise RuntimeError(f"expected {processes} HTTP processes, found {len(http)}")
            cpu_before = sum(cpu_seconds(p.pid) for p in http)
            worker_before = sum(cpu_seconds(child.pid) for child in children)
            if stop_worker:
                for child in children:
                    child.send_signal(signal.SIGSTOP)
            try:
                scout = load(hook, "scout", PRELOAD_ALERTS, alerts, batch, senders, rate)
            finally:
                if stop_worker:
                    for child in children:
                        child.send_signal(signal.SIGCONT)
            cpu = sum(cpu_seconds(p.pid) for p in http) - cpu_before
            worker_cpu = sum(cpu_seconds(child.pid) for child in children) - worker_before
            drained = wait_processed(database, PRELOAD_ALERTS + alerts)
        finally:
            for service in (sidecar, trip):
                service.stop(grace=10)
    mode = f"{senders} senders" if rate == 0 else f"{rate:,.0f}/s offered"
    if stop_worker:
        mode += ", worker stopped"
    if processes > 1:
        mode += f", {processes} HTTP processes"
    requests = math.ceil(alerts / batch)
    return Measured(
        batch=batch,
        mode=mode,
        scout=summary(scout, alerts, batch),
        peer=summary(theirs, alerts, batch),
        correlated=alerts / (scout["wall"] + drained),
        cpu_ms=cpu / requests * 1000,
        worker_cpu_ms=worker_cpu / requests * 1000,
        generator_cores=scout["generator_cpu"] / scout["wall"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts per measured run")
    parser.add_argument("--batch", default="1,10,100", help="alerts per request, comma-separated")
    parser.add_argument("--senders", type=int, default=16, help="concurrent senders (capacity)")
    parser.add_argument("--rate", type=float, default=5000, help="offered alerts/s (latency)")
    parser.add_argument(
        "--worker",
        choices=("running", "stopped"),
        default="running",
        help="stopped: SIGSTOP the sidecar's worker process while the load runs",
    )
    parser.add_argument(
        "--web-processes",
        type=int,
        default=1,
        help="the sidecar's HTTP processes (scout-sidecar serve --web.processes)",
    )
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
    stop_worker = args.worker == "stopped"
    rows = []
    for batch in batches:
        for rate in (0, args.rate):
            rows.append(
                measure(
                    batch,
                    args.alerts,
                    args.senders,
                    rate,
                    stop_worker=stop_worker,
                    processes=args.web_processes,
                )
            )
    print(
        "| alerts/request | load | Scout alerts/s | Scout p50 ms | Scout p99 ms "
        "| correlated alerts/s | Scout HTTP CPU ms/request | Alertmanager alerts/s "
        "| Alertmanager p99 ms | rate ratio | p99 ratio | generator CPU ms/request "
        "| Scout worker CPU ms/request | generator cores |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        ours, theirs = row.scout, row.peer
        print(
            f"| {row.batch} | {row.mode} | {ours['rate']:,.0f} | {ours['p50_ms']:.1f} "
            f"| {ours['p99_ms']:.1f} | {row.correlated:,.0f} | {row.cpu_ms:.3f} "
            f"| {theirs['rate']:,.0f} | {theirs['p99_ms']:.1f} "
            f"| {ours['rate'] / theirs['rate']:.2f}x | {ours['p99_ms'] / theirs['p99_ms']:.2f}x "
            f"| {ours['generator_cpu_ms']:.3f} / {theirs['generator_cpu_ms']:.3f} "
            f"| {row.worker_cpu_ms:.3f} | {row.generator_cores:.2f} |"
        )
        if ours["failures"] or theirs["failures"]:
            print(f"  failed requests: Scout {ours['failures']}, Alertmanager {theirs['failures']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
