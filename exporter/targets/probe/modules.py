"""The probe module types, listed once, and the modules built in for each.

A config's ``modules:`` entry is a probe module when its ``prober:`` names one
of these types; ``exporter.config`` takes the union from here, and so does the
``/probe`` row of the table of kinds.
"""

from __future__ import annotations

from typing import Annotated, get_args

from pydantic import Field

from exporter.targets.probe.http import HttpModule
from exporter.targets.probe.icmp import IcmpModule
from exporter.targets.probe.tcp import TcpModule

ProbeModuleType = IcmpModule | TcpModule | HttpModule
ProbeModule = Annotated[ProbeModuleType, Field(discriminator="prober")]
PROBE_MODULE_TYPES: tuple[type[ProbeModuleType], ...] = get_args(ProbeModuleType)


def default_modules() -> dict[str, ProbeModuleType]:
    """Usable with no config file: /probe?module=icmp&target=... and so on."""
    return {module_type().prober: module_type() for module_type in PROBE_MODULE_TYPES}
