"""Collectors and target scrapers are started with the app, and closed and replaced on reload.

A collector or scraper registered through the tables records every call, so a
reload that forgets to close the old set, or to start the new one, fails here.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.app import create_app
from exporter.collectors import BaseCollector, CollectorSpec
from exporter.live import Settings
from exporter.targets.exposition import METRIC_EXPOSITION
from exporter.targets.kind import ScrapeJob, SelfMetric, StatusMetrics, TargetKind

GOOD = "auths: {lab: {type: snmp, community: public}}\n"
BAD = "auths: {lab: {type: snmp, comunity: typo}}\n"


class Journal:
    """What happened to every object built, in order: (event, serial number)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.built = 0
        self.refused_starts = 0  # how many of the next collector starts fail
        # A scraper's close waits for this, as one with scrapes in flight waits for them.
        self.scrapes_done = asyncio.Event()
        self.scrapes_done.set()
        self.scraper_closing = asyncio.Event()
        self.collector_released = asyncio.Event()
        self.collector_released.set()
        self.collector_closing = asyncio.Event()

    def serial(self) -> int:
        self.built += 1
        return self.built

    def of(self, serial: int) -> list[str]:
        return [event for event, which in self.events if which == serial]


class RecordingCollector(BaseCollector):
    """A collector that owns something: it may only collect between start and close."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.serial = journal.serial()
        self.running = False

    async def start(self) -> None:
        if self.journal.refused_starts:
            self.journal.refused_starts -= 1
            raise OSError("address already in use")
        self.journal.events.append(("collector start", self.serial))
        self.running = True

    async def close(self) -> None:
        self.journal.events.append(("collector close", self.serial))
        self.journal.collector_closing.set()
        await self.journal.collector_released.wait()  # as a listener's thread is joined
        self.running = False

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("scout_test_collector_serial", "Which collector answered.")
        family.add_metric([], self.serial if self.running else -1)
        yield family


class RecordingScraper:
    """A target kind's scraper that answers with its own serial number."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.serial = journal.serial()
        self.running = False

    async def start(self) -> None:
        self.journal.events.append(("scraper start", self.serial))
        self.running = True

    async def close(self) -> None:
        self.journal.events.append(("scraper close", self.serial))
        self.journal.scraper_closing.set()
        await self.journal.scrapes_done.wait()  # as a scraper waits for its scrapes in flight
        self.running = False

    async def scrape(
        self, job: ScrapeJob[str, str, None], families: list[Metric]
    ) -> tuple[bool, str | None]:
        if not self.running:
            raise RuntimeError("scraped while not started")
        families.append(
            METRIC_EXPOSITION.gauge("scout_test_scraper_serial", "Which scraper.", self.serial)
        )
        return True, None


def recording_kind(journal: Journal) -> TargetKind[str, str, None, Metric]:
    def modules() -> Mapping[str, str]:
        return {"plain": "plain"}

    return TargetKind(
        name="recording",
        noun="recording",
        description="a kind for tests",
        example="target=x&module=plain",
        module_types=(str,),
        default_modules=modules,
        parse_target=str,
        status=StatusMetrics(
            duration=SelfMetric("scout_recording_duration_seconds", "Seconds."),
            success=SelfMetric("scout_recording_success", "1 if it worked."),
        ),
        exposition=METRIC_EXPOSITION,
        build=lambda: RecordingScraper(journal),
    )


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "scout.yml"


@pytest.fixture
def app(journal, config_file):
    config_file.write_text(GOOD)
    spec = CollectorSpec("recording", "test", True, lambda _c, _v: RecordingCollector(journal))
    settings = Settings(
        config_file=config_file, enabled_collectors=frozenset({"recording"}), enable_lifecycle=True
    )
    return create_app(settings, collector_specs=[spec], target_kinds=[recording_kind(journal)])


def value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in:\n{text}")


async def serials(client) -> tuple[float, float]:
    """Which collector and which scraper answer now."""
    metrics = await (await client.get("/metrics")).text()
    scraped = await (await client.get("/recording?target=x&module=plain")).text()
    return value(metrics, "scout_test_collector_serial"), value(
        scraped, "scout_test_scraper_serial"
    )


async def test_app_starts_what_it_built_and_closes_it_on_shutdown(aiohttp_client, app, journal):
    client = await aiohttp_client(app)
    assert journal.events == [("collector start", 1), ("scraper start", 2)]
    assert await serials(client) == (1, 2)
    await client.close()
    assert journal.of(1) == ["collector start", "collector close"]
    assert journal.of(2) == ["scraper start", "scraper close"]


