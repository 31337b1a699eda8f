"""``/winrm`` modules: which collectors one scrape of a Windows server runs, and their filters.

A config's ``modules:`` entry is a WinRM module when its ``prober:`` is
``winrm``. Every collector runs in the one PowerShell script a scrape sends
(``exporter.targets.winrm.script``); leaving one out shortens the script and
the answer. ``services`` filters the service series by name (anchored
regexes, as everywhere in the config); ``critical_services`` marks the names
the ``WindowsServiceStopped`` rule watches (reported whatever ``services``
says); ``event_log_window`` is how far back the error and critical events are
counted (the scrape interval, so each event is counted once);
``top_processes`` bounds the process series.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, Self, get_args

from pydantic import Field, model_validator

from exporter.common.durations import Duration
from exporter.common.models import NameFilter, StrictModel

CollectorName = Literal[
    "cpu",
    "memory",
    "pagefile",
    "logical_disk",
    "net",
    "os",
    "system",
    "service",
    "update",
    "event_log",
    "process",
]
COLLECTORS: tuple[CollectorName, ...] = get_args(CollectorName)
DEFAULT_MODULE = "windows"
MAX_TOP_PROCESSES = 50


class WinrmModule(StrictModel):
    """What one ``/winrm`` scrape gathers."""

    prober: Literal["winrm"] = "winrm"
    collectors: list[CollectorName] = Field(default_factory=lambda: list(COLLECTORS), min_length=1)
    services: NameFilter = Field(default_factory=NameFilter)
    critical_services: list[str] = Field(default_factory=list)
    event_log_window: Duration = timedelta(minutes=1)
    top_processes: int = Field(default=5, ge=0, le=MAX_TOP_PROCESSES)

    @model_validator(mode="after")
    def _each_collector_once(self) -> Self:
        # Listed twice, a collector's families would be exposed twice in one
        # scrape, which Prometheus refuses whole.
        for name in self.collectors:
            if self.collectors.count(name) > 1:
                raise ValueError(f"collectors lists {name} twice")
        return self


def default_modules() -> dict[str, WinrmModule]:
    """Usable with no config file: ``/winrm?target=&auth=`` reads every collector."""
    return {DEFAULT_MODULE: WinrmModule()}
