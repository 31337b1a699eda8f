"""The per-host multivariate models at scale: one cycle's cost and memory for N hosts.

    python benchmarks/anomaly_hosts.py [--hosts 1000] [--signals 9]

Feeds ``HostModels`` residuals of ``--signals`` signals per host until every
host has a model (the fits, at most 20 a cycle, are timed apart), then times
scoring cycles of every host. A benchmark: it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_sidecar.anomaly.hosts import FITS_PER_CYCLE, HostModels
from ai_sidecar.config import HostModelsConfig


class Signal:
    def __init__(self, name: str, hosts: int) -> None:
        self.name = name
        self.keys = [(("instance", f"host-{h}"),) for h in range(hosts)]
        self.residual = np.zeros(hosts)

    def latest_residuals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.arange(len(self.keys))
        return rows, self.residual, np.zeros(rows.size, bool)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--signals", type=int, default=9)
    parser.add_argument("--samples", type=int, default=2016, help="ring size per host")
    args = parser.parse_args()
    config = HostModelsConfig.model_validate(
        {"sample_every": "1m", "min_samples": 144, "max_samples": args.samples}, strict=False
    )
    models = HostModels(config)
    signals = [Signal(f"s{n}", args.hosts) for n in range(args.signals)]
    rng = np.random.default_rng(1)
    now = 0.0

    def cycle() -> float:
        nonlocal now
        now += 60.0
        common = rng.normal(0, 1, args.hosts)
        for signal in signals:
            signal.residual = common + rng.normal(0, 0.3, args.hosts)
        began = time.perf_counter()
        models.observe(signals, now)
        return time.perf_counter() - began

    learning = sum(cycle() for _ in range(config.min_samples - 1))
    fitting = []
    while any(state.forest is None for state in models.hosts.values()):
        fitting.append(cycle())
    scoring = [cycle() for _ in range(5)]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"hosts {args.hosts:,} x {args.signals} signals ({2 * args.signals} features)")
    print(f"learning cycle (no model yet): {learning / (config.min_samples - 1) * 1e3:.1f} ms")
    print(
        f"cycles with fits ({FITS_PER_CYCLE} a cycle): median {np.median(fitting) * 1e3:.0f} ms,"
        f" {len(fitting)} cycles until every host had a model"
    )
    print(f"scoring cycle of every host: median {np.median(scoring) * 1e3:.0f} ms")
    print(f"peak RSS {rss:.0f} MiB (ring of {args.samples} samples per host)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
