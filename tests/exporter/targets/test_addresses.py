"""The cache of the addresses targets' names resolve to, with an injected resolver and clock."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

import pytest
from aiohttp.test_utils import make_mocked_request

from exporter.clients.probe_net import ResolveError
from exporter.targets.addresses import (
    ADDRESS_HELP,
    ADDRESS_METRIC,
    MAX_ADDRESSES,
    AddressCache,
    IPAddress,
    address_rows,
    is_name,
)
from exporter.targets.exposition import METRIC_EXPOSITION
from exporter.targets.snmp.exposition import TEXT_EXPOSITION, render_text

FRESH, KEEP, NEGATIVE = 300.0, 3600.0, 30.0


def ips(*texts: str) -> list[IPAddress]:
    return [ipaddress.ip_address(text) for text in texts]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Resolver:
    """Answers from ``answers`` (a list of addresses, or an exception), counting calls.

    With ``hold``, each lookup waits for the test to release it.
    """

    def __init__(self, **answers: Sequence[IPAddress] | Exception) -> None:
        self.answers = dict(answers)
        self.calls: list[str] = []
        self.hold: asyncio.Event | None = None

    async def __call__(self, name: str) -> Sequence[IPAddress]:
        self.calls.append(name)
        if self.hold is not None:
            await self.hold.wait()
        answer = self.answers[name]
        if isinstance(answer, Exception):
            raise answer
        return answer


def cache_with(resolver: Resolver, clock: Clock, **kwargs: float) -> AddressCache:
    settings = {"fresh_seconds": FRESH, "keep_seconds": KEEP, "negative_seconds": NEGATIVE}
    return AddressCache(resolver, clock=clock, **{**settings, **kwargs})  # type: ignore[arg-type]


def far() -> float:
    """A deadline the test never reaches: the lookups here answer at once."""
    return asyncio.get_running_loop().time() + 3600


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("win-26", True),
        ("app39.corp.example", True),
        ("localhost", True),
        ("1stfloor-sw", True),  # a name may start with a digit; its last label is no number
        ("sw1.example.net.", True),
        ("10.4.0.172", False),
        ("127.1", False),  # the C resolver's spelling of 127.0.0.1
        ("0x7f.0x1", False),
        ("2001:db8::1", False),
        ("fe80::1%eth0", False),
        ("::ffff:10.0.0.1", False),
        ("", False),
    ],
)
def test_names_are_told_from_address_literals(host, name):
    assert is_name(host) is name


def test_rows_are_distinct_ipv4_first_compressed_and_at_most_eight():
    found = ips("2001:db8:0:0:0:0:0:2", "10.0.0.9", "2001:db8::1", "10.0.0.10", "10.0.0.9")
    assert address_rows(found) == ("10.0.0.9", "10.0.0.10", "2001:db8::1", "2001:db8::2")
    many = ips(*(f"2001:db8::{i:x}" for i in range(20)), *(f"10.0.0.{i}" for i in range(3)))
    rows = address_rows(many)
    assert len(rows) == MAX_ADDRESSES
    assert rows[:4] == ("10.0.0.0", "10.0.0.1", "10.0.0.2", "2001:db8::")


async def test_an_answer_is_kept_fresh_then_refreshed_in_the_background():
    clock, resolver = Clock(), Resolver(host=ips("10.0.0.1"))
    cache = cache_with(resolver, clock)
    assert cache.cached("host") is None
    assert await cache.resolve("host", far()) == ("10.0.0.1",)
    clock.now += FRESH - 1
    assert cache.cached("host") == ("10.0.0.1",)
    await cache.settled()
    assert resolver.calls == ["host"]  # fresh: not asked again
    # Stale: the old answer is used while a lookup replaces it.
    resolver.answers["host"] = ips("10.0.0.2")
    clock.now += 2
    assert cache.cached("host") == ("10.0.0.1",)
    assert cache.cached("host") == ("10.0.0.1",)
    await cache.settled()
    assert resolver.calls == ["host", "host"]  # one lookup for both
    assert cache.cached("host") == ("10.0.0.2",)


async def test_the_last_good_answer_is_kept_for_an_hour_while_lookups_fail():
    clock, resolver = Clock(), Resolver(host=ips("10.0.0.1", "2001:db8::1"))
    cache = cache_with(resolver, clock)
    await cache.resolve("host", far())
    resolver.answers["host"] = ResolveError("cannot resolve 'host': Temporary failure")
    clock.now += FRESH + 1
    assert cache.cached("host") == ("10.0.0.1", "2001:db8::1")
    await cache.settled()
    # Failed: still the last good answer, asked again once the negative time is over.
    assert cache.cached("host") == ("10.0.0.1", "2001:db8::1")
    await cache.settled()
    assert len(resolver.calls) == 2
    clock.now += NEGATIVE + 1
    assert cache.cached("host") == ("10.0.0.1", "2001:db8::1")
    await cache.settled()
    assert len(resolver.calls) == 3
    # A lookup that returns no address at all counts as failed too.
    resolver.answers["host"] = []
    clock.now = 1000.0 + KEEP - 1
    assert cache.cached("host") == ("10.0.0.1", "2001:db8::1")
    await cache.settled()
    assert cache.cached("host") == ("10.0.0.1", "2001:db8::1")
    # An hour after it was got, the last good answer goes.
    clock.now = 1000.0 + KEEP
    assert cache.cached("host") is None
    assert await cache.resolve("host", far()) == ()


async def test_a_name_that_does_not_resolve_is_not_asked_again_for_a_while():
    clock, resolver = Clock(), Resolver(nowhere=ResolveError("cannot resolve 'nowhere'"))
    cache = cache_with(resolver, clock)
    assert await cache.resolve("nowhere", far()) == ()
    clock.now += NEGATIVE - 1
    assert cache.cached("nowhere") == ()
    assert await cache.resolve("nowhere", far()) == ()
    assert resolver.calls == ["nowhere"]
    resolver.answers["nowhere"] = ips("10.0.0.3")
    clock.now += 1
    assert await cache.resolve("nowhere", far()) == ("10.0.0.3",)
    assert resolver.calls == ["nowhere", "nowhere"]


async def test_an_unexpected_error_of_the_resolver_is_a_failed_lookup():
    clock, resolver = Clock(), Resolver(host=OSError("resolver broke"))
    cache = cache_with(resolver, clock)
    assert await cache.resolve("host", far()) == ()
    assert cache.cached("host") == ()


async def test_a_first_lookup_not_done_by_the_deadline_finishes_in_the_background():
    clock, resolver = Clock(), Resolver(slow=ips("10.0.0.4"))
    resolver.hold = asyncio.Event()
    cache = cache_with(resolver, clock)
    # The deadline has passed already: answered at once, without the rows.
    assert await cache.resolve("slow", asyncio.get_running_loop().time()) == ()
    assert cache.cached("slow") is None
    resolver.hold.set()
    await cache.settled()
    assert cache.cached("slow") == ("10.0.0.4",)
    assert resolver.calls == ["slow"]


async def test_concurrent_first_lookups_of_one_name_share_one():
    clock, resolver = Clock(), Resolver(host=ips("10.0.0.5"))
    resolver.hold = asyncio.Event()
    cache = cache_with(resolver, clock)
    waiting = [asyncio.ensure_future(cache.resolve("host", far())) for _ in range(3)]
    await asyncio.sleep(0)  # let them all start waiting
    resolver.hold.set()
    assert await asyncio.gather(*waiting) == [("10.0.0.5",)] * 3
    assert resolver.calls == ["host"]


async def test_addresses_put_by_the_allow_lists_need_no_lookup():
    clock, resolver = Clock(), Resolver()
    cache = cache_with(resolver, clock)
    assert cache.put("host", ips("2001:db8::7", "10.0.0.7")) == ("10.0.0.7", "2001:db8::7")
    assert await cache.resolve("host", far()) == ("10.0.0.7", "2001:db8::7")
    assert cache.put("other", []) == ()
    assert cache.cached("other") is None
    assert resolver.calls == []


async def test_the_least_recently_answered_names_are_dropped_past_the_bound():
    clock = Clock()
    resolver = Resolver(**{f"h{i}": ips(f"10.0.0.{i}") for i in range(5)})
    cache = cache_with(resolver, clock, max_entries=3)
    for i in range(3):
        await cache.resolve(f"h{i}", far())
    # h0 is answered again (refreshed): h1 is now the oldest.
    clock.now += FRESH + 1
    cache.cached("h0")
    await cache.settled()
    await cache.resolve("h3", far())
    assert len(cache) == 3
    assert cache.cached("h1") is None
    assert [cache.cached(f"h{i}") for i in (0, 2, 3)] == [
        ("10.0.0.0",),
        ("10.0.0.2",),
        ("10.0.0.3",),
    ]


async def test_close_stops_the_lookups_under_way():
    clock, resolver = Clock(), Resolver(slow=ips("10.0.0.6"))
    resolver.hold = asyncio.Event()
    cache = cache_with(resolver, clock)
    assert await cache.resolve("slow", asyncio.get_running_loop().time()) == ()
    await cache.close()
    await cache.settled()  # nothing left under way
    assert cache.cached("slow") is None


ROWS = [{"address": "10.0.0.1"}, {"address": "2001:db8::1"}]


def test_the_snmp_text_exposition_renders_info_rows():
    family = TEXT_EXPOSITION.info(ADDRESS_METRIC, ADDRESS_HELP, ROWS)
    assert render_text([family]).splitlines() == [
        f"# HELP {ADDRESS_METRIC} {ADDRESS_HELP}",
        f"# TYPE {ADDRESS_METRIC} gauge",
        f'{ADDRESS_METRIC}{{address="10.0.0.1"}} 1',
        f'{ADDRESS_METRIC}{{address="2001:db8::1"}} 1',
    ]


@pytest.mark.parametrize(
    ("accept", "last"),
    [("", ""), ("application/openmetrics-text; version=1.0.0", "# EOF")],
)
def test_the_metric_exposition_renders_info_rows(accept, last):
    family = METRIC_EXPOSITION.info(ADDRESS_METRIC, ADDRESS_HELP, ROWS)
    request = make_mocked_request("GET", "/probe", headers={"Accept": accept})
    body = METRIC_EXPOSITION.render(request, [family]).body
    assert isinstance(body, bytes)
    lines = body.decode().splitlines()
    assert lines[1:4] == [
        f"# TYPE {ADDRESS_METRIC} gauge",
        f'{ADDRESS_METRIC}{{address="10.0.0.1"}} 1.0',
        f'{ADDRESS_METRIC}{{address="2001:db8::1"}} 1.0',
    ]
    assert lines[4:] == ([last] if last else [])


async def test_no_more_than_the_bound_of_lookups_wait_at_once():
    clock = Clock()
    resolver = Resolver(**{f"h{i}": ips(f"10.0.0.{i}") for i in range(4)})
    resolver.hold = asyncio.Event()
    cache = cache_with(resolver, clock, max_lookups=2)
    now = asyncio.get_running_loop().time()
    for i in range(4):
        assert await cache.resolve(f"h{i}", now) == ()
    await asyncio.sleep(0)  # let the lookups started reach the resolver
    # DNS hangs: two lookups wait, the other names were not asked.
    assert resolver.calls == ["h0", "h1"]
    resolver.hold.set()
    await cache.settled()
    assert await cache.resolve("h2", far()) == ("10.0.0.2",)
    assert resolver.calls == ["h0", "h1", "h2"]
