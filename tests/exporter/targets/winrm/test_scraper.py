"""The scraper's scheduling, with a fake ``ShellOpener``: bounds, one per host, deadlines."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field
from typing import cast

from pydantic import SecretStr

from exporter.clients.winrm import (
    CommandResult,
    Endpoint,
    RemoteShell,
    WinrmAuthError,
    WinrmQuotaError,
)
from exporter.config import WinrmAuth
from exporter.targets.kind import ScrapeJob
from exporter.targets.winrm import scraper as scraper_module
from exporter.targets.winrm.modules import WinrmModule
from exporter.targets.winrm.scraper import (
    SHELL_IDLE_SECONDS,
    WinrmScraper,
    WinrmTarget,
    parse_target,
    pin_target,
)
from tests.exporter.targets.winrm.fake_host import FakeHost

AUTH = WinrmAuth.model_validate(
    {
        "type": "winrm",
        "username": "monitor",
        "password": SecretStr("secret"),
        "allowed_targets": ["any"],
    }
)


@dataclass
class Recorder:
    """Counts shells and runs in flight, overall and per host."""

    hold: float = 0.2
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: int = 0
    most_running: int = 0
    per_host: dict[str, int] = field(default_factory=dict)
    most_per_host: int = 0
    opened: list[str] = field(default_factory=list)
    fail_open: bool = False


class FakeShell:
    def __init__(self, recorder: Recorder, host: str) -> None:
        self.recorder, self.host, self.closed = recorder, host, False
        self.fake = FakeHost()

    def run(
        self, executable: str, arguments: list[str], stdin: bytes, deadline: float
    ) -> CommandResult:
        r = self.recorder
        with r.lock:
            r.running += 1
            r.per_host[self.host] = r.per_host.get(self.host, 0) + 1
            r.most_running = max(r.most_running, r.running)
            r.most_per_host = max(r.most_per_host, r.per_host[self.host])
        try:
            time.sleep(r.hold)
            return CommandResult(self.fake.answer(stdin.decode("ascii")), b"", 0)
        finally:
            with r.lock:
                r.running -= 1
                r.per_host[self.host] -= 1

    def close(self) -> None:
        self.closed = True


class FakeOpener:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def open(self, endpoint: Endpoint, deadline: float) -> RemoteShell:
        if self.recorder.fail_open:
            raise WinrmAuthError("the host refused the credentials (HTTP 401)")
        self.recorder.opened.append(endpoint.host)
        return FakeShell(self.recorder, endpoint.host)

    def stop(self) -> None:
        return None  # its runs end by themselves, in ``hold`` seconds


def job(host: str, seconds: float = 5.0) -> ScrapeJob[WinrmTarget, WinrmModule, WinrmAuth]:
    deadline = asyncio.get_running_loop().time() + seconds
    return ScrapeJob(WinrmTarget(host, None), (("windows", WinrmModule()),), "w", AUTH, deadline)


async def test_the_global_bound_caps_hosts_scraped_at_once():
    recorder = Recorder()
    scraper = WinrmScraper(FakeOpener(recorder), max_concurrent=3)
    await scraper.start()
    try:
        hosts = [f"10.0.0.{i}" for i in range(8)]
        results = await asyncio.gather(*(scraper.scrape(job(h), []) for h in hosts))
    finally:
        await scraper.close()
    assert all(success for success, _ in results)
    assert recorder.most_running == 3


async def test_one_scrape_per_host_at_a_time_and_the_shell_is_reused():
    recorder = Recorder(hold=0.1)
    scraper = WinrmScraper(FakeOpener(recorder), max_concurrent=4)
    await scraper.start()
    try:
        results = await asyncio.gather(*(scraper.scrape(job("10.0.0.1"), []) for _ in range(3)))
    finally:
        await scraper.close()
    assert all(success for success, _ in results)
    assert recorder.most_per_host == 1
    assert recorder.opened == ["10.0.0.1"]


async def test_a_scrape_queued_past_its_deadline_is_not_started():
    recorder = Recorder(hold=0.5)
    scraper = WinrmScraper(FakeOpener(recorder), max_concurrent=1)
    await scraper.start()
    try:
        families: list = []
        slow, late = await asyncio.gather(
            scraper.scrape(job("10.0.0.1"), []),
            scraper.scrape(job("10.0.0.2", seconds=0.2), families),
        )
    finally:
        await scraper.close()
    assert slow[0] is True
    assert late == (False, "timeout: the deadline passed before the scrape started")
    assert recorder.opened == ["10.0.0.1"]


async def test_a_failed_open_is_a_failed_scrape_with_its_reason():
    recorder = Recorder(fail_open=True)
    scraper = WinrmScraper(FakeOpener(recorder))
    await scraper.start()
    try:
        families: list = []
        success, error = await scraper.scrape(job("10.0.0.1"), families)
    finally:
        await scraper.close()
    assert (success, error) == (False, "auth: the host refused the credentials (HTTP 401)")
    [family] = families
    assert family.name == "scout_winrm_scrape_error"
    assert [s.labels for s in family.samples] == [{"reason": "auth"}]


async def test_closing_the_scraper_closes_every_shell():
    recorder = Recorder(hold=0.0)
    shells: list[FakeShell] = []

    class KeepingOpener(FakeOpener):
        def open(self, endpoint: Endpoint, deadline: float) -> RemoteShell:
            shell = FakeShell(self.recorder, endpoint.host)
            shells.append(shell)
            return shell

    scraper = WinrmScraper(KeepingOpener(recorder))
    await scraper.start()
    await asyncio.gather(*(scraper.scrape(job(f"10.0.0.{i}"), []) for i in range(3)))
    await scraper.close()
    assert len(shells) == 3
    assert all(shell.closed for shell in shells)


def test_a_target_is_pinned_to_a_checked_address_ipv4_first_and_keeps_its_name():
    checked = [ipaddress.ip_address("2001:db8::7"), ipaddress.ip_address("192.0.2.7")]
    pinned = pin_target(parse_target("fs01.corp.example:5986"), checked)
    assert pinned == WinrmTarget("fs01.corp.example", 5986, "192.0.2.7")
    only_v6 = pin_target(parse_target("fs01.corp.example"), checked[:1])
    assert only_v6 == WinrmTarget("fs01.corp.example", None, "2001:db8::7")


def test_a_module_reloaded_in_the_place_of_another_gets_its_own_script():
    # A config reload frees the old module objects; a new one may be allocated
    # at the same address, so a script remembered by id() would be the old one's.
    scraper = WinrmScraper(FakeOpener(Recorder()))
    old = WinrmModule(collectors=["cpu"])
    scraper._script(old)
    old_id = id(old)
    del old
    kept = []  # CPython hands the freed place to the next object of its size
    new = WinrmModule(collectors=["memory"])
    while id(new) != old_id and len(kept) < 1000:
        kept.append(new)
        new = WinrmModule(collectors=["memory"])
    script = scraper._script(new).decode("ascii")
    assert re.findall(r"^Run '(\w+)'", script, re.MULTILINE) == ["memory"]


def test_a_session_evicted_as_idle_is_not_left_holding_the_shell_it_closes():
    # Host A's scrape has just looked its session up (idle for long, not yet
    # locked) when host B's lookup evicts it: A must open a new shell, not run
    # on the one B's lookup is closing.
    now = [0.0]
    recorder = Recorder()
    scraper = WinrmScraper(FakeOpener(recorder), clock=lambda: now[0])
    a = scraper._session(("10.0.0.1", 5985, "w"))
    a.shell = FakeShell(recorder, "10.0.0.1")
    now[0] += SHELL_IDLE_SECONDS + 1
    held = scraper._session(("10.0.0.1", 5985, "w"))  # A's scrape, before it locks
    scraper._session(("10.0.0.2", 5985, "w"))  # B's scrape evicts A's session
    assert held.shell is None or not cast(FakeShell, held.shell).closed


def test_a_session_idle_past_the_limit_is_evicted_and_its_shell_closed():
    now = [0.0]
    recorder = Recorder()
    scraper = WinrmScraper(FakeOpener(recorder), clock=lambda: now[0])
    idle = scraper._session(("10.0.0.1", 5985, "w"))
    shell = idle.shell = FakeShell(recorder, "10.0.0.1")
    now[0] += SHELL_IDLE_SECONDS + 1
    scraper._session(("10.0.0.2", 5985, "w"))
    assert shell.closed
    assert scraper._session(("10.0.0.1", 5985, "w")) is not idle


async def test_a_shell_is_replaced_before_windows_quotas_on_its_commands_refuse_it(monkeypatch):
    # Windows counts operations per user and commands per shell (1500 and
    # 1000 by default) and they leak on a long-lived shell: kept forever, every
    # host's shell would fail a scrape with a quota fault about once a day.
    monkeypatch.setattr(scraper_module, "MAX_COMMANDS_PER_SHELL", 3)
    recorder = Recorder(hold=0.0)
    shells: list[FakeShell] = []

    class KeepingOpener(FakeOpener):
        def open(self, endpoint: Endpoint, deadline: float) -> RemoteShell:
            shells.append(FakeShell(self.recorder, endpoint.host))
            return shells[-1]

    scraper = WinrmScraper(KeepingOpener(recorder))
    await scraper.start()
    try:
        results = [await scraper.scrape(job("10.0.0.1"), []) for _ in range(7)]
    finally:
        await scraper.close()
    assert all(success for success, _ in results)
    assert len(shells) == 3  # commands 1-3, 4-6, 7
    assert [shell.closed for shell in shells] == [True, True, True]


async def test_a_kept_shell_refused_for_quota_is_replaced_within_the_scrape():
    # The operations leaked on a long-lived shell (or by another tool of the
    # same user) count against the user's quota until that shell is deleted:
    # deleting it and running on a new one is no failure.
    recorder = Recorder(hold=0.0)
    shells: list[FakeShell] = []

    class RefusedShell(FakeShell):
        def run(
            self, executable: str, arguments: list[str], stdin: bytes, deadline: float
        ) -> CommandResult:
            if len(shells) == 1 and recorder.opened:
                raise WinrmQuotaError("WS-Management fault 2150859174: 1500 concurrent operations")
            return super().run(executable, arguments, stdin, deadline)

    class KeepingOpener(FakeOpener):
        def open(self, endpoint: Endpoint, deadline: float) -> RemoteShell:
            shells.append(RefusedShell(self.recorder, endpoint.host))
            return shells[-1]

    scraper = WinrmScraper(KeepingOpener(recorder))
    await scraper.start()
    try:
        first = await scraper.scrape(job("10.0.0.1"), [])
        recorder.opened.append("the quota is spent from now on, on the first shell")
        second = await scraper.scrape(job("10.0.0.1"), [])
    finally:
        await scraper.close()
    assert first[0] is True
    assert second == (True, None)
    assert len(shells) == 2
    assert shells[0].closed
