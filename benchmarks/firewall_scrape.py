"""Cost of one firewall scrape through Scout's ``/firewall`` and through its ``/snmp``.

The question from anyone choosing how to watch a FortiGate: what does a scrape
cost the exporter, over its REST API or over SNMP? This script starts, on free
127.0.0.1 ports:

* a fake FortiGate REST API (``tests/peers/firewall_api.py``) over
  HTTPS with a certificate from a throwaway CA, in its own process, answering
  the documented shapes of the endpoints ``/firewall`` reads, scaled to
  a mid-size unit (``--policies`` policies, a third of them named,
  ``--interfaces`` interfaces, ``--tunnels`` IPsec tunnels);
* snmpsim serving the same FortiGate over SNMP: ``--interfaces`` interfaces
  (if_mib's tables) and the FORTINET-FORTIGATE-MIB rows of the test recording
  ``fortigate-hq.snmprec`` (sessions, CPU, memory, three tunnels, HA);
* ``scout-exporter`` (host collector off) with a module that trusts the CA and
  the auths for both.

Each endpoint is scraped ``--scrapes`` times after a warm-up, one after the
other, with Prometheus's headers (text format, gzip, a 10 s timeout), over a
kept-alive connection. Reported per endpoint: wall time per scrape (median,
p90), the exporter's own scrape duration, series, response size, the CPU
seconds of the exporter's process per scrape (user+system over the scrapes,
from psutil), and its resident memory after the batch. The fake's and
snmpsim's CPU are not counted.

The SNMP side reads ``--snmp-modules`` (default ``if_mib,fortigate``: the
interface tables and the firewall schema, what a FortiGate scrape over SNMP
needs) in one ``/snmp`` request.

Needs snmpsim in the venv (the dev extras). Usage:
python benchmarks/firewall_scrape.py [--scrapes N] [--warmup N] [--policies N]
       [--interfaces N] [--tunnels N] [--snmp-modules NAME,NAME]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import ipaddress
import os
import platform
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/firewall_scrape.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    SCRAPE_HEADERS,
    cpu_seconds,
    memory,
    missing_programs,
    p90,
    raise_interrupt,
    start_scout_exporter,
)
from exporter.targets.firewall.fortigate import FortiGate  # noqa: E402
from exporter.targets.firewall.modules import FortiGateModule  # noqa: E402
from scripts.localstack import Service, StackError, free_port  # noqa: E402

HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 30.0
HTTP_TIMEOUT_SECONDS = 60.0
COMMUNITY = "fortigate"
# The FortiGate's own MIB rows, as the firewall SNMP module tests serve them.
FORTIGATE_RECORDING = (
    REPO / "tests" / "exporter" / "targets" / "snmp" / "recordings" / "firewalls"
) / "fortigate-hq.snmprec"

# Each endpoint's own account of its scrape, and its success line.
OWN_SECONDS = {
    "/firewall": re.compile(rb"^scout_firewall_scrape_duration_seconds ([0-9.e+-]+)$", re.M),
    "/snmp": re.compile(rb"^scout_snmp_scrape_duration_seconds ([0-9.e+-]+)$", re.M),
}


class BenchmarkError(Exception):
    pass


def scaled_fortigate(policies: int, interfaces: int, tunnels: int) -> dict[str, Any]:
    """The test payloads, grown to a mid-size FortiGate."""
    from tests.peers import firewall_payloads as payloads

    table = dict(payloads.FORTIGATE)
    table["/api/v2/monitor/firewall/policy"] = payloads.fortios(
        [
            {"policyid": i, "bytes": 1000 * i, "packets": 10 * i, "hit_count": 3 * i}
            for i in range(policies)
        ]
    )
    table["/api/v2/cmdb/firewall/policy"] = payloads.fortios(
        [
            {
                "policyid": i,
                "q_origin_key": i,
                "name": f"rule-{i}" if i % 3 == 0 else "",
                "action": "accept" if i % 2 else "deny",
                "comments": "",
            }
            for i in range(1, policies)
        ]
    )
    table["/api/v2/monitor/system/interface"] = payloads.fortios(
        {
            f"port{i}": {
                "id": f"port{i}",
                "name": f"port{i}",
                "link": i % 5 != 0,
                "rx_bytes": 10**9 * i,
                "tx_bytes": 10**8 * i,
                "rx_packets": 10**6 * i,
                "tx_packets": 10**5 * i,
            }
            for i in range(1, interfaces + 1)
        }
    )
    table["/api/v2/monitor/vpn/ipsec"] = payloads.fortios(
        [
            {
                "name": f"branch{i}",
                "rgwy": f"198.51.100.{i}",
                "incoming_bytes": 10**6 * i,
                "outgoing_bytes": 10**6 * i,
                "proxyid": [{"status": "up" if i % 4 else "down", "p2name": f"branch{i}-p2"}],
            }
            for i in range(1, tunnels + 1)
        ]
    )
    return table


def write_fortigate_device(path: Path, interfaces: int) -> None:
    """An snmprec of a FortiGate: generated interface tables plus the recording's MIB rows.

    The generated system group wins where both have an OID; snmpsim wants the
    records in OID order.
    """
    from tests.peers.snmp import write_if_mib_device

    write_if_mib_device(path, interfaces, f"bench:{path.stem}")
    records: dict[str, str] = {}
    for text in (path.read_text(), FORTIGATE_RECORDING.read_text()):
        for line in text.splitlines():
            if line.strip():
                records.setdefault(line.split("|", 1)[0], line)
    ordered = sorted(records.items(), key=lambda item: tuple(map(int, item[0].split("."))))
    path.write_text("".join(f"{line}\n" for _, line in ordered))


def serve_fake(args: argparse.Namespace) -> None:
    """The fake FortiGate's process: serve until killed."""
    from aiohttp import web

    from tests.peers.firewall_api import FakeApi

    fake = FakeApi("fortigate")
    fake.table = scaled_fortigate(args.policies, args.interfaces, args.tunnels)
    fake.requests = _Forget()  # a long run must not hold every request
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    web.run_app(fake.app, host=HOST, port=args.serve_fake, ssl_context=context, print=None)


