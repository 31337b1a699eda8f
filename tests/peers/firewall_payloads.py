"""Answers of each vendor's API, written for these tests from the documented shapes.

Each table maps a path (as the exporter asks for it) to the JSON the vendor's
API answers, with the envelope each API uses. The values are made up, chosen
so each one can be told apart in the scrape; the ``EXPECTED_*`` tables say
what the exporter must make of them.
"""

from __future__ import annotations

from typing import Any

SERIAL = "FG100FTK00000001"
PEER_SERIAL = "FG100FTK00000002"


def fortios(results: Any, *, vdom: str = "root", path: str = "system", name: str = "") -> Any:
    """FortiOS's envelope around ``results``."""
    return {
        "http_method": "GET",
        "results": results,
        "vdom": vdom,
        "path": path,
        "name": name,
        "status": "success",
        "serial": SERIAL,
        "version": "v7.4.4",
        "build": 2662,
    }


def _history(*values: int) -> dict[str, Any]:
    start = 1_764_000_000_000
    points = [[start + 3000 * i, value] for i, value in enumerate(values)]
    return {"1-min": {"values": points, "start": start, "end": start + 3000 * len(values)}}


FORTIGATE: dict[str, Any] = {
    "/api/v2/monitor/system/status": fortios(
        {
            "model_name": "FortiGate",
            "model_number": "100F",
            "model": "FGT100F",
            "hostname": "fw-hq",
            "log_disk_status": "available",
        },
        name="status",
    ),
    "/api/v2/monitor/system/resource/usage": fortios(
        {
            "cpu": [{"current": 23, "historical": _history(20, 25, 23)}],
            "mem": [{"current": 61, "historical": _history(60, 61)}],
            "disk": [{"current": 4, "historical": _history(4)}],
            "session": [{"current": 51234, "historical": _history(51000, 51234)}],
            "setuprate": [{"current": 120, "historical": _history(100, 120)}],
        },
        name="usage",
    ),
    "/api/v2/monitor/system/vdom-resource": fortios(
        {
            "cpu": 21,
            "memory": 60,
            "setup_rate": 118,
            "is_deletable": False,
            "session": {
                "id": 0,
                "custom_max": 0,
                "min_custom_value": 1,
                "max_custom_value": 2_000_000,
                "guaranteed": 0,
                "global_max": 0,
                "current_usage": 51200,
                "usage_percent": 2,
            },
        },
        name="vdom-resource",
    ),
    "/api/v2/monitor/firewall/policy": fortios(
        [
            {"policyid": 0, "active_sessions": 0, "bytes": 0, "packets": 1200, "hit_count": 1200},
            {
                "policyid": 1,
                "uuid": "5a9c6f3e-0000-51ef-0000-000000000001",
                "active_sessions": 40,
                "bytes": 900_000,
                "packets": 1200,
                "software_bytes": 1000,
                "asic_bytes": 899_000,
                "hit_count": 310,
                "session_count": 40,
                "last_used": 1_764_000_100,
                "first_used": 1_763_000_000,
            },
            {"policyid": 2, "bytes": 5000, "packets": 50, "hit_count": 25},
            {"policyid": 3, "bytes": 700, "packets": 7, "hit_count": 7},
        ],
        path="firewall",
        name="policy",
    ),
    # FortiOS 6.4+ counts each policy per IP version: the IPv6 answer lists the same ids.
    "/api/v2/monitor/firewall/policy?ip_version=ipv6": fortios(
        [
            {"policyid": 0, "active_sessions": 0, "bytes": 0, "packets": 40, "hit_count": 40},
            {"policyid": 1, "active_sessions": 3, "bytes": 64_000, "packets": 90, "hit_count": 9},
            {"policyid": 2, "active_sessions": 0, "bytes": 0, "packets": 0},
        ],
        path="firewall",
        name="policy",
    ),
    "/api/v2/cmdb/firewall/policy": fortios(
        [
            {
                "policyid": 1,
                "q_origin_key": 1,
                "name": "web-out",
                "action": "accept",
                "comments": "",
            },
            {
                "policyid": 2,
                "q_origin_key": 2,
                "name": "",
                "action": "accept",
                "comments": "dns to resolvers\nticket 4711",
            },
            {"policyid": 3, "q_origin_key": 3, "name": "", "action": "deny", "comments": ""},
        ],
        path="firewall",
        name="policy",
    ),
    "/api/v2/monitor/system/interface": fortios(
        {
            "wan1": {
                "id": "wan1",
                "name": "wan1",
                "alias": "",
                "mac": "00:00:5e:00:53:01",
                "ip": "192.0.2.10",
                "mask": 24,
                "link": True,
                "speed": 1000.0,
                "duplex": 1,
                "tx_packets": 10_000,
                "rx_packets": 20_000,
                "tx_bytes": 12_000_000_000,
                "rx_bytes": 77_000_000_000,
                "tx_errors": 0,
                "rx_errors": 0,
            },
            "port2": {
                "id": "port2",
                "name": "port2",
                "link": False,
                "speed": 0,
                "tx_bytes": 0,
                "rx_bytes": 0,
            },
        },
        name="interface",
    ),
    "/api/v2/monitor/vpn/ipsec": fortios(
        [
            {
                "proxyid": [
                    {
                        "proxy_src": [{"subnet": "10.1.0.0/255.255.0.0", "port": 0}],
                        "proxy_dst": [{"subnet": "10.2.0.0/255.255.0.0", "port": 0}],
                        "status": "up",
                        "p2name": "branch1-p2",
                        "incoming_bytes": 3_000_000,
                        "outgoing_bytes": 4_000_000,
                    }
                ],
                "name": "branch1",
                "comments": "",
                "type": "automatic",
                "incoming_bytes": 3_000_000,
                "outgoing_bytes": 4_000_000,
                "rgwy": "198.51.100.7",
            },
            {
                "proxyid": [{"status": "down", "p2name": "branch2-p2"}],
                "name": "branch2",
                "type": "automatic",
                "incoming_bytes": 0,
                "outgoing_bytes": 0,
                "rgwy": "203.0.113.9",
            },
        ],
        path="vpn",
        name="ipsec",
    ),
    "/api/v2/monitor/virtual-wan/health-check": fortios(
        {
            "internet": {
                "wan1": {
                    "status": "up",
                    "latency": 4.2,
                    "jitter": 0.3,
                    "packet_loss": 0.5,
                    "packet_sent": 1000,
                    "packet_received": 995,
                    "session": 700,
                },
                "wan2": {"status": "down", "latency": 0, "packet_loss": 100},
                "lte": {"status": "disable"},
            }
        },
        path="virtual-wan",
        name="health-check",
    ),
    "/api/v2/cmdb/system/ha": fortios(
        {"group-id": 0, "group-name": "hq", "mode": "a-p", "priority": 200, "override": "disable"},
        name="ha",
    ),
    "/api/v2/monitor/system/ha-peer": fortios(
        [
            {
                "serial_no": SERIAL,
                "vcluster_id": 0,
                "priority": 200,
                "hostname": "fw-hq",
                "primary": True,
            },
            {"serial_no": PEER_SERIAL, "vcluster_id": 0, "priority": 100, "hostname": "fw-hq-2"},
        ],
        name="ha-peer",
    ),
    "/api/v2/monitor/system/ha-checksums": fortios(
        [
            {
                "is_manage_master": 1,
                "is_root_master": 1,
                "checksum": {"global": "a1", "root": "b2", "all": "c3"},
                "serial_no": SERIAL,
            },
            {
                "is_manage_master": 0,
                "is_root_master": 0,
                "checksum": {"global": "a1", "root": "b2", "all": "c3"},
                "serial_no": PEER_SERIAL,
            },
        ],
        name="ha-checksums",
    ),
}

