"""Scrape cost of Scout's host collector against Prometheus's node_exporter.

Scout's host collector covers the same ground as a handful of node_exporter
collectors, so the obvious question from anyone replacing node_exporter is what
a scrape costs. This script answers it on the machine it runs on. It starts, on
free 127.0.0.1 ports and at the same time:

* ``scout-exporter`` with its default (host) collector;
* ``prometheus-node-exporter`` with its default collectors, which is what users
  actually run;
* ``prometheus-node-exporter`` restricted to the collectors equivalent to Scout's
  (cpu, loadavg, meminfo, filesystem, diskstats, netdev, stat), which is the
  like-for-like comparison.

After a warm-up it scrapes them round-robin, sending the headers Prometheus 2.x
sends, and reports per exporter: scrape wall time (median, p90), response size
and series count, CPU seconds the server spent per scrape, and resident memory.
Ratios are Scout divided by each node_exporter configuration, so above 1x means
Scout costs more.

Timings depend on the machine and its load; nothing here asserts on them.

Usage: python benchmarks/host_scrape.py [--scrapes N] [--warmup N]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/host_scrape.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    SCRAPE_HEADERS,
    cpu_seconds,
    memory,
    p90,
    raise_interrupt,
    version_line,
)

HOST = "127.0.0.1"  # the only address this script ever talks to
READY_TIMEOUT_SECONDS = 30.0
SCRAPE_TIMEOUT_SECONDS = 30.0


# node_exporter 1.5.0 collectors that read what Scout's host collector reads.
EQUIVALENT_NODE_COLLECTORS = (
    "cpu",
    "loadavg",
    "meminfo",
    "filesystem",
    "diskstats",
    "netdev",
    "stat",
)

# Series about the host itself, as opposed to the exporter's own process,
# runtime and per-collector bookkeeping, which both exporters add.
HOST_SERIES_PREFIXES = {"scout": ("scout_host_",), "node": ("node_",)}
NOT_HOST_SERIES_PREFIXES = ("node_scrape_collector_", "node_exporter_")


@dataclass
class Target:
    label: str
    kind: str  # "scout" or "node"
    argv: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    conn: http.client.HTTPConnection | None = None
    walls: list[float] = field(default_factory=list)
    wire_bytes: int = 0
    body_bytes: int = 0
    series: int = 0
    host_series: int = 0
    content_type: str = ""
    content_encoding: str = ""
    cpu_seconds: float = 0.0
    rss_bytes: int = 0
    peak_rss_bytes: int = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class BenchmarkError(Exception):
    pass


def free_port() -> int:
    # The kernel picks an unused port; it is released again at once, so another
    # process could in principle take it before the exporter binds it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def scout_command() -> list[str]:
    # Prefer the script installed next to this interpreter, so an unrelated
    # scout-exporter earlier on PATH cannot be benchmarked by mistake.
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("scout-exporter", path=search)
    return [found] if found else [sys.executable, "-m", "exporter.cli"]


def node_exporter_command() -> str:
    found = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if found is None:
        print(
            "host_scrape: prometheus-node-exporter not found on PATH.\n"
            "Install it with `apt-get install prometheus-node-exporter`, "
            "or run `make bench`, which installs it.",
            file=sys.stderr,
        )
        sys.exit(2)
    return found


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start(target: Target, log_file: IO[bytes]) -> None:
    target.proc = subprocess.Popen(
        target.argv,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        # Own session: Ctrl-C reaches only this script, which then stops the
        # exporters itself instead of racing their own signal handling.
        start_new_session=True,
    )


def stop(targets: Sequence[Target]) -> None:
    for target in targets:
        if target.conn is not None:
            target.conn.close()
    running = [t.proc for t in targets if t.proc is not None and t.proc.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + 5
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(target: Target) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last_error = "no attempt"
    while time.monotonic() < deadline:
        assert target.proc is not None
        if target.proc.poll() is not None:
            raise BenchmarkError(
                f"{target.label} exited with status {target.proc.returncode} before it was "
                f"ready; its log ({target.log_path}):\n{tail(target.log_path)}"
            )
        conn = http.client.HTTPConnection(HOST, target.port, timeout=5)
        try:
            conn.request("GET", "/metrics", headers=SCRAPE_HEADERS)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
            last_error = f"HTTP {response.status}"
        except OSError as exc:
            last_error = str(exc)
        finally:
            conn.close()
        time.sleep(0.1)
    raise BenchmarkError(
        f"{target.label} not ready on {HOST}:{target.port} after {READY_TIMEOUT_SECONDS:.0f}s "
        f"({last_error}); its log:\n{tail(target.log_path)}"
    )


def scrape(target: Target) -> tuple[float, bytes, http.client.HTTPResponse]:
    """One scrape over a kept-alive connection, as Prometheus keeps them."""
    for attempt in (1, 2):
        if target.conn is None:
            target.conn = http.client.HTTPConnection(
                HOST, target.port, timeout=SCRAPE_TIMEOUT_SECONDS
            )
        started = time.perf_counter()
        try:
            target.conn.request("GET", "/metrics", headers=SCRAPE_HEADERS)
            response = target.conn.getresponse()
            payload = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed an idle keep-alive connection; Prometheus would
            # reconnect too. Time only the retry.
            target.conn.close()
            target.conn = None
            if attempt == 2:
                raise
            continue
        wall = time.perf_counter() - started
        if response.status != 200:
            raise BenchmarkError(f"{target.label}: HTTP {response.status} from /metrics")
        if response.will_close:
            target.conn.close()
            target.conn = None
        return wall, payload, response
    raise AssertionError("unreachable")


def describe_response(target: Target, payload: bytes, response: http.client.HTTPResponse) -> None:
    target.content_type = response.getheader("Content-Type", "")
    target.content_encoding = response.getheader("Content-Encoding", "") or "identity"
    body = gzip.decompress(payload) if target.content_encoding == "gzip" else payload
    target.wire_bytes = len(payload)
    target.body_bytes = len(body)
    host_prefixes = HOST_SERIES_PREFIXES[target.kind]
    series = host = 0
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        series += 1
        if line.startswith(host_prefixes) and not line.startswith(NOT_HOST_SERIES_PREFIXES):
            host += 1
    target.series, target.host_series = series, host


def rounds(targets: Sequence[Target], count: int) -> Iterator[Target]:
    # Round-robin, rotating who goes first, so a burst of machine noise and any
    # cache warmed by the previous scrape fall on every exporter alike.
    for i in range(count):
        shift = i % len(targets)
        yield from [*targets[shift:], *targets[:shift]]


def run(targets: Sequence[Target], scrapes: int, warmup: int) -> None:
    for target in targets:
        wait_ready(target)
    for target in rounds(targets, warmup):
        scrape(target)
    before = {t.label: cpu_seconds(t.pid) for t in targets}
    for target in rounds(targets, scrapes):
        target.walls.append(scrape(target)[0])
    for target in targets:
        target.cpu_seconds = cpu_seconds(target.pid) - before[target.label]
        target.rss_bytes, target.peak_rss_bytes = memory(target.pid)
    # Size and series are read from one more scrape, outside the timed loop.
    for target in targets:
        _, payload, response = scrape(target)
        describe_response(target, payload, response)


def report(
    targets: Sequence[Target],
    scrapes: int,
    warmup: int,
    scout_argv: Sequence[str],
    peer_version: str,
) -> None:
    sched = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print("Host scrape benchmark: Scout vs node_exporter")
    print(
        f"machine: nproc={os.cpu_count()} (usable {sched}), {platform.machine()}, "
        f"Linux {platform.release()}, load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"python:  {platform.python_version()} ({sys.executable})")
    print(f"scout:   {' '.join(scout_argv)}")
    print(f"peer:    {peer_version}")
    print(f"scrapes: {scrapes} per exporter after {warmup} warm-up, round-robin")
    print()
    header = (
        f"{'exporter':<26} {'series':>6} {'host':>5} {'wire KiB':>8} {'body KiB':>8} "
        f"{'wall med ms':>11} {'wall p90 ms':>11} {'CPU ms/scr':>10} {'RSS MiB':>7} "
        f"{'peak MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for t in targets:
        print(
            f"{t.label:<26} {t.series:>6} {t.host_series:>5} {t.wire_bytes / 1024:>8.1f} "
            f"{t.body_bytes / 1024:>8.1f} {statistics.median(t.walls) * 1e3:>11.2f} "
            f"{p90(t.walls) * 1e3:>11.2f} {t.cpu_seconds / scrapes * 1e3:>10.2f} "
            f"{t.rss_bytes / 2**20:>7.1f} {t.peak_rss_bytes / 2**20:>8.1f}"
        )
    print()
    print("series: all samples in the response; host: scout_host_* or node_* minus the")
    print("exporter's own node_scrape_collector_*/node_exporter_*. Wire is what was sent")
    print("(gzip if the server chose it); CPU is user+system of the server process.")
    for t in targets:
        print(f"  {t.label}: {t.content_type}; encoding {t.content_encoding}")
    print()
    scout, peers = targets[0], targets[1:]
    for peer in peers:
        ratios = (
            ("wall median", statistics.median(scout.walls), statistics.median(peer.walls)),
            ("wall p90", p90(scout.walls), p90(peer.walls)),
            ("CPU per scrape", scout.cpu_seconds, peer.cpu_seconds),
            ("RSS", scout.rss_bytes, peer.rss_bytes),
        )
        for name, mine, theirs in ratios:
            ratio = f"{mine / theirs:.2f}x" if theirs else "n/a (peer measured 0)"
            print(f"{name + ' ratio':<21} scout/{peer.label} = {ratio}")
        print()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--scrapes",
        type=int,
        default=200,
        metavar="N",
        help="measured scrapes per exporter (default 200)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=20,
        metavar="N",
        help="unmeasured scrapes per exporter first (default 20)",
    )
    args = parser.parse_args(argv)
    if args.scrapes < 2:
        parser.error("--scrapes must be at least 2 (a p90 needs two samples)")
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    return args


@contextmanager
def log_files(paths: Sequence[Path]) -> Iterator[list[IO[bytes]]]:
    files: list[IO[bytes]] = []
    try:
        for path in paths:
            files.append(path.open("wb"))
        yield files
    finally:
        for f in files:
            f.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    node = node_exporter_command()
    scout = scout_command()
    signal.signal(signal.SIGTERM, raise_interrupt)
    peer_version = version_line([node, "--version"])
    with tempfile.TemporaryDirectory(prefix="scout-bench-") as tmp:
        logs = Path(tmp)

        def node_argv(port: int, *collectors: str) -> list[str]:
            argv = [node, f"--web.listen-address={HOST}:{port}"]
            if collectors:
                argv.append("--collector.disable-defaults")
                argv += [f"--collector.{name}" for name in collectors]
            return argv

        ports = [free_port() for _ in range(3)]
        while len(set(ports)) < len(ports):
            ports = [free_port() for _ in range(3)]
        targets = [
            Target(
                "scout",
                "scout",
                [*scout, "--web.listen-address", f"{HOST}:{ports[0]}", "--log.level", "warn"],
                ports[0],
                logs / "scout.log",
            ),
            Target(
                "node_exporter(default)",
                "node",
                node_argv(ports[1]),
                ports[1],
                logs / "node-default.log",
            ),
            Target(
                "node_exporter(equivalent)",
                "node",
                node_argv(ports[2], *EQUIVALENT_NODE_COLLECTORS),
                ports[2],
                logs / "node-equivalent.log",
            ),
        ]
        with log_files([t.log_path for t in targets]) as files:
            try:
                for target, log_file in zip(targets, files, strict=True):
                    start(target, log_file)
                run(targets, args.scrapes, args.warmup)
            except BenchmarkError as exc:
                print(f"host_scrape: {exc}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print("host_scrape: interrupted; stopping the exporters", file=sys.stderr)
                return 130
            finally:
                stop(targets)
    report(targets, args.scrapes, args.warmup, scout, peer_version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
