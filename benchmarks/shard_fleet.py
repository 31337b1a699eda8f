"""The sharded deployment at 200 devices: N shards side by side with one, same global tier.

The question of issue 18 §2: does a fleet split by ``hashmod`` over N
Prometheus shards behind VictoriaMetrics stay correct at size, and what does
each shard cost next to one Prometheus scraping everything? Both runs are the
stack of ``tests/test_sharding.py`` (tests/peers/shards.py: configs from
scripts/shards.py, the shipped rules, an Alertmanager HA pair, vmalert, the
sidecar on the global view), the peer run with ``--shards 1``.

Devices: snmpsim, one UDP endpoint per device (``--devices``, 200; IF-MIB with
``--interfaces`` ports each), plus one real snmpd that fails; spread evenly
over the shards. Each run checks, and fails (exit 1) if it does not hold:

- every target is scraped by exactly one shard, the one ``hashmod`` names;
- the global view holds each device's series exactly once, as its shard does;
- the snmpd stopped gives one SnmpDeviceUnreachable on each Alertmanager and
  one incident in the sidecar (``for:`` 4 s instead of 3 m);
- shard 0's Prometheus killed gives ShardSilent (``for:`` 4 s instead of 2 m).

Measured (psutil, user+system CPU as a share of all cores, over ``--measure``
seconds once every device is scraped; resident memory at the end): each
shard's Prometheus and exporter, VictoriaMetrics; the series counts; the time
from the device's failure to its alert and incident, and from the kill to
ShardSilent. Every scrape runs every ``--interval`` (15 s).

Needs Debian's prometheus, prometheus-alertmanager, victoria-metrics (with
vmalert) and snmpd; snmpsim in the venv. Runs as root or not.

Usage: python benchmarks/shard_fleet.py [--devices N] [--shards N] [--interval S]
       [--measure S] [--interfaces N]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/shard_fleet.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    cpu_seconds,
    memory,
    missing_programs,
    raise_interrupt,
    version_line,
)
from scripts.localstack import Service  # noqa: E402
from tests.peers.alertmanager import Timings  # noqa: E402
from tests.peers.shards import (  # noqa: E402
    SeriesView,
    ShardedStack,
    device_ports,
    device_views,
    hashmod,
    owners,
)
from tests.peers.snmp import RealSnmpd, SnmpsimDevices  # noqa: E402

FOR = {"SnmpDeviceUnreachable": "4s", "ShardSilent": "4s"}
TIMINGS = Timings(enriched_wait="2s", fail_open="6s")
PROGRAMS = ("prometheus", "prometheus-alertmanager", "victoria-metrics", "vmalert", "snmpd")


class BenchmarkError(Exception):
    pass


@dataclass
class Run:
    shards: int
    targets: list[int] = field(default_factory=list)  # per shard
    local_series: list[int] = field(default_factory=list)  # per shard, job snmp
    global_series: int = 0
    ready: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # share of all cores
    rss: dict[str, int] = field(default_factory=dict)
    to_alert: float = 0.0
    to_incident: float = 0.0
    to_shard_silent: float = 0.0


def wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise BenchmarkError(f"timed out after {timeout:.0f}s waiting for {what}")


def processes(stack: ShardedStack) -> dict[str, Service]:
    named = {f"prometheus {k}": p for k, p in enumerate(stack.prometheis)}
    named |= {f"exporter {k}": e for k, e in enumerate(stack.exporters)}
    named["victoria-metrics"] = stack.services["victoria-metrics"]
    return named


def pid(service: Service) -> int:
    assert service.process is not None
    return service.process.pid


def check_once(views: dict[str, SeriesView]) -> None:
    """Each device's series in the global view once, as its shard holds them, with its label."""
    for device, (shard, local, remote) in views.items():
        if len(remote) != len(local) or {s.get("shard") for s in remote} != {str(shard)}:
            raise BenchmarkError(f"{device}: its series are not in the global view once")


