"""Top bandwidth consumers from NetFlow v5, v9 and IPFIX (``--collector.flows``).

Modules, in the order a datagram goes through them: ``listener`` (the UDP
socket and its thread), ``decoder`` (version dispatch) with ``v5``, ``v9``,
``ipfix``, ``sets`` and ``templates`` (parsers and template state),
``columns`` (IPv4 data sets as numpy columns, reduced per key in batches),
``aggregate`` (sliding-window top N, ``other``, series budget) and
``collector`` (the metric contract, with sample exposition).
"""

from exporter.collectors.flows.collector import FlowIngest, FlowsCollector

__all__ = ["FlowIngest", "FlowsCollector"]
