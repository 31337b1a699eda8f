"""``/snmp`` at its deadline: a device that answers is never reported unreachable,
and a 200 always carries the status families the shipped alerts read.

Against real snmpd and the misbehaving agents of ``tests.peers.snmp``; what is
checked is what the scrape reports, never how long it took.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from exporter.app import create_app
from exporter.clients.snmp import Oid, SnmpSession, VarBind
from exporter.config import parse_config
from exporter.live import Settings
from exporter.targets import kind
from exporter.targets.snmp.scraper import CUT_SHORT, ModuleResult, SnmpScraper
from tests.peers import snmp as peers

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory) -> Iterator[peers.RealSnmpd]:
    with peers.RealSnmpd(tmp_path_factory.mktemp("snmpd")) as agent:
        yield agent


@pytest.fixture
async def client(aiohttp_client):
    settings = Settings(enabled_collectors=frozenset())
    return await aiohttp_client(create_app(settings, parse_config("", "test.yml")))


async def exposition(
    client, scrape_timeout: str, **params: str
) -> tuple[int, dict[peers.SeriesKey, float]]:
    response = await client.get(
        "/snmp", params=params, headers={"X-Prometheus-Scrape-Timeout-Seconds": scrape_timeout}
    )
    return response.status, peers.parse_exposition(await response.text())


async def scrape(client, target: str, scrape_timeout: str) -> tuple[int, dict]:
    """The status, and each series by its name alone (one module: names are unique)."""
    status, series = await exposition(client, scrape_timeout, target=target)
    return status, {name: value for (name, _), value in series.items()}


def assert_said(log: str, reason: str) -> None:
    """The module's own deadline gives ``reason``; when the machine stalls the event
    loop past it, the handler's cut comes first and says CUT_SHORT instead."""
    assert reason in log or CUT_SHORT in log, log


async def test_a_device_that_answers_but_cannot_be_walked_in_time_is_reachable(client, caplog):
    """A big or slow device that answers every request but whose walk outlasts the
    scrape fails its module, and only that: it answered, so SnmpDeviceUnreachable
    (critical) must not fire, and the PDUs it was sent are counted."""
    caplog.set_level(logging.WARNING)
    with peers.EndlessTableAgent() as agent:
        # Generous: on a loaded machine the agent still answers many requests in it.
        status, series = await scrape(client, agent.target, scrape_timeout="4")
    assert status == 200
    assert series["scout_snmp_module_success"] == 0
    assert series["scout_snmp_device_reachable"] == 1, series
    assert series["scout_snmp_pdus_sent"] >= 2  # the GET, and the walk's GetBulks
    assert series["scout_snmp_max_repetitions"] >= 1
    # The module's own deadline says why; on a loaded machine the handler's cut
    # may come first, with its own words (the series above are the same).
    assert_said(
        caplog.text, "the device answers, but needs more time than the scrape timeout gives"
    )


async def test_a_silent_device_is_still_unreachable_at_the_deadline(client, caplog):
    """The other side of the one above: no answer at all is the unreachable device."""
    caplog.set_level(logging.WARNING)
    with peers.SilentDevice() as silent:
        status, series = await scrape(client, silent.target, scrape_timeout="3")
    assert status == 200
    assert series["scout_snmp_module_success"] == 0
    assert series["scout_snmp_device_reachable"] == 0
    assert series["scout_snmp_pdus_sent"] >= 1
    assert_said(caplog.text, "deadline passed with no answer from the device")


async def test_a_scrape_the_handler_cuts_short_still_reports_module_and_device(
    client, snmpd, monkeypatch
):
    """A CPU-bound walk or a long garbage collection holds the event loop past the
    deadline: the handler then stops the scrape itself, before the module's own
    deadline result is built. The 200 must still say the module failed and that
    the device answered, or no alert could fire on it."""
    original = SnmpSession.get
    blocked = False

    async def get_then_hold_the_loop(
        self: SnmpSession, oids: Sequence[Oid], *, deadline: float | None = None
    ) -> list[VarBind]:
        nonlocal blocked
        got = await original(self, oids, deadline=deadline)
        if not blocked and deadline is not None:
            blocked = True
            # Nothing else runs until both the module's deadline and the handler's
            # (its grace included) have passed.
            loop = asyncio.get_running_loop()
            time.sleep(max(0.0, deadline + kind.DEADLINE_GRACE_SECONDS + 0.5 - loop.time()))  # noqa: ASYNC251
        return got

    monkeypatch.setattr(SnmpSession, "get", get_then_hold_the_loop)
    status, series = await scrape(client, snmpd.target, scrape_timeout="3")
    assert blocked
    assert status == 200
    assert series["scout_snmp_module_success"] == 0, series
    assert series["scout_snmp_device_reachable"] == 1, series
    assert series["scout_snmp_pdus_sent"] >= 1


