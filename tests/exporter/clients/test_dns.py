"""The resolver: addresses without lookups, one lookup per name, answers kept a while."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from exporter.clients import dns
from exporter.clients.dns import Resolver


async def test_ip_addresses_are_never_looked_up(monkeypatch):
    def no_lookups(*args, **kwargs):
        if not kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
            raise AssertionError("a DNS lookup for an IP address")
        return real(*args, **kwargs)

    real = socket.getaddrinfo
    monkeypatch.setattr(dns.socket, "getaddrinfo", no_lookups)
    resolver = Resolver()
    for host in ("127.0.0.1", "::1", "192.0.2.7"):
        infos = await resolver.getaddrinfo(host, 161, type=socket.SOCK_DGRAM)
        assert infos[0][4][0] == host


async def test_a_hung_name_does_not_hold_up_others(monkeypatch):
    release = threading.Event()
    real = socket.getaddrinfo

    def slow_for_hung(host, *args, **kwargs):
        if kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
            return real(host, *args, **kwargs)  # the address check: never blocks
        if host == "hung.test":
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure")
        return real("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(dns.socket, "getaddrinfo", slow_for_hung)
    resolver = Resolver(threads=2)
    try:
        hung = [asyncio.ensure_future(resolver.getaddrinfo("hung.test", 161)) for _ in range(20)]
        # Twenty callers, one lookup: the other slot is free for a healthy name.
        answer = await asyncio.wait_for(resolver.getaddrinfo("good.test", 161), timeout=5)
        assert answer[0][4][0] == "127.0.0.1"
        assert sum(t.name.startswith("dns hung.test") for t in threading.enumerate()) == 1
    finally:
        release.set()
    for task in hung:
        with pytest.raises(socket.gaierror):
            await task


async def test_answers_and_failures_are_kept(monkeypatch):
    calls: list[str] = []
    real = socket.getaddrinfo

    def counting(host, *args, **kwargs):
        if not kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
            calls.append(host)
            if host == "missing.test":
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(dns.socket, "getaddrinfo", counting)
    resolver = Resolver()
    for _ in range(3):
        await resolver.getaddrinfo("device.test", 161)
        with pytest.raises(socket.gaierror):
            await resolver.getaddrinfo("missing.test", 161)
    assert calls == ["device.test", "missing.test"]


async def test_a_name_getaddrinfo_cannot_encode_fails_at_once_and_frees_its_slot():
    """``a..b`` (an empty label) makes getaddrinfo raise UnicodeError, not an OSError.

    It must reach the caller, rather than die with the lookup's thread and leave the
    caller waiting and the lookup's slot taken for good: four such names, which any
    caller of /probe can send, used to stop every name lookup of the process.
    """
    resolver = Resolver(threads=2)
    for name in ("a..test", "b..test", "c..test", "d" * 64 + ".test", "e\udcff.test"):
        with pytest.raises(UnicodeError, match="idna"):
            await asyncio.wait_for(resolver.getaddrinfo(name, 161), timeout=5)
    answer = await asyncio.wait_for(resolver.getaddrinfo("localhost", 161), timeout=5)
    assert answer


async def test_the_answers_kept_are_bounded_the_oldest_going_first(monkeypatch):
    """Every name a caller of /probe sends was kept for good, expired or not."""
    calls: list[str] = []
    real = socket.getaddrinfo

    def counting(host, *args, **kwargs):
        if not kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
            calls.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(dns.socket, "getaddrinfo", counting)
    monkeypatch.setattr(dns, "MAX_ANSWERS", 50)
    resolver = Resolver()
    for n in range(200):
        with pytest.raises(socket.gaierror):
            await resolver.getaddrinfo(f"gone-{n}.test", 161)
    assert len(resolver._answers) == 50
    calls.clear()
    for n in (199, 150):  # the newest are kept: no lookup
        with pytest.raises(socket.gaierror):
            await resolver.getaddrinfo(f"gone-{n}.test", 161)
    with pytest.raises(socket.gaierror):
        await resolver.getaddrinfo("gone-0.test", 161)  # the oldest went
    assert calls == ["gone-0.test"]
