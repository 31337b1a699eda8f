"""Failure scenarios: what physically happens, and the metric conditions it makes true.

Each scenario draws its own estate and its own fault (which link, which disk,
how long, how far apart) from a seeded generator, so every seed is a different
storm. A scenario writes :class:`~benchmarks.storms.prometheus.Condition`
values through a :class:`World`, each tagged with the ground-truth incident and
element it belongs to; :func:`generate` then runs them through Prometheus'
timing and Alertmanager's routing into a :class:`Storm`.

Unrelated background faults (a CRC-erroring port, a printer switched off, a
disk filling elsewhere) are sprinkled over every storm, and are the whole of
the ``background`` scenario: a correlator must keep them apart even when they
share a site and a few minutes with the main incident.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from benchmarks.storms.alertmanager import Delivery, deliver, sidecar_route
from benchmarks.storms.estate import (
    EXPORTER_JOB,
    FIREWALL_JOB,
    HTTP_JOB,
    ICMP_JOB,
    POLLED_JOBS,
    SNMP_JOB,
    TCP_JOB,
    WINRM_JOB,
    Estate,
    Link,
    Shape,
    Target,
    build_estate,
)
from benchmarks.storms.names import community_names, renamed
from benchmarks.storms.prometheus import Condition, Episode, evaluate
from benchmarks.storms.rules import RuleSpec, load_rules

MINUTE = 60.0
# The device-down alert each job raises for a target it cannot reach.
UNREACHABLE_RULE: Mapping[str, str] = {
    SNMP_JOB: "SnmpDeviceUnreachable",
    ICMP_JOB: "ProbeTargetUnreachable",
    HTTP_JOB: "ProbeTargetUnreachable",
    TCP_JOB: "ProbeTargetUnreachable",
    FIREWALL_JOB: "FirewallUnreachable",
    WINRM_JOB: "WinrmTargetUnreachable",
}


class NotApplicable(Exception):
    """The drawn estate lacks what the scenario needs; draw another."""


@dataclass(frozen=True, slots=True)
class IncidentTruth:
    """One ground-truth incident: what happened, and the elements an operator must be sent to."""

    id: str
    scenario: str
    description: str
    roots: frozenset[str]
    background: bool = False


@dataclass(frozen=True, slots=True)
class Storm:
    """A generated storm: the estate, the truth, the episodes and the deliveries."""

    scenario: str
    seed: int
    estate: Estate
    incidents: Mapping[str, IncidentTruth]
    episodes: tuple[Episode, ...]
    deliveries: tuple[Delivery, ...]
    peers: int


@dataclass(slots=True)
class World:
    """Collects the conditions and incidents of one storm."""

    estate: Estate
    rng: random.Random
    scenario: str
    conditions: list[Condition] = field(default_factory=list)
    incidents: dict[str, IncidentTruth] = field(default_factory=dict)
    # Elements a fault touches, and the targets it alerts on (but a switch
    # for a fault on one of its ports): background faults stay off them, so
    # the truth is never ambiguous (a disk filling and the spooler stopping on
    # one host could be cause and effect; a phone whose port is down cannot
    # also answer slowly).
    busy: set[str] = field(default_factory=set)
    peers: int = 1
    # When the poller itself does not answer (start, end or None): every series
    # it exports goes stale, so no rule on them can be true (see _blinded).
    blind: list[tuple[float, float | None]] = field(default_factory=list)

    def incident(self, description: str, roots: Iterable[str], *, background: bool = False) -> str:
        number = len(self.incidents) + 1
        id_ = f"{'bg' if background else 'inc'}-{number}"
        self.incidents[id_] = IncidentTruth(
            id_, self.scenario, description, frozenset(roots), background
        )
        return id_

    def add(
        self,
        rule: str,
        target: Target,
        start: float,
        end: float | None,
        incident: str,
        element: str,
        **series: str,
    ) -> None:
        if end is not None and end <= start:
            return
        root = element in self.incidents[incident].roots
        labels = {**target.labels, **series}
        self.conditions.append(Condition(rule, labels, start, end, incident, element, root))
        self.busy.add(element)
        if not element.startswith("link:"):
            self.busy.add(target.element)

    # -- physics ---------------------------------------------------------------

    def port_down(self, link: Link, start: float, end: float | None, incident: str) -> None:
        """The near end of ``link`` reports the port down (the far end cannot be asked)."""
        self.on_port("InterfaceDown", link, start, end, incident)

    def on_port(
        self, rule: str, link: Link, start: float, end: float | None, incident: str
    ) -> None:
        for target in self.estate.targets_of(f"dev:{link.upper}"):
            if target.job == SNMP_JOB:
                port = link.upper_port
                self.add(
                    rule,
                    target,
                    start,
                    end,
                    incident,
                    f"link:{link.id}",
                    ifName=port.name,
                    ifAlias=port.alias,
                    ifIndex=str(port.index),
                )

    def cut_off(
        self,
        devices: Iterable[str],
        start: float,
        end: float | None,
        incident: str,
        *,
        spread: float = 2.0,
    ) -> None:
        """Everything about ``devices`` stops answering; services elsewhere that use theirs fail."""
        rng, estate = self.rng, self.estate
        names = set(devices)
        for name in sorted(names):
            t = start + rng.uniform(0, spread)
            back = None if end is None else end + rng.uniform(0, spread) + self._boot(name)
            for target in estate.targets_of(f"dev:{name}"):
                self.add(UNREACHABLE_RULE[target.job], target, t, back, incident, target.element)
        dead = estate.services_on(names)
        for service in dead:
            for target in estate.targets_of(service.element):
                t = start + rng.uniform(0, spread)
                back = None if end is None else end + rng.uniform(10, 90) + self._boot(service.host)
                self.add("ProbeTargetUnreachable", target, t, back, incident, target.element)
        self.backends_failed({s.name for s in dead}, start, end, incident, excluded=names)

    def backends_failed(
        self,
        failed: set[str],
        start: float,
        end: float | None,
        incident: str,
        *,
        excluded: set[str] | None = None,
    ) -> None:
        """Services that use ``failed`` ones answer with errors: their checks fail."""
        rng, estate = self.rng, self.estate
        for service in estate.services.values():
            if (excluded and service.host in excluded) or not set(service.depends_on) & failed:
                continue
            for target in estate.targets_of(service.element):
                t = start + rng.uniform(10, 90)
                back = None if end is None else end + rng.uniform(5, 60)
                self.add("ProbeFailed", target, t, back, incident, service.element)

    def _boot(self, name: str) -> float:
        """How long a device takes to answer again once power or link is back."""
        kind = self.estate.devices[name].kind
        if kind in ("linux", "windows"):
            return self.rng.uniform(60, 240)
        return self.rng.uniform(0, 30)


# -- scenarios -------------------------------------------------------------------


def _outage(rng: random.Random, low: float, high: float, still: float = 0.2) -> float | None:
    """A duration in minutes, or None (still broken when the storm ends) with ``still``."""
    return None if rng.random() < still else rng.uniform(low, high) * MINUTE


def _end(start: float, duration: float | None) -> float | None:
    return None if duration is None else start + duration


def core_link_cut(world: World, t0: float) -> None:
    """The fibre between the core and a distribution switch is cut: ~30 targets behind it."""
    e, rng = world.estate, world.rng
    dists = [d for d in e.children(e.core) if e.devices[d].kind == "dist"]
    if not dists:
        raise NotApplicable
    dist = rng.choice(dists)
    link = e.links[e.devices[dist].uplink or ""]
    end = _end(t0, _outage(rng, 15, 60))
    inc = world.incident(f"fibre {link.id} to {dist} cut", [f"link:{link.id}"])
    world.port_down(link, t0, end, inc)
    world.cut_off(e.below(dist), t0, end, inc)


def wan_saturation(world: World, t0: float) -> None:
    """An ISP link saturates; Internet probes degrade before InterfaceSaturated's 15m pass."""
    e, rng = world.estate, world.rng
    link = e.links[rng.choice(e.isp_links)]
    end = t0 + rng.uniform(25, 55) * MINUTE
    inc = world.incident(f"ISP link {link.id} saturated", [f"link:{link.id}"])
    # The 5m rate crosses 90% a few minutes in, and falls back a few minutes after.
    world.on_port(
        "InterfaceSaturated", link, t0 + rng.uniform(60, 240), end + rng.uniform(60, 240), inc
    )
    if rng.random() < 0.6:
        world.on_port("InterfaceDiscards", link, t0 + rng.uniform(120, 400), end + 120, inc)
    host = link.lower
    internet = [t for t in e.targets if t.element == f"dev:{host}" and t.job == ICMP_JOB]
    saas = [t for s in e.services.values() if s.host == host for t in e.targets_of(s.element)]
    for target in internet + saas:
        # Queues fill at once: the 5m averages cross within a couple of minutes.
        world.add(
            "ProbeLatencyHigh", target, t0 + rng.uniform(30, 150), end + 60, inc, target.element
        )
        if rng.random() < 0.6:
            world.add(
                "ProbeLossHigh", target, t0 + rng.uniform(60, 240), end + 90, inc, target.element
            )
        if target.job == ICMP_JOB and rng.random() < 0.5:
            world.add(
                "ProbeJitterHigh", target, t0 + rng.uniform(30, 200), end + 60, inc, target.element
            )
        if target.job == HTTP_JOB and rng.random() < 0.5:
            start = t0 + rng.uniform(120, 900)
            world.add(
                "ProbeFailed",
                target,
                start,
                start + rng.uniform(4, 12) * MINUTE,
                inc,
                target.element,
            )


