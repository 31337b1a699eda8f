"""Scout's detector side by side with the peer's approach: one Prophet model per series.

    python benchmarks/anomaly_prophet.py [--sample 12] [--cost-series 3] [--small]

Two comparisons on the same machine, back to back:

- **Cost per series**, on the scale benchmark's series (14 days at 1 minute,
  ``benchmarks/anomaly_scale.py``'s generator): the peer fits one Prophet model
  per series on the 14 days and predicts the next cycle, every cycle; Scout
  fits its detector once over the same history (vectorised across series, so
  its cost per series is the fit of ``--scout-series`` series divided by their
  number) and then updates every series each cycle.
- **Quality**, on a sample of the labelled evaluation set
  (``benchmarks/anomaly_eval.py``'s corpus, every k-th series): the peer refits
  every ``--retrain-hours`` on its trailing window and scores the next
  interval; both at their own F1-best and NAB-best thresholds on the sample.

A benchmark: it prints, it asserts nothing. Prophet needs about a second or
two per fit here, so the default sample keeps the run to a few minutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_sidecar.anomaly.detector import Detector, DetectorParams
from benchmarks.anomaly import detectors, prophet_peer
from benchmarks.anomaly.generator import generate
from benchmarks.anomaly.scoring import Evaluation, evaluate
from benchmarks.anomaly_scale import STEP, history_chunk

CYCLE_SECONDS = 60.0  # one scoring cycle of the scale benchmark: one new point per series


def scale_series(count: int, points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(1e8, 3e9, count)
    phase = rng.uniform(0, 2 * np.pi, count)
    return history_chunk(rng, scale, phase, 0, points + 1)


def cost(args: argparse.Namespace) -> None:
    points = args.points
    t, values = scale_series(max(args.scout_series, args.cost_series), points, args.seed)
    history_t, history = t[:points], values[:, :points]
    detector = Detector(DetectorParams(step=STEP), args.scout_series)
    began = time.perf_counter()
    detector.fit(history_t, history[: args.scout_series])
    scout_fit = (time.perf_counter() - began) / args.scout_series
    began = time.perf_counter()
    detector.update(float(t[points]), values[: args.scout_series, points])
    scout_cycle = (time.perf_counter() - began) / args.scout_series

    params = prophet_peer.PeerParams()
    peer_fit = peer_cycle = 0.0
    for row in range(args.cost_series):
        began = time.perf_counter()
        model = prophet_peer.fit(history_t, history[row], params)
        fitted = time.perf_counter()
        forecast = prophet_peer.predict(model, t[points:])
        prophet_peer.band_scores(values[row, points:], forecast)
        peer_fit += fitted - began
        peer_cycle += time.perf_counter() - began  # the peer refits every cycle
    peer_fit /= args.cost_series
    peer_cycle /= args.cost_series
    print(f"cost per series, {points:,} points of history at {STEP:.0f} s:")
    print("| | Scout | Prophet per series | ratio (Prophet / Scout) |")
    print("|---|---|---|---|")
    print(
        f"| training | {scout_fit * 1e3:.2f} ms | {peer_fit * 1e3:.0f} ms",
        f"| {peer_fit / scout_fit:,.0f}x |",
    )
    print(
        f"| one scoring cycle | {scout_cycle * 1e6:.2f} µs | {peer_cycle * 1e3:.0f} ms"
        f" (refit + predict) | {peer_cycle / scout_cycle:,.0f}x |"
    )
    fleet = 10_000
    print(
        f"at {fleet:,} series: Scout {scout_cycle * fleet:.3f} s per cycle;"
        f" the peer {peer_cycle * fleet / 3600:.1f} CPU-hours per cycle"
        f" (a cycle is {CYCLE_SECONDS:.0f} s)"
    )


def quality(args: argparse.Namespace) -> None:
    corpus = generate(args.seed, small=args.small)
    chosen = list(range(0, len(corpus), max(1, len(corpus) // args.sample)))[: args.sample]
    sample = [corpus[i] for i in chosen]
    # Scout runs as deployed, vectorised across every series of a step: its
    # cost per point is the whole corpus's, and the sample's scores are kept.
    all_scores, scout_micros = detectors.scout(corpus)
    scout_scores = [all_scores[i] for i in chosen]
    params = prophet_peer.PeerParams(retrain_every=args.retrain_hours * 3600.0)
    began = time.perf_counter()
    runs = prophet_peer.run_all([(s.timestamps, s.values) for s in sample], params)
    peer_seconds = time.perf_counter() - began
    points = sum(s.values.shape[0] for s in sample)
    truths = [s.truth for s in sample]
    results: list[Evaluation] = [
        evaluate("scout", truths, scout_scores, scout_micros),
        evaluate(
            "Prophet per series", truths, [r.scores for r in runs], peer_seconds / points * 1e6
        ),
    ]
    fits = sum(r.fits for r in runs)
    print(
        f"\nquality on {len(sample)} of the {len(corpus)} labelled series ({points:,} points,"
        f" {sum(len(s.events) for s in sample)} events); the peer refits every"
        f" {args.retrain_hours:g} h ({fits} fits):"
    )
    print(
        "| detector | precision | recall | F1 | false alarms / series-day | NAB-style",
        "| µs per point |",
    )
    print("|---|---|---|---|---|---|---|")
    for result in results:
        m = result.events
        print(
            f"| {result.name} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f}"
            f" | {m.false_alarms_per_day:.2f} | {result.nab:.1f} | {result.micros_per_point:,.1f} |"
        )
    print(
        "\nper series (F1 at each detector's corpus-wide threshold is not per series;"
        " this is the cost):"
    )
    for series, run in zip(sample, runs, strict=True):
        per_point = (run.fit_seconds + run.predict_seconds) / series.values.shape[0] * 1e6
        print(
            f"  {series.name}: Prophet {run.fits} fits, {run.fit_seconds:.1f} s fitting,"
            f" {per_point:,.0f} µs per point; Scout {scout_micros:.1f} µs per point"
            f" ({per_point / scout_micros:,.0f}x)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--points", type=int, default=20_160, help="history per series (1 min)")
    parser.add_argument("--cost-series", type=int, default=3, help="Prophet fits for the cost")
    parser.add_argument("--scout-series", type=int, default=1_000)
    parser.add_argument("--sample", type=int, default=12, help="labelled series compared")
    parser.add_argument("--retrain-hours", type=float, default=6.0)
    parser.add_argument("--small", action="store_true", help="shorter labelled series")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    if not args.skip_cost:
        cost(args)
    if not args.skip_quality:
        quality(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
