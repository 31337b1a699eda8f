"""Scrapes cut short: by their deadline, by a host that trickles, by a reload, by a stop.

Each leaves no shell open on the host: a shell the scrape created is deleted
(best effort, within ``CLEANUP_SECONDS``) however the scrape ended, as counted
by the listener (``wsman_server``). A stop of the exporter does not wait for a
scrape in flight to reach its deadline: it cuts it, answers it and exits.
"""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterable

import pytest
from aiohttp import ClientResponse

import exporter.live as live_module
from exporter.app import create_app
from exporter.clients.winrm import STOPPING, Endpoint, PypsrpOpener, WinrmTimeoutError
from exporter.config import parse_config
from exporter.keys import LIVE_CONFIG
from exporter.live import Settings
from exporter.targets.winrm.scraper import CLOSE_WAIT_SECONDS, WinrmScraper
from tests.exporter.targets.winrm.conftest import PASSWORD, USERNAME, WinrmPeer, exporter_config
from tests.exporter.targets.winrm.test_hostile_listener import job
from tests.exporter.targets.winrm.test_winrm_endpoint import path, sample

# Only a guard against a hang: every scrape here ends well within it.
HANG_GUARD_SECONDS = 90
# The in-flight scrape's own deadline in the stop test: a stop that waited for
# it, or for any grace period of the same order, would be seen.
SCRAPE_TIMEOUT_SECONDS = 60


