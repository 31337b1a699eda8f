"""The dependency graph correlation follows: what depends on what, as one frozen snapshot.

A :class:`TopologySnapshot` is built (:func:`build_snapshot`) from five sources,
each given as plain label rows so that Prometheus query results, a config file
and a test fixture all feed the same code:

- **neighbours**: LLDP/CDP rows, one per ``scout_lldp_neighbor_info`` series
  (``instance`` of the reporting device, ``local_port``, ``remote_sysname``,
  ``remote_port``, ``remote_address``, ``remote_chassis_id``). They say which
  devices are cabled to which, not which way is up: each connected part is
  oriented from its roots (the configured ``roots``, else the device the poller
  runs on, else the part's centre), so the device further from the root depends
  on the link, and the link on the device nearer the root. With them, the
  polled devices' own identities (``scout_lldp_local_info``: ``instance``,
  ``local_sysname``, ``local_chassis_id``) say which scrape target a
  neighbour's name, address or chassis id is;
- **targets**: one row per scrape target (``up``'s labels): a target with an
  ``upstream`` or ``via`` label sits behind the device it names;
- **pollers**: the exporter instances, and the jobs whose targets they reach;
  a polled target depends on its poller, which only an *unavailable* poller
  explains (a full disk on the poller explains nothing about its targets).
  Where an alert names the exporter its target is scraped through
  (``scout_exporter``, which the shipped scrape configs set on every series,
  the exporter's own included) and a poller of its job carries that value, the
  target depends on that poller only: of two exporters under one Prometheus,
  each explains its own targets, not the other's. An alert without the label
  (AnomalyDetected keeps job and instance) takes it from its target's ``up``
  row, where that names one exporter;
- **dependencies**: explicit edges from the sidecar config (``from`` and ``to``
  as ``job``/``instance``/``ifName`` values);
- **addresses**: what the exporter's scrapes resolved each target's name to
  (``scout_target_address_info``: ``instance``, ``address``), so that a host
  polled by name and a check written with its address (``http://10.4.0.172/``)
  or with another name resolving to it are one device. A name joins its
  address only when it resolved to exactly one usable address (not loopback,
  link-local, multicast or unspecified): a name on several addresses (round
  robin, or two hosts sharing a short name) joins none of them.

Nodes are element ids: ``dev:NAME`` (a device, by its short name or address),
``port:DEV|IFNAME``, ``link:A|PA~B|PB`` (both ends' ports name the link) and
``ep:INSTANCE`` (a URL or ``host:port`` endpoint, which runs on its host).
Device names are unified across the forms an estate writes them in (FQDN,
short name, letter case, the management address a neighbour advertised, the
sysname and chassis id a polled device reports of itself); two devices with
the same short name in different domains are taken as one, a limit of the
LLDP data (``remote_sysname`` is often a short name). A device's node is named
after its scrape target where it has one. Port names are matched by
:func:`~ai_sidecar.correlate.ports.port_key` (``GigabitEthernet1/0/24`` is
``Gi1/0/24``) and shown as the device itself reports them.

Each edge has a strength saying which failures travel along it:
:data:`POLL` (only a device or link failure of the parent explains the
child), :data:`PATH` (also network-layer trouble: loss, saturation) and
:data:`USES` (anything: a disk filling explains the service on it). A node's
ancestors carry the strength of the strongest path to them, a path being as
strong as its weakest edge.

The snapshot is a value: building it does the I/O-free work, and the
correlator only reads it. Every node's ancestor set is computed while building
(a snapshot is built on the refresh schedule, not per alert); a snapshot put
together by hand fills its memo on first use.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from ai_sidecar.correlate.ports import is_port_name, port_key

# Edge strengths, weakest first: which failures of the parent explain the child.
POLL = 0
PATH = 1
USES = 2
EDGE_WHY = {POLL: "polled by", PATH: "reached through", USES: "runs on or uses"}

# Labels naming the device a target sits behind (file_sd target-group labels).
UPSTREAM_LABELS = ("upstream", "via")
# The label naming the exporter a series was scraped through (its address;
# prometheus/prometheus.yml sets it on the exporter's own series too).
EXPORTER_LABEL = "scout_exporter"
# Labels naming an interface of the alert's device (ifAlias, free text, is
# used only when it names a port the graph knows).
INTERFACE_LABELS = ("ifName", "interface", "ifDescr")

Ancestors = Mapping[str, int]
_EMPTY: Mapping[str, int] = {}


def is_ip(text: str) -> bool:
    if not text or not (text[0].isdigit() or ":" in text):
        return False  # the common case, without the cost of a failed parse
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=65536)
def split_instance(instance: str) -> tuple[str, bool]:
    """``(host, is_endpoint)``: the host part, and whether a URL or port makes it a service."""
    text = instance.strip().lower()
    if "://" in text:
        host = urlsplit(text).hostname or ""
        return host, True
    if text.startswith("[") and "]" in text:  # [v6]:port
        host, _, rest = text[1:].partition("]")
        return host, rest.startswith(":")
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port.isdigit()
    return text, False


@functools.lru_cache(maxsize=65536)
def name_key(name: str) -> str:
    """A device name reduced to what LLDP and file_sd agree on: an address, or the short name."""
    text = name.strip().lower().rstrip(".")
    if not text:
        return text
    if is_ip(text):
        return str(ipaddress.ip_address(text))  # one spelling: 2001:db8:0:0::1 is 2001:db8::1
    return text.split(".", 1)[0]


# The device end of a port whose far end no neighbour row names: an alert on
# such a port may be the one the targets behind the device (by their
# ``upstream``/``via`` label, not by a cable the graph knows) are reached through.
ANY_PORT = "*"


def any_port(device: str) -> str:
    """The node standing for "some port of ``device`` the graph does not know" (``dev:`` node)."""
    return f"port:{device[4:]}|{ANY_PORT}"


def is_any_port(node: str) -> bool:
    return node.endswith("|" + ANY_PORT) and node.startswith("port:")


def cabled_devices(edges: Iterable[tuple[str, int, str]]) -> set[str]:
    """The devices at either end of the links among ``edges``' parents."""
    return {
        "dev:" + end.partition("|")[0]
        for parent, _, _ in edges
        if parent.startswith("link:")
        for end in parent[5:].split("~")
    }


