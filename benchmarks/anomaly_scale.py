"""The anomaly detector at the issue's scale: 10,000 series x 20,160 points (14 days at 1 m).

    python benchmarks/anomaly_scale.py [--series 10000] [--points 20160] [--chunk 1440]
                                       [--workers N]

Measures a full ``Detector.fit`` over the history (fed a day at a time, which
``fit`` supports: it is a replay, so chunks continue where the last stopped,
and the history never has to sit in memory whole: 10,000 x 20,160 float64
would be 1.6 GB on its own), then one ``update`` cycle of every series, and
the process's peak resident memory. The series are seasonal traffic-like
curves with noise, gaps and a few spikes, generated chunk by chunk from a
fixed seed. Targets from issue 12: fit <= 60 s on 2 cores, one cycle <= 1 s,
peak memory <= 1.5 GB. The fit is split over this process and ``--workers``
worker processes as the trainer splits it (one worker on 2 cores); the peak
memory is printed for this process and for the largest worker, and the CPU
each spent in the fit (on a shared machine the wall time stretches with the
load, the CPU does not). A benchmark: it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_sidecar.anomaly.detector import Detector, DetectorParams
from ai_sidecar.anomaly.fit_workers import FitProcesses, fit_worker_count

START = 1_793_577_600.0
STEP = 60.0


def history_chunk(
    rng: np.random.Generator, scale: np.ndarray, phase: np.ndarray, first: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    t = START + (first + np.arange(count)) * STEP
    daily = 0.5 + 0.5 * np.cos(2 * np.pi * ((t % 86_400) / 86_400)[None, :] - phase[:, None])
    values = scale[:, None] * (0.2 + 0.8 * daily) * (1 + rng.normal(0, 0.03, (scale.size, count)))
    values[rng.random(values.shape) < 0.001] = np.nan
    values[rng.random(values.shape) < 0.0002] *= 3
    return t, values


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=20_160)
    parser.add_argument("--chunk", type=int, default=1_440)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument(
        "--workers",
        type=int,
        default=fit_worker_count(),
        help="fit worker processes beside this one (default: the trainer's, one on 2 cores)",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    scale = rng.uniform(1e8, 3e9, args.series)
    phase = rng.uniform(0, 2 * np.pi, args.series)
    detector = Detector(DetectorParams(step=STEP), args.series)
    generating = fitting = fit_cpu = 0.0
    points = 0
    with FitProcesses(args.workers) as workers:
        for first in range(0, args.points, args.chunk):
            count = min(args.chunk, args.points - first)
            started = time.perf_counter()
            t, values = history_chunk(rng, scale, phase, first, count)
            generating += time.perf_counter() - started
            cpu_started = time.process_time()
            report = detector.fit(t, values, workers=workers)
            fit_cpu += time.process_time() - cpu_started
            fitting += report.seconds
            points += count
    t, values = history_chunk(rng, scale, phase, args.points, 1)
    cycles = []
    for index in range(5):
        started = time.perf_counter()
        detector.update(float(t[0]) + index * STEP, values[:, 0])
        cycles.append(time.perf_counter() - started)
    total = args.series * points
    print(f"series {args.series:,}, points per series {points:,} ({total:,} points)")
    print(f"fit: {fitting:.1f} s ({fitting / total * 1e9:.0f} ns per point per series)")
    # CPU seconds: on a machine shared with other work the wall time stretches
    # with the load, the CPU each process spent does not. On two idle cores the
    # fit takes about the larger of the two.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"fit CPU: this process {fit_cpu:.1f} s, fit workers "
        f"{children.ru_utime + children.ru_stime:.1f} s"
    )
    print(f"one update cycle of all series: median {1e3 * float(np.median(cycles)):.1f} ms")
    print(
        f"peak RSS: {peak_rss_mib():.0f} MiB, largest fit worker "
        f"{peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB "
        f"(history generation took {generating:.1f} s)"
    )
    print(f"state: {sum(a.nbytes for a in detector.state().values()) / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
