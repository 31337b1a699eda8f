"""From alert episodes to the webhook deliveries the sidecar gets, as Alertmanager makes them.

The route is read from the shipped ``alertmanager/alertmanager.yml`` (the one
whose receiver is ``scout-sidecar``). Per group key (the values of the route's
``group_by``), an aggregation group:

- is created by the first alert to arrive, and flushes after ``group_wait`` and
  then on every ``group_interval`` tick;
- notifies at a tick when an alert joined the firing set or resolved since the
  last notification, or when ``repeat_interval`` has passed with alerts firing;
  a notification carries every alert of the group (resolved ones once);
- an alert that resolves and fires again between two ticks, with the same
  labels, is only seen by its new ``startsAt`` at the next notification;
- disappears once all its alerts have resolved and been sent.

Prometheus sends each firing and each resolve to every peer a fraction of a
second later. With an HA pair, the second peer runs its own groups (their ticks
fall elsewhere), waits its peer timeout (15 s) before sending, and skips a
notification whose content the first peer already sent and gossiped to it; a
gossip that is late or lost lets the copy through, with identical fingerprints.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ai_sidecar.models import Alert
from benchmarks.storms.prometheus import Episode
from exporter.common.durations import parse_duration

ALERTMANAGER_YML = Path(__file__).resolve().parents[2] / "alertmanager" / "alertmanager.yml"
SIDECAR_RECEIVER = "scout-sidecar"
# Alertmanager's --cluster.peer-timeout default: peer n waits n times this.
PEER_TIMEOUT = 15.0
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Route:
    """The timing of one Alertmanager route, in seconds."""

    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook POST: when it reaches the sidecar, from which peer, with which alerts."""

    at: float
    peer: int
    group: tuple[str, ...]
    alerts: tuple[Alert, ...]


def sidecar_route(path: Path = ALERTMANAGER_YML) -> Route:
    """The shipped route to the sidecar (inheriting unset timings from the root route)."""
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    root = document["route"]
    for route in root.get("routes", []):
        if route.get("receiver") == SIDECAR_RECEIVER:

            def seconds(key: str, route: dict[str, Any] = route) -> float:
                return parse_duration(str(route.get(key, root[key]))).total_seconds()

            return Route(
                group_by=tuple(route.get("group_by", root["group_by"])),
                group_wait=seconds("group_wait"),
                group_interval=seconds("group_interval"),
                repeat_interval=seconds("repeat_interval"),
            )
    raise ValueError(f"{path}: no route to the {SIDECAR_RECEIVER} receiver")


@dataclass(frozen=True, slots=True)
class _Sent:
    at: float
    firing: frozenset[tuple[str, float]]
    resolved: frozenset[tuple[str, float]]


def deliver(
    episodes: Sequence[Episode],
    route: Route,
    rng: random.Random,
    *,
    peers: int = 1,
    gossip_loss: float = 0.1,
) -> list[Delivery]:
    """Every webhook delivery ``episodes`` cause, from ``peers`` Alertmanagers, by time."""
    keys = [tuple(e.labels.get(name, "") for name in route.group_by) for e in episodes]
    deliveries: list[Delivery] = []
    first_peer_log: dict[tuple[str, ...], list[_Sent]] = {}
    for peer in range(peers):
        events: dict[tuple[str, ...], list[tuple[float, int, int]]] = {}
        for index, (episode, key) in enumerate(zip(episodes, keys, strict=True)):
            arrive = rng.uniform(0.05, 1.5)
            events.setdefault(key, []).append((episode.fired_at + arrive, 0, index))
            if episode.resolved_at is not None:
                events.setdefault(key, []).append((episode.resolved_at + arrive, 1, index))
        for key, found in events.items():
            found.sort()
            log = _run_group(episodes, route, found)
            if peer == 0:
                first_peer_log[key] = [sent for sent, _ in log]
                for sent, alerts in log:
                    at = sent.at + rng.uniform(0.01, 0.3)
                    deliveries.append(Delivery(at, peer, key, alerts))
                continue
            seen = first_peer_log.get(key, [])
            times = [sent.at for sent in seen]
            for sent, alerts in log:
                decide = sent.at + peer * PEER_TIMEOUT
                gossip = rng.uniform(0.1, 2.0) if rng.random() >= gossip_loss else float("inf")
                known = seen[: bisect.bisect_right(times, decide - gossip)]
                if (
                    known
                    and sent.firing <= known[-1].firing
                    and sent.resolved <= known[-1].resolved
                ):
                    continue
                deliveries.append(Delivery(decide + rng.uniform(0.01, 0.3), peer, key, alerts))
    deliveries.sort(key=lambda d: (d.at, d.peer))
    return deliveries