def any_port_edges(
    edges: Iterable[tuple[str, int, str]], cabled: Iterable[tuple[str, int, str]] = ()
) -> list[tuple[str, int, Mapping[str, int]]]:
    """For each ``behind`` edge to a device, the unknown ports of that device, as ancestors.

    A target an ``upstream`` label puts behind a switch is reached through one
    of the switch's ports, which one nothing says: a down port of that switch
    that no neighbour row places may be it. Not for a device the graph cables
    to the switch (``cabled``: the node's own edges, links included), whose port is known.
    """
    behind = [
        (parent, strength)
        for parent, strength, why in edges
        if why == "behind" and parent.startswith("dev:")
    ]
    if not behind:
        return []
    cabled_to = cabled_devices(cabled)
    return [
        (any_port(parent), strength, _EMPTY)
        for parent, strength in behind
        if parent not in cabled_to
    ]


def element_text(node: str) -> str:
    """An element id as people say it: ``core-1 Gi1/0/24``, ``sw-dist-3``, a URL."""
    kind, _, rest = node.partition(":")
    if kind == "link":
        return " - ".join(end.replace("|", " ") for end in rest.split("~"))
    if kind == "port":
        return rest.replace("|", " ")
    return rest


@dataclass(frozen=True, slots=True)
class Poller:
    """An exporter instance (``job``/``instance`` of its own scrape) and the jobs it reaches.

    ``address`` is the :data:`EXPORTER_LABEL` value of its own scrape, the one
    its targets' series carry; empty where its scrape config sets none.
    """

    instance: str
    polls: re.Pattern[str]
    address: str = ""


