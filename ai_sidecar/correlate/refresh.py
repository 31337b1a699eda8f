"""Keeping the dependency graph fresh: read the discovered part from Prometheus on a schedule.

The sidecar config gives what nothing discovers (``correlation.dependencies``,
``roots``, which jobs each poller reaches); Prometheus gives the rest, through
the :mod:`ai_sidecar.promql` client:

- ``max by (instance, local_port, remote_sysname, remote_port, remote_address,
  remote_chassis_id) (scout_lldp_neighbor_info)``: the LLDP/CDP neighbour rows
  (the contract the exporter's ``lldp`` and ``cdp`` modules produce,
  docs/correlation.md);
- ``max by (instance, local_sysname, local_chassis_id) (scout_lldp_local_info)``:
  each polled device's own name and chassis id, which say which scrape target a
  neighbour's ``remote_sysname``, ``remote_address`` or ``remote_chassis_id`` is;
- ``up``: one row per scrape target with its target-group labels (``site``,
  ``upstream``, ``via``);
- ``max by (instance, address) (last_over_time(scout_target_address_info[1h]))``:
  the addresses the exporter's scrapes resolved targets' names to, over the
  last hour, so that a DNS outage (when the rows stop) does not unlink a host
  from the checks written with its address just when both fail;
- ``up{job="<poller job>"}``: the poller instances, each with the
  ``scout_exporter`` value its targets' series carry.

:class:`TopologyRefresher` holds the latest :class:`TopologySnapshot` in
memory; the worker hands it to the correlator. A failed refresh keeps the
previous graph (counted in ``scout_sidecar_topology_refresh_failures``); with
no Prometheus, or before the first success, the graph is the config's alone,
and with nothing configured it is empty: correlation as without a graph.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from ai_sidecar.clock import utc_now
from ai_sidecar.config import CorrelationConfig
from ai_sidecar.correlate.topology import (
    EXPORTER_LABEL,
    Dependency,
    Poller,
    TopologySnapshot,
    build_snapshot,
)
from ai_sidecar.promql import PromQLClient, PromQLError

log = logging.getLogger(__name__)

NEIGHBOUR_LABELS = (
    "instance",
    "local_port",
    "remote_sysname",
    "remote_port",
    "remote_address",
    "remote_chassis_id",
)
# The polled devices' own identities, from the same exporter modules.
LOCAL_METRIC = "scout_lldp_local_info"
LOCAL_LABELS = ("instance", "local_sysname", "local_chassis_id")
# What the exporter's scrapes resolved targets' names to, and how far back to read it.
ADDRESS_QUERY = "max by (instance, address) (last_over_time(scout_target_address_info[1h]))"


@dataclass(frozen=True, slots=True)
class TopologyMetrics:
    """The graph's age, size and refresh failures."""

    age: Gauge
    edges: Gauge
    failures: Counter


def create_topology_metrics(registry: CollectorRegistry) -> TopologyMetrics:
    return TopologyMetrics(
        age=Gauge(
            "scout_sidecar_topology_age_seconds",
            "Seconds since the dependency graph was last read from Prometheus "
            "(-1: never; correlation uses the config's dependencies only).",
            registry=registry,
        ),
        edges=Gauge(
            "scout_sidecar_topology_edges",
            "Edges in the dependency graph correlation uses.",
            registry=registry,
        ),
        failures=Counter(
            "scout_sidecar_topology_refresh_failures",
            "Reads of the dependency graph from Prometheus that failed (the last graph is kept).",
            registry=registry,
        ),
    )


def configured_snapshot(config: CorrelationConfig) -> TopologySnapshot:
    """The graph from the config alone: explicit dependencies and roots."""
    return build_snapshot(dependencies=dependencies_of(config), roots=config.topology.roots)


def dependencies_of(config: CorrelationConfig) -> list[Dependency]:
    return [
        Dependency(rule.source.labels(), rule.target.labels(), rule.why)
        for rule in config.dependencies
    ]


def _selector_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


async def read_snapshot(
    client: PromQLClient, config: CorrelationConfig, now: datetime
) -> TopologySnapshot:
    """One read of the discovered graph; raises :class:`PromQLError` when Prometheus fails."""
    topology = config.topology
    box = topology.query_timeout
    by = ", ".join(NEIGHBOUR_LABELS)
    neighbours = await client.instant(
        f"max by ({by}) ({topology.neighbour_metric})", now, time_box=box
    )
    identities = await client.instant(
        f"max by ({', '.join(LOCAL_LABELS)}) ({LOCAL_METRIC})", now, time_box=box
    )
    targets = await client.instant("up", now, time_box=box)
    addresses = await client.instant(ADDRESS_QUERY, now, time_box=box)
    pollers: list[Poller] = []
    for rule in topology.pollers:
        rows = await client.instant(f'up{{job="{_selector_value(rule.job)}"}}', now, time_box=box)
        pollers.extend(
            Poller(row.labels["instance"], rule.polls, row.labels.get(EXPORTER_LABEL, ""))
            for row in rows
            if row.labels.get("instance")
        )
    return build_snapshot(
        neighbours=[dict(row.labels) for row in neighbours],
        local_identities=[dict(row.labels) for row in identities],
        targets=[dict(row.labels) for row in targets],
        pollers=sorted(pollers, key=lambda p: p.instance),
        dependencies=dependencies_of(config),
        roots=topology.roots,
        addresses=[dict(row.labels) for row in addresses],
        built_at=now,
    )


class TopologyProvider(Protocol):
    """Where the worker gets the graph: the latest snapshot, and the loop keeping it fresh."""

    def current(self) -> TopologySnapshot:
        """The latest graph; cheap and without I/O (called before each batch of alerts)."""
        ...

    def observe(self, metrics: TopologyMetrics) -> None:
        """Report age, size and failures on ``metrics`` from now on."""
        ...

    async def refresh_forever(self) -> None:
        """Refresh until cancelled (idle when there is nothing to read)."""
        ...


class TopologyRefresher:
    """The latest graph, refreshed every ``correlation.topology.refresh``."""

    def __init__(
        self,
        client: PromQLClient | None,
        config: CorrelationConfig,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._client = client if config.topology.enabled else None
        self._config = config
        self._metrics: TopologyMetrics | None = None
        self._clock = clock
        self._current = configured_snapshot(config)

    def observe(self, metrics: TopologyMetrics) -> None:
        self._metrics = metrics
        metrics.age.set_function(self._age)
        metrics.edges.set_function(lambda: self._current.edges)

    def current(self) -> TopologySnapshot:
        """The latest graph (no I/O)."""
        return self._current

    def _age(self) -> float:
        built = self._current.built_at
        return -1.0 if built is None else (self._clock() - built).total_seconds()

    async def refresh_once(self) -> bool:
        """Read the graph once; False (and the previous graph kept) when that failed."""
        if self._client is None:
            return False
        try:
            self._current = await read_snapshot(self._client, self._config, self._clock())
        except PromQLError as exc:
            if self._metrics is not None:
                self._metrics.failures.inc()
            log.warning("reading the dependency graph failed: %s", exc)
            return False
        return True

    async def refresh_forever(self) -> None:
        if self._client is None:
            await asyncio.Event().wait()  # nothing to read: idle until cancelled
        while True:
            await self.refresh_once()
            await asyncio.sleep(self._config.topology.refresh.total_seconds())
