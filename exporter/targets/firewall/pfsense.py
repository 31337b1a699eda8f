"""pfSense through the pfSense REST API package (v2), read with its X-API-Key.

The package (pfrest.org, ``pfSense-pkg-RESTAPI``) takes an API key in
``X-API-Key``, a user's basic auth, or a JWT as a bearer token; the key's user
needs the ``api-v2-...-get`` privileges of the endpoints below (or
``page-all``). Every answer is the package's envelope, ``{"code": 200,
"status": "ok", "response_id": "SUCCESS", "message": "", "data": ...}``. What
is read:

=============================  ====================================================
endpoint                       schema
=============================  ====================================================
``status/system``              ``platform`` as model; ``cpu_usage`` (the package's
                               estimate from the one-minute load average) and
                               ``mem_usage``, in percent -> CPU and memory ratio
``system/version``             ``version`` ("2.7.2-RELEASE") as firmware
``system/hostname``            ``hostname``.``domain`` as hostname
``firewall/states/size``       ``currentstates`` -> sessions, ``maximumstates``
                               (else ``defaultmaximumstates``: the stock box has no
                               limit of its own, null) -> sessions limit
``status/interfaces``          ``descr`` (else ``name``) as the label, ``status``
                               ("up") -> up, ``inbytes``/``outbytes``
``status/gateways``            ``status`` (online, or dpinger's none/delay/loss: up;
                               down: not), ``delay`` (ms), ``loss`` (%); a gateway
                               down with a delay of 0 has no round trip
``status/ipsec/sas``           IKE SAs: ``con_id``, ``state`` ESTABLISHED -> up,
                               ``remote_host``, bytes summed over ``child_sas``
``firewall/virtual_ips``       CARP addresses' ``carp_status`` (master, backup) ->
                               HA role
=============================  ====================================================

The package gives no per-rule counters, sessions created, setup rate or HA
sync state, so those families are left out. IPsec lists established SAs only:
a tunnel that is down has no series rather than a 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exporter.schema.firewall import FirewallSnapshot, InterfaceState, TunnelState
from exporter.targets.firewall.modules import PfSenseModule
from exporter.targets.firewall.values import Node, counter, milliseconds, percent_ratio, total
from exporter.targets.firewall.vendor import (
    Answers,
    AuthScheme,
    Endpoint,
    Reading,
    ShapeError,
    carp_state,
    gateway_state,
)


def data(answer: Node) -> Node:
    """The package's envelope, checked, and its ``data``."""
    if not answer.is_object() or not answer["data"].present:
        raise ShapeError("not a pfSense REST API answer (no 'data')")
    if answer["status"].text() not in ("", "ok"):
        raise ShapeError(f"pfSense answered status {answer['status'].text()!r}")
    return answer["data"]


def _endpoint(key: str, path: str) -> Endpoint:
    return Endpoint(key, f"/api/v2/{path}", (), data)


class PfSense:
    """The ``pfsense`` prober's vendor."""

    name = "pfsense"
    auth_schemes: Mapping[AuthScheme, str] = {
        "api_key": "a REST API key",
        "basic": "a user's name and password",
        "bearer": "a REST API JWT",
    }

    def endpoints(self, module: PfSenseModule) -> Sequence[Endpoint]:
        return (
            _endpoint("system", "status/system"),
            _endpoint("version", "system/version"),
            _endpoint("hostname", "system/hostname"),
            _endpoint("states", "firewall/states/size"),
            _endpoint("interfaces", "status/interfaces"),
            _endpoint("gateways", "status/gateways"),
            _endpoint("ipsec", "status/ipsec/sas"),
            _endpoint("vips", "firewall/virtual_ips"),
        )

    def read(self, module: PfSenseModule, answers: Answers) -> Reading:
        system = answers["system"]
        names = answers["hostname"]
        hostname = ".".join(p for p in (names["hostname"].text(), names["domain"].text()) if p)
        snapshot = FirewallSnapshot(
            vendor=self.name,
            model=system["platform"].text(),
            firmware=answers["version"]["version"].text(),
            hostname=hostname,
            cpu_ratio=percent_ratio(system["cpu_usage"]),
            memory_ratio=percent_ratio(system["mem_usage"]),
        )
        states = answers["states"]
        snapshot.sessions = counter(states["currentstates"])
        # maximumstates is null unless the limit was set by hand: pf then uses its default.
        snapshot.sessions_limit = (
            counter(states["maximumstates"]) or counter(states["defaultmaximumstates"]) or None
        )
        snapshot.interfaces = [
            InterfaceState(
                interface=row["descr"].text() or row["name"].text(),
                up=None if not row["status"].text() else row["status"].text() == "up",
                receive_bytes=counter(row["inbytes"]),
                transmit_bytes=counter(row["outbytes"]),
            )
            for row in answers["interfaces"].elements()
            if row["descr"].text() or row["name"].text()
        ]
        snapshot.gateways = [
            gateway_state(
                row["name"].text(),
                row["status"].text(),
                milliseconds(row["delay"]),
                percent_ratio(row["loss"]),
            )
            for row in answers["gateways"].elements()
            if row["name"].text()
        ]
        snapshot.tunnels = [
            _tunnel(sa) for sa in answers["ipsec"].elements() if sa["con_id"].text()
        ]
        if "vips" in answers:
            snapshot.ha = carp_state(
                vip["carp_status"].text()
                for vip in answers["vips"].elements()
                if vip["mode"].text() == "carp"
            )
        return Reading(snapshot)


def _tunnel(sa: Node) -> TunnelState:
    children = list(sa["child_sas"].elements())
    received = [counter(child["bytes_in"]) for child in children]
    sent = [counter(child["bytes_out"]) for child in children]
    return TunnelState(
        tunnel=sa["con_id"].text(),
        type="ipsec",
        remote=sa["remote_host"].text(),
        up=sa["state"].text().upper() == "ESTABLISHED",
        receive_bytes=total(received),
        transmit_bytes=total(sent),
    )
