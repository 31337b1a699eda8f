"""Real peers for the probers: certificates, TLS servers, and network namespaces.

Network namespaces (``ip netns``) give the ICMP tests a far side whose delay
and loss the test sets, on addresses only the test uses:

- ``netns``: a namespace joined to this one by a veth pair, with a /30 on the
  link and a second /30 routed into the namespace and blackholed there. The
  prober runs in the test process itself, in the root namespace, and probes
  across the veth: that is the code path production runs, with the event loop,
  sockets and kernel timestamps of the exporter and no extra process between.
- ``impairment``: delay, jitter and loss on the replies that leave the
  namespace. With ``sch_netem`` in the kernel it is ``tc qdisc ... netem``;
  without it (some kernels leave it out) a user-space echo responder in the
  namespace does netem's work: the kernel's own echo replies are switched off
  there and the responder answers each request after the delay, or drops it.
  The responder also reports what it did to each packet, so tests can compare
  what the prober measured with what was done, packet by packet.
- ``link_local_netns``: a namespace across a veth pair with IPv6 link-local
  addresses only, reached from here as ``fe80::5c:2%<interface>``, with HTTP,
  HTTPS and fake FortiGate servers and snmpd bound to the far end's zoned
  address: the real path of a zoned target, for every kind.
- ``isolated_netns``: a namespace with loopback only, whose
  ``net.ipv4.ping_group_range`` a test may set without touching the host's. A
  prober that must run inside it runs as a child (``ip netns exec``), since a
  process cannot move itself and keep its event loop's sockets where they were.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import heapq
import ipaddress
import json
import os
import random
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scripts.localstack import free_port

REPO = Path(__file__).resolve().parents[4]

# --- certificates -------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def not_after(self) -> float:
        return self.certificate.not_valid_after_utc.timestamp()

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def issue(
    name: str,
    not_after: dt.datetime,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    sans: tuple[str, ...] = (),
) -> Issued:
    """A certificate for ``name``, signed by ``issuer`` (self-signed without one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        builder = builder.add_extension(usage, critical=True)
    if sans:
        names: list[x509.GeneralName] = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


@dataclass(frozen=True)
class ServerCert:
    """A server's certificate chain on disk, and what a client needs to trust it."""

    chain: list[Issued]  # leaf first, as the server presents it
    cert_file: Path
    key_file: Path
    ca_file: Path  # the root that signed the chain (the leaf itself if self-signed)

    @property
    def earliest_not_after(self) -> float:
        return min(c.not_after for c in self.chain)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _write(tmp: Path, chain: list[Issued], root: Issued) -> ServerCert:
    tmp.mkdir(parents=True, exist_ok=True)
    cert_file, key_file, ca_file = tmp / "chain.pem", tmp / "key.pem", tmp / "ca.pem"
    cert_file.write_bytes(b"".join(c.pem() for c in chain))
    key_file.write_bytes(
        chain[0].key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca_file.write_bytes(root.pem())
    return ServerCert(chain, cert_file, key_file, ca_file)


# Whole seconds: a certificate's notAfter has no finer resolution.
LEAF_NOT_AFTER = dt.datetime(2031, 5, 17, 12, 34, 56, tzinfo=dt.UTC)
INTERMEDIATE_NOT_AFTER = dt.datetime(2029, 2, 3, 4, 5, 6, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ServerCert:
    """A self-signed certificate for localhost and 127.0.0.1."""
    leaf = issue("localhost", LEAF_NOT_AFTER, sans=("localhost", "127.0.0.1"))
    return _write(tmp_path_factory.mktemp("self-signed"), [leaf], leaf)


@pytest.fixture(scope="session")
def chained(tmp_path_factory: pytest.TempPathFactory) -> ServerCert:
    """Leaf and intermediate presented; the intermediate expires first."""
    root = issue("Scout Test Root", dt.datetime(2035, 1, 1, tzinfo=dt.UTC), ca=True)
    middle = issue("Scout Test Intermediate", INTERMEDIATE_NOT_AFTER, issuer=root, ca=True)
    leaf = issue("localhost", LEAF_NOT_AFTER, issuer=middle, sans=("localhost", "127.0.0.1"))
    return _write(tmp_path_factory.mktemp("chained"), [leaf, middle], root)


# --- network namespaces -------------------------------------------------------------


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _require_netns() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespace tests need root")
    if shutil.which("ip") is None:
        pytest.skip("network namespace tests need iproute2 (ip)")
    if shutil.which("sysctl") is None:
        # The links' IPv6 and the namespaces' ping ranges are set with it.
        pytest.skip("network namespace tests need sysctl (procps)")


@dataclass
class Netns:
    name: str
    host_if: str = ""
    ns_if: str = ""
    host_ip: str = ""
    ns_ip: str = ""
    blackholed_ip: str = ""

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", self.name, *args, check=check)

    def sysctl(self, setting: str, value: str) -> None:
        self.exec("sysctl", "-q", "-w", f"{setting}={value}")


def _create(name: str) -> Netns:
    # Names carry this process's PID, so one already there is a crashed run's
    # leftover (a PID is reused), not another run's: it would fail the add.
    _run("ip", "netns", "del", name, check=False)
    added = _run("ip", "netns", "add", name, check=False)
    if added.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {added.stderr.strip()}")
    netns = Netns(name)
    netns.exec("ip", "link", "set", "lo", "up")
    return netns


def _add_veth(netns: Netns) -> None:
    """The veth pair: ``host_if`` here, ``ns_if`` in the namespace.

    An interface of that name a crashed run left here is deleted first, or
    the add would fail ("File exists").
    """
    _run("ip", "link", "del", netns.host_if, check=False)
    _run(
        "ip", "link", "add", netns.host_if, "type", "veth",
        "peer", "name", netns.ns_if, "netns", netns.name,
    )  # fmt: skip


def _delete(netns: Netns) -> None:
    _run("ip", "netns", "del", netns.name, check=False)
    if netns.host_if:
        # Deleting the namespace takes its veth end, and with it this one; be sure.
        _run("ip", "link", "del", netns.host_if, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /29 in 10.250.0.0/16 that no interface here uses, picked by PID."""
    taken = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route").stdout
    block = ipaddress.ip_network("10.250.0.0/16")
    subnets = list(block.subnets(new_prefix=29))
    start = os.getpid() % len(subnets)
    for offset in range(len(subnets)):
        subnet = subnets[(start + offset) % len(subnets)]
        if not any(str(a) in taken for a in subnet):
            return subnet
    raise RuntimeError("no free /29 in 10.250.0.0/16")


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    """A namespace across a veth pair: 10.250.x.1 here, .2 there, .4/30 blackholed there."""
    _require_netns()
    tag = f"{os.getpid()}"
    netns = _create(f"scoutprobe-{tag}")
    try:
        subnet = _free_subnet()
        link, hole = list(subnet.subnets(new_prefix=30))
        netns.host_if, netns.ns_if = f"spb{tag}h"[-15:], f"spb{tag}n"[-15:]
        netns.host_ip, netns.ns_ip = str(link[1]), str(link[2])
        netns.blackholed_ip = str(hole[1])
        _add_veth(netns)
        # No IPv6 on the link: no router or neighbour solicitations through the qdisc.
        for where, interface in ((None, netns.host_if), (netns, netns.ns_if)):
            setting = f"net.ipv6.conf.{interface}.disable_ipv6"
            if where is None:
                _run("sysctl", "-q", "-w", f"{setting}=1")
            else:
                where.sysctl(setting, "1")
        _run("ip", "addr", "add", f"{netns.host_ip}/30", "dev", netns.host_if)
        _run("ip", "link", "set", netns.host_if, "up")
        netns.exec("ip", "addr", "add", f"{netns.ns_ip}/30", "dev", netns.ns_if)
        netns.exec("ip", "link", "set", netns.ns_if, "up")
        _run("ip", "route", "add", str(hole), "via", netns.ns_ip, "dev", netns.host_if)
        netns.exec("ip", "route", "add", "blackhole", str(hole))
        # Fixed neighbours: no ARP through the qdisc to be delayed or dropped.
        host_mac = Path(f"/sys/class/net/{netns.host_if}/address").read_text().strip()
        ns_mac = netns.exec("cat", f"/sys/class/net/{netns.ns_if}/address").stdout.strip()
        _run(
            "ip", "neigh", "replace", netns.ns_ip, "lladdr", ns_mac,
            "dev", netns.host_if, "nud", "permanent",
        )  # fmt: skip
        netns.exec(
            "ip", "neigh", "replace", netns.host_ip, "lladdr", host_mac,
            "dev", netns.ns_if, "nud", "permanent",
        )  # fmt: skip
        yield netns
    finally:
        _delete(netns)


@pytest.fixture
def isolated_netns() -> Iterator[Netns]:
    """A namespace with loopback only."""
    _require_netns()
    netns = _create(f"scoutprobe-{os.getpid()}-iso")
    try:
        yield netns
    finally:
        _delete(netns)


def run_in_netns(netns: Netns, function: str, *args: str, drop_net_raw: bool = False) -> Any:
    """Call ``function(args)`` of this module in a child inside ``netns``; its JSON output."""
    command = ["ip", "netns", "exec", netns.name]
    if drop_net_raw:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv (util-linux) to drop CAP_NET_RAW")
        command += ["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw"]
    code = f"import sys; from {__name__} import {function}; {function}(sys.argv[1:])"
    command += [sys.executable, "-c", code, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env=env, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{function} in {netns.name} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def ping_main(argv: list[str]) -> None:
    """Child side of ``run_in_netns``: ping with a forced socket mode, print JSON."""
    from exporter.clients.icmp import IcmpPermissionError, SocketPinger

    mode, target = argv

    async def ping() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            result = await SocketPinger(mode).ping(  # type: ignore[arg-type]
                ipaddress.ip_address(target),
                count=3,
                interval=0.05,
                reply_timeout=1.0,
                deadline=loop.time() + 5,
                payload_size=56,
                dont_fragment=False,
            )
        except IcmpPermissionError as exc:
            return {"error": str(exc)}
        return {"kind": result.kind, "rtts": list(result.rtts)}

    print(json.dumps(asyncio.run(ping())))


def icmp_probe_main(argv: list[str]) -> None:
    """Child side of ``run_in_netns``: a whole icmp probe with a forced socket mode."""
    from exporter.clients.icmp import SocketPinger
    from exporter.targets.probe.icmp import IcmpModule, IcmpProber

    mode, target = argv

    async def probe() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        prober = IcmpProber(SocketPinger(mode))  # type: ignore[arg-type]
        module = IcmpModule(count=3, interval_seconds=0.05)
        result = await prober.probe(target, module, loop.time() + 5)
        return {"success": result.success, "error": result.error, **values_of(result.families)}

    print(json.dumps(asyncio.run(probe())))


# --- a link-local link: zoned addresses, with servers and an SNMP agent on the far side ---


LINK_LOCAL_HERE = "fe80::5c:1"
LINK_LOCAL_THERE = "fe80::5c:2"
SNMP_PORT = 16161  # the namespace is the test's own: every port there is free


@dataclass
class LinkLocal:
    """A veth pair with IPv6 link-local addresses only, and peers on its far end.

    ``zoned`` is the far end as this namespace must write it (the address and
    this end's interface); ``ports`` the peer's listeners on it: ``echo``
    (HTTP, answering with the Host header it got, or redirecting ``/redirect?to=``
    there), ``tls`` (the same over TLS,
    with a certificate for the address, trusted by ``ca_file``) and
    ``fortigate`` (a fake FortiGate API). snmpd answers on ``SNMP_PORT``.
    """

    netns: Netns
    ports: dict[str, int]
    ca_file: Path

    @property
    def zoned(self) -> str:
        return f"{LINK_LOCAL_THERE}%{self.netns.host_if}"


def _enable_ipv6(netns: Netns) -> None:
    for where, interface in ((None, netns.host_if), (netns, netns.ns_if)):
        setting = f"net.ipv6.conf.{interface}.disable_ipv6"
        if where is None:
            if not Path(f"/proc/sys/net/ipv6/conf/{interface}").exists():
                pytest.skip("this kernel has no IPv6")
            _run("sysctl", "-q", "-w", f"{setting}=0")
        else:
            where.sysctl(setting, "0")


def _read_ready(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line the child prints, or the reason it printed none."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if readable else ""
    if not line:
        process.kill()
        _, error = process.communicate(timeout=10)
        raise RuntimeError(f"the link-local peer did not start:\n{error}")
    return line


def _snmpd_ready(zoned: str, deadline: float) -> None:
    target = f"udp6:[{zoned}]:{SNMP_PORT}"
    while time.monotonic() < deadline:
        answered = _run("snmpget", "-v2c", "-c", "public", "-t", "0.5", "-r", "0", target,
                        "1.3.6.1.2.1.1.5.0", check=False)  # fmt: skip
        if answered.returncode == 0:
            return
    raise RuntimeError(f"snmpd did not answer at {target}")


@pytest.fixture(scope="module")
def link_local_netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinkLocal]:
    """``fe80::5c:1`` here and ``fe80::5c:2`` in a namespace, on one veth pair, no other address.

    The addresses are set with ``nodad`` (usable at once, no duplicate detection
    to wait for); the peers bind the far one with its zone, as a link-local
    server must.
    """
    _require_netns()
    for tool in ("snmpd", "snmpget"):
        if shutil.which(tool) is None:
            pytest.skip(f"the link-local tests need {tool} (net-snmp)")
    tag = f"{os.getpid()}"
    netns = _create(f"scoutzone-{tag}")
    processes: list[subprocess.Popen[str]] = []
    try:
        netns.host_if, netns.ns_if = f"szh{tag}"[-15:], f"szn{tag}"[-15:]
        netns.host_ip, netns.ns_ip = LINK_LOCAL_HERE, LINK_LOCAL_THERE
        _add_veth(netns)
        _enable_ipv6(netns)
        _run("ip", "addr", "add", f"{LINK_LOCAL_HERE}/64", "dev", netns.host_if, "nodad")
        _run("ip", "link", "set", netns.host_if, "up")
        netns.exec("ip", "addr", "add", f"{LINK_LOCAL_THERE}/64", "dev", netns.ns_if, "nodad")
        netns.exec("ip", "link", "set", netns.ns_if, "up")

        tmp = tmp_path_factory.mktemp("link-local")
        leaf = issue(LINK_LOCAL_THERE, LEAF_NOT_AFTER, sans=(LINK_LOCAL_THERE,))
        cert = _write(tmp / "tls", [leaf], leaf)
        there = f"{LINK_LOCAL_THERE}%{netns.ns_if}"
        code = (
            f"import sys; from {__name__} import link_local_peer_main; "
            "link_local_peer_main(sys.argv[1:])"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        peer = subprocess.Popen(
            ["ip", "netns", "exec", netns.name, sys.executable, "-c", code,
             there, str(cert.cert_file), str(cert.key_file)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
        )  # fmt: skip
        processes.append(peer)
        ports = json.loads(_read_ready(peer, 30))

        conf = tmp / "snmpd.conf"
        conf.write_text(
            f"[snmp] persistentDir {tmp / 'snmpd'}\n"
            f"agentAddress udp6:[{there}]:{SNMP_PORT}\n"
            "sysName scout-link-local\n"
            "rocommunity6 public default\n"
        )
        snmpd = subprocess.Popen(
            ["ip", "netns", "exec", netns.name, "snmpd", "-f", "-Lf", str(tmp / "snmpd.log"),
             "-C", "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        processes.append(snmpd)
        link = LinkLocal(netns, ports, cert.ca_file)
        _snmpd_ready(link.zoned, time.monotonic() + 20)
        yield link
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:  # communicate, not wait: it also closes the pipes
                process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
        _delete(netns)


def link_local_peer_main(argv: list[str]) -> None:
    """Child side of ``link_local_netns``: the servers, bound to the zoned address given.

    Prints the ports as JSON once every one listens, then serves until stopped.
    """
    from aiohttp import web

    from tests.peers.firewall_api import FakeApi

    there, cert_file, key_file = argv

    async def echo(request: web.Request) -> web.Response:
        if request.path == "/redirect":
            raise web.HTTPFound(request.query["to"])
        return web.json_response({"host": request.headers.get("Host"), "path": request.path})

    async def serve() -> None:
        echo_app = web.Application()
        echo_app.router.add_get("/{path:.*}", echo)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        ports: dict[str, int] = {}
        for name, app, tls in (
            ("echo", echo_app, None),
            ("tls", echo_app, context),
            ("fortigate", FakeApi("fortigate").app, None),
        ):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, there, 0, ssl_context=tls)
            await site.start()
            server = site._server
            assert server is not None
            ports[name] = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(json.dumps(ports), flush=True)
        await asyncio.Event().wait()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(serve())


# --- impairment: netem, or an echo responder doing its work ------------------------


@dataclass
class Impairment:
    """What was done to the echo replies, when the backend can tell packet by packet."""

    backend: str
    requests: int | None = None
    # (identifier, sequence) -> seconds the reply was to be held back; dropped ones absent.
    delays: dict[tuple[int, int], float] | None = None
    # (identifier, sequence) -> seconds from the request's arrival in the namespace's
    # kernel to the reply's send: the hold as it really was, lateness included.
    held: dict[tuple[int, int], float] | None = None
    dropped: set[tuple[int, int]] | None = None


def _netem_available(netns: Netns) -> bool:
    result = netns.exec("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms",
                        check=False)  # fmt: skip
    if result.returncode == 0:
        netns.exec("tc", "qdisc", "del", "dev", "lo", "root")
        return True
    return False


@dataclass(frozen=True)
class Impairer:
    backend: str
    apply: Callable[[float, float, float], contextlib.AbstractContextManager[Impairment]]

    def __call__(
        self, delay: float, jitter: float = 0.0, loss: float = 0.0
    ) -> contextlib.AbstractContextManager[Impairment]:
        return self.apply(delay, jitter, loss)


@pytest.fixture(params=["netem", "responder"])
def impairment(request: pytest.FixtureRequest, netns: Netns) -> Impairer:
    """``impairment(delay_s, jitter_s, loss)``: a context in which the netns's replies suffer.

    As netem does with ``delay D J loss L``: each reply is held back by a
    uniform draw from [D - J, D + J] and dropped with probability L.
    """
    backend = str(request.param)
    if backend == "netem" and not _netem_available(netns):
        pytest.skip("this kernel has no sch_netem; the responder backend covers the case")

    @contextlib.contextmanager
    def netem(delay: float, jitter: float, loss: float) -> Iterator[Impairment]:
        spec = ["delay", f"{delay * 1000:g}ms"]
        if jitter:
            spec.append(f"{jitter * 1000:g}ms")
        if loss:
            spec += ["loss", f"{loss * 100:g}%"]
        netns.exec("tc", "qdisc", "replace", "dev", netns.ns_if, "root", "netem", *spec)
        try:
            yield Impairment("netem")
        finally:
            netns.exec("tc", "qdisc", "del", "dev", netns.ns_if, "root", check=False)

    @contextlib.contextmanager
    def responder(delay: float, jitter: float, loss: float) -> Iterator[Impairment]:
        netns.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        code = f"import sys; from {__name__} import echo_responder_main as m; m(sys.argv[1:])"
        args = [f"--delay={delay}", f"--jitter={jitter}", f"--loss={loss}", "--seed=20240611"]
        # Ahead of other work on a busy machine, so the holds stay close to those asked for.
        command = ["ip", "netns", "exec", netns.name, "nice", "-n", "-10"]
        child = subprocess.Popen(
            [*command, sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        outcome = Impairment("responder")
        try:
            assert child.stdout is not None
            ready = child.stdout.readline()
            if ready.strip() != "ready":
                raise RuntimeError(f"echo responder did not start: {child.stderr.read()}")
            yield outcome
        finally:
            child.send_signal(signal.SIGTERM)
            stdout, stderr = child.communicate(timeout=30)
            netns.sysctl("net.ipv4.icmp_echo_ignore_all", "0")
        report = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else None
        if report is None:
            raise RuntimeError(f"echo responder gave no report: {stderr}")
        outcome.requests = report["requests"]
        outcome.delays = {(i, s): d for i, s, d in report["delays"]}
        outcome.held = {(i, s): d for i, s, d in report["held"]}
        outcome.dropped = {(i, s) for i, s in report["dropped"]}

    return Impairer(backend, netem if backend == "netem" else responder)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_responder_main(argv: list[str]) -> None:
    """Answer ICMP echo requests after a delay, or drop them: netem in user space.

    Runs in the namespace with the kernel's echo replies off. Kept apart from
    the code under test on purpose (its own checksum, its own parsing), so a
    shared mistake cannot make both sides agree. On SIGTERM it prints a JSON
    report of every request and what it did with it.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, required=True)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)
    rng = random.Random(options.seed)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    so_timestampns = 35  # Linux: the kernel's receive time, in CLOCK_REALTIME nanoseconds
    sock.setsockopt(socket.SOL_SOCKET, so_timestampns, 1)
    due: list[tuple[float, int, bytes, str, int, tuple[int, int]]] = []
    report: dict[str, Any] = {"requests": 0, "delays": [], "dropped": [], "held": []}
    order = 0
    print("ready", flush=True)
    while not stopping:
        wait = min(max(due[0][0] - time.monotonic(), 0.0), 0.05) if due else 0.05
        readable, _, _ = select.select([sock], [], [], wait)
        if readable:
            data, ancillary, _, (source, _) = sock.recvmsg(65535, socket.CMSG_SPACE(16))
            received = time.monotonic()
            arrived_ns = time.time_ns()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == so_timestampns:
                    seconds, nanoseconds = struct.unpack("@ll", value[:16])
                    arrived_ns = seconds * 1_000_000_000 + nanoseconds
            icmp = data[(data[0] & 0x0F) * 4 :]
            if len(icmp) >= 8 and icmp[0] == 8 and icmp[1] == 0:
                ident, seq = struct.unpack("!HH", icmp[4:8])
                report["requests"] += 1
                if rng.random() < options.loss:
                    report["dropped"].append([ident, seq])
                else:
                    hold = options.delay + rng.uniform(-options.jitter, options.jitter)
                    reply = b"\0\0\0\0" + icmp[4:]
                    reply = reply[:2] + struct.pack("!H", _checksum(reply)) + reply[4:]
                    order += 1
                    entry = (received + hold, order, reply, source, arrived_ns, (ident, seq))
                    heapq.heappush(due, entry)
                    report["delays"].append([ident, seq, hold])
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, reply, destination, arrived_ns, key = heapq.heappop(due)
            sent_ns = time.time_ns()
            sock.sendto(reply, (destination, 0))
            report["held"].append([*key, (sent_ns - arrived_ns) / 1e9])
    sock.close()
    print(json.dumps(report), flush=True)


# --- loopback servers -------------------------------------------------------------


@dataclass
class TcpServer:
    port: int
    accepted: int = 0


@pytest.fixture
async def tcp_server_factory() -> Any:
    """Start asyncio TCP servers on 127.0.0.1 (TLS if given a context); stopped after."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(context: ssl.SSLContext | None = None) -> TcpServer:
        state = TcpServer(0)

        async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.accepted += 1
            writers.append(writer)
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

        server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=context)
        servers.append(server)
        state.port = server.sockets[0].getsockname()[1]
        return state

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    for writer in writers:
        writer.close()
    # Let closing transports finish, so none is collected unclosed.
    await asyncio.sleep(0.05)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, drawn as ``free_port`` draws
    them: one from the ephemeral range (port 0's) may meanwhile be taken by any
    test server that listens on port 0."""
    return free_port()


def values_of(families: list[Any]) -> dict[str, float]:
    """One probe's families as name -> value (they are all unlabelled gauges)."""
    values: dict[str, float] = {}
    for metric in families:
        (sample,) = metric.samples
        assert sample.labels == {}, sample
        values[metric.name] = sample.value
    return values


def assert_one_answer_has_no_jitter(values: dict[str, float]) -> None:
    """Jitter needs two answers: one has no successive change to report, so none is shown."""
    assert values["scout_probe_packets_received"] == 1
    assert "scout_probe_jitter_seconds" not in values
    assert values["scout_probe_rtt_min_seconds"] == values["scout_probe_rtt_max_seconds"]
