"""Services whose stopping explains no other alert: they serve nothing a check tests.

A stopped service explains what runs on or uses its host (``USES`` edges): the
web check of a stopped IIS, the database port of a stopped SQL Server. Some
services serve nothing over the network that a probe would test: updates,
indexing, the desktop's plumbing, local schedulers. When one of them stops
next to a failing check on the same host, the two are independent; joining
them would put an unrelated alert into the incident and may name the wrong
root cause. A service not listed here keeps the general rule.

Names are compared without case and without a systemd ``.service`` suffix.
They are Windows service names (``sc query`` short names, as
``windows_service_state`` and the ``/winrm`` collector label them) and systemd
unit names.
"""

from __future__ import annotations

from collections.abc import Mapping

# Labels that name the service of a service-layer alert.
SERVICE_NAME_LABELS = ("name", "service", "unit")

LOCAL_ONLY_SERVICES = frozenset(
    {
        # Windows: printing queue, updates, transfers for updates, search
        # indexing, the desktop, audio, diagnostics, telemetry, error reports.
        "spooler",
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
        "irqbalance",
    }
)


def serves_nothing_checked(labels: Mapping[str, str]) -> bool:
    """Whether the alert names a service that serves nothing a check would test."""
    for label in SERVICE_NAME_LABELS:
        value = labels.get(label, "")
        if value:
            return value.strip().lower().removesuffix(".service") in LOCAL_ONLY_SERVICES
    return False
