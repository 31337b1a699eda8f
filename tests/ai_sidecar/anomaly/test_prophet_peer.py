"""The Prophet peer of the side-by-side benchmark: its band score and its lack of lookahead."""

from __future__ import annotations

import numpy as np

from benchmarks.anomaly import prophet_peer

DAY = 86_400.0
STEP = 600.0


def _seasonal(days: float) -> tuple[np.ndarray, np.ndarray]:
    t = 1_793_577_600.0 + np.arange(int(days * DAY / STEP)) * STEP
    rng = np.random.default_rng(3)
    values = 100 + 20 * np.sin(2 * np.pi * (t % DAY) / DAY) + rng.normal(0, 1, t.size)
    return t, values


def test_the_peer_scores_a_spike_outside_its_band_and_quiet_points_zero():
    t, values = _seasonal(4)
    spike = t.size - 20
    values[spike] += 200
    params = prophet_peer.PeerParams(window=3 * DAY, retrain_every=DAY)
    run = prophet_peer.run(t, values, params)
    assert run.fits == 3
    assert run.scores[spike] > 0.9
    inside = np.delete(run.scores[int(DAY / STEP) :], spike - int(DAY / STEP))
    # A 98 % band, but Prophet's is narrow on a short history: some ordinary
    # points fall just outside it (and score little); most score 0.
    assert np.mean(inside == 0) > 0.8
    assert np.median(inside[inside > 0]) < 0.5
    assert run.scores[: int(DAY / STEP)].max() == 0  # before the first fit, nothing is scored


def test_the_peer_never_looks_ahead():
    t, values = _seasonal(3)
    params = prophet_peer.PeerParams(window=2 * DAY, retrain_every=DAY)
    before = prophet_peer.run(t, values, params).scores
    changed = values.copy()
    boundary = int(2 * DAY / STEP)
    changed[boundary:] *= 5  # everything from the last interval on
    after = prophet_peer.run(t, changed, params).scores
    np.testing.assert_array_equal(before[:boundary], after[:boundary])
    assert after[boundary:].max() > 0.9
