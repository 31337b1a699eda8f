"""The collector registry: one explicit table, from which the CLI flags are derived.

A collector named ``foo`` gets ``--collector.foo`` and ``--no-collector.foo``.
Multi-target collection (SNMP, probes, firewalls, WinRM) has its own endpoints
and is not listed here.
"""

from __future__ import annotations

from exporter.collectors.base import BaseCollector, Collector, CollectorSpec, HostView
from exporter.collectors.flows import FlowsCollector
from exporter.collectors.host import HostCollector
from exporter.collectors.netfilter import NetfilterCollector

COLLECTORS: tuple[CollectorSpec, ...] = (
    CollectorSpec(
        name="host",
        help="the local host through psutil: CPU, memory, filesystems, disks, network",
        enabled_by_default=True,
        build=HostCollector.from_config,
    ),
    CollectorSpec(
        name="netfilter",
        help="the local firewall: nftables rule counters, chain policies, conntrack "
        "(needs CAP_NET_ADMIN and the host network)",
        enabled_by_default=False,
        build=NetfilterCollector.from_config,
    ),
    CollectorSpec(
        name="flows",
        help="top bandwidth consumers from NetFlow v5/v9 and IPFIX sent to collectors.flows.listen",
        enabled_by_default=False,
        build=FlowsCollector.from_config,
    ),
)

__all__ = ["COLLECTORS", "BaseCollector", "Collector", "CollectorSpec", "HostView"]
