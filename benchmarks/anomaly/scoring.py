"""The evaluation's verdict per detector: each at the threshold that suits it best.

The metrics themselves are ``ai_sidecar.anomaly.backtest`` (the same code as
``scout-sidecar anomaly backtest``). Each detector gets the threshold that
maximises its own corpus-wide F1 (event metrics) and, separately, its own
NAB-style score, as the public benchmark does, searched over the shared
candidates and a fine even grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ai_sidecar.anomaly.backtest import (
    EventMetrics,
    Truth,
    candidate_thresholds,
    event_metrics,
    nab_score,
)

# Even steps of the fine threshold grid.
FINE_GRID = 200


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One detector's scores on the corpus, at its best thresholds."""

    name: str
    events: EventMetrics  # at the F1-best threshold
    nab: float  # at the NAB-best threshold
    nab_threshold: float
    micros_per_point: float


def evaluate(
    name: str,
    truths: Sequence[Truth],
    scores: Sequence[NDArray[np.float64]],
    micros_per_point: float,
) -> Evaluation:
    # The shared candidates plus a fine grid: the top of a saturating score
    # scale packs several decades of tail into a few hundredths.
    top = max(float(np.nan_to_num(s).max()) for s in scores) if scores else 0.0
    fine = np.linspace(0.005, 1.0, FINE_GRID) * top
    thresholds = sorted(set(candidate_thresholds(scores)) | {float(v) for v in fine if v > 0})
    best_events = max((event_metrics(truths, scores, t) for t in thresholds), key=lambda m: m.f1)
    nab_best, nab_threshold = max((nab_score(truths, scores, t), t) for t in thresholds)
    return Evaluation(name, best_events, nab_best, nab_threshold, micros_per_point)
