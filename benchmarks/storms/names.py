"""Storms as users who bring community alert rules would see them.

Scout's own rules name their alerts (``InterfaceDown``, ``ProbeTargetUnreachable``)
and some carry a ``layer`` label. Many users run the rule sets everyone copies
instead (awesome-prometheus-alerts, the node_exporter and snmp_exporter mixins,
blackbox examples, rules of their own making), whose alerts have other names
and no ``layer``. The correlator then decides each alert's layer from its name
alone, so the storm replay is also run with those names (``--names community``)
to measure how far that carries.

:data:`COMMUNITY` lists, for every alert a storm may raise, names that public
rule sets and common practice give the same condition. One storm uses one rule
set: :func:`community_names` draws one name per alert from the storm's seed,
all distinct (two conditions one rule set names alike would be one series), and
:func:`renamed` puts them on the episodes without the ``layer`` label, every
other label kept.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import replace

from benchmarks.storms.prometheus import Episode, fingerprint

# The names each catalogue alert goes by elsewhere, the shipped one first.
COMMUNITY: Mapping[str, tuple[str, ...]] = {
    # A port's oper status down (IF-MIB ifOperStatus).
    "InterfaceDown": (
        "InterfaceDown",
        "IfOperStatusDown",
        "SnmpInterfaceDown",
        "NetworkInterfaceDown",
        "IfDown",
        "PortDown",
        "LinkDown",
        "InterfaceOperStatusDown",
        "SwitchPortDown",
        "IfOperDown",
    ),
    "InterfaceSaturated": (
        "InterfaceSaturated",
        "HighBandwidthUsage",
        "InterfaceHighUtilization",
        "HostNetworkInterfaceSaturated",
        "InterfaceBandwidthHigh",
        "IfHighUtilisation",
        "InterfaceTrafficHigh",
        "LinkUtilizationHigh",
    ),
    "InterfaceErrors": (
        "InterfaceErrors",
        "HostNetworkReceiveErrors",
        "NodeNetworkReceiveErrs",
        "NodeNetworkTransmitErrs",
        "IfInErrors",
        "InterfaceCrcErrors",
        "SnmpInterfaceErrors",
        "InterfaceErrorRateHigh",
    ),
    "InterfaceDiscards": (
        "InterfaceDiscards",
        "IfInDiscards",
        "IfOutDiscards",
        "InterfaceDrops",
        "InterfacePacketDrops",
        "InterfaceOutputDrops",
        "SnmpInterfaceDiscards",
    ),
    # A service's check failing (blackbox http/tcp probe_success == 0).
    "ProbeFailed": (
        "ProbeFailed",
        "BlackboxProbeFailed",
        "BlackboxProbeHttpFailure",
        "HttpProbeFailed",
        "TcpProbeFailed",
        "HttpCheckFailed",
        "EndpointDown",
        "WebsiteDown",
        "ServiceCheckFailed",
        "BlackboxProbeFailure",
    ),
    "ProbeLossHigh": (
        "ProbeLossHigh",
        "PingPacketLoss",
        "HighPacketLoss",
        "IcmpPacketLoss",
        "PacketLossHigh",
        "BlackboxProbePacketLoss",
    ),
    "ProbeLatencyHigh": (
        "ProbeLatencyHigh",
        "BlackboxSlowProbe",
        "BlackboxProbeSlowPing",
        "BlackboxProbeSlowHttp",
        "PingLatencyHigh",
        "HighLatency",
        "IcmpRttHigh",
        "SlowResponse",
    ),
    "ProbeJitterHigh": (
        "ProbeJitterHigh",
        "PingJitterHigh",
        "HighJitter",
        "IcmpJitterHigh",
        "BlackboxProbeJitterHigh",
    ),
    # Prometheus's own up == 0 for a scrape target.
    "TargetDown": (
        "TargetDown",
        "InstanceDown",
        "PrometheusTargetMissing",
        "NodeDown",
        "HostDown",
        "ExporterDown",
        "ScrapeTargetDown",
        "PrometheusTargetDown",
    ),
    "ExporterCollectorFailed": (
        "ExporterCollectorFailed",
        "NodeCollectorFailed",
        "CollectorScrapeFailed",
        "ExporterScrapeFailed",
    ),
    "HostCpuHigh": (
        "HostCpuHigh",
        "HostHighCpuLoad",
        "NodeCPUHighUsage",
        "HighCpuUsage",
        "CpuUsageHigh",
    ),
    "HostMemoryLow": (
        "HostMemoryLow",
        "HostOutOfMemory",
        "NodeMemoryHighUtilization",
        "HighMemoryUsage",
        "LowMemory",
        "HostMemoryUnderMemoryPressure",
    ),
    "HostFilesystemAlmostFull": (
        "HostFilesystemAlmostFull",
        "HostOutOfDiskSpace",
        "NodeFilesystemAlmostOutOfSpace",
        "NodeFilesystemSpaceFillingUp",
        "DiskSpaceLow",
        "FilesystemFull",
        "DiskAlmostFull",
    ),
    # The SNMP agent does not answer (snmp_exporter's scrape fails).
    "SnmpDeviceUnreachable": (
        "SnmpDeviceUnreachable",
        "SnmpDown",
        "SnmpTargetDown",
        "SnmpDeviceDown",
        "SnmpNotResponding",
        "SnmpAgentUnreachable",
        "NetworkDeviceDown",
        "DeviceNotResponding",
        "SnmpNoResponse",
        "SwitchOffline",
    ),
    "SnmpModuleFailed": (
        "SnmpModuleFailed",
        "SnmpCollectionFailed",
        "SnmpWalkFailed",
        "SnmpScrapeFailed",
    ),
    # A ping (or a check of a service on the device) gets no answer at all.
    "ProbeTargetUnreachable": (
        "ProbeTargetUnreachable",
        "HostUnreachable",
        "PingDown",
        "IcmpDown",
        "PingFailed",
        "IcmpProbeFailed",
        "HostNotResponding",
        "NoPingResponse",
        "PingUnreachable",
        "BlackboxProbeFailed",
    ),
    "FirewallUnreachable": (
        "FirewallUnreachable",
        "FirewallDown",
        "FortigateDown",
        "FortigateUnreachable",
        "PfsenseDown",
        "OpnsenseDown",
        "FirewallNotResponding",
        "FirewallApiUnreachable",
        "FirewallOffline",
    ),
    "FirewallSessionTableHigh": (
        "FirewallSessionTableHigh",
        "ConntrackTableFull",
        "NodeHighNumberConntrackEntriesUsed",
        "HostConntrackLimit",
        "PfsenseStateTableFull",
        "FortigateSessionTableHigh",
    ),
    "WinrmTargetUnreachable": (
        "WinrmTargetUnreachable",
        "WindowsHostDown",
        "WindowsServerDown",
        "WinrmDown",
        "WinrmUnreachable",
        "WindowsExporterDown",
        "WindowsNotResponding",
        "WindowsServerOffline",
    ),
    "WindowsDiskAlmostFull": (
        "WindowsDiskAlmostFull",
        "WindowsServerDiskSpaceUsage",
        "WindowsLogicalDiskFull",
        "WindowsDiskFull",
        "LowDiskSpace",
    ),
    "WindowsServiceStopped": (
        "WindowsServiceStopped",
        "WindowsServerServiceDown",
        "WindowsServiceDown",
        "WindowsServiceNotRunning",
        "ServiceStopped",
    ),
}

NAMINGS = ("shipped", "community")
LAYER_LABEL = "layer"


def community_names(scenario: str, seed: int) -> dict[str, str]:
    """One community name per catalogue alert, drawn from storm ``seed``: one user's rule set.

    The storm's earlier storms (co-firing history) share it, as the same
    estate runs the same rules; the draw has its own generator, so the storm
    itself (fault, timing, deliveries) is the one the shipped names give.
    """
    rng = random.Random(f"{scenario}/{seed}/names")
    chosen: dict[str, str] = {}
    for rule in sorted(COMMUNITY):
        free = [name for name in COMMUNITY[rule] if name not in chosen.values()]
        chosen[rule] = rng.choice(free)
    return chosen


def renamed(episodes: Iterable[Episode], names: Mapping[str, str]) -> list[Episode]:
    """``episodes`` under ``names`` (shipped alertname to the new one), without ``layer``."""
    found = []
    for episode in episodes:
        labels = {k: v for k, v in episode.labels.items() if k != LAYER_LABEL}
        labels["alertname"] = names.get(labels["alertname"], labels["alertname"])
        found.append(replace(episode, labels=labels, fingerprint=fingerprint(labels)))
    return found
