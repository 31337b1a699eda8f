"""The netfilter collector against the real kernel, in a network namespace of its own.

The namespace gets a real nftables ruleset with counters and comments and
connection tracking with accounting on (``net.netfilter.nf_conntrack_acct=1``);
real TCP, UDP and malformed packets go through it on its loopback. The
collector then runs inside the namespace (a child started with ``ip netns
exec``: the ruleset, ``/proc/net`` and ``/proc/sys/net`` are per namespace),
and its numbers are checked against ``nft list ruleset``, ``conntrack -C``,
``-L`` and ``-S`` read directly in the same namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]
CONNECTIONS = 4  # TCP connections to the server port
PAYLOAD = 1000  # bytes the client sends on each
UDP_DATAGRAMS = 3  # from one socket to a port nobody listens on: one conntrack entry
BAD_PACKETS = 5  # TCP with SYN and FIN set: invalid to conntrack

RULESET = """
table inet scout {{
    counter server_hits {{ }}
    chain input {{
        type filter hook input priority 0; policy accept;
        ct state invalid counter drop comment "invalid in"
        tcp dport {port} counter name server_hits
        tcp dport 9 counter reject comment "discard refused"
    }}
    chain output {{
        type filter hook output priority 0; policy accept;
        ct state invalid counter comment "invalid out"
        tcp dport {port} counter comment "to server"
        tcp sport {port} counter comment "from server"
        udp dport {udp_port} counter
        meta l4proto icmp counter jump icmp_out
    }}
    chain icmp_out {{
        counter return
    }}
}}
table ip extra {{
    chain forward {{
        type filter hook forward priority 0; policy drop;
    }}
}}
"""

# Run inside the namespace: send the test's traffic.
TRAFFIC = """
import socket, struct, sys
port, udp_port, connections, payload, datagrams, bad = map(int, sys.argv[1:])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen()
for _ in range(connections):
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    client.sendall(b"x" * payload)
    got = 0
    while got < payload:
        got += len(accepted.recv(65536))
    accepted.sendall(b"y" * 10)
    client.recv(10)
    client.close()
    accepted.close()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(datagrams):
    udp.sendto(b"z" * 20, ("127.0.0.1", udp_port))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
# A bare TCP header with SYN and FIN both set: no valid connection state has it.
header = struct.pack("!HHIIBBHHH", 40000, port + 1, 1, 0, 5 << 4, 0x03, 1024, 0, 0)
for _ in range(bad):
    raw.sendto(header, ("127.0.0.1", 0))
"""

# Run inside the namespace: the collector's exposition after SCRAPES scrapes.
COLLECT = """
import json, logging, sys
from prometheus_client import CollectorRegistry, generate_latest
from exporter.clients.netfilter import SystemNetfilterSource
from exporter.collectors.netfilter import NetfilterCollector
from exporter.config import NetfilterCollectorConfig
logging.basicConfig()  # warnings to stderr
settings = NetfilterCollectorConfig.model_validate(json.loads(sys.argv[1]))
collector = NetfilterCollector(settings, SystemNetfilterSource(settings.nft_command))
for _ in range(int(sys.argv[2]) - 1):
    list(collector.collect())