def firewall_sessions(world: World, t0: float) -> None:
    """The firewall's session table fills; new connections through it start failing."""
    e, rng = world.estate, world.rng
    fw = e.devices[e.firewall]
    table = f"sessions:{fw.name}"
    inc = world.incident(f"session table of {fw.name} full", [table, fw.element])
    full = t0 + rng.uniform(3, 12) * MINUTE
    end = full + rng.uniform(15, 40) * MINUTE
    for target in e.targets_of(fw.element):
        if target.job == FIREWALL_JOB:
            world.add("FirewallSessionTableHigh", target, t0, end, inc, table)
            if rng.random() < 0.3:  # its API is too busy to answer the scrape
                world.add(
                    "FirewallUnreachable", target, full + rng.uniform(0, 120), end, inc, fw.element
                )
    for isp in e.isp_links:
        host = e.links[isp].lower
        for service in e.services.values():
            if service.host != host:
                continue
            for target in e.targets_of(service.element):
                if rng.random() < 0.8:
                    world.add(
                        "ProbeFailed",
                        target,
                        full + rng.uniform(0, 90),
                        end + 30,
                        inc,
                        target.element,
                    )
        for target in e.targets_of(f"dev:{host}"):
            if rng.random() < 0.6:
                world.add(
                    "ProbeLossHigh",
                    target,
                    full + rng.uniform(30, 200),
                    end + 60,
                    inc,
                    target.element,
                )


