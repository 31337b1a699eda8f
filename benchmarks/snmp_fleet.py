"""Fleet load: Scout's ``/snmp`` (module if_mib) scraping 10,000 devices every 60 s.

The issue's question: can one Scout on a 2-core machine keep 10,000 switches
scraped every minute, and at what cost? Targets: Scout's process below 50% of
the 2 cores, below 1 GB resident, and no scrape past its deadline. This script
answers it on the machine it runs on, and asks the same of Debian's
prometheus-snmp-exporter 0.21 over the same fleet.

Devices. A fleet needs agents that keep up: 10,000 devices x about 1,200 OIDs
(ifTable + ifXTable of a 48-port switch) every 60 s is 200,000 OIDs/s, more
than net-snmp's snmpd builds on these cores beside the exporter. So by default
(``--agent responder``) the devices are ``snmp_responder.py`` processes
(``--agent-processes``, 2) in front of one real snmpd: each request is answered
with the bytes snmpd gave for the same request (same community, same OIDs, same
max-repetitions), learnt the first time it was asked and re-wrapped around the
asker's request-id (see that script). snmpd runs in a network namespace of this
script's own with 24 veth pairs, so ifTable has 49 rows: a 48-port switch plus
loopback. The responders listen on ``--ports`` UDP ports of 127.0.0.1 (1000 for
10,000 devices) and serve ``--communities`` v2c communities (10), and a device
is a (port, community) pair: distinct targets and auths for Scout, hence as
many sessions, UDP sockets, caches and max-repetitions states as switches. After
the run a sample of devices is walked with net-snmp's ``snmpbulkwalk`` through
the responders and straight from snmpd, and the tables must match (counters
only by OID and type: the responders' are frozen at first sight). The agents'
CPU is printed apart from the exporter's and not counted. What this does not
reproduce: network round trips (Scout's CPU hardly depends on latency, only on
how many scrapes overlap), the variety of real devices (all serve the same
tables), and counters that move.

``--agent snmpd`` has the exporters ask snmpd itself, on ``--ports`` of its own
(one snmpd listens on at most about 120), as this benchmark did up to 1,000
devices. ``--agent snmpsim`` uses snmpsim instead, with generated devices
(varied speeds, non-ASCII aliases, sparse indexes, growing counters), small
enough that one snmpsim process keeps up: ``--sim-interfaces`` (8, about 350
OIDs per full walk) on ``--ports`` endpoints x ``--communities`` device files.

Schedule. Like Prometheus: every device is scraped once per ``--interval``
(60 s) at its own offset, offsets spread evenly over the interval, through an
aiohttp client with at most ``--concurrency`` scrapes in flight, sending
Prometheus's headers (gzip, a 10 s scrape timeout). Every answer is checked:
for Scout ``scout_snmp_module_success{module="if_mib"} 1``, for snmp_exporter
an HTTP 200 with ifTable series. A run with failed scrapes is not valid: it
says so, lists the errors and exits 1.

Measured: the CPU seconds (user+system, psutil) of the exporter's process only,
per interval, as a share of all the machine's cores (2 here), and its resident
memory (now and peak); scrapes past the 10 s deadline the client announces,
counted from when each scrape was due (Prometheus sends it then, whatever the
exporter's backlog; a scrape that waited for one of this client's slots used
its deadline waiting). The agents' and this client's CPU, this client's own lag
in starting scrapes (if it grows, the load generator is what is measured), and
the machine's load average (it is shared) are printed for context, not counted.
Also printed for Scout: the SNMP requests and resends per scrape (its own
``scout_snmp_pdus_sent`` and ``scout_snmp_retries``), and the time its garbage
collector took over the run (``scout_exporter_gc_*`` on its /metrics). CPU is
also given per scrape over the whole run: with a backlog, scrapes due in one
interval are answered, and cost CPU, in the next, so the per-interval split
(and the cold/steady summary built on it) is then left out of the summary.
snmp_exporter cannot poll 10,000 devices a minute on 2 cores, so
``--peer-interval`` gives it a longer one over the same fleet: the comparison
is CPU per device-scrape.

Scout's first interval is its cold one (every device's first scrape walks
everything); then its per-device cache (checked on every
scrape, refilled at most every 15 minutes) means it walks counters and status
only. The long-run figure estimates a 60 s fleet where each device refills its
cache once per 15 minutes.

A quicker run: ``--interval 15 --devices 2500`` keeps the same scrape rate per
second for a quarter of the time. Whatever the settings, the CPU share is also
printed scaled to 10,000 devices every 60 s, labelled as such: CPU seconds per
scrape times 10,000 / 60 s, a linear extrapolation.

Needs root (network namespace), iproute2, Debian's ``snmpd snmp
prometheus-snmp-exporter``; snmpsim in the venv for ``--agent snmpsim``.

Usage: python benchmarks/snmp_fleet.py [--devices N] [--interval S] [--intervals N]
       [--peer-intervals N] [--peer-interval S] [--agent responder|snmpd|snmpsim]
       [--agent-processes N] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import aiohttp
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/snmp_fleet.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    SCRAPE_HEADERS,
    cpu_seconds,
    memory,
    missing_programs,
    p90,
    raise_interrupt,
    version_line,
)
from scripts.localstack import Service, StackError, find_binary, free_port  # noqa: E402
from tests.peers.snmp import (  # noqa: E402
    NetnsSnmpd,
    SnmpExporter,
    SnmpPeerError,
    SnmpsimDevices,
    UdpService,
    answers,
    free_udp_port,
    snmp_command,
)

HOST = "127.0.0.1"  # the exporters listen here; agents are in our namespace or here
MODULE = "if_mib"
TARGET_SHARE = 0.50  # of all cores
TARGET_RSS = 10**9  # at the reference fleet
REFERENCE_DEVICES = 10_000
REFERENCE_INTERVAL = 60.0
REFERENCE_LABEL = f"at {REFERENCE_DEVICES // 1000}k/60s"
# The scrape timeout the client announces (X-Prometheus-Scrape-Timeout-Seconds).
SCRAPE_DEADLINE = float(SCRAPE_HEADERS["X-Prometheus-Scrape-Timeout-Seconds"])
CACHE_MAX_AGE = 900.0  # if_mib's cache max_age_seconds
FIRST_PORT = 20000
RESPONDER = Path(__file__).resolve().parent / "snmp_responder.py"
SCOUT_SUCCESS = f'scout_snmp_module_success{{module="{MODULE}"}} 1\n'
SCOUT_CACHED = f'scout_snmp_cache_used{{module="{MODULE}"}} 1\n'
SCOUT_PDUS = "\nscout_snmp_pdus_sent "
SCOUT_RETRIES = "\nscout_snmp_retries "


GC_FAMILIES = {
    "seconds": "scout_exporter_gc_seconds_total",
    "collections": "scout_exporter_gc_collections_total",
    "longest": "scout_exporter_gc_longest_pause_seconds",
}


def gc_figures(metrics_url: str) -> dict[str, list[float]] | None:
    """Scout's garbage-collector counters by generation, from its /metrics (None if absent)."""
    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        text = response.read().decode()
    found: dict[str, list[float]] = {key: [0.0, 0.0, 0.0] for key in GC_FAMILIES}
    seen = False
    for line in text.splitlines():
        for key, name in GC_FAMILIES.items():
            prefix = f'{name}{{generation="'
            if line.startswith(prefix):
                found[key][int(line[len(prefix)])] = float(line.rsplit(" ", 1)[1])
                seen = True
    return found if seen else None


