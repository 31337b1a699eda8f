"""Per-host IsolationForests over residuals: what they learn, score, keep and forget.

Unit tests drive ``HostModels`` with signals whose residuals are set directly;
the last tests run it inside the real scoring loop (fake engine, real detector
and registry) to check it is wired, exported and survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from ai_sidecar.anomaly.hosts import HostModels
from ai_sidecar.anomaly.registry import ModelRegistry
from ai_sidecar.anomaly.scoring import AnomalyScorer
from ai_sidecar.anomaly.signals import SeriesKey
from ai_sidecar.config import HostModelsConfig
from tests.ai_sidecar.anomaly.fakes import InlineTrainer
from tests.ai_sidecar.anomaly.test_scoring import (
    STEP,
    Clock,
    advance,
    config,
    engine_with,
    family,
    started,
)

MINUTE = 60.0


@dataclass
class Residuals:
    """A signal with one series per host whose latest residuals the test sets."""

    name: str
    hosts: Sequence[str]
    residual: np.ndarray
    flags: np.ndarray

    @property
    def keys(self) -> list[SeriesKey]:
        return [(("instance", host),) for host in self.hosts]

    def latest_residuals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.arange(len(self.hosts)), self.residual, self.flags


def models(**overrides: object) -> HostModels:
    settings = {"sample_every": "1m", "min_samples": 200, "max_samples": 400, **overrides}
    return HostModels(HostModelsConfig.model_validate(settings, strict=False))


def correlated_cycle(rng: np.random.Generator, hosts: Sequence[str]) -> list[Residuals]:
    """Traffic and CPU residuals that move together on every host, as they do on a server."""
    traffic = rng.normal(0, 1, len(hosts))
    cpu = traffic + rng.normal(0, 0.1, len(hosts))
    quiet = np.zeros(len(hosts), bool)
    return [Residuals("traffic", hosts, traffic, quiet), Residuals("cpu", hosts, cpu, quiet)]


def learn(
    host_models: HostModels, hosts: Sequence[str], cycles: int, seed: int = 1, now: float = 0.0
) -> float:
    rng = np.random.default_rng(seed)
    for _ in range(cycles):
        now += MINUTE
        host_models.observe(correlated_cycle(rng, hosts), now)
    return now


def test_a_combination_never_seen_scores_high_though_each_residual_is_in_its_band():
    host_models = models()
    now = learn(host_models, ["web-1", "web-2"], 300)
    assert host_models.hosts["web-1"].forest is not None
    ordinary = []
    rng = np.random.default_rng(7)
    for _ in range(50):
        now += MINUTE
        host_models.observe(correlated_cycle(rng, ["web-1", "web-2"]), now)
        ordinary.append(host_models.hosts["web-1"].score)
    # Traffic up by one band, CPU down by one band: each alone is ordinary.
    quiet = np.zeros(1, bool)
    odd = [
        Residuals("traffic", ["web-1"], np.array([1.2]), quiet),
        Residuals("cpu", ["web-1"], np.array([-1.2]), quiet),
    ]
    now += MINUTE
    host_models.observe(odd, now)
    assert host_models.hosts["web-1"].score > 0.99
    assert float(np.median(ordinary)) < 0.8
    assert np.mean(np.array(ordinary) > 0.99) < 0.1


def test_no_model_before_min_samples_and_samples_only_every_sample_every():
    host_models = models(sample_every="5m", min_samples=50)
    rng = np.random.default_rng(2)
    now = 0.0
    for _ in range(240):  # 240 minutes: 48 samples at one per 5 minutes
        now += MINUTE
        host_models.observe(correlated_cycle(rng, ["db-1"]), now)
    host = host_models.hosts["db-1"]
    assert host.count == 48
    assert host.forest is None
    assert math.isnan(host.score)
    for _ in range(10):
        now += MINUTE
        host_models.observe(correlated_cycle(rng, ["db-1"]), now)
    assert host.count == 50
    assert host.forest is not None
    assert 0 <= host.score <= 1


def test_cycles_with_an_alarm_are_not_learned():
    host_models = models()
    rng = np.random.default_rng(3)
    cycle = correlated_cycle(rng, ["fw-1"])
    cycle[0].flags = np.ones(1, bool)
    host_models.observe(cycle, MINUTE)
    assert host_models.hosts["fw-1"].count == 0
    host_models.observe(correlated_cycle(rng, ["fw-1"]), 2 * MINUTE)
    assert host_models.hosts["fw-1"].count == 1


def test_the_ring_keeps_the_latest_samples_and_refits_on_schedule():
    host_models = models(min_samples=100, max_samples=150, refit="2h")
    now = learn(host_models, ["h"], 130)
    host = host_models.hosts["h"]
    first_fit = host.fitted_at
    newest = host.samples[-1].copy()
    now = learn(host_models, ["h"], 60, seed=9, now=now)  # an hour on: no refit due yet
    assert host.fitted_at == first_fit
    assert host.count == 190
    assert host.samples.shape == (150, 4)
    # The 40 oldest samples left the ring; the last one before this hour is 60 back.
    np.testing.assert_array_equal(host.samples[-61], newest)
    host_models.observe(correlated_cycle(np.random.default_rng(4), ["h"]), first_fit + 7200)
    assert host.fitted_at == first_fit + 7200


def test_a_signal_seen_later_widens_the_host_with_zeros_before():
    host_models = models()
    quiet = np.zeros(1, bool)
    host_models.observe([Residuals("cpu", ["h"], np.array([0.5]), quiet)], MINUTE)
    host_models.observe(
        [
            Residuals("cpu", ["h"], np.array([0.4]), quiet),
            Residuals("disk", ["h"], np.array([2.0]), quiet),
        ],
        2 * MINUTE,
    )
    host = host_models.hosts["h"]
    assert host.columns == ["cpu:max", "cpu:mean", "disk:max", "disk:mean"]
    np.testing.assert_allclose(host.samples, [[0.5, 0.5, 0, 0], [0.4, 0.4, 2.0, 2.0]])


def test_hosts_beyond_the_budget_are_counted_once_and_hosts_gone_are_forgotten():
    host_models = models(max_hosts=2, forget_after="10m")
    rng = np.random.default_rng(5)
    for minute in range(3):
        host_models.observe(correlated_cycle(rng, ["a", "b", "c", "d"]), minute * MINUTE)
    assert sorted(host_models.hosts) == ["a", "b"]
    assert host_models.dropped_total == 2
    host_models.observe(correlated_cycle(rng, ["b"]), 15 * MINUTE)
    assert sorted(host_models.hosts) == ["b"]


def test_residuals_are_clipped_so_one_wild_point_does_not_stretch_the_model():
    host_models = models()
    quiet = np.zeros(1, bool)
    host_models.observe([Residuals("cpu", ["h"], np.array([1e12]), quiet)], MINUTE)
    assert host_models.hosts["h"].samples.max() == pytest.approx(50.0)


def test_state_round_trip_keeps_the_samples_and_refits():
    host_models = models()
    now = learn(host_models, ["web-1", "web-2"], 250)
    arrays = host_models.state()
    assert all(array.dtype != object for array in arrays.values())
    restored = models()
    restored.restore(arrays, now)
    for host in ("web-1", "web-2"):
        np.testing.assert_array_equal(restored.hosts[host].samples, host_models.hosts[host].samples)
        assert restored.hosts[host].columns == host_models.hosts[host].columns
    restored.observe(correlated_cycle(np.random.default_rng(6), ["web-1", "web-2"]), now + 60)
    assert restored.hosts["web-1"].forest is not None


def small_hosts_config():
    return config().model_copy(
        update={
            "hosts": HostModelsConfig.model_validate(
                {"sample_every": "5m", "min_samples": 32, "max_samples": 64}, strict=False
            )
        }
    )


async def test_the_scoring_loop_exports_host_scores_and_keeps_samples_across_a_restart(
    tmp_path,
):
    anomaly = small_hosts_config()
    engine = engine_with("a", "b")
    scorer, _, registry, clock = await started(engine, tmp_path, anomaly=anomaly)
    await advance(scorer, clock, 40)
    scores = family(scorer.families, "scout_anomaly_host_score")
    assert set(scores) == {(("instance", "a"),), (("instance", "b"),)}
    assert all(0 <= value <= 1 for value in scores.values())
    assert family(scorer.families, "scout_anomaly_hosts_modelled") == {(): 2}
    await scorer.close()
    saved = registry.load_host_samples()
    assert saved is not None
    again, _, _, clock2 = await started(engine, tmp_path, anomaly=anomaly)
    clock2.now = clock.now + STEP
    await again.cycle()
    assert family(again.families, "scout_anomaly_hosts_modelled") == {(): 2}


@pytest.mark.parametrize("columns", [1, 3, 18])
def test_the_flat_forest_scores_as_scikit_learn_does(columns):
    from sklearn.ensemble import IsolationForest

    from ai_sidecar.anomaly.hosts import _Forest

    rng = np.random.default_rng(columns)
    train = rng.normal(0, 1, (500, columns))
    fitted = IsolationForest(n_estimators=32, max_samples=128, random_state=4).fit(train)
    points = np.vstack([rng.normal(0, 1, (200, columns)), rng.normal(0, 6, (50, columns))])
    ours = _Forest.from_sklearn(fitted).anomaly(points)
    np.testing.assert_allclose(ours, -fitted.score_samples(points), rtol=1e-6)


def test_a_host_no_longer_seen_has_no_score_though_it_is_still_remembered():
    host_models = models(min_samples=50, max_samples=100, forget_after="1d")
    now = learn(host_models, ["web-1", "web-2"], 60)
    assert math.isfinite(host_models.hosts["web-1"].score)
    now += MINUTE
    host_models.observe(correlated_cycle(np.random.default_rng(8), ["web-2"]), now)
    # web-1's series are gone: its last score is not its state now.
    assert "web-1" in host_models.hosts
    assert math.isnan(host_models.hosts["web-1"].score)
    scores = {s.labels["instance"] for s in host_models.families()[0].samples}
    assert scores == {"web-2"}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda arrays: arrays.pop("ring_0"), id="ring missing"),
        pytest.param(lambda arrays: arrays.pop("times_0"), id="times missing"),
        pytest.param(lambda arrays: arrays.update(times_0=np.array([1.0])), id="times short"),
        pytest.param(lambda arrays: arrays["ring_0"].__setitem__((3, 0), np.nan), id="nan"),
        pytest.param(lambda arrays: arrays["ring_0"].__setitem__((3, 1), np.inf), id="inf"),
        pytest.param(lambda arrays: arrays["times_0"].__setitem__(0, np.nan), id="nan time"),
    ],
)
def test_damaged_saved_samples_start_that_host_afresh_and_keep_the_others(damage):
    host_models = models()
    now = learn(host_models, ["web-1", "web-2"], 250)
    arrays = {name: np.array(array) for name, array in host_models.state().items()}
    damage(arrays)
    restored = models()
    restored.restore(arrays, now)
    web_2 = restored.hosts["web-2"]
    np.testing.assert_array_equal(web_2.samples, host_models.hosts["web-2"].samples)
    # web-1 starts afresh: no samples of its own from the file, so no forest yet.
    restored.observe(correlated_cycle(np.random.default_rng(6), ["web-1", "web-2"]), now + 60)
    assert restored.hosts["web-1"].count == 1
    assert restored.hosts["web-1"].forest is None
    assert web_2.forest is not None


async def test_a_saved_samples_file_of_another_shape_does_not_stop_the_scoring_loop(tmp_path):
    anomaly = config()
    engine = engine_with("a", "b")
    registry = ModelRegistry(tmp_path, anomaly.keep_versions)
    registry.save_host_samples({"hosts": np.array(["a", "b"])})  # no rings
    scorer, _, _, clock = await started(engine, tmp_path, anomaly=anomaly)
    await advance(scorer, clock, 1)
    assert family(scorer.families, "scout_anomaly_hosts_modelled") == {(): 0}


def test_saved_samples_without_a_list_of_hosts_restore_nothing():
    restored = models()
    restored.restore({"hosts": np.array("web-1")}, 0.0)
    assert restored.hosts == {}


async def test_a_shutdown_while_the_saved_samples_are_read_back_does_not_wipe_them(
    tmp_path, monkeypatch
):
    anomaly = small_hosts_config()
    engine = engine_with("a", "b")
    scorer, _, registry, clock = await started(engine, tmp_path, anomaly=anomaly)
    await advance(scorer, clock, 3)
    await scorer.close()
    saved = registry.load_host_samples()
    assert saved is not None
    assert sorted(saved["hosts"]) == ["a", "b"]
    # The restarted loop's first cycle reads the samples back in a worker thread;
    # the shutdown comes while it does.
    reading, release = threading.Event(), threading.Event()
    load = registry.load_host_samples

    def slow_load():
        reading.set()
        release.wait(10)
        return load()

    monkeypatch.setattr(registry, "load_host_samples", slow_load)
    trainer = InlineTrainer(engine, registry, anomaly)
    again = AnomalyScorer(anomaly, engine, registry, trainer, clock=Clock(clock.now + STEP))
    cycle = asyncio.create_task(again.cycle())
    assert await asyncio.to_thread(reading.wait, 10)
    cycle.cancel()
    asyncio.get_running_loop().call_later(0.2, release.set)
    await again.close()
    with contextlib.suppress(asyncio.CancelledError):
        await cycle
    saved = load()
    assert saved is not None
    assert sorted(saved["hosts"]) == ["a", "b"]
