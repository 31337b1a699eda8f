"""The scoring loop over an in-memory engine: training, series that come and go, the
budget, restarts from the checkpoint, schedules, drift and rollbacks.

The detector and registry are the real ones; only the engine is a fake (the
real-engine path is in test_pipeline_e2e.py).
"""

from __future__ import annotations

import asyncio
import math
import subprocess
from collections.abc import Callable

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from ai_sidecar.anomaly.registry import ModelRegistry
from ai_sidecar.anomaly.scoring import AnomalyScorer
from ai_sidecar.anomaly.trainer import train_signal
from ai_sidecar.config import AnomalyConfig, parse_config
from ai_sidecar.metrics import ForwardedMetrics
from scripts.localstack import find_binary
from tests.ai_sidecar.anomaly.fakes import FakeEngine, FakeSeries, InlineTrainer

STEP = 300.0
# Noon UTC: the nightly refit at 03:00 is not due during a test.
T0 = 1_800_000_000 // 86_400 * 86_400 + 12 * 3600


def config(**overrides: object) -> AnomalyConfig:
    signal = {
        "name": "load",
        "query": "load",
        "step": "5m",
        "history": "2d",
        "keep_labels": ["instance"],
        **{k: v for k, v in overrides.items() if k in ("max_series", "transform")},
    }
    anomaly = {
        "enabled": True,
        "score_interval": "5m",
        "query_delay": "0s",
        "series_grace": "30m",
        "signals": [signal],
        **{k: v for k, v in overrides.items() if k in ("retrain",)},
    }
    return (
        parse_config("", "x")
        .model_copy(update={"anomaly": AnomalyConfig.model_validate(anomaly, strict=False)})
        .anomaly
    )


def daily(offset: float = 0.0):
    def value(t: float) -> float:
        noise = (math.sin(t * 12.9898) * 43758.5453) % 1.0
        return 100 + offset + 30 * math.sin(2 * math.pi * t / 86_400) + 2 * noise

    return value


