"""Targets outside the estate: public addresses, reached through the estate's way out.

An Internet probe (a public resolver, the ISP's gateway address) has no place
in the discovered graph: no neighbour table reaches it, and nobody writes an
``upstream`` label for it. What the graph does hold is where the configured
dependencies of other outside checks lead: a SaaS check depends on the ISP
uplink's port (``correlation.dependencies``). Those ports and links are the
estate's way out (:func:`gateways`), and a target whose address lies outside
every private and local range (:func:`is_outside`) that the graph cannot
otherwise place sits behind them: a saturated or cut uplink then explains its
loss, and the firewall in front of the uplink its failures.
"""

from __future__ import annotations

import functools
import ipaddress

from ai_sidecar.correlate.topology import TopologySnapshot

# Addresses that never leave a site: RFC 1918, shared (CGNAT), loopback,
# link-local, unique-local. Documentation ranges count as outside: they stand
# for public addresses in examples and test estates.
_INSIDE = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "0.0.0.0/8",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


_SURELY_INSIDE = ("10.", "192.168.")


@functools.lru_cache(maxsize=65536)
def is_outside(host: str) -> bool:
    """Whether ``host`` is an IP address outside every private and local range."""
    # Without parsing, the common cases: a name (an address starts with a digit,
    # or holds a colon), or what can only be inside 10/8 or 192.168/16, or no address.
    if not host or not (host[0].isdigit() or ":" in host) or host.startswith(_SURELY_INSIDE):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: nothing says where it is
    return not any(address.version == net.version and address in net for net in _INSIDE)


def gateways(topology: TopologySnapshot) -> tuple[str, ...]:
    """Ports and links that endpoints' dependencies lead to: the configured ways out."""
    found = {
        parent
        for child, edges in topology.parents.items()
        if child.startswith("ep:")
        for parent, _, _ in edges
        if parent.startswith(("port:", "link:"))
    }
    return tuple(sorted(found))
