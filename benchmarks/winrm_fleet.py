"""WinRM: the client library's cost per scrape, and Scout's ``/winrm`` on 200 hosts every 60 s.

Two questions of issue 15, answered on the machine it runs on.

``clients``: which WS-Man client should ``/winrm`` use? pywinrm 0.5 and pypsrp
0.9 each run the same exchange a scrape makes (Command, Send of the script on
stdin, Receives until Done, Signal, on a shell kept open) ``--runs`` times
against one simulated host, Basic over HTTPS; measured are this process's CPU
(user+system) and the wall time per scrape, after a warm-up.

``fleet``: can one exporter on 2 cores scrape ``--hosts`` (200) Windows servers
every ``--interval`` (60 s)? Issue targets: under 25% of the 2 cores and under
300 MB resident. The hosts are WS-Man listeners over HTTPS in one child process
(``tests.exporter.targets.winrm.wsman_server``), each answering the full
scrape script (every collector, five services, three processes), each of the
three Receives of a scrape after ``--receive-delay`` seconds (0.5, so 1.5 s a
scrape: about what PowerShell and its CIM queries take on a real server; it
occupies a worker thread, not CPU). The exporter is the real
``scout-exporter`` process. The client scrapes every host once per interval at
its own offset, offsets spread evenly, as Prometheus does, and checks
``scout_winrm_success 1``; a run with failed scrapes says so and exits 1.

Measured: the exporter process's CPU seconds per interval as a share of all
the machine's cores, per scrape in ms, its resident memory (now and peak) and
threads. The first interval is the cold one (every host's shell is created and
TLS-handshaken); the later ones reuse the shells. The hosts' process and this
client are not counted.

``clients`` needs pywinrm, which the dev extra installs (``pip install -e '.[dev]'``,
as ``make bench`` does); without it the run stops at once and says so.

Usage: python benchmarks/winrm_fleet.py [clients|fleet|all] [--hosts N] [--interval S]
       [--intervals N] [--runs N] [--receive-delay S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/winrm_fleet.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    SCRAPE_HEADERS,
    cpu_seconds,
    memory,
    p90,
    raise_interrupt,
)
from exporter.clients.winrm import Endpoint, PypsrpOpener, RemoteShell, WinrmError  # noqa: E402
from exporter.targets.winrm.modules import WinrmModule  # noqa: E402
from exporter.targets.winrm.script import bootstrap_arguments, build_script  # noqa: E402
from scripts.localstack import exporter_service, free_port  # noqa: E402
from tests.peers.winrm import PASSWORD, USERNAME, WindowsHosts  # noqa: E402

TARGET_SHARE = 0.25
TARGET_RSS = 300 * 10**6
SUCCESS = "scout_winrm_success 1"


# ------------------------------------------------------------------ clients


def _ca_file(hosts: WindowsHosts) -> str:
    return str(next(hosts.directory.glob("scout-test-ca.crt")))


SCRIPT = build_script(WinrmModule()).encode("ascii")


def _pypsrp_shell(target: str, ca_file: str) -> RemoteShell:
    host, port = target.rsplit(":", 1)
    endpoint = Endpoint(host, int(port), True, "basic", USERNAME, PASSWORD, Path(ca_file))
    return PypsrpOpener().open(endpoint, time.monotonic() + 30)


def _pywinrm_protocol(target: str, ca_file: str, **timeouts: int) -> Any:
    from winrm.protocol import Protocol

    return Protocol(
        f"https://{target}/wsman",
        transport="basic",
        username=USERNAME,
        password=PASSWORD,
        ca_trust_path=ca_file,
        server_cert_validation="validate",
        proxy=None,
        **timeouts,
    )


def pypsrp_runs(target: str, ca_file: str, runs: int) -> list[float]:
    shell = _pypsrp_shell(target, ca_file)
    walls = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            result = shell.run(
                "powershell.exe", bootstrap_arguments(), SCRIPT, time.monotonic() + 30
            )
            assert b"SCOUT-WINRM-END" in result.stdout
            walls.append(time.perf_counter() - started)
    finally:
        shell.close()
    return walls


def pywinrm_runs(target: str, ca_file: str, runs: int) -> list[float]:
    protocol = _pywinrm_protocol(target, ca_file)
    shell_id = protocol.open_shell(codepage=65001)
    walls = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            command_id = protocol.run_command(shell_id, "powershell.exe", bootstrap_arguments())
            protocol.send_command_input(shell_id, command_id, SCRIPT, end=True)
            stdout, _, _ = protocol.get_command_output(shell_id, command_id)
            protocol.cleanup_command(shell_id, command_id)
            assert b"SCOUT-WINRM-END" in stdout
            walls.append(time.perf_counter() - started)
    finally:
        protocol.close_shell(shell_id)
    return walls


SLOW_HOST_DELAY = 6.0
SLOW_DEADLINE = 2.0


def pypsrp_slow(target: str, ca_file: str) -> float:
    """Seconds a call for a 2 s deadline holds its thread against a host answering in 6 s."""
    shell = _pypsrp_shell(target, ca_file)
    started = time.monotonic()
    with contextlib.suppress(WinrmError):
        shell.run("powershell.exe", bootstrap_arguments(), SCRIPT, started + SLOW_DEADLINE)
    held = time.monotonic() - started
    shell.close()
    return held


def pywinrm_slow(target: str, ca_file: str) -> float:
    # The tightest timeouts it accepts for a 2 s deadline (read must exceed operation).
    protocol = _pywinrm_protocol(target, ca_file, operation_timeout_sec=1, read_timeout_sec=2)
    shell_id = protocol.open_shell()
    started = time.monotonic()
    try:
        command_id = protocol.run_command(shell_id, "powershell.exe", bootstrap_arguments())
        protocol.send_command_input(shell_id, command_id, SCRIPT, end=True)
        protocol.get_command_output(shell_id, command_id)
    except Exception:
        pass
    return time.monotonic() - started


def compare_clients(args: argparse.Namespace, workdir: Path) -> None:
    hosts = WindowsHosts(workdir / "clients", hosts=1)
    hosts.start()
    try:
        [target] = hosts.targets
        ca_file = _ca_file(hosts)
        print(f"\nclients: {args.runs} scrapes each, one shell, Basic over HTTPS, {target}")
        print("| client | CPU ms per scrape | wall median / p90 ms |")
        print("|---|---|---|")
        for label, runner in (
            (f"pypsrp {metadata.version('pypsrp')}", pypsrp_runs),
            (f"pywinrm {metadata.version('pywinrm')}", pywinrm_runs),
        ):
            runner(target, ca_file, 5)  # warm-up: imports, TLS, first shell
            before = time.process_time()
            walls = runner(target, ca_file, args.runs)
            cpu = (time.process_time() - before) / args.runs
            print(
                f"| {label} | {cpu * 1000:.2f} | "
                f"{statistics.median(walls) * 1000:.1f} / {p90(walls) * 1000:.1f} |"
            )
    finally:
        hosts.stop()
    slow = WindowsHosts(workdir / "slow", hosts=1, receive_delay=SLOW_HOST_DELAY)
    slow.start()
    try:
        [target] = slow.targets
        ca_file = _ca_file(slow)
        print(
            f"\nA host answering each Receive after {SLOW_HOST_DELAY:g} s, a"
            f" {SLOW_DEADLINE:g} s deadline: seconds the scrape's thread is held"
        )
        print(f"| pypsrp (exporter.clients.winrm) | {pypsrp_slow(target, ca_file):.1f} |")
        print(f"| pywinrm | {pywinrm_slow(target, ca_file):.1f} |")
    finally:
        slow.stop()


# ------------------------------------------------------------------ fleet


@dataclass
class Interval:
    cpu_seconds: float = 0.0
    ok: int = 0
    failed: int = 0
    walls: list[float] = field(default_factory=list)


async def scrape_fleet(
    base_url: str, targets: list[str], pid: int, args: argparse.Namespace
) -> tuple[list[Interval], Counter[str], int]:
    intervals = [Interval() for _ in range(args.intervals)]
    errors: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    spacing = args.interval / len(targets)
    peak_rss = 0
    headers = {**SCRAPE_HEADERS, "X-Prometheus-Scrape-Timeout-Seconds": "30"}
    timeout = aiohttp.ClientTimeout(total=40)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(target: str, slot: Interval) -> None:
            url = f"{base_url}/winrm?target={target}&auth=windows"
            started = loop.time()
            try:
                async with session.get(url, headers=headers) as response:
                    body = await response.text()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                slot.failed += 1
                errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
                return
            slot.walls.append(loop.time() - started)
            if SUCCESS in body:
                slot.ok += 1
            else:
                slot.failed += 1
                line = next((x for x in body.splitlines() if "scrape_error{" in x), body[:120])
                errors[line] += 1

        pending: set[asyncio.Task[None]] = set()
        for slot in intervals:
            start = loop.time()
            cpu_before = cpu_seconds(pid)
            for index, target in enumerate(targets):
                await asyncio.sleep(max(0.0, start + index * spacing - loop.time()))
                task = asyncio.create_task(one(target, slot))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.sleep(max(0.0, start + args.interval - loop.time()))
            slot.cpu_seconds = cpu_seconds(pid) - cpu_before
            peak_rss = max(peak_rss, memory(pid)[0])
        await asyncio.gather(*pending)
    return intervals, errors, peak_rss


def run_fleet(args: argparse.Namespace, workdir: Path) -> bool:
    hosts = WindowsHosts(workdir / "fleet", hosts=args.hosts, receive_delay=args.receive_delay)
    hosts.start()
    port = free_port()
    exporter = exporter_service(workdir, port, ["--config.file", str(hosts.config)])
    cores = os.cpu_count() or 1
    try:
        exporter.start()
        exporter.wait_ready()
        assert exporter.process is not None
        pid = exporter.process.pid
        rss_start = memory(pid)[0]
        intervals, errors, peak = asyncio.run(
            scrape_fleet(f"http://127.0.0.1:{port}", hosts.targets, pid, args)
        )
        rss_end, hwm = memory(pid)
        threads = psutil.Process(pid).num_threads()
    finally:
        exporter.stop(grace=10)
        hosts.stop()
    print(
        f"\nfleet: {args.hosts} hosts every {args.interval:g} s, {args.intervals} intervals,"
        f" receive delay {args.receive_delay:g} s, {cores} cores"
    )
    print(
        "| interval | scrapes ok / failed | CPU ms per scrape | share of cores |"
        " wall median / p90 ms |"
    )
    print("|---|---|---|---|---|")
    for number, slot in enumerate(intervals, 1):
        scrapes = slot.ok + slot.failed
        share = slot.cpu_seconds / (args.interval * cores)
        walls = slot.walls or [0.0]
        print(
            f"| {number}{' (cold)' if number == 1 else ''} | {slot.ok} / {slot.failed} |"
            f" {slot.cpu_seconds / max(1, scrapes) * 1000:.2f} | {share:.1%} |"
            f" {statistics.median(walls) * 1000:.0f} / {p90(walls) * 1000:.0f} |"
        )
    steady = intervals[-1]
    share = steady.cpu_seconds / (args.interval * cores)
    print(
        f"RSS: {rss_start / 1e6:.0f} MB at start, {rss_end / 1e6:.0f} MB at the end,"
        f" peak {max(peak, hwm) / 1e6:.0f} MB; {threads} threads"
    )
    ok = not errors and share < TARGET_SHARE and max(peak, hwm) < TARGET_RSS
    print(
        f"targets: CPU {share:.1%} < {TARGET_SHARE:.0%}, RSS {max(peak, hwm) / 1e6:.0f} MB"
        f" < {TARGET_RSS / 1e6:.0f} MB: {'met' if ok else 'NOT met'}"
    )
    for error, count in errors.most_common(10):
        print(f"  {count} x {error}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=("clients", "fleet", "all"), default="all")
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--intervals", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--receive-delay", type=float, default=0.5)
    args = parser.parse_args()
    if args.what in ("clients", "all") and importlib.util.find_spec("winrm") is None:
        # Before any host starts: the comparison is worthless without its peer.
        parser.exit(
            2,
            f"{parser.prog}: '{args.what}' compares pypsrp with pywinrm, which is not"
            " installed: pip install -e '.[dev]' (or 'pywinrm>=0.5'), or run 'fleet' alone\n",
        )
    signal.signal(signal.SIGTERM, raise_interrupt)
    print(f"{platform.node()}: Python {platform.python_version()}, {os.cpu_count()} cores")
    ok = True
    with tempfile.TemporaryDirectory(prefix="winrm-bench-") as tmp:
        workdir = Path(tmp)
        if args.what in ("clients", "all"):
            compare_clients(args, workdir)
        if args.what in ("fleet", "all"):
            ok = run_fleet(args, workdir)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
