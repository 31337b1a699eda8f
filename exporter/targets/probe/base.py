"""What a prober is, what a probe returns, and the metric families all probes share.

A probe repeats one measurement ``count`` times (an echo request, a TCP connect,
an HTTP request) and reports the whole series. Sample exposition of the shared
families (the metric contract; seconds throughout)::

    # HELP scout_probe_success 1 if the probe succeeded.
    # TYPE scout_probe_success gauge
    scout_probe_success 1.0
    # HELP scout_probe_duration_seconds Seconds the whole probe took.
    # TYPE scout_probe_duration_seconds gauge
    scout_probe_duration_seconds 0.8123
    # HELP scout_probe_dns_lookup_seconds Seconds spent resolving the target's host name.
    # TYPE scout_probe_dns_lookup_seconds gauge
    scout_probe_dns_lookup_seconds 0.0021
    # HELP scout_probe_ip_protocol IP version of the address probed (4 or 6).
    # TYPE scout_probe_ip_protocol gauge
    scout_probe_ip_protocol 4.0
    # HELP scout_probe_packets_sent Packets (echo requests, connects, requests) sent.
    # TYPE scout_probe_packets_sent gauge
    scout_probe_packets_sent 5.0
    # HELP scout_probe_packets_received Packets answered in time.
    # TYPE scout_probe_packets_received gauge
    scout_probe_packets_received 4.0
    # HELP scout_probe_loss_ratio Share of packets sent that went unanswered (0 to 1).
    # TYPE scout_probe_loss_ratio gauge
    scout_probe_loss_ratio 0.2
    # HELP scout_probe_rtt_min_seconds Shortest round trip.
    # TYPE scout_probe_rtt_min_seconds gauge
    scout_probe_rtt_min_seconds 0.0101
    # HELP scout_probe_rtt_avg_seconds Mean round trip.
    # TYPE scout_probe_rtt_avg_seconds gauge
    scout_probe_rtt_avg_seconds 0.0123
    # HELP scout_probe_rtt_max_seconds Longest round trip.
    # TYPE scout_probe_rtt_max_seconds gauge
    scout_probe_rtt_max_seconds 0.0152
    # HELP scout_probe_rtt_stddev_seconds Population standard deviation of the round trips.
    # TYPE scout_probe_rtt_stddev_seconds gauge
    scout_probe_rtt_stddev_seconds 0.0019
    # HELP scout_probe_jitter_seconds Mean absolute difference of successive round trips.
    # TYPE scout_probe_jitter_seconds gauge
    scout_probe_jitter_seconds 0.0024

``scout_probe_success`` and ``scout_probe_duration_seconds`` are always there.
The round-trip families are left out when nothing was answered (there is no
value to give, and NaN would poison aggregations); jitter needs two answers.
Jitter is the plain mean of ``|rtt[i] - rtt[j]|`` over successive answered
packets ``j < i`` (a lost packet in between is skipped), not RFC 3550's
exponentially smoothed estimate: over a few dozen packets a plain mean is the
less noisy and easier to explain.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Generic, Literal, Protocol, TypeVar

from cryptography import x509
from prometheus_client.metrics_core import Metric
from pydantic import AfterValidator, Field

from exporter.clients.probe_net import IPAddress, ProbeError, split_host_port
from exporter.common.models import StrictModel
from exporter.targets.allowlist import AllowedTargets
from exporter.targets.exposition import METRIC_EXPOSITION
from exporter.targets.kind import SelfMetric, StatusMetrics, mask_password, measure

ModuleT = TypeVar("ModuleT", bound="PacketModule")
ModuleT_contra = TypeVar("ModuleT_contra", bound="PacketModule", contravariant=True)
T = TypeVar("T")


def _readable_file(path: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"tls_ca_file {path!r} is not a file")
    return path


# PEM certificate authorities to trust besides the system's, for an internal PKI.
CaFile = Annotated[str, AfterValidator(_readable_file)]


class PacketModule(StrictModel):
    """Settings every prober shares; each prober's module sets its own defaults."""

    prober: str
    count: int = Field(default=1, ge=1, le=100)
    interval_seconds: float = Field(default=0.2, ge=0.0, le=60.0)
    timeout_seconds: float = Field(default=1.0, gt=0.0, le=300.0)
    preferred_ip_protocol: Literal["ip4", "ip6"] = "ip4"
    ip_protocol_fallback: bool = True
    # The probe fails when more than this share of packets went unanswered.
    fail_if_loss_ratio_above: float | None = Field(default=None, ge=0.0, le=1.0)
    # The targets this module may probe (see exporter.targets.allowlist); None: any.
    allowed_targets: AllowedTargets | None = None

    def target_host(self, target: str) -> str:
        """The host of ``target`` as this prober reads it; raises ``TargetError``."""
        return split_host_port(target).host

    def check_address(self, host: str, address: IPAddress) -> None:
        """Before connecting: raise ``AddressNotAllowedError`` if the allow-list refuses it."""
        if self.allowed_targets is not None:
            self.allowed_targets.check(host, address)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    success: bool
    families: list[Metric]
    # Why the probe failed (or what went partly wrong), for a log line.
    error: str | None = None


