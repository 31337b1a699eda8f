"""What ``GET /snmp?target=&module=&auth=`` accepts, as snmp_exporter does.

``module`` defaults to ``if_mib`` and may list several, comma-separated or
repeated; ``auth`` defaults to ``public_v2`` (SNMP v2c, community ``public``),
built in like the modules, so no config file is needed. The generic handler
(``exporter.targets.handler``) reads the parameters with these values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from exporter.clients.probe_net import TargetError, parse_ip
from exporter.config import SnmpAuth
from exporter.errors import BadRequestError
from exporter.targets.kind import IPAddress, preferred_address
from exporter.targets.snmp.modules import SnmpModule
from exporter.targets.snmp.scraper import Target

DEFAULT_MODULE = "if_mib"
DEFAULT_AUTH = "public_v2"
BUILTIN_AUTHS: Mapping[str, SnmpAuth] = {
    DEFAULT_AUTH: SnmpAuth.model_validate({"type": "snmp", "version": 2, "community": "public"}),
}
MAX_MODULES_PER_SCRAPE = 20


# A host name: dot-separated labels of letters, digits, '-' and '_' (not at the ends).
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
# The longest target accepted: a DNS name (253) with a port, or a bracketed IPv6 address.
MAX_TARGET_LENGTH = 260


def parse_target(text: str) -> Target:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address; ``udp://`` optional."""
    raw = text.strip()
    if "://" in raw:
        scheme, _, raw = raw.partition("://")
        if scheme.lower() != "udp":
            raise BadRequestError(f"unsupported transport {scheme!r} in target: SNMP runs over udp")
    host, port = raw, "161"
    if raw.startswith("["):
        host, closed, rest = raw[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise BadRequestError(f"invalid target {text!r}: expected [ipv6]:port")
        if rest:
            port = rest[1:]
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise BadRequestError(f"invalid port in target {text!r}")
    try:
        # A link-local address keeps its zone (fe80::1%eth0), checked to name an interface.
        address = parse_ip(host)
    except TargetError as exc:
        raise BadRequestError(f"invalid target {text!r}: {exc}") from None
    if address is None:
        if ":" in host:
            raise BadRequestError(f"invalid target {text!r}: not an IPv6 address")
        if not _HOST_NAME.fullmatch(host):
            raise BadRequestError(f"invalid target {text!r}: expected host or host:port")
        return Target(host, int(port))
    return Target(str(address), int(port))


def target_host(target: Target, _module: SnmpModule) -> str:
    """The host the allow-lists judge."""
    return target.host


def pin_target(target: Target, addresses: Sequence[IPAddress]) -> Target:
    """The target bound to a checked address, IPv4 first as the SNMP session would pick.

    The session looks a name up again when it opens; bound to the address the
    allow-lists checked, it cannot be sent somewhere else by a DNS answer that
    changed in between.
    """
    return Target(str(preferred_address(addresses)), target.port)
