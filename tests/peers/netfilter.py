"""A firewalled network namespace with traffic through it, for the netfilter collector.

:class:`FirewalledNamespace` creates a network namespace (``ip netns add``), loads
an nftables ruleset with counted, commented rules, a named counter and base
chains with policies, and keeps TCP and UDP traffic flowing on its loopback
from a child process until it stops, so the rule counters and connection
tracking keep going up. A veth pair links it to this namespace: the namespace
is ``address``, this side ``host_address`` (a /30 of 198.18.0.0/15, the
benchmarking range), so a process started in it with :meth:`argv` (an
exporter with ``--collector.netfilter``, reading the namespace's own ruleset,
``/proc/net`` and ``/proc/sys/net``) can be scraped from here::

    with FirewalledNamespace(workdir) as namespace:
        exporter = namespace.argv("scout-exporter", "--collector.netfilter",
                                  f"--web.listen-address={namespace.address}:8781")

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); :func:`unavailable`
says why a namespace cannot be made here.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from scripts.localstack import Service
from tests.peers.snmp import _Peer

RULESET = """
table inet scout {
    counter datagrams { }
    chain input {
        type filter hook input priority 0; policy accept;
        ct state established,related counter accept comment "established"
        meta l4proto udp counter name datagrams
        meta l4proto tcp counter accept comment "new tcp in"
    }
    chain output {
        type filter hook output priority 0; policy accept;
        meta l4proto tcp counter comment "tcp out"
        counter
    }
    chain forward {
        type filter hook forward priority 0; policy drop;
    }
}
"""

# Run inside the namespace: a TCP exchange and a datagram every 0.2 s, until killed.
TRAFFIC = """
import socket, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind(("127.0.0.1", 0))
while True:
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    client.sendall(b"x" * 500)
    accepted.recv(65536)
    client.close()
    accepted.close()
    sink.sendto(b"y" * 50, sink.getsockname())
    sink.recv(100)
    time.sleep(0.2)
"""

_instances = itertools.count()


def unavailable() -> str | None:
    """Why no namespace can be made here, or ``None`` if one can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return f"needs {' and '.join(missing)} (iproute2, nftables)"
    return None


class FirewalledNamespace(_Peer):
    """A network namespace with ``RULESET`` loaded, traffic on its loopback, a veth to here."""

    def __init__(self, workdir: Path) -> None:
        instance = next(_instances)
        self.name = f"scoutfw-{os.getpid()}-{instance}"
        # One /30 per process and instance, so concurrent test runs do not collide.
        subnet = (os.getpid() * 4 + instance) % (1 << 15)
        base = ipaddress.IPv4Address("198.18.0.0") + subnet * 4
        self.host_address = str(base + 1)
        self.address = str(base + 2)
        self._veth = f"sfw{subnet}"  # and sfw<subnet>n inside: at most 15 characters
        self._workdir = workdir
        self._traffic: Service | None = None
        self._added = False

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def run(self, *command: str, stdin: str | None = None) -> str:
        """``command`` inside the namespace; its output, or an error with its stderr."""
        return _run(self.argv(*command), stdin)

    def start(self) -> None:
        why = unavailable()
        if why is not None:
            raise RuntimeError(why)
        _run(["ip", "netns", "add", self.name])
        self._added = True
        self.run("ip", "link", "set", "lo", "up")
        inside = f"{self._veth}n"
        _run(["ip", "link", "add", self._veth, "type", "veth", "peer", "name", inside])
        _run(["ip", "link", "set", inside, "netns", self.name])
        _run(["ip", "address", "add", f"{self.host_address}/30", "dev", self._veth])
        _run(["ip", "link", "set", self._veth, "up"])
        self.run("ip", "address", "add", f"{self.address}/30", "dev", inside)
        self.run("ip", "link", "set", inside, "up")
        self.run("nft", "-f", "-", stdin=RULESET)
        self._traffic = Service(
            name="namespace-traffic",
            argv=self.argv(sys.executable, "-c", TRAFFIC),
            ready_url="",
            log_path=self._workdir / f"{self.name}-traffic.log",
        )
        self._traffic.start()

    def stop(self) -> None:
        if self._traffic is not None:
            self._traffic.stop(grace=2)
        if self._added:
            # Deleting the namespace deletes a veth pair moved into it; not one left here.
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
            subprocess.run(["ip", "link", "del", self._veth], capture_output=True, check=False)


def _run(argv: list[str], stdin: str | None = None) -> str:
    """``argv``'s output, or an error with its stderr."""
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout
