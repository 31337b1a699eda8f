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

import pytest

from exporter.app import create_app
from exporter.clients.snmp import Oid, SnmpSession, VarBind
from exporter.config import parse_config
from exporter.live import Settings
from exporter.targets import kind
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


async def scrape(client, target: str, scrape_timeout: str) -> tuple[int, dict]:
    response = await client.get(
        "/snmp",
        params={"target": target},
        headers={"X-Prometheus-Scrape-Timeout-Seconds": scrape_timeout},
    )
    text = await response.text()
    series = {name: value for (name, _), value in peers.parse_exposition(text).items()}
    return response.status, series


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
    assert "the device answers, but needs more time than the scrape timeout gives" in caplog.text


async def test_a_silent_device_is_still_unreachable_at_the_deadline(client, caplog):
    """The other side of the one above: no answer at all is the unreachable device."""
    caplog.set_level(logging.WARNING)
    with peers.SilentDevice() as silent:
        status, series = await scrape(client, silent.target, scrape_timeout="3")
    assert status == 200
    assert series["scout_snmp_module_success"] == 0
    assert series["scout_snmp_device_reachable"] == 0
    assert series["scout_snmp_pdus_sent"] >= 1
    assert "deadline passed with no answer from the device" in caplog.text


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


async def test_an_answer_that_does_not_decode_fails_the_module_and_says_why(client, caplog):
    """A reply that is not SNMP is still a reply: the device is there (reachable),
    the module fails at once rather than after every retry, and the warning
    says what was wrong."""
    caplog.set_level(logging.WARNING)
    with peers.GarbageDevice() as garbage:
        status, series = await scrape(client, garbage.target, scrape_timeout="10")
        received = garbage.received
    assert status == 200
    assert series["scout_snmp_module_success"] == 0
    assert series["scout_snmp_device_reachable"] == 1, series
    assert series["scout_snmp_retries"] == 0
    assert received == series["scout_snmp_pdus_sent"] == 1
    [record] = [r for r in caplog.records if "snmp module failed" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "answered with data that is not an SNMP reply" in record.getMessage()
