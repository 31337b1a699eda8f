"""What a firewall vendor is to ``/firewall``: the endpoints it reads and their mapping.

A vendor (``exporter.targets.firewall.fortigate``, ``opnsense``, ``pfsense``)
names the API endpoints one scrape reads, how to take the payload out of each
answer (``unwrap``, which says when an answer is an error in disguise), and
how the payloads map to the firewall schema (``read``). The scraper fetches
the endpoints in parallel and hands over those that answered; ``read`` fills
what they allow and leaves the rest "not reported", so one endpoint that
fails (a permission the API user lacks, a feature the firmware lacks) costs
only its own families.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from exporter.schema.firewall import FirewallSnapshot, GatewayState, HaState, RuleCounters
from exporter.targets.firewall.modules import FirewallModule
from exporter.targets.firewall.values import Node

AuthScheme = Literal["basic", "bearer", "api_key"]
ModuleT_contra = TypeVar("ModuleT_contra", bound=FirewallModule, contravariant=True)


class ShapeError(ValueError):
    """An answer that is not what the endpoint sends: an error page, another API."""


def as_is(payload: Node) -> Node:
    return payload


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One GET of a vendor's API; ``key`` is how the mapping refers to its payload."""

    key: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    # The payload out of the answer; raises ShapeError for an answer that is not one.
    unwrap: Callable[[Node], Node] = as_is
    # Query parameters that tell this GET from another of the same path, named in
    # the log with it (FortiOS's policy counters are read once per IP version).
    shown: tuple[str, ...] = ()

    def __str__(self) -> str:
        told = "&".join(f"{key}={value}" for key, value in self.query if key in self.shown)
        return f"{self.path}?{told}" if told else self.path


@dataclass(frozen=True, slots=True)
class Reading:
    """What ``read`` made of the answers: the snapshot, and the rules if they were read.

    ``rules`` is ``None`` when the rule endpoints did not answer: the scraper
    then leaves the rule families and ``rules_dropped`` out instead of
    reporting an empty policy. Rules come in policy order, with ``named`` set
    for those a series is kept for by default. ``rules_dropped`` counts rules the
    mapping itself left out (a rule an answer lists twice), which the scraper
    adds to the budget's. ``notes`` say what the answers lacked although every
    endpoint answered (a field the API user may not read); the scraper logs them
    with the endpoints that failed.
    """

    snapshot: FirewallSnapshot
    rules: list[RuleCounters] | None = None
    rules_dropped: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Answers:
    """The payloads of the endpoints that answered, by key; a missing key reads as empty."""

    payloads: Mapping[str, Node] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Node:
        return self.payloads.get(key, Node())

    def __contains__(self, key: str) -> bool:
        return key in self.payloads


class Vendor(Protocol[ModuleT_contra]):
    """One firewall API, as ``/firewall`` reads it."""

    @property
    def name(self) -> str:
        """The ``vendor`` label of ``scout_firewall_info``."""
        ...

    @property
    def auth_schemes(self) -> Mapping[AuthScheme, str]:
        """The auth schemes the API takes, each with what the credential is called there."""
        ...

    def endpoints(self, module: ModuleT_contra) -> Sequence[Endpoint]:
        """What one scrape reads, in the order it is reported."""
        ...

    def read(self, module: ModuleT_contra, answers: Answers) -> Reading:
        """The schema's view of the answers; never raises for a payload of the wrong shape."""
        ...


# Gateway states as pfSense and OPNsense write them (dpinger), and FortiOS's down.
_GATEWAY_DOWN = frozenset({"down", "force_down", "offline"})
_GATEWAY_UNKNOWN = frozenset({"", "pending", "unknown"})


def gateway_up(status: str, up_words: Collection[str] | None = None) -> bool | None:
    """Whether the firewall's gateway monitor says up: ``None`` when it does not say.

    Only a clear down is ``False``. With ``up_words`` (a vendor whose monitor
    has a word for up, FortiOS's ``up``) any other word is no answer: FortiOS's
    ``error`` (a member not taking part), ``unknown``, or a word not known here.
    Without (dpinger, on pfSense and OPNsense) every other word is up:
    ``none``/``online``, and the alarms ``delay``, ``loss``, ``delay+loss`` of
    a gateway still routing.
    """
    word = status.strip().lower()
    if word in _GATEWAY_UNKNOWN:
        return None
    if word in _GATEWAY_DOWN:
        return False
    return up_words is None or word in up_words or None


def gateway_state(
    name: str,
    status: str,
    rtt_seconds: float | None,
    loss_ratio: float | None,
    *,
    interface: str = "",
    up_words: Collection[str] | None = None,
) -> GatewayState:
    """One gateway as the schema has it, from its monitor's status, delay and loss.

    A gateway that is down with a delay of 0 got no reply to measure (dpinger
    and FortiOS write 0 then): its round trip is left out rather than exported
    as a 0 ms round trip. Its loss stays: 100 % is what was measured, and why
    it is down.
    """
    up = gateway_up(status, up_words)
    if up is False and rtt_seconds == 0:
        rtt_seconds = None
    return GatewayState(
        gateway=name,
        interface=interface,
        up=up,
        rtt_seconds=rtt_seconds,
        loss_ratio=loss_ratio,
    )


def carp_state(statuses: Iterable[str]) -> HaState:
    """The HA state from the CARP status of every virtual IP (MASTER, BACKUP, INIT...).

    No CARP address: a standalone firewall. All MASTER: the primary; all
    BACKUP: the secondary. MASTER for some and BACKUP for others means the
    two units split the addresses between them (a failover under way, or a
    split brain): role ``mixed``. Anything else (INIT, disabled) leaves the
    role empty: the unit is neither.
    """
    words = {status.strip().lower() for status in statuses}
    words.discard("")
    if not words:
        return HaState(mode="standalone", role="standalone")
    if words == {"master"}:
        role = "primary"
    elif words == {"backup"}:
        role = "secondary"
    elif {"master", "backup"} <= words:
        role = "mixed"
    else:
        role = ""
    return HaState(mode="carp", role=role)


def first_line(text: str, limit: int = 128) -> str:
    """A comment as a label value: its first line, bounded."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]
