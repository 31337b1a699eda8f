"""The ``tcp`` prober: times several TCP connects to ``host:port``, and TLS handshakes.

A connect's round trip is the TCP handshake alone (one network round trip plus
the peer's accept), so ``scout_probe_rtt_*`` compare with ICMP's; the TLS
handshake, when ``tls`` is on, is reported apart. Connects are made one after
another, ``interval_seconds`` apart, each closed at once; an attempt counts as
answered only if its TLS handshake (when asked for) succeeded too. A
link-local target keeps its zone (``[fe80::1%eth0]:443``); TLS checks the
certificate against the address without it.

Sample exposition, besides the families every probe has (see
``exporter.targets.probe.base``)::

    # HELP scout_probe_success 1 if the probe succeeded.
    # TYPE scout_probe_success gauge
    scout_probe_success 1.0
    # HELP scout_probe_packets_sent Packets (echo requests, connects, requests) sent.
    # TYPE scout_probe_packets_sent gauge
    scout_probe_packets_sent 3.0
    # HELP scout_probe_rtt_avg_seconds Mean round trip.
    # TYPE scout_probe_rtt_avg_seconds gauge
    scout_probe_rtt_avg_seconds 0.0121
    # HELP scout_probe_tls_handshake_seconds Mean seconds of the successful TLS handshakes.
    # TYPE scout_probe_tls_handshake_seconds gauge
    scout_probe_tls_handshake_seconds 0.0243
    # HELP scout_probe_tls_cert_expiry_timestamp_seconds Unix time the TLS chain first expires.
    # TYPE scout_probe_tls_cert_expiry_timestamp_seconds gauge
    scout_probe_tls_cert_expiry_timestamp_seconds 1.7356896e+09

The certificate expiry is the earliest notAfter in the chain the server
presented, read even with ``tls_insecure_skip_verify``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from exporter.clients.probe_net import (
    Dialed,
    Dialer,
    Resolver,
    SocketDialer,
    SystemResolver,
    TargetError,
    split_host_port,
    tls_context,
)
from exporter.targets.probe.base import (
    BaseProber,
    CaFile,
    Metrics,
    PacketModule,
    add_address_families,
    add_rtt_families,
    add_tls_expiry,
    loss_verdict,
    run_attempts,
    shortfall,
    summarize,
)


class TcpModule(PacketModule):
    prober: Literal["tcp"] = "tcp"
    count: int = Field(default=3, ge=1, le=100)
    timeout_seconds: float = Field(default=1.0, gt=0.0, le=60.0)
    tls: bool = False
    tls_insecure_skip_verify: bool = False
    tls_ca_file: CaFile | None = None
    # SNI and the name the certificate must carry; the target's host by default.
    tls_server_name: str | None = None


class TcpProber(BaseProber[TcpModule]):
    def __init__(self, dialer: Dialer | None = None, resolver: Resolver | None = None) -> None:
        self.dialer: Dialer = dialer or SocketDialer()
        self.resolver: Resolver = resolver or SystemResolver()

    async def run(
        self, target: str, module: TcpModule, deadline: float, metrics: Metrics
    ) -> tuple[bool, str | None]:
        where = split_host_port(target)
        if where.port is None:
            raise TargetError(f"target {target!r}: a TCP target needs a port (host:port)")
        port = where.port
        resolved = await self.resolver.resolve(
            where.host, module.preferred_ip_protocol, module.ip_protocol_fallback, deadline
        )
        add_address_families(metrics, resolved.lookup_seconds, resolved.address.version)
        module.check_address(where.host, resolved.address)
        context = None
        if module.tls:
            context = tls_context(not module.tls_insecure_skip_verify, module.tls_ca_file)
        # The certificate names fe80::1, never fe80::1%eth0: the zone is this host's own.
        checked_name = where.host.partition("%")[0] if resolved.address.version == 6 else where.host
        server_name = module.tls_server_name or checked_name if module.tls else None

        async def connect() -> Dialed:
            return await self.dialer.dial(resolved.address, port, context, server_name)

        attempts = await run_attempts(
            connect,
            count=module.count,
            interval=module.interval_seconds,
            attempt_timeout=module.timeout_seconds,
            deadline=deadline,
        )
        made = [a.value for a in attempts if a.value is not None]
        summary = summarize([a.value.connect_seconds if a.value else None for a in attempts])
        add_rtt_families(metrics, summary)
        handshakes = [d.tls_handshake_seconds for d in made if d.tls_handshake_seconds is not None]
        if handshakes:
            metrics.add(
                "scout_probe_tls_handshake_seconds",
                "Mean seconds of the successful TLS handshakes.",
                math.fsum(handshakes) / len(handshakes),
            )
        if made:
            add_tls_expiry(metrics, made[-1].peer_certificates)
        success, error = loss_verdict(summary, module, f"connects to {target}")
        failures = [a.error for a in attempts if a.error]
        if failures and not success:
            error = f"{error}: {failures[-1]}"
        notes = [e for e in (error, shortfall(len(attempts), module.count)) if e]
        return success, "; ".join(notes) or None
