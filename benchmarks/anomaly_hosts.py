"""The per-host multivariate models at scale: one cycle's cost and memory for N hosts.

    python benchmarks/anomaly_hosts.py [--hosts 1000] [--signals 9]

Feeds ``HostModels`` residuals of ``--signals`` signals per host until every
host has a model (the fits, at most 20 a cycle, are timed apart), then times
scoring cycles of every host. The peer, side by side: scikit-learn scoring the
same forests itself (``IsolationForest.score_samples`` per host, as a model
kept as scikit-learn objects would be scored), timed on ``--peer-hosts`` hosts
and scaled to all of them, with the size of its pickled forests. A benchmark:
it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sklearn.ensemble import IsolationForest

from ai_sidecar.anomaly.hosts import FITS_PER_CYCLE, TREE_SAMPLES, HostModels, _Whitening
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
    parser.add_argument("--peer-hosts", type=int, default=50, help="hosts scored by the peer")
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
    peer_seconds, peer_bytes, ours_bytes = peer(models, config.trees, args.peer_hosts)
    per_host = float(np.median(scoring)) / args.hosts
    print(f"hosts {args.hosts:,} x {args.signals} signals ({2 * args.signals} features)")
    print(f"learning cycle (no model yet): {learning / (config.min_samples - 1) * 1e3:.1f} ms")
    print(
        f"cycles with fits ({FITS_PER_CYCLE} a cycle): median {np.median(fitting) * 1e3:.0f} ms,"
        f" {len(fitting)} cycles until every host had a model"
    )
    print(f"scoring cycle of every host: median {np.median(scoring) * 1e3:.0f} ms")
    print(f"peak RSS {rss:.0f} MiB (ring of {args.samples} samples per host)")
    print(
        f"peer, scikit-learn score_samples: {peer_seconds * 1e3:.2f} ms a host"
        f" ({peer_seconds * args.hosts:.1f} s for every host) against Scout's"
        f" {per_host * 1e3:.3f} ms a host: ratio {peer_seconds / per_host:,.0f}x"
    )
    print(
        f"forest memory a host: scikit-learn pickled {peer_bytes / 1024:.0f} KiB,"
        f" Scout's flat arrays {ours_bytes / 1024:.0f} KiB: ratio {peer_bytes / ours_bytes:.1f}x"
    )
    return 0


def peer(models: HostModels, trees: int, hosts: int) -> tuple[float, float, float]:
    """scikit-learn fitting the same forests (same seed and settings) and scoring
    each host's latest sample itself: seconds per host, bytes per forest pickled
    and bytes of Scout's flat arrays per host."""
    timings, sizes, ours = [], [], []
    for name, state in list(models.hosts.items())[:hosts]:
        whitening = _Whitening.fit(state.samples.astype(np.float64))
        samples = whitening.apply(state.samples.astype(np.float64))
        seed = int.from_bytes(hashlib.blake2s(name.encode(), digest_size=4).digest(), "big")
        fitted = IsolationForest(
            n_estimators=trees, max_samples=min(TREE_SAMPLES, samples.shape[0]), random_state=seed
        ).fit(samples)
        began = time.perf_counter()
        fitted.score_samples(samples[-1:])
        timings.append(time.perf_counter() - began)
        sizes.append(len(pickle.dumps(fitted)))
        forest = state.forest
        assert forest is not None
        ours.append(
            sum(
                getattr(forest, a).nbytes
                for a in ("left", "right", "feature", "threshold", "leaf_depth")
            )
        )
    return float(np.median(timings)), float(np.median(sizes)), float(np.median(ours))


if __name__ == "__main__":
    sys.exit(main())
