"""Scrape cost of Scout's ``/snmp`` (module if_mib) against prometheus-snmp-exporter.

The question from anyone replacing snmp_exporter: what does one device's if_mib
scrape cost, end to end, over HTTP, as Prometheus sees it? This script starts,
at the same time and on free 127.0.0.1 ports:

* ``scout-exporter`` (host collector off), with a config holding the v2c auths
  of the simulated devices;
* Debian's ``prometheus-snmp-exporter`` 0.21 with the generator's if_mib module
  (``tests/peers/snmp.py``'s ``SnmpExporter``: one copy per community);

and these agents, each scraped by both exporters:

* ``snmpd``: net-snmp's snmpd in a network namespace with 150 veth pairs (301
  ifTable rows), reached over a veth from the root namespace. It answers tens of
  thousands of OIDs per second, so this is the speed reference. Without root
  (no namespace) it falls back to snmpd on loopback with the machine's few
  interfaces, and says so;
* ``sim48`` and ``sim260``: snmpsim devices with 48 and 260 interfaces (varied
  speeds, non-ASCII aliases, sparse indexes, growing counters). snmpsim is
  pure Python and answers only some thousands of OIDs per second, so there the
  agent dominates the wall time; they are here for scale and realism.

Per agent, after a warm-up, both exporters are scraped round-robin (rotating
who goes first) with Prometheus's headers (text format, gzip, a 10 s scrape
timeout), over kept-alive connections. Reported per exporter: wall time per
scrape (median, p90), what the exporter itself says the SNMP part took, the
series count, response size, the CPU seconds of the exporter's process per
scrape (user+system over the measured scrapes, from psutil) and its resident
memory after the agent's scrapes. The agent's own CPU is not counted.

Scout keeps a per-device cache of the columns that rarely change (ifDescr,
ifName, ifAlias, speeds...), checked each scrape against sysUpTime, ifNumber,
ifTableLastChange and ifLastChange, so its steady-state scrapes walk only the
counters and status columns, while snmp_exporter walks everything every time.
That is the design, but to let readers judge both, Scout's cold-cache scrape
is measured too: each cold sample is the first scrape of a "new" device (the
same agent under a fresh auth alias, so a new session and an empty cache),
exactly what Scout does on a device's first scrape or after its cache expires
(every 15 minutes at most).

Ratios are Scout divided by snmp_exporter: below 1x means Scout costs less.
The issue's targets (wall <= 0.8x, CPU <= 1.5x) are printed next to them and
never asserted: timings depend on the machine and its load.

Needs root for the namespace (iproute2), Debian's ``snmpd snmp
prometheus-snmp-exporter``, and snmpsim in the venv (for sim48 and sim260).

Usage: python benchmarks/snmp_scrape.py [--scrapes N] [--sim-scrapes N] [--cold N]
       [--warmup N] [--agents snmpd,sim48,sim260] [--pairs N]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/snmp_scrape.py` from anywhere
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
    RealSnmpd,
    SnmpExporter,
    SnmpPeerError,
    SnmpsimDevices,
)

HOST = "127.0.0.1"  # the exporters listen here; agents are here or in our own namespace
MODULE = "if_mib"
READY_TIMEOUT_SECONDS = 30.0
HTTP_TIMEOUT_SECONDS = 60.0
SIM_DEVICES = {"sim48": 48, "sim260": 260}
AGENTS = ("snmpd", *SIM_DEVICES)


# Each exporter's own account of the SNMP part of the scrape.
SNMP_SECONDS = {
    "scout": re.compile(rb"^scout_snmp_scrape_duration_seconds ([0-9.e+-]+)$", re.M),
    "snmp_exporter": re.compile(rb"^snmp_scrape_duration_seconds ([0-9.e+-]+)$", re.M),
}
SCOUT_SUCCESS = f'scout_snmp_module_success{{module="{MODULE}"}} 1\n'.encode()
SCOUT_PDUS = re.compile(rb"^scout_snmp_pdus_sent ([0-9.e+-]+)$", re.M)
SCOUT_CACHE_USED = f'scout_snmp_cache_used{{module="{MODULE}"}} 1\n'.encode()


class BenchmarkError(Exception):
    pass


@dataclass
class Agent:
    name: str  # snmpd, sim48, sim260
    description: str
    target: str
    community: str
    scrapes: int


@dataclass
class Exporter:
    label: str  # "scout" or "snmp_exporter"
    port: int
    pid: int
    conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Scrape:
    wall: float
    snmp_seconds: float
    series: int
    wire_bytes: int
    body_bytes: int
    pdus: int | None = None
    cache_used: bool | None = None


@dataclass
class Row:
    label: str
    scrapes: list[Scrape] = field(default_factory=list)
    cpu_seconds: float = 0.0
    rss_bytes: int = 0
    peak_rss_bytes: int = 0

    @property
    def walls(self) -> list[float]:
        return [s.wall for s in self.scrapes]

    @property
    def cpu_per_scrape(self) -> float:
        return self.cpu_seconds / len(self.scrapes)


@dataclass
class AgentResult:
    agent: Agent
    scout: Row
    cold: Row
    peer: Row


def scout_path(agent: Agent, auth: str) -> str:
    query = urllib.parse.urlencode({"target": agent.target, "module": MODULE, "auth": auth})
    return f"/snmp?{query}"


def peer_path(agent: Agent) -> str:
    module = SnmpExporter.module_name(MODULE, agent.community)
    return f"/snmp?{urllib.parse.urlencode({'target': agent.target, 'module': module})}"


def scout_auth(agent: Agent) -> str:
    return "public_v2" if agent.community == "public" else agent.community


def cold_auth(agent: Agent, i: int) -> str:
    return f"cold_{agent.name}_{i}"


def scrape(exporter: Exporter, path: str) -> Scrape:
    """One scrape over a kept-alive connection; checks it succeeded."""
    for attempt in (1, 2):
        if exporter.conn is None:
            exporter.conn = http.client.HTTPConnection(HOST, exporter.port, HTTP_TIMEOUT_SECONDS)
        started = time.perf_counter()
        try:
            exporter.conn.request("GET", path, headers=SCRAPE_HEADERS)
            response = exporter.conn.getresponse()
            payload = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # An idle keep-alive connection was closed; Prometheus reconnects too.
            exporter.close()
            if attempt == 2:
                raise
            continue
        wall = time.perf_counter() - started
        if response.will_close:
            exporter.close()
        gzipped = response.getheader("Content-Encoding", "") == "gzip"
        body = gzip.decompress(payload) if gzipped else payload
        if response.status != 200:
            raise BenchmarkError(
                f"{exporter.label}: HTTP {response.status} for {path}: {body[:300]!r}"
            )
        series = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
        if series == 0:
            raise BenchmarkError(f"{exporter.label}: no series in the answer to {path}")
        pdus = cache_used = None
        if exporter.label == "scout":
            if SCOUT_SUCCESS not in body:
                raise BenchmarkError(
                    f"scout: scout_snmp_module_success is not 1 for {path}; the scrape failed"
                )
            found = SCOUT_PDUS.search(body)
            pdus = int(float(found.group(1))) if found else None
            cache_used = SCOUT_CACHE_USED in body
        snmp = SNMP_SECONDS[exporter.label].search(body)
        return Scrape(
            wall,
            float(snmp.group(1)) if snmp else float("nan"),
            series,
            len(payload),
            len(body),
            pdus,
            cache_used,
        )
    raise AssertionError("unreachable")


Job = tuple[Row, Exporter, str]


def rounds(jobs: Sequence[Job], count: int) -> Iterator[Job]:
    # Round-robin, rotating who goes first, so machine noise and the agent's own
    # cache reloads fall on both exporters alike.
    for i in range(count):
        shift = i % len(jobs)
        yield from [*jobs[shift:], *jobs[:shift]]


def measure(agent: Agent, scout: Exporter, peer: Exporter, warmup: int, cold: int) -> AgentResult:
    result = AgentResult(
        agent, Row("scout, cached"), Row("scout, cold cache"), Row("snmp_exporter")
    )
    jobs = [
        (result.scout, scout, scout_path(agent, scout_auth(agent))),
        (result.peer, peer, peer_path(agent)),
    ]
    for _, exporter, path in rounds(jobs, warmup):
        scrape(exporter, path)
    before = {e.label: cpu_seconds(e.pid) for e in (scout, peer)}
    for row, exporter, path in rounds(jobs, agent.scrapes):
        row.scrapes.append(scrape(exporter, path))
    for row, exporter, _ in jobs:
        row.cpu_seconds = cpu_seconds(exporter.pid) - before[exporter.label]
    # Cold: the first scrape of a device Scout has not seen (a fresh auth alias of
    # the same community: new session, empty cache), back to back.
    before_cold = cpu_seconds(scout.pid)
    for i in range(cold):
        result.cold.scrapes.append(scrape(scout, scout_path(agent, cold_auth(agent, i))))
    result.cold.cpu_seconds = cpu_seconds(scout.pid) - before_cold
    for row, exporter in ((result.scout, scout), (result.cold, scout), (result.peer, peer)):
        row.rss_bytes, row.peak_rss_bytes = memory(exporter.pid)
    if any(s.cache_used for s in result.cold.scrapes):
        raise BenchmarkError(f"scout used a cache on a cold scrape of {agent.name}")
    return result


def scout_config(agents: Sequence[Agent], cold: int) -> str:
    lines = ["auths:"]
    for agent in agents:
        auths = [cold_auth(agent, i) for i in range(cold)]
        if agent.community != "public":
            auths.insert(0, agent.community)
        # The agents are the benchmark's own: [any] keeps the scrape what it measured before.
        settings = f"version: 2, community: {agent.community}, allowed_targets: [any]"
        lines += [f"  {a}: {{type: snmp, {settings}}}" for a in auths]
    return "\n".join(lines) + "\n"


def fmt_ratio(mine: float, theirs: float) -> str:
    return f"{mine / theirs:.2f}x" if theirs else "n/a"


def verdict(ratio: float, target: float) -> str:
    return f"target <= {target}x: {'met' if ratio <= target else 'MISSED'}"


def report(results: Sequence[AgentResult], args: argparse.Namespace, notes: Sequence[str]) -> None:
    sched = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    snmpsim = metadata.version("snmpsim") if any(r.agent.name != "snmpd" for r in results) else "-"
    print("SNMP scrape benchmark: Scout /snmp vs prometheus-snmp-exporter, module if_mib")
    print(
        f"machine: nproc={os.cpu_count()} (usable {sched}), {platform.machine()}, "
        f"Linux {platform.release()}, load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"python:  {platform.python_version()} ({sys.executable})")
    print(f"peer:    {version_line([find_binary('prometheus-snmp-exporter'), '--version'])}")
    print(f"agents:  {version_line(['snmpd', '-v']).replace('NET-SNMP version:', 'snmpd')}, "
          f"snmpsim {snmpsim}")  # fmt: skip
    print(
        f"scrapes: warm-up {args.warmup} each, then round-robin; cold: {args.cold} first "
        "scrapes of new devices"
    )
    for note in notes:
        print(f"note:    {note}")
    header = (
        f"{'exporter':<18} {'n':>3} {'series':>6} {'wire KiB':>8} {'body KiB':>8} "
        f"{'wall med ms':>11} {'wall p90 ms':>11} {'snmp med ms':>11} {'CPU ms/scr':>10} "
        f"{'RSS MiB':>7} {'peak MiB':>8}"
    )
    for r in results:
        print()
        print(f"agent {r.agent.name}: {r.agent.description} at {r.agent.target}")
        print(header)
        print("-" * len(header))
        for row in (r.scout, r.cold, r.peer):
            s = row.scrapes
            print(
                f"{row.label:<18} {len(s):>3} {s[-1].series:>6} "
                f"{statistics.median(x.wire_bytes for x in s) / 1024:>8.1f} "
                f"{statistics.median(x.body_bytes for x in s) / 1024:>8.1f} "
                f"{statistics.median(row.walls) * 1e3:>11.1f} {p90(row.walls) * 1e3:>11.1f} "
                f"{statistics.median(x.snmp_seconds for x in s) * 1e3:>11.1f} "
                f"{row.cpu_per_scrape * 1e3:>10.1f} "
                + (  # one process: its memory is shown once, on the cached row
                    f"{'-':>7} {'-':>8}"
                    if row is r.cold
                    else f"{row.rss_bytes / 2**20:>7.1f} {row.peak_rss_bytes / 2**20:>8.1f}"
                )
            )
        pdus = [x.pdus for x in r.scout.scrapes if x.pdus is not None]
        cold_pdus = [x.pdus for x in r.cold.scrapes if x.pdus is not None]
        cached = sum(1 for x in r.scout.scrapes if x.cache_used)
        if pdus and cold_pdus:
            print(
                f"scout PDUs per scrape: {statistics.median(pdus):.0f} cached, "
                f"{statistics.median(cold_pdus):.0f} cold; cache used on {cached} of "
                f"{len(r.scout.scrapes)} steady scrapes"
            )
        peer = r.peer
        for row in (r.scout, r.cold):
            wall = statistics.median(row.walls) / statistics.median(peer.walls)
            cpu = row.cpu_per_scrape / peer.cpu_per_scrape if peer.cpu_seconds else float("inf")
            print(
                f"  {row.label + ' / snmp_exporter':<34} "
                f"wall median {wall:.2f}x ({verdict(wall, 0.8)}), "
                f"wall p90 {fmt_ratio(p90(row.walls), p90(peer.walls))}, "
                f"CPU/scrape {cpu:.2f}x ({verdict(cpu, 1.5)})"
                + (f", RSS {fmt_ratio(row.rss_bytes, peer.rss_bytes)}" if row is r.scout else "")
            )
    print()
    print("wall: HTTP request to last byte, as Prometheus sees it; snmp: the exporter's own")
    print("scrape duration metric (SNMP work, before rendering and compressing). CPU: user+")
    print("system of the exporter process over the measured scrapes, divided by their number;")
    print("the agent's CPU is not counted. RSS is read after each agent's scrapes and grows")
    print("with the devices the exporter has seen. 'scout, cached' is Scout's steady state: it")
    print("walks only counters and status, reusing cached names and speeds (checked every")
    print("scrape), while snmp_exporter re-walks everything every time; 'scout, cold cache' is")
    print("the first scrape of a device Scout has not seen (new session, empty cache).")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--scrapes", type=int, default=30, metavar="N",
        help="measured scrapes per exporter of snmpd (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--sim-scrapes", type=int, default=15, metavar="N",
        help="measured scrapes per exporter of each snmpsim device, which is slow (default 15)",
    )  # fmt: skip
    parser.add_argument(
        "--cold", type=int, default=5, metavar="N",
        help="Scout cold-cache scrapes per agent (default 5)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, default=3, metavar="N",
        help="unmeasured scrapes per exporter and agent first (default 3)",
    )  # fmt: skip
    parser.add_argument(
        "--agents", default=",".join(AGENTS),
        help=f"comma-separated, from {', '.join(AGENTS)} (default all)",
    )  # fmt: skip
    parser.add_argument(
        "--pairs", type=int, default=150, metavar="N",
        help="veth pairs in snmpd's namespace: 2N+1 interfaces (default 150)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    unknown = sorted(set(args.agents) - set(AGENTS))
    if unknown or not args.agents:
        parser.error(f"--agents: unknown {', '.join(unknown) or '(none given)'}")
    if min(args.scrapes, args.sim_scrapes, args.cold) < 2:
        parser.error("--scrapes, --sim-scrapes and --cold must be at least 2 (p90)")
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (Scout's first scrape fills its cache)")
    return args


def check_binaries(agents: Sequence[str]) -> None:
    """Exit 2, saying what to install, if a program this run needs is missing."""
    needed = ["snmpget", "prometheus-snmp-exporter", "scout-exporter"]
    if "snmpd" in agents:
        needed += ["snmpd", "ip"] if os.geteuid() == 0 else ["snmpd"]
    if set(agents) & set(SIM_DEVICES):
        needed.append("snmpsim-command-responder")
    missing = missing_programs(needed)
    if missing:
        print(
            f"snmp_scrape: not installed: {', '.join(missing)}.\n"
            "Install Debian's `snmpd snmp prometheus-snmp-exporter iproute2` and the dev "
            "extras (snmpsim, pysmi) into the venv, or run `make bench`.",
            file=sys.stderr,
        )
        sys.exit(2)


def run(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> None:
    notes: list[str] = []
    agents: list[Agent] = []
    if "snmpd" in args.agents:
        if os.geteuid() == 0:
            netns = stack.enter_context(NetnsSnmpd(workdir, args.pairs))
            agents.append(
                Agent(
                    "snmpd",
                    f"net-snmp snmpd in a network namespace, {netns.if_rows} interfaces",
                    netns.target,
                    "public",
                    args.scrapes,
                )
            )
        else:
            agent = stack.enter_context(RealSnmpd(workdir))
            count = len(psutil.net_if_stats())
            agents.append(
                Agent("snmpd", f"snmpd on loopback, ~{count} interfaces", agent.target,
                      "public", args.scrapes)
            )  # fmt: skip
            notes.append(
                "not root: no network namespace, so snmpd runs on loopback with this machine's "
                f"{count} interfaces instead of {2 * args.pairs + 1}; the snmpd row is small"
            )
    sims = [name for name in args.agents if name in SIM_DEVICES]
    if sims:
        devices = stack.enter_context(
            SnmpsimDevices(workdir, {name: SIM_DEVICES[name] for name in sims})
        )
        for name in sims:
            agents.append(
                Agent(
                    name,
                    f"snmpsim device, {SIM_DEVICES[name]} interfaces",
                    devices.target,
                    name,
                    args.sim_scrapes,
                )
            )
    peer = stack.enter_context(
        SnmpExporter(workdir, communities=tuple(dict.fromkeys(a.community for a in agents)))
    )
    config = workdir / "scout.yml"
    config.write_text(scout_config(agents, args.cold))
    port = free_port()
    scout_service = Service(
        name="scout-exporter",
        argv=[
            find_binary("scout-exporter"),
            f"--web.listen-address={HOST}:{port}",
            "--no-collector.host",
            f"--config.file={config}",
            "--log.level=warn",
        ],
        ready_url=f"http://{HOST}:{port}/metrics",
        log_path=workdir / "scout.log",
    )
    stack.callback(scout_service.stop, 5)
    scout_service.start()
    scout_service.wait_ready(READY_TIMEOUT_SECONDS)
    assert scout_service.process is not None
    assert peer.service is not None
    assert peer.service.process is not None
    scout = Exporter("scout", port, scout_service.process.pid)
    reference = Exporter("snmp_exporter", peer.port, peer.service.process.pid)
    stack.callback(scout.close)
    stack.callback(reference.close)
    results = [measure(agent, scout, reference, args.warmup, args.cold) for agent in agents]
    report(results, args, notes)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_binaries(args.agents)
    signal.signal(signal.SIGTERM, raise_interrupt)
    # Ctrl-C even when started in the background, where SIGINT comes in ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="scout-snmp-scrape-") as tmp:
        try:
            with ExitStack() as stack:  # stops every peer, also on errors and Ctrl-C
                run(args, stack, Path(tmp))
        except (BenchmarkError, SnmpPeerError, StackError, OSError) as exc:
            print(f"snmp_scrape: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("snmp_scrape: interrupted; peers stopped", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
