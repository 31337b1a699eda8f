"""WS-Man listeners that attack the exporter rather than fail: each costs its own scrape only.

A host that trickles its answer a byte at a time, one that answers hundreds of
megabytes, one that redirects the credentials elsewhere, one whose fault is
megabytes of text. The listener is ``wsman_server``'s, over HTTPS with Basic
or over HTTP with NTLM, and the client is the real one (pypsrp, requests).
"""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from exporter.clients import winrm as winrm_client
from exporter.config import WinrmAuth
from exporter.targets.kind import ScrapeJob
from exporter.targets.winrm import scraper as winrm_scraper
from exporter.targets.winrm.modules import WinrmModule
from exporter.targets.winrm.scraper import WinrmScraper, WinrmTarget
from tests.conftest import http_post
from tests.exporter.targets.winrm.conftest import PASSWORD, USERNAME, WinrmPeer, exporter_config
from tests.exporter.targets.winrm.test_winrm_endpoint import path, sample

# Only a guard against a hang: every scrape here ends by its own deadline of seconds.
HANG_GUARD_SECONDS = 60


def job(
    peer: WinrmPeer, seconds: float, ca_file: Path
) -> ScrapeJob[WinrmTarget, WinrmModule, WinrmAuth]:
    host, port = peer.target.rsplit(":", 1)
    auth = WinrmAuth.model_validate(
        {
            "type": "winrm",
            "username": USERNAME,
            "password": SecretStr(PASSWORD),
            "transport": "basic",
            "https": True,
            "ca_file": str(ca_file),
            "allowed_targets": ["127.0.0.0/8"],
        }
    )
    deadline = asyncio.get_running_loop().time() + seconds
    target = WinrmTarget(host, int(port), "127.0.0.1")
    return ScrapeJob(target, (("fileserver", WinrmModule()),), "windows", auth, deadline)


@pytest.mark.parametrize("closing", [False, True], ids=["keep-alive", "connection-close"])
async def test_a_trickling_host_holds_its_thread_no_longer_than_its_deadline(
    wsman, named_wsman, closing
):
    # Headers at once, then a byte every tenth of a second: each socket read
    # ends well within the HTTP read timeout, so only a cut of the whole
    # request ends it. With one worker thread, a scrape that outlived its
    # deadline would leave the healthy host (and the next scrape of this one)
    # nothing to run on: every Windows scrape would fail, as with 32 such hosts.
    # With "Connection: close", http.client closes the connection once the
    # headers are in and reads the body after: the cut must still reach it.
    wsman.server.receive_trickle = True
    wsman.server.receive_closing = closing
    scraper = WinrmScraper(max_concurrent=1)
    await scraper.start()
    try:
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            # 4 s: the second scrape's deadline also covers the first's clean-up.
            first = await scraper.scrape(job(wsman, 4, wsman.ca_file), [])
            again = await scraper.scrape(job(wsman, 4, wsman.ca_file), [])
            healthy = await scraper.scrape(job(named_wsman, 30, named_wsman.ca_file), [])
    finally:
        await scraper.close()
    for trickled in (first, again):
        assert trickled == (False, "timeout: the host did not answer by the deadline")
    assert healthy == (True, None)
    # The second scrape of the trickling host had its turn: it was not refused
    # for the first one still running.
    assert wsman.server.actions().count("Receive") == 2


async def test_an_oversized_answer_is_refused_at_the_bound_not_read_whole(
    exporter_client, wsman, caplog
):
    wsman.server.receive_size = 64 * 1024 * 1024
    client = await exporter_client()
    text = await (await client.get(path(wsman.target))).text()
    assert sample(text, 'scout_winrm_scrape_error{reason="protocol"}') == 1.0
    assert f"more than {winrm_client.MAX_ANSWER_BYTES} bytes" in caplog.text
    # The client stopped reading at the bound: the host could not send it all
    # (what the sockets' buffers take in meanwhile is a few megabytes at most).
    assert wsman.server.hostile_bytes_sent < wsman.server.receive_size // 2
    # The next scrape of the host is a healthy one.
    wsman.server.receive_size = 0
    text = await (await client.get(path(wsman.target))).text()
    assert sample(text, "scout_winrm_success") == 1.0


async def test_a_fault_of_megabytes_is_logged_in_a_line_of_hundreds_of_characters(
    exporter_client, wsman, caplog
):
    wsman.server.fault_reason = "X" * 200_000
    client = await exporter_client()
    text = await (await client.get(path(wsman.target))).text()
    assert sample(text, 'scout_winrm_scrape_error{reason="protocol"}') == 1.0
    [logged] = [r.getMessage() for r in caplog.records if "WS-Management fault" in r.getMessage()]
    assert "XXXX" in logged
    assert len(logged) < 2 * winrm_client.MAX_TEXT_SHOWN


