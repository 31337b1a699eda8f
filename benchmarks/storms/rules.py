"""The alert rules a storm is made of: name, ``for:``, severity and static labels.

What decides when an alert fires is the rule's ``for:`` on top of the scrape and
evaluation grids, so the simulator must use the shipped values, not guesses.
:func:`load_rules` reads every alerting rule in ``prometheus/rules/*.yml`` and
lays it over :data:`CATALOGUE`, which lists every alert a storm may raise:

- ``shipped``: found in the rule files, so the file's values win;
- ``anticipated``: alerts that come with the issue bringing that
  endpoint. No rule exists yet; the values are what such a rule would
  reasonably carry, and :data:`CATALOGUE` is the one place to change them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml

from exporter.common.durations import parse_duration

RULES_DIR = Path(__file__).resolve().parents[2] / "prometheus" / "rules"
# prometheus/prometheus.yml's global evaluation_interval.
EVALUATION_INTERVAL = timedelta(seconds=15)

Provenance = Literal["shipped", "anticipated"]


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One alerting rule as far as timing and labels go."""

    name: str
    hold: timedelta  # the rule's `for:`
    labels: Mapping[str, str] = field(default_factory=dict)  # severity, layer, ...
    provenance: Provenance = "anticipated"


def _spec(name: str, hold: str, provenance: Provenance, **labels: str) -> RuleSpec:
    return RuleSpec(name, parse_duration(hold), labels, provenance)


CATALOGUE: Mapping[str, RuleSpec] = {
    spec.name: spec
    for spec in (
        # Values as shipped today; load_rules() re-reads them from the files.
        _spec("InterfaceDown", "2m", "shipped", severity="warning"),
        _spec("InterfaceSaturated", "15m", "shipped", severity="warning"),
        _spec("InterfaceErrors", "15m", "shipped", severity="warning"),
        _spec("InterfaceDiscards", "15m", "shipped", severity="warning"),
        _spec("ProbeFailed", "3m", "shipped", severity="critical"),
        _spec("ProbeLossHigh", "10m", "shipped", severity="warning"),
        _spec("ProbeLatencyHigh", "10m", "shipped", severity="warning"),
        _spec("ProbeJitterHigh", "10m", "shipped", severity="warning"),
        _spec("TargetDown", "5m", "shipped", severity="warning"),
        _spec("ExporterCollectorFailed", "10m", "shipped", severity="warning"),
        _spec("HostCpuHigh", "15m", "shipped", severity="warning"),
        _spec("HostMemoryLow", "5m", "shipped", severity="warning"),
        _spec("HostFilesystemAlmostFull", "10m", "shipped", severity="warning"),
        _spec("SnmpDeviceUnreachable", "3m", "shipped", severity="critical", layer="device"),
        _spec("SnmpModuleFailed", "10m", "shipped", severity="warning"),
        _spec("ProbeTargetUnreachable", "3m", "shipped", severity="critical", layer="device"),
        _spec("FirewallUnreachable", "3m", "shipped", severity="critical", layer="device"),
        _spec("FirewallSessionTableHigh", "5m", "shipped", severity="warning", layer="host"),
        # Shipped with /winrm (prometheus/rules/windows.rules.yml).
        _spec("WinrmTargetUnreachable", "3m", "shipped", severity="critical", layer="device"),
        _spec("WindowsDiskAlmostFull", "10m", "shipped", severity="warning"),
        _spec("WindowsServiceStopped", "3m", "shipped", severity="critical"),
    )
}


def read_rule_files(directory: Path = RULES_DIR) -> dict[str, RuleSpec]:
    """Every alerting rule in ``directory``'s ``*.yml``, as shipped."""
    found: dict[str, RuleSpec] = {}
    for path in sorted(directory.glob("*.yml")):
        document: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
        for group in document.get("groups", []):
            for rule in group.get("rules", []):
                if "alert" not in rule:
                    continue
                labels = {str(k): str(v) for k, v in (rule.get("labels") or {}).items()}
                hold = parse_duration(str(rule.get("for", "0")))
                found[rule["alert"]] = RuleSpec(rule["alert"], hold, labels, "shipped")
    return found


def load_rules(directory: Path = RULES_DIR) -> dict[str, RuleSpec]:
    """:data:`CATALOGUE` with every rule the files ship replaced by the file's values."""
    shipped = read_rule_files(directory)
    rules = dict(CATALOGUE)
    for name in rules:
        if name in shipped:
            rules[name] = shipped[name]
        elif rules[name].provenance == "shipped":
            # Removed from the files: keep simulating it, but say so.
            rules[name] = replace(rules[name], provenance="anticipated")
    return rules
