"""The dependency graph correlation follows: what depends on what, as one frozen snapshot.

A :class:`TopologySnapshot` is built (:func:`build_snapshot`) from four sources,
each given as plain label rows so that Prometheus query results, a config file
and a test fixture all feed the same code:

- **neighbours**: LLDP/CDP rows, one per ``scout_lldp_neighbor_info`` series
  (``instance`` of the reporting device, ``local_port``, ``remote_sysname``,
  ``remote_port``, ``remote_address``). They say which devices are cabled to
  which, not which way is up: each connected part is oriented from its roots
  (the configured ``roots``, else the device the poller runs on, else the
  part's centre), so the device further from the root depends on the link,
  and the link on the device nearer the root;
- **targets**: one row per scrape target (``up``'s labels): a target with an
  ``upstream`` or ``via`` label sits behind the device it names;
- **pollers**: the exporter instances, and the jobs whose targets they reach;
  a polled target depends on its poller, which only an *unavailable* poller
  explains (a full disk on the poller explains nothing about its targets);
- **dependencies**: explicit edges from the sidecar config (``from`` and ``to``
  as ``job``/``instance``/``ifName`` values).

Nodes are element ids: ``dev:NAME`` (a device, by its short name or address),
``port:DEV|IFNAME``, ``link:A|PA~B|PB`` (both ends' ports name the link) and
``ep:INSTANCE`` (a URL or ``host:port`` endpoint, which runs on its host).
Device names are unified across the forms an estate writes them in (FQDN,
short name, the management address a neighbour advertised); two devices with
the same short name in different domains are taken as one, a limit of the
LLDP data (``remote_sysname`` is often a short name).

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

# Edge strengths, weakest first: which failures of the parent explain the child.
POLL = 0
PATH = 1
USES = 2
EDGE_WHY = {POLL: "polled by", PATH: "reached through", USES: "runs on or uses"}

# Labels naming the device a target sits behind (file_sd target-group labels).
UPSTREAM_LABELS = ("upstream", "via")
# Labels naming an interface of the alert's device.
INTERFACE_LABELS = ("ifName", "interface", "ifDescr")

Ancestors = Mapping[str, int]
_EMPTY: Mapping[str, int] = {}


def _is_ip(text: str) -> bool:
    if not text or not (text[0].isdigit() or ":" in text):
        return False  # the common case, without the cost of a failed parse
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
    if not text or _is_ip(text):
        return text
    return text.split(".", 1)[0]


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
    """An exporter instance (``job``/``instance`` of its own scrape) and the jobs it reaches."""

    instance: str
    polls: re.Pattern[str]


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
    # Nodes something depends on ...
    upstream_of: frozenset[str] = frozenset()
    # ... and devices something is reached through (a path edge, not a use):
    # a firewall or router, not a host whose services run on it.
    transit: frozenset[str] = frozenset()
    built_at: datetime | None = None
    edges: int = 0
    _ancestors: dict[str, Ancestors] = field(default_factory=dict)
    _polled: dict[str, tuple[str, ...]] = field(default_factory=dict)

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
        for name in INTERFACE_LABELS:
            interface = labels.get(name, "")
            if interface and host:
                port = f"port:{self.device(host)[4:]}|{interface}"
                return self.ports.get(port, port)
        if endpoint:
            return "ep:" + instance.strip().lower().rstrip("/")
        return self.device(host) if host else None

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
        for poller in self.polled_by(labels.get("job", "")):
            if poller != node:
                found.append((poller, POLL, "polled by"))
        return found

    def polled_by(self, job: str) -> tuple[str, ...]:
        """The poller nodes whose targets ``job``'s are."""
        if not job:
            return ()
        cached = self._polled.get(job)
        if cached is None:
            cached = tuple(
                sorted({"ep:" + p.instance.lower() for p in self.pollers if p.polls.fullmatch(job)})
            )
            self._polled[job] = cached
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
        # it closes.
        self._ancestors[node] = _EMPTY  # in progress: a cycle back here adds nothing
        result = combine(
            (parent, strength, self.ancestors(parent)) for parent, strength, _ in self.parents[node]
        )
        self._ancestors[node] = result
        return result

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
    """Union-find over name keys: an LLDP sysname and its advertised address are one device."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
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
        # A name beats an address as the representative, then the smaller one.
        if (_is_ip(ra), ra) > (_is_ip(rb), rb):
            ra, rb = rb, ra
        self.parent[rb] = ra

    def aliases(self) -> dict[str, str]:
        return {key: self.find(key) for key in list(self.parent)}


def build_snapshot(
    *,
    neighbours: Iterable[Mapping[str, str]] = (),
    targets: Iterable[Mapping[str, str]] = (),
    pollers: Sequence[Poller] = (),
    dependencies: Iterable[Dependency] = (),
    roots: Iterable[str] = (),
    built_at: datetime | None = None,
) -> TopologySnapshot:
    """The graph from the four sources; see the module docstring for each."""
    names = _Names()
    rows = []
    for row in neighbours:
        local_host, _ = split_instance(row.get("instance", ""))
        remote = row.get("remote_sysname", "") or row.get("remote_address", "")
        if not local_host or not remote:
            continue
        local_key = names.find(name_key(local_host))
        if row.get("remote_sysname") and row.get("remote_address"):
            names.union(name_key(row["remote_sysname"]), name_key(row["remote_address"]))
        rows.append((local_key, row.get("local_port", ""), remote, row.get("remote_port", "")))
    for row in targets:
        host, endpoint = split_instance(row.get("instance", ""))
        if host and not endpoint:
            names.find(name_key(host))
    aliases = names.aliases()
    snapshot = TopologySnapshot(aliases=aliases, pollers=tuple(pollers), built_at=built_at)
    parents: dict[str, dict[str, tuple[int, str]]] = {}

    def add(child: str, parent: str, strength: int, why: str) -> None:
        if child == parent:
            return
        edges = parents.setdefault(child, {})
        if edges.get(parent, (-1, ""))[0] < strength:
            edges[parent] = (strength, why)

    # Cabling: undirected, one link per pair of ports (both ends usually report it).
    links: dict[tuple[str, str], str] = {}
    adjacency: dict[str, dict[str, str]] = {}
    ports: dict[str, str] = {}
    for local, local_port, remote, remote_port in rows:
        a = snapshot.device(local)[4:]
        b = snapshot.device(remote)[4:]
        if a == b:
            continue
        ends = sorted(((a, local_port), (b, remote_port)))
        link = "link:" + "~".join(f"{dev}|{port}" for dev, port in ends)
        links[(a, b)] = links[(b, a)] = link
        for dev, port in ends:
            if port:
                ports[f"port:{dev}|{port}"] = link
        adjacency.setdefault(a, {})[b] = link
        adjacency.setdefault(b, {})[a] = link
    snapshot.ports = ports

    root_devices = {snapshot.device(name)[4:] for name in roots}
    for poller in pollers:
        host, _ = split_instance(poller.instance)
        if host:
            root_devices.add(snapshot.device(host)[4:])
    target_parents: dict[str, str] = {}
    target_rows = list(targets)
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
    adjacency: Mapping[str, Mapping[str, str]], roots: set[str]
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
            for other, link in sorted(adjacency[device].items()):
                if depth[other] < depth[device]:
                    yield device, other, link


def _bfs(adjacency: Mapping[str, Mapping[str, str]], starts: Sequence[str]) -> dict[str, int]:
    depth = dict.fromkeys(starts, 0)
    queue = deque(starts)
    while queue:
        name = queue.popleft()
        for other in sorted(adjacency.get(name, {})):
            if other not in depth:
                depth[other] = depth[name] + 1
                queue.append(other)
    return depth


def _centre(adjacency: Mapping[str, Mapping[str, str]], start: str) -> str:
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