@dataclass(frozen=True, slots=True)
class Dependency:
    """An explicit edge: the target ``source`` depends on ``target`` (label values)."""

    source: Mapping[str, str]
    target: Mapping[str, str]
    why: str = ""


@dataclass(slots=True)
class TopologySnapshot:
    """The graph at one moment; read-only once built (only memo caches fill in)."""

    parents: Mapping[str, tuple[tuple[str, int, str], ...]] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, str] = field(default_factory=dict)
    pollers: tuple[Poller, ...] = ()
    # (job, instance) -> the exporter its scrapes go through, from the target
    # rows: for an alert that kept neither label's scrape labels but those two
    # (AnomalyDetected, an aggregating rule of one's own).
    exporter_of: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # Nodes something depends on ...
    upstream_of: frozenset[str] = frozenset()
    # ... and devices something is reached through (a path edge, not a use):
    # a firewall or router, not a host whose services run on it.
    transit: frozenset[str] = frozenset()
    built_at: datetime | None = None
    edges: int = 0
    _ancestors: dict[str, Ancestors] = field(default_factory=dict)
    _polled: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    _children: dict[str, list[str]] | None = None

    @property
    def empty(self) -> bool:
        """No edge between elements is known (pollers alone place nothing)."""
        return not self.parents

    def knows(self, node: str) -> bool:
        """Whether the graph has an edge at ``node`` (its own, not label or poll edges)."""
        return node in self.parents or node in self.upstream_of

    def device(self, name: str) -> str:
        """The device node of ``name`` in any of its written forms."""
        key = name_key(name)
        return "dev:" + self.aliases.get(key, key)

    def node_of(self, labels: Mapping[str, str]) -> str | None:
        """The element an alert (or target row) is about; None without an ``instance``."""
        instance = labels.get("instance", "")
        if not instance:
            return None
        host, endpoint = split_instance(instance)
        device = self.device(host) if host else None
        if device is not None:
            port = self._port_of(device[4:], labels)
            if port is not None:
                return port
        if endpoint:
            return "ep:" + instance.strip().lower().rstrip("/")
        return device

    def _port_of(self, device: str, labels: Mapping[str, str]) -> str | None:
        """The link or port an alert's interface labels name on ``device``, in any spelling."""
        named = [value for value in map(labels.get, INTERFACE_LABELS) if value]
        for interface in named:
            known = self.ports.get(f"port:{device}|{port_key(interface)}")
            if known is not None:
                return known
        alias = labels.get("ifAlias", "")
        # A description that reads as a port name, on an alert naming its own
        # port, names another port (often the far end's): it places nothing.
        if alias and not (named and is_port_name(alias)):
            known = self.ports.get(f"port:{device}|{port_key(alias)}")
            if known is not None:
                return known
        return f"port:{device}|{named[0]}" if named else None

    def label_parents(self, labels: Mapping[str, str], node: str) -> list[tuple[str, int, str]]:
        """Edges the alert's own labels give: its host, ``upstream``/``via``, its poller."""
        found: list[tuple[str, int, str]] = []
        kind = node.partition(":")[0]
        host, _ = split_instance(labels.get("instance", ""))
        if kind == "ep" and host:
            found.append((self.device(host), USES, "on"))
        elif kind == "port" and host:
            found.append((self.device(host), PATH, "on"))
        for name in UPSTREAM_LABELS:
            value = labels.get(name, "")
            if value:
                found.append((self.device(value), PATH, "behind"))
        job = labels.get("job", "")
        through = labels.get(EXPORTER_LABEL) or self.exporter_of.get(
            (job, labels.get("instance", "")), ""
        )
        for poller in self.polled_by(job, through):
            if poller != node:
                found.append((poller, POLL, "polled by"))
        return found

    def polled_by(self, job: str, through: str = "") -> tuple[str, ...]:
        """The poller nodes whose targets ``job``'s are: of the pollers of ``job``, the
        one whose ``address`` is ``through`` (the exporter the target's scrapes go
        to) where there is one, else all of them."""
        key = (job, through)
        cached = self._polled.get(key)
        if cached is None:
            polling = [p for p in self.pollers if job and p.polls.fullmatch(job)]
            named = [p for p in polling if through and p.address == through]
            cached = tuple(sorted({"ep:" + p.instance.lower() for p in named or polling}))
            self._polled[key] = cached
        return cached

    def ancestors(self, node: str) -> Ancestors:
        """Every node ``node`` depends on, with the strength of the strongest path to it."""
        found = self._ancestors.get(node)
        if found is not None:
            return found
        if node not in self.parents:
            return _EMPTY
        # Iterative post-order walk: deep chains must not hit the recursion limit,
        # and a cycle (two devices each claiming the other as upstream) is cut where
        # it closes. A node in progress is memoised as having no ancestors: a cycle
        # back to it adds nothing.
        self._ancestors[node] = _EMPTY
        stack = [(node, 0)]
        while stack:
            current, index = stack[-1]
            edges = self.parents[current]
            while index < len(edges) and (
                edges[index][0] in self._ancestors or edges[index][0] not in self.parents
            ):
                index += 1
            if index < len(edges):
                parent = edges[index][0]
                stack[-1] = (current, index + 1)
                self._ancestors[parent] = _EMPTY
                stack.append((parent, 0))
                continue
            stack.pop()
            self._ancestors[current] = combine(
                [
                    *(
                        (parent, strength, self._ancestors.get(parent, _EMPTY))
                        for parent, strength, _ in edges
                    ),
                    *any_port_edges(edges, edges),
                ]
            )
        return self._ancestors[node]

    def dead_end(self, node: str) -> bool:
        """Whether only leaves depend on ``node`` (the link to a printer)."""
        if self._children is None:
            children: dict[str, list[str]] = {}
            for child, edges in self.parents.items():
                for parent, _, _ in edges:
                    children.setdefault(parent, []).append(child)
            self._children = children
        below = self._children.get(node, ())
        return bool(below) and not any(child in self.upstream_of for child in below)

    def parent_towards(self, node: str, ancestor: str) -> tuple[str, str] | None:
        """The next hop (node, why) from ``node`` on a path up to ``ancestor``."""
        for parent, _, why in self.parents.get(node, ()):
            if parent == ancestor or ancestor in self.ancestors(parent):
                return parent, why
        return None


