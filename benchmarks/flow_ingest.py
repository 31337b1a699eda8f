"""Flow ingest: records per CPU second for NetFlow v5, v9 and IPFIX, beside nfcapd.

Two measurements on the same synthetic replay (per version, ``--packets``
datagrams of about 1.4 kB, 30 records each for v5 and 24 for v9/IPFIX, a
router-like template re-sent every 20 packets, 50,000 source and 5,000
destination addresses drawn with a heavy tail):

* **in process**: Scout's decoder + aggregator (``FlowIngest.ingest``, one
  scrape's ranking per 2,000 datagrams), timed with the process CPU clock on
  one core. This is the ">= 100,000 records/s" figure. One more row replays
  v5 whose sources are drawn uniformly from 16 million addresses (nearly
  every record a new key, as in a scan or a flood): the worst case for the
  per-key work.
* **side by side over UDP**: a ``scout-exporter --collector.flows`` process and
  Debian's ``nfcapd`` (nfdump) each bound to a free 127.0.0.1 port; every
  datagram is sent to both, in small bursts so neither socket overflows. Each
  daemon's CPU time (all threads, from /proc/<pid>/task/*/schedstat) is read
  before and after; the
  records each one actually took in (Scout's ``scout_flow_records_total``,
  nfcapd's file read back by ``nfdump -I``) divided by that CPU time gives
  records per CPU second, and the ratio Scout / nfcapd is printed. nfcapd
  writes every flow to disk, Scout keeps counters: the ratio compares what
  each daemon does with a flow, not identical work.

Nothing here asserts on timings. Usage:
``python benchmarks/flow_ingest.py [--packets N] [--no-peers]``
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/flow_ingest.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.common import missing_programs, version_line  # noqa: E402
from exporter.collectors.flows import FlowIngest  # noqa: E402
from exporter.collectors.flows.aggregate import AggregationSettings  # noqa: E402
from exporter.collectors.flows.listener import DatagramBatch  # noqa: E402
from scripts.localstack import free_port  # noqa: E402
from tests.peers.flows import (  # noqa: E402
    Flow,
    flow_set,
    ipfix_packet,
    ipfix_template,
    v5_packet,
    v9_packet,
    v9_template,
)

HOST = "127.0.0.1"
VERSIONS = ("v5", "v9", "ipfix")
# A pmacct/softflowd-like data template: start/end times, counters, interfaces,
# addresses, ports, protocol (56 bytes a record; 8-byte counters as routers send).
ROUTER_LAYOUT = (
    (153, 8),
    (152, 8),
    (1, 8),
    (2, 8),
    (60, 1),
    (10, 4),
    (14, 4),
    (61, 1),
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (6, 1),
    (4, 1),
)
TEMPLATE_ID = 1024
TEMPLATE_EVERY = 20
RECORDS_PER_PACKET = {"v5": 30, "v9": 24, "ipfix": 24}
SOURCES = 50_000
DESTINATIONS = 5_000
# Datagrams sent to each receiver before a short pause (keeps both sockets from overflowing).
BURST = 32


@dataclass(frozen=True, slots=True)
class Measure:
    records: int
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")


def _flows(rng: random.Random, count: int, uniform: bool = False) -> list[Flow]:
    flows = []
    for _ in range(count):
        # A heavy tail: a few sources and destinations carry most flows (or, uniform,
        # sources spread over 10.0.0.0/8).
        source = rng.randrange(1 << 24) if uniform else int(rng.paretovariate(1.2) * 10) % SOURCES
        destination = int(rng.paretovariate(1.5) * 10) % DESTINATIONS
        flows.append(
            Flow(
                f"10.{source >> 16}.{(source >> 8) & 255}.{source & 255}",
                f"172.16.{destination >> 8}.{destination & 255}",
                rng.randint(40, 1_500_000),
                rng.randint(1, 1000),
                rng.randint(1, 8),
                rng.randint(1, 8),
                rng.choice((6, 17)),
                rng.randint(1024, 65535),
                rng.choice((443, 80, 53, 22, 8443)),
            )
        )
    return flows


def _data(flows: Sequence[Flow]) -> bytes:
    return flow_set(TEMPLATE_ID, ROUTER_LAYOUT, flows)


def build_datagrams(
    version: str, packets: int, seed: int = 14, uniform: bool = False
) -> list[bytes]:
    """``packets`` datagrams of ``version`` with a template every ``TEMPLATE_EVERY``."""
    rng = random.Random(seed)
    datagrams = []
    per_packet = RECORDS_PER_PACKET[version]
    for index in range(packets):
        flows = _flows(rng, per_packet, uniform)
        sequence = index * per_packet
        if version == "v5":
            datagrams.append(v5_packet(flows, sequence=sequence))
            continue
        sets = [_data(flows)]
        if index % TEMPLATE_EVERY == 0:
            template = (v9_template if version == "v9" else ipfix_template)(
                TEMPLATE_ID, ROUTER_LAYOUT
            )
            sets.insert(0, template)
        if version == "v9":
            datagrams.append(v9_packet(sets, sequence=index))
        else:
            datagrams.append(ipfix_packet(sets, sequence=sequence))
    return datagrams


def records_in(datagrams: Sequence[bytes]) -> int:
    """Records the datagrams carry (templates excluded): v5 count, or 24 per v9/IPFIX data set."""
    if datagrams and datagrams[0][:2] == b"\x00\x05":
        return sum(int.from_bytes(datagram[2:4]) for datagram in datagrams)
    return len(datagrams) * RECORDS_PER_PACKET["v9"]


def in_process(datagrams: Sequence[bytes], scrape_every: int = 2000, batch: int = BURST) -> Measure:
    """Scout's decoder + aggregator on this core, with a scrape's ranking now and then.

    Datagrams are handed on ``batch`` at a time, as the listener's ``recvmmsg``
    hands on what one receive took, in the listener's form (``DatagramBatch``,
    packed before the clock starts; ``scrape_every`` is rounded to batches).
    """
    ingest = FlowIngest(AggregationSettings(), max_templates=1000)
    scrape_every = max(1, scrape_every // batch)
    batches = [
        DatagramBatch.pack([(datagram, HOST) for datagram in datagrams[start : start + batch]])
        for start in range(0, len(datagrams), batch)
    ]
    started = time.process_time()
    for index, received in enumerate(batches):
        ingest.ingest_batch(received)
        if index % scrape_every == scrape_every - 1:
            ingest.collect()
    ingest.collect()
    elapsed = time.process_time() - started
    records = sum(
        count for flows in ingest.aggregator.exporters.values() for count in flows.records.values()
    )
    return Measure(records, elapsed)


# -- side by side over UDP ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid``, from /proc/<pid>/task/*/schedstat (nanoseconds).

    Finer than the clock ticks of /proc/<pid>/stat, which matters for nfcapd:
    it handles a replay in a few ticks.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):  # a thread that just ended
            continue
    return total / 1e9


def _wait_for_port(port: int, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on {HOST}:{port}")


@contextmanager
def scout_exporter(workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """``scout-exporter --collector.flows`` on free ports: (process, HTTP port, UDP port)."""
    http_port, udp_port = free_port(), free_port(kind=socket.SOCK_DGRAM)
    config = workdir / "exporter.yml"
    config.write_text(f"collectors:\n  flows:\n    listen: {HOST}:{udp_port}\n")
    exe = shutil.which("scout-exporter", path=str(Path(sys.executable).parent)) or "scout-exporter"
    process = subprocess.Popen(
        [
            exe,
            f"--web.listen-address={HOST}:{http_port}",
            f"--config.file={config}",
            "--collector.flows",
            "--no-collector.host",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(http_port)
        yield process, http_port, udp_port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


def scout_records(http_port: int) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{http_port}/metrics", timeout=10) as response:
        body = response.read().decode()
    return sum(
        int(float(match))
        for match in re.findall(r"^scout_flow_records_total\{.*\} (\S+)$", body, re.M)
    )


@contextmanager
def nfcapd(workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """Debian's nfcapd on a free UDP port writing into a fresh directory."""
    port = free_port(kind=socket.SOCK_DGRAM)
    flowdir = workdir / f"nfcapd-{port}"
    flowdir.mkdir()
    process = subprocess.Popen(
        ["nfcapd", "-b", HOST, "-p", str(port), "-w", str(flowdir), "-B", str(8 << 20)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        yield process, port, flowdir
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)


def nfcapd_records(flowdir: Path) -> int:
    done = subprocess.run(
        ["nfdump", "-R", str(flowdir), "-I"], capture_output=True, text=True, check=True
    )
    match = re.search(r"^Flows: (\d+)$", done.stdout, re.M)
    return int(match.group(1)) if match else 0


def send_to_both(datagrams: Sequence[bytes], ports: Sequence[int]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for start in range(0, len(datagrams), BURST):
            for datagram in datagrams[start : start + BURST]:
                for port in ports:
                    sender.sendto(datagram, (HOST, port))
            time.sleep(0.005)


def side_by_side(datagrams: Sequence[bytes], workdir: Path) -> tuple[Measure, Measure]:
    """(Scout, nfcapd) records and CPU seconds for one replay sent to both."""
    with (
        scout_exporter(workdir) as (scout, http_port, udp_port),
        nfcapd(workdir) as (nf, nf_port, flowdir),
    ):
        scout_before, nf_before = cpu_seconds(scout.pid), cpu_seconds(nf.pid)
        send_to_both(datagrams, (udp_port, nf_port))
        # Let both drain their sockets; they are idle after that, so waiting costs no CPU.
        time.sleep(1.0)
        scout_cpu = cpu_seconds(scout.pid) - scout_before
        nf_cpu = cpu_seconds(nf.pid) - nf_before
        scout_count = scout_records(http_port)
        nf.send_signal(signal.SIGTERM)
        nf.wait(timeout=15)
        return Measure(scout_count, scout_cpu), Measure(nfcapd_records(flowdir), nf_cpu)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20_000, help="datagrams per version")
    parser.add_argument("--no-peers", action="store_true", help="only the in-process figure")
    args = parser.parse_args(argv)
    peers = not args.no_peers and not missing_programs(["nfcapd", "nfdump", "scout-exporter"])
    print(f"python {sys.version.split()[0]}; nfcapd: {version_line(['nfcapd', '-V'])}")
    print(f"{args.packets} datagrams per version\n")
    header = f"{'version':8} {'records':>9} {'Scout in-process rec/s':>23}"
    if peers:
        header += f" {'Scout UDP rec/CPU-s':>20} {'nfcapd rec/CPU-s':>17} {'ratio':>6}"
        header += f" {'received S/N':>14}"
    print(header)
    with tempfile.TemporaryDirectory(prefix="flow-ingest-") as tmp:
        for version in VERSIONS:
            datagrams = build_datagrams(version, args.packets)
            local = in_process(datagrams)
            if local.records != records_in(datagrams):
                print(
                    f"{version}: Scout counted {local.records} of {records_in(datagrams)} records"
                )
            line = f"{version:8} {records_in(datagrams):>9} {local.rate:>23,.0f}"
            if peers:
                scout, nf = side_by_side(datagrams, Path(tmp))
                ratio = scout.rate / nf.rate if nf.rate > 0 else float("nan")
                line += (
                    f" {scout.rate:>20,.0f} {nf.rate:>17,.0f} {ratio:>6.2f}"
                    f" {scout.records:>7}/{nf.records:<6}"
                )
            print(line, flush=True)
    datagrams = build_datagrams("v5", args.packets, uniform=True)
    local = in_process(datagrams)
    print(
        f"{'v5-scan':8} {local.records:>9} {local.rate:>23,.0f}"
        "  (v5, sources uniform over 10.0.0.0/8; in process only)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
