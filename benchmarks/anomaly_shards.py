"""Anomaly training split over sidecar replicas: 100,000 series in 10 shards, run in turn.

    python benchmarks/anomaly_shards.py [--hosts 2000] [--ports 50] [--shards 10]
                                        [--points 20160] [--chunk 1440] [--workers N]

The series are ``--hosts`` devices x ``--ports`` interfaces, named as the
``interface_bits`` signal keeps them (``job``, ``instance``, ``ifIndex``,
``direction``). Each shard runs in a process of its own, one after another,
as replica ``i`` of ``anomaly.shard: {index: i, count: N}`` would: it picks
its share of the 100,000 series with the sidecar's own
:class:`~ai_sidecar.anomaly.shards.Share` (timed), then fits a detector on
its share's history exactly as ``benchmarks/anomaly_scale.py`` does (seasonal
traffic-like curves generated and fed a day at a time, the fit split over
this process and ``--workers`` worker processes as the trainer splits it)
and runs one update cycle. Each shard prints its series, selection time,
fit wall and CPU time and peak resident memory (its own and its largest fit
worker's); the parent then checks that the shards' series, put together,
are every series exactly once, and prints each shard's figures against the
mean shard (the peer of a shard is its siblings: a split is as good as its
worst share). A benchmark: it prints, it asserts nothing but the union.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_sidecar.anomaly.detector import Detector, DetectorParams
from ai_sidecar.anomaly.fit_workers import FitProcesses, fit_worker_count
from ai_sidecar.anomaly.shards import Share
from ai_sidecar.anomaly.signals import SeriesKey, series_key
from benchmarks.anomaly_scale import STEP, history_chunk, peak_rss_mib

KEEP = ("job", "instance", "ifIndex", "direction")


def all_series(hosts: int, ports: int) -> list[SeriesKey]:
    """Every series of the fleet, in a fixed order (its index is the series' number)."""
    return [
        series_key(
            {"job": "snmp", "instance": f"sw-{h:05d}", "ifIndex": str(p), "direction": d}, KEEP
        )
        for h in range(hosts)
        for p in range(1, ports // 2 + 1)
        for d in ("in", "out")
    ]


def run_shard(args: argparse.Namespace) -> dict[str, float | list[int]]:
    """One replica's training: select its share, fit it, one update cycle; its figures."""
    keys = all_series(args.hosts, args.ports)
    share = Share.of(args.shard, args.shards)
    started = time.perf_counter()
    mine = [number for number, key in enumerate(keys) if share.owns(key)]
    selecting = time.perf_counter() - started
    del keys
    rng = np.random.default_rng(args.seed + args.shard)
    scale = rng.uniform(1e8, 3e9, len(mine))
    phase = rng.uniform(0, 2 * np.pi, len(mine))
    detector = Detector(DetectorParams(step=STEP), len(mine))
    fit_wall = fit_cpu = 0.0
    with FitProcesses(args.workers) as workers:
        for first in range(0, args.points, args.chunk):
            count = min(args.chunk, args.points - first)
            t, values = history_chunk(rng, scale, phase, first, count)
            cpu_started, wall_started = time.process_time(), time.perf_counter()
            detector.fit(t, values, workers=workers)
            fit_cpu += time.process_time() - cpu_started
            fit_wall += time.perf_counter() - wall_started
    t, values = history_chunk(rng, scale, phase, args.points, 1)
    started = time.perf_counter()
    detector.update(float(t[0]), values[:, 0])
    cycle = time.perf_counter() - started
    workers_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "series": len(mine),
        "select_s": selecting,
        "fit_wall_s": fit_wall,
        "fit_cpu_s": fit_cpu,
        "workers_cpu_s": workers_cpu.ru_utime + workers_cpu.ru_stime,
        "cycle_ms": cycle * 1e3,
        "peak_mib": peak_rss_mib(),
        "worker_peak_mib": peak_rss_mib(resource.RUSAGE_CHILDREN),
        "owned": mine,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--ports", type=int, default=50, help="series per host (in and out)")
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--points", type=int, default=20_160)
    parser.add_argument("--chunk", type=int, default=1_440)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument(
        "--workers",
        type=int,
        default=fit_worker_count(),
        help="fit worker processes beside each shard's (default: the trainer's)",
    )
    parser.add_argument("--shard", type=int, help=argparse.SUPPRESS)  # one shard's run
    args = parser.parse_args()
    if args.shard is not None:
        print(json.dumps(run_shard(args)))
        return 0
    total = args.hosts * (args.ports // 2) * 2
    print(
        f"{total:,} series ({args.hosts:,} hosts x {args.ports // 2 * 2}) in {args.shards} shards,"
        f" {args.points:,} points per series, fit workers per shard: {args.workers}"
    )
    figures = []
    for shard in range(args.shards):
        argv = [sys.executable, __file__, *sys.argv[1:], "--shard", str(shard)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        found = json.loads(done.stdout.splitlines()[-1])
        figures.append(found)
        print(
            f"shard {shard}: {found['series']:,} series, selection {found['select_s']:.2f} s,"
            f" fit {found['fit_wall_s']:.1f} s wall, CPU {found['fit_cpu_s']:.1f} s"
            f" + workers {found['workers_cpu_s']:.1f} s, one cycle {found['cycle_ms']:.1f} ms,"
            f" peak RSS {found['peak_mib']:.0f} MiB (+ worker {found['worker_peak_mib']:.0f} MiB)",
            flush=True,
        )
    seen = Counter(number for found in figures for number in found["owned"])
    once = sum(1 for count in seen.values() if count == 1)
    twice = sum(1 for count in seen.values() if count > 1)
    missing = total - len(seen)
    print(
        f"union: {len(seen):,} of {total:,} series, {once:,} exactly once, {twice} more than once,"
    )
    print(f"       {missing} in no shard")
    mean = {
        name: float(np.mean([f[name] for f in figures])) for name in figures[0] if name != "owned"
    }
    worst = {name: max(f[name] for f in figures) for name in mean}
    ratios = {name: worst[name] / mean[name] for name in ("series", "fit_wall_s", "fit_cpu_s")}
    print(
        f"worst shard / mean shard: series {ratios['series']:.2f},"
        f" fit wall {ratios['fit_wall_s']:.2f}, fit CPU {ratios['fit_cpu_s']:.2f},"
        f" peak RSS {worst['peak_mib'] / mean['peak_mib']:.2f}"
    )
    return 0 if once == total else 1


if __name__ == "__main__":
    sys.exit(main())