def windows_disk(world: World, t0: float) -> None:
    """A Windows data volume fills; the service on it stops; its checks and its users' fail."""
    e, rng = world.estate, world.rng
    candidates = [
        s
        for s in e.services.values()
        if s.windows_service and s.windows_service != "DNS" and e.devices[s.host].kind == "windows"
    ]
    if not candidates:
        raise NotApplicable
    service = rng.choice(candidates)
    host = e.devices[service.host]
    volume = rng.choice(("D:", "E:", "C:"))
    disk = f"disk:{host.name}:{volume}"
    inc = world.incident(f"{volume} full on {host.name}, {service.windows_service} stopped", [disk])
    full = t0 + rng.uniform(2, 15) * MINUTE
    end = full + rng.uniform(15, 45) * MINUTE
    winrm = [t for t in e.targets_of(host.element) if t.job == WINRM_JOB]
    for target in winrm:
        world.add(
            "WindowsDiskAlmostFull", target, t0, end + rng.uniform(0, 300), inc, disk, volume=volume
        )
        world.add(
            "WindowsServiceStopped",
            target,
            full + rng.uniform(0, 60),
            end,
            inc,
            service.element,
            name=service.windows_service,
        )
    for target in e.targets_of(service.element):
        world.add("ProbeFailed", target, full + rng.uniform(5, 60), end + 30, inc, service.element)
    world.backends_failed({service.name}, full, end, inc)


