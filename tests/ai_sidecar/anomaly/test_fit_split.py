"""A fit split over worker processes, and the cheaper passes of a step, leave the same detector.

The fit's speed comes from splitting the series (they are independent) and
from skipping work whose result is known; none of it may change a bit of the
state or of a score.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Future

import numpy as np
import pytest
from numpy.typing import NDArray

from ai_sidecar.anomaly import detector as detector_module
from ai_sidecar.anomaly.detector import (
    MIN_SERIES_PER_PART,
    Detector,
    DetectorParams,
    StateArrays,
    replay_part,
)
from ai_sidecar.anomaly.fit_workers import FitProcesses, fit_worker_count

START = 1_793_577_600.0


class InlineWorkers:
    """ReplayWorkers that replay in the caller, counting what they were given."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.slices: list[int] = []

    def submit(
        self,
        params: DetectorParams,
        state: StateArrays,
        timestamps: NDArray[np.float64],
        values: NDArray[np.float64],
    ) -> Future[tuple[StateArrays, NDArray[np.int64]]]:
        self.slices.append(values.shape[0])
        future: Future[tuple[StateArrays, NDArray[np.int64]]] = Future()
        future.set_result(replay_part(params, state, timestamps, values))
        return future


def history(n: int, points: int, seed: int = 5) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    t = START + np.arange(points, dtype=np.float64) * 60.0
    level = rng.uniform(1, 1e6, n)[:, None]
    values: NDArray[np.float64] = level * (1 + 0.05 * rng.normal(size=(n, points)))
    values[rng.random(values.shape) < 0.02] = np.nan
    values[rng.random(values.shape) < 0.002] *= 4
    values[: n // 10, points // 2 :] = np.round(values[: n // 10, points // 2 :], -5)
    return t, values


def assert_same_detector(a: Detector, b: Detector) -> None:
    left, right = a.state(), b.state()
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def test_a_split_fit_leaves_the_single_process_state_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small chunks: the slices' state makes several round trips.
    monkeypatch.setattr(detector_module, "SPLIT_CHUNK_POINTS", 70)
    n = 3 * MIN_SERIES_PER_PART + 7
    t, values = history(n, 260)
    params = DetectorParams(warmup_points=50)
    single = Detector(params, n)
    single_report = single.fit(t[:200], values[:, :200])
    single.fit(t[200:], values[:, 200:])
    split = Detector(params, n)
    workers = InlineWorkers(count=2)
    split_report = split.fit(t[:200], values[:, :200], workers)
    split.fit(t[200:], values[:, 200:], workers)
    assert_same_detector(single, split)
    assert split_report.points_excluded == single_report.points_excluded > 0
    assert split_report.alarms == single_report.alarms
    # Three parts (this process and two workers), 200 points in chunks of 70,
    # then 60 points in one chunk: two worker slices per chunk.
    assert len(workers.slices) == 2 * (3 + 1)
    assert workers.slices == [2 * n // 3 - n // 3, n - 2 * n // 3] * 4
    for i in range(5):
        column = values[:, 200 + i]
        np.testing.assert_array_equal(
            single.update(t[-1] + 60.0 * (i + 1), column).score,
            split.update(t[-1] + 60.0 * (i + 1), column).score,
        )


def test_a_signal_too_small_to_split_stays_in_the_caller() -> None:
    n = 2 * MIN_SERIES_PER_PART - 1
    t, values = history(n, 30)
    workers = InlineWorkers(count=1)
    Detector(DetectorParams(), n).fit(t, values, workers)
    assert workers.slices == []


def test_fit_processes_split_a_fit_over_a_real_worker() -> None:
    n = 2 * MIN_SERIES_PER_PART
    t, values = history(n, 40, seed=6)
    params = DetectorParams(warmup_points=10)
    single = Detector(params, n)
    single.fit(t, values)
    split = Detector(params, n)
    with FitProcesses(1) as workers:
        split.fit(t, values, workers)
    assert_same_detector(single, split)


def test_the_fit_uses_one_worker_beside_the_training_process_on_two_cores() -> None:
    assert fit_worker_count(2) == min(2, len(os.sched_getaffinity(0))) - 1
    assert fit_worker_count(1) == 0


def test_a_gap_leaves_its_series_state_as_it_was_while_the_others_move() -> None:
    t, values = history(6, 300, seed=7)
    values[:, :250] = np.nan_to_num(values[:, :250], nan=1.0)
    detector = Detector(DetectorParams(seasonality="daily", warmup_points=20), 6)
    detector.fit(t[:250], values[:, :250])
    before = detector.state()
    column = values[:, 250].copy()
    column[[1, 4]] = np.nan
    out = detector.update(t[250], column)
    after = detector.state()
    assert np.isnan(out.score[[1, 4]]).all()
    assert np.isfinite(out.score[[0, 2, 3, 5]]).all()
    for name, array in after.items():
        if name in ("version", "layout"):
            continue
        if name == "last_z":
            assert np.isnan(array[[1, 4]]).all()
            continue
        np.testing.assert_array_equal(array[..., [1, 4]], before[name][..., [1, 4]], err_msg=name)
    assert not np.array_equal(after["count"], before["count"])


def tail_grid() -> NDArray[np.float64]:
    return np.concatenate([np.linspace(-40, 40, 8001), [0.0, -0.0, 1e-300, -1e-300, 38.5]])


def test_tails_counted_as_0_within_quiet_z_never_reach_the_raw_score() -> None:
    z = tail_grid()
    full = detector_module._two_sided_surprise(z)
    beyond = np.abs(z) > detector_module.QUIET_Z
    assert full[~beyond].max() < math.log10(detector_module.N_CHANNELS)
    cheap = detector_module._surprise_where(beyond, z, detector_module._two_sided_surprise)
    np.testing.assert_array_equal(cheap[beyond], full[beyond])
    assert not cheap[~beyond].any()


def test_the_spread_channel_computed_beyond_quiet_z_equals_the_full_formula() -> None:
    z = tail_grid()
    full = np.maximum(
        detector_module._upper_tail_surprise(z) - detector_module.SPREAD_DISCOUNT, 0.0
    )
    cheap = detector_module._surprise_where(
        z > detector_module.QUIET_Z, z, detector_module._spread_surprise
    )
    np.testing.assert_array_equal(cheap, full)
    assert full[z > 2].all()


def test_below_its_mean_the_likelihood_stays_under_the_rest_and_alarm_levels() -> None:
    z = tail_grid()
    full = detector_module._upper_tail_surprise(z)
    np.testing.assert_array_equal(detector_module._upper_tail_above_mean(z[z > 0]), full[z > 0])
    params = DetectorParams()
    below = 1.0 - np.exp2(-full[z <= 0] / params.half_score_decades)
    assert below.max() < min(params.rest_trigger, params.alarm_threshold)


@pytest.mark.parametrize(
    "params",
    [
        DetectorParams(warmup_points=30),
        # A rest level a point below the mean could reach: the fit computes it.
        DetectorParams(warmup_points=30, rest_trigger=0.02, alarm_threshold=0.04),
        DetectorParams(warmup_points=30, tail_fit=True, evidence_cap=False),
    ],
)
def test_a_fit_with_alarms_leaves_the_online_replays_state_and_counts(
    params: DetectorParams,
) -> None:
    # The fit skips what only a score would show (the likelihood below its
    # mean, tails within QUIET_Z); the online path computes all of it.
    n, points = 40, 400
    t, values = history(n, points, seed=8)
    values[::3, 200:206] *= 6
    values[1::4, 300:] *= 3
    fitted = Detector(params, n)
    report = fitted.fit(t, values)
    online = Detector(params, n)
    flags = sum(int(online.update(t[i], values[:, i]).flag.sum()) for i in range(points))
    assert_same_detector(fitted, online)
    assert report.alarms == flags > 0


def test_picking_among_mixed_models_equals_choose() -> None:
    rng = np.random.default_rng(11)
    per_model = rng.normal(size=(3, 500))
    model = rng.integers(0, 3, 500).astype(np.intp)
    np.testing.assert_array_equal(
        detector_module._pick(per_model, model), np.choose(model, per_model)
    )
    np.testing.assert_array_equal(
        detector_module._pick(per_model, np.full(500, 2, dtype=np.intp)), per_model[2]
    )


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        ([False, False, False], [7.0, 8.0, 9.0]),
        ([True, True, True], [1.0, 2.0, 3.0]),
        ([True, False, True], [1.0, 8.0, 3.0]),
    ],
)
def test_where_without_a_pass_gives_np_where(mask: list[bool], expected: list[float]) -> None:
    result = detector_module._where(
        np.array(mask), np.array([1.0, 2.0, 3.0]), np.array([7.0, 8.0, 9.0])
    )
    assert result.tolist() == expected
    assert detector_module._where(np.array([False, False]), 1.0, 0.0).tolist() == [0.0, 0.0]
