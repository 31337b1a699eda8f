"""The table of multi-target kinds: one row each, and the rest is derived from it.

Each row gives ``/{name}`` its route, its modules and auths (built in and from
the config), its target syntax, its self-metrics and exposition, and the
scraper that keeps its state between scrapes; ``exporter.targets.handler``
serves every row the same way. Adding a kind (``/winrm`` next) is a
new package under ``exporter/targets/`` with a ``TargetScraper``, plus one row
here, plus its module type in the config's ``Module`` union if it has modules.
"""

from __future__ import annotations

from typing import Any

from exporter.clients.probe_net import TargetError
from exporter.config import HttpAuth, SnmpAuth, WinrmAuth
from exporter.errors import BadRequestError
from exporter.targets.exposition import METRIC_EXPOSITION
from exporter.targets.firewall import modules as firewall_modules
from exporter.targets.firewall import scraper as firewall
from exporter.targets.kind import SelfMetric, StatusMetrics, TargetKind
from exporter.targets.probe.base import PROBE_STATUS
from exporter.targets.probe.modules import PROBE_MODULE_TYPES, ProbeModuleType, default_modules
from exporter.targets.probe.registry import ProbeScraper
from exporter.targets.snmp.exposition import TEXT_EXPOSITION
from exporter.targets.snmp.modules import SnmpModule, builtin_modules
from exporter.targets.snmp.params import (
    BUILTIN_AUTHS,
    DEFAULT_AUTH,
    DEFAULT_MODULE,
    MAX_MODULES_PER_SCRAPE,
    MAX_TARGET_LENGTH,
    parse_target,
    pin_target,
    target_host,
)
from exporter.targets.snmp.scraper import SnmpScraper, unresolved_scrape
from exporter.targets.winrm import modules as winrm_modules
from exporter.targets.winrm import scraper as winrm_scraper


def _as_given(target: str) -> str:
    """Probers parse their own targets, and a bad one is a failed probe, not a 400."""
    return target


def _probe_host(target: str, module: ProbeModuleType) -> str:
    """The prober's reading of the target; under an allow-list a bad one is a 400."""
    try:
        return module.target_host(target)
    except TargetError as exc:
        raise BadRequestError(str(exc)) from None


def _snmp_scraper(settings: Any) -> SnmpScraper:
    """The SNMP scraper, wrapping Counter64 values unless ``--no-snmp.wrap-large-counters``."""
    return SnmpScraper(wrap_large_counters=settings.snmp_wrap_large_counters)


TARGET_KINDS: tuple[TargetKind[Any, Any, Any, Any], ...] = (
    TargetKind(
        name="snmp",
        noun="SNMP scrape",
        description="an SNMP device (snmp_exporter's parameters)",
        example="target=192.0.2.1&module=if_mib",
        module_types=(SnmpModule,),
        default_modules=builtin_modules,
        default_module=DEFAULT_MODULE,
        max_modules=MAX_MODULES_PER_SCRAPE,
        auth_types=(SnmpAuth,),
        builtin_auths=BUILTIN_AUTHS,
        default_auth=DEFAULT_AUTH,
        max_target_length=MAX_TARGET_LENGTH,
        parse_target=parse_target,
        target_host=target_host,
        pin_target=pin_target,
        unresolved=unresolved_scrape,
        # Success is per module (scout_snmp_module_success), as snmp_exporter has it.
        status=StatusMetrics(
            duration=SelfMetric(
                "scout_snmp_scrape_duration_seconds", "Seconds the SNMP scrape took."
            ),
        ),
        exposition=TEXT_EXPOSITION,
        build=SnmpScraper,
        build_with_settings=_snmp_scraper,
    ),
    TargetKind(
        name="probe",
        noun="probe",
        description="latency, loss and jitter (icmp, tcp, http)",
        example="target=127.0.0.1&module=icmp",
        module_types=PROBE_MODULE_TYPES,
        default_modules=default_modules,
        parse_target=_as_given,
        # No pin_target: the probers check the address where they connect.
        target_host=_probe_host,
        status=PROBE_STATUS,
        exposition=METRIC_EXPOSITION,
        build=ProbeScraper,
    ),
    TargetKind(
        name="firewall",
        noun="firewall scrape",
        description="a firewall's REST API (fortigate, opnsense, pfsense)",
        example="target=192.0.2.1&module=fortigate&auth=fortigate_api",
        module_types=firewall_modules.FIREWALL_MODULE_TYPES,
        default_modules=firewall_modules.default_modules,
        auth_types=(HttpAuth,),
        max_target_length=firewall.MAX_TARGET_LENGTH,
        parse_target=firewall.parse_target,
        target_host=firewall.target_host,
        pin_target=firewall.pin_target,
        unresolved=firewall.unresolved_scrape,
        # scout_firewall_up (the schema's) says whether the firewall answered.
        status=firewall.FIREWALL_STATUS,
        exposition=METRIC_EXPOSITION,
        build=firewall.FirewallScraper,
    ),
    TargetKind(
        name="winrm",
        noun="WinRM scrape",
        description="a Windows server over WinRM (windows_exporter's metrics)",
        example="target=fs01.example.net&auth=windows",
        module_types=(winrm_modules.WinrmModule,),
        default_modules=winrm_modules.default_modules,
        default_module=winrm_modules.DEFAULT_MODULE,
        auth_types=(WinrmAuth,),
        parse_target=winrm_scraper.parse_target,
        target_host=winrm_scraper.target_host,
        pin_target=winrm_scraper.pin_target,
        status=winrm_scraper.WINRM_STATUS,
        exposition=METRIC_EXPOSITION,
        build=winrm_scraper.WinrmScraper,
    ),
)