class _Forget(list[Any]):
    def append(self, _item: Any) -> None:
        return None


@dataclass
class Scrape:
    wall: float
    own_seconds: float
    series: int
    wire_bytes: int


@dataclass
class Row:
    label: str
    path: str
    scrapes: list[Scrape] = field(default_factory=list)
    cpu_seconds: float = 0.0
    rss_bytes: int = 0
    peak_rss_bytes: int = 0


def scrape(conn: http.client.HTTPConnection, path: str, success: bytes) -> Scrape:
    started = time.perf_counter()
    conn.request("GET", path, headers=SCRAPE_HEADERS)
    response = conn.getresponse()
    payload = response.read()
    wall = time.perf_counter() - started
    gzipped = response.getheader("Content-Encoding", "") == "gzip"
    body = gzip.decompress(payload) if gzipped else payload
    if response.status != 200 or success not in body:
        raise BenchmarkError(f"{path}: HTTP {response.status}, no {success!r}: {body[:400]!r}")
    own = OWN_SECONDS[path.split("?")[0]].search(body)
    series = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
    return Scrape(wall, float(own.group(1)) if own else float("nan"), series, len(payload))


def measure(row: Row, port: int, pid: int, success: bytes, warmup: int, count: int) -> None:
    conn = http.client.HTTPConnection(HOST, port, HTTP_TIMEOUT_SECONDS)
    try:
        for _ in range(warmup):
            scrape(conn, row.path, success)
        before = cpu_seconds(pid)
        for _ in range(count):
            row.scrapes.append(scrape(conn, row.path, success))
        row.cpu_seconds = cpu_seconds(pid) - before
        row.rss_bytes, row.peak_rss_bytes = memory(pid)
    finally:
        conn.close()


