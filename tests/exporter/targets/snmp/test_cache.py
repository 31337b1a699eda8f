"""When the per-device cache of lookups is reused, and when it is read again.

A real agent cannot be made to change ifTableLastChange or ifLastChange on cue,
so these cases replay an agent's answers through the ``SnmpClient`` protocol;
the reboot case runs against real snmpd in test_snmp_endpoint.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from exporter.clients.snmp import Oid, SessionStats, ValueKind, VarBind
from exporter.targets.snmp.mapping import oid_of
from exporter.targets.snmp.modules import builtin_modules
from exporter.targets.snmp.scraper import SessionEntry, SnmpScraper

IFT = oid_of("1.3.6.1.2.1.2.2.1")
IFX = oid_of("1.3.6.1.2.1.31.1.1.1")
UPTIME = oid_of("1.3.6.1.2.1.1.3.0")
IF_NUMBER = oid_of("1.3.6.1.2.1.2.1.0")
TABLE_LAST_CHANGE = oid_of("1.3.6.1.2.1.31.1.5.0")


class ReplayedAgent:
    """An agent's state as plain data; each walk records which columns it read."""

    def __init__(self) -> None:
        self.scalars: dict[Oid, int] = {UPTIME: 1000, IF_NUMBER: 1, TABLE_LAST_CHANGE: 5}
        self.columns: dict[Oid, dict[int, int | bytes]] = {
            (*IFX, 1): {1: b"eth0"},  # ifName, a lookup
            (*IFX, 15): {1: 1000},  # ifHighSpeed, cached
            (*IFT, 9): {1: 77},  # ifLastChange, a column validator
            (*IFX, 6): {1: 123},  # ifHCInOctets, read every time
        }
        self.walked: list[set[Oid]] = []
        self.stats = SessionStats()
        self.max_repetitions_used = 0

    async def get(self, oids: Sequence[Oid], *, deadline: float | None = None) -> list[VarBind]:
        self.stats.pdus_sent += 1
        return [
            VarBind(oid, ValueKind.TIMETICKS, self.scalars[oid])
            if oid in self.scalars
            else VarBind(oid, ValueKind.NO_SUCH_OBJECT, None)
            for oid in oids
        ]

    async def bulk_walk(
        self,
        roots: Sequence[Oid],
        *,
        max_repetitions: int,
        max_oids: int = 1_000_000,
        deadline: float | None = None,
    ) -> dict[Oid, list[VarBind]]:
        self.stats.pdus_sent += 1
        self.max_repetitions_used = max_repetitions
        self.walked.append(set(roots))
        out: dict[Oid, list[VarBind]] = {}
        for root in roots:
            rows = self.columns.get(root, {})
            out[root] = [
                VarBind(
                    (*root, index),
                    ValueKind.OCTET_STRING if isinstance(v, bytes) else ValueKind.GAUGE32,
                    v,
                )
                for index, v in sorted(rows.items())
            ]
        return out

    async def close(self) -> None:
        return None


@pytest.fixture
def agent() -> ReplayedAgent:
    return ReplayedAgent()


async def scrape(scraper: SnmpScraper, agent: ReplayedAgent) -> tuple[bool, str]:
    module = builtin_modules()["if_mib"]
    entry = SessionEntry(agent, 0.0)  # type: ignore[arg-type]
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
    scraper = SnmpScraper(clock=lambda: now[0])
    await scrape(scraper, agent)
    agent.scalars[UPTIME] += 6000
    now[0] += 899  # if_mib's max_age_seconds is 900
    assert await scrape(scraper, agent) == (True, "eth0")
    now[0] += 2
    agent.columns[(*IFX, 1)] = {1: b"eth0-new-alias"}
    assert await scrape(scraper, agent) == (False, "eth0-new-alias")


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