class Prober(Protocol[ModuleT_contra]):
    """Probes one target with one module's settings; ``deadline`` is in ``loop.time()``."""

    async def probe(self, target: str, module: ModuleT_contra, deadline: float) -> ProbeResult:
        """The whole probe, timed and bounded by the deadline, success first; never raises."""
        ...

    async def attempt(
        self, target: str, module: ModuleT_contra, deadline: float, metrics: Metrics
    ) -> tuple[bool, str | None]:
        """The probe's own measurements, into ``metrics``; ``/probe``'s handler times it."""
        ...


class Metrics:
    """The families of one probe, each built fresh with one unlabelled sample."""

    def __init__(self, families: list[Metric] | None = None) -> None:
        self.families: list[Metric] = [] if families is None else families

    def add(self, name: str, documentation: str, value: float) -> None:
        self.families.append(METRIC_EXPOSITION.gauge(name, documentation, value))


# Every probe's own metrics, as blackbox_exporter has probe_success and probe_duration_seconds.
PROBE_STATUS = StatusMetrics(
    duration=SelfMetric("scout_probe_duration_seconds", "Seconds the whole probe took."),
    success=SelfMetric("scout_probe_success", "1 if the probe succeeded."),
)


class BaseProber(ABC, Generic[ModuleT]):
    """Runs one probe; ``probe`` also times it, keeps it within the deadline and never raises."""

    async def probe(self, target: str, module: ModuleT, deadline: float) -> ProbeResult:
        """The probe as ``/probe`` serves it, success and duration first (see ``measure``)."""
        families: list[Metric] = []
        outcome = await measure(
            self.attempt(target, module, deadline, Metrics(families)),
            families,
            deadline=deadline,
            status=PROBE_STATUS,
            exposition=METRIC_EXPOSITION,
            noun="probe",
            subject=f"{mask_password(repr(target), target)} ({module.prober})",
        )
        return ProbeResult(outcome.success, outcome.families, outcome.error)

    async def attempt(
        self, target: str, module: ModuleT, deadline: float, metrics: Metrics
    ) -> tuple[bool, str | None]:
        """``run``, with a ``ProbeError`` (the target's fault, not ours) as a failed probe."""
        try:
            return await self.run(target, module, deadline, metrics)
        except ProbeError as exc:
            return False, str(exc)

    @abstractmethod
    async def run(
        self, target: str, module: ModuleT, deadline: float, metrics: Metrics
    ) -> tuple[bool, str | None]:
        """Probe, adding families to ``metrics``; return success and any error.

        May raise ``ProbeError``: families added before it are kept.
        """


@dataclass(frozen=True, slots=True)
class RttSummary:
    sent: int
    received: int
    min: float | None = None
    avg: float | None = None
    max: float | None = None
    stddev: float | None = None
    jitter: float | None = None

    @property
    def loss_ratio(self) -> float | None:
        return None if self.sent == 0 else (self.sent - self.received) / self.sent


def summarize(samples: Sequence[float | None]) -> RttSummary:
    """Statistics of one round trip per packet sent, ``None`` for a lost one."""
    answered = [s for s in samples if s is not None]
    if not answered:
        return RttSummary(len(samples), 0)
    avg = math.fsum(answered) / len(answered)
    variance = math.fsum((s - avg) ** 2 for s in answered) / len(answered)
    jitter = None
    if len(answered) >= 2:
        steps = [abs(b - a) for a, b in itertools.pairwise(answered)]
        jitter = math.fsum(steps) / len(steps)
    return RttSummary(
        len(samples), len(answered), min(answered), avg, max(answered), math.sqrt(variance), jitter
    )


