"""The scrape deadline: a slow or failing collector never holds up or breaks the others."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.app import create_app
from exporter.collectors import BaseCollector, CollectorSpec
from exporter.config import ExporterConfig
from exporter.live import Settings
from exporter.scrape import scrape_deadline


class Fast(BaseCollector):
    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("scout_test_fast", "Always answers at once.")
        family.add_metric([], 42)
        yield family


class Blocked(BaseCollector):
    """Blocks until released, like a statvfs on a hung NFS mount."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0

    def collect(self) -> Iterator[Metric]:
        self.started += 1
        self.release.wait(timeout=60)
        family = GaugeMetricFamily("scout_test_slow", "Arrives too late.")
        family.add_metric([], 1)
        yield family


class Broken(BaseCollector):
    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("device went away")


@pytest.fixture
def blocked() -> Iterator[Blocked]:
    collector = Blocked()
    yield collector
    collector.release.set()


def spec(name: str, collector: object) -> CollectorSpec:
    return CollectorSpec(name, "test", True, lambda _config, _view: collector)  # type: ignore[arg-type,return-value]


@pytest.fixture
async def client(aiohttp_client, blocked):
    specs = [spec("fast", Fast()), spec("slow", blocked), spec("broken", Broken())]
    settings = Settings(enabled_collectors=frozenset({"fast", "slow", "broken"}))
    app = create_app(settings, ExporterConfig(), collector_specs=specs)
    return await aiohttp_client(app)


async def scrape(client, scrape_timeout: str = "1") -> str:
    response = await client.get(
        "/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": scrape_timeout}
    )
    assert response.status == 200
    return await response.text()


async def test_slow_collector_is_unsuccessful_and_the_others_are_served(client, blocked):
    started = time.monotonic()
    text = await scrape(client)
    # Back at the 0.5 s deadline the header asks for, not at the 9.5 s default nor when
    # the blocked collector (60 s) gives up: a functional bound, not a speed target.
    assert time.monotonic() - started < 5
    assert 'scout_collector_success{collector="slow"} 0.0' in text
    assert 'scout_collector_success{collector="fast"} 1.0' in text
    assert "scout_test_fast 42.0" in text
    assert "scout_test_slow" not in text


async def test_stuck_collector_is_not_started_again_while_it_runs(client, blocked):
    await scrape(client)
    text = await scrape(client)
    assert blocked.started == 1
    assert 'scout_collector_success{collector="slow"} 0.0' in text
    blocked.release.set()


async def test_collector_runs_again_once_it_finished(client, blocked):
    await scrape(client)
    blocked.release.set()
    for _ in range(50):
        text = await scrape(client, scrape_timeout="5")
        if 'scout_collector_success{collector="slow"} 1.0' in text:
            break
    assert "scout_test_slow 1.0" in text
    assert blocked.started == 2


async def test_failing_collector_reports_failure_without_breaking_the_scrape(client):
    text = await scrape(client)
    assert 'scout_collector_success{collector="broken"} 0.0' in text
    assert "scout_test_fast 42.0" in text
    # Its own run time, not the whole scrape's (which waits 0.5 s for the slow one).
    broken = re.search(r'scout_collector_duration_seconds\{collector="broken"\} (\S+)', text)
    slow = re.search(r'scout_collector_duration_seconds\{collector="slow"\} (\S+)', text)
    assert broken is not None
    assert slow is not None
    assert float(broken.group(1)) < float(slow.group(1)) / 2


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("10", 9.5),
        ("2.5", 2.0),
        ("0.4", 0.2),  # smaller than the offset: half of it
        (None, 9.5),  # Prometheus's default timeout
        ("not-a-number", 9.5),
        ("-3", 9.5),
        ("nan", 9.5),
        ("inf", 9.5),
        ("-inf", 9.5),
        ("0", 9.5),
        ("120", 119.5),
        ("1e9", 119.5),  # capped: a caller cannot hold a target for hours
        ("1e400", 9.5),  # overflows to inf
    ],
)
def test_deadline_is_the_scrape_timeout_minus_the_offset(header, expected):
    assert scrape_deadline(header, 0.5) == pytest.approx(expected)