def engine_with(*instances: str) -> FakeEngine:
    return FakeEngine(
        [FakeSeries({"instance": i, "job": "j"}, daily(10 * n)) for n, i in enumerate(instances)]
    )


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def family(families: list[Metric], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    (found,) = [f for f in families if f.name == name.removesuffix("_total")]
    return {tuple(sorted(s.labels.items())): s.value for s in found.samples if s.name == name}


def per_instance(families: list[Metric], name: str) -> dict[str, float]:
    return {dict(k)["instance"]: v for k, v in family(families, name).items()}


async def started(engine, tmp_path, anomaly=None, clock=None):
    anomaly = anomaly or config()
    registry = ModelRegistry(tmp_path, anomaly.keep_versions)
    trainer = InlineTrainer(engine, registry, anomaly)
    clock = clock or Clock(T0)
    scorer = AnomalyScorer(anomaly, engine, registry, trainer, clock=clock)
    await scorer.cycle()
    await scorer.wait_for_training()
    return scorer, trainer, registry, clock


async def advance(scorer: AnomalyScorer, clock: Clock, cycles: int) -> None:
    for _ in range(cycles):
        clock.now += STEP
        await scorer.cycle()


async def test_first_cycle_trains_then_every_series_is_scored_and_exported(tmp_path):
    engine = engine_with("a", "b", "c")
    scorer, trainer, registry, clock = await started(engine, tmp_path)
    assert trainer.calls == [(("load",), T0)]
    meta = registry.current("load")
    assert meta is not None
    assert (meta.version, meta.series, meta.range_end) == (1, 3, T0)
    assert meta.range_start == T0 - 2 * 86_400
    assert meta.quality["holdout_points"] == 82
    await advance(scorer, clock, 1)
    # Only the new point was asked for.
    assert engine.ranges[-1] == (T0 + STEP, T0 + STEP)
    families = scorer.families
    scores = family(families, "scout_anomaly_score")
    assert set(scores) == {(("instance", i), ("signal", "load")) for i in ("a", "b", "c")}
    assert all(0 <= v <= 1 for v in scores.values())
    expected = per_instance(families, "scout_anomaly_expected")
    upper, lower = (
        per_instance(families, "scout_anomaly_upper"),
        per_instance(families, "scout_anomaly_lower"),
    )
    for n, instance in enumerate("abc"):
        observed = daily(10 * n)(T0 + STEP)
        assert lower[instance] <= observed <= upper[instance]
        assert abs(expected[instance] - observed) < 10
    assert per_instance(families, "scout_anomaly_warming") == {"a": 0, "b": 0, "c": 0}
    assert family(families, "scout_anomaly_model_version") == {(("signal", "load"),): 1}
    assert family(families, "scout_anomaly_series_tracked") == {(("signal", "load"),): 3}
    assert family(families, "scout_anomaly_scoring_lag_seconds") == {(("signal", "load"),): 0}
    assert family(families, "scout_anomaly_model_age_seconds") == {(("signal", "load"),): STEP}


async def disturbed(tmp_path, extra: Callable[[float, float], float]):
    """Series a and b, three cycles past training; from the next point ``at`` on, a's value
    gains ``extra(t, at)``. The scorer, its clock, the engine, a's normal value and ``at``."""
    engine = engine_with("a", "b")
    scorer, _, _, clock = await started(engine, tmp_path)
    await advance(scorer, clock, 3)
    at = clock.now + STEP
    normal = engine.series[0].value
    engine.series[0].value = lambda t: normal(t) + extra(t, at)
    return scorer, clock, engine, normal, at


async def test_a_spike_scores_high_and_flags(tmp_path):
    scorer, clock, engine, normal, spike_at = await disturbed(
        tmp_path, lambda t, at: 400 if t == at else 0
    )
    await advance(scorer, clock, 1)
    scores = per_instance(scorer.families, "scout_anomaly_score")
    assert scores["a"] > 0.9
    assert scores["b"] < 0.5
    assert per_instance(scorer.families, "scout_anomaly_flag") == {"a": 1, "b": 0}
    observed = per_instance(scorer.families, "scout_anomaly_observed")
    assert observed == {"a": normal(spike_at) + 400, "b": engine.series[1].value(spike_at)}


async def test_a_lasting_shift_keeps_its_calibrated_score_and_flags_once(tmp_path):
    """The rest period quiets the flag, not the exported score: a `for: 5m` rule can hold."""
    scorer, clock, _, normal, _ = await disturbed(tmp_path, lambda t, at: 80 if t >= at else 0)
    scores, flags = [], []
    for _ in range(6):
        await advance(scorer, clock, 1)
        scores.append(per_instance(scorer.families, "scout_anomaly_score"))
        flags.append(per_instance(scorer.families, "scout_anomaly_flag")["a"])
    assert scores[0]["a"] >= 0.9
    # Damped by the rest period, these points would read at most a fifth of 1.
    assert all(score["a"] >= 0.3 for score in scores), scores
    assert all(score["b"] < 0.5 for score in scores), scores
    assert flags == [1, 0, 0, 0, 0, 0]
    observed = per_instance(scorer.families, "scout_anomaly_observed")["a"]
    assert observed == normal(clock.now) + 80
    assert observed > per_instance(scorer.families, "scout_anomaly_upper")["a"]


async def test_an_alarm_on_any_point_of_a_cycle_is_exported(tmp_path):
    """A cycle that scores several points (a slow query, a restart) keeps an earlier alarm."""
    scorer, clock, engine, _, spike_at = await disturbed(
        tmp_path, lambda t, at: 400 if t == at else 0
    )
    clock.now += 3 * STEP
    await scorer.cycle()
    assert engine.ranges[-1] == (spike_at, spike_at + 2 * STEP)
    assert per_instance(scorer.families, "scout_anomaly_flag") == {"a": 1, "b": 0}
    await advance(scorer, clock, 1)
    assert per_instance(scorer.families, "scout_anomaly_flag") == {"a": 0, "b": 0}


async def test_new_series_warm_up_and_vanished_ones_leave_after_the_grace(tmp_path):
    engine = engine_with("a", "b", "c")
    scorer, _, _, clock = await started(engine, tmp_path)
    engine.series[2].last = T0 + STEP  # c stops
    engine.series.append(FakeSeries({"instance": "d"}, daily(), first=T0 + 2 * STEP))
    await advance(scorer, clock, 2)
    assert per_instance(scorer.families, "scout_anomaly_warming") == {
        "a": 0,
        "b": 0,
        "c": 0,
        "d": 1,
    }
    assert family(scorer.families, "scout_anomaly_series_tracked") == {(("signal", "load"),): 4}
    missing = family(scorer.families, "scout_anomaly_missing_points_total")
    assert missing == {(("signal", "load"),): 1}  # c's point at T0 + 2 steps
    await advance(scorer, clock, 6)  # 30 minutes without c
    assert sorted(per_instance(scorer.families, "scout_anomaly_score")) == ["a", "b", "d"]
    assert family(scorer.families, "scout_anomaly_series_tracked") == {(("signal", "load"),): 3}


async def test_series_beyond_the_budget_are_counted_once_and_not_scored(tmp_path):
    engine = engine_with("a", "b")
    scorer, _, _, clock = await started(engine, tmp_path, config(max_series=2))
    engine.series.append(FakeSeries({"instance": "z"}, daily(), first=T0 + STEP))
    await advance(scorer, clock, 3)
    assert sorted(per_instance(scorer.families, "scout_anomaly_score")) == ["a", "b"]
    dropped = family(scorer.families, "scout_anomaly_series_dropped_total")
    assert dropped == {(("signal", "load"),): 1}


async def test_a_restart_resumes_from_the_checkpoint_and_fetches_only_what_it_missed(tmp_path):
    steady_engine = engine_with("a", "b")
    steady, _, _, steady_clock = await started(steady_engine, tmp_path / "steady")
    await advance(steady, steady_clock, 6)

    engine = engine_with("a", "b")
    first, _, _, clock = await started(engine, tmp_path / "restarted")
    await advance(first, clock, 3)
    await first.close()  # shutdown writes the checkpoint
    engine.ranges.clear()
    clock.now += 3 * STEP
    anomaly = config()
    registry = ModelRegistry(tmp_path / "restarted", anomaly.keep_versions)
    trainer = InlineTrainer(engine, registry, anomaly)
    second = AnomalyScorer(anomaly, engine, registry, trainer, clock=clock)
    await second.cycle()
    assert trainer.calls == []  # the model on disk is current: no training
    assert engine.ranges == [(T0 + 4 * STEP, T0 + 6 * STEP)]
    for name in ("scout_anomaly_score", "scout_anomaly_expected", "scout_anomaly_upper"):
        assert per_instance(second.families, name) == per_instance(steady.families, name)
    resumed, uninterrupted = (
        second.states["load"].detector.state(),
        steady.states["load"].detector.state(),
    )
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert np.array_equal(resumed[key], uninterrupted[key], equal_nan=True), key


@pytest.mark.parametrize(
    ("retrain", "hours_later", "due"),
    [
        ({"every": "6h"}, 5, False),
        ({"every": "6h"}, 6, True),
        ({}, 14, False),  # noon to 02:00: 03:00 not yet passed
        ({}, 15, True),  # 03:00 passed
        ({"at": "13:30"}, 2, True),
    ],
)
async def test_scheduled_refits(tmp_path, retrain, hours_later, due):
    engine = engine_with("a")
    anomaly = config(retrain=retrain)
    scorer, trainer, _, clock = await started(engine, tmp_path, anomaly)
    clock.now += hours_later * 3600
    await scorer.cycle()
    await scorer.wait_for_training()
    assert len(trainer.calls) == (2 if due else 1)


async def test_drift_is_exported_and_triggers_an_early_refit(tmp_path):
    engine = engine_with(*(f"s{n}" for n in range(40)))
    anomaly = config(retrain={"every": "30d", "min_interval": "10m"})
    scorer, trainer, _, clock = await started(engine, tmp_path, anomaly)
    await advance(scorer, clock, 2)
    calm = family(scorer.families, "scout_anomaly_drift")[(("signal", "load"),)]
    assert calm < 0.25
    for series in engine.series:
        series.value = (lambda normal: lambda t: normal(t) + 60 * ((t // STEP) % 2))(series.value)
    # The refit it triggers measures drift afresh once it is loaded. Each
    # training is awaited before the next cycle, so the cycle that loads it
    # does not depend on how fast it ran beside the cycles.
    drifts = []
    for _ in range(8):
        await advance(scorer, clock, 1)
        drifts.append(family(scorer.families, "scout_anomaly_drift")[(("signal", "load"),)])
        await scorer.wait_for_training()
    assert max(drifts) > 0.25
    assert drifts[-1] < 0.25
    assert len(trainer.calls) == 2


async def test_a_changed_config_retrains_and_a_rollback_is_picked_up(tmp_path):
    engine = engine_with("a")
    scorer, _, registry, clock = await started(engine, tmp_path)
    changed = config(transform="log1p")
    trainer = InlineTrainer(engine, registry, changed)
    again = AnomalyScorer(changed, engine, registry, trainer, clock=clock)
    await again.cycle()
    await again.wait_for_training()
    assert [call[0] for call in trainer.calls] == [("load",)]
    assert registry.current_version("load") == 2
    registry.rollback("load", 1)
    await advance(scorer, clock, 1)
    assert family(scorer.families, "scout_anomaly_model_version") == {(("signal", "load"),): 1}


async def test_training_leaves_out_the_points_the_loop_flagged(tmp_path):
    anomaly = config()
    engine = engine_with("a", "b")
    flagged = [T0 - 3600 + n * STEP for n in range(4)]
    engine.flagged = {"a": flagged}
    registry = ModelRegistry(tmp_path)
    meta = await train_signal(engine, anomaly.signals[0], registry, anomaly, now=T0)
    assert meta is not None
    assert meta.quality["points_excluded_flagged"] == 4
    assert meta.quality["points_missing"] == 4


async def test_training_names_the_labels_that_would_keep_merged_series_apart(tmp_path, caplog):
    anomaly = config()  # keeps only instance
    engine = FakeEngine(
        [FakeSeries({"instance": "a", "job": "j", "cpu": cpu}, daily(10)) for cpu in "01"]
    )
    meta = await train_signal(engine, anomaly.signals[0], ModelRegistry(tmp_path), anomaly, now=T0)
    assert meta is not None
    assert meta.series == 1
    assert meta.quality["series_dropped"] == 1
    [warning] = [r for r in caplog.records if r.getMessage().startswith("series dropped")]
    assert warning.hint == "add to keep_labels: cpu"  # type: ignore[attr-defined]


async def test_the_exposition_passes_promtool_and_keeps_the_series_labels(tmp_path):
    engine = engine_with("a")
    scorer, _, _, clock = await started(engine, tmp_path)
    await advance(scorer, clock, 1)
    registry = CollectorRegistry()
    registry.register(ForwardedMetrics(scorer.families))
    text = generate_latest(registry).decode()
    assert 'scout_anomaly_score{instance="a",signal="load"}' in text
    assert 'scout_anomaly_series_dropped_total{signal="load"} 0.0' in text
    assert "# TYPE scout_anomaly_missing_points_total counter" in text
    checked = await asyncio.to_thread(
        subprocess.run,
        [find_binary("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_a_rollback_lasts_until_the_next_scheduled_refit(tmp_path):
    engine = engine_with("a")
    scorer, trainer, registry, clock = await started(engine, tmp_path)
    clock.now += 15 * 3600  # 03:00 passed: the nightly refit makes version 2
    await scorer.cycle()
    await scorer.wait_for_training()
    assert registry.current_version("load") == 2
    registry.rollback("load", 1, now=clock.now)
    await advance(scorer, clock, 3)
    await scorer.wait_for_training()
    assert len(trainer.calls) == 2  # version 1 is not refitted at once
    assert family(scorer.families, "scout_anomaly_model_version") == {(("signal", "load"),): 1}
    clock.now += 24 * 3600  # the next 03:00 after the rollback
    await scorer.cycle()
    await scorer.wait_for_training()
    assert len(trainer.calls) == 3
    assert registry.current_version("load") == 3
