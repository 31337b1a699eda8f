"""SNMP peers for tests and benchmarks: real agents, simulated devices, misbehaving agents.

Every helper is a context manager that starts its peer on entry (ready to answer) and
stops it on exit, even when the body raised; a peer that cannot start raises
:class:`SnmpPeerError` with the tail of its log. They bind to ``127.0.0.1`` only, or to
addresses inside a network namespace they create themselves.

* ``RealSnmpd``: Debian's snmpd with v2c communities and optional v3 users.
* ``NetnsSnmpd``: snmpd in a fresh network namespace with N veth pairs, so ifTable
  has 2N+1 rows; reached over a veth uplink at ``169.254.x.y:161``.
* ``SnmpsimDevices``: snmpsim serving generated IF-MIB + HOST-RESOURCES devices.
* ``SilentDevice``: a UDP socket that reads requests and never answers.
* ``TooBigProxy``: forwards to an agent but answers big GetBulks with tooBig(1).
* ``SnmpExporter``: Debian's prometheus-snmp-exporter 0.21 with an if_mib module.

A ``target`` is ``host:port`` as net-snmp, snmp_exporter and Scout all accept it.

Also here: :func:`write_if_mib_device` (the .snmprec generator, returning the values the
device will serve), net-snmp CLI wrappers that parse their output (:func:`snmpget`,
:func:`snmpbulkwalk`) and :func:`parse_exposition` for differential comparisons.

Needs: Debian packages ``snmpd snmp prometheus-snmp-exporter iproute2``; PyPI ``snmpsim``
(1.2.2, plus ``pysmi``, which it does not declare), ``pysnmp`` (7.1) and
``prometheus-client``. ``NetnsSnmpd`` needs root (network namespaces).

Typical use::

    with RealSnmpd(tmp_path) as agent, SnmpExporter(tmp_path) as reference:
        series = parse_exposition(reference.scrape(agent.target))
"""

from __future__ import annotations

import atexit
import copy
import functools
import itertools
import os
import random
import re
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from prometheus_client.parser import text_string_to_metric_families

from scripts.localstack import Service, find_binary, free_port, http_ok

DATA_DIR = Path(__file__).resolve().parent / "data"
IF_MIB_MODULE_FILE = DATA_DIR / "snmp_exporter_if_mib.yml"

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
IF_NUMBER = "1.3.6.1.2.1.2.1.0"
IF_TABLE = "1.3.6.1.2.1.2.2.1"  # ifEntry; column c of row i is IF_TABLE.c.i
IF_X_TABLE = "1.3.6.1.2.1.31.1.1.1"  # ifXEntry
IF_INDEX = f"{IF_TABLE}.1"
IF_DESCR = f"{IF_TABLE}.2"
IF_NAME = f"{IF_X_TABLE}.1"
IF_HC_IN_OCTETS = f"{IF_X_TABLE}.6"
IF_ALIAS = f"{IF_X_TABLE}.18"
HR_STORAGE_ENTRY = "1.3.6.1.2.1.25.2.3.1"
HR_DEVICE_ENTRY = "1.3.6.1.2.1.25.3.2.1"
HR_PROCESSOR_LOAD = "1.3.6.1.2.1.25.3.3.1.2"

SnmpValue = int | bytes | str | None
"""A decoded varbind value: numbers as int, OCTET STRINGs as bytes, OIDs as dotted str."""


class SnmpPeerError(Exception):
    """A peer could not start or answered unexpectedly; the message says why."""


# --------------------------------------------------------------------------------------
# net-snmp command-line tools


