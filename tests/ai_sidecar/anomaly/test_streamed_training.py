"""Training that streams its history from a real Prometheus gives the model of the whole history.

Prometheus holds 50 series x 2 days at one point a minute (backfilled with
promtool), with gaps, a series that appears on the second day, one that
vanishes on the first and points the live loop flagged. The trainer reads it
through the PromQL client in windows of about 150 points and fits a day (or 97
points) at a time; the model must be the one of a single window fitted at
once, and the one ``Detector.fit`` makes from the whole matrix.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from ai_sidecar.anomaly.detector import Detector
from ai_sidecar.anomaly.history import FetchOptions, fetch_history
from ai_sidecar.anomaly.registry import ModelMeta, ModelRegistry
from ai_sidecar.anomaly.trainer import HOLDOUT_SECONDS, detector_params, train_signal
from ai_sidecar.config import AnomalyConfig, SignalConfig
from ai_sidecar.promql import HttpPromQLClient
from tests.peers.promql import Sample, engine_holding

METRIC = "scout_stream_test"
STEP = 60
SERIES = 50
END = (int(time.time()) - 2 * 3600) // 3600 * 3600
START = END - 2 * 86_400
LATE = START + 86_400 + 5 * 3600  # "late" starts here
GONE = START + 10 * 3600  # "gone" ends here
# The live loop flagged s03 for 20 minutes in the first day and s07 for 10 in the holdout.
FLAGGED = {"s03": (START + 6 * 3600, 20), "s07": (END - 3 * 3600, 10)}
WHOLE = FetchOptions(samples_per_request=10**9)
WINDOWS = FetchOptions(samples_per_request=SERIES * 150)


def instances() -> list[str]:
    return [f"s{n:02d}" for n in range(SERIES - 2)] + ["late", "gone"]


def samples() -> Iterator[Sample]:
    rng = np.random.default_rng(12)
    times = np.arange(START, END + 1, STEP)
    for n, instance in enumerate(instances()):
        level = 50 + 10 * n
        values = level * (1 + 0.3 * np.sin(2 * np.pi * times / 86_400)) + rng.normal(
            0, 2, times.size
        )
        alive = (
            (times >= LATE)
            if instance == "late"
            else (times <= GONE if instance == "gone" else True)
        )
        # A few random gaps in every series.
        kept = alive & (rng.random(times.size) > 0.01)
        labels = {"job": "stream", "instance": instance}
        for at, value in zip(times[kept], values[kept], strict=True):
            yield METRIC, labels, float(value), int(at)
    for instance, (first, minutes) in FLAGGED.items():
        for at in range(first, first + minutes * 60, STEP):
            yield "scout_anomaly_flag", {"signal": "load", "instance": instance}, 1.0, at


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with engine_holding("prometheus", tmp_path_factory.mktemp("stream"), samples) as url:
        yield url


@pytest.fixture
async def client(prometheus: str) -> AsyncIterator[HttpPromQLClient]:
    async with aiohttp.ClientSession() as session:
        yield HttpPromQLClient(prometheus, session)


def anomaly(**signal: Any) -> AnomalyConfig:
    return AnomalyConfig.model_validate(
        {
            "enabled": True,
            "query_delay": "0s",
            "signals": [
                {
                    "name": "load",
                    "query": METRIC,
                    "step": "1m",
                    "history": "2d",
                    "keep_labels": ["instance"],
                    **signal,
                }
            ],
        },
        strict=False,
    )


async def trained(
    client: HttpPromQLClient, config: AnomalyConfig, directory: Path, **how: Any
) -> tuple[ModelMeta, dict[str, Any], list[int]]:
    """Train the config's signal under ``directory``: its metadata, state, and windows read."""
    windows: list[int] = []
    registry = ModelRegistry(directory)
    meta = await train_signal(
        client,
        config.signals[0],
        registry,
        config,
        now=END,
        progress=lambda done, total: windows.append(total),
        **how,
    )
    assert meta is not None
    loaded, state = registry.load("load", meta.version)
    return loaded, state, windows


