"""The ``icmp`` prober: several echo requests to one host, for loss, latency and jitter.

Targets are ``host``, an IPv4 address, or an IPv6 address with or without
brackets, a link-local one with its zone (``fe80::1%eth0``); a port is an
error. Requests go out ``interval_seconds`` apart without waiting for
replies, as ping sends them, and each has ``timeout_seconds`` to be answered.

Sample exposition, besides the families every probe has (see
``exporter.targets.probe.base``)::

    # HELP scout_probe_success 1 if the probe succeeded.
    # TYPE scout_probe_success gauge
    scout_probe_success 1.0
    # HELP scout_probe_duration_seconds Seconds the whole probe took.
    # TYPE scout_probe_duration_seconds gauge
    scout_probe_duration_seconds 0.8134
    # HELP scout_probe_dns_lookup_seconds Seconds spent resolving the target's host name.
    # TYPE scout_probe_dns_lookup_seconds gauge
    scout_probe_dns_lookup_seconds 0.0012
    # HELP scout_probe_ip_protocol IP version of the address probed (4 or 6).
    # TYPE scout_probe_ip_protocol gauge
    scout_probe_ip_protocol 4.0
    # HELP scout_probe_packets_sent Packets (echo requests, connects, requests) sent.
    # TYPE scout_probe_packets_sent gauge
    scout_probe_packets_sent 5.0
    # HELP scout_probe_packets_received Packets answered in time.
    # TYPE scout_probe_packets_received gauge
    scout_probe_packets_received 5.0
    # HELP scout_probe_loss_ratio Share of packets sent that went unanswered (0 to 1).
    # TYPE scout_probe_loss_ratio gauge
    scout_probe_loss_ratio 0.0
    # HELP scout_probe_rtt_avg_seconds Mean round trip.
    # TYPE scout_probe_rtt_avg_seconds gauge
    scout_probe_rtt_avg_seconds 0.0123
    # HELP scout_probe_jitter_seconds Mean absolute difference of successive round trips.
    # TYPE scout_probe_jitter_seconds gauge
    scout_probe_jitter_seconds 0.0004

(``scout_probe_rtt_min_seconds``, ``_max_seconds`` and ``_stddev_seconds`` too.)
The probe succeeds when at least one request is answered and, if
``fail_if_loss_ratio_above`` is set, the loss is not above it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from exporter.clients.icmp import Pinger, SocketPinger
from exporter.clients.probe_net import Resolver, SystemResolver, TargetError, split_host_port
from exporter.targets.probe.base import (
    BaseProber,
    Metrics,
    PacketModule,
    add_address_families,
    add_rtt_families,
    loss_verdict,
    shortfall,
    summarize,
)


class IcmpModule(PacketModule):
    prober: Literal["icmp"] = "icmp"
    count: int = Field(default=5, ge=1, le=100)
    timeout_seconds: float = Field(default=1.0, gt=0.0, le=60.0)
    # Bytes after the 8-byte ICMP header; 56 makes the 64-byte packet ping sends.
    payload_size: int = Field(default=56, ge=0, le=65507)
    dont_fragment: bool = False


class IcmpProber(BaseProber[IcmpModule]):
    def __init__(self, pinger: Pinger | None = None, resolver: Resolver | None = None) -> None:
        self.pinger: Pinger = pinger or SocketPinger()
        self.resolver: Resolver = resolver or SystemResolver()

    async def run(
        self, target: str, module: IcmpModule, deadline: float, metrics: Metrics
    ) -> tuple[bool, str | None]:
        where = split_host_port(target)
        if where.port is not None:
            raise TargetError(f"target {target!r}: an ICMP target takes no port")
        resolved = await self.resolver.resolve(
            where.host, module.preferred_ip_protocol, module.ip_protocol_fallback, deadline
        )
        add_address_families(metrics, resolved.lookup_seconds, resolved.address.version)
        module.check_address(where.host, resolved.address)
        result = await self.pinger.ping(
            resolved.address,
            count=module.count,
            interval=module.interval_seconds,
            reply_timeout=module.timeout_seconds,
            deadline=deadline,
            payload_size=module.payload_size,
            dont_fragment=module.dont_fragment,
        )
        summary = summarize(result.rtts)
        add_rtt_families(metrics, summary)
        success, error = loss_verdict(summary, module, f"echo requests to {resolved.address}")
        notes = [e for e in (error, result.send_error, shortfall(result.sent, module.count)) if e]
        return success, "; ".join(notes) or None