def wait_for_port(port: int, service: Service) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if service.exited():
            raise StackError(f"{service.name} exited at start-up:\n{service.log_tail()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise StackError(f"{service.name} not listening after {READY_TIMEOUT_SECONDS:.0f}s")


def scout_config(ca_file: Path, token: str) -> str:
    return f"""
auths:
  fgt: {{type: http, bearer_token: {token}, allowed_targets: [127.0.0.0/8]}}
  {COMMUNITY}: {{type: snmp, community: {COMMUNITY}, allowed_targets: [127.0.0.0/8]}}
modules:
  fortigate_bench: {{prober: fortigate, tls_ca_file: "{ca_file}"}}
"""


def run(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> None:
    from cryptography import x509

    from tests.exporter.certs import CertificateAuthority
    from tests.peers.firewall_api import FORTIGATE_TOKEN
    from tests.peers.snmp import SnmpsimDevices

    ca = CertificateAuthority(workdir, "bench-ca")
    leaf = ca.issue("fortigate", server=True, sans=[x509.IPAddress(ipaddress.ip_address(HOST))])
    fake_port = free_port()
    fake = Service(
        name="fake-fortigate",
        argv=[
            sys.executable,
            str(Path(__file__).resolve()),
            f"--serve-fake={fake_port}",
            f"--cert={leaf.cert}",
            f"--key={leaf.key}",
            f"--policies={args.policies}",
            f"--interfaces={args.interfaces}",
            f"--tunnels={args.tunnels}",
        ],
        ready_url="",
        log_path=workdir / "fake.log",
    )
    stack.callback(fake.stop, 5)
    fake.start()
    wait_for_port(fake_port, fake)
    device = workdir / f"{COMMUNITY}.snmprec"
    write_fortigate_device(device, args.interfaces)
    devices = stack.enter_context(SnmpsimDevices(workdir, {}, recordings=[device]))
    snmp_modules = args.snmp_modules
    from exporter.targets.snmp.modules import builtin_modules

    unknown = sorted(set(snmp_modules.split(",")) - set(builtin_modules()))
    if unknown:
        raise BenchmarkError(f"SNMP modules not built in: {', '.join(unknown)}")
    config = workdir / "scout.yml"
    config.write_text(scout_config(ca.pair.cert, FORTIGATE_TOKEN))
    port, pid = start_scout_exporter(stack, workdir, config, HOST, READY_TIMEOUT_SECONDS)
    firewall = Row(
        "/firewall fortigate",
        "/firewall?"
        + urllib.parse.urlencode(
            {"target": f"{HOST}:{fake_port}", "module": "fortigate_bench", "auth": "fgt"}
        ),
    )
    snmp = Row(
        f"/snmp {snmp_modules}",
        "/snmp?"
        + urllib.parse.urlencode(
            {"target": devices.target, "module": snmp_modules, "auth": COMMUNITY}
        ),
    )
    rss_start, _ = memory(pid)
    measure(firewall, port, pid, b"scout_firewall_up 1.0", args.warmup, args.scrapes)
    # The recording's session count: the FortiGate MIB rows were read, not only the tables.
    measure(snmp, port, pid, b"\nscout_firewall_sessions 51234", args.warmup, args.scrapes)
    report([firewall, snmp], args, rss_start)


def report(rows: Sequence[Row], args: argparse.Namespace, rss: int) -> None:
    sched = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print("Firewall scrape benchmark: Scout /firewall (FortiGate REST API) and /snmp")
    print(
        f"machine: nproc={os.cpu_count()} (usable {sched}), {platform.machine()}, "
        f"Linux {platform.release()}, load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"python:  {platform.python_version()}")
    print(
        f"device:  {args.policies} policies, {args.interfaces} interfaces, "
        f"{args.tunnels} tunnels; {args.scrapes} scrapes each after {args.warmup} warm-up"
    )
    print(f"exporter RSS before the first scrape: {rss / 2**20:.1f} MiB")
    header = (
        f"{'endpoint':<24} {'n':>3} {'series':>6} {'wire KiB':>8} {'wall med ms':>11} "
        f"{'wall p90 ms':>11} {'own med ms':>10} {'CPU ms/scr':>10} {'RSS MiB':>7} {'peak MiB':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        s = row.scrapes
        walls = [x.wall for x in s]
        print(
            f"{row.label:<24} {len(s):>3} {s[-1].series:>6} "
            f"{statistics.median(x.wire_bytes for x in s) / 1024:>8.1f} "
            f"{statistics.median(walls) * 1e3:>11.1f} {p90(walls) * 1e3:>11.1f} "
            f"{statistics.median(x.own_seconds for x in s) * 1e3:>10.1f} "
            f"{row.cpu_seconds / len(s) * 1e3:>10.1f} "
            f"{row.rss_bytes / 2**20:>7.1f} {row.peak_rss_bytes / 2**20:>8.1f}"
        )
    print()
    print("wall: HTTP request to last byte, as Prometheus sees it; own: the endpoint's scrape")
    print("duration metric. CPU: user+system of the exporter process over the batch, divided by")
    print("its scrapes; the fake API's and snmpsim's CPU are not counted. RSS: the exporter's,")
    # Counted from the module, not written down: the figure follows the scrape.
    gets = len(FortiGate().endpoints(FortiGateModule()))
    print(f"read after each batch (/firewall first). The /firewall scrape is {gets} HTTPS GETs")
    print("in parallel over pooled connections (at most 4 at a time to one firewall).")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scrapes", type=int, default=30, metavar="N")
    parser.add_argument("--warmup", type=int, default=3, metavar="N")
    parser.add_argument("--policies", type=int, default=300, metavar="N")
    parser.add_argument("--interfaces", type=int, default=48, metavar="N")
    parser.add_argument("--tunnels", type=int, default=20, metavar="N")
    parser.add_argument("--snmp-modules", default="if_mib,fortigate", metavar="NAME,NAME")
    # The fake's own process (internal).
    parser.add_argument("--serve-fake", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scrapes < 2 or args.warmup < 1:
        parser.error("--scrapes must be at least 2 (p90) and --warmup at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_fake:
        serve_fake(args)
        return 0
    missing = missing_programs(["scout-exporter", "snmpsim-command-responder"])
    if missing:
        print(f"firewall_scrape: not installed: {', '.join(missing)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="scout-firewall-scrape-") as tmp:
        try:
            with ExitStack() as stack:
                run(args, stack, Path(tmp))
        except (BenchmarkError, StackError, OSError, subprocess.SubprocessError) as exc:
            print(f"firewall_scrape: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
