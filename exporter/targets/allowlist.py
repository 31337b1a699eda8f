"""Per-module and per-auth target allow-lists: what ``allowed_targets`` may say, and matching.

A module (``/probe``, ``/snmp``) or an SNMP auth may carry
``allowed_targets``, a list of entries; a scrape that uses it goes ahead only
if the target is admitted by every list involved (the module's and the auth's).
Entries are:

* ``any``: every target, as if there were no list. Standing alone only; it is
  how a module that carries a secret opts out, and is dangerous (see
  ``docs/security.md``).
* a network, ``10.0.0.0/8`` or ``2001:db8::/32`` (host bits must be zero), or a
  single address, ``192.0.2.7`` (a /32 or /128);
* a host name, ``switch1.example.net``: that name only; or ``*.example.net``:
  every name below ``example.net`` at any depth (``a.example.net``,
  ``a.b.example.net``), not ``example.net`` itself. ``*`` is allowed only as the
  whole leftmost label. Names compare case-insensitively, without a trailing
  dot, and internationalised names as their ASCII (``xn--``) form. A pattern
  whose last label is a number is refused: it would read like an IP address.

How a target is judged:

* An address (``192.0.2.7``, ``[2001:db8::1]``, an IPv4-mapped IPv6 address,
  which is matched as its IPv4 address, or the forms the C resolver reads as
  IPv4, ``2130706433``, ``0x7f.1``, ``127.1``, which are converted first) is
  admitted if a network entry contains it. Name patterns never match an address.
* A name is admitted if a name entry matches the name the caller gave;
  otherwise it is looked up, and admitted only if every address it resolves to
  is in a network entry.
* The address checked must be the one connected to, or a name that resolves to
  a listed address when checked and to another one a second later (DNS
  rebinding) would get through. So the check is made again where the
  connection is made, on the address actually used (``AllowList.admits``): the
  probers check the address they resolved before they send anything, the HTTP
  prober checks the peer of every connection it opens (each redirect's too)
  before the request is written, and ``/snmp`` pins the scrape to the address
  it checked (see ``exporter.targets.handler``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import PlainSerializer, PlainValidator

from exporter.clients.probe_net import ProbeError, TargetError, lookup, parse_ip, unzoned
from exporter.errors import BadRequestError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ANY = "any"

# The spellings the C library's inet_aton reads as one IPv4 address: one to four
# parts, each decimal, octal (leading 0) or hex (0x).
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_NAME_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class AddressNotAllowedError(ProbeError):
    """The address a probe was about to connect to is not in the module's allow-list."""


class TargetRefusedError(BadRequestError):
    """A target that an allow-list does not admit (HTTP 403).

    ``allow_list`` names the list that refused it (``modules.api_health``) and
    ``host`` the host the caller gave, for the metric and the log line.
    """

    http_status = 403

    def __init__(self, message: str, *, allow_list: str, host: str) -> None:
        super().__init__(message)
        self.allow_list = allow_list
        self.host = host


def _address(text: str) -> IPAddress | None:
    """``text`` as an address, zone dropped and IPv4-mapped IPv6 as IPv4; else ``None``.

    The zone (``fe80::1%eth0``) says which link to reach the address on, not
    which address it is, so lists judge ``fe80::1``; a zone that is no
    interface name (``ValueError``) is refused, never judged without it.
    """
    try:
        parsed = parse_ip(text)
    except TargetError as exc:
        raise ValueError(str(exc)) from None
    if parsed is None:
        return None
    address = unzoned(parsed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical_host(text: str) -> IPAddress | str:
    """The host as an allow-list compares it: an address, or a lower-case ASCII name.

    Brackets and a trailing dot are dropped; the numeric IPv4 spellings that the
    C resolver accepts become the address they stand for, so they are judged by
    the network entries and cannot pass as names. Raises ``ValueError`` for
    something that is neither.
    """
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    address = _address(host)
    if address is not None:
        return address
    host = host.removesuffix(".")
    labels = host.split(".")
    if 1 <= len(labels) <= 4 and all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise ValueError(f"{text!r} is neither an IP address nor a host name") from None
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"{text!r} is not a valid host name") from None
    if not all(_NAME_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{text!r} is not a valid host name")
    return name


@dataclass(frozen=True, slots=True)
class NamePattern:
    """``name`` exactly, or (``below``) every name under it."""

    name: str
    below: bool

    def matches(self, name: str) -> bool:
        return name.endswith(f".{self.name}") if self.below else name == self.name

    def __str__(self) -> str:
        return f"*.{self.name}" if self.below else self.name


def _network(text: str) -> IPNetwork:
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"{text!r} has host bits set (did you mean {loose}?)") from None
        raise ValueError(f"{text!r} is not a network (address/prefix length)") from None
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None and network.prefixlen >= 96:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _pattern(text: str) -> NamePattern:
    if text == "*":
        raise ValueError(f"'*' alone is no pattern: {ANY!r} admits every target")
    below = text.startswith("*.")
    rest = text[2:] if below else text
    if "*" in rest:
        raise ValueError(f"{text!r}: '*' may only be the whole first label, as in *.example.net")
    try:
        name = canonical_host(rest)
    except ValueError:
        raise ValueError(f"{text!r} is not a network, an address or a host name") from None
    if not isinstance(name, str) or _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        raise ValueError(f"{text!r} ends in a number: write an address or a network instead")
    return NamePattern(name, below)