def add_rtt_families(metrics: Metrics, summary: RttSummary) -> None:
    metrics.add(
        "scout_probe_packets_sent",
        "Packets (echo requests, connects, requests) sent.",
        summary.sent,
    )
    metrics.add("scout_probe_packets_received", "Packets answered in time.", summary.received)
    if summary.loss_ratio is not None:
        metrics.add(
            "scout_probe_loss_ratio",
            "Share of packets sent that went unanswered (0 to 1).",
            summary.loss_ratio,
        )
    for name, documentation, value in (
        ("scout_probe_rtt_min_seconds", "Shortest round trip.", summary.min),
        ("scout_probe_rtt_avg_seconds", "Mean round trip.", summary.avg),
        ("scout_probe_rtt_max_seconds", "Longest round trip.", summary.max),
        (
            "scout_probe_rtt_stddev_seconds",
            "Population standard deviation of the round trips.",
            summary.stddev,
        ),
        (
            "scout_probe_jitter_seconds",
            "Mean absolute difference of successive round trips.",
            summary.jitter,
        ),
    ):
        if value is not None:
            metrics.add(name, documentation, value)


def add_address_families(metrics: Metrics, lookup_seconds: float, ip_version: int) -> None:
    metrics.add(
        "scout_probe_dns_lookup_seconds",
        "Seconds spent resolving the target's host name.",
        lookup_seconds,
    )
    metrics.add("scout_probe_ip_protocol", "IP version of the address probed (4 or 6).", ip_version)


def loss_verdict(summary: RttSummary, module: PacketModule, what: str) -> tuple[bool, str | None]:
    """Success when something answered and the loss is within the module's limit."""
    if summary.received == 0:
        return False, f"no answer to {what} ({summary.sent} sent)"
    limit = module.fail_if_loss_ratio_above
    loss = summary.loss_ratio or 0.0
    if limit is not None and loss > limit:
        return False, f"loss ratio {loss:.3g} is above fail_if_loss_ratio_above {limit:g}"
    return True, None


def earliest_expiry(certificates: Sequence[bytes]) -> float | None:
    """Unix time of the earliest notAfter among DER certificates; None if there are none."""
    expiries = []
    for der in certificates:
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        expiries.append(certificate.not_valid_after_utc.timestamp())
    return min(expiries) if expiries else None


def add_tls_expiry(metrics: Metrics, certificates: Sequence[bytes]) -> None:
    expiry = earliest_expiry(certificates)
    if expiry is not None:
        metrics.add(
            "scout_probe_tls_cert_expiry_timestamp_seconds",
            "Unix time the TLS chain first expires.",
            expiry,
        )


@dataclass(frozen=True, slots=True)
class Attempt(Generic[T]):
    """One connect or request: its result and duration, or why it failed."""

    seconds: float | None
    value: T | None = None
    error: str | None = None


async def run_attempts(
    attempt: Callable[[], Awaitable[T]],
    *,
    count: int,
    interval: float,
    attempt_timeout: float,
    deadline: float,
) -> list[Attempt[T]]:
    """Run ``attempt`` up to ``count`` times, one after another, ``interval`` apart.

    Each may take ``attempt_timeout`` seconds. Like the echo requests of a ping, an
    attempt that could not have its full timeout before ``deadline`` is not
    started, so every attempt made is judged alike; the first is always made.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    wait = min(attempt_timeout, max(deadline - start, 0.0))
    attempts: list[Attempt[T]] = []
    for i in range(count):
        due = start + i * interval
        if i and max(due, loop.time()) + wait > deadline:
            break
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        began = time.perf_counter()
        try:
            async with asyncio.timeout(wait):
                value = await attempt()
        except TimeoutError:
            attempts.append(Attempt(None, error=f"no answer within {wait:.3g}s"))
        except ProbeError as exc:
            attempts.append(Attempt(None, error=str(exc)))
        else:
            attempts.append(Attempt(time.perf_counter() - began, value))
    return attempts


def shortfall(done: int, planned: int) -> str | None:
    """A note when the deadline left room for fewer packets than the module asks."""
    if done >= planned:
        return None
    return (
        f"only {done} of {planned} packets fit before the deadline; lower count, "
        "interval_seconds or timeout_seconds, or raise the scrape timeout"
    )