async def test_sigterm_cuts_a_scrape_in_flight_answers_it_and_deletes_its_shell(
    exporter_factory, wsman, tmp_path
):
    # The exporter as a process; the host trickles its answer, a byte every
    # tenth of a second, so the scrape would run to its deadline a minute away.
    wsman.server.receive_trickle = True
    config = tmp_path / "winrm.yml"
    config.write_text(exporter_config(wsman.ca_file))
    service, url = await asyncio.to_thread(exporter_factory, f"--config.file={config}")
    assert service.process is not None
    scrape = urllib.request.Request(
        f"{url}{path(wsman.target)}",
        headers={"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT_SECONDS)},
    )
    in_flight = asyncio.create_task(asyncio.to_thread(_answer, scrape))
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await wsman.server.hostile_answer_started.wait()
    stopped = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(service.process.wait, HANG_GUARD_SECONDS)
    took = time.monotonic() - stopped
    answer = await in_flight
    assert code == 0
    # Far from the scrape's deadline: the stop cut the scrape rather than
    # waited for it (the bound is loose; the stop takes a second or two).
    assert took < SCRAPE_TIMEOUT_SECONDS / 4, f"the exporter took {took:.1f} s to stop"
    # The scrape in flight was answered, as failed, rather than dropped.
    assert answer is not None
    assert sample(answer, "scout_winrm_success") == 0.0
    # The shell the scrape created was deleted before the exporter exited.
    assert wsman.server.shells_created == 1
    assert wsman.server.actions().count("Delete") == 1
    assert wsman.server.shells == {}
    # Nothing was left running: the worker thread ended with the cut.
    assert "exiting without waiting for it" not in service.log_path.read_text()


def _answer(request: urllib.request.Request) -> str | None:
    """The text of the answer, or None if the connection was dropped unanswered."""
    try:
        with urllib.request.urlopen(request, timeout=HANG_GUARD_SECONDS) as response:
            return response.read().decode()
    except (OSError, urllib.error.URLError):
        return None


async def _threads_done(scraper: WinrmScraper) -> None:
    """Until the scrapes' worker threads have ended, clean-up included."""
    threads = [asyncio.wrap_future(future) for future in scraper._in_flight]
    if threads:
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            await asyncio.wait(threads)


def _no_shell_left(peer: WinrmPeer) -> None:
    assert peer.server.shells_created == 1
    assert peer.server.actions().count("Delete") == 1
    assert peer.server.shells == {}


@pytest.mark.parametrize("host", ["slow", "trickling"])
async def test_a_scrape_cut_at_its_deadline_deletes_its_shell(wsman, host):
    # A host slower than the deadline, or one that trickles its answer a byte
    # at a time: the scrape fails at its deadline, and its thread deletes the
    # shell before it ends, not at the next scrape nor when the scraper closes.
    if host == "slow":
        wsman.server.receive_delay = HANG_GUARD_SECONDS
    else:
        wsman.server.receive_trickle = True
    scraper = WinrmScraper()
    await scraper.start()
    try:
        outcome = await scraper.scrape(job(wsman, 3, wsman.ca_file), [])
        await _threads_done(scraper)
        assert outcome == (False, "timeout: the host did not answer by the deadline")
        _no_shell_left(wsman)
    finally:
        await scraper.close()


async def test_a_scrape_a_reload_leaves_running_ends_and_then_deletes_its_shell(wsman):
    # A reload closes the old scraper without cutting its scrapes: this one
    # answers after the close stopped waiting for it, succeeds, and deletes
    # the shell it would otherwise have kept for the next scrape.
    wsman.server.receive_delay = CLOSE_WAIT_SECONDS + 2
    wsman.server.chunks = 1  # one Receive, so one delay
    scraper = WinrmScraper()
    await scraper.start()
    scrape = asyncio.ensure_future(scraper.scrape(job(wsman, 30, wsman.ca_file), []))
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await wsman.server.seen("Receive")
    await scraper.close()
    assert not scrape.done()
    assert wsman.server.actions().count("Delete") == 0
    assert await scrape == (True, None)
    await _threads_done(scraper)
    _no_shell_left(wsman)


async def test_an_interrupted_scrape_fails_at_once_and_deletes_its_shell(wsman):
    # What a stop does to each scraper before closing it: the trickling
    # scrape, 30 s from its deadline, fails now, and its shell is deleted.
    wsman.server.receive_trickle = True
    scraper = WinrmScraper()
    await scraper.start()
    try:
        scrape = asyncio.ensure_future(scraper.scrape(job(wsman, 30, wsman.ca_file), []))
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            await wsman.server.hostile_answer_started.wait()
        scraper.interrupt()
        assert await scrape == (False, "timeout: the exporter is stopping")
        await _threads_done(scraper)
        _no_shell_left(wsman)
    finally:
        await scraper.close()


async def test_once_stopped_an_opener_sends_nothing_more(wsman):
    # A scrape that reaches its thread after the stop (or a shell opened in
    # the middle of it) creates nothing on the host that no one would delete.
    opener = PypsrpOpener()
    opener.stop()
    host, port = wsman.target.rsplit(":", 1)
    endpoint = Endpoint(host, int(port), True, "basic", USERNAME, PASSWORD, wsman.ca_file)
    with pytest.raises(WinrmTimeoutError, match=STOPPING):
        await asyncio.to_thread(opener.open, endpoint, time.monotonic() + 30)
    assert wsman.server.actions() == []


async def _app_scraping_a_trickling_host(aiohttp_client, wsman, tmp_path):
    """The exporter in process, its config file in place for reloads, and one
    scrape in flight on a host that trickles its answer, SCRAPE_TIMEOUT_SECONDS
    from its deadline."""
    wsman.server.receive_trickle = True
    text = exporter_config(wsman.ca_file)
    file = tmp_path / "winrm.yml"
    file.write_text(text)
    app = create_app(
        Settings(config_file=file, enabled_collectors=frozenset()), parse_config(text, "winrm.yml")
    )
    client = await aiohttp_client(app)
    scrape = asyncio.ensure_future(
        client.get(
            path(wsman.target),
            headers={"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT_SECONDS)},
        )
    )
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await wsman.server.hostile_answer_started.wait()
    return app[LIVE_CONFIG], scrape


async def _cut_and_answered(scrape: asyncio.Future[ClientResponse]) -> None:
    started = time.monotonic()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        text = await (await scrape).text()
    took = time.monotonic() - started
    assert took < SCRAPE_TIMEOUT_SECONDS / 4, f"the scrape ran {took:.1f} s after the stop"
    assert sample(text, "scout_winrm_success") == 0.0


async def test_a_stop_long_after_a_reload_still_cuts_the_old_scrapers_scrape(
    aiohttp_client, wsman, tmp_path
):
    # The reload's close of the old scraper stops waiting for the scrape after
    # CLOSE_WAIT_SECONDS; a stop that comes after that must still reach it.
    live, scrape = await _app_scraping_a_trickling_host(aiohttp_client, wsman, tmp_path)
    await live.reload()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await asyncio.wait(set(live._closing))  # the close gave up on the scrape
    assert not scrape.done()
    live.interrupt()
    await _cut_and_answered(scrape)
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await wsman.server.seen("Delete")  # the cut scrape's thread deletes its shell
    assert wsman.server.actions().count("Delete") == 1


async def test_a_stop_in_the_middle_of_a_reload_cuts_the_scrape_of_the_scraper_it_replaces(
    aiohttp_client, wsman, tmp_path, monkeypatch
):
    # Between the swap to the new scrapers and the background close of the old
    # ones, the old scraper is in neither the config in force nor closing: a
    # stop arriving then (SIGHUP and SIGTERM together) must reach it too.
    live, scrape = await _app_scraping_a_trickling_host(aiohttp_client, wsman, tmp_path)
    reached, go_on = asyncio.Event(), asyncio.Event()
    close_all = live_module.close_all

    async def held_first_close(parts: Iterable[object]) -> None:
        if not reached.is_set():  # the old collectors' close, after the swap
            reached.set()
            await go_on.wait()
        await close_all(parts)

    monkeypatch.setattr(live_module, "close_all", held_first_close)
    reload = asyncio.ensure_future(live.reload())
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await reached.wait()
    live.interrupt()
    go_on.set()
    await reload
    await _cut_and_answered(scrape)
