"""Walk throughput of Scout's SNMP client against gufo-snmp, net-snmp and snmp_exporter.

The SNMP collector's costliest read is a whole ifTable + ifXTable. This script
starts its own net-snmp ``snmpd`` on a free 127.0.0.1 port and walks both
tables, several rounds, with:

* Scout's client, every column in lock-step (one varbind per column in each
  GetBulk), at max-repetitions 25 and 50, and, to show what the lock-step buys,
  the two tables as two roots;
* gufo-snmp (Rust core, asyncio), one GetBulk walk per table;
* net-snmp's ``snmpbulkwalk``, one process per table (its time includes
  starting the process, which is how people use it);
* Debian's ``prometheus-snmp-exporter``, if installed, scraping an ``if_mib``
  module that walks the same tables (its time includes building the exposition).

It prints OIDs per second (median round) and the ratio of Scout's client at
max-repetitions 25 to each. Nothing here asserts on timings.

A machine has few interfaces; ``--netns`` creates a network namespace with
``--pairs`` veth pairs (150 give 300 ifIndex rows, both ends in the namespace),
runs snmpd and this script inside it with ``ip netns exec`` and always deletes
the namespace afterwards. It needs root.

net-snmp answers at most 100 varbinds per GetBulk by default; ``--getbulk-limit``
sets its ``maxGetbulkResponses`` to see how the clients do with agents that
allow more.

Usage: python benchmarks/snmp_walk.py [--rounds N] [--netns [--pairs N]] [--getbulk-limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"  # the only address this script talks to (inside the namespace with --netns)
IF_TABLE = "1.3.6.1.2.1.2.2.1"
IF_X_TABLE = "1.3.6.1.2.1.31.1.1.1"
# Every column the two tables define; columns an agent does not implement end at once.
IF_COLUMNS = [f"{IF_TABLE}.{c}" for c in range(1, 23)] + [f"{IF_X_TABLE}.{c}" for c in range(1, 20)]
NET_SNMP_ENV = {**os.environ, "MIBS": "", "MIBDIRS": ""}


class BenchmarkError(Exception):
    pass


@dataclass
class Result:
    label: str
    oids: int = 0
    walls: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.oids / statistics.median(self.walls) if self.walls else 0.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def snmpd(directory: Path, getbulk_limit: int | None) -> Iterator[int]:
    binary = shutil.which("snmpd") or "/usr/sbin/snmpd"
    if not Path(binary).exists():
        raise BenchmarkError("snmpd is not installed (apt-get install snmpd snmp)")
    port = free_udp_port()
    persistent = directory / "persistent"
    persistent.mkdir()
    config = directory / "snmpd.conf"
    lines = [
        f"[snmp] persistentDir {persistent}",
        f"agentAddress udp:{HOST}:{port}",
        f"rocommunity public {HOST}",
    ]
    if getbulk_limit is not None:
        lines.append(f"maxGetbulkResponses {getbulk_limit}")
    config.write_text("\n".join(lines) + "\n")
    with (directory / "snmpd.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, "-f", "-Lo", "-C", "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**NET_SNMP_ENV, "SNMP_PERSISTENT_DIR": str(persistent)},
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise BenchmarkError(f"snmpd exited with {proc.returncode}; see {directory}")
            probe = subprocess.run(
                ["snmpget", "-v2c", "-c", "public", "-r0", "-t0.3", f"{HOST}:{port}",
                 "1.3.6.1.2.1.1.5.0"],
                capture_output=True,
                env=NET_SNMP_ENV,
                check=False,
            )  # fmt: skip
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise BenchmarkError("snmpd did not answer within 20 s")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure(clients: list[tuple[Result, Callable[[], Awaitable[int]]]], rounds: int) -> None:
    """Warm every client up, then time them round-robin.

    Round-robin because snmpd reloads its interface cache every few seconds;
    interleaving spreads those slow walks over every client instead of one.
    """
    for result, walk in clients:
        result.oids = await walk()
    for _ in range(rounds):
        for result, walk in clients:
            started = time.perf_counter()
            result.oids = await walk()
            result.walls.append(time.perf_counter() - started)


def scout(port: int, roots: Sequence[str], repetitions: int) -> Callable[[], Awaitable[int]]:
    from exporter.clients.snmp import Credentials, SnmpSession, parse_oid

    oids = [parse_oid(root) for root in roots]

    async def walk() -> int:
        async with SnmpSession(HOST, port, Credentials(2, community="public")) as session:
            walked = await session.bulk_walk(oids, max_repetitions=repetitions)
        return sum(len(rows) for rows in walked.values())

    return walk


def gufo(port: int, repetitions: int) -> Callable[[], Awaitable[int]]:
    from gufo.snmp.aio import SnmpSession

    async def walk() -> int:
        count = 0
        async with SnmpSession(
            addr=HOST, port=port, community="public", timeout=5, max_repetitions=repetitions
        ) as session:
            for table in (IF_TABLE, IF_X_TABLE):
                async for _ in session.getbulk(table):
                    count += 1
        return count

    return walk


def snmpbulkwalk(port: int, repetitions: int) -> Callable[[], Awaitable[int]]:
    async def walk() -> int:
        count = 0
        for table in (IF_TABLE, IF_X_TABLE):
            proc = await asyncio.create_subprocess_exec(
                "snmpbulkwalk", "-On", "-Oq", f"-Cr{repetitions}", "-v2c", "-c", "public",
                f"{HOST}:{port}", table,
                stdout=asyncio.subprocess.PIPE,
                env=NET_SNMP_ENV,
            )  # fmt: skip
            out, _ = await proc.communicate()
            if proc.returncode:
                raise BenchmarkError(f"snmpbulkwalk exited with {proc.returncode}")
            count += sum(1 for line in out.splitlines() if line.startswith(b"."))
        return count

    return walk


# snmp_exporter 0.21's single-file format: auth inside the module, numeric OIDs.
_IF_COUNTERS = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
_IF_X_COUNTERS = set(range(2, 14))
_STRINGS = {(IF_TABLE, 2), (IF_X_TABLE, 1), (IF_X_TABLE, 18)}


def snmp_exporter_config(port: int, repetitions: int) -> str:
    metrics = []
    for table, columns, counters in (
        (IF_TABLE, range(1, 22), _IF_COUNTERS),
        (IF_X_TABLE, range(1, 20), _IF_X_COUNTERS),
    ):
        for column in columns:
            if (table, column) in _STRINGS:
                kind = "DisplayString"
            elif table == IF_TABLE and column == 6:
                kind = "PhysAddress48"
            else:
                kind = "counter" if column in counters else "gauge"
            name = f"if_{'x_' if table == IF_X_TABLE else ''}{column}"
            metrics.append(
                f"  - name: {name}\n    oid: {table}.{column}\n    type: {kind}\n"
                "    indexes:\n    - labelname: ifIndex\n      type: gauge\n"
            )
    return (
        "if_mib:\n"
        f"  walk: [{IF_TABLE}, {IF_X_TABLE}]\n"
        "  version: 2\n"
        f"  max_repetitions: {repetitions}\n"
        "  retries: 1\n  timeout: 10s\n"
        "  auth:\n    community: public\n"
        "  metrics:\n" + "".join(metrics)
    )  # fmt: skip


@contextmanager
def snmp_exporter(directory: Path, port: int, repetitions: int) -> Iterator[str | None]:
    binary = shutil.which("prometheus-snmp-exporter") or shutil.which("snmp_exporter")
    if binary is None:
        yield None
        return
    config = directory / "snmp.yml"
    config.write_text(snmp_exporter_config(port, repetitions))
    web = free_tcp_port()
    with (directory / "snmp_exporter.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--web.listen-address={HOST}:{web}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{web}/", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchmarkError(
                        f"snmp_exporter did not start; see {directory / 'snmp_exporter.log'}"
                    ) from None
                time.sleep(0.1)
        yield f"http://{HOST}:{web}/snmp?module=if_mib&target={HOST}:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def exporter_scrape(url: str) -> Callable[[], Awaitable[int]]:
    def scrape() -> int:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read().decode()
        for line in body.splitlines():
            if line.startswith("snmp_scrape_pdus_returned "):
                return int(float(line.split()[1]))
        raise BenchmarkError("snmp_exporter's answer has no snmp_scrape_pdus_returned")

    async def walk() -> int:
        return await asyncio.to_thread(scrape)

    return walk


async def run(args: argparse.Namespace) -> None:
    rounds = args.rounds
    with tempfile.TemporaryDirectory(prefix="scout-snmp-walk-") as tmp:
        directory = Path(tmp)
        with snmpd(directory, args.getbulk_limit) as port:
            interfaces = len(await scout_rows(port))
            clients = [
                (Result("scout, columns, r=25"), scout(port, IF_COLUMNS, 25)),
                (Result("scout, columns, r=50"), scout(port, IF_COLUMNS, 50)),
                (Result("scout, 2 table roots, r=25"), scout(port, [IF_TABLE, IF_X_TABLE], 25)),
            ]
            try:
                clients.append((Result("gufo-snmp, r=25"), gufo(port, 25)))
            except ImportError:
                print("gufo-snmp is not installed; skipped")
            clients.append(
                (Result("snmpbulkwalk, r=25", note="2 processes"), snmpbulkwalk(port, 25))
            )
            with snmp_exporter(directory, port, 25) as url:
                if url is None:
                    print("prometheus-snmp-exporter is not installed; skipped")
                else:
                    note = "OIDs = snmp_scrape_pdus_returned"
                    clients.append(
                        (Result("snmp_exporter 0.21, r=25", note=note), exporter_scrape(url))
                    )
                await measure(clients, rounds)
    report([result for result, _ in clients], interfaces, args)


async def scout_rows(port: int) -> list[object]:
    from exporter.clients.snmp import Credentials, SnmpSession, parse_oid

    async with SnmpSession(HOST, port, Credentials(2, community="public")) as session:
        walked = await session.bulk_walk([parse_oid(f"{IF_TABLE}.1")], max_repetitions=50)
    return [row for rows in walked.values() for row in rows]


def report(results: list[Result], interfaces: int, args: argparse.Namespace) -> None:
    ours = results[0]
    limit = args.getbulk_limit if args.getbulk_limit is not None else "default (100)"
    print(f"SNMP walk of ifTable + ifXTable over loopback, {args.rounds} rounds after a warm-up")
    print(f"interfaces: {interfaces}; snmpd maxGetbulkResponses: {limit}")
    print()
    header = (
        f"{'client':<30} {'OIDs':>7} {'median':>9} {'min':>9} {'OIDs/s':>9} {'scout r25 /':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = f"{ours.rate / r.rate:.2f}x" if r.rate else "-"
        print(
            f"{r.label:<30} {r.oids:>7} {statistics.median(r.walls) * 1000:>7.1f}ms"
            f" {min(r.walls) * 1000:>7.1f}ms {r.rate:>9.0f} {ratio:>12}"
            + (f"  ({r.note})" if r.note else "")
        )
    print()
    print("Ratios above 1x mean Scout's client walks faster than that client.")


@contextmanager
def namespace(pairs: int) -> Iterator[str]:
    """A network namespace with ``pairs`` veth pairs, deleted on the way out."""
    if shutil.which("ip") is None:
        raise BenchmarkError("--netns needs iproute2's ip")
    name = f"scout-snmp-walk-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        links = "".join(f"link add veth{n} type veth peer name veth{n}p\n" for n in range(pairs))
        subprocess.run(["ip", "-n", name, "-batch", "-"], input=links.encode(), check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        # Anything still running inside would keep the namespace alive.
        pids = subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], check=False)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="measured walks per client")
    parser.add_argument("--netns", action="store_true", help="run in a namespace with veths")
    parser.add_argument("--pairs", type=int, default=150, help="veth pairs with --netns")
    parser.add_argument("--getbulk-limit", type=int, default=None, help="snmpd maxGetbulkResponses")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.netns and not args.inside:
            with namespace(args.pairs) as name:
                forwarded = [
                    a for a in (argv if argv is not None else sys.argv[1:]) if a != "--netns"
                ]
                command = ["ip", "netns", "exec", name, sys.executable, __file__, "--inside"]
                return subprocess.run([*command, *forwarded], check=False).returncode
        asyncio.run(run(args))
    except BenchmarkError as exc:
        print(f"snmp_walk: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(
            f"snmp_walk: {' '.join(map(str, exc.cmd))} failed ({exc.returncode})", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print("snmp_walk: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