def _run_group(
    episodes: Sequence[Episode], route: Route, events: list[tuple[float, int, int]]
) -> list[tuple[_Sent, tuple[Alert, ...]]]:
    """One peer's notifications for one group key.

    ``events`` are (arrival, 0 for a fire or 1 for a resolve, episode index).
    """
    sent: list[tuple[_Sent, tuple[Alert, ...]]] = []
    # fingerprint -> (episode index, resolved?)
    current: dict[str, tuple[int, bool]] = {}
    last_firing: frozenset[str] = frozenset()
    last_resolved: frozenset[str] = frozenset()
    last_at: float | None = None
    created: float | None = None
    tick = 0.0
    i = 0
    while i < len(events):
        if created is None:
            created = events[i][0]
            tick = created + route.group_wait
        while i < len(events) and events[i][0] <= tick:
            _, kind, index = events[i]
            fp = episodes[index].fingerprint
            holder = current.get(fp)
            if kind == 0:
                current[fp] = (index, False)
            elif holder is not None and holder[0] == index:
                current[fp] = (index, True)
            i += 1
        firing = frozenset(fp for fp, (_, done) in current.items() if not done)
        resolved = frozenset(fp for fp, (_, done) in current.items() if done)
        repeat = (
            last_at is not None and bool(firing) and tick - last_at >= route.repeat_interval - 1e-6
        )
        if not firing <= last_firing or not resolved <= last_resolved or repeat:
            alerts = tuple(
                _alert(episodes[index], done) for _, (index, done) in sorted(current.items())
            )
            identity = frozenset(
                (fp, episodes[index].fired_at) for fp, (index, done) in current.items() if not done
            )
            gone = frozenset(
                (fp, episodes[index].fired_at) for fp, (index, done) in current.items() if done
            )
            sent.append((_Sent(tick, identity, gone), alerts))
            last_firing, last_resolved, last_at = firing, resolved, tick
            for fp in resolved:
                del current[fp]
            last_resolved = frozenset()
        if not current:
            created, last_at = None, None
            last_firing, last_resolved = frozenset(), frozenset()
            continue
        # Skip idle ticks: the next one that can matter is the next event or the repeat.
        upcoming = events[i][0] if i < len(events) else float("inf")
        if last_at is not None and firing:
            upcoming = min(upcoming, last_at + route.repeat_interval)
        if upcoming == float("inf"):
            break
        steps = max(1, -(-(upcoming - tick) // route.group_interval))
        tick += steps * route.group_interval
    return sent


def _alert(episode: Episode, resolved: bool) -> Alert:
    labels = dict(episode.labels)
    target = labels.get("instance", "")
    return Alert(
        fingerprint=episode.fingerprint,
        status="resolved" if resolved else "firing",
        labels=labels,
        annotations={"summary": f"{labels.get('alertname', '')} on {target}"},
        starts_at=T0 + timedelta(seconds=episode.fired_at),
        ends_at=(
            T0 + timedelta(seconds=episode.resolved_at)
            if resolved and episode.resolved_at is not None
            else None
        ),
    )


def at_time(seconds: float) -> datetime:
    """A storm time (seconds after T0) as a datetime."""
    return T0 + timedelta(seconds=seconds)


def alerts_in(deliveries: Sequence[Delivery]) -> int:
    return sum(len(d.alerts) for d in deliveries)


def group_of(labels: Mapping[str, str], route: Route) -> tuple[str, ...]:
    return tuple(labels.get(name, "") for name in route.group_by)