def gc_over_run(
    before: dict[str, list[float]] | None, after: dict[str, list[float]] | None
) -> dict[str, list[float]] | None:
    """What the collector did between two readings (the longest pause is since start)."""
    if before is None or after is None:
        return None
    return {
        "seconds": [a - b for a, b in zip(after["seconds"], before["seconds"], strict=True)],
        "collections": [
            a - b for a, b in zip(after["collections"], before["collections"], strict=True)
        ],
        "longest": after["longest"],
    }


def self_metric(body: str, prefix: str) -> int:
    """The value of one of Scout's unlabelled self-metrics in an exposition (0 if absent)."""
    start = body.find(prefix)
    if start < 0:
        return 0
    start += len(prefix)
    return int(float(body[start : body.find("\n", start)]))


class BenchmarkError(Exception):
    pass


@dataclass
class Device:
    target: str
    community: str


@dataclass
class Interval:
    cpu_seconds: float = 0.0
    ok: int = 0
    failed: int = 0
    cached: int = 0
    walls: list[float] = field(default_factory=list)
    # How long each scrape waited for one of the client's slots: the exporter's backlog.
    late: list[float] = field(default_factory=list)
    # How late this client itself started each scrape's task (its own event loop's lag):
    # if it grows, the load generator, not the exporter, is what is being measured.
    lag: list[float] = field(default_factory=list)
    # From when each answered scrape was due (when Prometheus would have sent it) to
    # its answer: the deadline counts from there, however long it waited for a slot.
    since_due: list[float] = field(default_factory=list)
    # SNMP requests Scout sent for the answered scrapes, and how many were resends: a
    # scrape that costs more requests (timeouts, halved max-repetitions) costs more CPU.
    pdus: int = 0
    retries: int = 0

    @property
    def past_deadline(self) -> int:
        """Scrapes that failed, or answered more than the deadline after they were due."""
        return self.failed + sum(t > SCRAPE_DEADLINE for t in self.since_due)


