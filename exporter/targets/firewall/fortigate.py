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
``monitor/firewall/policy``, once with           per ``policyid``: ``packets``, ``bytes``,
``ip_version=ipv4`` and once with ``ipv6``       ``hit_count`` (none listed, no traffic: 0);
                                                 table ``ipv4`` or ``ipv6``
``cmdb/firewall/policy`` (policyid, name,        rule name (``name``, else the first line of
action, comments only)                           ``comments``) and action; policy 0 is the
                                                 implicit deny, named ``implicit-deny``
``monitor/system/interface``                     ``link`` -> up, ``rx_bytes``/``tx_bytes``
``monitor/vpn/ipsec``                            per phase 1: up if a phase 2 is ``up``,
                                                 ``incoming_bytes``/``outgoing_bytes``,
                                                 ``rgwy`` as remote; dial-up: see below
``monitor/virtual-wan/health-check``             SD-WAN health checks as gateways: gateway =
                                                 check, interface = member; ``status``
                                                 (``up`` 1, ``down`` 0, anything else left
                                                 out), ``latency`` (ms), ``packet_loss`` (%)
``cmdb/system/ha``                               HA ``mode`` (standalone, a-p, a-a); an API
                                                 user who may not read it gets no mode, and
                                                 ``ha_info`` is left out
``monitor/system/ha-peer``                       members; this unit's ``primary`` flag -> role
``monitor/system/ha-checksums``                  in sync when every member's ``all`` checksum
                                                 is the same
===============================================  ==========================================

Policies other than 0 are named when they have a name or a comment; the rest
get series only with ``all_rules`` (see ``RuleBudget``). FortiOS 6.4 and later
keep IPv4 and IPv6 in one policy table and count each policy per IP version
(without ``ip_version`` the answer lists both, with the same ``policyid``
twice), so each version's counters are a series of their own, told apart by
the ``table`` label: ``ipv4``, ``ipv6``. Before 6.4 IPv6 policies were a table
of their own (``policy6``, not read) and ``ip_version`` is ignored: the IPv6
answer repeats the IPv4 one, so it is left out and the log says so. A policy
one answer lists twice keeps its first entry; the others are counted in
``scout_firewall_rules_dropped_total`` and logged.

