"""A small run of the labelled evaluation: Scout's detector must beat both baselines.

The full run is ``python benchmarks/anomaly_eval.py``; this one uses the
5-minute half of the seeded corpus, shortened, so it takes seconds. It can
fail: a detector change that loses to a rolling z-score or an IsolationForest
on F1 or on the NAB-style score by less than the margins below fails it.
"""

from __future__ import annotations

import pytest

from ai_sidecar.anomaly.detector import DetectorParams
from benchmarks.anomaly import detectors
from benchmarks.anomaly.generator import generate
from benchmarks.anomaly.scoring import Evaluation, evaluate

F1_MARGIN = 0.05
NAB_MARGIN = 15.0


@pytest.fixture(scope="module")
def results() -> dict[str, Evaluation]:
    corpus = generate(12, small=True, steps=(300.0,))[::2]
    truths = [series.truth for series in corpus]
    assert sum(len(t.events) for t in truths) >= 8
    evaluations = {}
    for name, detect in (
        ("scout", detectors.scout),
        ("rolling z-score", detectors.rolling_zscore),
        ("IsolationForest", detectors.isolation_forest),
    ):
        scores, micros = detect(corpus)
        evaluations[name] = evaluate(name, truths, scores, micros)
    return evaluations


@pytest.mark.parametrize("baseline", ["rolling z-score", "IsolationForest"])
def test_scout_beats_the_baseline_on_f1(results: dict[str, Evaluation], baseline: str) -> None:
    ours, theirs = results["scout"].events, results[baseline].events
    assert ours.f1 >= theirs.f1 + F1_MARGIN, (ours, theirs)


@pytest.mark.parametrize("baseline", ["rolling z-score", "IsolationForest"])
def test_scout_beats_the_baseline_on_nab(results: dict[str, Evaluation], baseline: str) -> None:
    assert results["scout"].nab >= results[baseline].nab + NAB_MARGIN


def test_normal_points_stay_below_the_alarm_level(results: dict[str, Evaluation]) -> None:
    # The threshold with the best F1 is at or above the detector's own alarm
    # level: normal points score low, an alarm is a clear high score.
    assert results["scout"].events.threshold >= DetectorParams().alarm_threshold
