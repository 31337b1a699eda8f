"""OPNsense through its API, read with an API key and secret (HTTP basic auth).

The key and secret belong to a user (System > Access > Users > API keys)
whose privileges cover the diagnostics, interfaces, routes, IPsec and
firewall pages read below; the auth gives the key as ``username`` and the
secret as ``password``. Answers are plain JSON, without an envelope; an
endpoint that answers ``{"status": "failed"}`` or ``{"result": "failed"}``
is a failed endpoint. What is read (OPNsense 24.1 and later):

==============================================  ===========================================
endpoint                                        schema
==============================================  ===========================================
``diagnostics/system/system_information``       info: ``name`` as hostname, the version of
                                                ``versions[0]`` ("OPNsense 24.7.1_1-amd64")
``diagnostics/system/system_resources``         ``memory.used`` / ``memory.total`` -> memory
``diagnostics/activity/get_activity``           the ``CPU:`` line of top's ``headers``:
                                                1 - idle -> CPU ratio
``diagnostics/firewall/pf_states``              ``current`` -> sessions, ``limit`` -> limit
``diagnostics/firewall/pf_statistics/info``     ``state-table.inserts.total`` -> sessions
                                                created (pf's state inserts)
``interfaces/overview/interfaces_info``         assigned interfaces: ``description`` as the
                                                label, ``status`` ("up") -> up
``diagnostics/interface/get_interface_          bytes of the interface's link row
statistics``                                    (``received-bytes``, ``sent-bytes``)
``routes/gateway/status``                       ``items``: ``status`` (dpinger's: none,
                                                delay, loss are up; down is not),
                                                ``delay`` ("4.2 ms"), ``loss`` ("0.0 %");
                                                down with a delay of 0: no round trip
``ipsec/sessions/search_phase1``                ``rows``: ``phase1desc`` (else ``name``),
                                                ``connected`` -> up, ``remote-addrs``; a
                                                phase 1 split in connections is one
                                                tunnel, up if any of them is
``firewall/filter_util/rule_stats``             per rule label: ``packets``, ``bytes``
``diagnostics/firewall/list_rule_ids``          rule descriptions (an undescribed rule is
                                                listed as "-- <id>": unnamed)
``diagnostics/interface/get_vip_status``        CARP addresses' MASTER/BACKUP -> HA role
==============================================  ===========================================

pf counts packets and bytes per rule, not hits (its "evaluations" count rule
checks, not matches), so ``scout_firewall_rule_hits_total`` is left out; so
are tunnel bytes (phase 1 sessions carry none), the session setup rate and
the HA sync state, which the API does not give.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from exporter.schema.firewall import (
    FirewallSnapshot,
    InterfaceState,
    RuleCounters,
    TunnelState,
)
from exporter.targets.firewall.modules import OPNsenseModule
from exporter.targets.firewall.values import Node, counter, milliseconds, percent_ratio
from exporter.targets.firewall.vendor import (
    Answers,
    AuthScheme,
    Endpoint,
    Reading,
    ShapeError,
    carp_state,
    gateway_state,
)

# "OPNsense 24.7.1_1-amd64": product, version, architecture.
_VERSION = re.compile(r"\S+\s+(?P<version>\S+?)(?:-[A-Za-z0-9_]+)?")
# top's summary line: "CPU:  2.3% user,  0.0% nice,  1.2% system,  0.1% interrupt, 96.4% idle"
_CPU_IDLE = re.compile(r"([\d.]+)%\s+idle")
_UNDESCRIBED = "-- "


def _object(answer: Node) -> Node:
    if not answer.is_object():
        raise ShapeError("not an OPNsense API answer (no JSON object)")
    for key in ("status", "result"):
        if answer[key].text() == "failed":
            raise ShapeError(f"OPNsense answered {key} failed")
    return answer


def _endpoint(key: str, path: str) -> Endpoint:
    return Endpoint(key, f"/api/{path}", (), _object)


def _gateways(answer: Node) -> Node:
    # A firewall with no monitored gateway answers "failed" with no items: that is no error.
    if not answer.is_object():
        raise ShapeError("not an OPNsense API answer (no JSON object)")
    return answer


class OPNsense:
    """The ``opnsense`` prober's vendor."""

    name = "opnsense"
    auth_schemes: Mapping[AuthScheme, str] = {
        "basic": "an API key as username and its secret as password"
    }

    def endpoints(self, module: OPNsenseModule) -> Sequence[Endpoint]:
        return (
            _endpoint("system", "diagnostics/system/system_information"),
            _endpoint("resources", "diagnostics/system/system_resources"),
            _endpoint("activity", "diagnostics/activity/get_activity"),
            _endpoint("states", "diagnostics/firewall/pf_states"),
            _endpoint("pf_info", "diagnostics/firewall/pf_statistics/info"),
            _endpoint("interfaces", "interfaces/overview/interfaces_info"),
            _endpoint("interface_stats", "diagnostics/interface/get_interface_statistics"),
            Endpoint("gateways", "/api/routes/gateway/status", (), _gateways),
            _endpoint("ipsec", "ipsec/sessions/search_phase1"),
            _endpoint("rule_stats", "firewall/filter_util/rule_stats"),
            _endpoint("rule_ids", "diagnostics/firewall/list_rule_ids"),
            _endpoint("carp", "diagnostics/interface/get_vip_status"),
        )

    def read(self, module: OPNsenseModule, answers: Answers) -> Reading:
        system = answers["system"]
        version = _VERSION.fullmatch(system.get("versions", 0).text())
        snapshot = FirewallSnapshot(
            vendor=self.name,
            firmware=version.group("version") if version else "",
            hostname=system["name"].text(),
        )
        memory = answers["resources"]["memory"]
        used, total = counter(memory["used"]), counter(memory["total"])
        if used is not None and total:
            snapshot.memory_ratio = min(used / total, 1.0)
        snapshot.cpu_ratio = _cpu(answers["activity"]["headers"])
        states = answers["states"]
        snapshot.sessions = counter(states["current"])
        snapshot.sessions_limit = counter(states["limit"]) or None
        inserts = answers["pf_info"].get("info", "state-table", "inserts", "total")
        snapshot.sessions_created = counter(inserts)
        snapshot.interfaces = _interfaces(answers["interfaces"], answers["interface_stats"])
        snapshot.gateways = [
            gateway_state(
                item["name"].text(),
                item["status"].text(),
                milliseconds(item["delay"]),
                percent_ratio(item["loss"]),
            )
            for item in answers["gateways"]["items"].elements()
            if item["name"].text()
        ]
        snapshot.tunnels = _tunnels(answers["ipsec"]["rows"])
        if "carp" in answers:
            snapshot.ha = carp_state(
                row["status"].text()
                for row in answers["carp"]["rows"].elements()
                if row["mode"].text() == "carp"
            )
        rules = None
        if "rule_stats" in answers:
            rules = _rules(answers["rule_stats"]["stats"], answers["rule_ids"]["items"])
        return Reading(snapshot, rules)


