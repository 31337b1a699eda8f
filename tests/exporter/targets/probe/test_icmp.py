"""The icmp prober over loopback: every request answered, round trips in order."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time

import pytest

from exporter.clients.icmp import IcmpPermissionError, SocketPinger, open_icmp_socket
from exporter.targets.probe.icmp import IcmpModule, IcmpProber
from exporter.targets.probe.registry import run_probe

from .conftest import values_of


def icmp_allowed() -> bool:
    try:
        sock, _ = open_icmp_socket(4, "auto")
    except IcmpPermissionError:
        return False
    sock.close()
    return True


pytestmark = pytest.mark.skipif(
    not icmp_allowed(), reason="no ICMP socket may be opened here (not root, no ping group)"
)


@pytest.mark.parametrize("target", ["127.0.0.1", "::1", "[::1]", "localhost"])
async def test_loopback_answers_every_request(target):
    loop = asyncio.get_running_loop()
    # A long per-packet timeout, so a probe that waited it out instead of ending
    # on the last reply would take seconds, far from the tenth of one it needs.
    module = IcmpModule(count=5, interval_seconds=0.02, timeout_seconds=4.0)
    result = await run_probe(target, module, loop.time() + 10)
    values = values_of(result.families)
    assert result.success, result.error
    assert result.error is None
    assert values["scout_probe_packets_sent"] == 5
    assert values["scout_probe_packets_received"] == 5
    assert values["scout_probe_loss_ratio"] == 0
    assert values["scout_probe_ip_protocol"] == (6 if ":" in target else 4)
    rtt_min, rtt_avg, rtt_max = (
        values[f"scout_probe_rtt_{s}_seconds"] for s in ("min", "avg", "max")
    )
    assert 0 < rtt_min <= rtt_avg <= rtt_max < 0.5
    assert 0 <= values["scout_probe_rtt_stddev_seconds"] <= rtt_max - rtt_min
    assert 0 <= values["scout_probe_jitter_seconds"] <= rtt_max - rtt_min
    # Five requests 20 ms apart: about 80 ms, and no waiting out the 4 s timeout
    # (the bound sits halfway, for a loaded machine's stalls).
    assert 0.07 <= values["scout_probe_duration_seconds"] < 2.0


@pytest.mark.parametrize("mode", ["auto", "raw"])
@pytest.mark.parametrize("payload_size", [0, 7, 56, 1400, 9000])
async def test_payload_sizes_are_echoed(mode, payload_size):
    if mode == "raw" and os.geteuid() != 0:
        pytest.skip("raw sockets need root")
    loop = asyncio.get_running_loop()
    result = await SocketPinger(mode).ping(
        ipaddress.ip_address("127.0.0.1"),
        count=2,
        interval=0.01,
        reply_timeout=1.0,
        deadline=loop.time() + 5,
        payload_size=payload_size,
        dont_fragment=False,
    )
    assert result.sent == 2
    assert all(r is not None for r in result.rtts), result


# Raw forced too: `auto` takes the datagram socket wherever ping_group_range allows it.
@pytest.mark.parametrize("mode", ["auto", "raw"])
async def test_concurrent_pings_each_get_only_their_own_replies(mode):
    if mode == "raw" and os.geteuid() != 0:
        pytest.skip("raw sockets need root")
    # Raw sockets see every reply on the host; cookies and identifiers keep
    # each probe to its own, so none reports more replies than it sent. Nor
    # fewer while the event loop is stalled: unfiltered, each raw socket's
    # buffer filled with the others' packets, and 40 probes behind a 0.3 s
    # stall lost over half their own replies (a loaded machine did it too).
    loop = asyncio.get_running_loop()
    # A generous per-packet timeout: on a loaded machine (the test suite runs two
    # files at once) the loop may read a reply later than the default second.
    module = IcmpModule(count=10, interval_seconds=0.005, timeout_seconds=4.0)

    async def stall() -> None:
        await asyncio.sleep(0.01)  # the probes are sending
        time.sleep(0.3)  # noqa: ASYNC251 (a busy event loop is the point)

    *results, _ = await asyncio.gather(
        *(
            run_probe(
                "127.0.0.1", module, loop.time() + 5, {"icmp": IcmpProber(SocketPinger(mode))}
            )
            for _ in range(40)
        ),
        stall(),
    )
    for result in results:
        values = values_of(result.families)
        assert result.success, result.error
        assert values["scout_probe_packets_sent"] == 10
        assert values["scout_probe_packets_received"] == 10


async def test_probe_ends_by_its_deadline_and_says_what_did_not_fit():
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Interval and timeout far past the 0.5 s deadline: a probe that overran it
    # (sent on, or waited out a timeout) would take 4 s or more.
    module = IcmpModule(count=10, interval_seconds=4.0, timeout_seconds=4.0)
    result = await IcmpProber().probe("127.0.0.1", module, started + 0.5)
    elapsed = loop.time() - started
    values = values_of(result.families)
    assert elapsed < 2.0
    # Each request gets the same (shortened) timeout: only those that fit are sent.
    assert values["scout_probe_packets_sent"] == 1
    assert values["scout_probe_packets_received"] == 1
    assert result.success
    assert result.error == (
        "only 1 of 10 packets fit before the deadline; lower count, interval_seconds"
        " or timeout_seconds, or raise the scrape timeout"
    )
