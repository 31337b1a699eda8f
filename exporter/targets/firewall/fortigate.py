"""FortiGate through the FortiOS REST API (monitor and cmdb), read with an API token.

The token is a REST API administrator's (``config system api-user``), sent as
``Authorization: Bearer``; its admin profile needs read access to system,
firewall policy, VPN and network. Every answer is FortiOS's envelope,
``{"http_method": "GET", "results": ..., "vdom": "root", "status": "success",
"serial": "FGT60F...", "version": "v7.4.3", "build": 2573}``; one whose
``status`` is ``error`` is a failed endpoint. What is read, with the module's
``vdom`` where the endpoint is per VDOM:

===============================================  ==========================================
endpoint                                         schema
===============================================  ==========================================
``monitor/system/status``                        info: ``results.model`` (else model_name
                                                 and model_number), ``results.hostname``,
                                                 the envelope's ``version``; its ``serial``
                                                 finds this unit among the HA peers
``monitor/system/resource/usage?scope=global``   ``cpu``, ``mem`` (percent ``current``) ->
                                                 cpu/memory ratio; ``setuprate`` -> session
                                                 setup rate; ``session`` when vdom-resource
                                                 did not answer
``monitor/system/vdom-resource``                 ``session.current_usage`` -> sessions;
                                                 ``custom_max`` (the VDOM's own limit) else
                                                 ``max_custom_value`` (the most the unit
                                                 allows) -> sessions limit
``monitor/firewall/policy``                      per ``policyid``: ``packets``, ``bytes``,
                                                 ``hit_count``
``cmdb/firewall/policy`` (policyid, name,        rule name (``name``, else the first line of
action, comments only)                           ``comments``) and action; policy 0 is the
                                                 implicit deny, named ``implicit-deny``
``monitor/system/interface``                     ``link`` -> up, ``rx_bytes``/``tx_bytes``
``monitor/vpn/ipsec``                            per phase 1: up if a phase 2 is ``up``,
                                                 ``incoming_bytes``/``outgoing_bytes``,
                                                 ``rgwy`` as remote
``monitor/virtual-wan/health-check``             SD-WAN health checks as gateways: gateway =
                                                 check, interface = member; ``status``,
                                                 ``latency`` (ms), ``packet_loss`` (%)
``cmdb/system/ha``                               HA ``mode`` (standalone, a-p, a-a)
``monitor/system/ha-peer``                       members; this unit's ``primary`` flag -> role
``monitor/system/ha-checksums``                  in sync when every member's ``all`` checksum
                                                 is the same
===============================================  ==========================================

Policies other than 0 are named when they have a name or a comment; the rest
get series only with ``all_rules`` (see ``RuleBudget``). Sessions created are
not counted by FortiOS's API, so ``scout_firewall_sessions_created_total`` is
left out; the setup rate is FortiOS's own one-minute figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exporter.schema.firewall import (
    FirewallSnapshot,
    GatewayState,
    HaState,
    InterfaceState,
    RuleCounters,
    TunnelState,
)
from exporter.targets.firewall.modules import FortiGateModule
from exporter.targets.firewall.values import Node, counter, milliseconds, percent_ratio
from exporter.targets.firewall.vendor import (
    Answers,
    AuthScheme,
    Endpoint,
    Reading,
    ShapeError,
    first_line,
)

IMPLICIT_DENY = "implicit-deny"


def envelope(answer: Node) -> Node:
    """FortiOS's envelope, checked: a ``results`` member and no ``error`` status."""
    if answer.is_array():  # vdom=* style: one envelope per VDOM; ours asked for one
        answer = answer[0]
    if not answer.is_object():
        raise ShapeError("not a FortiOS API answer (no JSON object)")
    if answer["status"].text() == "error":
        code = answer["http_status"].text() or "?"
        raise ShapeError(f"FortiOS answered status error (http_status {code})")
    if not answer["results"].present:
        raise ShapeError("not a FortiOS API answer (no 'results')")
    return answer


def _endpoint(key: str, path: str, *query: tuple[str, str]) -> Endpoint:
    return Endpoint(key, f"/api/v2/{path}", query, envelope)


