"""Services whose stopping explains little: they serve nothing a check tests, or only printing.

A stopped service explains what runs on or uses its host (``USES`` edges): the
web check of a stopped IIS, the database port of a stopped SQL Server. Some
services serve nothing over the network that a probe would test: updates,
indexing, the desktop's plumbing, local schedulers. When one of them stops
next to a failing check on the same host, the two are independent; joining
them would put an unrelated alert into the incident and may name the wrong
root cause. A print spooler serves printing only: its stop explains a check
of a printing port (LPD 515, IPP 631, raw 9100, ``ipp://``), not a web check.
A service not listed here keeps the general rule, and so does any alert about
a listed service that does not say it stopped (its CPU or memory: a service
hogging the host slows everything on it).

Names are compared without case and without a systemd ``.service`` suffix.
They are Windows service names (``sc query`` short names, as
``windows_service_state`` and the ``/winrm`` collector label them) and systemd
unit names.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from enum import Enum
from urllib.parse import urlsplit

# Labels that name the service of a service-layer alert.
SERVICE_NAME_LABELS = ("name", "service", "unit")

LOCAL_ONLY_SERVICES = frozenset(
    {
        # Windows: updates, transfers for updates, search indexing, the
        # desktop, audio, diagnostics, telemetry, error reports, the scheduler.
        "wuauserv",
        "usosvc",
        "bits",
        "wsearch",
        "themes",
        "audiosrv",
        "audioendpointbuilder",
        "sysmain",
        "trkwks",
        "diagtrack",
        "dps",
        "wersvc",
        "pcasvc",
        "shellhwdetection",
        "tabletinputservice",
        "wbiosrvc",
        "mapsbroker",
        "schedule",
        # Linux: local schedulers, package and firmware updates, disk health, IRQs.
        "cron",
        "crond",
        "atd",
        "anacron",
        "unattended-upgrades",
        "packagekit",
        "snapd",
        "fwupd",
        "smartd",
        "smartmontools",
        "irqbalance",
    }
)
PRINTING_SERVICES = frozenset({"spooler", "cups", "cupsd", "lpd"})
PRINTING_PORTS = frozenset({515, 631, 9100})
PRINTING_SCHEMES = frozenset({"ipp", "ipps", "lpd"})

# Alert names saying a service is not running, as opposed to what it consumes.
_NOT_RUNNING = re.compile(r".*(Stopped|NotRunning|Down|Failed|Inactive|Dead).*", re.IGNORECASE)


class Reach(Enum):
    """What a service-layer alert's service can explain on its host."""

    ANY = "any"  # the general rule
    NOTHING = "nothing"
    PRINTING = "printing"


def service_reach(labels: Mapping[str, str]) -> Reach:
    """What the service an alert says stopped can explain (``ANY`` for other alerts)."""
    if not _NOT_RUNNING.fullmatch(labels.get("alertname", "")):
        return Reach.ANY
    for label in SERVICE_NAME_LABELS:
        value = labels.get(label, "")
        if value:
            name = value.strip().lower().removesuffix(".service")
            if name in LOCAL_ONLY_SERVICES:
                return Reach.NOTHING
            return Reach.PRINTING if name in PRINTING_SERVICES else Reach.ANY
    return Reach.ANY


@functools.lru_cache(maxsize=65536)
def is_printing_endpoint(instance: str) -> bool:
    """Whether a target (``host:port`` or a URL) is a printing port a spooler serves."""
    text = instance.strip().lower()
    if "://" in text:
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            return False
        return parts.scheme in PRINTING_SCHEMES or port in PRINTING_PORTS
    head, _, port_text = text.rpartition(":")
    return bool(head) and port_text.isdigit() and int(port_text) in PRINTING_PORTS
