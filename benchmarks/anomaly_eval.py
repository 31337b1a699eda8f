"""The anomaly detector on its labelled evaluation set, beside two baselines.

    python benchmarks/anomaly_eval.py [--small] [--seed 12] [--json]

Generates the seeded corpus (benchmarks/anomaly/generator.py), scores it with
Scout's detector, a rolling z-score and an IsolationForest, and prints
event-level precision, recall, F1, median detection delay and false alarms per
series-day (each at the detector's F1-best threshold), the NAB-style
standard-profile score (at its NAB-best threshold) and microseconds per point.
A benchmark: it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.anomaly import detectors
from benchmarks.anomaly.generator import generate
from benchmarks.anomaly.scoring import Evaluation, evaluate


def run(seed: int, small: bool) -> list[Evaluation]:
    corpus = generate(seed, small=small)
    results = []
    for name, detect in (
        ("scout", detectors.scout),
        ("rolling z-score", detectors.rolling_zscore),
        ("IsolationForest", detectors.isolation_forest),
    ):
        scores, micros = detect(corpus)
        results.append(evaluate(name, [s.truth for s in corpus], scores, micros))
    return results


def as_row(result: Evaluation) -> dict[str, float | str]:
    m = result.events
    return {
        "detector": result.name,
        "precision": round(m.precision, 3),
        "recall": round(m.recall, 3),
        "f1": round(m.f1, 3),
        "median_delay_points": m.median_delay,
        "false_alarms_per_series_day": round(m.false_alarms_per_day, 3),
        "nab_standard": round(result.nab, 1),
        "us_per_point": round(result.micros_per_point, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--small", action="store_true", help="shorter series (a quick run)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    corpus = generate(args.seed, small=args.small)
    events = sum(len(s.events) for s in corpus)
    rows = [as_row(r) for r in run(args.seed, args.small)]
    if args.json:
        print(json.dumps({"series": len(corpus), "events": events, "results": rows}, indent=2))
        return 0
    print(f"{len(corpus)} series, {events} labelled events, seed {args.seed}")
    print(
        "| detector | precision | recall | F1 | median delay (points) "
        "| false alarms / series-day | NAB standard | µs/point |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
