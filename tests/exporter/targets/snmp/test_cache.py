"""When the per-device cache of lookups is reused, and when it is read again.

A real agent cannot be made to change ifTableLastChange or ifLastChange on cue,
so these cases replay an agent's answers through the ``SnmpClient`` protocol;
the reboot case runs against real snmpd in test_snmp_endpoint.py.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Sequence

import pytest
from pydantic import SecretStr

from exporter.clients.snmp import Credentials, Oid, VarBind
from exporter.config import SnmpAuth
from exporter.targets.kind import ScrapeJob
from exporter.targets.snmp import scraper as scraper_module
from exporter.targets.snmp.exposition import Family, render_text
from exporter.targets.snmp.modules import builtin_modules
from exporter.targets.snmp.scraper import SessionEntry, SessionFactory, SnmpScraper, Target
from tests.exporter.fakes import IF_NUMBER, IFT, IFX, TABLE_LAST_CHANGE, UPTIME, ReplayedAgent


@pytest.fixture
def agent() -> ReplayedAgent:
    return ReplayedAgent()


async def scrape(scraper: SnmpScraper, agent: ReplayedAgent) -> tuple[bool, str]:
    module = builtin_modules()["if_mib"]
    entry = SessionEntry(agent, 0.0)
    result = await scraper.scrape_module(entry, ("dev",), "if_mib", module, 1e12)
    assert result.success, result.error
    names = {
        dict(labels)["ifName"]
        for family in result.families
        if family.name == "ifHCInOctets"
        for labels, _ in family.samples
    }
    return result.cache_used, ",".join(sorted(names))


async def test_second_scrape_reuses_lookups_and_walks_only_live_columns(agent):
    scraper = SnmpScraper()
    assert await scrape(scraper, agent) == (False, "eth0")
    agent.scalars[UPTIME] += 6000
    agent.columns[(*IFX, 1)] = {1: b"renamed-but-not-yet-seen"}
    assert await scrape(scraper, agent) == (True, "eth0")
    assert (*IFX, 1) not in agent.walked[-1]  # the lookup column was not read again
    assert (*IFX, 6) in agent.walked[-1]  # the counter was


async def exposition(
    scraper: SnmpScraper, agent: ReplayedAgent, *, afresh: bool = False
) -> tuple[bool, str]:
    """The module's exposition; ``afresh``: every label set rendered now, none kept."""
    module = builtin_modules()["if_mib"]
    result = await scraper.scrape_module(SessionEntry(agent, 0.0), ("dev",), "if_mib", module, 1e12)
    assert result.success, result.error
    if afresh:
        for family in result.families:
            family.rendered = None
    return result.cache_used, render_text(result.families)


async def test_scrapes_reusing_the_cache_render_what_a_fresh_read_renders(agent):
    # Kept row labels and families of cached columns against mapping the same rows anew:
    # escapes, text that is not UTF-8, an info metric, a MAC, a Counter64-sized value.
    agent.columns.update(
        {
            (*IFX, 18): {1: b'up"link\\ to "core"\nA', 9: b"\xff\xfe not utf-8"},
            (*IFT, 2): {1: b"eth0", 9: b"lo"},
            (*IFT, 3): {1: 6, 9: 24},
            (*IFT, 6): {1: b"\x00\x11\x22\x33\x44\x55", 9: b""},
            (*IFX, 1): {1: b"eth0", 9: b"lo"},
            (*IFX, 15): {1: 1000, 9: 0},
            (*IFX, 6): {1: 123, 9: 2**64 - 1},
            (*IFT, 9): {1: 77, 9: 0},
        }
    )
    cached = SnmpScraper()
    for step in range(3):
        used, text = await exposition(cached, agent)
        assert used == (step > 0)
        assert text == (await exposition(SnmpScraper(), agent, afresh=True))[1]
        assert 'ifAlias="up\\"link\\\\ to \\"core\\"\\nA"' in text
        # Counters move, and a row the cache never saw appears (no lookup values for it).
        agent.scalars[UPTIME] += 6000
        agent.columns[(*IFX, 6)] = {1: 124 + step, 9: step, 12: 5}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda a: a.scalars.__setitem__(UPTIME, 10), id="reboot: uptime went back"),
        pytest.param(lambda a: a.scalars.__setitem__(IF_NUMBER, 2), id="ifNumber changed"),
        pytest.param(
            lambda a: a.scalars.__setitem__(TABLE_LAST_CHANGE, 9), id="ifTableLastChange moved"
        ),
        pytest.param(lambda a: a.columns[(*IFT, 9)].__setitem__(1, 99), id="a link flapped"),
    ],
)
async def test_cache_is_read_again_when_the_device_changes(agent, change):
    scraper = SnmpScraper()
    await scrape(scraper, agent)
    agent.scalars[UPTIME] += 6000
    agent.columns[(*IFX, 1)] = {1: b"eth0-renamed"}
    change(agent)
    cache_used, names = await scrape(scraper, agent)
    assert names == "eth0-renamed"
    assert cache_used is False