A dial-up phase 1 is a template: it has no phase 2 and no remote gateway
(``rgwy`` 0.0.0.0), or clients name it their parent. Each connected client
is an instance of it (``PARENT_0``, ``PARENT_1``, ... with ``parent`` naming
the template and the client's address as ``rgwy``). Instances come and go
with the clients, so they get no series: the template's tunnel is up (1)
while a client has a phase 2 up and left out while none is connected (no
client is not a tunnel down), with ``remote=""``. Its bytes are the
template's own counters, which outlive the clients (in recorded answers they
run far ahead of the connected client's); a sum of the clients' counters
would fall at every disconnect, and ``rate()`` would read each fall as a
counter reset. Only when the template has no counters are the clients'
summed. A phase 1 with several phase 2s is up when any of them is.

The resource usage answer must hold something (FortiOS has been recorded
answering ``{}``): an empty one is logged as an endpoint that failed
("answered with no data"). Sessions created are not counted by FortiOS's
API, so ``scout_firewall_sessions_created_total`` is left out; the
setup rate is FortiOS's own one-minute figure.
"""

from __future__ import annotations

import re
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
from exporter.targets.firewall.values import (
    Node,
    counter,
    milliseconds,
    percent_ratio,
    total,
)
from exporter.targets.firewall.vendor import (
    Answers,
    AuthScheme,
    Endpoint,
    Reading,
    ShapeError,
    first_line,
    gateway_state,
)

IMPLICIT_DENY = "implicit-deny"
# A health-check member's status: up, down, or no answer (error: not taking part; unknown).
_HEALTH_CHECK_UP = frozenset({"up"})


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


def _with_data(answer: Node) -> Node:
    """The envelope of an answer that must hold something: an empty one tells nothing."""
    answer = envelope(answer)
    results = answer["results"].value
    if isinstance(results, dict | list) and not results:
        raise ShapeError("FortiOS answered with no data")
    return answer


def _endpoint(key: str, path: str, *query: tuple[str, str]) -> Endpoint:
    return Endpoint(key, f"/api/v2/{path}", query, envelope)


# The policy counters, read once per IP version: the key of each answer, and the table label.
POLICY_STATS = {"policy_stats": "ipv4", "policy_stats6": "ipv6"}
POLICY_STATS_PATH = "/api/v2/monitor/firewall/policy"
HA_CONFIG_PATH = "/api/v2/cmdb/system/ha"
# FortiOS keeps IPv6 policies in the policy table, and honours ip_version, from 6.4 on.
_COMBINED_POLICIES = (6, 4)
_VERSION = re.compile(r"v?(\d+)\.(\d+)")
# A dial-up instance without a ``parent`` field is named after its template: PARENT_0.
_INSTANCE_NAME = re.compile(r"(?P<parent>.+)_\d+")
# The remote gateway of a phase 1 that waits for clients.
_NO_GATEWAY = frozenset({"", "0.0.0.0", "::"})


class FortiGate:
    """The ``fortigate`` prober's vendor."""

    name = "fortinet"
    auth_schemes: Mapping[AuthScheme, str] = {"bearer": "a REST API administrator's token"}

    def endpoints(self, module: FortiGateModule) -> Sequence[Endpoint]:
        vdom = ("vdom", module.vdom)
        return (
            _endpoint("status", "monitor/system/status"),
            Endpoint(
                "usage",
                "/api/v2/monitor/system/resource/usage",
                (("scope", "global"), ("interval", "1-min")),
                _with_data,
            ),
            _endpoint("vdom_resource", "monitor/system/vdom-resource", vdom),
            *(
                Endpoint(
                    key,
                    POLICY_STATS_PATH,
                    (vdom, ("ip_version", version)),
                    envelope,
                    shown=("ip_version",),
                )
                for key, version in POLICY_STATS.items()
            ),
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
        notes: list[str] = []
        if "ha_config" in answers or "ha_peers" in answers:
            snapshot.ha = _ha(answers, status["serial"].text())
            if "ha_config" in answers and not snapshot.ha.mode:
                notes.append(
                    f"{HA_CONFIG_PATH}: no HA mode in the answer (the API user's profile"
                    " may not read system settings): ha_info left out"
                )
        if not any(key in answers for key in POLICY_STATS):
            return Reading(snapshot, notes=tuple(notes))
        rules, dropped = _policies(answers, notes)
        return Reading(snapshot, rules, rules_dropped=dropped, notes=tuple(notes))


def _policies(answers: Answers, notes: list[str]) -> tuple[list[RuleCounters], int]:
    """Each IP version's policies, IPv4's first; and how many entries were listed twice."""
    names = _policy_names(answers["policy_config"]["results"])
    rules: list[RuleCounters] = []
    dropped = 0
    for key, table in POLICY_STATS.items():
        if key not in answers:
            continue
        answer = answers[key]
        shown = f"{POLICY_STATS_PATH}?ip_version={table}"
        if table == "ipv6" and not _combined_policies(answer["version"].text()):
            notes.append(
                f"{shown}: FortiOS {answer['version'].text()} keeps IPv6 policies apart"
                " and ignores ip_version: the answer repeats IPv4's and is left out"
            )
            continue
        read, twice = _rules(answer["results"], names, table)
        rules += read
        if twice:
            dropped += len(twice)
            listed = ", ".join(twice[:10]) + (", ..." if len(twice) > 10 else "")
            notes.append(
                f"{shown}: policies listed more than once ({listed}): the first"
                f" entry kept, {len(twice)} counted in rules_dropped"
            )
    return rules, dropped


def _session_limit(session: Node) -> float | None:
    for key in ("custom_max", "max_custom_value"):
        limit = counter(session[key])
        if limit:  # 0 means "no limit of its own" here
            return limit
    return None


def _combined_policies(version: str) -> bool:
    """Whether this FortiOS counts IPv6 in its policy table; a version not given is taken as yes."""
    match = _VERSION.match(version.strip())
    return match is None or (int(match[1]), int(match[2])) >= _COMBINED_POLICIES


def _policy_names(config: Node) -> dict[str, Node]:
    return {policy["policyid"].text(): policy for policy in config.elements()}


def _rules(
    stats: Node, policies: Mapping[str, Node], table: str
) -> tuple[list[RuleCounters], list[str]]:
    """The policies of one IP version's answer, and the ids it lists more than once."""
    rules = []
    seen: set[str] = set()
    twice: list[str] = []
    for entry in stats.elements():
        policy_id = entry["policyid"].text()
        if not policy_id:
            continue
        if policy_id in seen:
            twice.append(policy_id)
            continue
        seen.add(policy_id)
        policy = policies.get(policy_id, Node())
        name = policy["name"].text() or first_line(policy["comments"].text())
        action = policy["action"].text()
        if policy_id == "0":
            name, action = name or IMPLICIT_DENY, action or "deny"
        packets, received = counter(entry["packets"]), counter(entry["bytes"])
        hits = counter(entry["hit_count"])
        # FortiOS lists no hit_count for a policy never hit, and for some with
        # traffic too (the implicit deny, IPv6 policies on some releases): only
        # a policy with no traffic at all has a hit count known to be 0.
        listed = [value for value in (packets, received) if value is not None]
        if not entry["hit_count"].present and listed and not any(listed):
            hits = 0.0
        rules.append(
            RuleCounters(
                rule_id=policy_id,
                rule=name,
                table=table,
                action=action,
                packets=packets,
                bytes=received,
                hits=hits,
                named=bool(name),
            )
        )
    return rules, twice


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
    tunnels: list[TunnelState] = []
    templates: dict[str, int] = {}  # where each dial-up template is in ``tunnels``
    instances: dict[str, list[Node]] = {}
    for tunnel in results.elements():
        name = tunnel["name"].text()
        if not name:
            continue
        parent = _dialup_parent(tunnel)
        if parent:
            instances.setdefault(parent, []).append(tunnel)
            continue
        phase2 = [proxy["status"].text() for proxy in tunnel["proxyid"].elements()]
        remote = tunnel["rgwy"].text()
        if not phase2 and remote in _NO_GATEWAY:
            templates.setdefault(name, len(tunnels))  # it waits for clients
        tunnels.append(
            TunnelState(
                tunnel=name,
                type="ipsec",
                remote=remote,
                up="up" in phase2,
                receive_bytes=counter(tunnel["incoming_bytes"]),
                transmit_bytes=counter(tunnel["outgoing_bytes"]),
            )
        )
    for parent in instances:
        if parent not in templates:  # listed with a phase 2, or not listed at all
            listed = next((i for i, state in enumerate(tunnels) if state.tunnel == parent), None)
            if listed is None:
                tunnels.append(TunnelState(tunnel=parent, type="ipsec"))
            templates[parent] = len(tunnels) - 1 if listed is None else listed
    for name, at in templates.items():
        tunnels[at] = _dialup(tunnels[at], instances.get(name, []))
    return tunnels


def _dialup_parent(tunnel: Node) -> str:
    """The template a dial-up instance belongs to; ``""`` for any other phase 1."""
    parent = tunnel["parent"].text()
    if parent or tunnel["type"].text() != "dialup":
        return parent
    # By its name only a phase 1 a client brought up: one with a phase 2 or a
    # client's address. A template named "FCT_1" waiting for clients has neither.
    if not list(tunnel["proxyid"].elements()) and tunnel["rgwy"].text() in _NO_GATEWAY:
        return ""
    named = _INSTANCE_NAME.fullmatch(tunnel["name"].text())
    return named["parent"] if named else ""


def _dialup(template: TunnelState, clients: Sequence[Node]) -> TunnelState:
    """A dial-up template: up while a client has a phase 2 up, else no series."""
    connected = any(
        proxy["status"].text() == "up"
        for client in clients
        for proxy in client["proxyid"].elements()
    )
    received, sent = template.receive_bytes, template.transmit_bytes
    if received is None and sent is None:
        received = total(counter(client["incoming_bytes"]) for client in clients)
        sent = total(counter(client["outgoing_bytes"]) for client in clients)
    return TunnelState(
        tunnel=template.tunnel,
        type="ipsec",
        up=True if connected else None,
        receive_bytes=received,
        transmit_bytes=sent,
    )


def _health_checks(results: Node) -> list[GatewayState]:
    gateways = []
    for check, members in results.items():
        for member, state in members.items():
            status = state["status"].text()
            if status in ("", "disable"):
                continue  # a member the check does not probe: nothing to report
            gateways.append(
                gateway_state(
                    check,
                    status,
                    milliseconds(state["latency"]),
                    percent_ratio(state["packet_loss"]),
                    interface=member,
                    up_words=_HEALTH_CHECK_UP,
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
