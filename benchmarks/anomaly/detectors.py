"""The detectors the evaluation compares: Scout's and two baselines.

Each takes the corpus and returns one score array per series (higher = more
anomalous) and the time spent per point. None looks ahead: the rolling
z-score uses only earlier points; the IsolationForest is fitted on the
probation part of each series (the first 15 %, which the scorer ignores) and
then scores every point on its own.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import IsolationForest

from ai_sidecar.anomaly.backtest import PROBATION
from ai_sidecar.anomaly.detector import Detector, DetectorParams, default_rest_period
from benchmarks.anomaly.generator import LabelledSeries

Scores = list[NDArray[np.float64]]


def scout(corpus: Sequence[LabelledSeries], **overrides: Any) -> tuple[Scores, float]:
    """Scout's detector, all series of one step and length through one vectorised Detector."""
    groups: dict[tuple[float, int], list[int]] = defaultdict(list)
    for index, series in enumerate(corpus):
        groups[(series.step, series.values.shape[0])].append(index)
    result: dict[int, NDArray[np.float64]] = {}
    started = time.perf_counter()
    for (step, length), members in groups.items():
        params = DetectorParams(
            step=step,
            rest_period=default_rest_period(step),
            **overrides,
        )
        detector = Detector(params, len(members))
        values = np.stack([corpus[i].values for i in members])
        timestamps = corpus[members[0]].timestamps
        out = np.empty((len(members), length))
        for column in range(length):
            out[:, column] = detector.update(float(timestamps[column]), values[:, column]).score
        for row, index in enumerate(members):
            result[index] = np.nan_to_num(out[row])
    points = sum(s.values.shape[0] for s in corpus)
    return [result[i] for i in range(len(corpus))], (time.perf_counter() - started) / points * 1e6


def rolling_zscore(corpus: Sequence[LabelledSeries], window: int = 120) -> tuple[Scores, float]:
    """|value - mean| / std over the previous ``window`` points."""
    started = time.perf_counter()
    scores = []
    for series in corpus:
        y = series.values
        padded = np.concatenate([np.full(window, np.nan), y])
        windows = np.lib.stride_tricks.sliding_window_view(padded[:-1], window)
        with np.errstate(invalid="ignore", divide="ignore"):
            counts = np.sum(np.isfinite(windows), axis=1)
            sums = np.nansum(windows, axis=1)
            mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            sq = np.nansum(windows**2, axis=1)
            var = np.where(counts > 1, sq / np.maximum(counts, 1) - mean**2, np.nan)
            z = np.abs(y - mean) / np.sqrt(np.maximum(var, 1e-24))
        scores.append(np.nan_to_num(np.minimum(z / 10.0, 1.0)))
    points = sum(s.values.shape[0] for s in corpus)
    return scores, (time.perf_counter() - started) / points * 1e6


def isolation_forest(corpus: Sequence[LabelledSeries], seed: int = 0) -> tuple[Scores, float]:
    """IsolationForest on (value, first difference), fitted on each series' probation part."""
    started = time.perf_counter()
    scores = []
    for series in corpus:
        y = series.values
        filled = y.copy()
        # Forward-fill gaps for the features only; gap points are scored 0 below.
        for i in range(1, filled.shape[0]):
            if not np.isfinite(filled[i]):
                filled[i] = filled[i - 1]
        filled = np.nan_to_num(filled)
        features = np.column_stack([filled, np.concatenate([[0.0], np.diff(filled)])])
        train = features[: int(PROBATION * y.shape[0])]
        model = IsolationForest(n_estimators=100, random_state=seed).fit(train)
        score = -model.score_samples(features)
        scores.append(np.where(np.isfinite(y), score, 0.0))
    points = sum(s.values.shape[0] for s in corpus)
    return scores, (time.perf_counter() - started) / points * 1e6