RULE_A = "0123456789abcdef0123456789abcdef"
RULE_B = "fedcba9876543210fedcba9876543210"

OPNSENSE: dict[str, Any] = {
    "/api/diagnostics/system/system_information": {
        "name": "opnsense.lab.example",
        "versions": ["OPNsense 24.7.1_1-amd64", "FreeBSD 14.1-RELEASE-p3", "OpenSSL 3.0.14"],
        "updates": "Click to check for updates.",
    },
    "/api/diagnostics/system/system_resources": {
        "memory": {
            "total": "8589934592",
            "total_frmt": "8192",
            "used": 2147483648,
            "used_frmt": "2048",
        }
    },
    "/api/diagnostics/activity/get_activity": {
        "headers": [
            "last pid: 41234;  load averages:  0.10,  0.12,  0.09  up 3+01:02:03    10:11:12",
            "123 processes: 2 running, 121 sleeping",
            "CPU:  2.3% user,  0.0% nice,  1.2% system,  0.1% interrupt, 96.4% idle",
            "Mem: 61M Active, 1024M Inact, 512M Wired, 6G Free",
        ],
        "details": [{"PID": "1", "USERNAME": "root", "C": "0", "COMMAND": "init"}],
    },
    "/api/diagnostics/firewall/pf_states": {"current": "1534", "limit": "800000"},
    "/api/diagnostics/firewall/pf_statistics/info": {
        "info": {
            "uptime": "3 days 01:02:03",
            "state-table": {
                "current-entries": {"total": 1534},
                "searches": {"total": 99999, "rate": 12.0},
                "inserts": {"total": 77777, "rate": 1.2},
                "removals": {"total": 76243, "rate": 1.2},
            },
            "counters": {"match": {"total": 88888, "rate": 1.3}},
        }
    },
    "/api/interfaces/overview/interfaces_info": {
        "total": 3,
        "rowCount": 3,
        "current": 1,
        "rows": [
            {
                "device": "vtnet0",
                "identifier": "wan",
                "description": "WAN",
                "status": "up",
                "enabled": True,
                "link_type": "dhcp",
                "macaddr": "00:00:5e:00:53:01",
            },
            {
                "device": "vtnet1",
                "identifier": "lan",
                "description": "LAN",
                "status": "no carrier",
                "enabled": True,
            },
            {
                "device": "lo0",
                "identifier": "",
                "description": "Unassigned Interface",
                "status": "up",
            },
        ],
    },
    "/api/diagnostics/interface/get_interface_statistics": {
        "statistics": {
            "[WAN] (vtnet0) / 00:00:5e:00:53:01": {
                "name": "vtnet0",
                "flags": "0x8843",
                "mtu": 1500,
                "network": "<Link#1>",
                "address": "00:00:5e:00:53:01",
                "received-packets": 200000,
                "received-bytes": 123456789,
                "sent-packets": 100000,
                "sent-bytes": 98765432,
            },
            "[WAN] (vtnet0) / 192.0.2.10": {
                "name": "vtnet0",
                "network": "192.0.2.0/24",
                "address": "192.0.2.10",
                "received-bytes": 1000,
                "sent-bytes": 2000,
            },
            "[LAN] (vtnet1) / 00:00:5e:00:53:02": {
                "name": "vtnet1",
                "network": "<Link#2>",
                "received-bytes": 5,
                "sent-bytes": 6,
            },
        }
    },
    "/api/routes/gateway/status": {
        "items": [
            {
                "name": "WAN_DHCP",
                "address": "192.0.2.1",
                "status": "none",
                "status_translated": "Online",
                "loss": "0.0 %",
                "delay": "4.2 ms",
                "stddev": "0.3 ms",
            },
            {
                "name": "WAN2_GW",
                "address": "198.51.100.1",
                "status": "down",
                "status_translated": "Offline",
                "loss": "100.0 %",
                "delay": "0.0 ms",
                "stddev": "0.0 ms",
            },
            {
                "name": "VPN_GW",
                "address": "~",
                "status": "none",
                "status_translated": "Online",
                "loss": "~",
                "delay": "~",
                "stddev": "~",
            },
        ],
        "status": "ok",
    },
    "/api/ipsec/sessions/search_phase1": {
        "total": 2,
        "rowCount": 2,
        "current": 1,
        "rows": [
            {
                "version": 2,
                "local-addrs": "192.0.2.10",
                "remote-addrs": "198.51.100.7",
                "local-id": "192.0.2.10",
                "remote-id": "198.51.100.7",
                "routed": True,
                "ikeid": "1",
                "phase1desc": "branch-a",
                "name": "con1",
                "connected": True,
            },
            {
                "version": 2,
                "remote-addrs": "203.0.113.9",
                "ikeid": "2",
                "phase1desc": None,
                "name": "con2",
                "connected": False,
            },
        ],
    },
    "/api/firewall/filter_util/rule_stats": {
        "status": "ok",
        "stats": {
            RULE_A: {
                "pf_rules": 1,
                "evaluations": 5000,
                "packets": 4000,
                "bytes": 3_000_000,
                "states": 12,
            },
            RULE_B: {"pf_rules": 2, "evaluations": 100, "packets": 50, "bytes": 4000, "states": 0},
        },
    },
    "/api/diagnostics/firewall/list_rule_ids": {
        "items": [
            {"id": RULE_A, "descr": "Allow LAN to any"},
            {"id": RULE_B, "descr": f"-- {RULE_B}"},
        ]
    },
    "/api/diagnostics/interface/get_vip_status": {
        "total": 2,
        "rowCount": 2,
        "current": 1,
        "rows": [
            {
                "interface": "WAN",
                "vhid": "1",
                "advbase": "1",
                "advskew": "0",
                "subnet": "192.0.2.100",
                "status": "MASTER",
                "mode": "carp",
                "status_txt": "MASTER",
            },
            {
                "interface": "LAN",
                "vhid": "2",
                "advbase": "1",
                "advskew": "0",
                "subnet": "10.0.0.1",
                "status": "MASTER",
                "mode": "carp",
                "status_txt": "MASTER",
            },
        ],
        "carp": {"demotion": "0", "allow": "1", "maintenancemode": False},
    },
}


