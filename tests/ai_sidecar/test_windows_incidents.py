"""The shipped Windows rules through the sidecar's ``windows`` preset: one incident, its cause.

The alerts are built from ``prometheus/rules/windows.rules.yml`` itself (their
names and static labels), with the labels their series carry from ``/winrm``,
so a renamed alert or a dropped ``layer`` label fails here, not in production.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ai_sidecar.config import parse_config
from ai_sidecar.correlate import TopologySnapshot
from ai_sidecar.correlation import Correlator
from ai_sidecar.models import Alert, Incident
from tests.ai_sidecar.replay import fold, make

RULES = Path(__file__).resolve().parents[2] / "prometheus" / "rules" / "windows.rules.yml"


def windows_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def fired(alertname: str, seconds: float, **series: str) -> Alert:
    """The alert as Alertmanager would send it: the rule's labels over the series'."""
    labels = dict(windows_rules()[alertname].get("labels", {}))
    return make(alertname, seconds, **{**series, **labels})


def correlator() -> Correlator:
    config = parse_config("correlation: {preset: windows}", "sidecar.yml").correlation
    return Correlator(config, TopologySnapshot())


def incidents(alerts: list[Alert]) -> list[Incident]:
    found: dict[str, Incident] = {}
    for change in fold(correlator(), alerts):
        for gone in change.absorbed:
            found.pop(gone.id, None)
        found[change.incident.id] = change.incident
    return list(found.values())


def root(incident: Incident) -> Alert:
    return incident.members[incident.root_cause or ""]


FS01 = {"job": "winrm", "instance": "fs01.corp.example", "site": "dc"}


def test_a_full_disk_and_the_service_it_stopped_are_one_incident_with_the_disk_as_cause():
    # The service alert fires first (its rule waits 3 minutes, the disk's 10).
    alerts = [
        fired("WindowsServiceStopped", 0, name="lanmanserver", **FS01),
        fired("WindowsDiskAlmostFull", 90, volume="D:", **FS01),
    ]
    [incident] = incidents(alerts)
    assert sorted(m.alertname for m in incident.members.values()) == [
        "WindowsDiskAlmostFull",
        "WindowsServiceStopped",
    ]
    assert root(incident).alertname == "WindowsDiskAlmostFull"
    facts = incident.root_cause_facts
    assert facts is not None
    assert facts.layer == "host"


def test_the_same_alerts_on_two_servers_stay_two_incidents():
    other = {**FS01, "instance": "fs02.corp.example", "site": ""}
    alerts = [
        fired("WindowsServiceStopped", 0, name="lanmanserver", **other),
        fired("WindowsDiskAlmostFull", 90, volume="D:", **{**FS01, "site": ""}),
    ]
    assert len(incidents(alerts)) == 2


def test_every_windows_alert_has_the_layer_the_preset_means():
    c = correlator()
    layers = {
        name: c.layer_of(fired(name, 0, **FS01).labels)
        for name in ("WindowsDiskAlmostFull", "WindowsDiskFillingUp", "WindowsCpuHigh")
    }
    assert set(layers.values()) == {"host"}, layers
    assert c.layer_of(fired("WindowsMemoryLow", 0, **FS01).labels) == "host"
    assert c.layer_of(fired("WindowsServiceStopped", 0, **FS01).labels) == "service"
    assert c.layer_of(fired("WinrmTargetUnreachable", 0, **FS01).labels) == "device"


def test_an_unreachable_server_explains_its_stopped_service_alert():
    alerts = [
        fired("WindowsServiceStopped", 0, name="lanmanserver", **FS01),
        fired("WinrmTargetUnreachable", 60, **FS01),
    ]
    [incident] = incidents(alerts)
    assert root(incident).alertname == "WinrmTargetUnreachable"