def _branch_down(world: World, router: str, t0: float, end: float | None, why: str) -> None:
    e = world.estate
    link = e.links[e.devices[router].uplink or ""]
    inc = world.incident(f"{why} at {e.devices[router].site}", [f"dev:{router}", f"link:{link.id}"])
    world.port_down(link, t0, end, inc)
    world.cut_off(e.below(router), t0, end, inc, spread=5.0)


def two_sites(world: World, t0: float) -> None:
    """Two branch sites lose power seconds apart: two incidents on the same WAN router."""
    e, rng = world.estate, world.rng
    routers = list(e.children(e.wan_agg))
    if len(routers) < 2:
        raise NotApplicable
    first, second = rng.sample(routers, k=2)
    _branch_down(world, first, t0, _end(t0, _outage(rng, 15, 60)), "power lost")
    t1 = t0 + rng.uniform(2, 40)
    _branch_down(world, second, t1, _end(t1, _outage(rng, 15, 60)), "power lost")


def site_power(world: World, t0: float) -> None:
    """The campus loses power: its router and everything behind it, ~2,000 alerts."""
    e, rng = world.estate, world.rng
    routers = sorted(e.children(e.wan_agg), key=lambda r: len(e.below(r)))
    if not routers:
        raise NotApplicable
    _branch_down(world, routers[-1], t0, _end(t0, _outage(rng, 30, 80, still=0.4)), "power lost")


def flapping_port(world: World, t0: float) -> None:
    """A port with a bad optic goes down and up for a while: one incident, many episodes."""
    e, rng = world.estate, world.rng
    lower = [
        d.name
        for d in e.devices.values()
        if d.uplink
        and d.kind in ("access", "linux", "windows", "ap")
        and d.name != e.poller
        and e.links[d.uplink].role == "lan"
        and any(t.job == SNMP_JOB for t in e.targets_of(f"dev:{e.links[d.uplink].upper}"))
    ]
    if not lower:
        raise NotApplicable
    device = rng.choice(lower)
    link = e.links[e.devices[device].uplink or ""]
    inc = world.incident(f"port {link.id} flapping", [f"link:{link.id}"])
    t = t0
    for _ in range(rng.randint(3, 6)):
        down = rng.uniform(150, 420)
        world.port_down(link, t, t + down, inc)
        world.cut_off(e.below(device), t, t + down, inc)
        t += down + rng.uniform(30, 240)


def ha_duplicates(world: World, t0: float) -> None:
    """An access switch dies behind an Alertmanager HA pair: every group may arrive twice."""
    e, rng = world.estate, world.rng
    world.peers = 2
    switches = [d.name for d in e.devices.values() if d.kind == "access" and e.children(d.name)]
    switches = [s for s in switches if e.poller not in e.below(s)]
    if not switches:
        raise NotApplicable
    switch = rng.choice(switches)
    link = e.links[e.devices[switch].uplink or ""]
    inc = world.incident(f"{switch} died", [f"dev:{switch}", f"link:{link.id}"])
    end = _end(t0, _outage(rng, 10, 40))
    world.port_down(link, t0, end, inc)
    world.cut_off(e.below(switch), t0, end, inc)