class FortiGate:
    """The ``fortigate`` prober's vendor."""

    name = "fortinet"
    auth_schemes: Mapping[AuthScheme, str] = {"bearer": "a REST API administrator's token"}

    def endpoints(self, module: FortiGateModule) -> Sequence[Endpoint]:
        vdom = ("vdom", module.vdom)
        return (
            _endpoint("status", "monitor/system/status"),
            _endpoint(
                "usage",
                "monitor/system/resource/usage",
                ("scope", "global"),
                ("interval", "1-min"),
            ),
            _endpoint("vdom_resource", "monitor/system/vdom-resource", vdom),
            _endpoint("policy_stats", "monitor/firewall/policy", vdom),
            _endpoint(
                "policy_config",
                "cmdb/firewall/policy",
                vdom,
                ("format", "policyid|name|action|comments"),
            ),
            _endpoint("interfaces", "monitor/system/interface", vdom, ("include_vlan", "true")),
            _endpoint("ipsec", "monitor/vpn/ipsec", vdom),
            _endpoint("health_checks", "monitor/virtual-wan/health-check", vdom),
            _endpoint("ha_config", "cmdb/system/ha"),
            _endpoint("ha_peers", "monitor/system/ha-peer"),
            _endpoint("ha_checksums", "monitor/system/ha-checksums"),
        )

    def read(self, module: FortiGateModule, answers: Answers) -> Reading:
        status = answers["status"]
        system = status["results"]
        model = system["model"].text() or (
            system["model_name"].text() + system["model_number"].text()
        )
        snapshot = FirewallSnapshot(
            vendor=self.name,
            model=model,
            firmware=status["version"].text(),
            hostname=system["hostname"].text(),
        )
        usage = answers["usage"]["results"]
        snapshot.cpu_ratio = percent_ratio(usage.get("cpu", 0, "current"))
        snapshot.memory_ratio = percent_ratio(usage.get("mem", 0, "current"))
        snapshot.session_setup_rate = counter(usage.get("setuprate", 0, "current"))
        session = answers["vdom_resource"].get("results", "session")
        snapshot.sessions = counter(session["current_usage"])
        if snapshot.sessions is None:
            snapshot.sessions = counter(usage.get("session", 0, "current"))
        snapshot.sessions_limit = _session_limit(session)
        snapshot.interfaces = _interfaces(answers["interfaces"]["results"])
        snapshot.tunnels = _tunnels(answers["ipsec"]["results"])
        snapshot.gateways = _health_checks(answers["health_checks"]["results"])
        if "ha_config" in answers or "ha_peers" in answers:
            snapshot.ha = _ha(answers, status["serial"].text())
        rules = None
        if "policy_stats" in answers:
            rules = _rules(answers["policy_stats"]["results"], answers["policy_config"]["results"])
        return Reading(snapshot, rules)


def _session_limit(session: Node) -> float | None:
    for key in ("custom_max", "max_custom_value"):
        limit = counter(session[key])
        if limit:  # 0 means "no limit of its own" here
            return limit
    return None


def _rules(stats: Node, config: Node) -> list[RuleCounters]:
    policies = {policy["policyid"].text(): policy for policy in config.elements()}
    rules = []
    for entry in stats.elements():
        policy_id = entry["policyid"].text()
        if not policy_id:
            continue
        policy = policies.get(policy_id, Node())
        name = policy["name"].text() or first_line(policy["comments"].text())
        action = policy["action"].text()
        if policy_id == "0":
            name, action = name or IMPLICIT_DENY, action or "deny"
        rules.append(
            RuleCounters(
                rule_id=policy_id,
                rule=name,
                action=action,
                packets=counter(entry["packets"]),
                bytes=counter(entry["bytes"]),
                hits=counter(entry["hit_count"]),
                named=bool(name),
            )
        )
    return rules


def _interfaces(results: Node) -> list[InterfaceState]:
    return [
        InterfaceState(
            interface=name,
            up=entry["link"].flag(),
            receive_bytes=counter(entry["rx_bytes"]),
            transmit_bytes=counter(entry["tx_bytes"]),
        )
        for name, entry in results.items()
        if entry.is_object()
    ]


def _tunnels(results: Node) -> list[TunnelState]:
    tunnels = []
    for tunnel in results.elements():
        name = tunnel["name"].text()
        if not name:
            continue
        phase2 = [proxy["status"].text() for proxy in tunnel["proxyid"].elements()]
        tunnels.append(
            TunnelState(
                tunnel=name,
                type="ipsec",
                remote=tunnel["rgwy"].text(),
                up="up" in phase2,
                receive_bytes=counter(tunnel["incoming_bytes"]),
                transmit_bytes=counter(tunnel["outgoing_bytes"]),
            )
        )
    return tunnels


def _health_checks(results: Node) -> list[GatewayState]:
    gateways = []
    for check, members in results.items():
        for member, state in members.items():
            status = state["status"].text()
            if status in ("", "disable"):
                continue  # a member the check does not probe: nothing to report
            gateways.append(
                GatewayState(
                    gateway=check,
                    interface=member,
                    up=status == "up",
                    rtt_seconds=milliseconds(state["latency"]),
                    loss_ratio=percent_ratio(state["packet_loss"]),
                )
            )
    return gateways


def _ha(answers: Answers, serial: str) -> HaState:
    mode = answers["ha_config"].get("results", "mode").text()
    if mode == "standalone":
        return HaState(mode=mode, role="standalone", members=1)
    peers = list(answers["ha_peers"]["results"].elements())
    checksums = list(answers["ha_checksums"]["results"].elements())
    primary = _this_unit_primary(peers, serial)
    if primary is None:
        # ha-checksums marks the unit that manages the cluster too.
        mine = next((entry for entry in checksums if entry["serial_no"].text() == serial), Node())
        primary = mine["is_manage_master"].flag()
    role = "" if primary is None else ("primary" if primary else "secondary")
    sums = [entry.get("checksum", "all").text() for entry in checksums]
    in_sync = None
    if len(sums) >= 2 and all(sums):
        in_sync = len(set(sums)) == 1
    return HaState(
        mode=mode,
        role=role,
        in_sync=in_sync,
        members=len(peers) or None,
    )


def _primary_flag(peer: Node) -> bool | None:
    flag = peer["primary"].flag()
    return flag if flag is not None else peer["master"].flag()  # "master" before 7.4


def _this_unit_primary(peers: Sequence[Node], serial: str) -> bool | None:
    """Whether this unit is the primary, from the peer list; ``None`` if it does not say.

    FortiOS 7.4 sets ``primary: true`` on the primary's entry only, so a unit
    without the flag is a secondary as long as some entry has it.
    """
    me = next((peer for peer in peers if peer["serial_no"].text() == serial), None)
    if me is None or not any(_primary_flag(peer) for peer in peers):
        return None
    return bool(_primary_flag(me))
