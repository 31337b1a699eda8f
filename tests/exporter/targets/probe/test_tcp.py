"""The tcp prober against real listeners on 127.0.0.1, plain and TLS."""

from __future__ import annotations

import asyncio
import itertools
import math
import ssl

import pytest

from exporter.clients.probe_net import Dialed, IPAddress, SocketDialer
from exporter.targets.probe.registry import run_probe
from exporter.targets.probe.tcp import TcpModule, TcpProber

from .conftest import assert_one_answer_has_no_jitter, closed_port, values_of

FAST = {"count": 3, "interval_seconds": 0.01, "timeout_seconds": 2.0}


class RecordingDialer(SocketDialer):
    """Real connects, remembering each round trip and handshake the prober is told about."""

    def __init__(self) -> None:
        self.rtts: list[float] = []
        self.handshakes: list[float] = []

    async def dial(
        self, address: IPAddress, port: int, tls: ssl.SSLContext | None, server_name: str | None
    ) -> Dialed:
        dialed = await super().dial(address, port, tls, server_name)
        self.rtts.append(dialed.connect_seconds)
        if dialed.tls_handshake_seconds is not None:
            self.handshakes.append(dialed.tls_handshake_seconds)
        return dialed


async def probe(target: str, dialer: SocketDialer | None = None, **settings):
    loop = asyncio.get_running_loop()
    probers = {"tcp": TcpProber(dialer)}
    return await run_probe(
        target, TcpModule(**{**FAST, **settings}), loop.time() + 10, probers=probers
    )


def mean_step(rtts: list[float]) -> float:
    """Jitter as the prober defines it: the mean absolute change between successive RTTs."""
    steps = [abs(b - a) for a, b in itertools.pairwise(rtts)]
    return math.fsum(steps) / len(steps)


async def test_open_port_is_reached_every_time(tcp_server_factory):
    server = await tcp_server_factory()
    dialer = RecordingDialer()
    result = await probe(f"127.0.0.1:{server.port}", dialer)
    values = values_of(result.families)
    assert result.success, result.error
    assert result.error is None
    assert values["scout_probe_success"] == 1
    assert values["scout_probe_packets_sent"] == 3
    assert values["scout_probe_packets_received"] == 3
    assert values["scout_probe_loss_ratio"] == 0
    assert values["scout_probe_ip_protocol"] == 4
    assert values["scout_probe_dns_lookup_seconds"] == 0  # an address: nothing to look up
    assert 0 < values["scout_probe_rtt_min_seconds"] <= values["scout_probe_rtt_avg_seconds"]
    assert values["scout_probe_rtt_avg_seconds"] <= values["scout_probe_rtt_max_seconds"]
    # The round trips and jitter are exactly those the prober saw, in seconds (no fixed
    # bound: a loaded machine may stall a connect), and jitter is bounded by their spread.
    assert len(dialer.rtts) == 3
    assert values["scout_probe_rtt_min_seconds"] == min(dialer.rtts)
    assert values["scout_probe_rtt_max_seconds"] == max(dialer.rtts)
    assert values["scout_probe_rtt_avg_seconds"] == pytest.approx(math.fsum(dialer.rtts) / 3)
    assert values["scout_probe_jitter_seconds"] == mean_step(dialer.rtts)
    spread = values["scout_probe_rtt_max_seconds"] - values["scout_probe_rtt_min_seconds"]
    # Three RTTs: two steps that together span at least min to max (1e-12: float rounding).
    assert spread / 2 - 1e-12 <= values["scout_probe_jitter_seconds"] <= spread + 1e-12
    assert "scout_probe_tls_cert_expiry_timestamp_seconds" not in values
    # Each attempt is a connection of its own.
    await asyncio.sleep(0.05)
    assert server.accepted == 3


async def test_one_connect_has_no_jitter(tcp_server_factory):
    server = await tcp_server_factory()
    result = await probe(f"127.0.0.1:{server.port}", count=1)
    values = values_of(result.families)
    assert result.success, result.error
    assert_one_answer_has_no_jitter(values)


async def test_closed_port_fails_with_refused():
    port = closed_port()
    result = await probe(f"127.0.0.1:{port}")
    values = values_of(result.families)
    assert not result.success
    assert values["scout_probe_success"] == 0
    assert values["scout_probe_packets_received"] == 0
    assert values["scout_probe_loss_ratio"] == 1
    # No round trips to report: left out, not NaN.
    assert not any(name.startswith("scout_probe_rtt_") for name in values)
    assert "scout_probe_jitter_seconds" not in values
    assert result.error == (
        f"no answer to connects to 127.0.0.1:{port} (3 sent):"
        f" connection to 127.0.0.1:{port} refused"
    )


