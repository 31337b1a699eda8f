"""The garbage collector's settings at start, and its time on ``/metrics``."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from exporter.app import create_app
from exporter.cli import GC_THRESHOLDS, tune_garbage_collector
from exporter.common.gctime import GC_TIMER, GcTimer
from exporter.live import Settings


@pytest.fixture
def collector_settings_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    GC_TIMER.uninstall()
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_a_timer_adds_up_each_generations_collections():
    timer = GcTimer()
    timer.install()
    try:
        gc.collect(0)
        gc.collect()
    finally:
        timer.uninstall()
    assert timer.seconds[0] > 0
    assert timer.seconds[2] > 0
    assert timer.collections[0] >= 1
    assert timer.collections[2] >= 1
    assert timer.longest[2] <= timer.seconds[2]
    before = list(timer.seconds)
    gc.collect()
    assert timer.seconds == before  # uninstalled: no longer called


def test_a_timer_not_installed_exports_nothing():
    assert GcTimer().families() == []


@pytest.mark.usefixtures("collector_settings_restored")
def test_start_sets_the_thresholds_freezes_and_times_the_collector():
    tune_garbage_collector()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
    assert GC_TIMER.installed


@pytest.mark.usefixtures("collector_settings_restored")
async def test_metrics_show_the_collectors_time_once_started(aiohttp_client):
    tune_garbage_collector()
    gc.collect()
    client = await aiohttp_client(create_app(Settings(enabled_collectors=frozenset())))
    text = await (await client.get("/metrics")).text()
    full = 'scout_exporter_gc_seconds_total{generation="2"}'
    line = next(x for x in text.splitlines() if x.startswith(full))
    assert float(line.split()[-1]) > 0
    assert 'scout_exporter_gc_longest_pause_seconds{generation="0"}' in text
    assert 'scout_exporter_gc_collections_total{generation="2"}' in text