def assert_same_state(left: dict[str, Any], right: dict[str, Any]) -> None:
    assert sorted(left) == sorted(right)
    for name in left:
        assert np.array_equal(left[name], right[name], equal_nan=True), name


@pytest.mark.parametrize("seasonality", ["daily", "auto"])
async def test_a_streamed_training_stores_the_model_of_the_whole_history(
    client, tmp_path, seasonality
):
    config = anomaly(seasonality=seasonality)
    whole, whole_state, whole_windows = await trained(
        client, config, tmp_path / "whole", options=WHOLE, chunk_points=10**9
    )
    streamed, streamed_state, streamed_windows = await trained(
        client, config, tmp_path / "streamed", options=WINDOWS, chunk_points=97
    )
    # One window against 19 (2,881 points in windows of 7,500 samples // 49 series now).
    assert set(whole_windows) == {1}
    assert set(streamed_windows) == {19}
    assert whole.series == streamed.series == SERIES
    assert whole.keys == streamed.keys
    assert_same_state(whole_state, streamed_state)
    assert (whole.drift_edges, whole.drift_reference) == (
        streamed.drift_edges,
        streamed.drift_reference,
    )
    same = {k: v for k, v in whole.quality.items() if k != "fit_seconds"}
    assert same == {k: v for k, v in streamed.quality.items() if k != "fit_seconds"}
    # The flagged points were left out, in the fit and in the holdout alike
    # (20 and 10: each grid point takes the flags of its own step, (t - step, t]).
    assert streamed.quality["points_excluded_flagged"] == 30


async def test_the_budget_drops_the_same_series_fitted_in_chunks_or_at_once(client, tmp_path):
    # The same windows (the budget keeps the series seen in the latest ones),
    # fitted all at once after the last or 97 points at a time.
    config = anomaly(max_series=SERIES - 2)
    whole, whole_state, _ = await trained(
        client, config, tmp_path / "whole", options=WINDOWS, chunk_points=10**9
    )
    streamed, streamed_state, _ = await trained(
        client, config, tmp_path / "streamed", options=WINDOWS, chunk_points=97
    )
    instances_kept = {dict(key)["instance"] for key in streamed.keys}
    assert "gone" not in instances_kept
    assert "late" in instances_kept
    assert streamed.series == SERIES - 2
    assert streamed.quality["series_dropped"] == 2
    assert whole.keys == streamed.keys
    assert_same_state(whole_state, streamed_state)
    assert whole.quality["holdout_p99_score"] == streamed.quality["holdout_p99_score"]


async def test_the_streamed_model_is_a_fit_of_the_whole_matrix_then_the_holdout(client, tmp_path):
    """The detector's own batch fit over the fetched matrix, as training was before streaming."""
    config = anomaly(seasonality="daily")
    signal: SignalConfig = config.signals[0]
    streamed, streamed_state, _ = await trained(
        client, config, tmp_path, options=WINDOWS, chunk_points=97
    )
    history = await fetch_history(
        client,
        METRIC,
        start=START,
        end=END,
        step=STEP,
        keep_labels=["instance"],
        max_series=SERIES,
    )
    # Blank what the live loop flagged, as training does (each grid point takes
    # the flags of its own step, (t - step, t]).
    for instance, (first, minutes) in FLAGGED.items():
        row = [dict(key)["instance"] for key in history.keys].index(instance)
        history.values[
            row, (history.timestamps >= first) & (history.timestamps < first + minutes * 60)
        ] = np.nan
    detector = Detector(detector_params(signal), len(history.keys))
    split = history.timestamps.size - int(HOLDOUT_SECONDS // STEP)
    detector.fit(history.timestamps[:split], history.values[:, :split])
    for column in range(split, history.timestamps.size):
        detector.update(float(history.timestamps[column]), history.values[:, column])
    assert history.keys == streamed.keys
    assert_same_state(detector.state(), streamed_state)