@functools.cache
def _client_state_dir() -> str:
    # net-snmp clients write cert_indexes under their persistent dir (by default
    # /var/lib/snmp); keep that out of system state, like the daemons' own.
    path = tempfile.mkdtemp(prefix="scout-net-snmp-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def net_snmp_env(persistent_dir: str | Path | None = None) -> dict[str, str]:
    """Environment for net-snmp tools: private persistent dir, no MIB loading."""
    return {
        **os.environ,
        "SNMP_PERSISTENT_DIR": str(persistent_dir or _client_state_dir()),
        "MIBS": "",  # Debian ships no IF-MIB text; numeric OIDs everywhere
    }


@dataclass(frozen=True, slots=True)
class V3User:
    """An SNMPv3 USM user; ``priv_protocol=None`` means authNoPriv."""

    name: str
    auth_key: str = "scout-auth-pass"
    priv_key: str = "scout-priv-pass"
    auth_protocol: str = "SHA"  # MD5 SHA SHA-224 SHA-256 SHA-384 SHA-512
    priv_protocol: str | None = "AES"  # DES AES (AES-128)

    @property
    def level(self) -> str:
        return "authPriv" if self.priv_protocol else "authNoPriv"

    def snmpd_lines(self) -> list[str]:
        create = f'createUser {self.name} {self.auth_protocol} "{self.auth_key}"'
        if self.priv_protocol:
            create += f' {self.priv_protocol} "{self.priv_key}"'
        return [create, f"rouser {self.name} {'priv' if self.priv_protocol else 'auth'}"]

    def cli_args(self) -> list[str]:
        args = ["-v3", "-l", self.level, "-u", self.name, "-a", self.auth_protocol]
        args += ["-A", self.auth_key]
        if self.priv_protocol:
            args += ["-x", self.priv_protocol, "-X", self.priv_key]
        return args


def snmp_command(
    tool: str,
    target: str,
    *oids: str,
    community: str = "public",
    user: V3User | None = None,
    options: Sequence[str] = (),
    timeout: float = 2.0,
    retries: int = 1,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run a net-snmp tool (``snmpget``, ``snmpbulkwalk`` ...) against ``target``.

    Output is numeric and unambiguous (``-On -Oe -Ot -Ox``): numeric OIDs and enums,
    raw TimeTicks, every non-empty OCTET STRING as hex. ``prefix`` wraps the command,
    e.g. ``["ip", "netns", "exec", name]`` to run it inside a namespace.
    """
    auth = user.cli_args() if user else ["-v2c", "-c", community]
    argv = [
        *prefix,
        tool,
        *auth,
        "-On",
        "-Oe",
        "-Ot",
        "-Ox",
        "-t",
        f"{timeout:g}",
        "-r",
        str(retries),
        *options,
        target,
        *oids,
    ]
    # The tool's own -t/-r bound its run time; the outer limit only catches a hang.
    limit = 60 + timeout * (retries + 1) * 4
    return subprocess.run(
        argv, capture_output=True, text=True, env=net_snmp_env(), timeout=limit, check=False
    )


_VARBIND_START = re.compile(r"^\.?(\d+(?:\.\d+)*) = (.*)$")
_NUMBER_PREFIXES = ("INTEGER:", "Counter32:", "Counter64:", "Gauge32:", "UInteger32:")
_NO_VALUE = ("No Such Object", "No Such Instance", "No more variables")


def _parse_value(text: str) -> SnmpValue:
    text = text.strip()
    if text == '""':
        return b""
    if text.startswith("Hex-STRING:"):
        return bytes.fromhex("".join(text.removeprefix("Hex-STRING:").split()))
    if text.startswith("STRING:"):
        return text.removeprefix("STRING:").strip().removeprefix('"').removesuffix('"').encode()
    if text.startswith("OID:"):
        return text.removeprefix("OID:").strip().lstrip(".")
    if text.startswith("IpAddress:"):
        return text.removeprefix("IpAddress:").strip()
    if text.startswith("Timeticks:"):  # only without -Ot
        return int(text.split("(", 1)[1].split(")", 1)[0])
    for number_prefix in _NUMBER_PREFIXES:
        if text.startswith(number_prefix):
            return int(text.removeprefix(number_prefix).split()[0])
    if re.fullmatch(r"-?\d+", text):  # TimeTicks under -Ot
        return int(text)
    if text.startswith(_NO_VALUE):
        return None
    raise SnmpPeerError(f"cannot parse net-snmp value {text!r}")


def parse_net_snmp_output(text: str) -> dict[str, SnmpValue]:
    """``{numeric OID: value}`` from the output of :func:`snmp_command`.

    Hex-STRINGs wrap over several lines; those are joined. Exceptions (noSuchObject,
    endOfMibView ...) become ``None`` unless the same OID also came with a value.
    """
    result: dict[str, SnmpValue] = {}
    current: tuple[str, list[str]] | None = None
    for line in [*text.splitlines(), ".0 = END"]:
        match = _VARBIND_START.match(line)
        if match is None:
            if current is not None:
                current[1].append(line)
            continue
        if current is not None:
            value = _parse_value(" ".join(current[1]))
            # At the end of the MIB, snmpsim names each endOfMibView after the last
            # OID (RFC 3416 allows it), and snmpbulkwalk prints them: keep the value.
            if value is not None or current[0] not in result:
                result[current[0]] = value
        current = (match.group(1), [match.group(2)])
    return result


class SnmpCliError(SnmpPeerError):
    """A net-snmp tool exited non-zero; ``result`` has its output."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"{' '.join(result.args)} exited {result.returncode}: {result.stderr.strip()}"
        )
        self.result = result


def snmpget(target: str, *oids: str, **options: Any) -> dict[str, SnmpValue]:
    """``snmpget`` each of ``oids``; raises :class:`SnmpCliError` on failure.

    ``options`` are those of :func:`snmp_command`.
    """
    result = snmp_command("snmpget", target, *oids, **options)
    if result.returncode != 0:
        raise SnmpCliError(result)
    return parse_net_snmp_output(result.stdout)


def snmpbulkwalk(
    target: str, oid: str, *, max_repetitions: int = 25, **options: Any
) -> dict[str, SnmpValue]:
    """``snmpbulkwalk -Cr<max_repetitions>`` of the subtree ``oid``; exceptions dropped."""
    extra = [f"-Cr{max_repetitions}", *options.pop("options", ())]
    result = snmp_command("snmpbulkwalk", target, oid, options=extra, **options)
    if result.returncode != 0:
        raise SnmpCliError(result)
    return {k: v for k, v in parse_net_snmp_output(result.stdout).items() if v is not None}


def column(walk: Mapping[str, SnmpValue], column_oid: str) -> dict[int, SnmpValue]:
    """The rows of one table column from a walk: ``{last index sub-id: value}``."""
    prefix = column_oid + "."
    return {int(oid[len(prefix) :]): v for oid, v in walk.items() if oid.startswith(prefix)}


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing listens on now, for a daemon to bind later.

    Drawn as ``free_port`` draws TCP ports, not by binding port 0: that port comes
    from the ephemeral range, where any client's outgoing datagram socket (snmpget,
    the exporter's SNMP sessions, a resolver) may take it before the daemon binds it.
    """
    return free_port(host, socket.SOCK_DGRAM)


# --------------------------------------------------------------------------------------
# Processes whose readiness is an SNMP answer


@dataclass
class UdpService(Service):
    """A :class:`Service` that is ready when ``probe()`` is true, not on an HTTP 200."""

    probe: Callable[[], bool] = field(default=lambda: False, repr=False)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited():
                raise SnmpPeerError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            if self.probe():
                return
            time.sleep(0.1)
        raise SnmpPeerError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")


def answers(target: str, community: str = "public", prefix: Sequence[str] = ()) -> bool:
    """Whether ``target`` answers a v2c get of sysUpTime.0 within 0.3 s."""
    result = snmp_command(
        "snmpget", target, SYS_UPTIME, community=community, timeout=0.3, retries=0, prefix=prefix
    )
    return result.returncode == 0 and "= " in result.stdout


class _Peer:
    """Context-manager plumbing: ``start()`` on entry, ``stop()`` on exit or failed start."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------
# Debian's snmpd


class RealSnmpd(_Peer):
    """Debian's snmpd (``snmpd -f -Lo -C -c CONF``) on ``udp:127.0.0.1:<port>``.

    ``-C`` ignores the system's snmpd.conf; ``[snmp] persistentDir`` (and
    ``SNMP_PERSISTENT_DIR``) keep engine boots and ``createUser`` keys in ``workdir``,
    not ``/var/lib/snmp``. Every community is read-only for the whole MIB, from any
    source (the agent is only reachable locally anyway). Ready when an ``snmpget -v2c``
    of sysUpTime.0 with the first community answers; stopped and reaped on exit.

    ``extra_config`` is appended verbatim (e.g. ``include_ifmib_iface_prefix``).
    ``listen`` replaces the listening host (``0.0.0.0`` means every local address, and
    ``target`` then names 127.0.0.1), and ``prefix`` wraps the command and the
    readiness probe; :class:`NetnsSnmpd` uses both.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        communities: Sequence[str] = ("public",),
        v3_users: Sequence[V3User] = (),
        sys_name: str = "scout-snmpd",
        extra_config: str = "",
        port: int | None = None,
        listen: str = "127.0.0.1",
        prefix: Sequence[str] = (),
        ready_timeout: float = 20.0,
    ) -> None:
        if not communities:
            raise ValueError("RealSnmpd needs a v2c community (readiness is a v2c get)")
        self.communities = tuple(communities)
        self.v3_users = tuple(v3_users)
        self.port = port or free_udp_port()
        self.listen = listen
        self.host = "127.0.0.1" if listen == "0.0.0.0" else listen
        self.prefix = tuple(prefix)
        self.sys_name = sys_name
        self.ready_timeout = ready_timeout
        self.dir = workdir / f"snmpd-{sys_name}-{self.port}"
        self.persistent_dir = self.dir / "persistent"
        self.config_path = self.dir / "snmpd.conf"
        self.log_path = self.dir / "snmpd.log"
        self.extra_config = extra_config
        self.service: UdpService | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def config_text(self) -> str:
        lines = [
            f"[snmp] persistentDir {self.persistent_dir}",
            f"agentAddress udp:{self.listen}:{self.port}",
            f"sysName {self.sys_name}",
            "sysLocation scout test bench",
            "sysContact scout@example.invalid",
            *(f"rocommunity {community}" for community in self.communities),
            *(line for user in self.v3_users for line in user.snmpd_lines()),
            self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        self.persistent_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        self.service = UdpService(
            name=f"snmpd {self.target}",
            argv=[
                *self.prefix,
                shutil.which("snmpd") or "/usr/sbin/snmpd",
                "-f",
                "-Lo",
                "-C",
                "-c",
                str(self.config_path),
            ],
            ready_url=f"snmp://{self.target}",
            log_path=self.log_path,
            env=net_snmp_env(self.persistent_dir),
            probe=lambda: answers(self.target, self.communities[0], prefix=self.prefix),
        )
        self.service.start()
        self.service.wait_ready(self.ready_timeout)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(grace=5)

    def running(self) -> bool:
        return (
            self.service is not None
            and self.service.process is not None
            and (not self.service.exited())
        )


# --------------------------------------------------------------------------------------
# snmpd inside a network namespace with many interfaces

_instances = itertools.count()


def _ip(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["ip", *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise SnmpPeerError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _pick_link_subnet(seed: int) -> tuple[str, str]:
    """A /30 in 169.254.1.0-169.254.254.255 no interface of the root namespace uses.

    Skips 169.254.169.0/24 (cloud metadata lives there) and the first and last /24,
    which RFC 3927 reserves.
    """
    used_blocks = set()
    for address in re.findall(r"inet (169\.254\.\d+\.\d+)", _ip("-4", "-o", "addr", "show")):
        _, _, third, fourth = (int(part) for part in address.split("."))
        used_blocks.add((third, fourth // 4))
    blocks = 254 * 64
    for step in range(blocks):
        block = (seed + step) % blocks
        third, quad = 1 + block // 64, block % 64
        if third in (169, 255) or (third, quad) in used_blocks:
            continue
        return f"169.254.{third}.{quad * 4 + 1}", f"169.254.{third}.{quad * 4 + 2}"
    raise SnmpPeerError("no free /30 left in 169.254.0.0/16")


class NetnsSnmpd(_Peer):
    """snmpd in a new network namespace holding ``pairs`` veth pairs: 2N+1 ifTable rows.

    The namespace (``scout-<pid>-<n>``) gets ``lo`` and the pairs ``va<i>``/``vb<i>``,
    both ends inside and up, so IF-MIB lists ``lo``, ``va0..``, ``vb0..`` (this kernel
    has no dummy/macvlan/vrf modules; veth works). snmpd runs inside via
    ``ip netns exec`` and listens on port 161 of the namespace's own addresses
    (``udp:0.0.0.0:161`` there: 127.0.0.1 and the uplink's inside end).

    Reaching it from the test process (which stays in the root namespace): one more
    veth pair, ``sc<pid>u<n>`` in the root namespace and ``up0`` inside, with a /30
    from 169.254.0.0/16 picked so no root-namespace interface already uses it.
    :attr:`target` is the inside end, ``169.254.x.y:161``. Both ends and both
    addresses are the helper's own; the /30 route points only into the namespace,
    so no packet leaves the machine. This is the kernel's real UDP path (benchmarks
    need that), with no relay process. A client can also run inside the namespace
    via :meth:`exec_argv` against :attr:`inner_target` (127.0.0.1:161).

    ``up0`` stays out of ifTable, which has exactly 2N+1 rows:
    ``include_ifmib_iface_prefix lo va vb`` filters it, but snmpd 5.9.3 applies that
    filter only after its first interface load (which precedes config parsing), and
    rows it has loaded fade out only after ``interface_fadeout`` (300 s). So the
    uplink is created after snmpd answers inside the namespace.

    On exit (or a failed start) snmpd is stopped, then the uplink and the namespace
    are deleted; deleting the namespace destroys the veths inside it.
    """

    def __init__(
        self,
        workdir: Path,
        pairs: int = 150,
        *,
        communities: Sequence[str] = ("public",),
        v3_users: Sequence[V3User] = (),
        extra_config: str = "",
        ready_timeout: float = 30.0,
    ) -> None:
        n = next(_instances)
        self.pairs = pairs
        self.name = f"scout-{os.getpid()}-{n}"
        self.uplink = f"sc{os.getpid()}u{n}"[:15]
        self.workdir = workdir
        self.communities = tuple(communities)
        self.v3_users = tuple(v3_users)
        self.extra_config = extra_config
        self.ready_timeout = ready_timeout
        self._seed = os.getpid() * 31 + n
        self.root_address = ""
        self.inside_address = ""
        self.snmpd: RealSnmpd | None = None
        self._created_netns = False
        self._created_uplink = False

    @property
    def target(self) -> str:
        """Where the root namespace reaches snmpd: the uplink's inside end, port 161."""
        return f"{self.inside_address}:161"

    inner_target = "127.0.0.1:161"
    """Where a client running inside the namespace (:meth:`exec_argv`) reaches snmpd."""

    @property
    def if_rows(self) -> int:
        return 2 * self.pairs + 1

    @property
    def interface_names(self) -> list[str]:
        return [
            "lo",
            *(f"va{i}" for i in range(self.pairs)),
            *(f"vb{i}" for i in range(self.pairs)),
        ]

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (e.g. an snmpbulkwalk of :attr:`inner_target`)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def start(self) -> None:
        if os.geteuid() != 0:
            raise SnmpPeerError("NetnsSnmpd needs root to create network namespaces")
        _ip("netns", "add", self.name)
        self._created_netns = True
        _ip("-n", self.name, "link", "set", "lo", "up")
        if self.pairs:
            adds = "".join(f"link add va{i} type veth peer name vb{i}\n" for i in range(self.pairs))
            _ip("-n", self.name, "-batch", "-", stdin=adds)
            ups = "".join(f"link set va{i} up\nlink set vb{i} up\n" for i in range(self.pairs))
            _ip("-n", self.name, "-batch", "-", stdin=ups)
        self.snmpd = RealSnmpd(
            self.workdir,
            communities=self.communities,
            v3_users=self.v3_users,
            sys_name=self.name,
            port=161,
            listen="0.0.0.0",
            prefix=self.exec_argv([]),
            extra_config="include_ifmib_iface_prefix lo va vb\n" + self.extra_config,
            ready_timeout=self.ready_timeout,
        )
        self.snmpd.start()  # ready: it answers inside, having loaded its interfaces
        self.root_address, self.inside_address = _pick_link_subnet(self._seed)
        _ip("link", "add", self.uplink, "type", "veth", "peer", "name", "up0", "netns", self.name)
        self._created_uplink = True
        _ip("addr", "add", f"{self.root_address}/30", "dev", self.uplink)
        _ip("link", "set", self.uplink, "up")
        _ip("-n", self.name, "addr", "add", f"{self.inside_address}/30", "dev", "up0")
        _ip("-n", self.name, "link", "set", "up0", "up")
        deadline = time.monotonic() + self.ready_timeout
        while not answers(self.target, self.communities[0]):
            if time.monotonic() > deadline:
                raise SnmpPeerError(f"snmpd in {self.name} unreachable at {self.target}")
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            if self.snmpd is not None:
                self.snmpd.stop()
        finally:
            if self._created_uplink:
                # Usually gone with the namespace already; deleting first is harmless.
                subprocess.run(["ip", "link", "del", self.uplink], capture_output=True, check=False)
                self._created_uplink = False
            if self._created_netns:
                subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
                self._created_netns = False


# --------------------------------------------------------------------------------------
# Simulated devices: .snmprec generator and snmpsim

_COUNTER32 = 65
_COUNTER64 = 70
_WRAP32 = 2**32


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """A counter that snmpsim grows linearly: ``value = initial + rate * seconds``.

    Seconds count from snmpsim's start; Counter32 values wrap at 2**32 (so they are
    the low 32 bits of their HC twin), Counter64 values stop at 2**64-1.
    """

    tag: int  # 65 Counter32, 70 Counter64
    initial: int
    rate: float  # per second


@dataclass(frozen=True, slots=True)
class SimulatedDevice:
    """What :func:`write_if_mib_device` wrote, so tests can compare against it.

    ``static`` holds every value that never changes, exactly (numeric OID -> int, bytes
    for OCTET STRINGs, dotted str for OIDs). ``counters`` holds the growing ones
    (including sysUpTime.0, tag 67). ``interfaces`` is the same per ifIndex with IF-MIB
    column names (strings decoded from UTF-8), ``processors`` is hrProcessorLoad by
    hrDeviceIndex, ``storage`` the hrStorageTable rows by hrStorageIndex.
    """

    community: str
    path: Path
    static: dict[str, int | bytes | str]
    counters: dict[str, CounterSpec]
    interfaces: dict[int, dict[str, Any]]
    processors: dict[int, int]
    storage: dict[int, dict[str, Any]]

    @property
    def oid_count(self) -> int:
        return len(self.static) + len(self.counters)

    def counters_of(self, column_oid: str) -> dict[int, CounterSpec]:
        """The growing rows of one counter column, by index."""
        prefix = column_oid + "."
        return {
            int(oid[len(prefix) :]): spec
            for oid, spec in self.counters.items()
            if oid.startswith(prefix)
        }


@dataclass(frozen=True, slots=True)
class _Port:
    descr: str  # ifDescr prefix
    short: str  # ifName prefix
    bps: int
    mtu: int


_PORT_KINDS = {
    100: _Port("FastEthernet", "Fa", 100_000_000, 1500),
    1_000: _Port("GigabitEthernet", "Gi", 1_000_000_000, 1500),
    10_000: _Port("TenGigabitEthernet", "Te", 10_000_000_000, 9216),
    25_000: _Port("TwentyFiveGigE", "Twe", 25_000_000_000, 9216),
    40_000: _Port("FortyGigabitEthernet", "Fo", 40_000_000_000, 9216),
    100_000: _Port("HundredGigE", "Hu", 100_000_000_000, 9216),
}
# Every device has these first, so each speed case (ifSpeed capped at 2**32-1 above
# 4.29 Gb/s, ifHighSpeed 10000/40000/100000) is present however few ports it has.
_FIRST_PORTS = (100_000, 40_000, 10_000, 100)
_ALIASES_NON_ASCII = ("Uplink → core-1 (Zürich)", "東京 backbone", "Café Büro", "Łódź POP")
_HUGE_COUNTER = 18_446_744_073_709_551_000  # near 2**64: beyond float precision
_IF_TYPE_ETHERNET, _IF_TYPE_LAG, _IF_TYPE_L3VLAN, _IF_TYPE_LOOPBACK = 6, 161, 136, 24


def _snmprec_value(tag: int, value: int | bytes | str) -> str:
    """One .snmprec value field: octet strings go hex (``4x``) unless plain ASCII."""
    if isinstance(value, bytes):
        text = value.decode("ascii", errors="replace")
        # snmpsim strips each line, so edge whitespace must be hex-encoded too.
        if value.isascii() and text.isprintable() and text == text.strip():
            return f"{tag}|{text}"
        return f"{tag}x|{value.hex()}"
    return f"{tag}|{value}"


class _Recorder:
    def __init__(self) -> None:
        self.lines: dict[tuple[int, ...], str] = {}
        self.static: dict[str, int | bytes | str] = {}
        self.counters: dict[str, CounterSpec] = {}

    def put(self, oid: str, tag: int, value: int | bytes | str) -> None:
        if tag == 4 and isinstance(value, str):
            value = value.encode()
        self.lines[tuple(map(int, oid.split(".")))] = f"{oid}|{_snmprec_value(tag, value)}"
        self.static[oid] = value

    def grow(self, oid: str, tag: int, initial: int, rate: float) -> None:
        """A counter; with ``rate == 0`` it is static and exact (no float rounding)."""
        modulus = _WRAP32 if tag == _COUNTER32 else 2**64
        if rate == 0:
            self.put(oid, tag, initial % modulus)
            return
        settings = f"initial={initial},rate={rate:.3f}"
        if tag == _COUNTER32:
            # `numeric` wraps with v %= max, so max=2**32 gives the low 32 bits.
            settings += f",max={_WRAP32},wrap=1"
        self.lines[tuple(map(int, oid.split(".")))] = f"{oid}|{tag}:numeric|{settings}"
        self.counters[oid] = CounterSpec(tag, initial % modulus, round(rate, 3))

    def write(self, path: Path) -> None:
        # snmpsim answers GETNEXT from file order, so the file must be OID-sorted.
        text = "".join(self.lines[key] + "\n" for key in sorted(self.lines))
        path.write_bytes(text.encode("ascii"))


def write_if_mib_device(path: Path, interfaces: int, seed: int | str) -> SimulatedDevice:
    """Write an snmpsim ``.snmprec`` device to ``path``; return what it will serve.

    The community is ``path.stem``. Contents, all deterministic for ``seed``:

    * system group (sysDescr, sysObjectID, sysUpTime growing at 100/s, sysContact,
      sysName, sysLocation) and ifNumber;
    * ``interfaces`` rows of all ifTable and ifXTable columns. Physical ports have
      ifIndex 1.., and (with 8 or more interfaces) the last three are Port-channel1
      (5001), Vlan1 (10001) and Loopback0 (20001, 8 Gb/s), so indexes are sparse.
      The first ports are 100G, 40G, 10G and 100M, so ifSpeed is capped at
      4294967295 while ifHighSpeed says 100000/40000/10000, all four up; the fifth
      is admin-down, the sixth admin-up but oper-down, the rest a seeded mix. ifAlias
      mixes ASCII, UTF-8 (first port) and empty (second port) values;
    * counters of up interfaces grow (snmpsim ``numeric`` variation), Counter32
      columns being the low 32 bits of their HC twins; counters of down interfaces
      are static, ifHCInOctets of the admin-down port being 2**64 - 616;
    * HOST-RESOURCES-MIB: hrMemorySize, hrStorageTable (RAM, virtual memory,
      buffers, three disks, one over 1 TB), hrDeviceTable and hrProcessorLoad for
      2-8 CPUs.
    """
    rng = random.Random(f"{seed}")
    rec = _Recorder()
    community = path.stem
    uptime = rng.randrange(8_640_000, 400_000_000)  # 1 to 46 days, in ticks

    rec.put("1.3.6.1.2.1.1.1.0", 4, f"Scout simulated switch {community}, {interfaces} ports")
    rec.put("1.3.6.1.2.1.1.2.0", 6, "1.3.6.1.4.1.8072.3.2.10")
    rec.lines[(1, 3, 6, 1, 2, 1, 1, 3, 0)] = f"{SYS_UPTIME}|67:numeric|initial={uptime},rate=100"
    rec.counters[SYS_UPTIME] = CounterSpec(67, uptime, 100.0)
    rec.put("1.3.6.1.2.1.1.4.0", 4, "noc@example.invalid")
    rec.put("1.3.6.1.2.1.1.5.0", 4, community)
    rec.put("1.3.6.1.2.1.1.6.0", 4, f"rack {rng.randrange(1, 40)}, row {rng.choice('ABCD')}")
    rec.put(IF_NUMBER, 2, interfaces)

    virtual = 3 if interfaces >= 8 else 0
    rows: dict[int, dict[str, Any]] = {}
    for position in range(interfaces - virtual):
        if position < len(_FIRST_PORTS):
            speed = _FIRST_PORTS[position]
        else:
            speed = rng.choices([100, 1_000, 10_000, 25_000], weights=[5, 70, 20, 5])[0]
        kind = _PORT_KINDS[speed]
        if position < len(_FIRST_PORTS):
            admin, oper = 1, 1  # the fast ports carry traffic: Counter32s wrap quickly
        elif position == 4:
            admin, oper = 2, 2
        elif position == 5:
            admin, oper = 1, 2
        else:
            admin = 2 if rng.random() < 0.08 else 1
            oper = 1 if admin == 1 and rng.random() < 0.8 else 2
        if position == 0:
            alias = _ALIASES_NON_ASCII[0]
        elif position == 1:
            alias = ""
        else:
            alias = rng.choice(
                ["", f"server-{position}", f"access port {position}", *_ALIASES_NON_ASCII]
            )
        rows[position + 1] = {
            "ifDescr": f"{kind.descr}1/0/{position + 1}",
            "ifName": f"{kind.short}1/0/{position + 1}",
            "ifType": _IF_TYPE_ETHERNET,
            "ifMtu": kind.mtu,
            "bps": kind.bps,
            "ifPhysAddress": bytes(
                [0x00, 0x1B, 0x54, rng.randrange(256), position >> 8, position & 0xFF]
            ),
            "ifAdminStatus": admin,
            "ifOperStatus": oper,
            "ifAlias": alias,
            "ifConnectorPresent": 1,
            "ifLinkUpDownTrapEnable": 1,
        }
    if virtual:
        rows[5001] = {
            "ifDescr": "Port-channel1", "ifName": "Po1", "ifType": _IF_TYPE_LAG,
            "ifMtu": 9216, "bps": 20_000_000_000,
            "ifPhysAddress": bytes.fromhex("001b54ff0001"), "ifAlias": "LACP to dist-1",
        }  # fmt: skip
        rows[10001] = {
            "ifDescr": "Vlan1", "ifName": "Vl1", "ifType": _IF_TYPE_L3VLAN, "ifMtu": 1500,
            "bps": 1_000_000_000, "ifPhysAddress": bytes.fromhex("001b54ff0002"),
            "ifAlias": "management",
        }  # fmt: skip
        rows[20001] = {
            "ifDescr": "Loopback0", "ifName": "Lo0", "ifType": _IF_TYPE_LOOPBACK,
            "ifMtu": 1514, "bps": 8_000_000_000, "ifPhysAddress": b"", "ifAlias": "router-id",
        }  # fmt: skip
        for index in (5001, 10001, 20001):
            rows[index].update(
                ifAdminStatus=1, ifOperStatus=1, ifConnectorPresent=2, ifLinkUpDownTrapEnable=2
            )

    for index, row in rows.items():
        bps = row.pop("bps")
        row["ifIndex"] = index
        row["ifSpeed"] = min(bps, _WRAP32 - 1)
        row["ifHighSpeed"] = bps // 1_000_000
        row["ifLastChange"] = rng.randrange(0, uptime)
        row["ifOutQLen"] = 0
        row["ifPromiscuousMode"] = 1 if index == 3 else 2
        row["ifCounterDiscontinuityTime"] = rng.choice([0, 0, 0, rng.randrange(0, uptime)])
        _write_interface(rec, rng, index, row, bps)
    _write_host_resources(rec, rng, community)

    rec.write(path)
    return SimulatedDevice(
        community=community,
        path=path,
        static=rec.static,
        counters=rec.counters,
        interfaces=rows,
        processors={
            int(oid.rsplit(".", 1)[1]): value
            for oid, value in rec.static.items()
            if oid.startswith(HR_PROCESSOR_LOAD + ".") and isinstance(value, int)
        },
        storage=_storage_rows(rec.static),
    )


def _write_interface(
    rec: _Recorder, rng: random.Random, index: int, row: dict[str, Any], bps: int
) -> None:
    def put(table: str, col: int, tag: int, value: int | bytes | str) -> None:
        rec.put(f"{table}.{col}.{index}", tag, value)

    put(IF_TABLE, 1, 2, index)
    put(IF_TABLE, 2, 4, row["ifDescr"])
    put(IF_TABLE, 3, 2, row["ifType"])
    put(IF_TABLE, 4, 2, row["ifMtu"])
    put(IF_TABLE, 5, 66, row["ifSpeed"])
    put(IF_TABLE, 6, 4, row["ifPhysAddress"])
    put(IF_TABLE, 7, 2, row["ifAdminStatus"])
    put(IF_TABLE, 8, 2, row["ifOperStatus"])
    put(IF_TABLE, 9, 67, row["ifLastChange"])
    put(IF_TABLE, 21, 66, row["ifOutQLen"])
    put(IF_TABLE, 22, 6, "0.0")
    put(IF_X_TABLE, 1, 4, row["ifName"])
    put(IF_X_TABLE, 14, 2, row["ifLinkUpDownTrapEnable"])
    put(IF_X_TABLE, 15, 66, row["ifHighSpeed"])
    put(IF_X_TABLE, 16, 2, row["ifPromiscuousMode"])
    put(IF_X_TABLE, 17, 2, row["ifConnectorPresent"])
    put(IF_X_TABLE, 18, 4, row["ifAlias"])
    put(IF_X_TABLE, 19, 67, row["ifCounterDiscontinuityTime"])

    up = row["ifOperStatus"] == 1
    # (initial, rate) per direction for octets, unicast, multicast, broadcast packets.
    traffic: dict[str, tuple[int, float]] = {}
    for direction in ("in", "out"):
        octet_rate = bps / 8 * rng.uniform(0.001, 0.25) if up else 0.0
        packet_rate = octet_rate / rng.uniform(300, 1200)
        initial_octets = rng.randrange(2**33, 2**46)
        if direction == "in" and row["ifAdminStatus"] == 2 and index == 5:
            initial_octets = _HUGE_COUNTER
        initial_packets = initial_octets // rng.randrange(300, 1200)
        traffic[f"{direction}_octets"] = (initial_octets, octet_rate)
        traffic[f"{direction}_ucast"] = (initial_packets * 97 // 100, packet_rate * 0.97)
        traffic[f"{direction}_mcast"] = (initial_packets * 2 // 100, packet_rate * 0.02)
        traffic[f"{direction}_bcast"] = (initial_packets // 100, packet_rate * 0.01)
        traffic[f"{direction}_errors"] = (rng.randrange(0, 1000), rng.choice([0, 0, 0.2]) * up)
        traffic[f"{direction}_discards"] = (rng.randrange(0, 5000), rng.choice([0, 0, 1.5]) * up)

    def grow(table: str, col: int, tag: int, key: str) -> None:
        initial, rate = traffic[key]
        rec.grow(f"{table}.{col}.{index}", tag, initial, rate)

    for direction, base in (("in", 10), ("out", 16)):
        grow(IF_TABLE, base, _COUNTER32, f"{direction}_octets")
        grow(IF_TABLE, base + 1, _COUNTER32, f"{direction}_ucast")
        mcast, bcast = traffic[f"{direction}_mcast"], traffic[f"{direction}_bcast"]
        rec.grow(
            f"{IF_TABLE}.{base + 2}.{index}", _COUNTER32, mcast[0] + bcast[0], mcast[1] + bcast[1]
        )
        grow(IF_TABLE, base + 3, _COUNTER32, f"{direction}_discards")
        grow(IF_TABLE, base + 4, _COUNTER32, f"{direction}_errors")
    rec.grow(f"{IF_TABLE}.15.{index}", _COUNTER32, rng.randrange(0, 100), 0.1 * up)
    for direction, base32, base64 in (("in", 2, 6), ("out", 4, 10)):
        grow(IF_X_TABLE, base32, _COUNTER32, f"{direction}_mcast")
        grow(IF_X_TABLE, base32 + 1, _COUNTER32, f"{direction}_bcast")
        grow(IF_X_TABLE, base64, _COUNTER64, f"{direction}_octets")
        grow(IF_X_TABLE, base64 + 1, _COUNTER64, f"{direction}_ucast")
        grow(IF_X_TABLE, base64 + 2, _COUNTER64, f"{direction}_mcast")
        grow(IF_X_TABLE, base64 + 3, _COUNTER64, f"{direction}_bcast")


_HR_STORAGE_TYPES = {
    "ram": "1.3.6.1.2.1.25.2.1.2",
    "virtual": "1.3.6.1.2.1.25.2.1.3",
    "other": "1.3.6.1.2.1.25.2.1.1",
    "disk": "1.3.6.1.2.1.25.2.1.4",
}
_HR_STORAGE_COLUMNS = {
    1: "hrStorageIndex",
    2: "hrStorageType",
    3: "hrStorageDescr",
    4: "hrStorageAllocationUnits",
    5: "hrStorageSize",
    6: "hrStorageUsed",
    7: "hrStorageAllocationFailures",
}


def _write_host_resources(rec: _Recorder, rng: random.Random, community: str) -> None:
    memory_kib = rng.choice([4, 8, 16, 32]) * 1024 * 1024
    rec.put("1.3.6.1.2.1.25.2.2.0", 2, memory_kib)
    storages = [
        (1, "ram", "Physical memory", 1024, memory_kib),
        (3, "virtual", "Virtual memory", 1024, memory_kib * 2),
        (6, "other", "Memory buffers", 1024, memory_kib),
        (31, "disk", "/", 4096, rng.randrange(2_000_000, 60_000_000)),
        (32, "disk", "/var/log", 4096, rng.randrange(100_000, 2_000_000)),
        (35, "disk", "/srv/data", 4096, 400_000_000),  # 1.6 TB: size x units > 2**32
    ]
    for index, kind, descr, units, size in storages:
        entry = f"{HR_STORAGE_ENTRY}.{{}}.{index}"
        rec.put(entry.format(1), 2, index)
        rec.put(entry.format(2), 6, _HR_STORAGE_TYPES[kind])
        rec.put(entry.format(3), 4, descr)
        rec.put(entry.format(4), 2, units)
        rec.put(entry.format(5), 2, size)
        rec.put(entry.format(6), 2, int(size * rng.uniform(0.05, 0.95)))
        rec.put(entry.format(7), _COUNTER32, 0)
    for cpu in range(rng.randrange(2, 9)):
        index = 196608 + cpu  # net-snmp numbers processors from 768 << 8
        rec.put(f"{HR_DEVICE_ENTRY}.1.{index}", 2, index)
        rec.put(f"{HR_DEVICE_ENTRY}.2.{index}", 6, "1.3.6.1.2.1.25.3.1.3")  # hrDeviceProcessor
        rec.put(f"{HR_DEVICE_ENTRY}.3.{index}", 4, f"CPU{cpu}: {community} simulated core")
        rec.put(f"{HR_DEVICE_ENTRY}.5.{index}", 2, 2)  # running
        rec.put(f"1.3.6.1.2.1.25.3.3.1.1.{index}", 6, "0.0")  # hrProcessorFrwID
        rec.put(f"{HR_PROCESSOR_LOAD}.{index}", 2, rng.randrange(0, 101))


def _storage_rows(static: Mapping[str, int | bytes | str]) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    prefix = HR_STORAGE_ENTRY + "."
    for oid, value in static.items():
        if oid.startswith(prefix):
            col, index = (int(part) for part in oid[len(prefix) :].split("."))
            decoded = value.decode() if isinstance(value, bytes) else value
            rows.setdefault(index, {})[_HR_STORAGE_COLUMNS[col]] = decoded
    return rows


class SnmpsimDevices(_Peer):
    """snmpsim-command-responder serving generated devices; community = device name.

    ``devices`` maps each community to its interface count (each gets a ``.snmprec``
    from :func:`write_if_mib_device`, seeded by ``seed`` and the name); the values
    served are in :attr:`devices`. ``recordings`` are hand-written ``.snmprec``
    files served as they are (community = file stem). Each entry of ``endpoints`` (an address, or
    ``address:port``) gets its own UDP endpoint, and every endpoint serves every
    device, chosen by community. Addresses other than 127.0.0.1 (127.0.0.x) work on
    Linux but stay out of the test suite. Runs as root with ``--process-user=root
    --process-group=root`` (snmpsim insists on dropping privileges otherwise).

    Request logging is off (``--log-level=error``): snmpsim answers only about
    2k OIDs/s, so use it for correctness and scale, real snmpd for speed figures.
    """

    def __init__(
        self,
        workdir: Path,
        devices: Mapping[str, int] | None = None,
        *,
        seed: int = 1,
        endpoints: Sequence[str] = ("127.0.0.1",),
        ready_timeout: float = 60.0,
        recordings: Sequence[Path] = (),
    ) -> None:
        self.dir = workdir / f"snmpsim-{next(_instances)}"
        self.device_sizes = dict(devices if devices is not None else {"sim48": 48, "sim260": 260})
        self.recordings = list(recordings)
        self.seed = seed
        self.endpoints: list[str] = []
        for endpoint in endpoints:
            drawn = endpoint
            # Two draws on one address may meet, and snmpsim would bind both.
            while ":" not in drawn or (drawn != endpoint and drawn in self.endpoints):
                drawn = f"{endpoint}:{free_udp_port(endpoint)}"
            self.endpoints.append(drawn)
        self.ready_timeout = ready_timeout
        self.devices: dict[str, SimulatedDevice] = {}
        self.service: UdpService | None = None
        self._answered: set[tuple[str, str]] = set()

    @property
    def target(self) -> str:
        return self.endpoints[0]

    def start(self) -> None:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        for name, size in self.device_sizes.items():
            self.devices[name] = write_if_mib_device(
                data / f"{name}.snmprec", size, f"{self.seed}:{name}"
            )
        for recording in self.recordings:
            shutil.copyfile(recording, data / recording.name)
        as_root = ["--process-user=root", "--process-group=root"] if os.geteuid() == 0 else []
        self.service = UdpService(
            name="snmpsim",
            argv=[
                find_binary("snmpsim-command-responder"),
                f"--data-dir={data}",
                f"--cache-dir={self.dir / 'cache'}",
                "--log-level=error",
                *as_root,
                *(f"--agent-udpv4-endpoint={ep}" for ep in self.endpoints),
            ],
            ready_url=f"snmp://{self.target}",
            log_path=self.dir / "snmpsim.log",
            probe=self._all_answer,
        )
        self.service.start()
        self.service.wait_ready(self.ready_timeout)

    def _all_answer(self) -> bool:
        """Whether every (endpoint, device) has answered by now. Those that did are not
        asked again: on a busy machine, hundreds of endpoints rarely all answer
        within the probe's 0.3 s in one pass."""
        pending = [
            (endpoint, community)
            for endpoint in self.endpoints
            for community in [*self.device_sizes, *(r.stem for r in self.recordings)]
            if (endpoint, community) not in self._answered
        ]
        for endpoint, community in pending:
            if not answers(endpoint, community):
                return False
            self._answered.add((endpoint, community))
        return True

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(grace=5)


# --------------------------------------------------------------------------------------
# Misbehaving agents


class _UdpThread(_Peer):
    """A daemon thread serving UDP sockets until stop()."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._selector = selectors.DefaultSelector()
        self._owned: list[socket.socket] = []
        self.errors: list[BaseException] = []

    def _serve(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                try:
                    key.data(key.fileobj)
                except OSError as exc:
                    if not self._stopping.is_set():
                        self.errors.append(exc)

    def _run_thread(self, name: str) -> None:
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._selector.close()
        for sock in self._owned:
            sock.close()

    def _udp_socket(self, host: str | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._owned.append(sock)
        if host is not None:
            sock.bind((host, 0))
        return sock


class SilentDevice(_UdpThread):
    """A UDP socket on 127.0.0.1 that reads every request and never answers.

    ``received`` counts the datagrams, so a test can check a client's retries.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__()
        self._sock = self._udp_socket(host)
        self.host, self.port = self._sock.getsockname()
        self.received = 0

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def _read(self, sock: socket.socket) -> None:
        sock.recvfrom(65535)
        self.received += 1

    def start(self) -> None:
        self._selector.register(self._sock, selectors.EVENT_READ, self._read)
        self._run_thread("silent-snmp-device")


class GarbageDevice(SilentDevice):
    """A UDP socket on 127.0.0.1 that answers every request with bytes that are not SNMP:
    a SEQUENCE header claiming 65,535 octets, then the request's first ten octets.

    What a broken agent, or another UDP service on port 161, sends back.
    """

    def _read(self, sock: socket.socket) -> None:
        data, client = sock.recvfrom(65535)
        self.received += 1
        sock.sendto(b"\x30\x82\xff\xff" + data[:10], client)


class ForgedJunkDevice(SilentDevice):
    """A dead device whose address sends one byte after the first request: what a
    spoofer who forges the device's address and the exporter's port sends."""

    def _read(self, sock: socket.socket) -> None:
        _, client = sock.recvfrom(65535)
        self.received += 1
        if self.received == 1:
            sock.sendto(b"\x00", client)


class EndlessTableAgent(SilentDevice):
    """A v2c agent on 127.0.0.1 whose walks never end: a healthy device too big to walk.

    A GET gets an INTEGER 1 for every OID asked. A GetNext or GetBulk gets, for
    each OID asked, the next row of the same column (``column.0.N`` ->
    ``column.0.N+1``; a column itself -> ``column.0.1``), for up to ``max_rows``
    repetitions, so every
    request is answered at once and a walk goes on until the client stops it.
    ``received`` counts the requests, and ``asked`` is set at the first. Encoded
    with pysnmp's v2c codec, an implementation independent of the client under test.
    """

    def __init__(self, host: str = "127.0.0.1", *, max_rows: int = 10) -> None:
        super().__init__(host)
        self.max_rows = max_rows
        self.asked = threading.Event()

    def _read(self, sock: socket.socket) -> None:
        from pyasn1.codec.ber import decoder, encoder
        from pysnmp.proto import api

        data, client = sock.recvfrom(65535)
        self.received += 1
        self.asked.set()
        v2c = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
        message, _ = decoder.decode(data, asn1Spec=v2c.Message())
        pdu = v2c.apiMessage.get_pdu(message)
        asked = [tuple(oid) for oid, _ in v2c.apiPDU.get_varbinds(pdu)]
        if pdu.isSameTypeWith(v2c.GetRequestPDU()):
            answer = [(oid, v2c.Integer(1)) for oid in asked]
        else:
            rows = 1
            if pdu.isSameTypeWith(v2c.GetBulkRequestPDU()):
                rows = min(int(v2c.apiBulkPDU.get_max_repetitions(pdu)), self.max_rows)
            answer, current = [], asked
            for _ in range(rows):
                current = [
                    (*oid[:-1], oid[-1] + 1) if oid[-2] == 0 else (*oid, 0, 1) for oid in current
                ]
                answer += [(oid, v2c.Integer(oid[-1])) for oid in current]
        response = v2c.apiMessage.get_response(message)
        v2c.apiPDU.set_varbinds(v2c.apiMessage.get_pdu(response), answer)
        sock.sendto(bytes(encoder.encode(response)), client)


class TooBigProxy(_UdpThread):
    """A UDP proxy on 127.0.0.1 in front of ``upstream`` that refuses big GetBulks.

    A v2c GetBulkRequest whose max-repetitions exceeds ``max_repetitions`` gets a
    Response with error-status tooBig(1), error-index 0, the request's request-id and
    community, and empty varbinds (or the request's, with ``echo_varbinds``): what an
    agent with a small buffer, or a middlebox, says. Everything else (other PDUs, v1,
    v3, undecodable datagrams) is forwarded and the answer relayed, through one
    upstream socket per client address.

    Decoding uses pysnmp's v2c codec (``pysnmp.proto.api``), an implementation
    independent of the client under test. Counters: ``too_big_replies``,
    ``forwarded``, and ``max_repetitions_seen`` (each GetBulk's value, in order).
    """

    def __init__(
        self,
        upstream: str,
        max_repetitions: int = 10,
        *,
        echo_varbinds: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__()
        upstream_host, upstream_port = upstream.rsplit(":", 1)
        self.upstream = (upstream_host, int(upstream_port))
        self.limit = max_repetitions
        self.echo_varbinds = echo_varbinds
        self._sock = self._udp_socket(host)
        self.host, self.port = self._sock.getsockname()
        self._upstream_socks: dict[tuple[str, int], socket.socket] = {}
        self.too_big_replies = 0
        self.forwarded = 0
        self.max_repetitions_seen: list[int] = []

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        self._selector.register(self._sock, selectors.EVENT_READ, self._from_client)
        self._run_thread("too-big-proxy")

    def too_big_response(self, request: bytes) -> bytes | None:
        """The tooBig answer to ``request``, or None if it should be forwarded."""
        from pyasn1.codec.ber import decoder, encoder
        from pyasn1.error import PyAsn1Error
        from pysnmp.proto import api

        try:
            if int(api.decodeMessageVersion(request)) != api.SNMP_VERSION_2C:
                return None
            v2c = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
            message, _ = decoder.decode(request, asn1Spec=v2c.Message())
        except PyAsn1Error:
            return None
        pdu = v2c.apiMessage.get_pdu(message)
        if not pdu.isSameTypeWith(v2c.GetBulkRequestPDU()):
            return None
        repetitions = int(v2c.apiBulkPDU.get_max_repetitions(pdu))
        self.max_repetitions_seen.append(repetitions)
        if repetitions <= self.limit:
            return None
        response = v2c.apiMessage.get_response(message)  # same community, request-id
        response_pdu = v2c.apiMessage.get_pdu(response)
        v2c.apiPDU.set_error_status(response_pdu, 1)  # tooBig
        v2c.apiPDU.set_error_index(response_pdu, 0)
        varbinds = v2c.apiPDU.get_varbinds(pdu) if self.echo_varbinds else []
        v2c.apiPDU.set_varbinds(response_pdu, varbinds)
        return bytes(encoder.encode(response))

    def _from_client(self, sock: socket.socket) -> None:
        request, client = sock.recvfrom(65535)
        answer = self.too_big_response(request)
        if answer is not None:
            self.too_big_replies += 1
            sock.sendto(answer, client)
            return
        upstream = self._upstream_socks.get(client)
        if upstream is None:
            upstream = self._udp_socket()
            upstream.connect(self.upstream)
            self._upstream_socks[client] = upstream
            self._selector.register(
                upstream, selectors.EVENT_READ, functools.partial(self._from_upstream, client)
            )
        upstream.send(request)
        self.forwarded += 1

    def _from_upstream(self, client: tuple[str, int], upstream: socket.socket) -> None:
        self._sock.sendto(upstream.recv(65535), client)


# --------------------------------------------------------------------------------------
# Debian's prometheus-snmp-exporter as a reference


class SnmpExporter(_Peer):
    """prometheus-snmp-exporter 0.21 on a free 127.0.0.1 port, as a reference scraper.

    The config comes from ``module_file`` (default ``data/snmp_exporter_if_mib.yml``,
    the generator's if_mib in 0.21's single-file format, community ``public``). For
    each other entry of ``communities`` every module gets a copy named
    ``<module>_<community>`` (0.21 keeps auth inside the module); :meth:`scrape`
    picks it. The config is checked with ``--dry-run`` before start.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        communities: Sequence[str] = ("public",),
        module_file: Path = IF_MIB_MODULE_FILE,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 20.0,
    ) -> None:
        self.port = free_port()
        self.dir = workdir / f"snmp-exporter-{self.port}"
        self.config_path = self.dir / "snmp.yml"
        self.communities = tuple(communities)
        self.module_file = module_file
        self.extra_args = tuple(extra_args)
        self.ready_timeout = ready_timeout
        self.service: Service | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def module_name(module: str, community: str) -> str:
        return module if community == "public" else f"{module}_{community}"

    def config(self) -> dict[str, Any]:
        modules: dict[str, Any] = yaml.safe_load(self.module_file.read_text())
        config = dict(modules)
        for name, module in modules.items():
            for community in self.communities:
                if community != module.get("auth", {}).get("community", "public"):
                    copied = copy.deepcopy(module)  # no YAML aliases between modules
                    copied["auth"] = {"community": community}
                    config[self.module_name(name, community)] = copied
        return config

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        binary = find_binary("prometheus-snmp-exporter", "snmp_exporter")
        check = subprocess.run(
            [binary, f"--config.file={self.config_path}", "--dry-run"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check.returncode != 0:
            raise SnmpPeerError(f"snmp_exporter rejects {self.config_path}:\n{check.stderr}")
        self.service = Service(
            name="prometheus-snmp-exporter",
            argv=[
                binary,
                f"--config.file={self.config_path}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
                *self.extra_args,
            ],
            ready_url=f"{self.url}/",
            log_path=self.dir / "snmp_exporter.log",
        )
        self.service.start()
        self.service.wait_ready(self.ready_timeout)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(grace=5)

    def scrape(
        self, target: str, *, module: str = "if_mib", community: str = "public", timeout: float = 60
    ) -> str:
        """The exposition text of ``/snmp?target=...&module=...``; raises on non-200."""
        query = urllib.parse.urlencode(
            {"target": target, "module": self.module_name(module, community)}
        )
        try:
            with urllib.request.urlopen(f"{self.url}/snmp?{query}", timeout=timeout) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as exc:
            raise SnmpPeerError(
                f"snmp_exporter scrape of {target} failed ({exc.code}): {exc.read().decode()}"
            ) from exc

    def ready(self) -> bool:
        return http_ok(f"{self.url}/")


# --------------------------------------------------------------------------------------
# Comparing expositions


def promtool_check_metrics(text: str) -> str:
    """What ``promtool check metrics`` says of an exposition (lint findings and errors)."""
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    return result.stdout + result.stderr


SeriesKey = tuple[str, frozenset[tuple[str, str]]]

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+-?\d+)?")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_exposition(text: str) -> dict[SeriesKey, float]:
    """``{(sample name, frozenset(labels.items())): value}`` of a text exposition.

    Sample names are kept exactly as exposed. prometheus_client's parser, used here
    to validate the text, renames a counter's samples to ``<name>_total`` when the
    name lacks it (snmp_exporter's ``ifHCInOctets`` becomes ``ifHCInOctets_total``),
    which would hide a naming difference, so the samples are read here.
    """
    for _ in text_string_to_metric_families(text):
        pass  # raises ValueError on malformed text
    series: dict[SeriesKey, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line)
        if match is None:
            raise ValueError(f"not a sample line: {line!r}")
        name, label_text, value = match.groups()
        labels: dict[str, str] = {}
        rest = (label_text or "{}")[1:-1].strip()
        while rest:
            label = _LABEL.match(rest)
            if label is None:
                raise ValueError(f"bad labels in {line!r}")
            labels[label.group(1)] = re.sub(
                r"\\.", lambda m: _UNESCAPE.get(m.group(0), m.group(0)), label.group(2)
            )
            rest = rest[label.end() :]
        series[(name, frozenset(labels.items()))] = float(value)
    return series


def series_named(series: Mapping[SeriesKey, float], name: str) -> dict[frozenset[Any], float]:
    """The label sets and values of one sample name."""
    return {labels: value for (sample, labels), value in series.items() if sample == name}