async def test_cache_expires_after_max_age(agent):
    now = [0.0]
    scraper = SnmpScraper(clock=lambda: now[0], first_life=lambda: 1.0)
    await scrape(scraper, agent)
    agent.scalars[UPTIME] += 6000
    now[0] += 899  # if_mib's max_age_seconds is 900
    assert await scrape(scraper, agent) == (True, "eth0")
    now[0] += 2
    agent.columns[(*IFX, 1)] = {1: b"eth0-new-alias"}
    assert await scrape(scraper, agent) == (False, "eth0-new-alias")


async def test_a_first_cache_lives_a_share_of_max_age_and_later_ones_all_of_it(agent):
    # Devices first scraped together must not all refill together 15 minutes later.
    now = [0.0]
    scraper = SnmpScraper(clock=lambda: now[0], first_life=lambda: 0.5)
    await scrape(scraper, agent)
    agent.scalars[UPTIME] += 6000
    now[0] += 449  # half of if_mib's max_age_seconds (900), less a second
    assert (await scrape(scraper, agent))[0] is True
    now[0] += 2
    assert (await scrape(scraper, agent))[0] is False  # refilled: a cache of its own
    now[0] += 899
    assert (await scrape(scraper, agent))[0] is True  # the refill lives all of max_age
    now[0] += 2
    assert (await scrape(scraper, agent))[0] is False


def test_first_cache_lives_between_half_and_all_of_max_age_by_default():
    lives = [SnmpScraper()._first_life() for _ in range(200)]
    assert all(0.5 <= life <= 1.0 for life in lives)
    assert len(set(lives)) > 1


async def test_sessions_to_named_devices_are_renewed_to_look_them_up_again():
    from exporter.clients.snmp import Credentials
    from exporter.targets.snmp import scraper as scraper_module
    from exporter.targets.snmp.scraper import Target

    now = [0.0]
    scraper = SnmpScraper(clock=lambda: now[0])
    module = builtin_modules()["if_mib"]
    credentials = Credentials(2, community="public")
    named = scraper.session(Target("switch.example.net"), "a", credentials, module)
    by_address = scraper.session(Target("192.0.2.1"), "a", credentials, module)
    now[0] += scraper_module.RESOLVE_SECONDS - 1
    assert scraper.session(Target("switch.example.net"), "a", credentials, module) is named
    now[0] += 2
    assert scraper.session(Target("switch.example.net"), "a", credentials, module) is not named
    assert scraper.session(Target("192.0.2.1"), "a", credentials, module) is by_address
    await scraper.close()


async def test_session_count_is_capped(monkeypatch):
    from exporter.clients.snmp import Credentials
    from exporter.targets.snmp import scraper as scraper_module
    from exporter.targets.snmp.scraper import Target

    monkeypatch.setattr(scraper_module, "MAX_SESSIONS", 3)
    now = [0.0]
    scraper = SnmpScraper(clock=lambda: now[0])
    module = builtin_modules()["if_mib"]
    credentials = Credentials(2, community="public")
    first = scraper.session(Target("192.0.2.1"), "a", credentials, module)
    for host in ("192.0.2.2", "192.0.2.3", "192.0.2.4"):
        now[0] += 1
        scraper.session(Target(host), "a", credentials, module)
    # The least recently used one was closed to make room.
    assert scraper.session(Target("192.0.2.1"), "a", credentials, module) is not first
    await scraper.close()