@pytest.mark.parametrize("device", [peers.ForgedJunkDevice, peers.GarbageDevice])
async def test_datagrams_that_answer_no_request_do_not_make_a_device_reachable(
    client, caplog, device
):
    """One forged byte bearing a dead device's address (or junk from a broken agent,
    or another UDP service on its port) is no answer: anyone could send it, so
    SnmpDeviceUnreachable must still fire. It is counted, and the warning says
    what came instead of an answer."""
    caplog.set_level(logging.WARNING)
    with device() as dead:
        status, series = await scrape(client, dead.target, scrape_timeout="3")
    assert status == 200
    assert series["scout_snmp_module_success"] == 0
    assert series["scout_snmp_device_reachable"] == 0, series
    assert series["scout_snmp_undecodable_datagrams"] >= 1
    [record] = [r for r in caplog.records if "snmp module failed" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "no answer from the device" in record.getMessage()
    assert "datagrams from its address were no SNMP reply" in record.getMessage()


async def test_a_scrape_waiting_behind_another_of_the_device_is_reachable_if_it_answers(
    client, caplog
):
    """An HA Prometheus pair scrapes a device at once: the second waits for the
    session the first holds, here for its whole budget, and sends nothing. The
    device answered the first meanwhile, so the second must not page it as
    unreachable; its module fails saying why."""
    caplog.set_level(logging.WARNING)
    with peers.EndlessTableAgent() as agent:
        first = asyncio.ensure_future(scrape(client, agent.target, scrape_timeout="6"))
        # The first holds the session from its first request on.
        assert await asyncio.to_thread(agent.asked.wait, 30)
        status, series = await scrape(client, agent.target, scrape_timeout="2")
        await first
    assert status == 200
    assert series["scout_snmp_pdus_sent"] == 0, series
    assert series["scout_snmp_module_success"] == 0
    assert series["scout_snmp_device_reachable"] == 1, series
    assert_said(
        caplog.text, "no request sent: the device's session was busy with another scrape or"
    )


async def test_a_module_finished_before_the_handler_cut_keeps_its_families(
    client, snmpd, monkeypatch, caplog
):
    """Of two modules, one is read in full and the other holds the event loop past
    the handler's deadline: the one that succeeded reports success 1 with its
    samples, never a success without them."""
    caplog.set_level(logging.WARNING)
    original = SnmpScraper._scrape_module
    system_done = asyncio.Event()

    async def one_then_hold_the_loop(self: SnmpScraper, *args: Any) -> ModuleResult:
        _, _, name, _, deadline = args  # session, device key, name, module, deadline
        if name == "system":
            result = await original(self, *args)
            system_done.set()
            return result
        await system_done.wait()
        loop = asyncio.get_running_loop()
        time.sleep(max(0.0, deadline + kind.DEADLINE_GRACE_SECONDS + 0.5 - loop.time()))  # noqa: ASYNC251
        await asyncio.Event().wait()  # where the cut finds it: it never finishes
        raise AssertionError("unreachable")

    monkeypatch.setattr(SnmpScraper, "_scrape_module", one_then_hold_the_loop)
    status, series = await exposition(client, "3", target=snmpd.target, module="system,if_mib")
    assert status == 200
    success = {
        dict(labels)["module"]: value
        for (name, labels), value in series.items()
        if name == "scout_snmp_module_success"
    }
    assert success == {"system": 1, "if_mib": 0}
    assert CUT_SHORT in caplog.text  # the handler's cut, not the module's own deadline
    assert any(name == "sysUpTime" for name, _ in series), series
