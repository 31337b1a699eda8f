"""The peer's approach, rebuilt for a side-by-side run: one Prophet model per series.

The best-known open-source Prometheus anomaly detector fits one Prophet model
per series on a trailing window of history, refits it every retraining
interval, and flags a point outside the model's ``yhat_lower``..``yhat_upper``
band. Here it is rebuilt from that description on Prophet itself (PyPI
``prophet``), without lookahead: the model used for a point was fitted only
on points before the start of its retraining interval.

The peer flags, it does not score; to rank it at its best threshold like the
other detectors, a point's score is how far outside the band it lies, in
half-band widths, squashed to 0..1 (``1 - exp(-distance)``); inside the band
it is 0.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from prophet import Prophet

# Prophet logs each fit through cmdstanpy at INFO (thousands of lines a run).
# cmdstanpy adds its own INFO handler on first use unless one is there already.
logging.getLogger("cmdstanpy").addHandler(logging.NullHandler())
for _noisy in ("cmdstanpy", "prophet", "prophet.plot"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)


@contextmanager
def _quiet_prophet() -> Iterator[None]:
    """Prophet 1.5 calls pandas APIs pandas deprecates; those warnings are theirs, not ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


@dataclass(frozen=True, slots=True)
class PeerParams:
    """The peer's knobs: its trailing training window and retraining interval, in seconds."""

    window: float = 14 * 86_400.0
    retrain_every: float = 6 * 3_600.0
    # Below this many finite points a fit is not attempted; those points score 0.
    min_points: int = 48
    interval_width: float = 0.98


@dataclass(frozen=True, slots=True)
class PeerRun:
    scores: NDArray[np.float64]
    fits: int
    fit_seconds: float
    predict_seconds: float


def _frame(timestamps: NDArray[np.float64], values: NDArray[np.float64]) -> pd.DataFrame:
    return pd.DataFrame({"ds": pd.to_datetime(timestamps, unit="s"), "y": values})


def fit(timestamps: NDArray[np.float64], values: NDArray[np.float64], params: PeerParams) -> Any:
    """One Prophet model on the finite points given (the peer's daily and weekly seasonality)."""
    finite = np.isfinite(values)
    span = float(timestamps[-1] - timestamps[0]) if timestamps.size else 0.0
    model = Prophet(
        interval_width=params.interval_width,
        daily_seasonality=span >= 2 * 86_400,
        weekly_seasonality=span >= 14 * 86_400,
        yearly_seasonality=False,
        uncertainty_samples=200,
    )
    with _quiet_prophet():
        model.fit(_frame(timestamps[finite], values[finite]))
    return model


def predict(model: Any, timestamps: NDArray[np.float64]) -> pd.DataFrame:
    """The forecast and its band at ``timestamps``, the same on every run.

    Prophet draws the band's uncertainty from NumPy's global generator; seeding
    it keeps a replay repeatable (and the no-lookahead test meaningful).
    """
    np.random.seed(0)  # Prophet reads the legacy global generator
    with _quiet_prophet():
        return model.predict(pd.DataFrame({"ds": pd.to_datetime(timestamps, unit="s")}))


def band_scores(values: NDArray[np.float64], forecast: pd.DataFrame) -> NDArray[np.float64]:
    """0 inside the band; ``1 - exp(-d)`` outside, ``d`` in half-band widths beyond it."""
    expected = forecast["yhat"].to_numpy()
    upper = forecast["yhat_upper"].to_numpy()
    lower = forecast["yhat_lower"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        above = (values - upper) / np.maximum(upper - expected, 1e-12)
        below = (lower - values) / np.maximum(expected - lower, 1e-12)
        distance = np.maximum(np.maximum(above, below), 0.0)
    return np.where(np.isfinite(values), 1.0 - np.exp(-np.nan_to_num(distance)), 0.0)


def run(
    timestamps: NDArray[np.float64], values: NDArray[np.float64], params: PeerParams
) -> PeerRun:
    """Score one series as the peer would run live: refit every interval, score the next one."""
    scores = np.zeros(values.shape[0])
    fits = 0
    fit_seconds = predict_seconds = 0.0
    start = float(timestamps[0])
    boundary = start + params.retrain_every
    while boundary <= float(timestamps[-1]):
        history = (timestamps >= boundary - params.window) & (timestamps < boundary)
        upcoming = (timestamps >= boundary) & (timestamps < boundary + params.retrain_every)
        if np.count_nonzero(np.isfinite(values[history])) >= params.min_points:
            began = time.perf_counter()
            model = fit(timestamps[history], values[history], params)
            fitted = time.perf_counter()
            forecast = predict(model, timestamps[upcoming])
            fit_seconds += fitted - began
            predict_seconds += time.perf_counter() - fitted
            scores[upcoming] = band_scores(values[upcoming], forecast)
            fits += 1
        boundary += params.retrain_every
    return PeerRun(scores, fits, fit_seconds, predict_seconds)


def run_all(
    series: Sequence[tuple[NDArray[np.float64], NDArray[np.float64]]], params: PeerParams
) -> list[PeerRun]:
    return [run(timestamps, values, params) for timestamps, values in series]