async def test_reload_closes_the_old_set_then_starts_the_new_one(aiohttp_client, app, journal):
    client = await aiohttp_client(app)
    assert (await client.post("/-/reload")).status == 200
    # The new scraper starts before it is given scrapes; the old collector closes
    # before the new one starts (a listener may need the same port); the old
    # scraper closes last, after the new one serves.
    assert journal.events[2:] == [
        ("scraper start", 4),
        ("collector close", 1),
        ("collector start", 3),
        ("scraper close", 2),
    ]
    assert await serials(client) == (3, 4)
    await client.close()
    assert journal.of(3)[-1] == "collector close"
    assert journal.of(4)[-1] == "scraper close"


async def test_a_reload_returns_while_the_old_scraper_is_still_closing(
    aiohttp_client, app, journal
):
    """The old scraper may wait for its scrapes in flight (a WinRM host that trickles
    its answer holds one to its deadline): reloads go on without it, and scrapes
    sent meanwhile are served by the new one, started; the stop waits for it."""
    client = await aiohttp_client(app)
    journal.scrapes_done.clear()
    try:
        # The bound only guards against a hang: a reload that waited would never return.
        first = await asyncio.wait_for(client.post("/-/reload"), 30)
        assert first.status == 200
        assert ("scraper close", 2) in journal.events
        assert await serials(client) == (3, 4)
        second = await asyncio.wait_for(client.post("/-/reload"), 30)
        assert second.status == 200
        assert await serials(client) == (5, 6)
        assert ("scraper close", 4) in journal.events
    finally:
        journal.scrapes_done.set()
    await client.close()
    assert all(journal.of(serial)[-1] == "scraper close" for serial in (2, 4, 6))


async def test_scrapes_during_a_slow_close_of_the_old_collector_reach_a_started_scraper(
    aiohttp_client, app, journal
):
    client = await aiohttp_client(app)
    journal.collector_released.clear()
    reload = asyncio.create_task(client.post("/-/reload"))
    try:
        await asyncio.wait_for(journal.collector_closing.wait(), 10)
        scraped = await (await client.get("/recording?target=x&module=plain")).text()
        assert value(scraped, "scout_test_scraper_serial") == 4
        assert not reload.done()
    finally:
        journal.collector_released.set()
    assert (await reload).status == 200


async def test_reload_thaws_what_start_froze(aiohttp_client, app):
    client = await aiohttp_client(app)
    gc.freeze()  # as scout-exporter's main does before serving
    try:
        assert gc.get_freeze_count() > 0
        assert (await client.post("/-/reload")).status == 200
        # The replaced config is back where the collector can free its cycles.
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


async def test_bad_config_starts_and_closes_nothing(aiohttp_client, app, journal, config_file):
    client = await aiohttp_client(app)
    config_file.write_text(BAD)
    assert (await client.post("/-/reload")).status == 500
    assert journal.events == [("collector start", 1), ("scraper start", 2)]
    assert await serials(client) == (1, 2)


async def test_new_set_that_cannot_start_gives_way_to_the_previous_config(
    aiohttp_client, app, journal
):
    client = await aiohttp_client(app)
    journal.refused_starts = 1
    response = await client.post("/-/reload")
    assert response.status == 500
    assert "address already in use" in await response.text()
    # The new set (3, 4) never served: its collector failed to start, and its
    # scraper, started first, was closed again. A fresh set from the previous
    # config (5, 6) runs instead.
    assert journal.of(1) == ["collector start", "collector close"]
    assert journal.of(2) == ["scraper start", "scraper close"]
    assert journal.of(3) == []
    assert journal.of(4) == ["scraper start", "scraper close"]
    assert await serials(client) == (5, 6)
    metrics = await (await client.get("/metrics")).text()
    assert "scout_config_last_reload_successful 0.0" in metrics
    await client.close()
    assert journal.of(5) == ["collector start", "collector close"]
    assert journal.of(6) == ["scraper start", "scraper close"]


async def test_the_kind_from_the_table_gets_the_handlers_parameters_and_self_metrics(
    aiohttp_client, app
):
    client = await aiohttp_client(app)
    response = await client.get("/recording?target=x&module=plain")
    text = await response.text()
    assert response.status == 200
    assert value(text, "scout_recording_success") == 1
    # Seconds the near-instant scrape took: not a timestamp (no fixed ceiling a
    # loaded machine's pause could pass).
    assert 0 <= value(text, "scout_recording_duration_seconds") < 30
    missing = await client.get("/recording?target=x")
    assert missing.status == 400
    assert await missing.text() == "'module' parameter must be one of: plain\n"
    landing = await (await client.get("/")).text()
    assert "/recording?target=x&amp;module=plain" in landing
