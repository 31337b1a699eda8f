"""Drift of a signal's residuals: PSI of the recent ones against the training ones.

The residual of a point is its distance from the expected value in half-band
units, ``(value - expected) / ((upper - lower) / 2)``: comparable across
series and independent of the detector's inner channels. Training keeps the
decile edges of its residuals and the share in each bin; the scoring loop
counts each cycle's residuals into the same bins and keeps the counts of the
last ``window`` cycles. The population stability index of those shares against
the training shares is the drift statistic (0: same shape; above 0.25, by the
usual rule of thumb, a shift worth refitting for).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

BINS = 10
# Shares are floored so an empty bin gives a large but finite term.
SHARE_FLOOR = 1e-4
# Fewer recent residuals than this say nothing yet: drift reads 0.
MIN_RESIDUALS = 200


def residuals(
    values: NDArray[np.float64],
    expected: NDArray[np.float64],
    upper: NDArray[np.float64],
    lower: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Finite standardised residuals of the points given (missing ones left out)."""
    found = residual_per_point(values, expected, upper, lower)
    return found[np.isfinite(found)]


def residual_per_point(
    values: NDArray[np.float64],
    expected: NDArray[np.float64],
    upper: NDArray[np.float64],
    lower: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Each point's standardised residual, in place: NaN where missing or without a band."""
    half_band = (upper - lower) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        found = (values - expected) / half_band
    return np.where(half_band > 0, found, np.nan)


def reference(training: NDArray[np.float64]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Inner bin edges (deciles) of the training residuals and the share in each bin."""
    if training.size < MIN_RESIDUALS:
        return (), ()
    edges = np.unique(np.quantile(training, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, training), minlength=edges.size + 1)
    return tuple(map(float, edges)), tuple(map(float, counts / counts.sum()))


def psi(expected_shares: Sequence[float], observed_counts: NDArray[np.float64]) -> float:
    """Population stability index of ``observed_counts`` against ``expected_shares``."""
    total = float(observed_counts.sum())
    if total < MIN_RESIDUALS or not expected_shares:
        return 0.0
    expected = np.maximum(np.asarray(expected_shares, dtype=np.float64), SHARE_FLOOR)
    observed = np.maximum(observed_counts / total, SHARE_FLOOR)
    return float(np.sum((observed - expected) * np.log(observed / expected)))


class DriftMonitor:
    """Bin counts of the last ``window`` cycles' residuals, and their PSI against training."""

    def __init__(self, edges: Sequence[float], shares: Sequence[float], window: int) -> None:
        self._edges = np.asarray(edges, dtype=np.float64)
        self._shares = tuple(shares)
        self._cycles: deque[NDArray[np.float64]] = deque(maxlen=max(1, window))

    def add(self, found: NDArray[np.float64]) -> None:
        """Count one cycle's residuals (from :func:`residuals`)."""
        if not self._shares:
            return
        counts = np.bincount(np.searchsorted(self._edges, found), minlength=self._edges.size + 1)
        self._cycles.append(counts.astype(np.float64))

    @property
    def value(self) -> float:
        if not self._cycles:
            return 0.0
        return psi(self._shares, np.sum(self._cycles, axis=0))
