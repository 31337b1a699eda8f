"""What every probe reports: loss, round trips and jitter from the packets' fates."""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil

import pytest
from prometheus_client.exposition import generate_latest

from exporter.clients.icmp import checksum, echo_request, parse_echo_reply, permission_message
from exporter.targets.probe import base, http, icmp, tcp
from exporter.targets.probe.base import RttSummary, run_attempts, summarize
from exporter.targets.probe.http import HttpModule
from exporter.targets.probe.icmp import IcmpModule
from exporter.targets.probe.registry import run_probe
from exporter.targets.probe.tcp import TcpModule


def test_summary_of_answered_and_lost_packets():
    summary = summarize([0.010, None, 0.030, 0.020, None])
    assert (summary.sent, summary.received) == (5, 3)
    assert summary.loss_ratio == pytest.approx(0.4)
    assert summary.min == pytest.approx(0.010)
    assert summary.max == pytest.approx(0.030)
    assert summary.avg == pytest.approx(0.020)
    # Population standard deviation, as ping's mdev: sqrt((1e-4 + 1e-4 + 0) / 3).
    assert summary.stddev == pytest.approx((2e-4 / 3) ** 0.5)
    # Successive answered packets: |30-10| and |20-30|; the lost ones are skipped.
    assert summary.jitter == pytest.approx((0.020 + 0.010) / 2)


def test_nothing_answered_leaves_round_trips_out():
    assert summarize([None, None]) == RttSummary(sent=2, received=0)
    assert summarize([None, None]).loss_ratio == 1.0


def test_one_answer_has_no_jitter():
    summary = summarize([None, 0.005])
    assert summary.jitter is None
    assert summary.stddev == 0.0
    assert summary.loss_ratio == 0.5


def test_internet_checksum_of_a_known_packet():
    # An echo request from RFC 1071's worked bytes is not at hand; instead, the
    # defining property: a packet with its checksum in place sums to zero.
    packet = echo_request(4, 0x1234, 7, b"scout-payload")
    assert checksum(packet) == 0
    assert checksum(bytes.fromhex("0800000012340007")) == 0xE5C4
    assert checksum(b"\x01") == 0xFEFF  # odd length is padded with a zero byte


def test_echo_reply_parsing_takes_only_replies():
    reply = bytearray(echo_request(4, 0x1234, 9, b"abc"))
    reply[0] = 0
    ip_header = bytes([0x45]) + bytes(19)
    parsed = parse_echo_reply(ip_header + bytes(reply), 4, "raw")
    assert parsed is not None
    assert (parsed.ident, parsed.seq, parsed.payload) == (0x1234, 9, b"abc")
    # A request (what a raw socket also sees on loopback) is not a reply.
    assert parse_echo_reply(ip_header + echo_request(4, 1, 1, b""), 4, "raw") is None
    assert parse_echo_reply(bytes([129, 0, 0, 0, 0, 5, 0, 6]), 6, "datagram") is not None
    assert parse_echo_reply(b"\x00\x00", 4, "datagram") is None


def test_permission_message_names_what_is_missing():
    assert permission_message(1000, "1 0") == (
        "ICMP needs root, CAP_NET_RAW, or net.ipv4.ping_group_range covering gid 1000;"
        " it is currently '1 0'"
    )


async def test_attempts_keep_to_their_interval_and_the_deadline():
    loop = asyncio.get_running_loop()
    started: list[float] = []

    async def attempt() -> None:
        started.append(loop.time())

    t0 = loop.time()
    attempts = await run_attempts(
        attempt, count=4, interval=0.1, attempt_timeout=0.05, deadline=t0 + 5
    )
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert all(0.09 <= g <= 0.15 for g in gaps), gaps

    # With room for two attempts and their timeouts, only two are made.
    started.clear()
    t0 = loop.time()
    attempts = await run_attempts(
        attempt, count=10, interval=0.1, attempt_timeout=0.5, deadline=t0 + 0.65
    )
    assert len(attempts) == 2


async def test_a_slow_attempt_times_out_and_counts_as_lost():
    loop = asyncio.get_running_loop()

    async def hang() -> None:
        await asyncio.sleep(10)

    attempts = await run_attempts(
        hang, count=1, interval=0, attempt_timeout=0.1, deadline=loop.time() + 5
    )
    assert attempts[0].seconds is None
    assert attempts[0].error == "no answer within 0.1s"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")
async def test_exposition_passes_promtool_check_metrics():
    loop = asyncio.get_running_loop()
    result = await run_probe("127.0.0.1", IcmpModule(count=2), loop.time() + 5)

    class Families:
        def collect(self):
            return result.families

    text = generate_latest(Families()).decode()  # type: ignore[arg-type]
    assert "scout_probe_rtt_avg_seconds" in text
    promtool = await asyncio.create_subprocess_exec(
        "promtool",
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await promtool.communicate(text.encode())
    assert promtool.returncode == 0, output.decode()


def help_lines(text: str) -> set[tuple[str, str]]:
    return set(re.findall(r"# HELP (\S+) (.*)", text))


async def test_docstrings_show_the_metrics_probes_emit(
    tcp_server_factory, self_signed, aiohttp_server
):
    """The sample exposition in each prober's docstring is its contract: keep it true."""
    from aiohttp import web

    app = web.Application()

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", ok)
    https = await aiohttp_server(app, ssl=self_signed.server_context())
    tls = await tcp_server_factory(self_signed.server_context())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    results = [
        await run_probe(
            f"https://127.0.0.1:{https.port}/",
            HttpModule(count=2, interval_seconds=0, tls_insecure_skip_verify=True),
            deadline,
        ),
        await run_probe(
            f"127.0.0.1:{tls.port}",
            TcpModule(count=2, interval_seconds=0, tls=True, tls_insecure_skip_verify=True),
            deadline,
        ),
        await run_probe("127.0.0.1", IcmpModule(count=2, interval_seconds=0), deadline),
    ]

    class Families:
        def __init__(self, families):
            self.families = families

        def collect(self):
            return self.families

    emitted: set[tuple[str, str]] = set()
    for result in results:
        emitted |= help_lines(generate_latest(Families(result.families)).decode())  # type: ignore[arg-type]
    documented: set[tuple[str, str]] = set()
    for module in (base, icmp, tcp, http):
        documented |= help_lines(module.__doc__ or "")
    assert documented <= emitted
    if results[2].success:  # ICMP may be denied to this user; the others always run
        assert {name for name, _ in emitted} == {name for name, _ in documented}
