"""The probers, by the name a module's ``prober:`` gives, and the built-in modules.

``/probe?target=&module=`` looks the module up (in the config's ``modules:``,
else in ``DEFAULT_MODULES``), then the prober by ``module.prober``, and awaits
``run_probe``. Adding a prober is one row in ``PROBERS`` and one member of
``ProbeModule``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from exporter.targets.probe.base import Prober, ProbeResult
from exporter.targets.probe.http import HttpModule, HttpProber
from exporter.targets.probe.icmp import IcmpModule, IcmpProber
from exporter.targets.probe.tcp import TcpModule, TcpProber

# What one entry of the config's ``modules:`` may be; ``prober:`` picks the kind.
ProbeModule = Annotated[IcmpModule | TcpModule | HttpModule, Field(discriminator="prober")]

# The probers hold no state between probes; each probe opens its own sockets.
PROBERS: Mapping[str, Prober[Any]] = {
    "icmp": IcmpProber(),
    "tcp": TcpProber(),
    "http": HttpProber(),
}

# Usable with no config file: /probe?module=icmp&target=... and so on.
DEFAULT_MODULES: Mapping[str, IcmpModule | TcpModule | HttpModule] = {
    "icmp": IcmpModule(),
    "tcp": TcpModule(),
    "http": HttpModule(),
}


async def run_probe(
    target: str,
    module: IcmpModule | TcpModule | HttpModule,
    deadline: float,
    probers: Mapping[str, Prober[Any]] = PROBERS,
) -> ProbeResult:
    """Probe ``target`` with ``module`` by ``deadline`` (``loop.time()``); never raises."""
    return await probers[module.prober].probe(target, module, deadline)