async def test_a_redirect_is_refused_and_the_credentials_never_reach_its_target(
    aiohttp_server, exporter_client, ntlm_wsman, caplog
):
    # The listener the allow-lists admitted sends the client to another one;
    # following, NTLM would run its handshake there (CredSSP would hand over
    # the password itself).
    elsewhere: list[str | None] = []

    async def record(request: web.Request) -> web.Response:
        elsewhere.append(request.headers.get("Authorization"))
        await request.read()
        return web.Response(status=401, headers={"WWW-Authenticate": "Negotiate"})

    receiver = web.Application()
    receiver.router.add_post("/wsman", record)
    other = await aiohttp_server(receiver)

    async def redirect(request: web.Request) -> web.Response:
        await request.read()
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{other.port}/wsman")

    redirector = web.Application()
    redirector.router.add_post("/wsman", redirect)
    admitted = await aiohttp_server(redirector)

    client = await exporter_client()
    target = f"127.0.0.1:{admitted.port}"
    text = await (await client.get(path(target, auth="windows_ntlm"))).text()
    assert sample(text, 'scout_winrm_scrape_error{reason="protocol"}') == 1.0
    assert f"redirected to http://127.0.0.1:{other.port}/wsman (HTTP 307)" in caplog.text
    assert elsewhere == []


async def test_reload_and_sigterm_do_not_wait_for_a_trickling_scrape(
    exporter_factory, wsman, tmp_path
):
    # The exporter as a process, scraping a host that trickles its answer with
    # the longest scrape timeout there is: its worker thread lives two minutes.
    wsman.server.receive_trickle = True
    config = tmp_path / "winrm.yml"
    config.write_text(exporter_config(wsman.ca_file))
    service, url = await asyncio.to_thread(
        exporter_factory, f"--config.file={config}", "--web.enable-lifecycle"
    )
    assert service.process is not None
    scrape = urllib.request.Request(
        f"{url}{path(wsman.target)}", headers={"X-Prometheus-Scrape-Timeout-Seconds": "120"}
    )
    in_flight = asyncio.create_task(asyncio.to_thread(_read, scrape))
    try:
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            await wsman.server.hostile_answer_started.wait()
        # Neither a reload (POST or SIGHUP) nor the stop waits for that thread.
        status, _ = await asyncio.to_thread(http_post, f"{url}/-/reload", HANG_GUARD_SECONDS)
        assert status == 200
        service.process.send_signal(signal.SIGHUP)
        service.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(service.process.wait, HANG_GUARD_SECONDS)
    finally:
        in_flight.cancel()
    assert code == 0
    log = service.log_path.read_text()
    assert log.count("config reloaded") == 2
    # The scrape ran on a scraper the reloads had replaced: the stop cut it
    # all the same, so its thread ended, after deleting its shell.
    assert "exiting without waiting for it" not in log
    assert "WinRM scrape: timeout: the exporter is stopping" in log
    assert wsman.server.actions().count("Delete") == 1


def _read(request: urllib.request.Request) -> None:
    try:
        with urllib.request.urlopen(request, timeout=HANG_GUARD_SECONDS * 3) as response:
            response.read()
    except OSError:  # the exporter stopped under it
        pass


async def test_a_scrape_still_queued_for_a_thread_when_the_pool_closes_is_answered(
    wsman, named_wsman
):
    # One thread, held by a trickling host; the healthy host's scrape waits
    # for it. A reload or a stop closes the pool: the waiting scrape never
    # starts, and says so, rather than dropping its HTTP request unanswered.
    wsman.server.receive_trickle = True
    scraper = WinrmScraper(max_concurrent=1)
    await scraper.start()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        busy = asyncio.ensure_future(scraper.scrape(job(wsman, 6, wsman.ca_file), []))
        await wsman.server.hostile_answer_started.wait()
        queued = asyncio.ensure_future(
            scraper.scrape(job(named_wsman, 30, named_wsman.ca_file), [])
        )
        for _ in range(3000):  # until it is submitted behind the busy one
            if len(scraper._in_flight) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(scraper._in_flight) == 2
        await scraper.close()
        assert await queued == (False, winrm_scraper.RELOADED_BEFORE_START)
        assert await busy == (False, "timeout: the host did not answer by the deadline")
    assert "Receive" not in named_wsman.server.actions()
