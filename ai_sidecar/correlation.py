"""Correlation: fold alerts, one at a time, into incidents.

The :class:`Correlator` is pure and deterministic. It does no I/O and never
reads the clock: windows are measured on the alerts' own ``startsAt`` and
``endsAt``, and the caller's ``now`` is used only when a resolved alert carries
no ``endsAt``. Folding the same alerts in the same order therefore gives the
same incidents, ids included, whether live or replayed from the store.

The rules, in brief (docs/correlation.md has them in full):

- **Graph.** The correlator is given a :class:`TopologySnapshot` (an empty
  one by default); each alert is placed on an element of it (its device, port,
  link or endpoint) with the elements it depends on, its own ``upstream``/
  ``via`` labels and its poller included (:meth:`Correlator.place`). Labels
  alerts carry for targets the graph lacks chain (:meth:`Correlator._learn_labels`),
  and a target a label puts behind a device is behind that device's unknown
  ports (:func:`~ai_sidecar.correlate.topology.any_port`), which a down port
  no neighbour row places stands for.
- **Joining through the graph.** A firing alert joins the open incidents it is
  connected to, across sites and keys: a member on the same element (one on
  a lower layer that explains it, or that it explains, within
  ``causal_window``: :meth:`Correlator._same_element_pulls`), a cause
  upstream whose failure travels down to it, effects downstream it explains
  (within ``causal_window`` of them), or a symptom behind the same element
  (for a leaf cabled to a switch, the switch, unless it reports a port of its
  own down and so is up: :meth:`Correlator._answers`). The oldest takes it and
  absorbs the others (:attr:`Change.absorbed`). An outage pulls effects for as
  long as it fires, degradation for ``causal_window`` after it starts;
  degradation explains only degradation, a port's own counters nothing
  upstream, a port with errors only loss, with discards loss and latency,
  degradation measured to a device's own address nothing behind it
  (:func:`_own_address`); a host-layer alert on a transit device also
  explains network-layer symptoms behind it (:func:`_explains`,
  :func:`_local`, :func:`_carries`).
- **Also joining.** A port no neighbour is known on pairs with an unreachable
  leaf behind its device (:func:`_pairing`); a public address nothing places
  sits behind the configured ways out (:mod:`ai_sidecar.correlate.outside`);
  a cause absorbs resolved incidents whose root it explains within the causal
  window, below its element or on it; learned co-firing partners
  (:mod:`ai_sidecar.correlate.cofiring`) join (one incident, not across
  branches the graph separates: :func:`_apart`), and the one that fires first
  explains the other after the graph's explanations.
- **Group key.** The values of the first ``group_by`` label set whose labels
  are all present (non-empty) on the alert; the alertname if none is. Used to
  join only when the graph connects nothing: without a graph always, with one
  (``key_fallback: unknown``) for symptoms the graph cannot place, and then
  only with other unplaced symptoms of its own kind (outage or degradation)
  or an outage of the moment, which also claims the ones that fired before it
  (:meth:`Correlator._claimed`).
- **Joining by key.** An alert joins the oldest open incident with the same key
  when its ``startsAt`` lies within ``window`` of the incident's span (earliest
  to latest member ``startsAt``) and the span would stay within ``max_span``.
- **Deduplication.** The same (fingerprint, status, startsAt) again, or a
  delivery about an older episode than the member's current one, is a
  duplicate: ``Member.duplicates`` grows, nothing else changes and the
  incident's ``version`` stays the same.
- **Flapping.** A re-fire within ``flap_window`` of the member's resolve is the
  same member: ``flap_count`` grows, a resolved incident reopens, and a firing
  flap takes the incidents whose root its new episode explains, as a late
  cause does (:meth:`Correlator._take_explained`). Later, it is a new episode
  and is placed like a new alert.
- **Resolution.** ``all_members``: when no member fires. ``root_cause``: when
  the root-cause member resolves; the root cause is then kept as it was.
- **Root cause.** The first member by: explains the most other members (they
  sit downstream and its failure travels to them; a port's own degradation also
  explains a device behind it that stops answering: :func:`_accounts_for`), firing before resolved,
  lowest layer, most dependents, earliest start, highest severity, lowest
  fingerprint.

Cost: an alert touches only its own incident's bookkeeping and its ancestors
in the graph. The root cause is kept in a lazily pruned heap, so ranking is
O(log n) per change rather than a scan of every member, and its reasons are
worked out again only when what they read changed. Incident values share one
member log (:mod:`ai_sidecar.correlate.members`): a join does not copy the
members, so a storm of thousands of alerts in one incident stays linear.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from operator import attrgetter
from typing import Any, Literal, NamedTuple, TypeVar, cast

from ai_sidecar.config import LAYERS, CorrelationConfig, Layer, labels_match
from ai_sidecar.correlate import wording
from ai_sidecar.correlate.cofiring import NO_COFIRING, CoFiring
from ai_sidecar.correlate.members import MemberLog
from ai_sidecar.correlate.outside import gateways, is_outside
from ai_sidecar.correlate.services import Reach, is_printing_endpoint, service_reach
from ai_sidecar.correlate.topology import (
    EXPORTER_LABEL,
    INTERFACE_LABELS,
    PATH,
    POLL,
    UPSTREAM_LABELS,
    USES,
    Ancestors,
    TopologySnapshot,
    any_port,
    any_port_edges,
    cabled_devices,
    combine,
    element_text,
    is_any_port,
    split_instance,
)
from ai_sidecar.i18n import SOURCE_LANGUAGE
from ai_sidecar.models import (
    MERGED_REASON,
    Alert,
    Incident,
    Member,
    RootCauseFacts,
    RootCauseRule,
    episode_start,
    format_time,
    merged_into,
    severity_rank,
    target_of,
)

ChangeKind = Literal["created", "joined", "updated", "flapped", "resolved", "reopened", "duplicate"]
GroupKey = tuple[tuple[str, str], ...]

# The topology's hop words (EDGE_WHY and the labels' edges), translated where a
# reason's path shows them; a dependency's own ``why`` is the config's, shown as written.
HOP_WORDS = (
    wording.N_("polled by"),
    wording.N_("reached through"),
    wording.N_("runs on or uses"),
    wording.N_("on"),
    wording.N_("behind"),
    wording.N_("depends on"),
    wording.N_("uplink"),
    wording.N_("cabled to"),
)

# A member is referred to by these labels' values ...
NAME_LABELS = ("instance", "device")
# ... and refers to the thing it sits behind with these.
REFERENCE_LABELS = ("upstream", "device")
# A label an alert rule may set to place itself; it beats every layer rule.
LAYER_LABEL = "layer"
_LAYER_INDEX = {layer: index for index, layer in enumerate(LAYERS)}
# Distinct label values whose layer is remembered (rules may read any label),
# and named paths.
_LAYER_MEMO = 65536
# No real alert's name or label read by the layer rules is this long; a
# hostile one is not given to the regexes (some scan it once per word they
# find), so it costs nothing and sits at the service layer.
_RULE_INPUT_LIMIT = 1024
_PATH_MEMO = 65536
# The weakest edge a failure of each layer travels along (topology.POLL < PATH <
# USES): an unreachable device or a down link explains everything behind it,
# even what a poller reaches through it; loss or saturation explains what is
# reached through it; a full disk or a stopped service only what runs on or
# uses it.
_TRAVELS: Mapping[Layer, int] = {
    "device": POLL,
    "link": POLL,
    "network": PATH,
    "host": USES,
    "service": USES,
}
# ... and the weakest edge along which an alert of each layer can be explained:
# a symptom (unreachable, down, loss) by anything upstream; a full disk or a
# stopped service only by what it runs on or uses, never by a link behind
# which it merely sits.
_RECEIVES: Mapping[Layer, int] = {
    "device": POLL,
    "link": POLL,
    "network": POLL,
    "host": USES,
    "service": USES,
}
# Alerts of this layer on a transit element (a device others are reached
# through: a firewall, a router) are about its capacity (a session table, CPU,
# memory filling); a stopped service or a failed SNMP module on it is not ...
_CAPACITY_LAYERS = frozenset({"host"})
# ... and explain what such a device does to the traffic through it: loss,
# latency and failed probes behind it, not unreachable devices or full disks.
_SLOWED_LAYERS = frozenset({"network"})


# Layers whose alerts say an element is degraded: what it explains is degraded too.
_DEGRADED_LAYERS = frozenset({"network"})


def _explains(cause: Layer, transit: bool, strength: int, effect: Layer) -> bool:
    """Whether a failure of layer ``cause`` explains one of layer ``effect`` below it.

    ``strength``: of the strongest path from the effect's element up to the
    cause's; ``transit``: traffic to others passes through the cause's element.
    """
    if strength < _RECEIVES[effect]:
        return False
    if cause in _DEGRADED_LAYERS:
        # Loss, saturation or a failing check behind it, not a device or port down.
        return effect in _DEGRADED_LAYERS and _TRAVELS[cause] <= strength
    if _TRAVELS[cause] <= strength:
        return True
    return transit and strength >= PATH and cause in _CAPACITY_LAYERS and effect in _SLOWED_LAYERS


# Layers whose alerts say an element is down, not degraded.
_OUTAGE_LAYERS = frozenset({"device", "link"})

# What a degraded port does to the traffic through it depends on how it is
# degraded. Errors (CRC) corrupt frames, which are dropped: behind the port that
# is loss (and, badly enough, a device whose polls time out), not slowness,
# jitter or a check failing on status or content. Discards are frames dropped
# from full queues: loss and latency. A saturated port's queues make all of
# those. Matched on the alertname, as the layers are: a symptom's kind is a
# bit, a port counter's the bits of what it makes (none: anything degraded);
# only network-layer alerts are port counters (Correlator.kind_of).
_LOSS_BIT, _LATENCY_BIT = 1, 2
_SYMPTOM_KINDS = (
    (re.compile(r".*(PacketLoss|Loss).*", re.IGNORECASE), _LOSS_BIT),
    (re.compile(r".*(Latency|Rtt|Slow).*", re.IGNORECASE), _LATENCY_BIT),
    (re.compile(r".*(Errors?|Errs|Crc).*", re.IGNORECASE), _LOSS_BIT << 4),
    (re.compile(r".*(Discards?|Drops?).*", re.IGNORECASE), (_LOSS_BIT | _LATENCY_BIT) << 4),
)


# The symptom bits of a kind, without what a port counter makes.
_KIND_MASK = (1 << 4) - 1


# Loss, latency or jitter measured to a device's own address (a probe of the
# device, not of a port or an endpoint on it) is its control plane answering
# slowly: switches and routers answer pings to themselves from their CPU,
# rate-limited and behind the traffic they forward in hardware. Traffic through
# the device is not what was measured, so it explains nothing behind the device;
# a degraded path to it shows on that path's own ports.
_OWN_ADDRESS_BIT = 1 << 8


def _own_address(kind: int, layer: Layer, node: str | None) -> int:
    """``kind``, marked when it is degradation measured to a device's own address.

    A port counter placed on the device (discards or errors without an
    interface label) is not: it counts the traffic the device forwards.
    """
    if (
        layer in _DEGRADED_LAYERS
        and node is not None
        and node.startswith("dev:")
        and not kind & ~_KIND_MASK
    ):
        return kind | _OWN_ADDRESS_BIT
    return kind


# A stopped service that serves nothing a check tests (updates, indexing:
# ai_sidecar.correlate.services) explains no other alert, a stopped print
# spooler only a check of a printing port; what stopped either (a full disk)
# may still explain both.
_SERVES_NOTHING_BIT = 1 << 9
_PRINTING_ONLY_BIT = 1 << 10
_PRINTING_PORT_BIT = 1 << 11
_REACH_BITS = {Reach.ANY: 0, Reach.NOTHING: _SERVES_NOTHING_BIT, Reach.PRINTING: _PRINTING_ONLY_BIT}


def _carries(cause_kind: int, effect_kind: int, effect: Layer) -> bool:
    """Whether what the cause does behind it can be the effect (see ``_SYMPTOM_KINDS``)."""
    if cause_kind & (_OWN_ADDRESS_BIT | _SERVES_NOTHING_BIT):
        return False
    if cause_kind & _PRINTING_ONLY_BIT and not effect_kind & _PRINTING_PORT_BIT:
        return False
    makes = (cause_kind & 0xFF) >> 4
    return not makes or bool(effect_kind & makes) or effect not in _DEGRADED_LAYERS


def _local(layer: Layer, node: str | None) -> bool:
    """Whether an alert is a counter of its own port (errors, discards, saturation).

    Those count what happens on that port's cable: nothing upstream explains
    them (a cut further up silences them, it does not raise them), so they
    join only alerts on the same element. Loss or a failed check of a target,
    measured from the poller, is explained by anything on the path.
    """
    return layer in _DEGRADED_LAYERS and node is not None and node.startswith(("port:", "link:"))


def _accounts_for(
    cause: Layer, cause_node: str | None, transit: bool, strength: int, effect: Layer
) -> bool:
    """Whether a member explains another its incident already holds (ranking, not joining).

    What :func:`_explains` says, and one more: a port's own degradation
    (errors, discards, saturation) accounts for a device reached through it
    that stops answering: polls time out when enough packets are lost. It
    pulls no outage into its incident (a device behind a degraded link that
    stops answering on its own, switched off or unpowered, is the likelier
    story); once the degradation's other effects behind it have joined the two,
    the port outranks the device, whose outage explains only what is behind it.
    """
    return _explains(cause, transit, strength, effect) or (
        effect == "device" and strength >= PATH and _local(cause, cause_node)
    )


def _unknown_port_explains(cause: Layer, effect: Layer) -> bool:
    """Whether a port no neighbour row places may be the one an effect behind its device
    is reached through: for outages behind it, and for a degraded port's degradation
    behind it (a saturated ISP uplink, which no neighbour row ever names).
    """
    return effect in _OUTAGE_LAYERS or cause in _DEGRADED_LAYERS


# Layers whose alerts are symptoms seen from outside (unreachable, loss): two
# of them behind the same device point at a common cause there.
_SYMPTOM_LAYERS = frozenset({"device", "network"})
# Layers that join by group key when the graph knows nothing of the alert.
_KEY_LAYERS = frozenset({"device", "link", "network"})


class Placement(NamedTuple):
    """Where an alert sits in the graph: its element, what it depends on, its parents.

    A named tuple, not a dataclass: it holds only strings, numbers and such
    tuples and dicts, so the garbage collector stops tracking it after its
    first collection, and the thousands a storm memoises are never traversed
    again (a dataclass instance stays tracked for good).
    """

    node: str | None
    ancestors: Ancestors
    # Parents along paths and uses (not polls): siblings share one.
    parents: tuple[str, ...]
    # The graph (or the alert's upstream/via labels) says something about it.
    known: bool
    # First hops, for naming a path: (parent, why).
    hops: tuple[tuple[str, str], ...] = ()
    # Other elements are reached through it (see _explains).
    transit: bool = False
    # Nothing in the graph depends on it: a server, a printer, a port no
    # neighbour was seen on.
    leaf: bool = False
    # For a port no neighbour row places: the node standing for its device's
    # unknown ports (topology.any_port), which what an ``upstream`` label puts
    # behind the device is reached through.
    also: str | None = None


_NOWHERE = Placement(None, {}, (), False)
# The labels a placement depends on (see Correlator.place).
_PLACE_LABELS = ("job", "instance", EXPORTER_LABEL, *INTERFACE_LABELS, *UPSTREAM_LABELS)
_PLACE_BLANKS = ("",) * len(_PLACE_LABELS)
_NO_STRENGTHS: Mapping[str, int] = {}


# How a path names the hop from a target outside the estate to the way out.
OUTSIDE_WHY = "outside the estate, reached through"


def _apart(one: Placement, one_layer: Layer, other: Placement, other_layer: Layer) -> bool:
    """Whether the graph says two outages are on separate branches, whatever history says.

    Two sites behind one WAN router that lost power together on earlier days
    co-fire in history; what is reachable is the graph's to say, and neither
    is behind the other. Learned edges still tie what the graph cannot place
    or relate (a check by name and the resolver it needs).
    """
    if one_layer not in _OUTAGE_LAYERS or other_layer not in _OUTAGE_LAYERS:
        return False
    if not (one.known and other.known) or one.node is None or other.node is None:
        return False
    return one.node not in other.ancestors and other.node not in one.ancestors


def _paired(tracked: _Tracked) -> bool:
    """Whether the incident holds a port no neighbour row places and a leaf it leads to."""
    return tracked.unknown_ports > 0 and tracked.leaves > 0


def _reaches(node: str, goal: str) -> bool:
    """Whether a path at ``node`` has reached ``goal`` (a device, for its unknown ports)."""
    return node == goal or (
        is_any_port(goal) and node.startswith("dev:") and any_port(node) == goal
    )


def _target_node(node: str) -> str | None:
    """The node of the scrape target an alert on ``node`` is about (a port's device)."""
    kind, _, rest = node.partition(":")
    if kind == "port":
        return "dev:" + rest.partition("|")[0]
    return node if kind in ("dev", "ep") else None


def _outside(node: str) -> bool:
    """Whether a device or endpoint node is a public address (see correlate.outside)."""
    kind, _, rest = node.partition(":")
    if kind == "dev":
        return is_outside(rest)
    if kind == "ep":
        return is_outside(split_instance(rest)[0])
    return False


# A leaf port going down and a leaf behind the same device becoming unreachable
# pair up: with no neighbour seen on the port, the leaf is the likely one on it.
_PAIRS = {"port": "leaf", "leaf": "port"}


def _pairing(placement: Placement, layer: Layer) -> str | None:
    """``port`` for a link alert on a port nothing is known behind, ``leaf`` for an
    unreachable leaf; None for anything else."""
    if not placement.leaf or placement.node is None:
        return None
    if layer == "link" and placement.node.startswith("port:"):
        return "port"
    if layer == "device":
        return "leaf"
    return None


@dataclass(frozen=True, slots=True)
class Change:
    """What one alert did: the incident after the change, and the kind of change.

    ``created``: a new incident. ``joined``: a new member in an open incident.
    ``updated``: a member changed without changing the incident's status.
    ``flapped``: a member re-fired (or re-resolved) within the flap rules.
    ``resolved`` / ``reopened``: the incident's status changed.
    ``duplicate``: a repeated or stale delivery; only ``Member.duplicates`` moved.

    ``absorbed``: incidents the alert connected to ``incident`` through the
    graph (a cause arriving after effects that had started incidents of their
    own). Their members now belong to ``incident``; each is returned resolved,
    saying so in its reasons, and is no longer tracked.
    """

    incident: Incident
    kind: ChangeKind
    absorbed: tuple[Incident, ...] = ()


_Value = TypeVar("_Value")


def _replacer(cls: type[_Value]) -> Callable[..., _Value]:
    """``dataclasses.replace`` for one class, at about half its cost.

    A join makes a new incident value per alert; ``replace`` looks every field
    up one by one, this reads them in one call. Every field must be an
    ``__init__`` argument (checked here, once).
    """
    names = tuple(f.name for f in fields(cast(Any, cls)) if f.init)
    if len(names) != len(fields(cast(Any, cls))):
        raise TypeError(f"{cls.__name__} has fields that are not __init__ arguments")
    read = attrgetter(*names)

    def with_changes(value: _Value, /, **changes: Any) -> _Value:
        given = dict(zip(names, read(value), strict=True))
        given.update(changes)
        return cls(**given)

    return with_changes


_incident_with = _replacer(Incident)
_member_with = _replacer(Member)


def group_key(labels: Mapping[str, str], group_by: Iterable[Sequence[str]]) -> GroupKey:
    """The values of the first label set fully present, else the alertname alone."""
    for names in group_by:
        values = tuple(map(labels.get, names))
        if all(values):
            return tuple(zip(names, cast(tuple[str, ...], values), strict=True))
    return (("alertname", labels.get("alertname", "")),)


def incident_id(key: GroupKey, starts_at: datetime, salt: str = "") -> str:
    """``inc-`` and 12 hex digits of sha256 over the group key and the start second.

    The second, not the first member's fingerprint: alerts of one rule
    evaluation arrive in any order, and whichever comes first the id is the same.
    """
    text = "\n".join(f"{name}={value}" for name, value in key)
    text += "\n" + format_time(starts_at.replace(microsecond=0))
    if salt:
        text += "\n" + salt
    return "inc-" + hashlib.sha256(text.encode()).hexdigest()[:12]


# Group-key labels that name the target itself, not a place it shares with others.
_TARGET_KEY_LABELS = frozenset({"instance", "alertname"})


def _names_place(key: GroupKey) -> bool:
    """Whether a group key names a place (a site, a device) rather than only the target."""
    return any(name not in _TARGET_KEY_LABELS for name, _ in key)


def _names(labels: Mapping[str, str], which: tuple[str, ...]) -> tuple[str, ...]:
    """The distinct non-empty values of ``which``, sorted."""
    found = [value for value in map(labels.get, which) if value]
    return tuple(found) if len(found) < 2 else tuple(sorted(set(found)))


# (-explained through the graph, -explained through learned edges), firing,
# layer, -dependents, first start, -severity, fingerprint.
RankKey = tuple[tuple[int, int], int, int, int, datetime, int, str]


@dataclass(slots=True)
class _Tracked:
    """Mutable bookkeeping behind one incident; ``incident`` is its latest value."""

    incident: Incident
    key: GroupKey
    span_start: datetime
    span_end: datetime
    # Every member value taken; the incident's members are a view of it.
    log: MemberLog = field(default_factory=MemberLog)
    ranks: dict[str, RankKey] = field(default_factory=dict)
    heap: list[tuple[RankKey, str]] = field(default_factory=list)
    layers: dict[str, Layer] = field(default_factory=dict)
    # What kind of symptom or port counter each is (see _carries).
    kinds: dict[str, int] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    dependents: dict[str, int] = field(default_factory=dict)
    # What ranks a member besides layer and dependents: (first startsAt, severity) ...
    fixed: dict[str, tuple[datetime, int]] = field(default_factory=dict)
    # ... and whether it fires now.
    firing_now: dict[str, bool] = field(default_factory=dict)
    # Members by the names they carry and refer to. Indexes here are dicts of
    # strings and numbers, not lists: the garbage collector does not track
    # them, and an incident of thousands of members would otherwise be
    # traversed again on every full collection.
    by_name: dict[str, dict[str, None]] = field(default_factory=dict)
    by_reference: dict[str, dict[str, None]] = field(default_factory=dict)
    # Members per (firing, layer): the reasons' "below network and service".
    buckets: dict[tuple[bool, Layer], int] = field(default_factory=dict)
    firing: int = 0
    # The graph: each member's placement, members per element, members below
    # each element (with the path strength), and how many members each explains.
    placements: dict[str, Placement] = field(default_factory=dict)
    at: dict[str, dict[str, None]] = field(default_factory=dict)
    # The same members per element, by layer: the same-element rule looks only
    # at the other layers, not at thousands of one host's service alerts.
    at_layers: dict[str, dict[Layer, dict[str, None]]] = field(default_factory=dict)
    below: dict[str, dict[str, int]] = field(default_factory=dict)
    explains: dict[str, int] = field(default_factory=dict)
    # The explained member nearest each explaining one (fewest ancestors), for reasons.
    nearest: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Of ``explains``, how many through learned co-firing edges, and the
    # strongest such edge (occasions together, the member it explains).
    learned: dict[str, int] = field(default_factory=dict)
    learned_best: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Members that are a port no neighbour row places, unreachable leaves the
    # graph places, and device-layer members (see Correlator._spent, _by_key).
    unknown_ports: int = 0
    leaves: int = 0
    devices: int = 0
    # Group keys it is indexed under for joins by key (members the graph does not know).
    keys: list[GroupKey] = field(default_factory=list)
    key_set: set[GroupKey] = field(default_factory=set)
    # The last root cause worked out, and everything its reasons and facts were
    # read from: most joins change none of it (see Correlator._root_cause).
    explained: tuple[Hashable, str, tuple[str, ...], RootCauseFacts] | None = None


class Correlator:
    """Folds alerts into incidents; see the module docstring for the rules."""

    def __init__(
        self,
        config: CorrelationConfig,
        topology: TopologySnapshot | None = None,
        cofiring: CoFiring | None = None,
        language: str = SOURCE_LANGUAGE,
    ) -> None:
        self._config = config
        # The reasons' language (config.language); a reload may change it.
        self.language = language
        self._cofiring = NO_COFIRING if cofiring is None else cofiring
        self._group_by = config.group_keys()
        self._layer_rules = config.layer_rules()
        self._layer_labels = tuple(
            sorted({LAYER_LABEL, *(name for match, _ in self._layer_rules for name in match)})
        )
        self._layer_blanks = ("",) * len(self._layer_labels)
        self._layers: dict[tuple[str, ...], Layer] = {}
        self._kinds: dict[str, int] = {}
        self._key_fallback = config.key_fallback
        self._topology = TopologySnapshot() if topology is None else topology
        # Grows with every new graph or learned edges: reasons name paths and edges.
        self._generation = 0
        self._gateways = gateways(self._topology)
        self._placements: dict[tuple[str, ...], Placement] = {}
        # Named paths for reasons, and the ancestors labels give a node the
        # graph does not know: both depend on the graph only.
        self._paths: dict[tuple[str, tuple[tuple[str, str], ...], str, str], str] = {}
        self._label_ancestors: dict[tuple[tuple[str, int, str], ...], tuple[Ancestors, bool]] = {}
        # What alerts' ``upstream``/``via`` labels say of targets the graph has no
        # edge of (the graph is the snapshot's plus these), the ancestors they
        # give, and a count that grows with every new such edge.
        self._overlay: dict[str, tuple[tuple[str, int, str], ...]] = {}
        self._overlay_ancestors: dict[str, Ancestors] = {}
        self._overlay_version = 0
        # Incidents (open or not; checked on use) with a member at, or below, an
        # element, and with a symptom member right behind it.
        self._at: dict[str, dict[str, None]] = {}
        self._below: dict[str, dict[str, None]] = {}
        self._behind: dict[str, dict[str, None]] = {}
        # Incidents with a leaf port down (``port``) or a leaf unreachable
        # (``leaf``) right behind a device: the two pair up (see _pairing).
        self._paired: dict[tuple[str, str], dict[str, None]] = {}
        # Devices that reported a port of their own down, with the members that
        # say so (firing or not: checked on use): such a device answers its
        # poller, so it is up (see _answers).
        self._answering: dict[str, dict[str, None]] = {}
        # The device each report was filed under: a new graph may name the
        # reporter differently, and the report must still be found to forget it.
        self._answer_of: dict[str, str] = {}
        self._reporters: dict[str, str | None] = {}
        self._tracked: dict[str, _Tracked] = {}
        # Open incidents that may take joins, by group key, oldest first.
        self._open_by_key: dict[GroupKey, dict[str, None]] = {}
        # Open incidents started by a symptom the graph cannot place, waiting
        # for an outage under the same key to claim them (see _claimed).
        self._waiting: dict[str, None] = {}
        # Open incidents holding a port no neighbour row places and no device
        # (checked on use): what an unplaced unreachable device prefers (_by_key).
        self._lone_ports: dict[str, None] = {}
        # Each fingerprint's current episode lives in exactly one incident.
        self._by_fingerprint: dict[str, str] = {}
        # Ids of incidents no longer tracked (forgotten, or only in the store):
        # a new incident must never take one and overwrite its history.
        self._retired_ids: set[str] = set()
        # (resolved_at, id) of resolved incidents, soonest first, for forgetting
        # them without a scan; entries of incidents since reopened are skipped.
        self._resolved: list[tuple[datetime, str]] = []

    # -- public --------------------------------------------------------------

    @property
    def topology(self) -> TopologySnapshot:
        return self._topology

    def set_topology(self, topology: TopologySnapshot) -> None:
        """Use a newer graph for alerts from now on; members keep where they were placed."""
        self._topology = topology
        self._generation += 1
        self._gateways = gateways(topology)
        self._overlay.clear()
        self._forget_placements()

    def _forget_placements(self) -> None:
        """Drop everything worked out from the graph: it changed."""
        self._placements.clear()
        self._reporters.clear()
        self._paths.clear()
        self._label_ancestors.clear()
        self._overlay_ancestors.clear()

    @property
    def cofiring(self) -> CoFiring:
        return self._cofiring

    def set_cofiring(self, cofiring: CoFiring) -> None:
        """Use newly learned co-firing edges for alerts from now on."""
        self._cofiring = cofiring
        self._generation += 1

    def load(self, incidents: Iterable[Incident]) -> None:
        """Replace the state with ``incidents``: open ones and recently resolved ones."""
        self._tracked.clear()
        self._resolved.clear()
        self._open_by_key.clear()
        self._by_fingerprint.clear()
        self._at.clear()
        self._below.clear()
        self._behind.clear()
        self._paired.clear()
        self._answering.clear()
        self._answer_of.clear()
        self._waiting.clear()
        self._lone_ports.clear()
        # An incident another absorbed is over for good: tracked again, it could
        # own one of its absorber's alerts (ties between resolved incidents go
        # by id) and reopen on its own, or be absorbed a second time.
        ordered = sorted(
            (i for i in incidents if merged_into(i) is None), key=lambda i: (i.created_at, i.id)
        )
        owners: dict[str, tuple[datetime, bool, str]] = {}
        for incident in ordered:
            tracked = self._track(incident)
            if incident.status == "open":
                self._index_open(tracked)
            elif incident.resolved_at is not None:
                heapq.heappush(self._resolved, (incident.resolved_at, incident.id))
            for member in incident.members.values():
                # The newest episode owns the fingerprint; open beats resolved.
                claim = (member.starts_at, incident.status == "open", incident.id)
                if member.fingerprint not in owners or claim > owners[member.fingerprint]:
                    owners[member.fingerprint] = claim
        self._by_fingerprint = {fp: claim[2] for fp, claim in owners.items()}

    def apply(self, alert: Alert, now: datetime) -> Change | None:
        """Fold one alert in. ``None``: a resolved alert for nothing known, so nothing to do.

        A resolve for an episode the correlator never saw fire (the sidecar was
        down for the whole episode, or it was forgotten) creates no incident:
        there is nothing to explain and nothing to resolve downstream.
        """
        if alert.is_enriched:
            raise ValueError(
                f'alert {alert.fingerprint} carries scout_enriched="true": '
                "the sidecar's own output must never be correlated"
            )
        owner = self._by_fingerprint.get(alert.fingerprint)
        if owner is not None:
            tracked = self._tracked[owner]
            change = self._fold_known(tracked, alert, now)
            if change is not None:
                return change
        if alert.status == "resolved":
            return None
        return self._place(alert)

    def open_incidents(self) -> list[Incident]:
        """Open incidents, oldest first."""
        found = [t.incident for t in self._tracked.values() if t.incident.status == "open"]
        return sorted(found, key=lambda i: (i.created_at, i.id))

    def incident(self, id_: str) -> Incident | None:
        tracked = self._tracked.get(id_)
        return None if tracked is None else tracked.incident

    def reserve(self, incident_ids: Iterable[str]) -> None:
        """Mark ids as taken by incidents this correlator does not track (the store's)."""
        self._retired_ids.update(incident_ids)

    def forget_resolved_before(self, cutoff: datetime) -> None:
        """Drop incidents resolved before ``cutoff``; their members can no longer flap."""
        queue = self._resolved
        while queue and queue[0][0] < cutoff:
            resolved_at, stale_id = heapq.heappop(queue)
            tracked = self._tracked.get(stale_id)
            if (
                tracked is None
                or tracked.incident.status != "resolved"
                or tracked.incident.resolved_at != resolved_at
            ):
                continue  # absorbed, forgotten, or reopened since
            del self._tracked[stale_id]
            self._retired_ids.add(stale_id)
            for fingerprint, member in tracked.incident.members.items():
                if self._by_fingerprint.get(fingerprint) == stale_id:
                    del self._by_fingerprint[fingerprint]
                    if tracked.layers[fingerprint] == "link":
                        self._forget_answer(member)
            self._unindex_graph(stale_id, tracked)
            self._waiting.pop(stale_id, None)

    def layer_of(self, labels: Mapping[str, str]) -> Layer:
        """The alert's ``layer`` label if valid, else the first matching rule, else service.

        Memoised on the values of the labels the rules read (the alertname,
        for the built-in ones): a storm has few distinct answers.
        """
        key = tuple(map(labels.get, self._layer_labels, self._layer_blanks))
        found = self._layers.get(key)
        if found is not None:
            return found
        found = "service"
        given = labels.get(LAYER_LABEL, "")
        if given in _LAYER_INDEX:
            found = LAYERS[_LAYER_INDEX[given]]
        elif all(len(value or "") <= _RULE_INPUT_LIMIT for value in key):
            for match, layer in self._layer_rules:
                if labels_match(match, labels):
                    found = layer
                    break
        if len(self._layers) < _LAYER_MEMO:
            self._layers[key] = found
        return found

    def kind_of(self, labels: Mapping[str, str], layer: Layer) -> int:
        """What kind of symptom or port counter the alert of ``layer`` is (see ``_carries``)."""
        name = labels.get("alertname", "")
        found = self._kinds.get(name)
        if found is None:
            found = (
                next((kind for match, kind in _SYMPTOM_KINDS if match.fullmatch(name)), 0)
                if len(name) <= _RULE_INPUT_LIMIT
                else 0
            )
            if len(self._kinds) < _LAYER_MEMO:
                self._kinds[name] = found
        if layer not in _DEGRADED_LAYERS:
            # Only a network-layer alert is a port's counter: drops of another
            # layer (a firewall's connection tracking, a transit box running
            # out) explain any degradation behind it, a failing check too.
            found &= _KIND_MASK
        if layer == "service":
            found |= _REACH_BITS[service_reach(labels)]
        instance = labels.get("instance", "")
        if ":" in instance and is_printing_endpoint(instance):
            found |= _PRINTING_PORT_BIT
        return found

    # -- folding -------------------------------------------------------------

    def _fold_known(self, tracked: _Tracked, alert: Alert, now: datetime) -> Change | None:
        """An alert whose fingerprint has a member; None when it starts a new episode."""
        member = tracked.incident.members[alert.fingerprint]
        # To the millisecond: reconciliation reads startsAt from Alertmanager's
        # API, which keeps no more, and the webhook may deliver the same episode.
        same_episode = episode_start(alert.starts_at) == episode_start(member.starts_at)
        if (alert.starts_at < member.starts_at and not same_episode) or (
            same_episode
            # Firing after its own resolve, same startsAt: a late copy from an HA peer.
            and (alert.status == member.status or alert.status == "firing")
        ):
            return self._duplicate(tracked, member)
        if same_episode:
            ends_at = alert.ends_at or now
            resolved = replace(
                member, status="resolved", ends_at=ends_at, annotations=dict(alert.annotations)
            )
            return self._member_changed(tracked, resolved, ends_at, flapped=False)
        # A newer episode. Without a resolve in between we missed it: still the same member.
        is_open = tracked.incident.status == "open"
        within_flap = member.status == "firing" or (
            member.ends_at is not None
            and alert.starts_at - member.ends_at <= self._config.flap_window
        )
        refires_in_place = alert.status == "firing" and is_open and self._accepts(tracked, alert)
        if not (within_flap or refires_in_place):
            return None
        event = alert.starts_at if alert.status == "firing" else (alert.ends_at or now)
        flapped = replace(
            member,
            status=alert.status,
            starts_at=alert.starts_at,
            ends_at=None if alert.status == "firing" else (alert.ends_at or now),
            annotations=dict(alert.annotations),
            generator_url=alert.generator_url or member.generator_url,
            flap_count=member.flap_count + 1,
        )
        change = self._member_changed(tracked, flapped, event, flapped=True)
        if alert.status == "firing":
            change = self._take_explained(tracked, change, flapped)
        return change

    def _take_explained(self, tracked: _Tracked, change: Change, member: Member) -> Change:
        """A member firing again takes the incidents whose root cause its new episode
        explains (:meth:`_roots_explained`), open or resolved.

        A new alert joins its effects' incidents or absorbs them; a flap stays
        in its own incident, which must then take them the same way: a switch
        that went down again, delivered after the alerts it causes had started
        incidents of their own (or come and gone), is still their root cause.
        """
        fp = member.fingerprint
        found = self._roots_explained(
            tracked.placements[fp],
            tracked.layers[fp],
            tracked.kinds[fp],
            member.starts_at,
            open_too=True,
        )
        absorbed = self._absorb_fitting(tracked, found, member.starts_at)
        if not absorbed:
            return change
        before = tracked.incident
        incident = _incident_with(
            before,
            members=tracked.log.view(),
            created_at=min([before.created_at, *(gone.created_at for gone in absorbed)]),
            updated_at=max([before.updated_at, *(gone.updated_at for gone in absorbed)]),
        )
        tracked.incident = self._with_root_cause(tracked, incident)
        return Change(tracked.incident, change.kind, tuple(absorbed))

    def _absorb_fitting(
        self, tracked: _Tracked, others: Iterable[_Tracked], event: datetime
    ) -> list[Incident]:
        """Absorb into ``tracked`` each of ``others`` that fits it; what they were."""
        return [
            self._absorb(tracked, other, event)
            for other in others
            if other is not tracked and self._fits(tracked, other)
        ]

    def _duplicate(self, tracked: _Tracked, member: Member) -> Change:
        # Bookkeeping only: version and updated_at stay, so no re-analysis follows.
        tracked.log = tracked.log.put(_member_with(member, duplicates=member.duplicates + 1))
        tracked.incident = _incident_with(tracked.incident, members=tracked.log.view())
        return Change(tracked.incident, "duplicate")

    def _member_changed(
        self, tracked: _Tracked, member: Member, event: datetime, *, flapped: bool
    ) -> Change:
        before = tracked.incident
        previous = before.members[member.fingerprint]
        self._restate(tracked, previous, member)
        if flapped:
            tracked.span_end = max(tracked.span_end, member.starts_at)
        tracked.log = tracked.log.put(member)
        members = tracked.log.view()
        updated_at = max(before.updated_at, event)
        kind: ChangeKind = "flapped" if flapped else "updated"
        status = before.status
        resolved_at = before.resolved_at
        if before.status == "open":
            if self._config.resolve == "all_members":
                now_resolved = tracked.firing == 0
            else:
                now_resolved = (
                    member.fingerprint == before.root_cause and member.status == "resolved"
                )
            if now_resolved:
                status, resolved_at, kind = "resolved", event, "resolved"
                self._unindex_open(tracked)
        elif member.status == "firing":
            status, resolved_at, kind = "open", None, "reopened"
            self._index_open(tracked)
        incident = _incident_with(
            before,
            status=status,
            members=members,
            updated_at=updated_at,
            resolved_at=resolved_at,
            version=before.version + 1,
        )
        # A resolved incident keeps the root cause it was resolved with under
        # root_cause; under all_members the final ranking is as good as any.
        freeze = status == "resolved" and (
            before.status == "resolved" or self._config.resolve == "root_cause"
        )
        tracked.incident = incident if freeze else self._with_root_cause(tracked, incident)
        if status == "resolved" and resolved_at is not None and before.status == "open":
            heapq.heappush(self._resolved, (resolved_at, before.id))
        if status != "open":
            self._waiting.pop(before.id, None)
        return Change(tracked.incident, kind)

    def _place(self, alert: Alert) -> Change:
        """A firing alert starting a new episode: join an open incident or create one."""
        key = group_key(alert.labels, self._group_by)
        member = Member(
            fingerprint=alert.fingerprint,
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
            status="firing",
            starts_at=alert.starts_at,
            first_starts_at=alert.starts_at,
            generator_url=alert.generator_url,
        )
        taught = self._overlay_version
        placement = self.place(alert.labels)
        taught = taught != self._overlay_version
        layer = self.layer_of(alert.labels)
        related, late = self._related(alert, placement, layer)
        joined = related[0] if related else None
        unplaced = self._joins_by_key(placement, layer)
        if joined is None and unplaced:
            joined = self._by_key(alert, key)
        if joined is not None:
            tracked = joined
            before = tracked.incident
            tracked.log = tracked.log.put(member)
            self._add_member(tracked, member, placement, layer, key)
            tracked.span_start = min(tracked.span_start, member.starts_at)
            tracked.span_end = max(tracked.span_end, member.starts_at)
            self._by_fingerprint[member.fingerprint] = before.id
            created_at = min(before.created_at, member.starts_at)
            updated_at = max(before.updated_at, member.starts_at)
            if not unplaced:
                self._waiting.pop(before.id, None)
            others = {other.incident.id: other for other in related[1:]}
            for other in (*self._claimed(tracked), *late):
                others.setdefault(other.incident.id, other)
            absorbed = self._absorb_fitting(tracked, others.values(), alert.starts_at)
            created_at = min([created_at, *(gone.created_at for gone in absorbed)])
            updated_at = max([updated_at, *(gone.updated_at for gone in absorbed)])
            if taught:
                self._extend_below(tracked, placement)
            # One new value per alert: the members, times and root cause together.
            members = tracked.log.view()
            root_cause, reasons, facts = self._root_cause(tracked, members)
            tracked.incident = _incident_with(
                before,
                members=members,
                created_at=created_at,
                updated_at=updated_at,
                version=before.version + 1,
                root_cause=root_cause,
                root_cause_reasons=reasons,
                root_cause_facts=facts,
            )
            return Change(tracked.incident, "joined", tuple(absorbed))
        new_id = incident_id(key, alert.starts_at)
        if new_id in self._tracked or new_id in self._retired_ids:
            # Same key and start second as a known incident that would not take
            # the alert (resolved, or full): the fingerprint tells them apart.
            new_id = incident_id(key, alert.starts_at, alert.fingerprint)
        incident = Incident(
            id=new_id,
            status="open",
            group=dict(key),
            members={member.fingerprint: member},
            created_at=member.starts_at,
            updated_at=member.starts_at,
            version=1,
        )
        tracked = self._track(incident)
        self._index_open(tracked)
        self._by_fingerprint[member.fingerprint] = new_id
        if unplaced and not self._keys_only():
            self._waiting[new_id] = None
        gone = [
            self._absorb(tracked, other, alert.starts_at)
            for other in late
            if self._fits(tracked, other)
        ]
        if gone:
            incident = replace(
                incident,
                members=tracked.log.view(),
                created_at=min(incident.created_at, *(g.created_at for g in gone)),
                updated_at=max(incident.updated_at, *(g.updated_at for g in gone)),
            )
        if taught:
            self._extend_below(tracked, placement)
        tracked.incident = self._with_root_cause(tracked, incident)
        return Change(tracked.incident, "created", tuple(gone))

    def _joins_by_key(self, placement: Placement, layer: Layer) -> bool:
        """Whether an alert may join by group key (site), the fallback to the graph.

        Without a discovered topology, every alert does (today's rule). With one,
        ``key_fallback: unknown`` keeps it for symptoms (device, link, network)
        of elements the graph knows nothing of: a full disk and a stopped service
        that merely share a site stay apart. ``always``: every alert.
        """
        if self._key_fallback == "always" or self._topology.empty:
            return True
        if self._key_fallback == "never":
            return False
        return not placement.known and layer in _KEY_LAYERS

    def _indexed_by_key(self, layer: Layer) -> bool:
        return self._key_fallback == "always" or self._topology.empty or layer in _KEY_LAYERS

    def _keys_only(self) -> bool:
        """Whether joins by group key follow today's rule (no graph, or ``always``)."""
        return self._key_fallback == "always" or self._topology.empty

    def _by_key(self, alert: Alert, key: GroupKey) -> _Tracked | None:
        """A join by group key: an open incident under the same key, oldest first.

        Without a graph (or with ``key_fallback: always``) any such incident
        within the window, today's rule. With one, a symptom the graph cannot
        place joins only other unplaced symptoms of its kind, or an outage that started
        within the window (:meth:`_outage_near`): sharing a site with a full
        disk or a port with errors says nothing.
        """
        keys_only = self._keys_only()
        candidates = self._open_by_key.get(key, {})
        if not keys_only and self._lone_ports and self.layer_of(alert.labels) == "device":
            # A device no one placed, unreachable: a port of the moment that
            # no neighbour row places and no device has joined yet is likely its own.
            for candidate in list(self._lone_ports):
                tracked = self._tracked.get(candidate)
                if tracked is None or tracked.devices or tracked.incident.status != "open":
                    self._lone_ports.pop(candidate, None)
                    continue
                root = tracked.incident.root_cause or ""
                if (
                    candidate in candidates
                    and tracked.unknown_ports > 0
                    and root in tracked.placements
                    and tracked.placements[root].also is not None
                    and tracked.firing_now[root]
                    and abs(alert.starts_at - tracked.fixed[root][0]) <= self._config.window
                    and alert.fingerprint not in tracked.layers
                    and self._accepts(tracked, alert)
                ):
                    return tracked
        # An outage of the moment first; else other unplaced symptoms of its
        # own kind waiting for one (which it claims when it comes, at the cost
        # of moving them): an outage with outages, degradation with degradation.
        # A common cause makes symptoms of one kind (a site cut off: devices
        # unreachable; a congested uplink: loss and latency); a printer
        # switched off and jitter to a phone at one site have none.
        waiting = None
        outage: bool | None = None
        for candidate in candidates:
            tracked = self._tracked[candidate]
            # ``layers`` has every member: a dict lookup, not the member view's.
            if alert.fingerprint in tracked.layers or not self._accepts(tracked, alert):
                continue
            if keys_only or self._outage_near(tracked, alert):
                return tracked
            if waiting is None and candidate in self._waiting:
                if outage is None:
                    outage = self.layer_of(alert.labels) in _OUTAGE_LAYERS
                waits_for = tracked.layers.get(tracked.incident.root_cause or "", "service")
                if (waits_for in _OUTAGE_LAYERS) == outage:
                    waiting = tracked
        return waiting

    def _outage_near(self, tracked: _Tracked, alert: Alert) -> bool:
        """Whether the incident's root cause is an outage that may explain the unplaced alert.

        A firing device or link failure that started within the window; for
        an alert that is itself no outage (loss, errors), one that already
        explains other members.
        """
        best = tracked.incident.root_cause
        if (
            best not in tracked.layers
            or tracked.layers[best] not in _OUTAGE_LAYERS
            or not tracked.firing_now[best]
            or abs(alert.starts_at - tracked.fixed[best][0]) > self._config.window
        ):
            return False
        if self._spent(tracked, best):
            return False
        return tracked.explains[best] > 0 or self.layer_of(alert.labels) in _OUTAGE_LAYERS

    def _spent(self, tracked: _Tracked, best: str) -> bool:
        """Whether the outage ``best`` is one device's and accounts for it already.

        The link to a leaf (a printer, a camera), or a port nothing is known
        behind that an unreachable leaf paired with: what else fails at the
        site is not behind it, so it claims no unplaced symptom. (A leaf's own
        unreachable alert still does: in a storm it is often the first of
        many behind a switch whose own alert comes later.)
        """
        placement = tracked.placements[best]
        node = placement.node
        if node is None:
            return False
        if node.startswith("link:") and self._topology.dead_end(node):
            return True
        return (placement.also is not None or placement.leaf) and _paired(tracked)

    def _claimed(self, tracked: _Tracked) -> list[_Tracked]:
        """Incidents of unplaced symptoms an outage in ``tracked`` now claims.

        Unplaced symptoms often fire before the outage that explains them (a
        probe's ``for:`` is shorter than the port's); each started an incident
        of its own, which the outage takes once it ranks as root cause: started
        within ``window`` of it, under a key the incident holds or a key that
        names nothing but the target.
        """
        if not self._waiting or self._keys_only():
            return []
        best, _ = self._best(tracked)
        layer = tracked.layers[best]
        if (
            layer not in _OUTAGE_LAYERS
            or tracked.explains[best] == 0
            or not tracked.firing_now[best]
            or self._spent(tracked, best)
        ):
            return []
        first = tracked.log.latest(best).first_starts_at
        window = self._config.window
        found = []
        for candidate in list(self._waiting):
            other = self._tracked.get(candidate)
            if other is tracked:
                continue  # it may wait still, for another outage
            if other is None or other.incident.status != "open":
                self._waiting.pop(candidate, None)
                continue
            keys = other.keys
            if (
                abs(other.span_start - first) <= window
                and keys
                and all(_names_place(key) and key in tracked.key_set for key in keys)
            ):
                found.append(other)
        return found

    def _fits(self, tracked: _Tracked, other: _Tracked) -> bool:
        """Whether ``tracked`` may absorb ``other``: the span stays within ``max_span``,
        and ``other`` holds no alert's current episode while ``tracked`` holds an
        older one of it (an incident keeps one member per fingerprint: the newer
        episode would be dropped, and the alert's next delivery would look for
        an incident that is gone)."""
        start = min(tracked.span_start, other.span_start)
        if max(tracked.span_end, other.span_end) - start > self._config.max_span:
            return False
        gone, owners = other.incident.id, self._by_fingerprint
        return not any(fp in tracked.layers and owners.get(fp) == gone for fp in other.layers)

    def _absorb(self, tracked: _Tracked, other: _Tracked, event: datetime) -> Incident:
        """Move ``other``'s members into ``tracked`` (its log, for its next value).

        Returns ``other``'s last value, resolved. Members keep the placement
        they were given, as they would in ``tracked`` had they joined it.
        """
        gone = other.incident
        self._unindex_open(other)
        self._unindex_graph(gone.id, other)
        self._waiting.pop(gone.id, None)
        del self._tracked[gone.id]
        self._retired_ids.add(gone.id)
        for member in sorted(gone.members.values(), key=lambda m: m.fingerprint):
            fp = member.fingerprint
            if fp in tracked.log:
                continue
            tracked.log = tracked.log.put(member)
            self._add_member(tracked, member, other.placements[fp], other.layers[fp])
            if self._by_fingerprint.get(member.fingerprint) == gone.id:
                self._by_fingerprint[member.fingerprint] = tracked.incident.id
        tracked.span_start = min(tracked.span_start, other.span_start)
        tracked.span_end = max(tracked.span_end, other.span_end)
        return replace(
            gone,
            status="resolved",
            resolved_at=gone.resolved_at or max(event, gone.created_at),
            updated_at=max(gone.updated_at, event),
            version=gone.version + 1,
            root_cause_reasons=(MERGED_REASON + tracked.incident.id, *gone.root_cause_reasons),
        )

    def _related(
        self, alert: Alert, placement: Placement, layer: Layer
    ) -> tuple[list[_Tracked], list[_Tracked]]:
        """Open incidents the graph connects the alert to, within the window, oldest first.

        Connected: a member on the same element; a member upstream whose failure
        travels down to the alert (it explains the alert); a member downstream
        the alert explains; or, for symptoms seen from outside, a symptom behind
        the same device. Second: resolved incidents whose root cause the alert
        explains (below its element, or on it on a higher layer) and started
        within ``causal_window`` of it, for absorbing.
        """
        node = placement.node
        start = alert.starts_at
        # Candidate -> whether a cause or effect in it accepts the alert on the
        # causal window (else the plain window around the incident's span decides).
        found: dict[str, bool] = self._learned_related(alert, placement, layer)
        if node is None:
            return self._accepted(alert, found), []
        receives = _RECEIVES[layer]
        kind = self.kind_of(alert.labels, layer)
        if layer in _DEGRADED_LAYERS:
            kind = _own_address(kind, layer, node)
        shared_at = self._at
        for candidate in shared_at.get(node, {}):
            found[candidate] = found.get(candidate, False) or self._same_element_pulls(
                candidate, node, placement.transit, layer, kind, start
            )
        ancestors = _NO_STRENGTHS if _local(layer, node) else placement.ancestors
        # Most ancestors hold no member of any incident: the set intersection
        # finds the few that do without a lookup per ancestor. Any order will
        # do: what is found is combined by "or", and sorted in _accepted.
        for ancestor in ancestors.keys() & shared_at.keys():
            strength = ancestors[ancestor]
            if strength < receives:
                continue
            unknown = is_any_port(ancestor)
            for candidate in shared_at[ancestor]:
                tracked = self._tracked.get(candidate)
                if tracked is None:
                    continue
                causes = [
                    fp
                    for fp in tracked.at[ancestor]
                    if _explains(
                        tracked.layers[fp], tracked.placements[fp].transit, strength, layer
                    )
                    and _carries(tracked.kinds[fp], kind, layer)
                    and (not unknown or _unknown_port_explains(tracked.layers[fp], layer))
                ]
                if causes and is_any_port(ancestor) and placement.leaf and _paired(tracked):
                    # That port has the leaf it leads to: this leaf is on another.
                    continue
                if causes:
                    members = tracked.incident.members
                    pulls = any(
                        # Filling up slows traffic around when it fills, not for as
                        # long as the alert fires (a monitoring gap may fire for hours).
                        self._effect_of(members[fp], start)
                        if _TRAVELS[tracked.layers[fp]] > strength
                        else self._cause_pulls(members[fp], tracked.layers[fp], start)
                        for fp in causes
                    )
                    found[candidate] = found.get(candidate, False) or pulls
        also = placement.also
        for candidate in self._below_either(node, also):
            tracked = self._tracked.get(candidate)
            if tracked is None:
                continue
            effects = [
                fp
                for fp, strength in tracked.below.get(node, _NO_STRENGTHS).items()
                if _explains(layer, placement.transit, strength, tracked.layers[fp])
                and _carries(kind, tracked.kinds[fp], tracked.layers[fp])
            ]
            if also is not None and not _paired(tracked):
                # Behind some port of the device: this one, unless another has
                # taken the leaf already.
                effects += [
                    fp
                    for fp, strength in tracked.below.get(also, _NO_STRENGTHS).items()
                    if _unknown_port_explains(layer, tracked.layers[fp])
                    and _explains(layer, placement.transit, strength, tracked.layers[fp])
                    and _carries(kind, tracked.kinds[fp], tracked.layers[fp])
                ]
            if effects:
                members = tracked.incident.members
                pulls = any(self._effect_of(members[fp], start) for fp in effects)
                found[candidate] = found.get(candidate, False) or pulls
        # Resolved incidents whose root cause this alert explains, near its start:
        # effects that were over before their cause fired (a probe failing
        # briefly before the saturation alert's longer for: has passed).
        late = self._roots_explained(placement, layer, kind, start, open_too=False)
        if layer in _SYMPTOM_LAYERS and not _local(layer, node):
            for parent in placement.parents:
                if layer in _OUTAGE_LAYERS and self._answers(parent, start):
                    # The common cause would be the device, and it is up.
                    continue
                for candidate in self._behind.get(parent, {}):
                    found.setdefault(candidate, False)
        pairing = _pairing(placement, layer)
        if pairing is not None:
            partner = _PAIRS[pairing]
            for parent in placement.parents:
                for candidate in self._paired.get((partner, parent), {}):
                    paired = self._tracked.get(candidate)
                    if paired is not None and not _paired(paired):
                        found.setdefault(candidate, False)
        return self._accepted(alert, found), late

    def _same_element_pulls(
        self, candidate: str, node: str, transit: bool, layer: Layer, kind: int, start: datetime
    ) -> bool:
        """Whether a member of ``candidate`` on the alert's own element is its cause on a
        lower layer or its effect on a higher one, within the causal window (else the
        plain window decides).

        A host's volume filling and the service on it stopping minutes later
        (the database or web server that cannot write) are one failure, as a
        full disk and the endpoint on the host already are: the causal window
        is for effects that follow their cause by 5 to 15 minutes. Only across
        layers, lower explaining higher (a full disk, not a second disk alert;
        degradation explains only degradation), so two symptoms of one kind on
        one target still need the plain window.
        """
        tracked = self._tracked.get(candidate)
        if tracked is None or self._topology.empty:
            # Without a graph, correlation is today's (the window and group keys).
            return False
        by_layer = tracked.at_layers.get(node)
        if by_layer is None:
            return False
        rank = _LAYER_INDEX[layer]
        members = tracked.incident.members
        for other, fps in by_layer.items():
            other_rank = _LAYER_INDEX[other]
            if other_rank < rank:
                for fp in fps:
                    cause = _explains(other, tracked.placements[fp].transit, USES, layer)
                    cause = cause and _carries(tracked.kinds[fp], kind, layer)
                    if cause and self._cause_pulls(members[fp], other, start):
                        return True
            elif other_rank > rank:
                for fp in fps:
                    if self._effect_on_element(
                        tracked, fp, transit, layer, kind
                    ) and self._effect_of(members[fp], start):
                        return True
        return False

    @staticmethod
    def _effect_on_element(
        tracked: _Tracked, fp: str, transit: bool, layer: Layer, kind: int
    ) -> bool:
        """Whether an alert of ``layer`` and ``kind`` explains member ``fp`` on its own
        element: a higher layer whose failure its own failure accounts for."""
        other = tracked.layers[fp]
        return (
            _LAYER_INDEX[other] > _LAYER_INDEX[layer]
            and _explains(layer, transit, USES, other)
            and _carries(kind, tracked.kinds[fp], other)
        )

    def _roots_explained(
        self, placement: Placement, layer: Layer, kind: int, start: datetime, *, open_too: bool
    ) -> list[_Tracked]:
        """Resolved incidents (and with ``open_too`` open ones) whose root cause an
        alert of ``layer`` and ``kind`` at ``placement``, starting at ``start``,
        explains, and which started within ``causal_window`` of it: the incidents a
        cause that reached the sidecar after its effects takes, whatever its
        startsAt says of the order they failed in.

        The root may sit below the alert's element (behind some port of its
        device, for a port no neighbour row places) or on the element itself,
        on a higher layer (a switch's outage delivered after the service alert
        on it came and went: group_wait, a longer ``for:``). Without a graph
        the element itself is not looked at: correlation is then today's.
        """
        node, also = placement.node, placement.also
        if node is None:
            return []
        candidates = dict.fromkeys(self._below_either(node, also))
        if not self._topology.empty:
            candidates.update(self._at.get(node, {}))
        found = []
        for candidate in candidates:
            tracked = self._tracked.get(candidate)
            if tracked is None or (tracked.incident.status == "open" and not open_too):
                continue
            root = tracked.incident.root_cause
            if (
                root is not None
                and root in tracked.layers
                and self._explains_root(tracked, root, placement, layer, kind)
                and self._effect_of(tracked.incident.members[root], start)
            ):
                found.append(tracked)
        return found

    def _explains_root(
        self, tracked: _Tracked, root: str, placement: Placement, layer: Layer, kind: int
    ) -> bool:
        """Whether an alert at ``placement`` explains member ``root`` of ``tracked``
        (the same rules as its joins: :meth:`_related`, :meth:`_same_element_pulls`)."""
        node, also, transit = placement.node, placement.also, placement.transit
        effect, effect_kind = tracked.layers[root], tracked.kinds[root]
        if node is None:
            return False
        strength = tracked.below.get(node, _NO_STRENGTHS).get(root)
        if (
            strength is not None
            and _explains(layer, transit, strength, effect)
            and _carries(kind, effect_kind, effect)
        ):
            return True
        if also is not None and not _paired(tracked):
            strength = tracked.below.get(also, _NO_STRENGTHS).get(root)
            if (
                strength is not None
                and _unknown_port_explains(layer, effect)
                and _explains(layer, transit, strength, effect)
                and _carries(kind, effect_kind, effect)
            ):
                return True
        return (
            not self._topology.empty
            and root in tracked.at.get(node, _NO_STRENGTHS)
            and self._effect_on_element(tracked, root, transit, layer, kind)
        )

    def _reporter(self, member: Member) -> str | None:
        """The device that reported a port alert: the target polled (memoised per instance)."""
        instance = member.labels.get("instance", "")
        if instance in self._reporters:
            return self._reporters[instance]
        host = split_instance(instance)[0]
        found = self._topology.device(host) if host else None
        if len(self._reporters) < _LAYER_MEMO:
            self._reporters[instance] = found
        return found

    def _forget_answer(self, member: Member) -> None:
        reporter = self._answer_of.pop(member.fingerprint, None)
        reported = None if reporter is None else self._answering.get(reporter)
        if reporter is not None and reported is not None:
            reported.pop(member.fingerprint, None)
            if not reported:
                del self._answering[reporter]

    def _answers(self, device: str, start: datetime) -> bool:
        """Whether ``device`` reported a port of its own down around ``start``: it
        answered its poller then.

        A port's state comes from the device itself (its ``instance`` is the
        device polled), so while such an alert fires the device is up: two
        leaves behind it unreachable are not its failure (each is more likely
        unplugged or switched off, its own port down with it). Only a report
        that began within the join window of ``start`` says so: an older one
        may be a port down for days (an unplugged printer), or still shown
        firing for minutes after the device died, until its series go stale.
        """
        reported = self._answering.get(device)
        if not reported:
            return False
        forgotten = []
        answers = False
        window = self._config.window
        for fp in reported:
            owner = self._by_fingerprint.get(fp)
            tracked = None if owner is None else self._tracked.get(owner)
            if tracked is None or fp not in tracked.firing_now:
                forgotten.append(fp)
            elif tracked.firing_now[fp] and abs(tracked.fixed[fp][0] - start) <= window:
                answers = True
                break
        for fp in forgotten:
            del reported[fp]
            self._answer_of.pop(fp, None)
        return answers

    def _below_either(self, node: str, also: str | None) -> Iterable[str]:
        """Incidents with a member below ``node`` or ``also`` (an unknown port's device)."""
        below = self._below.get(node, {})
        if also is None or also not in self._below:
            return below
        return {**below, **self._below[also]}

    def _learned_related(self, alert: Alert, placement: Placement, layer: Layer) -> dict[str, bool]:
        """The incident holding the alert learned co-firing ties to this one most strongly
        (see below), near its start.

        One incident only: two sites that failed together on earlier days
        both co-fire with a device of either, and the edge must not join
        them. Not an incident whose root cause the graph places on another
        branch than the alert (:func:`_apart`): that is the graph's to say.
        """
        found: dict[str, bool] = {}
        cofiring = self._cofiring
        if not cofiring.partners:
            return found
        # The partner it fired with on the largest share of either's
        # episodes, then on the most occasions: a printer at one of two sites
        # that failed together fired with every alert of its own site's outages.
        best: tuple[float, int, str] = (0.0, 0, "")
        for partner in cofiring.of(alert.fingerprint):
            owner = self._by_fingerprint.get(partner.fingerprint)
            tracked = None if owner is None else self._tracked.get(owner)
            if owner is None or tracked is None:
                continue
            fp = partner.fingerprint
            root = tracked.incident.root_cause or fp
            if _apart(placement, layer, tracked.placements[fp], tracked.layers[fp]) or _apart(
                placement, layer, tracked.placements[root], tracked.layers[root]
            ):
                continue
            member = tracked.incident.members.get(fp)
            if member is not None and abs(member.starts_at - alert.starts_at) <= cofiring.window:
                share = partner.together / max(partner.episodes, 1)
                best = max(best, (share, partner.together, owner))
        if best[2]:
            found[best[2]] = True
        return found

    def _accepted(self, alert: Alert, found: Mapping[str, bool]) -> list[_Tracked]:
        """The open incidents among ``found`` that may take the alert, oldest first."""
        accepted = []
        for candidate, causal in found.items():
            tracked = self._tracked.get(candidate)
            if (
                tracked is None
                or tracked.incident.status != "open"
                or alert.fingerprint in tracked.layers
                or not (
                    self._within_span(tracked, alert) if causal else self._accepts(tracked, alert)
                )
            ):
                continue
            accepted.append(tracked)
        accepted.sort(key=lambda t: (t.incident.created_at, t.incident.id))
        return accepted

    def _cause_pulls(self, cause: Member, layer: Layer, start: datetime) -> bool:
        """A cause pulls in an effect starting at ``start``: from ``causal_window``
        before it (effects whose rules hold for less time fire first), and
        ``causal_window`` after it resolves (consequences of a memory leak may
        follow its resolve). In between, an outage (a device or link down) pulls
        for as long as it fires: what is behind it stays cut off. Degradation
        (errors, loss, a filling disk) pulls for ``causal_window`` after it
        starts: its consequences follow within minutes, and a degraded link
        that fires for hours does not explain every later fault behind it."""
        causal = self._config.causal_window
        if start < cause.first_starts_at - causal:
            return False
        if start <= cause.first_starts_at + causal:
            return True
        if cause.status == "firing" or cause.ends_at is None:
            return layer in _OUTAGE_LAYERS
        return start <= cause.ends_at + causal

    def _effect_of(self, effect: Member, start: datetime) -> bool:
        """A cause starting at ``start`` takes an effect that started within ``causal_window``
        of it, before or after."""
        return abs(effect.first_starts_at - start) <= self._config.causal_window

    def _within_span(self, tracked: _Tracked, alert: Alert) -> bool:
        start = alert.starts_at
        span = max(tracked.span_end, start) - min(tracked.span_start, start)
        return span <= self._config.max_span

    def place(self, labels: Mapping[str, str]) -> Placement:
        """Where ``labels`` sit in the graph (memoised per target and interface)."""
        cache_key = tuple(map(labels.get, _PLACE_LABELS, _PLACE_BLANKS))
        found = self._placements.get(cache_key)
        if found is not None:
            return found
        topology = self._topology
        node = topology.node_of(labels)
        if node is None:
            found = _NOWHERE
        else:
            extra = topology.label_parents(labels, node)
            self._learn_labels(node, extra)
            own = topology.parents.get(node, ())
            ancestors, known = self._ancestors(node, extra)
            if not known and self._gateways and _outside(node):
                ways_out = [(gateway, PATH, OUTSIDE_WHY) for gateway in self._gateways]
                extra = [*extra, *ways_out]
                ancestors = combine(
                    ((gateway, PATH, topology.ancestors(gateway)) for gateway, _, _ in ways_out),
                    ancestors,
                )
                known = True
            near = [(parent, why) for parent, _, why in (*own, *extra)]
            unknown_port = node.startswith("port:") and not topology.knows(node)
            found = Placement(
                node=node,
                ancestors=ancestors,
                parents=self._behind_of(node, (*own, *extra)),
                known=known,
                hops=tuple(near),
                transit=node in topology.transit,
                leaf=node not in topology.upstream_of,
                also=any_port("dev:" + node[5:].partition("|")[0]) if unknown_port else None,
            )
        self._placements[cache_key] = found
        return found

    def _learn_labels(self, node: str, extra: Sequence[tuple[str, int, str]]) -> None:
        """Keep what an alert's ``upstream``/``via`` labels say of a target the graph lacks.

        Without target rows (Prometheus scrapes nothing of the estate, or not
        yet), the labels are all there is: an access point behind a switch
        whose own alert says it sits behind the core is behind the core too,
        whichever alert came first. Each new edge drops the placements worked
        out without it (they are worked out again, per target, on use).
        """
        holder = _target_node(node)
        if holder is None or holder in self._topology.parents:
            return
        behind = {edge for edge in extra if edge[2] == "behind"}
        if not behind:
            return
        known = self._overlay.get(holder, ())
        if behind.issubset(known):
            return
        self._overlay[holder] = tuple(sorted(behind.union(known)))
        self._overlay_version += 1
        self._forget_placements()

    def _ancestors_of(self, node: str) -> Ancestors:
        """The node's ancestors in the graph and in what alerts' labels added to it."""
        base = self._topology.ancestors(node)
        overlay = self._overlay
        if not overlay:
            return base
        found = self._overlay_ancestors.get(node)
        if found is not None:
            return found
        self._overlay_ancestors[node] = base  # a cycle back to it adds nothing
        parents: list[tuple[str, int, Ancestors]] = []
        for holder, held in ((node, USES), *base.items()):
            edges = overlay.get(holder)
            if not edges:
                continue
            parents += [
                (parent, min(held, strength), self._ancestors_of(parent))
                for parent, strength, _ in edges
            ]
            parents += [
                (parent, min(held, strength), further)
                for parent, strength, further in any_port_edges(
                    edges, self._topology.parents.get(holder, ())
                )
            ]
        if parents:
            grown = combine(parents, base)
            grown.pop(node, None)
            found = grown
        else:
            found = base
        self._overlay_ancestors[node] = found
        return found

    def _ancestors(self, node: str, extra: list[tuple[str, int, str]]) -> tuple[Ancestors, bool]:
        """The node's own ancestors (precomputed) and those its labels add; and whether
        it is placed: an ancestor is anchored in the network, a cabled link or a
        device traffic passes through (a link's end nearer the root, or what a
        target is behind). What only dependencies name (a server, its
        ``host:port``, what it uses in turn) places nothing: what runs on what
        says nothing of where it sits, so such endpoints, the server's ping and
        the checks using them wait on the site key alike, whichever fires
        first and however the dependency names the server.

        For a node the graph has no edge of (most targets: a printer behind its
        switch, a probed address) they depend on the labels alone, which many
        targets share (one ``upstream``, one poller): memoised on those.
        """
        topology = self._topology
        shared = node not in topology.parents
        key = tuple(extra)
        if shared:
            found = self._label_ancestors.get(key)
            if found is not None and node not in found[0]:
                return found
        ancestors = combine(
            [
                *((parent, strength, self._ancestors_of(parent)) for parent, strength, _ in extra),
                *any_port_edges(extra, topology.parents.get(node, ())),
            ],
            self._ancestors_of(node),
        )
        ancestors.pop(node, None)
        known = any(
            strength >= PATH and (ancestor.startswith("link:") or ancestor in topology.transit)
            for ancestor, strength in ancestors.items()
        )
        if shared and node not in ancestors and len(self._label_ancestors) < _PATH_MEMO:
            self._label_ancestors[key] = (ancestors, known)
        return ancestors, known

    def _behind_of(self, node: str, edges: Iterable[tuple[str, int, str]]) -> tuple[str, ...]:
        """What the element sits right behind, for joining symptoms that share it.

        Its parents along paths and uses. A leaf (nothing depends on it: a
        server, an access point, a probed address) cabled on a link of its own
        sits behind the device at the link's other end: two leaves of one
        switch failing together point at the switch, while two devices with
        others behind them (two sites' routers on one WAN router) may well fail
        apart, so they stay behind their own links.
        """
        topology = self._topology
        leaf = node not in topology.upstream_of
        found: set[str] = set()
        edges = tuple(edges)
        # A label naming the device at the far end of its own cable says no more
        # than the cable: a router stays behind its link, not behind the WAN router.
        cabled_to = () if leaf else cabled_devices(edges)
        for parent, strength, _ in edges:
            if strength < PATH or (not leaf and parent in cabled_to):
                continue
            if leaf and parent.startswith(("link:", "port:")):
                above = [
                    up
                    for up, up_strength, _ in topology.parents.get(parent, ())
                    if up_strength >= PATH and up.startswith("dev:")
                ]
                if above:
                    found.update(above)
                    continue
            found.add(parent)
        return tuple(sorted(found))

    def _index_open(self, tracked: _Tracked, keys: Iterable[GroupKey] | None = None) -> None:
        for key in tracked.keys if keys is None else keys:
            self._open_by_key.setdefault(key, {})[tracked.incident.id] = None

    def _unindex_graph(self, incident_id: str, tracked: _Tracked) -> None:
        for index, nodes in (
            (self._at, tracked.at),
            (self._below, tracked.below),
        ):
            for node in nodes:
                _drop(index, node, incident_id)
        for fp, placement in tracked.placements.items():
            kind = _pairing(placement, tracked.layers[fp])
            for parent in placement.parents:
                _drop(self._behind, parent, incident_id)
                if kind is not None:
                    _drop(self._paired, (kind, parent), incident_id)

    def _accepts(self, tracked: _Tracked, alert: Alert) -> bool:
        window = self._config.window
        start = alert.starts_at
        if not tracked.span_start - window <= start <= tracked.span_end + window:
            return False
        span = max(tracked.span_end, start) - min(tracked.span_start, start)
        return span <= self._config.max_span

    def _unindex_open(self, tracked: _Tracked) -> None:
        for key in tracked.keys:
            ids = self._open_by_key.get(key, {})
            ids.pop(tracked.incident.id, None)
            if not ids:
                self._open_by_key.pop(key, None)

    # -- ranking -------------------------------------------------------------

    def _track(self, incident: Incident) -> _Tracked:
        members = list(incident.members.values())
        tracked = _Tracked(
            incident=incident,
            key=tuple(incident.group.items()),
            span_start=min(m.first_starts_at for m in members),
            span_end=max(m.starts_at for m in members),
            log=MemberLog(incident.members),
        )
        for member in sorted(members, key=lambda m: (m.first_starts_at, m.fingerprint)):
            self._add_member(tracked, member)
        self._tracked[incident.id] = tracked
        return tracked

    def _add_member(
        self,
        tracked: _Tracked,
        member: Member,
        placement: Placement | None = None,
        layer: Layer | None = None,
        key: GroupKey | None = None,
    ) -> None:
        """Rank and index a member ``tracked.log`` already holds; ``placement``,
        ``layer`` and group ``key`` are the member's when known (else computed
        from its labels)."""
        fp = member.fingerprint
        labels = member.labels
        target = target_of(labels)
        names = _names(labels, NAME_LABELS)
        references = _names(labels, REFERENCE_LABELS)
        targets = tracked.targets
        targets[fp] = target
        tracked.layers[fp] = self.layer_of(labels) if layer is None else layer
        tracked.kinds[fp] = self.kind_of(labels, tracked.layers[fp])
        by_name, by_reference = tracked.by_name, tracked.by_reference
        # Who already depends on the newcomer (each counted once) ...
        mine = {
            other
            for name in names
            for other in by_reference.get(name, ())
            if targets[other] != target
        }
        tracked.dependents[fp] = len(mine)
        # ... and whom the newcomer depends on.
        theirs = {
            other
            for name in references
            for other in by_name.get(name, ())
            if targets[other] != target
        }
        for name in names:
            by_name.setdefault(name, {})[fp] = None
        for name in references:
            by_reference.setdefault(name, {})[fp] = None
        tracked.fixed[fp] = (member.first_starts_at, severity_rank(member.severity))
        tracked.firing_now[fp] = member.status == "firing"
        self._count(tracked, member, +1)
        raised = self._add_to_graph(
            tracked, member, self.place(labels) if placement is None else placement, key
        )
        if self._cofiring.partners:
            raised += self._add_learned(tracked, fp)
        self._rank(tracked, fp)
        for other in theirs:
            tracked.dependents[other] += 1
            self._rank(tracked, other)
        for other in raised:
            self._rank(tracked, other)

    def _add_to_graph(
        self, tracked: _Tracked, member: Member, placement: Placement, key: GroupKey | None
    ) -> list[str]:
        """Index the member by element and group ``key`` (computed if None); returns
        the members whose ``explains`` grew."""
        fp = member.fingerprint
        incident_id = tracked.incident.id
        tracked.placements[fp] = placement
        if self._indexed_by_key(tracked.layers[fp]):
            if key is None:
                key = group_key(member.labels, self._group_by)
            if key not in tracked.key_set:
                tracked.keys.append(key)
                tracked.key_set.add(key)
                if tracked.incident.status == "open" and incident_id in self._tracked:
                    self._index_open(tracked, (key,))
        node = placement.node
        tracked.explains[fp] = 0
        if node is None:
            return []
        layer = tracked.layers[fp]
        if layer in _DEGRADED_LAYERS:
            tracked.kinds[fp] = _own_address(tracked.kinds[fp], layer, node)
        if placement.also is not None and layer == "link":
            tracked.unknown_ports += 1
            if not tracked.devices:
                self._lone_ports[incident_id] = None
        elif layer == "device":
            tracked.devices += 1
            tracked.leaves += placement.leaf and placement.known
        if layer == "link":
            reporter = self._reporter(member)
            if reporter is not None:
                self._answering.setdefault(reporter, {})[fp] = None
                self._answer_of[fp] = reporter
        receives = _RECEIVES[layer]
        kinds, kind = tracked.kinds, tracked.kinds[fp]
        below = {
            other
            for other, strength in tracked.below.get(node, _NO_STRENGTHS).items()
            if _accounts_for(layer, node, placement.transit, strength, tracked.layers[other])
            and _carries(kind, kinds[other], tracked.layers[other])
        }
        also = placement.also
        if also is not None:
            below.update(
                other
                for other, strength in tracked.below.get(also, _NO_STRENGTHS).items()
                if _unknown_port_explains(layer, tracked.layers[other])
                and _explains(layer, placement.transit, strength, tracked.layers[other])
                and _carries(kind, kinds[other], tracked.layers[other])
            )
        tracked.explains[fp] = len(below)
        if below:
            tracked.nearest[fp] = min(
                (len(tracked.placements[other].ancestors), other) for other in below
            )
        raised = []
        height = (len(placement.ancestors), fp)
        # Locals: this loop runs once per ancestor of every member.
        at, below_of, nearest = tracked.at, tracked.below, tracked.nearest
        layers, placements, explains = tracked.layers, tracked.placements, tracked.explains
        shared_below = self._below
        ancestors = _NO_STRENGTHS if _local(layer, node) else placement.ancestors
        # Members at its ancestors, found by set intersection (few ancestors
        # hold one); counts and minima, so the order does not matter.
        for ancestor in ancestors.keys() & at.keys():
            strength = ancestors[ancestor]
            if strength < receives:
                continue
            unknown = is_any_port(ancestor)
            for other in at[ancestor]:
                cause = layers[other]
                if _carries(kinds[other], kind, layer) and (
                    _accounts_for(
                        cause, placements[other].node, placements[other].transit, strength, layer
                    )
                    if not unknown
                    else _explains(cause, placements[other].transit, strength, layer)
                    and _unknown_port_explains(cause, layer)
                ):
                    explains[other] += 1
                    if other not in nearest or height < nearest[other]:
                        nearest[other] = height
                    raised.append(other)
        for ancestor, strength in ancestors.items():
            beneath = below_of.get(ancestor)
            if beneath is None:
                # The first member below it: the shared index learns of the incident once.
                below_of[ancestor] = {fp: strength}
                shared_below.setdefault(ancestor, {})[incident_id] = None
            else:
                beneath[fp] = strength
        for element in (node,) if also is None else (node, also):
            tracked.at.setdefault(element, {})[fp] = None
            tracked.at_layers.setdefault(element, {}).setdefault(layers[fp], {})[fp] = None
            self._at.setdefault(element, {})[incident_id] = None
        if layer in _SYMPTOM_LAYERS and not _local(layer, node):
            for parent in placement.parents:
                self._behind.setdefault(parent, {})[incident_id] = None
        pairing = _pairing(placement, layer)
        if pairing is not None:
            for parent in placement.parents:
                self._paired.setdefault((pairing, parent), {})[incident_id] = None
        return raised

    def _extend_below(self, tracked: _Tracked, placement: Placement) -> None:
        """Members placed behind an alert's target before its labels said what that is behind.

        Their placements were worked out without the new edge: they now also
        sit below the newcomer's ancestors, and members there may explain them.
        """
        holder = None if placement.node is None else _target_node(placement.node)
        beneath = None if holder is None else tracked.below.get(holder)
        if not beneath:
            return
        layers, placements, at = tracked.layers, tracked.placements, tracked.at
        below_of, explains, nearest = tracked.below, tracked.explains, tracked.nearest
        for other, strength in list(beneath.items()):
            height = (len(placements[other].ancestors), other)
            effect, effect_kind = layers[other], tracked.kinds[other]
            for ancestor, above in placement.ancestors.items():
                reach = min(strength, above)
                known = below_of.get(ancestor)
                before = -1 if known is None else known.get(other, -1)
                if before >= reach:
                    continue
                if known is None:
                    below_of[ancestor] = {other: reach}
                    self._below.setdefault(ancestor, {})[tracked.incident.id] = None
                else:
                    known[other] = reach
                if ancestor not in at:
                    continue
                unknown = is_any_port(ancestor)
                for cause in at[ancestor]:
                    layer, transit = layers[cause], placements[cause].transit
                    if unknown:
                        if not _unknown_port_explains(layer, effect):
                            continue
                        cause_node = None  # an unknown port accounts for no more than it explains
                    else:
                        cause_node = placements[cause].node
                    if (
                        cause == other
                        or not _carries(tracked.kinds[cause], effect_kind, effect)
                        or not _accounts_for(layer, cause_node, transit, reach, effect)
                    ):
                        continue
                    if before >= 0 and _accounts_for(layer, cause_node, transit, before, effect):
                        continue  # explained already
                    explains[cause] += 1
                    if cause not in nearest or height < nearest[cause]:
                        nearest[cause] = height
                    self._rank(tracked, cause)

    def _add_learned(self, tracked: _Tracked, fp: str) -> list[str]:
        """Count what learned co-firing edges explain between the newcomer and the members.

        The side that usually fires first explains the other; returns the
        members whose ``explains`` grew (besides the newcomer).
        """
        raised = []
        placement, layer = tracked.placements[fp], tracked.layers[fp]
        for partner in self._cofiring.of(fp):
            other = partner.fingerprint
            if other not in tracked.layers or _apart(
                placement, layer, tracked.placements[other], tracked.layers[other]
            ):
                continue
            if partner.leads:
                cause, effect = other, fp
                raised.append(other)
            elif partner.follows:
                cause, effect = fp, other
            else:
                continue
            tracked.explains[cause] += 1
            tracked.learned[cause] = tracked.learned.get(cause, 0) + 1
            strongest = (partner.together, effect)
            if strongest > tracked.learned_best.get(cause, (0, "")):
                tracked.learned_best[cause] = strongest
        return raised

    def _restate(self, tracked: _Tracked, previous: Member, member: Member) -> None:
        self._count(tracked, previous, -1)
        self._count(tracked, member, +1)
        tracked.firing_now[member.fingerprint] = member.status == "firing"
        self._rank(tracked, member.fingerprint)

    def _count(self, tracked: _Tracked, member: Member, delta: int) -> None:
        firing = member.status == "firing"
        bucket = (firing, tracked.layers[member.fingerprint])
        tracked.buckets[bucket] = tracked.buckets.get(bucket, 0) + delta
        if firing:
            tracked.firing += delta

    def _rank(self, tracked: _Tracked, fp: str) -> None:
        """(Re)compute one member's rank key and push it; stale heap entries are skipped later."""
        first_starts_at, severity = tracked.fixed[fp]
        learned = tracked.learned.get(fp, 0)
        key: RankKey = (
            # A known dependency outranks a statistical one: learned edges
            # only break ties between members the graph explains alike.
            (learned - tracked.explains[fp], -learned),
            0 if tracked.firing_now[fp] else 1,
            _LAYER_INDEX[tracked.layers[fp]],
            -tracked.dependents[fp],
            first_starts_at,
            -severity,
            fp,
        )
        ranks = tracked.ranks
        if ranks.get(fp) == key:
            return
        ranks[fp] = key
        heap = tracked.heap
        heapq.heappush(heap, (key, fp))
        if len(heap) > 4 * len(ranks) + 64:
            tracked.heap = [(k, f) for f, k in ranks.items()]
            heapq.heapify(tracked.heap)

    def _best(self, tracked: _Tracked) -> tuple[str, str | None]:
        """The root cause and the runner-up (the closest competitor), if any."""
        heap = tracked.heap
        while heap[0][0] != tracked.ranks[heap[0][1]]:
            heapq.heappop(heap)
        best = heapq.heappop(heap)
        while heap and heap[0][0] != tracked.ranks[heap[0][1]]:
            heapq.heappop(heap)
        runner = heap[0][1] if heap else None
        heapq.heappush(heap, best)
        return best[1], runner

    def _with_root_cause(self, tracked: _Tracked, incident: Incident) -> Incident:
        best, reasons, facts = self._root_cause(tracked, incident.members)
        return replace(
            incident, root_cause=best, root_cause_reasons=reasons, root_cause_facts=facts
        )

    def _root_cause(
        self, tracked: _Tracked, members: Mapping[str, Member]
    ) -> tuple[str, tuple[str, ...], RootCauseFacts]:
        """The root cause among ``members`` (tracked's), with its reasons and facts.

        The reasons are worked out again only when something they are read from
        changed (the root and runner-up members and ranks, the nearest and the
        learned member explained, the resolved count, the layers present, the
        graph): in a storm most joins add an alert the root does not explain.
        """
        best, runner = self._best(tracked)
        root = members[best]
        firing = root.status == "firing"
        learned = tracked.learned_best.get(best)
        signature = (
            best,
            runner,
            root,
            tracked.ranks[best],
            None if runner is None else (members[runner], tracked.ranks[runner]),
            tracked.nearest.get(best),
            None if learned is None else (learned, members[learned[1]]),
            len(members) - tracked.firing,
            self._above(tracked, firing, tracked.layers[best]),
            self._generation,
            self._t.language,
        )
        known = tracked.explained
        if known is not None and known[0] == signature and known[1] == best:
            return best, known[2], known[3]
        rule, reasons = self._explain(tracked, members, best, runner)
        node = tracked.placements[best].node
        facts = RootCauseFacts(
            rule,
            tracked.layers[best],
            tracked.dependents[best],
            "" if node is None else element_text(node),
            tracked.explains[best],
        )
        tracked.explained = (signature, best, reasons, facts)
        return best, reasons, facts

    @property
    def language(self) -> str:
        return self._t.language

    @language.setter
    def language(self, language: str) -> None:
        """Reasons worked out from now on are in ``language``; the others when next recomputed."""
        self._t = wording.analysis_translator(language)

    def _explain(
        self, tracked: _Tracked, members: Mapping[str, Member], best: str, runner: str | None
    ) -> tuple[RootCauseRule, tuple[str, ...]]:
        """Which rule picked ``best`` (against the runner-up), in words."""
        t = self._t
        root = members[best]
        what = wording.what(t, root)
        if runner is None:
            return "only", (t.gettext("only alert in the incident: {what}").format(what=what),)
        reasons: list[str] = []
        rule: RootCauseRule = ""
        mine, theirs = tracked.ranks[best], tracked.ranks[runner]
        explains = tracked.explains[best]
        learned = tracked.learned.get(best, 0)
        if explains > learned:
            reasons.append(self._path_reason(tracked, members, best))
        if learned:
            reasons.append(self._learned_reason(tracked, members, best))
        if explains:
            rule = "upstream" if mine[0] != theirs[0] else ""
        firing = root.status == "firing"
        resolved = len(members) - tracked.firing
        if firing and resolved:
            reasons.append(
                t.ngettext(
                    "still firing: {what}; {count} resolved alert ranks after it",
                    "still firing: {what}; {count} resolved alerts rank after it",
                    resolved,
                ).format(what=what, count=wording.number(t, resolved))
            )
            rule = rule or ("firing" if mine[1] != theirs[1] else "")
        layer = tracked.layers[best]
        above, lowest = self._above(tracked, firing, layer)
        if above:
            # A root that explains members on lower layers outranks them: it is
            # not the lowest layer then, only below the layers named.
            text = (
                t.gettext("lowest layer: {layer} ({alert}) below {above}")
                if lowest
                else t.gettext("layer: {layer} ({alert}) below {above}")
            )
            reasons.append(
                text.format(
                    layer=wording.layer_name(t, layer),
                    alert=root.alertname,
                    above=wording.join(t, [wording.layer_name(t, a) for a in above]),
                )
            )
            rule = rule or ("layer" if mine[2] != theirs[2] else "")
        dependents = tracked.dependents[best]
        other = members[runner]
        if not rule and mine[3] != theirs[3]:
            rule = "dependents"
            reasons.append(
                # English keeps its wording, "1 alert ... refer to" included, byte for byte.
                t.ngettext(
                    "most dependents: {count} alert on other targets refer to {names} "
                    "(next: {next})",
                    "most dependents: {count} alerts on other targets refer to {names} "
                    "(next: {next})",
                    dependents,
                ).format(
                    count=wording.number(t, dependents),
                    names=wording.join(t, _names(root.labels, NAME_LABELS)),
                    next=wording.number(t, -theirs[3]),
                )
            )
        elif dependents:
            reasons.append(
                t.ngettext(
                    "{count} alert on other targets refer to {names}",
                    "{count} alerts on other targets refer to {names}",
                    dependents,
                ).format(
                    count=wording.number(t, dependents),
                    names=wording.join(t, _names(root.labels, NAME_LABELS)),
                )
            )
        if not rule and mine[4] != theirs[4]:
            rule = "earliest"
            reasons.append(
                t.gettext("earliest start: {start}, before {other} at {other_start}").format(
                    start=wording.when(t, root.first_starts_at),
                    other=wording.what(t, other),
                    other_start=wording.when(t, other.first_starts_at),
                )
            )
        if not rule and mine[5] != theirs[5]:
            rule = "severity"
            none = t.gettext("none")
            reasons.append(
                t.gettext("highest severity: {severity} (next: {next})").format(
                    severity=root.severity or none, next=other.severity or none
                )
            )
        if not rule:
            rule = "fingerprint"
            reasons.append(
                t.gettext(
                    "tie-break: lowest fingerprint ({fingerprint}) among equally ranked alerts"
                ).format(fingerprint=best)
            )
        return rule, tuple(reasons)

    @staticmethod
    def _above(tracked: _Tracked, firing: bool, layer: Layer) -> tuple[tuple[Layer, ...], bool]:
        """The layers above the root's that members of its firing state are on,
        and whether none of those members is on a layer below the root's."""
        buckets = tracked.buckets
        mine = _LAYER_INDEX[layer]
        present = [other for other in LAYERS if buckets.get((firing, other), 0) > 0]
        above = tuple([other for other in present if _LAYER_INDEX[other] > mine])
        return above, all(_LAYER_INDEX[other] >= mine for other in present)

    def _learned_reason(self, tracked: _Tracked, members: Mapping[str, Member], best: str) -> str:
        """``learned from history: ProbeFailed on erp and 3 other alerts fired after … in 5 …``."""
        t = self._t
        learned = tracked.learned[best]
        together, effect = tracked.learned_best[best]
        subject = wording.what(t, members[effect])
        if learned > 1:
            subject = t.gettext("{subject} and {others}").format(
                subject=subject, others=wording.other_alerts(t, learned - 1)
            )
        # English reads "occasions" even for one, as it always has (byte for byte).
        return t.ngettext(
            "learned from history (a statistical dependency, not a known one): {subject} "
            "fired after {cause} within {window} on {count} past occasions",
            "learned from history (a statistical dependency, not a known one): {subject} "
            "fired after {cause} within {window} on {count} past occasions",
            together,
        ).format(
            subject=subject,
            cause=wording.what(t, members[best]),
            window=wording.lasting(t, self._cofiring.window),
            count=wording.number(t, together),
        )

    def _path_reason(self, tracked: _Tracked, members: Mapping[str, Member], best: str) -> str:
        """``sw-dist-3 and 27 other alerts are reached through core-1 Gi1/0/24, which is down``."""
        root_node = tracked.placements[best].node
        assert root_node is not None  # it explains members, so it has an element
        nearest = tracked.nearest[best][1]
        placement = tracked.placements[nearest]
        assert placement.node is not None
        t = self._t
        others = tracked.explains[best] - tracked.learned.get(best, 0) - 1
        fields = {
            "subject": element_text(placement.node),
            "root": element_text(root_node),
            "alert": members[best].alertname,
            "path": self._path(placement, tracked.placements[best].also or root_node),
        }
        if not others:
            return t.gettext(
                "{subject} depends on {root}, which is failing ({alert}): {path}"
            ).format(**fields)
        return t.ngettext(
            "{subject} and {count} other alert depend on {root}, which is failing ({alert}): "
            "{path}",
            "{subject} and {count} other alerts depend on {root}, which is failing ({alert}): "
            "{path}",
            others,
        ).format(count=wording.number(t, others), **fields)

    def _next_hop(self, node: str, goal: str) -> tuple[str, str] | None:
        """The next hop (node, why) from ``node`` up to ``goal``, labels' edges included."""
        for parent, _, why in (*self._topology.parents.get(node, ()), *self._overlay.get(node, ())):
            if _reaches(parent, goal) or goal in self._ancestors_of(parent):
                return parent, why
        return None

    def _path(self, placement: Placement, root_node: str) -> str:
        """The hops from an explained element up to the root's, memoised per graph.

        ``root_node``: the root's element, or the unknown ports of its device
        (:func:`~ai_sidecar.correlate.topology.any_port`) for a port no neighbour
        row places: the path then ends at the device.
        """
        assert placement.node is not None
        t = self._t
        key = (placement.node, placement.hops, root_node, t.language)
        found = self._paths.get(key)
        if found is not None:
            return found
        hops = [element_text(placement.node)]
        step: tuple[str, str] | None = next(
            (
                (parent, why)
                for parent, why in placement.hops
                if _reaches(parent, root_node) or root_node in self._ancestors_of(parent)
            ),
            None,
        )
        while step is not None and len(hops) < 8:
            parent, why = step
            hops.append(f"{t.gettext(why) if why in HOP_WORDS else why} {element_text(parent)}")
            if _reaches(parent, root_node):
                break
            step = self._next_hop(parent, root_node)
        found = f"{hops[0]} {', '.join(hops[1:])}"
        if len(self._paths) < _PATH_MEMO:
            self._paths[key] = found
        return found


_Key = TypeVar("_Key", bound=Hashable)


def _drop(index: dict[_Key, dict[str, None]], key: _Key, incident_id: str) -> None:
    """Remove an incident from one entry of a shared index, and the entry once empty."""
    entries = index.get(key)
    if entries is not None:
        entries.pop(incident_id, None)
        if not entries:
            del index[key]
