"""The detector's promises: no lookahead, resumable state, series that come and go."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from numpy.typing import NDArray

from ai_sidecar.anomaly.detector import Detector, DetectorParams, default_rest_period, score_series

START = 1_793_577_600.0
Series = tuple[NDArray[np.float64], NDArray[np.float64]]


def seasonal(n: int = 900, step: float = 300.0, seed: int = 1) -> Series:
    rng = np.random.default_rng(seed)
    t = START + np.arange(n) * step
    values = 100 + 30 * np.sin(2 * np.pi * t / 86_400) + rng.normal(0, 2, n)
    values[700] += 60
    return t, values


def flat_with_shift(n: int = 900, seed: int = 2) -> Series:
    rng = np.random.default_rng(seed)
    t = START + np.arange(n) * 60.0
    values = 0.4 + rng.normal(0, 0.01, n)
    values[600:] += 0.2
    return t, values


def quantised_with_gaps(n: int = 900, seed: int = 3) -> Series:
    rng = np.random.default_rng(seed)
    t = START + np.arange(n) * 60.0
    values = rng.poisson(2.0, n).astype(np.float64)
    values[300:340] = np.nan
    values[650] = 25
    return t, values


def irregular(n: int = 900, seed: int = 4) -> Series:
    rng = np.random.default_rng(seed)
    gaps = rng.choice([0.0, 30.0, 60.0, 61.0, 600.0], size=n, p=[0.05, 0.2, 0.6, 0.1, 0.05])
    t = START + np.cumsum(gaps)
    values = 1e9 * (1 + 0.05 * rng.normal(size=n))
    values[500:520] *= 2
    return t, values


SERIES = {
    "seasonal": seasonal,
    "flat_with_shift": flat_with_shift,
    "quantised_with_gaps": quantised_with_gaps,
    "irregular": irregular,
}


@pytest.mark.parametrize("make", SERIES.values(), ids=SERIES.keys())
def test_changing_later_rows_never_changes_earlier_scores(make: object) -> None:
    t, values = make()  # type: ignore[operator]
    params = DetectorParams(step=float(np.median(np.diff(t))) or 60.0)
    original = score_series(t, values, params)
    assert original.max() > 0.5, "the series' anomaly must score, or the test shows nothing"
    for cut in (480, 690):
        changed = values.copy()
        changed[cut:] = changed[cut:] * 3 + 7
        changed[cut + 5 :: 7] = np.nan
        rescored = score_series(t, changed, params)
        np.testing.assert_array_equal(rescored[:cut], original[:cut])
        assert not np.array_equal(rescored[cut:], original[cut:])


def test_scores_are_between_0_and_1_and_missing_points_score_nan() -> None:
    t, values = quantised_with_gaps()
    detector = Detector(DetectorParams(), 1)
    for stamp, value in zip(t, values, strict=True):
        score = detector.update(stamp, np.array([value])).score[0]
        if np.isnan(value):
            assert np.isnan(score)
        else:
            assert 0.0 <= score <= 1.0


def test_a_missing_point_is_neither_scored_nor_learned() -> None:
    t, values = seasonal()
    detector = Detector(DetectorParams(step=300.0), 1)
    detector.fit(t[:500], values[None, :500])
    before = detector.state()
    detector.update(t[500], np.array([np.nan]))
    after = detector.state()
    assert np.isnan(detector.residuals()[0])
    for name, array in before.items():
        if name == "last_z":  # the last residual: an output, NaN for a missing point
            continue
        np.testing.assert_array_equal(after[name], array, err_msg=name)


def test_a_spike_is_one_alarm_and_normal_points_stay_low() -> None:
    t, values = seasonal(n=2000, seed=5)
    detector = Detector(DetectorParams(step=300.0), 1)
    flags = []
    scores = []
    for stamp, value in zip(t, values, strict=True):
        out = detector.update(stamp, np.array([value]))
        flags.append(bool(out.flag[0]))
        scores.append(out.score[0])
    alarms = np.flatnonzero(flags)
    assert alarms.tolist() == [700]
    normal = np.delete(np.array(scores), range(700, 720))[300:]
    assert np.quantile(normal, 0.99) < 0.3


def test_after_a_level_shift_it_rebaselines_instead_of_alarming_for_days() -> None:
    rng = np.random.default_rng(6)
    n = 1800
    t = START + np.arange(n) * 60.0
    values = 50 + rng.normal(0, 1, n)
    values[1000:] += 15
    detector = Detector(DetectorParams(), 1)
    flags = np.array(
        [detector.update(s, np.array([v])).flag[0] for s, v in zip(t, values, strict=True)]
    )
    alarms = np.flatnonzero(flags)
    assert alarms.size >= 1
    assert 1000 <= alarms[0] <= 1005
    assert not flags[1100:].any(), f"still alarming at {alarms[alarms >= 1100][:5]}"


def test_flat_and_quantised_series_do_not_explode() -> None:
    t = START + np.arange(900) * 60.0
    rng = np.random.default_rng(7)
    constant = np.full(900, 3.0)
    binary = (rng.random(900) < 0.05).astype(np.float64)
    for values in (constant, binary):
        scores = score_series(t, values)
        assert scores.max() < 0.5


def test_floors_silence_small_deviations() -> None:
    t, values = seasonal()
    params = DetectorParams(step=300.0)
    assert score_series(t, values, params)[700] > 0.5
    assert score_series(t, values, replace(params, min_deviation=1000.0))[700] == 0.0
    assert score_series(t, values, replace(params, min_level=1000.0))[700] == 0.0


def _matrix() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    makers = (seasonal, flat_with_shift, quantised_with_gaps)
    columns = [make()[1] for make in makers]
    t = START + np.arange(900) * 60.0
    return t, np.stack(columns)


def test_vectorised_equals_one_series_at_a_time() -> None:
    t, values = _matrix()
    params = DetectorParams()
    detector = Detector(params, values.shape[0])
    together = np.stack([detector.update(s, values[:, i]).score for i, s in enumerate(t)], axis=1)
    for row in range(values.shape[0]):
        alone = score_series(t, values[row], params)
        np.testing.assert_array_equal(np.nan_to_num(together[row]), alone)


def test_fit_then_update_equals_a_pure_online_replay() -> None:
    t, values = _matrix()
    params = DetectorParams()
    online = Detector(params, 3)
    replayed = [online.update(s, values[:, i]) for i, s in enumerate(t)]
    fitted = Detector(params, 3)
    report = fitted.fit(t[:600], values[:, :600])
    assert report.points_used + report.points_missing == 3 * 600
    assert report.points_missing == 40
    for i in range(600, 900):
        out = fitted.update(t[i], values[:, i])
        np.testing.assert_array_equal(out.score, replayed[i].score)
        np.testing.assert_array_equal(out.upper, replayed[i].upper)


def test_state_round_trip_continues_exactly() -> None:
    t, values = _matrix()
    params = DetectorParams()
    uninterrupted = Detector(params, 3)
    expected = [uninterrupted.update(s, values[:, i]).score for i, s in enumerate(t)]
    first = Detector(params, 3)
    first.fit(t[:450], values[:, :450])
    buffer = io.BytesIO()
    np.savez(buffer, **first.state())
    buffer.seek(0)
    with np.load(buffer) as saved:
        resumed = Detector.from_state(params, saved)
    for i in range(450, 900):
        np.testing.assert_array_equal(resumed.update(t[i], values[:, i]).score, expected[i])


def test_state_of_another_step_is_refused() -> None:
    detector = Detector(DetectorParams(step=60.0), 2)
    with pytest.raises(ValueError, match="different step"):
        Detector.from_state(DetectorParams(step=3600.0), detector.state())


def test_reindex_keeps_rows_in_order_and_adds_warming_rows() -> None:
    t, values = _matrix()
    params = DetectorParams()
    detector = Detector(params, 3)
    detector.fit(t[:600], values[:, :600])
    only_kept = Detector(params, 2)
    only_kept.fit(t[:600], values[[2, 0], :600])
    detector.reindex(np.array([2, 0]), added=2)
    assert detector.n_series == 4
    fresh = np.full(2, 5.0)
    for i in range(600, 900):
        out = detector.update(t[i], np.concatenate([values[[2, 0], i], fresh]))
        alone = only_kept.update(t[i], values[[2, 0], i])
        np.testing.assert_array_equal(out.score[:2], alone.score)
        if i < 600 + params.warmup_points - 1:
            assert out.warming.tolist() == [False, False, True, True]
    assert not out.warming.any()


@pytest.mark.parametrize("seasonality", ["daily", "auto"])
def test_rows_added_as_missing_until_now_are_rows_that_were_missing_all_along(seasonality) -> None:
    """What a history read window by window relies on: a series that appears
    later joins as if it had been there, missing, from the start."""
    t, values = _matrix()
    params = DetectorParams(seasonality=seasonality)
    along = values.copy()
    along[2, :450] = np.nan  # the third series appears at point 450
    all_along = Detector(params, 3)
    all_along.fit(t[:450], along[:, :450])
    joining = Detector(params, 2)
    joining.fit(t[:450], values[:2, :450])
    joining.add_missing_until(1, t[449])
    # (A fresh row would differ here: a forced seasonality chooses the model
    # of a missing row too.)
    assert_same_state(joining.state(), all_along.state())
    all_along.fit(t[450:900], along[:, 450:900])
    joining.fit(t[450:900], along[:, 450:900])
    assert_same_state(joining.state(), all_along.state())


def assert_same_state(left: dict[str, NDArray[np.float64]], right: dict[str, NDArray[np.float64]]):
    assert sorted(left) == sorted(right)
    for name in left:
        assert np.array_equal(left[name], right[name], equal_nan=True), name


def test_log1p_band_is_in_the_signals_units() -> None:
    rng = np.random.default_rng(8)
    t = START + np.arange(800) * 60.0
    values = 1e9 * np.exp(rng.normal(0, 0.02, 800))
    detector = Detector(DetectorParams(transform="log1p"), 1)
    detector.fit(t[:-1], values[None, :-1])
    out = detector.update(t[-1], values[-1:])
    assert 0.9e9 < out.expected[0] < 1.1e9
    assert out.lower[0] < out.expected[0] < out.upper[0]
    assert not out.warming[0]


def test_residuals_are_standardised() -> None:
    t, values = flat_with_shift()
    detector = Detector(DetectorParams(), 1)
    detector.fit(t[:500], values[None, :500])
    z = [
        detector.update(t[i], values[i : i + 1]) and detector.residuals()[0]
        for i in range(500, 600)
    ]
    assert 0.5 < float(np.std(z)) < 2.0


def test_a_fit_of_many_series_with_gaps_equals_the_online_replay() -> None:
    rng = np.random.default_rng(9)
    n, points = 2000, 40
    t = START + np.arange(points) * 60.0
    values = rng.normal(10, 1, (n, points))
    values[rng.random(values.shape) < 0.05] = np.nan
    fitted = Detector(DetectorParams(warmup_points=10), n)
    fitted.fit(t, values)
    online = Detector(DetectorParams(warmup_points=10), n)
    for i in range(points):
        online.update(t[i], values[:, i])
    for name, array in online.state().items():
        np.testing.assert_array_equal(fitted.state()[name], array, err_msg=name)


def test_a_lone_seven_sigma_spike_reaches_the_alarm_level() -> None:
    # The score's scale puts 0.5 where a tail of about 1e-3.5 of the
    # likelihood lies: a 7-sigma spike on a quiet series is a clear alarm,
    # while normal points stay at the bottom of the scale.
    rng = np.random.default_rng(10)
    t = START + np.arange(1500) * 60.0
    values = 50 + rng.normal(0, 1, 1500)
    values[150] += 60  # a wide seen range: the spike below is no range novelty
    quiet = score_series(t, values)
    values[1200] += 7
    spiked = score_series(t, values)
    assert spiked[1200] >= DetectorParams().alarm_threshold
    assert quiet[300:].max() < 0.1


@pytest.mark.parametrize(
    ("step", "rest_steps"),
    [(60.0, 60), (300.0, 30), (3_600.0, 30), (10.0, 60), (150.0, 60), (200.0, 45)],
)
def test_the_default_rest_period_is_two_and_a_half_hours_within_30_to_60_steps(
    step: float, rest_steps: int
) -> None:
    # 60 steps lasted 5 hours on 5-minute data, hiding a second event inside it.
    assert default_rest_period(step) == pytest.approx(rest_steps * step)


@pytest.mark.parametrize("glitch", [1e5, 1e6, 1e20])
def test_one_glitch_does_not_blind_it_to_the_spikes_after(glitch: float) -> None:
    # About 100 +/- 2 each minute, a 4x spike every 5 hours, and one misread
    # sample (a counter read wrong, a sensor's garbage) early on. The all-time
    # range once set every spread's floor: after a glitch of 1e6 every later
    # spike scored 0 for days.
    rng = np.random.default_rng(7)
    n = 3000
    t = 1.7e9 + 60.0 * np.arange(n)
    values = 100.0 + 2.0 * rng.standard_normal(n)
    spikes = np.arange(450, n, 300)
    values[spikes] = 400.0
    clean = score_series(t, values, DetectorParams(step=60.0))
    values[300] = glitch
    glitched = score_series(t, values, DetectorParams(step=60.0))
    assert clean[spikes].min() >= 0.5  # the check is of the glitch, not of the series
    assert glitched[spikes[1:]].min() >= 0.5, glitched[spikes]


def test_a_state_saved_before_the_held_range_loads_with_its_seen_range() -> None:
    t, values = _matrix()
    params = DetectorParams()
    detector = Detector(params, 3)
    detector.fit(t[:450], values[:, :450])
    saved = {
        name: array
        for name, array in detector.state().items()
        if name not in ("held_low", "held_high")
    }
    resumed = Detector.from_state(params, saved)
    state = resumed.state()
    np.testing.assert_array_equal(state["held_low"], saved["low"])
    np.testing.assert_array_equal(state["held_high"], saved["high"])
    assert np.isfinite(resumed.update(t[450], values[:, 450]).score).all()