async def test_host_name_is_resolved_and_timed(tcp_server_factory):
    server = await tcp_server_factory()
    result = await probe(f"localhost:{server.port}", preferred_ip_protocol="ip4")
    values = values_of(result.families)
    assert result.success, result.error
    assert values["scout_probe_ip_protocol"] == 4
    assert 0 < values["scout_probe_dns_lookup_seconds"] < 5


async def test_tls_expiry_is_the_self_signed_certificates(tcp_server_factory, self_signed):
    server = await tcp_server_factory(self_signed.server_context())
    dialer = RecordingDialer()
    result = await probe(
        f"127.0.0.1:{server.port}", dialer, tls=True, tls_insecure_skip_verify=True, count=2
    )
    values = values_of(result.families)
    assert result.success, result.error
    assert values["scout_probe_tls_cert_expiry_timestamp_seconds"] == self_signed.chain[0].not_after
    # The mean of the handshakes measured, in seconds, apart from the connects.
    assert len(dialer.handshakes) == 2
    assert values["scout_probe_tls_handshake_seconds"] > 0
    assert values["scout_probe_tls_handshake_seconds"] == pytest.approx(
        math.fsum(dialer.handshakes) / 2
    )
    assert values["scout_probe_packets_received"] == 2


async def test_untrusted_certificate_fails_the_probe(tcp_server_factory, self_signed):
    server = await tcp_server_factory(self_signed.server_context())
    result = await probe(f"127.0.0.1:{server.port}", tls=True, count=1)
    values = values_of(result.families)
    assert not result.success
    assert values["scout_probe_packets_received"] == 0
    assert result.error is not None
    assert "TLS certificate not trusted: self-signed certificate" in result.error


async def test_trusted_chain_reports_its_earliest_expiry(tcp_server_factory, chained):
    server = await tcp_server_factory(chained.server_context())
    result = await probe(
        f"127.0.0.1:{server.port}",
        tls=True,
        tls_ca_file=str(chained.ca_file),
        tls_server_name="localhost",
        count=1,
    )
    values = values_of(result.families)
    assert result.success, result.error
    # The intermediate expires before the leaf; the probe reports the first to go.
    assert chained.earliest_not_after < chained.chain[0].not_after
    assert values["scout_probe_tls_cert_expiry_timestamp_seconds"] == chained.earliest_not_after


async def test_wrong_server_name_fails_verification(tcp_server_factory, chained):
    server = await tcp_server_factory(chained.server_context())
    result = await probe(
        f"127.0.0.1:{server.port}",
        tls=True,
        tls_ca_file=str(chained.ca_file),
        tls_server_name="not-this-host.example",
        count=1,
    )
    assert not result.success
    assert result.error is not None
    assert "Hostname mismatch" in result.error


async def test_tls_to_a_plain_listener_fails_cleanly(tcp_server_factory):
    server = await tcp_server_factory()  # accepts, then closes without a handshake
    result = await probe(f"127.0.0.1:{server.port}", tls=True, count=1)
    assert not result.success
    assert result.error is not None
    assert "TLS handshake failed" in result.error


async def test_silent_peer_is_timed_out_within_the_deadline():
    # A listener that never accepts still completes handshakes from its backlog,
    # so use TLS: the handshake gets no answer and must time out.
    release = asyncio.Event()
    connections = 0

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        module = TcpModule(count=2, interval_seconds=0, timeout_seconds=0.3, tls=True)
        # A deadline far off: an attempt not cut at its 0.3 s would take the probe
        # to 30 s (and be reported as cut by the deadline), not the 0.6 s it should.
        result = await run_probe(f"127.0.0.1:{port}", module, started + 30)
        elapsed = loop.time() - started
    finally:
        release.set()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)
    assert not result.success
    assert connections == 2
    assert values_of(result.families)["scout_probe_packets_sent"] == 2
    # Two attempts cut at 0.3 s each; the upper bound leaves a loaded machine its stalls.
    assert 0.5 <= elapsed < 5
    assert result.error is not None
    assert result.error.endswith("no answer within 0.3s")