def resolve_refire(world: World, t0: float) -> None:
    """A server crashes, comes back, and crashes again: soon after (one incident) or later (two)."""
    e, rng = world.estate, world.rng
    servers = [d.name for d in e.devices.values() if d.kind in ("linux", "windows")]
    servers = [s for s in servers if s != e.poller and e.services_on([s])]
    if not servers:
        raise NotApplicable
    server = rng.choice(servers)
    first = world.incident(f"{server} crashed", [f"dev:{server}"])
    down = rng.uniform(6, 15) * MINUTE
    world.cut_off([server], t0, t0 + down, first)
    soon = rng.random() < 0.5
    # Back within minutes: the same trouble (an operator reopens the ticket).
    gap = rng.uniform(3, 12) * MINUTE if soon else rng.uniform(45, 100) * MINUTE
    second = first if soon else world.incident(f"{server} crashed again", [f"dev:{server}"])
    # cut_off adds a boot time after the end, so the gap counts from the recovery.
    again = t0 + down + 240 + gap
    world.cut_off([server], again, again + rng.uniform(6, 15) * MINUTE, second)


def poller_failure(world: World, t0: float) -> None:
    """The exporter stops answering: every target it polls is down to Prometheus."""
    e, rng = world.estate, world.rng
    exporter = e.exporter
    if exporter is None:
        raise NotApplicable
    end = _end(t0, _outage(rng, 12, 40))
    inc = world.incident(f"exporter on {e.poller} hung", [exporter.element])
    world.blind.append((t0, end))
    world.add("TargetDown", exporter, t0, end, inc, exporter.element)
    for target in e.targets:
        if target.job in POLLED_JOBS:
            # Each /snmp, /probe ... scrape of the exporter times out: up == 0.
            world.add("TargetDown", target, t0 + rng.uniform(0, 2), end, inc, target.element)


def dns_chain(world: World, t0: float) -> None:
    """The resolver the exporter uses dies; every check by name fails as caches expire."""
    e, rng = world.estate, world.rng
    dns = e.services[e.dns_service]
    inc = world.incident(f"DNS on {dns.host} down", [dns.element])
    end = _end(t0, _outage(rng, 15, 45))
    for target in e.targets_of(dns.element):
        world.add("ProbeFailed", target, t0, end, inc, dns.element)
    if dns.windows_service:
        for target in e.targets_of(f"dev:{dns.host}"):
            if target.job == WINRM_JOB:
                world.add("WindowsServiceStopped", target, t0, end, inc, dns.element, name="DNS")
    for service in e.services.values():
        if not service.uses_dns:
            continue
        for target in e.targets_of(service.element):
            ttl = rng.choice((60, 300, 300, 900)) * rng.random()
            world.add(
                "ProbeFailed",
                target,
                t0 + ttl,
                None if end is None else end + 30,
                inc,
                service.element,
            )


def maintenance_reboot(world: World, t0: float) -> None:
    """A planned switch reboot, and an unrelated disk filling at the same site."""
    e, rng = world.estate, world.rng
    switches = [d.name for d in e.devices.values() if d.kind in ("access", "dist")]
    switches = [s for s in switches if e.poller not in e.below(s) and len(e.below(s)) > 1]
    if not switches:
        raise NotApplicable
    switch = rng.choice(switches)
    link = e.links[e.devices[switch].uplink or ""]
    inc = world.incident(f"{switch} rebooted", [f"dev:{switch}", f"link:{link.id}"])
    down = rng.uniform(200, 420)
    world.port_down(link, t0, t0 + down, inc)
    world.cut_off(e.below(switch), t0, t0 + down, inc)
    site = e.devices[switch].site
    hosts = [
        d.name for d in e.devices.values() if d.kind == "windows" and d.name not in e.below(switch)
    ]
    hosts.sort(key=lambda h: e.devices[h].site != site)  # same site first
    start = t0 + rng.uniform(-5, 5) * MINUTE
    if hosts:
        host = e.devices[hosts[0]]
        disk = f"disk:{host.name}:D:"
        other = world.incident(f"D: filling on {host.name}", [disk], background=True)
        for target in e.targets_of(host.element):
            if target.job == WINRM_JOB:
                world.add("WindowsDiskAlmostFull", target, start, None, other, disk, volume="D:")
    elif e.exporter is not None:
        disk = f"disk:{e.poller}:/var"
        other = world.incident(f"/var filling on {e.poller}", [disk], background=True)
        world.add(
            "HostFilesystemAlmostFull",
            e.exporter,
            start,
            None,
            other,
            disk,
            mountpoint="/var",
            device="/dev/sda3",
        )