def combine(
    parents: Iterable[tuple[str, int, Ancestors]], known: Ancestors = _EMPTY
) -> dict[str, int]:
    """Ancestors through each (parent, edge strength, parent's ancestors), strongest kept.

    ``known``: ancestors found already (copied, not changed), e.g. a node's own.
    """
    result: dict[str, int] = dict(known)
    for parent, strength, further in parents:
        if result.get(parent, -1) < strength:
            result[parent] = strength
        for ancestor, inner in further.items():
            weakest = min(strength, inner)
            if result.get(ancestor, -1) < weakest:
                result[ancestor] = weakest
    return result


# -- building ----------------------------------------------------------------------


class _Names:
    """Union-find over name keys: the names, addresses and chassis ids of one device.

    The representative names the device node: a scrape target's name first (what
    alerts carry), then any other name, then an address, then a name known only
    from a check's URL (a service's name, not the host's), then a chassis id.
    """

    def __init__(self, targets: Iterable[str] = ()) -> None:
        self.parent: dict[str, str] = {}
        self.targets = frozenset(targets)
        self.service_names: frozenset[str] = frozenset()
        # Representatives of the devices known by a chassis id.
        self.with_chassis: set[str] = set()

    def _rank(self, key: str) -> tuple[int, str]:
        if key.startswith(CHASSIS_PREFIX):
            return 4, key
        if key in self.service_names:
            return 3, key
        if is_ip(key):
            return 2, key
        return (0 if key in self.targets else 1), key

    def find(self, key: str) -> str:
        if key not in self.parent:
            self.parent[key] = key
            if key.startswith(CHASSIS_PREFIX):
                self.with_chassis.add(key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._rank(ra) > self._rank(rb):
            ra, rb = rb, ra
        self.parent[rb] = ra
        if rb in self.with_chassis:
            self.with_chassis.discard(rb)
            self.with_chassis.add(ra)

    def union_unless_two_chassis(self, keys: Sequence[str]) -> None:
        """Join ``keys`` as one device, unless they hold two chassis ids (two devices)."""
        devices = {self.find(key) for key in keys}
        if len(devices & self.with_chassis) > 1:
            return
        for key in keys[1:]:
            self.union(keys[0], key)

    def aliases(self) -> dict[str, str]:
        return {key: self.find(key) for key in list(self.parent)}


# Chassis ids share the name space of device keys under this prefix.
CHASSIS_PREFIX = "chassis:"


def chassis_key(chassis_id: str) -> str:
    """A chassis id as a device key ("" for none); both ends of LLDP decode it alike."""
    text = chassis_id.strip().lower()
    return CHASSIS_PREFIX + text if text else ""


def _resolve_names(
    neighbours: Sequence[Mapping[str, str]],
    identities: Sequence[Mapping[str, str]],
    targets: Sequence[Mapping[str, str]],
    addresses: Sequence[Mapping[str, str]] = (),
) -> tuple[dict[str, str], list[tuple[str, str, str, str]]]:
    """Aliases of every device key, and each neighbour row as (local, port, remote, port) keys.

    A polled device's own chassis id joins its scrape target, and a neighbour's
    advertised address its chassis id. A sysname joins the device it names
    when it names one device only: a sysname that several scrape targets claim
    (factory defaults such as ``Switch``), or that neighbours report with the
    chassis ids of several devices, joins none of them, unless their chassis
    ids already made them one device. A target's name joins the one address
    it resolved to (:func:`_resolved_addresses`), unless that would make one
    device of two chassis ids.
    """
    scraped = set()
    for row in (*neighbours, *identities, *targets):
        host, endpoint = split_instance(row.get("instance", ""))
        if host and not endpoint:
            scraped.add(name_key(host))
    names = _Names(scraped)
    for key in scraped:
        names.find(key)
    # Each sysname: the scrape targets claiming it, and the addresses and
    # chassis ids reported with it.
    claims: dict[str, list[str]] = {}
    heard_with: dict[str, list[str]] = {}
    on_port: dict[tuple[str, str, str], list[str]] = {}
    for row in identities:
        host, _ = split_instance(row.get("instance", ""))
        if not host:
            continue
        own = name_key(host)
        chassis = chassis_key(row.get("local_chassis_id", ""))
        if chassis:
            names.union(own, chassis)
        sysname = name_key(row.get("local_sysname", ""))
        if sysname:
            claims.setdefault(sysname, []).append(own)
    rows = []
    for row in neighbours:
        local_host, _ = split_instance(row.get("instance", ""))
        sysname = name_key(row.get("remote_sysname", ""))
        strong = [
            key
            for key in (
                name_key(row.get("remote_address", "")),
                chassis_key(row.get("remote_chassis_id", "")),
            )
            if key
        ]
        if not local_host or not (sysname or strong):
            continue
        for other in strong:
            names.union(strong[0], other)
        if sysname and strong:
            heard_with.setdefault(sysname, []).append(strong[0])
            # CDP and LLDP rows of one cable: one neighbour, whatever else its name is.
            local_port = port_key(row.get("local_port", ""))
            on_port.setdefault((name_key(local_host), local_port, sysname), []).append(strong[0])
        # The remote by its address or chassis id where it sent one: its sysname
        # may name several devices.
        remote = strong[0] if strong else sysname
        rows.append(
            (name_key(local_host), row.get("local_port", ""), remote, row.get("remote_port", ""))
        )
    for _, heard in sorted(on_port.items()):
        names.union_unless_two_chassis(heard)
    for sysname in sorted({*claims, *heard_with}):
        claimants = {names.find(own) for own in claims.get(sysname, ())}
        if len(claimants) > 1:
            continue  # one name, several scrape targets
        names.union_unless_two_chassis([sysname, *claimants, *heard_with.get(sysname, ())])
    _join_resolved(names, addresses)
    return names.aliases(), rows


def _join_resolved(names: _Names, rows: Sequence[Mapping[str, str]]) -> None:
    """Join each target name to the addresses it resolved to (:func:`_resolved_addresses`).

    Not when it would give one device two addresses of one family (a name that
    shares its short form with a device already known at another address, such
    as ``esx01`` in production and ``esx01.lab``), nor two chassis ids.
    """
    resolved, from_urls = _resolved_addresses(rows)
    names.service_names = frozenset(from_urls - set(names.parent))
    known: dict[str, set[str]] = {}
    for key in list(names.parent):
        if is_ip(key):
            known.setdefault(names.find(key), set()).add(key)
    for name, addresses in sorted(resolved.items()):
        for address in sorted(addresses):
            one, other = names.find(name), names.find(address)
            if one == other:
                continue
            version = ipaddress.ip_address(address).version
            held = known.get(one, set()) | known.get(other, set())
            if any(ipaddress.ip_address(a).version == version and a != address for a in held):
                continue
            names.union_unless_two_chassis([address, name])
            known[names.find(address)] = held | {address}


# More names than this resolving to one address make it a shared front end.
SHARED_ADDRESS_NAMES = 16


def _usable_address(text: str) -> str:
    """``text`` as an address key, or "" for one that names no particular host.

    Loopback and unspecified addresses are every host's own, link-local ones
    repeat on every segment and multicast ones name groups: a check of
    ``localhost`` is not the device another target resolved there.
    """
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return ""
    if (
        address.is_loopback
        or address.is_unspecified
        or address.is_link_local
        or address.is_multicast
    ):
        return ""
    return str(address)


def _resolved_addresses(
    rows: Sequence[Mapping[str, str]],
) -> tuple[dict[str, frozenset[str]], set[str]]:
    """Each target name's key -> the usable addresses it resolved to, at most one per
    family (a dual-stack host's IPv4 and IPv6); and the keys seen only in URLs.

    Rows of targets written as an address say nothing new and are left out. A
    name seen with two addresses of one family (round-robin DNS, a host that
    moved within the lookback, two hosts whose names share a short form) is
    left out, and so is an address more than :data:`SHARED_ADDRESS_NAMES`
    names resolve to: a load balancer's or reverse proxy's virtual address,
    in front of services that fail on their own.
    """
    seen: dict[str, set[str]] = {}
    in_urls: set[str] = set()
    elsewhere: set[str] = set()
    for row in rows:
        instance = row.get("instance", "")
        host, _ = split_instance(instance)
        address = _usable_address(row.get("address", ""))
        if not host or not address or is_ip(host):
            continue
        key = name_key(host)
        seen.setdefault(key, set()).add(address)
        (in_urls if "://" in instance else elsewhere).add(key)
    claimed: dict[str, int] = {}
    for addresses in seen.values():
        for address in addresses:
            claimed[address] = claimed.get(address, 0) + 1
    resolved: dict[str, frozenset[str]] = {}
    for key, addresses in seen.items():
        versions = [ipaddress.ip_address(a).version for a in addresses]
        if len(versions) != len(set(versions)):
            continue
        kept = frozenset(a for a in addresses if claimed[a] <= SHARED_ADDRESS_NAMES)
        if kept:
            resolved[key] = kept
    return resolved, in_urls - elsewhere


# A cable's end: (device, port key).
End = tuple[str, str]


def _cables(
    rows: Sequence[tuple[str, str, str, str]],
) -> tuple[list[tuple[End, End]], dict[End, str]]:
    """The cables the rows describe, once each, and every port end's name to show.

    Both ends of a cable usually report it, in their own spellings; ports are
    compared by :func:`port_key`. What a device says of its own port (its
    ifName) wins over what its neighbour says of it: when the neighbour's
    ``remote_port`` is a description or a MAC, the device's own row pointing
    back at the same port of the neighbour names the end.
    """
    shown: dict[End, str] = {}
    back: dict[tuple[str, str, str], set[str]] = {}
    for local, local_port, remote, remote_port in rows:
        if local_port:
            shown.setdefault((local, port_key(local_port)), local_port)
        back.setdefault((local, remote, port_key(remote_port)), set()).add(port_key(local_port))
    cables: dict[tuple[End, End], None] = {}
    for local, local_port, remote, remote_port in rows:
        if local == remote:
            continue
        near = port_key(local_port)
        far = port_key(remote_port)
        own = back.get((remote, local, near), set())
        if far not in own and len(own) == 1:
            (far,) = own
        if remote_port:
            shown.setdefault((remote, far), remote_port)
        first, second = sorted(((local, near), (remote, far)))
        cables[(first, second)] = None
    return list(cables), shown


def _exporters(rows: Iterable[Mapping[str, str]]) -> dict[tuple[str, str], str]:
    """(job, instance) -> its :data:`EXPORTER_LABEL`, where the rows give it one value
    (two, as while a target moves between exporters, say nothing for sure)."""
    seen: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        exporter = row.get(EXPORTER_LABEL, "")
        if exporter and row.get("job") and row.get("instance"):
            seen.setdefault((row["job"], row["instance"]), set()).add(exporter)
    return {key: next(iter(found)) for key, found in seen.items() if len(found) == 1}


def build_snapshot(
    *,
    neighbours: Iterable[Mapping[str, str]] = (),
    local_identities: Iterable[Mapping[str, str]] = (),
    targets: Iterable[Mapping[str, str]] = (),
    pollers: Sequence[Poller] = (),
    dependencies: Iterable[Dependency] = (),
    roots: Iterable[str] = (),
    addresses: Iterable[Mapping[str, str]] = (),
    built_at: datetime | None = None,
) -> TopologySnapshot:
    """The graph from the five sources; see the module docstring for each."""
    target_rows = list(targets)
    aliases, rows = _resolve_names(
        list(neighbours), list(local_identities), target_rows, list(addresses)
    )
    snapshot = TopologySnapshot(aliases=aliases, pollers=tuple(pollers), built_at=built_at)
    parents: dict[str, dict[str, tuple[int, str]]] = {}

    def add(child: str, parent: str, strength: int, why: str) -> None:
        if child == parent:
            return
        edges = parents.setdefault(child, {})
        if edges.get(parent, (-1, ""))[0] < strength:
            edges[parent] = (strength, why)

    # Cabling: undirected, one link per cable (both ends usually report it).
    # Device -> neighbour -> the links between them (parallel cables, LAG members).
    adjacency: dict[str, dict[str, list[str]]] = {}
    ports: dict[str, str] = {}
    cables, shown = _cables(
        [
            (aliases.get(local, local), local_port, aliases.get(remote, remote), remote_port)
            for local, local_port, remote, remote_port in rows
        ]
    )
    for ends in cables:
        (a, _), (b, _) = ends
        link = "link:" + "~".join(f"{dev}|{shown.get((dev, port), port)}" for dev, port in ends)
        for dev, port in ends:
            if port:
                ports[f"port:{dev}|{port}"] = link
        adjacency.setdefault(a, {}).setdefault(b, []).append(link)
        adjacency.setdefault(b, {}).setdefault(a, []).append(link)
    snapshot.ports = ports

    root_devices = {snapshot.device(name)[4:] for name in roots}
    for poller in pollers:
        host, _ = split_instance(poller.instance)
        if host:
            root_devices.add(snapshot.device(host)[4:])
    snapshot.exporter_of = _exporters(target_rows)
    target_parents: dict[str, str] = {}
    for row in target_rows:
        node = snapshot.node_of(row)
        if node is None:
            continue
        for name in UPSTREAM_LABELS:
            if row.get(name):
                target_parents[node] = snapshot.device(row[name])
    # A poller outside the cabling (a server without LLDP) roots the part its
    # labelled upstream device is in.
    for device in list(root_devices):
        upstream = target_parents.get("dev:" + device)
        if device not in adjacency and upstream is not None:
            root_devices.add(upstream[4:])
    for child, parent, link in _orient(adjacency, root_devices):
        add("dev:" + child, link, PATH, "uplink")
        add(link, "dev:" + parent, PATH, "cabled to")
    for node, parent in target_parents.items():
        add(node, parent, PATH, "behind")
    for dependency in dependencies:
        source = snapshot.node_of(dependency.source)
        target = snapshot.node_of(dependency.target)
        if source is not None and target is not None:
            add(source, target, USES, dependency.why or "depends on")
            # A port only the config names is found in any spelling, as a cabled one is.
            for node in (source, target):
                if node.startswith("port:"):
                    device, _, interface = node[5:].partition("|")
                    ports.setdefault(f"port:{device}|{port_key(interface)}", node)
    # Endpoints and ports sit on their device.
    mentioned = set(parents) | {parent for edges in parents.values() for parent in edges}
    for child in sorted(mentioned):
        kind = child.partition(":")[0]
        if kind == "ep" or kind == "port":
            host = child[3:] if kind == "ep" else child[5:].split("|", 1)[0]
            if kind == "ep":
                host, _ = split_instance(host)
                add(child, snapshot.device(host), USES, "on")
            else:
                # A device's outage explains its ports; its CPU or disk does not.
                add(child, "dev:" + host, PATH, "on")
    snapshot.parents = {
        child: tuple((parent, strength, why) for parent, (strength, why) in sorted(edges.items()))
        for child, edges in sorted(parents.items())
    }
    snapshot.upstream_of = frozenset(parent for edges in parents.values() for parent in edges)
    # A link's device end nearer the root carries the traffic of what is behind it.
    snapshot.transit = frozenset(
        parent
        for child, edges in parents.items()
        if child.startswith("link:")
        for parent, (strength, _) in edges.items()
        if strength == PATH and parent.startswith("dev:")
    ) | frozenset(
        parent
        for edges in parents.values()
        for parent, (strength, why) in edges.items()
        if why == "behind"
    )
    snapshot.edges = sum(len(edges) for edges in parents.values())
    # Every node's ancestors now, once per snapshot, rather than on an alert's path.
    for child in snapshot.parents:
        snapshot.ancestors(child)
    return snapshot


def _orient(
    adjacency: Mapping[str, Mapping[str, Sequence[str]]], roots: set[str]
) -> Iterable[tuple[str, str, str]]:
    """(child, parent, link) for each cable, pointing away from each part's root."""
    seen: set[str] = set()
    for start in sorted(adjacency):
        if start in seen:
            continue
        part = _bfs(adjacency, [start])
        seen.update(part)
        chosen = sorted(root for root in roots if root in part)
        if not chosen:
            chosen = [_centre(adjacency, start)]
        depth = _bfs(adjacency, chosen)
        for device in sorted(part):
            for other, between in sorted(adjacency[device].items()):
                if depth[other] < depth[device]:
                    for link in sorted(between):
                        yield device, other, link


def _bfs(
    adjacency: Mapping[str, Mapping[str, Sequence[str]]], starts: Sequence[str]
) -> dict[str, int]:
    depth = dict.fromkeys(starts, 0)
    queue = deque(starts)
    while queue:
        name = queue.popleft()
        for other in sorted(adjacency.get(name, {})):
            if other not in depth:
                depth[other] = depth[name] + 1
                queue.append(other)
    return depth


def _centre(adjacency: Mapping[str, Mapping[str, Sequence[str]]], start: str) -> str:
    """The middle of a longest path (two sweeps): a tree's natural root when none is known."""
    first = _bfs(adjacency, [start])
    far = max(sorted(first), key=lambda name: first[name])
    sweep = _bfs(adjacency, [far])
    other = max(sorted(sweep), key=lambda name: sweep[name])
    # Walk back from the far end half the way.
    path = [other]
    while sweep[path[-1]] > 0:
        here = path[-1]
        path.append(min(n for n in adjacency[here] if sweep.get(n, -1) == sweep[here] - 1))
    return path[len(path) // 2]