@dataclass(frozen=True, slots=True)
class AllowList:
    """The parsed ``allowed_targets`` of one module or auth."""

    networks: tuple[IPNetwork, ...] = ()
    names: tuple[NamePattern, ...] = ()
    everything: bool = False

    @classmethod
    def parse(cls, entries: Sequence[str]) -> AllowList:
        """Raises ``ValueError`` naming the first entry that is not one of the forms above."""
        if not entries:
            raise ValueError(
                "an empty list admits no target: list networks and host names, "
                "or leave allowed_targets out"
            )
        if ANY in entries:
            if len(entries) > 1:
                raise ValueError(f"{ANY!r} admits every target, so it must stand alone")
            return cls(everything=True)
        networks: list[IPNetwork] = []
        names: list[NamePattern] = []
        for entry in entries:
            if "%" in entry:
                # Lists judge addresses without their zone; one here would read as if it
                # admitted one link only, while it admitted the address on every link.
                raise ValueError(
                    f"{entry!r}: an allowed_targets entry takes no zone (%interface); "
                    "write the address or network alone (targets are matched without theirs)"
                )
            if "/" in entry:
                networks.append(_network(entry))
            elif (address := _address(entry)) is not None:
                networks.append(ipaddress.ip_network(address))
            else:
                names.append(_pattern(entry))
        return cls(tuple(networks), tuple(names))

    def entries(self) -> list[str]:
        """The list as it would be written in the config."""
        if self.everything:
            return [ANY]
        return [str(n) for n in self.networks] + [str(p) for p in self.names]

    def admits_address(self, address: IPAddress) -> bool:
        return self.everything or any(address in network for network in self.networks)

    def admits_name(self, name: str) -> bool:
        """``name`` must be canonical (see ``canonical_host``)."""
        return self.everything or any(pattern.matches(name) for pattern in self.names)

    def admits(self, host: str, address: IPAddress) -> bool:
        """Whether a connection to ``address``, for the name or address ``host``, may go ahead."""
        try:
            canonical = canonical_host(host)
        except ValueError:
            canonical = ""
        if isinstance(canonical, str) and canonical and self.admits_name(canonical):
            return True
        checked = _address(str(unzoned(address)))
        return checked is not None and self.admits_address(checked)

    def check(self, host: str, address: IPAddress) -> None:
        """Raise ``AddressNotAllowedError`` unless ``admits``: the probers' connect-time check."""
        if not self.admits(host, address):
            raise AddressNotAllowedError(
                f"{address} (for {host}) is not in the module's allowed_targets; not connecting"
            )


def _validate(value: object) -> AllowList:
    if isinstance(value, AllowList):
        return value
    if not isinstance(value, list):
        raise ValueError(
            'should be a list of networks and host names, as in [10.0.0.0/8, "*.example.net"]'
        )
    for entry in value:
        if not isinstance(entry, str):
            # YAML 1.1 reads some IPv6 addresses (1:2:3:4:5:6:7:8) as base-60 numbers.
            raise ValueError(f"entry {entry!r} is not text: put it in quotes")
    return AllowList.parse(value)


# The config field; ``None`` (left out) means no list at all.
AllowedTargets = Annotated[
    AllowList, PlainValidator(_validate), PlainSerializer(AllowList.entries, return_type=list[str])
]


def needs_allow_list(what: str) -> str:
    """The validation error for a secrets-bearing module or auth without ``allowed_targets``."""
    return (
        f"{what} to whatever target a caller names: add allowed_targets, "
        'the networks and host names it may be used with (as in [10.0.0.0/8, "*.example.net"]), '
        "or allowed_targets: [any] to allow every target (dangerous: see docs/security.md)"
    )


@dataclass(frozen=True, slots=True)
class Admission:
    """A target the allow-lists admitted, and the addresses it was admitted at.

    ``addresses`` is the target's own address, or every address its name
    resolved to; empty when every list admitted the name itself.
    """

    host: IPAddress | str
    addresses: tuple[IPAddress, ...] = ()


async def admit(
    host: str, lists: Sequence[tuple[str, AllowList]], deadline: float | None = None
) -> Admission:
    """Judge ``host`` against every ``(owner, list)``; all must admit it.

    Raises ``TargetRefusedError`` (403) if one does not, ``BadRequestError``
    for a host that is not one, and ``ResolveError`` when a name that must be
    checked by its addresses does not resolve.
    """
    try:
        canonical = canonical_host(host)
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None
    if not isinstance(canonical, str):
        for owner, allowed in lists:
            if not allowed.admits_address(canonical):
                raise _refused(owner, host, f"{canonical} is not listed")
        return Admission(canonical, (canonical,))
    by_address = [(o, a) for o, a in lists if not a.admits_name(canonical)]
    if not by_address:
        return Admission(canonical)
    addresses = await lookup(canonical, deadline)
    normalised = tuple(a for a in (_address(str(unzoned(a))) for a in addresses) if a)
    for owner, allowed in by_address:
        outside = [a for a in normalised if not allowed.admits_address(a)]
        if outside or not normalised:
            shown = ", ".join(map(str, outside)) or "no address"
            raise _refused(owner, host, f"it resolves to {shown}, which is not listed")
    return Admission(canonical, normalised)


def _refused(owner: str, host: str, why: str) -> TargetRefusedError:
    return TargetRefusedError(
        f"target {host!r} is not allowed by {owner}.allowed_targets: {why}",
        allow_list=owner,
        host=host,
    )