def background(world: World, t0: float) -> None:
    """Two hours of unrelated small faults and nothing else."""
    del t0
    sprinkle(world, 0.0, 120 * MINUTE, count=world.rng.randint(15, 35))


# -- background faults -------------------------------------------------------------


def sprinkle(world: World, begin: float, finish: float, *, count: int) -> None:
    """``count`` unrelated single faults at random times in ``[begin, finish)``."""
    for _ in range(count):
        start = world.rng.uniform(begin, finish)
        for _attempt in range(10):
            if world.rng.choice(_BACKGROUND)(world, start):
                break


def _free_target(world: World, job: str) -> Target | None:
    """A random target of ``job`` that no main incident touches, if any."""
    targets = [t for t in world.estate.targets if t.job == job and t.element not in world.busy]
    return world.rng.choice(targets) if targets else None


def _bg_port(world: World, start: float) -> bool:
    """CRC errors or discards on a port between two switches."""
    e, rng = world.estate, world.rng
    links = [
        link
        for link in e.links.values()
        if f"link:{link.id}" not in world.busy
        and any(t.job == SNMP_JOB for t in e.targets_of(f"dev:{link.upper}"))
    ]
    if not links:
        return False
    link = rng.choice(links)
    rule = rng.choice(("InterfaceErrors", "InterfaceDiscards"))
    inc = world.incident(f"{rule} on {link.id}", [f"link:{link.id}"], background=True)
    world.on_port(rule, link, start, start + rng.uniform(17, 60) * MINUTE, inc)
    return True


def _bg_endpoint_off(world: World, start: float) -> bool:
    """Someone switches a printer or phone off: its port goes down, its ping fails."""
    e, rng = world.estate, world.rng
    endpoints = [
        d
        for d in e.devices.values()
        if d.kind == "endpoint"
        and d.element not in world.busy
        and f"link:{d.uplink}" not in world.busy
    ]
    if not endpoints:
        return False
    device = rng.choice(endpoints)
    link = e.links[device.uplink or ""]
    inc = world.incident(
        f"{device.name} switched off", [device.element, f"link:{link.id}"], background=True
    )
    end = start + rng.uniform(20, 90) * MINUTE
    world.port_down(link, start, end, inc)
    world.cut_off([device.name], start, end, inc)
    return True


def _bg_probe_slow(world: World, start: float) -> bool:
    """A far target is slow or jittery for a while (its own problem)."""
    rng = world.rng
    target = _free_target(world, ICMP_JOB)
    if target is None:
        return False
    rule = rng.choice(("ProbeLatencyHigh", "ProbeJitterHigh", "ProbeLossHigh"))
    inc = world.incident(f"{rule} to {target.instance}", [target.element], background=True)
    world.add(rule, target, start, start + rng.uniform(12, 40) * MINUTE, inc, target.element)
    return True


def _bg_app_error(world: World, start: float) -> bool:
    """A web application answers 500 after a bad deploy; nothing else is wrong."""
    rng = world.rng
    target = _free_target(world, HTTP_JOB)
    if target is None:
        return False
    inc = world.incident(f"{target.instance} failing", [target.element], background=True)
    world.add(
        "ProbeFailed", target, start, start + rng.uniform(5, 30) * MINUTE, inc, target.element
    )
    return True


