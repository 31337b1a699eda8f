"""The probers, by the name a module's ``prober:`` gives, and the built-in modules.

``/probe?target=&module=`` looks the module up (in the config's ``modules:``,
else in ``DEFAULT_MODULES``), then the prober by ``module.prober``. Adding a
prober is one row in ``PROBERS`` and one member of ``ProbeModuleType`` (in
``exporter.targets.probe.modules``, the only place the module types are listed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter.lifecycle import NoResources
from exporter.targets.kind import ScrapeJob
from exporter.targets.probe.base import Metrics, Prober, ProbeResult
from exporter.targets.probe.http import HttpProber
from exporter.targets.probe.icmp import IcmpProber
from exporter.targets.probe.modules import ProbeModule, ProbeModuleType, default_modules
from exporter.targets.probe.tcp import TcpProber

# The probers hold no state between probes; each probe opens its own sockets.
PROBERS: Mapping[str, Prober[Any]] = {
    "icmp": IcmpProber(),
    "tcp": TcpProber(),
    "http": HttpProber(),
}


DEFAULT_MODULES: Mapping[str, ProbeModuleType] = default_modules()

__all__ = ["DEFAULT_MODULES", "PROBERS", "ProbeModule", "ProbeScraper", "run_probe"]


async def run_probe(
    target: str,
    module: ProbeModuleType,
    deadline: float,
    probers: Mapping[str, Prober[Any]] = PROBERS,
) -> ProbeResult:
    """Probe ``target`` with ``module`` by ``deadline`` (``loop.time()``); never raises."""
    return await probers[module.prober].probe(target, module, deadline)


class ProbeScraper(NoResources):
    """The ``/probe`` kind's scraper: one probe per scrape, by the module's prober.

    Probes open their sockets per probe, so there is nothing to start or close.
    """

    def __init__(self, probers: Mapping[str, Prober[Any]] = PROBERS) -> None:
        self._probers = probers

    async def scrape(
        self, job: ScrapeJob[str, ProbeModuleType, None], families: list[Metric]
    ) -> tuple[bool, str | None]:
        [(_, module)] = job.modules
        prober = self._probers[module.prober]
        return await prober.attempt(job.target, module, job.deadline, Metrics(families))