def _tunnels(rows: Node) -> list[TunnelState]:
    """Phase 1 sessions by description; split ones (con1-000, con1-001) are up if any is.

    A phase 1 whose phase 2s are split into connections of their own lists one
    row per connection, each with the phase 1's description.
    """
    up_by_tunnel: dict[tuple[str, str], bool | None] = {}
    for row in rows.elements():
        key = (row["phase1desc"].text() or row["name"].text(), row["remote-addrs"].text())
        if not key[0]:
            continue
        connected, before = row["connected"].flag(), up_by_tunnel.get(key)
        up_by_tunnel[key] = connected if before is None else before or bool(connected)
    return [
        TunnelState(tunnel=tunnel, type="ipsec", remote=remote, up=up)
        for (tunnel, remote), up in up_by_tunnel.items()
    ]


def _cpu(headers: Node) -> float | None:
    for line in headers.elements():
        text = line.text()
        if text.startswith("CPU:") and (idle := _CPU_IDLE.search(text)):
            busy = 1.0 - float(idle.group(1)) / 100.0
            return busy if 0.0 <= busy <= 1.0 else None
    return None


def _interfaces(info: Node, stats: Node) -> list[InterfaceState]:
    # netstat -i lists a device once per address; the link row carries the device's totals.
    link_rows: dict[str, Node] = {}
    for _, row in stats["statistics"].items():
        device = row["name"].text()
        if device and (row["network"].text().startswith("<Link") or device not in link_rows):
            link_rows[device] = row
    interfaces = []
    for row in info["rows"].elements():
        if not row["identifier"].text():
            continue  # not assigned: not part of the firewall's configuration
        device = row["device"].text()
        counters = link_rows.get(device, Node())
        status = row["status"].text()
        interfaces.append(
            InterfaceState(
                interface=row["description"].text() or device,
                up=None if not status else status == "up",
                receive_bytes=counter(counters["received-bytes"]),
                transmit_bytes=counter(counters["sent-bytes"]),
            )
        )
    return interfaces


def _rules(stats: Node, ids: Node) -> list[RuleCounters]:
    descriptions = {item["id"].text(): item["descr"].text() for item in ids.elements()}
    rules = []
    for rule_id, counters in stats.items():
        description = descriptions.get(rule_id, "")
        if description.startswith(_UNDESCRIBED):
            description = ""
        rules.append(
            RuleCounters(
                rule_id=rule_id,
                rule=description[:128],
                packets=counter(counters["packets"]),
                bytes=counter(counters["bytes"]),
                named=bool(description),
            )
        )
    return rules