def _bg_windows(world: World, start: float) -> bool:
    """A disk filling or a stopped print spooler on some Windows server."""
    rng = world.rng
    target = _free_target(world, WINRM_JOB)
    if target is None:
        return False
    host = target.element.removeprefix("dev:")
    if rng.random() < 0.5:
        volume = rng.choice(("C:", "D:", "E:"))
        disk = f"disk:{host}:{volume}"
        inc = world.incident(f"{volume} filling on {host}", [disk], background=True)
        world.add("WindowsDiskAlmostFull", target, start, None, inc, disk, volume=volume)
    else:
        element = f"svc:{host}:Spooler"
        inc = world.incident(f"Spooler stopped on {host}", [element], background=True)
        world.add(
            "WindowsServiceStopped",
            target,
            start,
            start + rng.uniform(5, 60) * MINUTE,
            inc,
            element,
            name="Spooler",
        )
    return True


def _bg_module(world: World, start: float) -> bool:
    """A switch stops answering one SNMP module (a view change); it is up."""
    target = _free_target(world, SNMP_JOB)
    if target is None:
        return False
    inc = world.incident(
        f"SNMP module failing on {target.instance}", [target.element], background=True
    )
    world.add("SnmpModuleFailed", target, start, None, inc, target.element, module="system")
    return True


def _bg_poller_host(world: World, start: float) -> bool:
    """The exporter's own host runs low on memory or disk (psutil, on /metrics)."""
    e, rng = world.estate, world.rng
    exporter = e.exporter
    if exporter is None or exporter.element in world.busy:
        return False
    if rng.random() < 0.5:
        element = f"mem:{e.poller}"
        inc = world.incident(f"memory low on {e.poller}", [element], background=True)
        world.add(
            "HostMemoryLow", exporter, start, start + rng.uniform(6, 30) * MINUTE, inc, element
        )
    else:
        element = f"disk:{e.poller}:/var/log"
        inc = world.incident(f"/var/log filling on {e.poller}", [element], background=True)
        world.add(
            "HostFilesystemAlmostFull",
            exporter,
            start,
            None,
            inc,
            element,
            mountpoint="/var/log",
            device="/dev/sda2",
        )
    return True


_BACKGROUND: tuple[Callable[[World, float], bool], ...] = (
    _bg_port,
    _bg_endpoint_off,
    _bg_probe_slow,
    _bg_app_error,
    _bg_windows,
    _bg_module,
    _bg_poller_host,
)


# -- generation --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named fault, the estate it needs, and how long the storm runs (minutes)."""

    name: str
    build: Callable[[World, float], None]
    shape: Shape = field(default_factory=Shape)
    horizon: float = 120.0


SCENARIOS: Mapping[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("core_link_cut", core_link_cut),
        Scenario("wan_saturation", wan_saturation),
        Scenario("firewall_sessions", firewall_sessions),
        Scenario("windows_disk", windows_disk, Shape(servers_per_access=(1, 3))),
        Scenario("two_sites", two_sites),
        Scenario("flapping_port", flapping_port),
        Scenario("ha_duplicates", ha_duplicates),
        Scenario("background", background),
        Scenario("resolve_refire", resolve_refire, horizon=240.0),
        Scenario(
            "site_power",
            site_power,
            Shape(aps_per_access=(4, 10), endpoints_per_access=(14, 24), big_site_access=60),
        ),
        Scenario("poller_failure", poller_failure),
        Scenario("dns_chain", dns_chain),
        Scenario("maintenance_reboot", maintenance_reboot),
    )
}


