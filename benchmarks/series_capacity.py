"""What one Prometheus shard and the global engine cost per active series, here.

The sizing guide (docs/scaling.md) needs the cost of the two engines a sharded
deployment adds per device: the shard's Prometheus (memory per active series,
CPU per sample scraped and remote-written) and the global view, Debian's
VictoriaMetrics single node (memory per series, CPU per sample received).
Their projects publish sizing for their own hardware; this measures both side
by side on this machine, with series shaped like Scout's interface metrics.

Set-up: a threaded HTTP server of this script serves ``--targets`` devices,
each ``--series`` / ``--targets`` counters labelled as ``/snmp``'s interface
series are (``ifIndex``, ``ifName``, ``ifDescr``, ``ifAlias``), values growing
by random steps so that compression sees real increments. A real Prometheus
scrapes every device each ``--interval`` (the ``target`` parameter pattern of
``/snmp``) and remote-writes everything to a real VictoriaMetrics. After the
first scrapes (series creation, the costly part), the script measures
``--scrapes`` more intervals: each process's CPU (user + system), its resident
memory at the end, Prometheus's head series, and VictoriaMetrics's rows
received, which must equal what Prometheus appended (a run that lost samples
says so and exits 1).

    python benchmarks/series_capacity.py                # 200,000 series
    python benchmarks/series_capacity.py --series 50000 --scrapes 6
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import cpu_seconds, memory, missing_programs, version_line
from scripts.localstack import (
    Service,
    find_binary,
    free_port,
    prometheus_service,
    write_yaml,
)

COUNTERS = ("ifHCInOctets", "ifHCOutOctets", "ifHCInUcastPkts", "ifHCOutUcastPkts")


class Fleet:
    """The devices' series: label prefixes rendered once, values that grow."""

    def __init__(self, series: int, targets: int, seed: int = 7) -> None:
        per_target = max(1, series // targets)
        rows = max(1, per_target // len(COUNTERS))
        rng = random.Random(seed)
        self.prefixes = {
            f"dev{t:05d}": [
                f'{name}{{ifIndex="{i}",ifName="Gi1/0/{i}",ifDescr="GigabitEthernet1/0/{i}",'
                f'ifAlias="uplink {t}-{i}"}} '
                for i in range(1, rows + 1)
                for name in COUNTERS
            ]
            for t in range(targets)
        }
        self.values = {
            target: [rng.random() * 1e9 for _ in prefixes]
            for target, prefixes in self.prefixes.items()
        }
        self._rng = rng
        self._lock = threading.Lock()

    @property
    def series(self) -> int:
        return sum(len(p) for p in self.prefixes.values())

    def render(self, target: str) -> bytes | None:
        prefixes = self.prefixes.get(target)
        if prefixes is None:
            return None
        with self._lock:
            values = self.values[target]
            step = self._rng.random
            for index in range(len(values)):
                values[index] += step() * 1e6
            lines = [f"{p}{v:.0f}\n" for p, v in zip(prefixes, values, strict=True)]
        return "".join(lines).encode()


def serve(fleet: Fleet, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            body = fleet.render(query.get("target", [""])[0])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def metric_sum(url: str, name: str) -> float:
    """The sum of a metric's samples on a /metrics page."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=200_000)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--interval", type=int, default=10, help="scrape interval, seconds")
    parser.add_argument("--scrapes", type=int, default=12, help="intervals measured")
    parser.add_argument("--warmup", type=int, default=4, help="intervals before measuring")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_programs(["prometheus", "victoria-metrics"])
    if missing:
        print(f"missing programs: {', '.join(missing)} (Debian packages)", file=sys.stderr)
        return 2
    print(f"{version_line(['prometheus', '--version'])}; victoria-metrics 1.79 (Debian)")
    fleet = Fleet(args.series, args.targets)
    work = Path(tempfile.mkdtemp(prefix="scout-series-"))
    exposition_port, prometheus_port, vm_port = free_port(), free_port(), free_port()
    vm_url = f"http://127.0.0.1:{vm_port}"
    victoria = Service(
        name="victoria-metrics",
        argv=[
            find_binary("victoria-metrics"),
            f"-httpListenAddr=127.0.0.1:{vm_port}",
            f"-storageDataPath={work / 'vm'}",
            "-retentionPeriod=1d",
            "-search.latencyOffset=0s",
        ],
        ready_url=f"{vm_url}/health",
        log_path=work / "logs" / "victoria-metrics.log",
    )
    config = work / "prometheus.yml"
    write_yaml(
        config,
        {
            "global": {
                "scrape_interval": f"{args.interval}s",
                "scrape_timeout": f"{max(1, args.interval - 1)}s",
            },
            "scrape_configs": [
                {
                    "job_name": "devices",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": sorted(fleet.prefixes)}],
                    "relabel_configs": [
                        {"source_labels": ["__address__"], "target_label": "__param_target"},
                        {"source_labels": ["__param_target"], "target_label": "instance"},
                        {
                            "target_label": "__address__",
                            "replacement": f"127.0.0.1:{exposition_port}",
                        },
                    ],
                }
            ],
            "remote_write": [{"url": f"{vm_url}/api/v1/write"}],
        },
    )
    prometheus = prometheus_service(config, work, prometheus_port)
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    server = serve(fleet, exposition_port)
    print(
        f"{fleet.series:,} series on {args.targets} targets every {args.interval} s; "
        f"warm-up {args.warmup} intervals, then {args.scrapes} measured",
        file=sys.stderr,
    )
    services = [victoria, prometheus]
    try:
        for service in services:
            service.start()
            service.wait_ready(60)
        assert prometheus.process is not None
        assert victoria.process is not None
        pids = {"prometheus": prometheus.process.pid, "victoria-metrics": victoria.process.pid}
        time.sleep(args.warmup * args.interval)
        appended = "prometheus_tsdb_head_samples_appended_total"
        start_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        start_appended = metric_sum(f"{prometheus_url}/metrics", appended)
        start_rows = metric_sum(f"{vm_url}/metrics", "vm_rows_inserted_total")
        for done in range(1, args.scrapes + 1):
            time.sleep(args.interval)
            print(f"\rmeasuring: {done}/{args.scrapes} intervals", end="", file=sys.stderr)
        print(file=sys.stderr)
        elapsed = args.scrapes * args.interval
        cpu = {name: cpu_seconds(pid) - start_cpu[name] for name, pid in pids.items()}
        samples = metric_sum(f"{prometheus_url}/metrics", appended) - start_appended
        head = metric_sum(f"{prometheus_url}/metrics", "prometheus_tsdb_head_series")
        rss = {name: memory(pid)[0] for name, pid in pids.items()}
        # Let the last remote-write batches land before counting what arrived (rows
        # may then include part of a further interval: at least ``samples`` is due).
        time.sleep(5)
        rows = metric_sum(f"{vm_url}/metrics", "vm_rows_inserted_total") - start_rows
    finally:
        server.shutdown()
        for service in reversed(services):
            service.stop()
    scraped = fleet.series * args.scrapes
    print(
        f"series: {fleet.series:,} served, Prometheus head {head:,.0f}; "
        f"samples appended {samples:,.0f} (expected about {scraped:,}), "
        f"rows received by VictoriaMetrics {rows:,.0f}"
    )
    print(
        "| engine | resident MB | bytes per active series | CPU s per interval "
        "| CPU s per million samples | share of one core |"
    )
    print("|---|---|---|---|---|---|")
    for name in pids:
        per_million = cpu[name] / max(samples, 1) * 1e6
        print(
            f"| {name} | {rss[name] / 1e6:,.0f} | {rss[name] / fleet.series:,.0f} "
            f"| {cpu[name] / args.scrapes:.2f} | {per_million:.2f} "
            f"| {100 * cpu[name] / elapsed:.1f}% |"
        )
    ratio_rss = rss["victoria-metrics"] / rss["prometheus"]
    ratio_cpu = cpu["victoria-metrics"] / max(cpu["prometheus"], 1e-9)
    print(f"VictoriaMetrics / Prometheus: memory {ratio_rss:.2f}x, CPU {ratio_cpu:.2f}x")
    if rows < 0.99 * samples:
        print(f"VictoriaMetrics received {rows:,.0f} of {samples:,.0f} samples", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