@dataclass
class FleetRun:
    label: str
    pid: int
    interval: float
    intervals: list[Interval]
    errors: Counter[str] = field(default_factory=Counter)
    rss_start: int = 0
    rss_end: int = 0
    rss_peak: int = 0
    fds: int = 0
    threads: int = 0
    agent_cpu: float = 0.0
    client_cpu: float = 0.0
    elapsed: float = 0.0
    # The machine's 1-minute load average at the end: it is shared, and a busy one
    # inflates CPU per scrape (cache misses) and wall times.
    load: float = 0.0
    # Scout's garbage collector over the run, from its /metrics (None: not exported):
    # seconds, collections and longest pause, each by generation.
    gc: dict[str, list[float]] | None = None

    @property
    def scrapes(self) -> int:
        return sum(i.ok + i.failed for i in self.intervals)

    @property
    def failed(self) -> int:
        return sum(i.failed for i in self.intervals)


async def run_fleet(
    label: str,
    base_url: str,
    paths: Sequence[str],
    pid: int,
    agent_pids: Sequence[int],
    args: argparse.Namespace,
    intervals: int,
    interval: float,
) -> FleetRun:
    """Scrape every path once per interval at its own offset; CPU sampled per interval."""
    run = FleetRun(label, pid, interval, [Interval() for _ in range(intervals)])
    limit = asyncio.Semaphore(args.concurrency)
    timeout = aiohttp.ClientTimeout(total=15)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    loop = asyncio.get_running_loop()
    spacing = interval / len(paths)
    check = SCOUT_SUCCESS if label == "scout" else "ifHCInOctets{"

    async def one(path: str, slot: Interval, due: float) -> None:
        queued = loop.time()
        slot.lag.append(queued - due)
        async with limit:
            started = loop.time()
            slot.late.append(started - queued)
            try:
                async with session.get(base_url + path, headers=SCRAPE_HEADERS) as response:
                    body = await response.text()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                slot.failed += 1
                run.errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
                return
            answered = loop.time()
        if status == 200 and check in body:
            slot.ok += 1
            # Answered scrapes only: a failed one is past its deadline already.
            slot.walls.append(answered - started)
            slot.since_due.append(answered - due)
            slot.cached += SCOUT_CACHED in body
            if label == "scout":
                slot.pdus += self_metric(body, SCOUT_PDUS)
                slot.retries += self_metric(body, SCOUT_RETRIES)
        else:
            slot.failed += 1
            line = next((x for x in body.splitlines() if "success" in x and x.endswith(" 0")), "")
            run.errors[f"HTTP {status} {line or body[:120]!r}"] += 1

    self_pid = os.getpid()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks: set[asyncio.Task[None]] = set()
        run.rss_start = memory(pid)[0]
        start = loop.time() + 0.5
        cpu_marks = [cpu_seconds(pid)]
        agent_before, client_before = agents_cpu(agent_pids), cpu_seconds(self_pid)
        for k in range(intervals):
            for i, path in enumerate(paths):
                due = start + k * interval + i * spacing
                await asyncio.sleep(max(0.0, due - loop.time()))
                task = asyncio.create_task(one(path, run.intervals[k], due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            # The interval's scrapes are all launched; sample at its end.
            await asyncio.sleep(max(0.0, start + (k + 1) * interval - loop.time()))
            cpu_marks.append(cpu_seconds(pid))
        if tasks:  # stragglers of the last interval; their CPU is in the final sample
            await asyncio.gather(*tasks)
            cpu_marks[-1] = cpu_seconds(pid)
        run.elapsed = loop.time() - start
        run.agent_cpu = agents_cpu(agent_pids) - agent_before
        run.client_cpu = cpu_seconds(self_pid) - client_before
    for k, slot in enumerate(run.intervals):
        slot.cpu_seconds = cpu_marks[k + 1] - cpu_marks[k]
    run.rss_end, run.rss_peak = memory(pid)
    run.load = os.getloadavg()[0]
    process = psutil.Process(pid)
    run.fds, run.threads = process.num_fds(), process.num_threads()
    return run


# --------------------------------------------------------------------------------------
# Agents


@dataclass
class Fleet:
    description: str
    devices: list[Device]
    communities: list[str]
    agent_pids: list[int]
    agent_label: str
    # Run after the fleet: checks the agents served what snmpd serves; says what it checked.
    check: Callable[[], str] | None = None


def snmpd_fleet(stack: ExitStack, workdir: Path, args: argparse.Namespace) -> Fleet:
    if os.geteuid() != 0:
        raise BenchmarkError("--agent snmpd needs root (a network namespace); try sudo")
    ports = list(range(FIRST_PORT, FIRST_PORT + args.ports))
    # snmpd appends agentAddress lines, but keeps only about 2,000 characters of them.
    listen = "".join(
        "agentAddress " + ",".join(f"udp:0.0.0.0:{p}" for p in ports[i : i + 40]) + "\n"
        for i in range(0, len(ports), 40)
    )
    communities = [f"fleet{c}" for c in range(args.communities)]
    agent = stack.enter_context(
        NetnsSnmpd(
            workdir,
            pairs=24,
            communities=("public", *communities),
            extra_config=listen,
        )
    )
    host = agent.inside_address
    assert agent.snmpd is not None
    assert agent.snmpd.service is not None
    assert agent.snmpd.service.process is not None
    devices = [Device(f"{host}:{p}", c) for p in ports for c in communities]
    check_reachable(agent, host, ports[-1], communities[-1])
    return Fleet(
        f"net-snmp snmpd in a network namespace, {agent.if_rows} interfaces (48 ports + lo) "
        f"per device; {len(ports)} UDP ports x {len(communities)} communities",
        devices,
        communities,
        [agent.snmpd.service.process.pid],
        "snmpd",
    )


def responder_fleet(stack: ExitStack, workdir: Path, args: argparse.Namespace) -> Fleet:
    """snmpd in a namespace behind ``snmp_responder.py`` processes that replay its answers."""
    if os.geteuid() != 0:
        raise BenchmarkError("--agent responder needs root (a network namespace); try sudo")
    communities = [f"fleet{c}" for c in range(args.communities)]
    agent = stack.enter_context(NetnsSnmpd(workdir, pairs=24, communities=communities))
    ports = list(range(FIRST_PORT, FIRST_PORT + args.ports))
    processes = min(args.agent_processes, len(ports))
    share_size = math.ceil(len(ports) / processes)
    pids = []
    for k in range(processes):
        mine = ports[k * share_size : (k + 1) * share_size]
        if not mine:
            break
        service = UdpService(
            name=f"snmp_responder {mine[0]}-{mine[-1]}",
            argv=[
                sys.executable,
                str(RESPONDER),
                f"--host={HOST}",
                f"--ports={mine[0]}-{mine[-1]}",
                f"--upstream={agent.target}",
            ],
            ready_url=f"snmp://{HOST}:{mine[-1]}",
            log_path=workdir / f"responder-{k}.log",
            probe=functools.partial(answers, f"{HOST}:{mine[-1]}", communities[-1]),
        )
        stack.callback(service.stop, 5)
        service.start()
        service.wait_ready(30)
        assert service.process is not None
        pids.append(service.process.pid)
    fleet = Fleet(
        f"{processes} snmp_responder processes replaying net-snmp snmpd's answers (snmpd in a "
        f"network namespace, {agent.if_rows} interfaces: 48 ports + lo); {len(ports)} UDP ports "
        f"x {len(communities)} communities",
        [Device(f"{HOST}:{p}", c) for p in ports for c in communities],
        communities,
        pids,
        "the responders",
    )
    fleet.check = lambda: check_replayed(agent, ports, communities)
    return fleet


# ifTable and ifXTable: what if_mib reads.
CHECKED_TABLES = ("1.3.6.1.2.1.2.2", "1.3.6.1.2.1.31.1.1")
CHECKED_DEVICES = 5


def check_replayed(agent: NetnsSnmpd, ports: Sequence[int], communities: Sequence[str]) -> str:
    """Walk a sample of devices through the responders and straight from snmpd: same tables?

    ``snmpbulkwalk`` (net-snmp's own client, not Scout's) asks every sampled
    device the same requests; the first sampled device of a community may be
    passed upstream, the others are served from the responders' store. Counter
    values are frozen in the store while snmpd's move on, so counters are compared
    by OID and type only; everything else (names, speeds, status) by value too.
    """
    sample = random.Random(7).sample(
        [(p, c) for p in ports for c in communities],
        min(CHECKED_DEVICES, len(ports) * len(communities)),
    )
    for port, community in sample:
        for table in CHECKED_TABLES:
            replayed = masked_walk(f"{HOST}:{port}", community, table)
            direct = masked_walk(agent.target, community, table)
            if not replayed or replayed != direct:
                diff = sorted(set(replayed) ^ set(direct))[:5]
                raise BenchmarkError(
                    f"the responder on port {port} ({community}) does not answer {table} as "
                    f"snmpd does ({len(replayed)} against {len(direct)} lines; differing: {diff})"
                )
    return (
        f"{len(sample)} sampled devices walked through the responders and straight from snmpd "
        "(ifTable, ifXTable, net-snmp's snmpbulkwalk): identical but for counter values"
    )


def masked_walk(target: str, community: str, table: str) -> list[str]:
    result = snmp_command("snmpbulkwalk", target, table, community=community, timeout=2, retries=1)
    if result.returncode != 0:
        raise BenchmarkError(f"snmpbulkwalk {target} {table} failed: {result.stderr.strip()}")
    return [
        line.split(" = ")[0] + " = Counter" if " = Counter" in line else line
        for line in result.stdout.splitlines()
    ]


def agents_cpu(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def check_reachable(agent: NetnsSnmpd, host: str, port: int, community: str) -> None:
    deadline = time.monotonic() + 10
    while not answers(f"{host}:{port}", community):
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"snmpd in {agent.name} does not answer on port {port}: too many agentAddress "
                "ports? (lower --ports)"
            )
        time.sleep(0.2)


def snmpsim_fleet(stack: ExitStack, workdir: Path, args: argparse.Namespace) -> Fleet:
    communities = [f"fleet{c}" for c in range(args.communities)]
    endpoints = []
    for _ in range(args.ports):
        port = free_udp_port()
        while f"{HOST}:{port}" in endpoints:
            port = free_udp_port()
        endpoints.append(f"{HOST}:{port}")
    sim = stack.enter_context(
        SnmpsimDevices(
            workdir,
            dict.fromkeys(communities, args.sim_interfaces),
            endpoints=endpoints,
            ready_timeout=300,
        )
    )
    assert sim.service is not None
    assert sim.service.process is not None
    devices = [Device(ep, c) for ep in endpoints for c in communities]
    return Fleet(
        f"snmpsim, {args.sim_interfaces} interfaces per device; {len(endpoints)} UDP "
        f"endpoints x {len(communities)} device files",
        devices,
        communities,
        [sim.service.process.pid],
        "snmpsim",
    )


# --------------------------------------------------------------------------------------
# Report


def share(cpu: float, seconds: float) -> float:
    return cpu / (seconds * (os.cpu_count() or 1))


def reference_share(cpu_per_scrape: float) -> float:
    """The share of the cores the reference fleet (10,000 devices / 60 s) would take."""
    return share(cpu_per_scrape * REFERENCE_DEVICES, REFERENCE_INTERVAL)


def print_run(run: FleetRun, args: argparse.Namespace, devices: int, agent_label: str) -> None:
    cores = os.cpu_count() or 1
    print()
    print(
        f"{run.label}: {devices} devices every {run.interval:g} s, {len(run.intervals)} intervals"
    )
    header = (
        f"{'interval':<9} {'ok':>6} {'failed':>6} {'past deadline':>13} {'cached':>6} "
        f"{'wall med ms':>11} {'wall p90 ms':>11} {'wait p90 ms':>11} {'wait max s':>10} "
        f"{'lag max ms':>10} {'PDUs/scr':>8} {'retries':>7} {'CPU s':>7} "
        f"{'CPU ms/scr':>10} {'share of ' + str(cores) + ' cores':>16} {REFERENCE_LABEL:>12}"
    )
    print(header)
    print("-" * len(header))
    for k, slot in enumerate(run.intervals, 1):
        n = slot.ok + slot.failed
        per_scrape = slot.cpu_seconds / n if n else float("nan")
        print(
            f"{k:<9} {slot.ok:>6} {slot.failed:>6} {slot.past_deadline:>13} "
            f"{slot.cached if run.label == 'scout' else '-':>6} "
            f"{statistics.median(slot.walls) * 1e3 if slot.walls else float('nan'):>11.1f} "
            f"{p90(slot.walls) * 1e3:>11.1f} {p90(slot.late) * 1e3:>11.1f} "
            f"{max(slot.late, default=float('nan')):>10.1f} "
            f"{max(slot.lag, default=float('nan')) * 1e3:>10.1f} "
            f"{slot.pdus / slot.ok if slot.ok and run.label == 'scout' else float('nan'):>8.1f} "
            f"{slot.retries if run.label == 'scout' else '-':>7} "
            f"{slot.cpu_seconds:>7.2f} {per_scrape * 1e3:>10.2f} "
            f"{share(slot.cpu_seconds, run.interval):>16.1%} {reference_share(per_scrape):>12.1%}"
        )
    print(
        f"RSS {run.rss_end / 1e6:.0f} MB at the end (peak {run.rss_peak / 1e6:.0f} MB, "
        f"{run.rss_start / 1e6:.0f} MB before the first scrape: "
        f"{(run.rss_end - run.rss_start) / devices / 1e3:.0f} kB per device); "
        f"{run.fds} open fds, {run.threads} threads"
    )
    total_cpu = sum(slot.cpu_seconds for slot in run.intervals)
    print(
        f"all intervals: {run.scrapes} scrapes answered or failed in {run.elapsed:.0f} s "
        f"({run.scrapes / run.elapsed:.1f}/s against {devices / run.interval:.1f}/s scheduled), "
        f"{total_cpu:.1f} CPU s, {total_cpu / run.scrapes * 1e3:.2f} ms per scrape: the figure "
        "that holds when a backlog moves CPU from one interval to the next"
    )
    if run.label == "scout":
        print(gc_line(run.gc, total_cpu))
    agent_share, client_share = (
        share(run.agent_cpu, run.elapsed),
        share(run.client_cpu, run.elapsed),
    )
    print(
        f"not counted: {agent_label} (the agents) used {agent_share:.1%} and this client "
        f"{client_share:.1%} of the {cores} cores over {run.elapsed:.0f} s; load average "
        f"{run.load:.2f} at the end"
    )
    if run.failed:
        print(f"INVALID: {run.failed} of {run.scrapes} scrapes failed; most common errors:")
        for error, count in run.errors.most_common(5):
            print(f"  {count:>5} x {error}")


def gc_line(figures: dict[str, list[float]] | None, cpu: float) -> str:
    if figures is None:
        return "garbage collector: not on this exporter's /metrics"
    seconds, collections, longest = (figures[k] for k in ("seconds", "collections", "longest"))
    return (
        f"garbage collector: {sum(seconds):.2f} s of the exporter's {cpu:.1f} CPU s "
        f"({sum(seconds) / cpu if cpu else 0.0:.1%}); collections by generation "
        f"{'/'.join(f'{c:.0f}' for c in collections)}, seconds "
        f"{'/'.join(f'{x:.2f}' for x in seconds)}, longest pause since start "
        f"{'/'.join(f'{x * 1e3:.0f}' for x in longest)} ms"
    )


def behind(run: FleetRun) -> bool:
    """Whether some scrape was answered after the end of the interval it was due in.

    Each interval's scrapes are due through the interval; one answered later than a
    deadline past its end ran into the next interval's CPU sample.
    """
    return run.elapsed > len(run.intervals) * run.interval + SCRAPE_DEADLINE


def print_summary(
    scout: FleetRun, peer: FleetRun | None, args: argparse.Namespace, devices: int
) -> None:
    cores = os.cpu_count() or 1
    print()
    print(
        f"summary (targets: CPU < {TARGET_SHARE:.0%} of the cores, RSS < {TARGET_RSS / 1e6:.0f} MB)"
    )

    def per_scrape(slots: Sequence[Interval]) -> float:
        n = sum(s.ok + s.failed for s in slots)
        return sum(s.cpu_seconds for s in slots) / n if n else float("nan")

    cold = per_scrape(scout.intervals[:1])
    steady_slots = scout.intervals[1:]
    lines = [("scout, whole run (all intervals)", per_scrape(scout.intervals), scout)]
    # CPU is charged to the interval it was spent in, scrapes to the interval they were
    # due in: with a backlog, one interval's scrapes are answered (and cost) in the next.
    split = not behind(scout)
    if not split:
        print(
            "  (scrapes were answered in a later interval than they were due in: the cold "
            "and steady split is not measured; the whole run is)"
        )
    if split:
        lines.append(("scout, cold (interval 1)", cold, scout))
    if steady_slots and split:
        steady = per_scrape(steady_slots)
        lines.append((f"scout, steady (intervals 2-{len(scout.intervals)})", steady, scout))
        # Each device refills its cache once per CACHE_MAX_AGE: one cold scrape in 15.
        cold_fraction = REFERENCE_INTERVAL / CACHE_MAX_AGE
        lines.append(
            (
                "scout, long run (1 cold scrape in 15)",
                steady + (cold - steady) * cold_fraction,
                scout,
            )
        )
    if peer is not None:
        lines.append(("snmp_exporter", per_scrape(peer.intervals), peer))
    for label, cost, run in lines:
        same_rate = run.interval == REFERENCE_INTERVAL and devices == REFERENCE_DEVICES
        measured = share(cost * devices, run.interval)
        print(
            f"  {label:<40} {cost * 1e3:6.2f} ms CPU per scrape; "
            + (
                f"{measured:.1%} of {cores} cores"
                if same_rate
                else f"measured {measured:.1%}, scaled to {REFERENCE_DEVICES} devices / 60 s: "
                f"{reference_share(cost):.1%} of {cores} cores"
            )
            + (
                f" ({'met' if reference_share(cost) < TARGET_SHARE else 'MISSED'})"
                if label.startswith("scout")
                else ""
            )
        )
    print(
        f"  scout RSS {scout.rss_end / 1e6:.0f} MB, peak {scout.rss_peak / 1e6:.0f} MB "
        f"({'met' if scout.rss_peak < TARGET_RSS else 'MISSED'})"
        + (f"; snmp_exporter {peer.rss_end / 1e6:.0f} MB" if peer is not None else "")
    )
    if peer is not None and steady_slots:
        mine, which = (
            (per_scrape(steady_slots), "steady")
            if split
            else (per_scrape(scout.intervals), "whole run")
        )
        ratio = mine / per_scrape(peer.intervals)
        print(f"  CPU per device-scrape, scout {which} / snmp_exporter: {ratio:.2f}x")
    for measured_run in (scout, peer):
        if measured_run is not None:
            slots = measured_run.intervals
            # The old, wrong count: the deadline taken from when the scrape got a slot,
            # which forgives the time it queued behind the exporter's backlog.
            from_start = sum(s.failed + sum(w > SCRAPE_DEADLINE for w in s.walls) for s in slots)
            lags = [x for s in slots for x in s.lag]
            print(
                f"  {measured_run.label}: "
                f"{sum(s.past_deadline for s in slots)} of {measured_run.scrapes} scrapes "
                f"past their {SCRAPE_DEADLINE:g} s deadline counted from when each was due "
                f"({from_start} counted from when the exporter began it); this client "
                f"started scrapes up to {max(lags, default=0.0) * 1e3:.0f} ms late "
                f"(p90 {p90(lags) * 1e3:.1f} ms); the agents used "
                f"{share(measured_run.agent_cpu, measured_run.elapsed):.1%} of the cores "
                "meanwhile (not counted)"
            )
    invalid = [r.label for r in (scout, peer) if r is not None and r.failed]
    print(
        "  all scrapes succeeded"
        if not invalid
        else f"  NOT VALID: scrapes failed for {', '.join(invalid)}"
    )


# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--devices", type=int, default=10_000, help="simulated devices (default 10000)")
    add("--interval", type=float, default=60.0, help="scrape interval, seconds (default 60)")
    add("--intervals", type=int, default=2, help="intervals Scout is measured for (default 2)")
    add(
        "--peer-intervals", type=int, default=1,
        help="intervals snmp_exporter is measured for afterwards; 0 skips it (default 1)",
    )  # fmt: skip
    add(
        "--agent", choices=("responder", "snmpd", "snmpsim"), default="responder",
        help="see the docstring (default responder)",
    )  # fmt: skip
    add(
        "--agent-processes", type=int, default=2,
        help="snmp_responder processes sharing the ports (default 2)",
    )  # fmt: skip
    add(
        "--peer-interval", type=float, default=None,
        help="snmp_exporter's interval, seconds (default --interval; longer when it cannot "
        "keep up with the fleet on these cores)",
    )  # fmt: skip
    add(
        "--communities", type=int, default=None,
        help="devices per port (snmpd) or device files (snmpsim); default 10 or 50",
    )  # fmt: skip
    add("--sim-interfaces", type=int, default=8, help="interfaces per snmpsim device (default 8)")
    add(
        "--concurrency", type=int, default=None,
        help="scrapes in flight at most (default: 1 per 50 devices, at least 50)",
    )  # fmt: skip
    add("--seed", type=int, default=1, help="shuffles the order devices are scraped in")
    args = parser.parse_args(argv)
    if args.communities is None:
        args.communities = 50 if args.agent == "snmpsim" else 10
    if args.peer_interval is None:
        args.peer_interval = args.interval
    if args.concurrency is None:
        # Prometheus caps nothing: each target has its own deadline. A cap keeps this
        # client sane; in flight is rate x wall, so it grows with the fleet.
        args.concurrency = max(50, args.devices // 50)
    if args.devices < 1 or args.interval <= 0 or args.intervals < 1 or args.peer_intervals < 0:
        parser.error("--devices, --interval and --intervals must be positive")
    if args.communities < 1 or args.concurrency < 1 or args.agent_processes < 1:
        parser.error("--communities, --concurrency and --agent-processes must be positive")
    args.ports = math.ceil(args.devices / args.communities)
    if args.agent == "snmpd" and args.ports > 120:
        parser.error(
            f"{args.devices} devices need {args.ports} ports at {args.communities} communities; "
            "one snmpd listens on at most about 120: raise --communities"
        )
    return args


def check_binaries(agent: str) -> None:
    """Exit 2, saying what to install, if a program this run needs is missing."""
    needed = ["snmpget", "prometheus-snmp-exporter", "scout-exporter"]
    needed += ["snmpsim-command-responder"] if agent == "snmpsim" else ["snmpd", "ip"]
    needed += ["snmpbulkwalk"] if agent == "responder" else []
    missing = missing_programs(needed)
    if missing:
        print(
            f"snmp_fleet: not installed: {', '.join(missing)}.\n"
            "Install Debian's `snmpd snmp prometheus-snmp-exporter iproute2` and the dev "
            "extras (snmpsim, pysmi) into the venv, or run `make bench`.",
            file=sys.stderr,
        )
        sys.exit(2)


def run(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> bool:
    """Set up, run and report the fleet; False if any scrape failed (the run is not valid)."""
    started = time.monotonic()
    make_fleet = {"responder": responder_fleet, "snmpd": snmpd_fleet, "snmpsim": snmpsim_fleet}
    fleet = make_fleet[args.agent](stack, workdir, args)
    devices = fleet.devices[: args.devices]
    random.Random(args.seed).shuffle(devices)  # neighbours in time: different ports
    config = workdir / "scout.yml"
    config.write_text(
        "auths:\n"
        # The agents are the benchmark's own: [any] keeps the scrape what it measured before.
        + "".join(
            f"  {c}: {{type: snmp, version: 2, community: {c}, allowed_targets: [any]}}\n"
            for c in fleet.communities
        )
    )
    port = free_port()
    scout_service = Service(
        name="scout-exporter",
        argv=[
            find_binary("scout-exporter"),
            f"--web.listen-address={HOST}:{port}",
            "--no-collector.host",
            f"--config.file={config}",
            "--log.level=error",
        ],
        ready_url=f"http://{HOST}:{port}/metrics",
        log_path=workdir / "scout.log",
    )
    stack.callback(scout_service.stop, 5)
    scout_service.start()
    scout_service.wait_ready(30)
    peer = None
    if args.peer_intervals:
        peer = stack.enter_context(SnmpExporter(workdir, communities=fleet.communities))
    assert scout_service.process is not None
    setup = time.monotonic() - started

    cores = os.cpu_count() or 1
    print("SNMP fleet benchmark: Scout /snmp, module if_mib, many devices on a schedule")
    print(
        f"machine: nproc={cores}, {platform.machine()}, Linux {platform.release()}, "
        f"python {platform.python_version()}"
    )
    print(f"peer:    {version_line([find_binary('prometheus-snmp-exporter'), '--version'])}")
    agent_version = (
        f"snmpsim {metadata.version('snmpsim')}"
        if args.agent == "snmpsim"
        else version_line(["snmpd", "-v"]).replace("NET-SNMP version:", "snmpd")
    )
    print(f"agent:   {agent_version}: {fleet.description}")
    print(
        f"fleet:   {len(devices)} devices, each scraped once per {args.interval:g} s at its own "
        f"offset (one every {args.interval / len(devices) * 1e3:.0f} ms), at most "
        f"{args.concurrency} in flight; set-up took {setup:.0f} s"
    )
    if args.interval != REFERENCE_INTERVAL or len(devices) != REFERENCE_DEVICES:
        print(
            f"note:    not the reference {REFERENCE_DEVICES} devices / 60 s: '{REFERENCE_LABEL}' "
            "columns scale the measured CPU per scrape linearly to that rate "
            f"({REFERENCE_DEVICES / REFERENCE_INTERVAL:.1f} scrapes/s)"
        )

    def scout_path(device: Device) -> str:
        query = {"target": device.target, "module": MODULE, "auth": device.community}
        return f"/snmp?{urllib.parse.urlencode(query)}"

    def peer_path(device: Device) -> str:
        module = SnmpExporter.module_name(MODULE, device.community)
        return f"/snmp?{urllib.parse.urlencode({'target': device.target, 'module': module})}"

    metrics_url = f"http://{HOST}:{port}/metrics"
    gc_before = gc_figures(metrics_url)
    scout_run = asyncio.run(
        run_fleet(
            "scout",
            f"http://{HOST}:{port}",
            [scout_path(d) for d in devices],
            scout_service.process.pid,
            fleet.agent_pids,
            args,
            args.intervals,
            args.interval,
        )
    )
    scout_run.gc = gc_over_run(gc_before, gc_figures(metrics_url))
    print_run(scout_run, args, len(devices), fleet.agent_label)
    peer_run = None
    if peer is not None:
        assert peer.service is not None
        assert peer.service.process is not None
        peer_run = asyncio.run(
            run_fleet(
                "snmp_exporter",
                peer.url,
                [peer_path(d) for d in devices],
                peer.service.process.pid,
                fleet.agent_pids,
                args,
                args.peer_intervals,
                args.peer_interval,
            )
        )
        print_run(peer_run, args, len(devices), fleet.agent_label)
    print_summary(scout_run, peer_run, args, len(devices))
    if fleet.check is not None:
        print(f"  agents checked: {fleet.check()}")

    print()
    print("CPU: user+system of the exporter process only, per interval, as a share of all")
    print(f"{cores} cores. 'cached': scrapes where Scout reused its per-device cache of names")
    print("and speeds (it still walks counters and status every time); its first interval")
    print("fills the caches. wait: how long a scrape waited for one of the client's")
    print(f"{args.concurrency} slots (the exporter's backlog); lag: how late this client itself")
    print("started a scrape (its own lag, not the exporter's). A scrape is past its deadline")
    print(f"when it failed or answered more than {SCRAPE_DEADLINE:g} s after it was due, as")
    print("Prometheus, which sends each scrape on time, would count it.")
    return not any(r is not None and r.failed for r in (scout_run, peer_run))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_binaries(args.agent)
    signal.signal(signal.SIGTERM, raise_interrupt)
    # Ctrl-C even when started in the background, where SIGINT comes in ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="scout-snmp-fleet-") as tmp:
        try:
            with ExitStack() as stack:  # stops every peer, also on errors and Ctrl-C
                valid = run(args, stack, Path(tmp))
        except (BenchmarkError, SnmpPeerError, StackError, OSError) as exc:
            print(f"snmp_fleet: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("snmp_fleet: interrupted; peers stopped", file=sys.stderr)
            return 130
    if not valid:
        print("snmp_fleet: some scrapes failed, so these figures are not valid", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