registry = CollectorRegistry(auto_describe=False)
registry.register(collector)
print(generate_latest(registry).decode())
"""


@dataclass
class Namespace:
    name: str
    port: int = 0
    udp_port: int = 0

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def python(
        self, code: str, *args: str, prefix: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, *prefix, sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr
        return done


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


def parsed(text: str) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(Sample(dict(sample.labels), sample.value))
    return out


def collect_in(netns: Namespace, scrapes: int = 1, **settings: object) -> dict[str, list[Sample]]:
    return parsed(netns.python(COLLECT, json.dumps(settings), str(scrapes)).stdout)


def rule_values(metrics: dict[str, list[Sample]], kind: str) -> dict[tuple[str, str], float]:
    """``{(chain, rule): value}`` of the rule packets or bytes."""
    return {
        (s.labels["chain"], s.labels["rule"]): s.value
        for s in metrics.get(f"scout_firewall_rule_{kind}_total", [])
    }


def nft_text_counters(netns: Namespace) -> dict[str, tuple[int, int]]:
    """``{comment: (packets, bytes)}`` from ``nft list ruleset``: read apart from the JSON."""
    text = netns.run("nft", "list", "ruleset").stdout
    pattern = r'counter packets (\d+) bytes (\d+) .*?comment "([^"]+)"'
    return {m[3]: (int(m[1]), int(m[2])) for m in re.finditer(pattern, text)}


def conntrack_stats(netns: Namespace) -> dict[str, int]:
    """``conntrack -S`` (read over netlink) summed over CPUs."""
    totals: dict[str, int] = {}
    for name, value in re.findall(r"(\w+)=(\d+)", netns.run("conntrack", "-S").stdout):
        if name != "cpu":
            totals[name] = totals.get(name, 0) + int(value)
    return totals


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def netns() -> Iterator[Namespace]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    for tool in ("ip", "nft", "conntrack"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (iproute2, nftables, conntrack)")
    namespace = Namespace(f"scoutnf-{os.getpid()}")
    added = subprocess.run(["ip", "netns", "add", namespace.name], capture_output=True, text=True)
    if added.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {added.stderr.strip()}")
    try:
        namespace.run("ip", "link", "set", "lo", "up")
        # Ports are the namespace's own; picked free here only to vary between runs.
        namespace.port, namespace.udp_port = _free_port(), _free_port()
        ruleset = RULESET.format(port=namespace.port, udp_port=namespace.udp_port)
        subprocess.run(
            ["ip", "netns", "exec", namespace.name, "nft", "-f", "-"],
            input=ruleset,
            text=True,
            capture_output=True,
            check=True,
        )
        acct = "/proc/sys/net/netfilter/nf_conntrack_acct"
        if namespace.run("test", "-e", acct, check=False).returncode != 0:
            pytest.skip("nf_conntrack is not loaded in this kernel")
        namespace.run("sysctl", "-q", "-w", "net.netfilter.nf_conntrack_acct=1")
        namespace.python(
            TRAFFIC,
            *map(
                str,
                (
                    namespace.port,
                    namespace.udp_port,
                    CONNECTIONS,
                    PAYLOAD,
                    UDP_DATAGRAMS,
                    BAD_PACKETS,
                ),
            ),
        )
        yield namespace
    finally:
        subprocess.run(["ip", "netns", "del", namespace.name], capture_output=True, check=False)


def test_rule_counters_match_nft(netns):
    metrics = collect_in(netns, all_rules=True)
    packets, octets = rule_values(metrics, "packets"), rule_values(metrics, "bytes")
    direct = nft_text_counters(netns)
    chains = {
        "invalid in": "input",
        "discard refused": "input",
        "invalid out": "output",
        "to server": "output",
        "from server": "output",
    }
    assert set(direct) == set(chains)
    for comment, (want_packets, want_bytes) in direct.items():
        assert packets[(chains[comment], comment)] == want_packets, comment
        assert octets[(chains[comment], comment)] == want_bytes, comment
    # The traffic really went through: the numbers are not zeros that agree.
    assert packets[("output", "to server")] >= CONNECTIONS * 3
    assert octets[("output", "to server")] >= CONNECTIONS * PAYLOAD
    assert packets[("output", "invalid out")] == BAD_PACKETS
    assert packets[("input", "discard refused")] == 0


def test_named_counter_and_uncommented_rules_match_nft(netns):
    metrics = collect_in(netns, all_rules=True)
    listing = netns.run("nft", "list", "counter", "inet", "scout", "server_hits").stdout
    found = re.search(r"packets (\d+) bytes (\d+)", listing)
    assert found is not None, listing
    want_packets, want_bytes = int(found[1]), int(found[2])
    rule_packets = metrics["scout_firewall_rule_packets_total"]
    (named,) = [s for s in rule_packets if s.labels["rule"] == "server_hits"]
    assert named.labels["chain"] == ""
    assert named.labels["table"] == "inet scout"
    assert named.value == want_packets > 0
    rule_bytes = metrics["scout_firewall_rule_bytes_total"]
    (named_bytes,) = [s for s in rule_bytes if s.labels["rule"] == "server_hits"]
    assert named_bytes.value == want_bytes
    # The UDP rule has no comment: its series is there only with all_rules.
    text = netns.run("nft", "-a", "list", "chain", "inet", "scout", "output").stdout
    udp = re.search(r"udp dport \d+ counter packets (\d+) bytes (\d+) # handle (\d+)", text)
    assert udp is not None
    (udp_sample,) = [s for s in rule_packets if s.labels["rule_id"] == udp[3]]
    assert udp_sample.value == int(udp[1]) == UDP_DATAGRAMS
    assert udp_sample.labels["action"] == ""
    assert [s.labels["action"] for s in rule_packets if s.labels["chain"] == "icmp_out"] == [
        "return"
    ]
    assert len([s for s in rule_packets if s.labels["action"] == "jump icmp_out"]) == 1


def test_sessions_match_conntrack_count_and_listing(netns):
    metrics = collect_in(netns)
    count = int(netns.run("conntrack", "-C").stdout.strip())
    listing = [line for line in netns.run("conntrack", "-L").stdout.splitlines() if line]
    (sessions,) = metrics["scout_firewall_sessions"]
    assert sessions.value == count == len(listing)
    # The connections in TIME_WAIT, and the refused UDP datagrams' one flow.
    assert count >= CONNECTIONS + 1
    limit = int(netns.run("cat", "/proc/sys/net/netfilter/nf_conntrack_max").stdout)
    assert metrics["scout_firewall_sessions_limit"][0].value == limit > 0


def test_rule_bytes_match_conntrack_accounting(netns):
    # With accounting on, conntrack counts each connection's packets and bytes per
    # direction; the rules on the server port see the same packets at the output hook.
    metrics = collect_in(netns)
    entries = netns.run("conntrack", "-L", "-p", "tcp", "--dport", str(netns.port)).stdout
    flows = re.findall(r"packets=(\d+) bytes=(\d+) .*?packets=(\d+) bytes=(\d+)", entries)
    assert len(flows) == CONNECTIONS
    packets, octets = rule_values(metrics, "packets"), rule_values(metrics, "bytes")
    assert packets[("output", "to server")] == sum(int(f[0]) for f in flows)
    assert octets[("output", "to server")] == sum(int(f[1]) for f in flows)
    assert packets[("output", "from server")] == sum(int(f[2]) for f in flows)
    assert octets[("output", "from server")] == sum(int(f[3]) for f in flows)


def test_conntrack_events_match_conntrack_statistics(netns):
    events = {
        s.labels["event"]: s.value
        for s in collect_in(netns)["scout_firewall_conntrack_events_total"]
    }
    direct = conntrack_stats(netns)
    for event in ("invalid", "drop", "early_drop", "insert_failed", "search_restart", "found"):
        assert events[event] == direct[event], event
    assert events["clash_resolve"] == direct.get("clash_resolve", 0)
    assert events["invalid"] >= BAD_PACKETS


def test_chain_policies_are_the_base_chains(netns):
    policies = {
        (s.labels["table"], s.labels["chain"], s.labels["hook"], s.labels["policy"])
        for s in collect_in(netns)["scout_firewall_chain_policy_info"]
    }
    assert policies == {
        ("inet scout", "input", "input", "accept"),
        ("inet scout", "output", "output", "accept"),
        ("ip extra", "forward", "forward", "drop"),
    }


def test_budget_named_by_default_all_on_opt_in_and_dropped_counted(netns):
    named = rule_values(collect_in(netns), "packets")
    assert set(named) == {
        ("", "server_hits"),
        ("input", "invalid in"),
        ("input", "discard refused"),
        ("output", "invalid out"),
        ("output", "to server"),
        ("output", "from server"),
    }
    everything = collect_in(netns, all_rules=True)
    assert len(everything["scout_firewall_rule_packets_total"]) == 9
    assert everything["scout_firewall_rules_dropped_total"][0].value == 0
    capped = collect_in(netns, scrapes=3, all_rules=True, max_rule_series=4)
    assert len(capped["scout_firewall_rule_packets_total"]) == 4
    assert capped["scout_firewall_rules_dropped_total"][0].value == 3 * (9 - 4)


def test_without_cap_net_admin_the_ruleset_fails_clearly_and_conntrack_is_still_read(netns):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop CAP_NET_ADMIN")
    drop = ("setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin")
    done = netns.python(COLLECT, "{}", "1", prefix=drop)
    assert "may not read the ruleset" in done.stderr
    assert "needs CAP_NET_ADMIN" in done.stderr
    metrics = parsed(done.stdout)
    assert metrics["scout_firewall_up"][0].value == 0
    assert metrics["scout_firewall_sessions"][0].value > 0
    assert "scout_firewall_rule_packets_total" not in metrics


def test_iptables_nft_rules_are_read_like_native_ones(netns):
    iptables = shutil.which("iptables-nft") or shutil.which("iptables")
    if iptables is None:
        pytest.skip("iptables is not installed (Debian package iptables): no iptables-nft rules")
    version = subprocess.run([iptables, "--version"], capture_output=True, text=True).stdout
    if "nf_tables" not in version:
        pytest.skip(f"{iptables} uses the legacy backend ({version.strip()}), not nf_tables")
    # The module's namespace is shared: take the iptables table away after.
    try:
        by_comment = ("-m", "comment", "--comment", "ipt to server")
        netns.run(
            iptables,
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "--dport",
            str(netns.port),
            *by_comment,
            "-j",
            "ACCEPT",
        )
        netns.run(iptables, "-A", "OUTPUT", "-p", "udp", "-j", "ACCEPT")
        netns.python(TRAFFIC, str(netns.port + 2), str(netns.udp_port), "0", "0", "2", "0")
        netns.python(TRAFFIC, str(netns.port), str(netns.udp_port), "2", "100", "0", "0")
        metrics = collect_in(netns, all_rules=True)
        # iptables' own listing, apart from nft: packets and bytes per rule, in order.
        listing = netns.run(iptables, "-L", "OUTPUT", "-v", "-x", "-n").stdout.splitlines()[2:]
        want = [tuple(map(int, line.split()[:2])) for line in listing if line.strip()]
        got = [
            (s.value, b.value)
            for s, b in zip(
                metrics["scout_firewall_rule_packets_total"],
                metrics["scout_firewall_rule_bytes_total"],
                strict=True,
            )
            if s.labels["table"] == "ip filter" and s.labels["chain"] == "OUTPUT"
        ]
        assert len(want) == 2, listing
        assert got == want
        # nft's JSON shows iptables' comment match as `{"xt": {"name": "comment"}}`
        # without its text (nftables 1.0.6): the rule is there, by handle, unnamed.
        tcp_rule = next(
            s
            for s in metrics["scout_firewall_rule_packets_total"]
            if s.labels["chain"] == "OUTPUT" and s.value == want[0][0]
        )
        assert tcp_rule.labels["action"] == "accept"
        assert tcp_rule.labels["rule"] == ""
        assert tcp_rule.labels["rule_id"].isdigit()
        assert tcp_rule.value > 0
        # By default (named rules only) iptables rules therefore get no series.
        default = collect_in(netns)
        assert not [
            s
            for s in default.get("scout_firewall_rule_packets_total", [])
            if s.labels["table"] == "ip filter"
        ]
    finally:
        netns.run("nft", "delete", "table", "ip", "filter", check=False)