def run_one(args: argparse.Namespace, shards: int, workdir: Path) -> Run:
    run = Run(shards)
    # The failing device on the last shard: shard 0 is the one killed.
    ports, victim_port = device_ports(args.devices - 1, shards, victim_shard=shards - 1)
    endpoints = [f"127.0.0.1:{p}" for p in ports]
    print(f"[{shards} shard(s)] starting snmpsim ({len(endpoints)} endpoints) and the stack ...")
    with (
        SnmpsimDevices(
            workdir, {"public": args.interfaces}, endpoints=endpoints, ready_timeout=300
        ) as sim,
        RealSnmpd(workdir, port=victim_port) as victim,
    ):
        devices = [*sim.endpoints, victim.target]
        with ShardedStack(
            workdir,
            devices,
            shards=shards,
            scrape_interval=f"{args.interval:g}s",
            for_overrides=FOR,
            query_step=f"{2 * args.interval:g}s",
            timings=TIMINGS,
        ) as stack:
            started = time.monotonic()
            found = wait(
                lambda: (o := owners(stack)) and set(o) == set(devices) and o,
                300,
                "every device scraped and up",
            )
            if found != {d: hashmod(d, shards) for d in devices}:
                raise BenchmarkError("a target is scraped by a shard hashmod does not name")
            views = wait(lambda: device_views(stack, devices), 300, "the global view")
            run.ready = time.monotonic() - started
            check_once(views)
            run.targets = [sum(1 for s in found.values() if s == k) for k in range(shards)]

            named = processes(stack)
            before = {name: cpu_seconds(pid(s)) for name, s in named.items()}
            print(
                f"[{shards} shard(s)] all scraped in {run.ready:.0f}s; measuring {args.measure:g}s"
            )
            time.sleep(args.measure)
            for name, service in named.items():
                used = cpu_seconds(pid(service)) - before[name]
                run.cpu[name] = used / args.measure / cpu_count()
                run.rss[name] = memory(pid(service))[0]
            # Counted after the measurement, once the recording rules' series exist too.
            views = wait(lambda: device_views(stack, devices), 300, "the global view")
            check_once(views)
            run.local_series = [
                sum(len(v[1]) for v in views.values() if v[0] == k) for k in range(shards)
            ]
            run.global_series = sum(len(v[2]) for v in views.values())

            failed = time.monotonic()
            victim.stop()
            wait(
                lambda: all(stack.firing("SnmpDeviceUnreachable")),
                300,
                "SnmpDeviceUnreachable on both Alertmanagers",
            )
            run.to_alert = time.monotonic() - failed

            def incidents() -> list[dict[str, Any]]:
                return [
                    i
                    for i in stack.sidecar.incidents()
                    if any(a["labels"]["alertname"] == "SnmpDeviceUnreachable" for a in i["alerts"])
                ]

            wait(incidents, 120, "the sidecar's incident")
            run.to_incident = time.monotonic() - failed
            time.sleep(2 * args.interval)  # room for a duplicate to show
            alerts = stack.firing("SnmpDeviceUnreachable")
            if [len(a) for a in alerts] != [1, 1] or len(incidents()) != 1:
                raise BenchmarkError(f"not one alert and one incident: {alerts}, {incidents()}")

            killed = time.monotonic()
            stack.kill_shard(0)
            silent = wait(lambda: all(p := stack.firing("ShardSilent")) and p, 600, "ShardSilent")
            run.to_shard_silent = time.monotonic() - killed
            if [[a["labels"]["shard"] for a in peer] for peer in silent] != [["0"], ["0"]]:
                raise BenchmarkError(f"ShardSilent is not for shard 0 alone: {silent}")
    return run


def cpu_count() -> int:
    return os.cpu_count() or 1


def report(args: argparse.Namespace, runs: list[Run]) -> None:
    sharded, single = runs
    print()
    print(
        f"{args.devices} devices ({args.interfaces} interfaces each), every {args.interval:g}s; "
        f"CPU as a share of all {cpu_count()} cores over {args.measure:g}s"
    )
    print(f"  {version_line(['prometheus', '--version'])}")
    vm_version = version_line(["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"])
    print(f"  victoria-metrics {vm_version} (Debian)")
    width = 28
    print(f"{'':<{width}} {f'{sharded.shards} shards':>18} {'1 shard (peer)':>18} {'ratio':>7}")

    def line(label: str, ours: float, peer: float, unit: str = "", digits: int = 1) -> None:
        ratio = f"{ours / peer:7.2f}" if peer else "      -"
        print(
            f"{label:<{width}} {ours:>17.{digits}f}{unit or ' '} "
            f"{peer:>17.{digits}f}{unit or ' '} {ratio}"
        )

    for k in range(sharded.shards):
        print(
            f"{f'shard {k}: targets, series':<{width}} "
            f"{f'{sharded.targets[k]}, {sharded.local_series[k]}':>18} "
            f"{f'{single.targets[0]}, {single.local_series[0]}' if k == 0 else '':>18}"
        )
    line("global view: series", sharded.global_series, single.global_series, digits=0)
    largest = max(range(sharded.shards), key=lambda k: sharded.cpu[f"prometheus {k}"])
    line(
        "largest shard Prometheus CPU",
        100 * sharded.cpu[f"prometheus {largest}"],
        100 * single.cpu["prometheus 0"],
        "%",
    )
    total = sum(sharded.cpu[f"prometheus {k}"] for k in range(sharded.shards))
    line("all shard Prometheus CPU", 100 * total, 100 * single.cpu["prometheus 0"], "%")
    rss = max(sharded.rss[f"prometheus {k}"] for k in range(sharded.shards))
    line("largest shard Prometheus RSS", rss / 2**20, single.rss["prometheus 0"] / 2**20, "M")
    exporters = sum(sharded.cpu[f"exporter {k}"] for k in range(sharded.shards))
    line("all exporters CPU", 100 * exporters, 100 * single.cpu["exporter 0"], "%")
    line(
        "VictoriaMetrics CPU",
        100 * sharded.cpu["victoria-metrics"],
        100 * single.cpu["victoria-metrics"],
        "%",
    )
    line(
        "VictoriaMetrics RSS",
        sharded.rss["victoria-metrics"] / 2**20,
        single.rss["victoria-metrics"] / 2**20,
        "M",
    )
    line("all scraped and in view", sharded.ready, single.ready, "s")
    line("device failure -> alert", sharded.to_alert, single.to_alert, "s")
    line("device failure -> incident", sharded.to_incident, single.to_incident, "s")
    line("shard killed -> ShardSilent", sharded.to_shard_silent, single.to_shard_silent, "s")
    print("checks: one shard per target (hashmod), each device's series once in the global")
    print("view, one alert and one incident per failed device, ShardSilent for the killed shard")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--measure", type=float, default=60.0)
    parser.add_argument("--interfaces", type=int, default=2)
    args = parser.parse_args(argv)
    if args.shards < 2 or args.devices <= args.shards:
        parser.error("--shards 2 or more, and more devices than shards")
    missing = missing_programs([*PROGRAMS, "snmpsim-command-responder"])
    if missing:
        print(f"shard_fleet: missing {', '.join(missing)} (make bench installs them)")
        return 1
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="scout-shard-fleet-") as tmp:
            runs = [
                run_one(args, shards, Path(tmp) / f"shards-{shards}") for shards in (args.shards, 1)
            ]
    except BenchmarkError as exc:
        print(f"shard_fleet: FAILED: {exc}")
        return 1
    report(args, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