async def scraper_started_under_files_limit(soft_limit: int) -> SnmpScraper:
    """A scraper that sized its session cap under ``soft_limit`` open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft_limit, hard))
    try:
        scraper = SnmpScraper()
        await scraper.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return scraper


async def test_session_cap_leaves_room_in_the_open_files_limit(caplog):
    scraper = await scraper_started_under_files_limit(1024)
    # 1024 files: up to 512 HTTP connections and 256 reserved leave 256 sockets.
    cap = 1024 - 512 - scraper_module.RESERVED_FILES
    assert "leaves room for 256 SNMP sessions, not 15000" in caplog.text
    module = builtin_modules()["if_mib"]
    credentials = Credentials(2, community="public")
    first = scraper.session(Target("192.0.2.1"), "a", credentials, module)
    for n in range(cap):
        scraper.session(Target(f"192.0.{3 + n // 250}.{1 + n % 250}"), "a", credentials, module)
    assert scraper.session(Target("192.0.2.1"), "a", credentials, module) is not first
    await scraper.close()


async def test_a_session_cap_of_one_is_logged_in_the_singular(caplog):
    scraper = await scraper_started_under_files_limit(512)
    # 512 files: up to 256 HTTP connections and 256 reserved leave no room; one
    # session still polls, each device in turn.
    assert "leaves room for 1 SNMP session, not 15000" in caplog.text
    await scraper.close()


def replaying(agent: ReplayedAgent) -> SessionFactory:
    """A session factory that hands out the replayed agent, whatever the target."""

    def open_session(
        host: str, port: int, credentials: Credentials, *, timeout: float, retries: int
    ) -> ReplayedAgent:
        return agent

    return open_session


async def test_a_whole_scrape_through_the_session_factory(agent):
    scraper = SnmpScraper(session_factory=replaying(agent))
    module = builtin_modules()["if_mib"]
    job = ScrapeJob(
        Target("192.0.2.1"),
        (("if_mib", module),),
        "a",
        SnmpAuth(type="snmp", community=SecretStr("public")),
        1e12,
    )
    families: list[Family] = []
    assert await scraper.scrape(job, families) == (True, None)
    by_name = {family.name: family for family in families}
    assert by_name["scout_snmp_module_success"].samples == [((("module", "if_mib"),), 1)]
    assert by_name["scout_snmp_pdus_sent"].samples == [((), 2)]  # one GET, one walk
    assert by_name["ifHCInOctets"].samples[0][1] == 123
    await scraper.close()
    assert agent.closed


class HeldAgent(ReplayedAgent):
    """A replayed agent whose GETs wait until the test lets them through."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def get(self, oids: Sequence[Oid], *, deadline: float | None = None) -> list[VarBind]:
        self.asked.set()
        await self.answer.wait()
        return await super().get(oids, deadline=deadline)


async def test_a_renewed_session_is_closed_only_when_its_scrape_is_done():
    # A session to a named device is renewed to look the name up again: one a
    # scrape is reading through is closed when that scrape ends, not under it.
    agents = [HeldAgent(), HeldAgent()]
    opened = iter(agents)
    now = [0.0]
    scraper = SnmpScraper(clock=lambda: now[0], session_factory=lambda *a, **k: next(opened))
    auth = SnmpAuth(type="snmp", community=SecretStr("public"))
    job = ScrapeJob(
        Target("switch.example.net"), (("if_mib", builtin_modules()["if_mib"]),), "a", auth, 1e12
    )
    first = asyncio.create_task(scraper.scrape(job, []))
    await agents[0].asked.wait()
    now[0] += scraper_module.RESOLVE_SECONDS + 1
    agents[1].answer.set()
    assert await scraper.scrape(job, []) == (True, None)
    await asyncio.sleep(0)
    assert not agents[0].closed
    agents[0].answer.set()
    assert await first == (True, None)
    await asyncio.sleep(0)
    assert agents[0].closed
    assert not agents[1].closed
    await scraper.close()


async def test_idle_sessions_are_pruned_only_while_started(agent, monkeypatch):
    monkeypatch.setattr(scraper_module, "PRUNE_SECONDS", 0.01)
    now = [0.0]
    scraper = SnmpScraper(clock=lambda: now[0], session_factory=replaying(agent))
    module = builtin_modules()["if_mib"]
    scraper.session(Target("192.0.2.1"), "a", Credentials(2, community="public"), module)
    now[0] += scraper_module.IDLE_SECONDS + 1
    await asyncio.sleep(0.05)
    assert not agent.closed  # not started: nothing prunes
    await scraper.start()
    await asyncio.sleep(0.05)
    assert agent.closed  # the background task closed the idle session
    await scraper.close()


async def test_a_closed_scraper_leaves_no_session_open(agent):
    scraper = SnmpScraper(session_factory=replaying(agent))
    await scraper.start()
    await scraper.close()
    # A scrape that began as a reload closed this scraper must not keep its session.
    scraper.session(
        Target("192.0.2.1"), "a", Credentials(2, community="public"), builtin_modules()["if_mib"]
    )
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert agent.closed