def pfrest(data: Any) -> Any:
    """The pfSense REST API package's envelope around ``data``."""
    return {"code": 200, "status": "ok", "response_id": "SUCCESS", "message": "", "data": data}


PFSENSE: dict[str, Any] = {
    "/api/v2/status/system": pfrest(
        {
            "platform": "Netgate 4200",
            "serial": "NG4200000001",
            "netgate_id": "0123456789abcdef",
            "uptime": "3 Days 01 Hours 02 Minutes 03 Seconds",
            "bios_vendor": "INSYDE Corp.",
            "bios_version": "1.0",
            "bios_date": "01/01/2025",
            "kernel_pti": False,
            "mds_mitigation": "inactive",
            "temp_c": 45.0,
            "temp_f": 113.0,
            "cpu_model": "Intel(R) Atom(TM) CPU",
            "cpu_load_avg": [0.21, 0.18, 0.2],
            "cpu_count": 4,
            "cpu_usage": 5.25,
            "mbuf_usage": 1.2,
            "mem_usage": 34.0,
            "swap_usage": 0.0,
            "disk_usage": 12.0,
        }
    ),
    "/api/v2/system/version": pfrest(
        {"version": "2.7.2-RELEASE", "base": "2.7", "patch": "0", "buildtime": "2023-12-06"}
    ),
    "/api/v2/system/hostname": pfrest({"hostname": "pfsense", "domain": "branch.example"}),
    "/api/v2/firewall/states/size": pfrest(
        {"maximumstates": 400000, "defaultmaximumstates": 400000, "currentstates": 2345}
    ),
    "/api/v2/status/interfaces": pfrest(
        [
            {
                "name": "wan",
                "descr": "WAN",
                "hwif": "igc0",
                "macaddr": "00:00:5e:00:53:11",
                "mtu": "1500",
                "enable": True,
                "status": "up",
                "ipaddr": "192.0.2.20",
                "subnet": "24",
                "inerrs": 0,
                "outerrs": 0,
                "collisions": 0,
                "inbytes": 111_000,
                "inbytespass": 110_000,
                "outbytes": 222_000,
                "outbytespass": 221_000,
                "inpkts": 1000,
                "outpkts": 2000,
                "media": "2500Base-T <full-duplex>",
                "gateway": "192.0.2.1",
            },
            {
                "name": "lan",
                "descr": "LAN",
                "hwif": "igc1",
                "enable": True,
                "status": "down",
                "inbytes": 0,
                "outbytes": 0,
            },
        ]
    ),
    "/api/v2/status/gateways": pfrest(
        [
            {
                "name": "WAN_DHCP",
                "srcip": "192.0.2.20",
                "monitorip": "192.0.2.1",
                "delay": 3.5,
                "stddev": 0.2,
                "loss": 0.0,
                "status": "online",
                "substatus": "none",
            },
            {
                "name": "WAN2_DHCP",
                "srcip": "198.51.100.20",
                "monitorip": "198.51.100.1",
                "delay": 0.0,
                "stddev": 0.0,
                "loss": 100.0,
                "status": "down",
                "substatus": "highloss",
            },
        ]
    ),
    "/api/v2/status/ipsec/sas": pfrest(
        [
            {
                "con_id": "con1000",
                "uniqueid": 1,
                "version": 2,
                "state": "ESTABLISHED",
                "local_host": "192.0.2.20",
                "remote_host": "198.51.100.7",
                "established": 3600,
                "child_sas": [
                    {"name": "con1000", "state": "INSTALLED", "bytes_in": 1000, "bytes_out": 2000},
                    {"name": "con1000", "state": "INSTALLED", "bytes_in": 5, "bytes_out": 6},
                ],
            }
        ]
    ),
    "/api/v2/firewall/virtual_ips": pfrest(
        [
            {
                "id": 0,
                "uniqid": "65a0b0c0d0e0f",
                "mode": "carp",
                "interface": "wan",
                "subnet": "192.0.2.100",
                "subnet_bits": 24,
                "vhid": 1,
                "carp_status": "backup",
            },
            {
                "id": 1,
                "mode": "ipalias",
                "interface": "lan",
                "subnet": "10.0.0.5",
                "carp_status": None,
            },
        ]
    ),
}
