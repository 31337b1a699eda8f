"""What a collector is, and how the registry table describes one."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client.metrics_core import Metric

from exporter.config import ExporterConfig
from exporter.lifecycle import Lifecycle, NoResources


class Collector(Lifecycle, Protocol):
    """Maps data from a client to metric families, built fresh on every call.

    ``collect`` is blocking: the scrape runs it in a worker thread and stops
    waiting for it at the scrape deadline. ``start`` and ``close`` (from
    ``Lifecycle``) bracket its use: a collector that owns a socket or a thread
    (a flow listener) opens it in ``start`` and releases it in ``close``.
    """

    def collect(self) -> Iterable[Metric]: ...


class BaseCollector(NoResources):
    """For collectors that own nothing between scrapes: ``start`` and ``close`` do nothing."""


@dataclass(frozen=True, slots=True)
class HostView:
    """Where the host is seen from; set by flags, since it depends on how Scout is deployed."""

    rootfs: Path | None = None


@dataclass(frozen=True, slots=True)
class CollectorSpec:
    """One row of the registry table; the ``--collector.<name>`` flags come from it."""

    name: str
    help: str
    enabled_by_default: bool
    build: Callable[[ExporterConfig, HostView], Collector]
