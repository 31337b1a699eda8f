"""ICMP across a veth into a network namespace whose replies the test delays and drops.

The prober runs here, in the root namespace, exactly as the exporter would;
only the far side lives in the namespace (see ``conftest``). Delay, jitter and
loss are applied to the replies only, so a delay of D adds D to each round trip.
The bounds below are measurement tolerances, derived in each docstring, not
performance targets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import statistics

import pytest

from exporter.clients.icmp import SocketPinger, permission_message
from exporter.targets.probe.base import Metrics, summarize
from exporter.targets.probe.icmp import IcmpModule, IcmpProber
from exporter.targets.probe.registry import run_probe

from .conftest import run_in_netns, values_of

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


COUNT = 50


def many(**settings) -> IcmpModule:
    return IcmpModule(
        **{"count": COUNT, "interval_seconds": 0.02, "timeout_seconds": 0.5, **settings}
    )


async def probe(target: str, module: IcmpModule) -> tuple[bool, str | None, dict[str, float]]:
    loop = asyncio.get_running_loop()
    result = await run_probe(target, module, loop.time() + 20)
    return result.success, result.error, values_of(result.families)


async def test_loss_and_delay_are_measured(netns, impairment):
    """Replies delayed 50 ms and dropped with probability 0.2 (``delay 50ms loss 20%``).

    Loss: of 50 requests the number lost is Binomial(50, 0.2), mean 10, sd 2.8.
    Accepting a ratio in [0.04, 0.40] (2 to 20 lost) fails by chance with
    probability 5.1e-4 (exact tails: P(X < 2) = 1.9e-4, P(X > 20) = 3.2e-4).
    The responder's draws are seeded, and it reports what it dropped, so with it
    the count must also match exactly.

    Round trip: the delay is a floor (a reply cannot come back sooner), and the
    rest of the path is loopback-fast, so min >= 49.5 ms; with netem the mean
    lies in [49.5, 80] ms, the upper end leaving room for a loaded machine. The
    responder, in user space, may be woken late by more than that on a loaded
    machine; it reports each hold as it really was, and the mean must be theirs
    plus the path (under 5 ms, as the packet-by-packet test below derives).
    """
    with impairment(0.050, 0.0, 0.2) as done:
        success, error, values = await probe(netns.ns_ip, many())
    assert success, error
    assert values["scout_probe_packets_sent"] == COUNT
    lost = COUNT - values["scout_probe_packets_received"]
    assert values["scout_probe_loss_ratio"] == pytest.approx(lost / COUNT)
    assert 0.04 <= values["scout_probe_loss_ratio"] <= 0.40
    if done.dropped is not None:
        assert done.requests == COUNT
        assert lost == len(done.dropped)
    assert values["scout_probe_rtt_min_seconds"] >= 0.0495
    if done.held is None:
        assert 0.0495 <= values["scout_probe_rtt_avg_seconds"] <= 0.080
    else:
        held = statistics.fmean(done.held.values())
        assert 0 <= values["scout_probe_rtt_avg_seconds"] - held <= 0.005, (values, held)
    assert values["scout_probe_rtt_max_seconds"] < 0.5


async def test_loss_limit_fails_a_probe_that_got_replies(netns, impairment):
    """With 20% loss over 50 requests, none lost has probability 0.8^50 = 1.4e-5."""
    with impairment(0.001, 0.0, 0.2):
        success, error, values = await probe(netns.ns_ip, many(fail_if_loss_ratio_above=0.02))
    loss = values["scout_probe_loss_ratio"]
    assert values["scout_probe_packets_received"] > 0
    assert not success
    assert values["scout_probe_success"] == 0
    assert error == f"loss ratio {loss:.3g} is above fail_if_loss_ratio_above 0.02"


async def test_jitter_grows_with_delay_variation(netns, impairment):
    """``delay 40ms`` against ``delay 40ms 20ms`` (each reply held 20 to 60 ms, uniform).

    For independent uniform delays of width W = 40 ms, E|X - Y| = W / 3 = 13.3 ms.
    Over the 49 successive pairs of 50 packets, 200,000 simulated runs had a
    standard deviation of 1.5 ms and stayed inside [7, 22] ms in all but 1e-5
    of them; the mean round trip (40 ms, sd 1.6 ms) inside [32, 49] ms in all
    but 2e-5. With a steady delay, jitter is only timer noise: under 4 ms with
    netem. The responder, in user space, is woken late on a busy machine, which
    adds to its holds: there those bounds hold for the delays it drew (seeded),
    and what the prober measured is held to the holds it reports, each
    statistic computed here on its own.
    """
    with impairment(0.040) as steady_done:
        steady_ok, steady_error, steady = await probe(netns.ns_ip, many())
    with impairment(0.040, 0.020) as shaky_done:
        shaky_ok, shaky_error, shaky = await probe(netns.ns_ip, many())
    assert steady_ok, steady_error
    assert shaky_ok, shaky_error
    assert steady["scout_probe_loss_ratio"] == 0
    assert shaky["scout_probe_loss_ratio"] == 0
    assert shaky["scout_probe_rtt_min_seconds"] >= 0.0195
    if steady_done.held is None or shaky_done.held is None:
        assert_spread_of_uniform_holds(
            shaky["scout_probe_jitter_seconds"],
            shaky["scout_probe_rtt_avg_seconds"],
            shaky["scout_probe_rtt_max_seconds"],
            shaky["scout_probe_rtt_stddev_seconds"],
        )
        # netem: the kernel's timers; the steady run's jitter is only their noise.
        assert steady["scout_probe_jitter_seconds"] < 0.004
        assert shaky["scout_probe_jitter_seconds"] > 5 * steady["scout_probe_jitter_seconds"]
        assert steady["scout_probe_rtt_stddev_seconds"] < 0.004
        return
    # The responder, in user space, is woken late on a loaded machine: 3.8 ms of
    # steady jitter against 15 ms of shaky failed a fixed bound and a ratio. The
    # delays it drew have the spread derived above; its report has each hold as
    # it really was, and the prober must measure just those.
    assert shaky_done.delays is not None
    drawn = [delay for _, delay in sorted(shaky_done.delays.items())]
    assert_spread_of_uniform_holds(
        mean_step(drawn), statistics.fmean(drawn), max(drawn), statistics.pstdev(drawn)
    )
    for measured, done in ((steady, steady_done), (shaky, shaky_done)):
        holds = [hold for _, hold in sorted(done.held.items())]
        assert measured["scout_probe_jitter_seconds"] == pytest.approx(mean_step(holds), abs=0.0005)
        assert measured["scout_probe_rtt_stddev_seconds"] == pytest.approx(
            statistics.pstdev(holds), abs=0.0005
        )
        assert 0 <= measured["scout_probe_rtt_avg_seconds"] - statistics.fmean(holds) <= 0.005
    assert shaky["scout_probe_jitter_seconds"] > steady["scout_probe_jitter_seconds"]


def mean_step(values: list[float]) -> float:
    """Jitter, computed here apart from the prober: the mean absolute change in a row."""
    return statistics.fmean(abs(b - a) for a, b in itertools.pairwise(values))


def assert_spread_of_uniform_holds(jitter: float, avg: float, top: float, stddev: float) -> None:
    """What 50 holds drawn uniformly from 20 to 60 ms give, but for 1e-5 (see above)."""
    assert 0.007 <= jitter <= 0.022
    assert 0.032 <= avg <= 0.049
    assert top <= 0.100
    # Uniform holds of width 40 ms have a standard deviation of 40 / sqrt(12) = 11.5 ms
    # (50 samples: within [8, 16] ms but for 1e-5).
    assert 0.008 <= stddev <= 0.016


async def test_each_round_trip_matches_the_delay_applied_to_it(netns, impairment):
    """Packet by packet: measured round trip = the reply's hold + the path (under 5 ms).

    Uses what only the responder reports: for each reply, the time from the
    request's arrival in the namespace's kernel to the reply's send, i.e. the
    hold as it really was. What the prober measured beyond it is two crossings
    of a veth, timed by the kernel at both ends: microseconds, however busy the
    machine. Jitter from the measured round trips must equal jitter from the
    holds to within 0.5 ms.
    """
    if impairment.backend != "responder":
        pytest.skip("needs the responder's per-packet report")
    loop = asyncio.get_running_loop()
    with impairment(0.030, 0.015, 0.25) as done:
        result = await SocketPinger().ping(
            ipaddress.ip_address(netns.ns_ip),
            count=30,
            interval=0.01,
            reply_timeout=0.5,
            deadline=loop.time() + 20,
            payload_size=56,
            dont_fragment=False,
        )
    assert done.delays is not None
    assert done.held is not None
    assert done.dropped is not None
    holds = {seq: hold for (_, seq), hold in done.held.items()}
    # The responder held each reply at least as long as it drew.
    assert all(done.held[key] >= done.delays[key] for key in done.delays)
    dropped = {seq for _, seq in done.dropped}
    assert len(holds) + len(dropped) == result.sent == 30
    for seq, rtt in enumerate(result.rtts):
        if seq in dropped:
            assert rtt is None, seq
        else:
            assert rtt is not None, seq
            assert 0 <= rtt - holds[seq] <= 0.005, (seq, rtt, holds[seq])
    measured = summarize(result.rtts)
    applied = summarize([holds.get(seq) for seq in range(result.sent)])
    assert measured.jitter is not None
    assert applied.jitter is not None
    assert measured.jitter == pytest.approx(applied.jitter, abs=0.0005)
    assert measured.loss_ratio == applied.loss_ratio == len(dropped) / 30


async def test_blackholed_address_is_all_loss_within_the_timeouts(netns):
    loop = asyncio.get_running_loop()
    started = loop.time()
    # A deadline far off: a probe that waited for it, or waited out each request's
    # timeout in turn (5 s), takes seconds longer than the 1.2 s the timeouts allow.
    module = IcmpModule(count=5, interval_seconds=0.05, timeout_seconds=1.0)
    result = await run_probe(netns.blackholed_ip, module, started + 20)
    elapsed = loop.time() - started
    values = values_of(result.families)
    assert not result.success
    assert values["scout_probe_success"] == 0
    assert values["scout_probe_packets_sent"] == 5
    assert values["scout_probe_packets_received"] == 0
    assert values["scout_probe_loss_ratio"] == 1
    assert not any(name.startswith(("scout_probe_rtt_", "scout_probe_jitter")) for name in values)
    assert result.error == f"no answer to echo requests to {netns.blackholed_ip} (5 sent)"
    # The last request is sent at 0.2 s and waited for 1 s: done at 1.2 s, not at
    # 5 s or 20 s (the upper bound leaves a loaded machine its stalls).
    assert 1.15 <= elapsed <= 3.0


async def test_unanswered_probe_stops_at_a_tight_deadline(netns):
    loop = asyncio.get_running_loop()
    started = loop.time()
    # The prober's own work, without ``probe``'s cut a little after the deadline,
    # and a timeout far past that deadline: a probe that waited it out would take
    # 4 s where the deadline allows 0.4 s.
    module = IcmpModule(count=5, interval_seconds=0.2, timeout_seconds=4.0)
    metrics = Metrics()
    success, error = await IcmpProber().attempt(netns.blackholed_ip, module, started + 0.4, metrics)
    elapsed = loop.time() - started
    values = values_of(metrics.families)
    assert not success
    assert values["scout_probe_loss_ratio"] == 1
    assert values["scout_probe_packets_sent"] == 1
    assert error is not None
    assert "only 1 of 5 packets fit before the deadline" in error
    assert 0.35 <= elapsed <= 2.0


async def test_dont_fragment_refuses_what_the_link_cannot_carry(netns):
    """A 1400-byte payload over a 1280-byte MTU: fragmented without DF, refused with it."""

    async def set_mtu(mtu: int) -> None:
        # Both ends: a veth drops what is larger than the receiving end's MTU.
        for netns_args in ([], ["-n", netns.name]):
            interface = netns.ns_if if netns_args else netns.host_if
            command = ["ip", *netns_args, "link", "set", interface, "mtu", str(mtu)]
            proc = await asyncio.create_subprocess_exec(*command)
            assert await proc.wait() == 0

    await set_mtu(1280)
    try:
        loop = asyncio.get_running_loop()
        fragmented = await run_probe(
            netns.ns_ip, IcmpModule(count=2, payload_size=1400), loop.time() + 5
        )
        refused = await run_probe(
            netns.ns_ip,
            IcmpModule(count=2, payload_size=1400, dont_fragment=True),
            loop.time() + 5,
        )
    finally:
        await set_mtu(1500)
    assert fragmented.success, fragmented.error
    assert not refused.success
    assert values_of(refused.families)["scout_probe_packets_sent"] == 2
    assert refused.error is not None
    assert f"sending to {netns.ns_ip} failed" in refused.error
    assert "Message too long" in refused.error


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
def test_unprivileged_process_pings_through_a_datagram_socket(isolated_netns, target):
    """Without CAP_NET_RAW but inside ping_group_range, ``auto`` uses a datagram socket."""
    isolated_netns.sysctl("net.ipv4.ping_group_range", "0 2147483647")
    raw = run_in_netns(isolated_netns, "ping_main", "raw", target, drop_net_raw=True)
    assert raw == {"error": permission_message(0, "0 2147483647")}, "CAP_NET_RAW not dropped"
    answer = run_in_netns(isolated_netns, "ping_main", "auto", target, drop_net_raw=True)
    assert answer["kind"] == "datagram"
    assert len(answer["rtts"]) == 3
    assert all(rtt is not None and 0 < rtt < 0.5 for rtt in answer["rtts"])


def test_forced_datagram_socket_works_for_root_too(isolated_netns):
    isolated_netns.sysctl("net.ipv4.ping_group_range", "0 0")
    answer = run_in_netns(isolated_netns, "ping_main", "datagram", "127.0.0.1")
    assert answer["kind"] == "datagram"
    assert all(rtt is not None for rtt in answer["rtts"])


def test_no_privilege_and_no_ping_group_fails_the_probe_with_what_is_missing(isolated_netns):
    # A new namespace's ping_group_range is "1 0", an empty range: no group may ping.
    outcome = run_in_netns(
        isolated_netns, "icmp_probe_main", "auto", "127.0.0.1", drop_net_raw=True
    )
    assert outcome["success"] is False
    assert outcome["scout_probe_success"] == 0
    assert outcome["error"] == (
        "ICMP needs root, CAP_NET_RAW, or net.ipv4.ping_group_range covering gid 0;"
        " it is currently '1 0'"
    )


def test_forced_datagram_outside_the_ping_group_says_so(isolated_netns):
    # Root, but told to use a datagram socket that the namespace's range forbids.
    isolated_netns.sysctl("net.ipv4.ping_group_range", "100 200")
    outcome = run_in_netns(isolated_netns, "icmp_probe_main", "datagram", "127.0.0.1")
    assert outcome["success"] is False
    assert outcome["error"] == permission_message(0, "100 200")