def generate(
    scenario: str,
    seed: int,
    *,
    shape: Shape | None = None,
    rules: Mapping[str, RuleSpec] | None = None,
    noise: bool = True,
    earlier: int = 0,
    names: str = "shipped",
) -> Storm:
    """Storm number ``seed`` of ``scenario``; the same arguments give the same storm.

    ``earlier`` > 0: the ``earlier``-th storm of the same kind that hit the
    same estate before (on an earlier day): the estate is storm ``seed``'s,
    the fault, its timing and the background faults are drawn afresh. Their
    incidents are the history co-firing edges are learned from.

    ``names="community"``: the alerts carry the names one community rule set
    gives them, drawn from ``seed`` (:mod:`benchmarks.storms.names`), and no
    ``layer`` label; the fault and when each alert fires are the same.
    """
    spec = SCENARIOS[scenario]
    rng = random.Random(f"{scenario}/{seed}")
    for _attempt in range(50):
        estate = build_estate(rng, shape or spec.shape)
        struck = _strike(spec, estate, rng)
        if struck is not None:
            break
    else:
        raise RuntimeError(f"{scenario}: no estate drawn for seed {seed} fits")
    if earlier:
        rng = random.Random(f"{scenario}/{seed}/earlier/{earlier}")
        for _attempt in range(50):
            struck = _strike(spec, estate, rng)
            if struck is not None:
                break
        else:
            raise RuntimeError(f"{scenario}: seed {seed}'s estate fits no earlier storm")
    world, t0 = struck
    if noise and scenario != "background":
        sprinkle(world, 0.0, t0 + 40 * MINUTE, count=rng.randint(1, 3))
    horizon = spec.horizon * MINUTE
    conditions = [
        _clip(piece, horizon)
        for c in world.conditions
        for piece in _blinded(c, world.blind)
        if piece.start < horizon
    ]
    episodes = evaluate(conditions, rules or load_rules(), rng)
    if names == "community":
        episodes = renamed(episodes, community_names(scenario, seed))
        episodes.sort(key=lambda e: (e.fired_at, e.fingerprint))
    elif names != "shipped":
        raise ValueError(f"unknown naming {names!r}")
    deliveries = deliver(episodes, sidecar_route(), rng, peers=world.peers)
    fired = {episode.incident for episode in episodes}
    incidents = {id_: truth for id_, truth in world.incidents.items() if id_ in fired}
    return Storm(scenario, seed, estate, incidents, tuple(episodes), tuple(deliveries), world.peers)


def _strike(spec: Scenario, estate: Estate, rng: random.Random) -> tuple[World, float] | None:
    """The scenario's fault on ``estate`` and its start; None if the estate lacks what it needs."""
    world = World(estate, rng, spec.name)
    world.peers = 2 if rng.random() < 0.25 else 1
    t0 = rng.uniform(5, 15) * MINUTE
    try:
        spec.build(world, t0)
    except NotApplicable:
        return None
    return world, t0


# Series the exporter serves: its own /metrics and every target it polls.
_EXPORTED_JOBS = frozenset({*POLLED_JOBS, EXPORTER_JOB})


def _blinded(condition: Condition, blind: Iterable[tuple[float, float | None]]) -> list[Condition]:
    """The parts of ``condition`` Prometheus can see while the poller is out.

    A scrape of a hung exporter fails, so every series it serves goes stale and
    no rule on them can be true: an alert firing on them resolves, one pending
    starts over once scrapes succeed again. ``up`` itself (TargetDown) is
    Prometheus's own series and stays visible.
    """
    if condition.rule == "TargetDown" or condition.labels.get("job") not in _EXPORTED_JOBS:
        return [condition]
    pieces = [condition]
    for begin, finish in blind:
        kept = []
        for piece in pieces:
            end = math.inf if piece.end is None else piece.end
            stop = math.inf if finish is None else finish
            if end <= begin or piece.start >= stop:
                kept.append(piece)
                continue
            if piece.start < begin:
                kept.append(replace(piece, end=begin))
            if end > stop:
                kept.append(replace(piece, start=stop))
        pieces = kept
    return pieces


def _clip(condition: Condition, horizon: float) -> Condition:
    """Conditions still true at the horizon stay open: the storm ends, the world does not."""
    if condition.end is not None and condition.end > horizon:
        return replace(condition, end=None)
    return condition
