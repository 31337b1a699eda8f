"""A real net-snmp ``snmpd`` on a free 127.0.0.1 port, and net-snmp's own tools to compare with.

The agent serves communities ``public`` (everything) and ``second`` (the
system group only), one SNMPv3 user per security level and protocol pair in
``V3_USERS``, and a 40-row ``prTable`` (one ``proc`` line each) to walk
tables longer than this machine's interface list. ``createUser`` state goes
to the test's own persistent directory, never to /var/lib/snmp.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from exporter.clients.snmp import Credentials, Oid, parse_oid

SYS_NAME = "scout-test-agent"
PR_TABLE = (1, 3, 6, 1, 4, 1, 2021, 2, 1)  # UCD-SNMP-MIB::prEntry
PR_ROWS = 40

V3_USERS = {
    "noAuthNoPriv": Credentials(3, username="plain"),
    "authNoPriv SHA": Credentials(
        3,
        username="sha",
        security_level="authNoPriv",
        auth_protocol="SHA",
        auth_password="sha-auth-pass",
    ),
    "authNoPriv MD5": Credentials(
        3,
        username="md5",
        security_level="authNoPriv",
        auth_protocol="MD5",
        auth_password="md5-auth-pass",
    ),
    "authPriv SHA/AES": Credentials(
        3,
        username="sha-aes",
        security_level="authPriv",
        auth_protocol="SHA",
        auth_password="sha-aes-auth",
        priv_protocol="AES",
        priv_password="sha-aes-priv",
    ),
    "authPriv SHA256/AES": Credentials(
        3,
        username="sha256-aes",
        security_level="authPriv",
        auth_protocol="SHA256",
        auth_password="sha256-aes-auth",
        priv_protocol="AES",
        priv_password="sha256-aes-priv",
    ),
    "authPriv SHA224/AES": Credentials(
        3,
        username="sha224-aes",
        security_level="authPriv",
        auth_protocol="SHA224",
        auth_password="sha224-aes-auth",
        priv_protocol="AES",
        priv_password="sha224-aes-priv",
    ),
    "authPriv SHA384/AES192": Credentials(
        3,
        username="sha384-aes192",
        security_level="authPriv",
        auth_protocol="SHA384",
        auth_password="sha384-aes192-auth",
        priv_protocol="AES192",
        priv_password="sha384-aes192-priv",
    ),
    "authPriv SHA512/AES256": Credentials(
        3,
        username="sha512-aes256",
        security_level="authPriv",
        auth_protocol="SHA512",
        auth_password="sha512-aes256-auth",
        priv_protocol="AES256",
        priv_password="sha512-aes256-priv",
    ),
    # SHA-1 and MD5 digests are shorter than AES-256/192 keys, so these two need
    # the Blumenthal key extension.
    "authPriv SHA/AES256": Credentials(
        3,
        username="sha-aes256",
        security_level="authPriv",
        auth_protocol="SHA",
        auth_password="sha-aes256-auth",
        priv_protocol="AES256",
        priv_password="sha-aes256-priv",
    ),
    "authPriv MD5/AES192": Credentials(
        3,
        username="md5-aes192",
        security_level="authPriv",
        auth_protocol="MD5",
        auth_password="md5-aes192-auth",
        priv_protocol="AES192",
        priv_password="md5-aes192-priv",
    ),
    "authPriv MD5/DES": Credentials(
        3,
        username="md5-des",
        security_level="authPriv",
        auth_protocol="MD5",
        auth_password="md5-des-auth",
        priv_protocol="DES",
        priv_password="md5-des-priv",
    ),
}

# net-snmp's spelling of our protocol names.
_NET_SNMP_AUTH = {"MD5": "MD5", "SHA": "SHA", "SHA224": "SHA-224", "SHA256": "SHA-256"}
_NET_SNMP_AUTH |= {"SHA384": "SHA-384", "SHA512": "SHA-512"}
_NET_SNMP_PRIV = {"DES": "DES", "AES": "AES", "AES192": "AES-192", "AES256": "AES-256"}
_LEVELS = {"noAuthNoPriv": "noauth", "authNoPriv": "auth", "authPriv": "priv"}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def snmpd_config(port: int, persistent_dir: Path) -> str:
    lines = [
        f"[snmp] persistentDir {persistent_dir}",
        f"agentAddress udp:127.0.0.1:{port}",
        f"sysName {SYS_NAME}",
        "rocommunity public 127.0.0.1",
        "rocommunity second 127.0.0.1 .1.3.6.1.2.1.1",
    ]
    for creds in V3_USERS.values():
        user = f"createUser {creds.username}"
        if creds.auth_protocol:
            user += f" {_NET_SNMP_AUTH[creds.auth_protocol]} {creds.auth_password}"
        if creds.priv_protocol:
            user += f" {_NET_SNMP_PRIV[creds.priv_protocol]} {creds.priv_password}"
        lines += [user, f"rouser {creds.username} {_LEVELS[creds.security_level]}"]
    # Processes that never run: a table of PR_ROWS rows whose values do not move.
    lines += [f"proc scout-test-{n}" for n in range(1, PR_ROWS + 1)]
    return "\n".join(lines) + "\n"


# Net-snmp reads no MIB files this way: faster, and no warnings about missing ones.
NET_SNMP_ENV = {**os.environ, "MIBS": "", "MIBDIRS": ""}


@dataclass
class Snmpd:
    """One snmpd process; ``restart`` keeps the port (and, as snmpd does, forgets its state)."""

    directory: Path
    port: int = field(default_factory=free_udp_port)
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        binary = shutil.which("snmpd") or "/usr/sbin/snmpd"
        if not Path(binary).exists():
            pytest.skip("snmpd (Debian package snmpd) is not installed")
        persistent = self.directory / "persistent"
        persistent.mkdir(parents=True, exist_ok=True)
        config = self.directory / "snmpd.conf"
        config.write_text(snmpd_config(self.port, persistent))
        log = (self.directory / "snmpd.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [binary, "-f", "-Lo", "-C", "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**NET_SNMP_ENV, "SNMP_PERSISTENT_DIR": str(persistent)},
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.directory / "snmpd.log").read_text(errors="replace")
                pytest.fail(f"snmpd exited with {self.process.returncode}:\n{log[-2000:]}")
            probe = subprocess.run(
                [
                    "snmpget",
                    "-v2c",
                    "-c",
                    "public",
                    "-r0",
                    "-t0.3",
                    self.address,
                    "1.3.6.1.2.1.1.5.0",
                ],
                capture_output=True,
                env=NET_SNMP_ENV,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"snmpd did not answer on {self.address} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def net_snmp_walk(
        self, root: Oid, *, version: str = "2c", community: str = "public"
    ) -> dict[Oid, str]:
        """What net-snmp's own walker returns, as ``{oid: "Type: value"}`` (see ``render``)."""
        tool = "snmpwalk" if version == "1" else "snmpbulkwalk"
        result = subprocess.run(
            [
                tool,
                # Numeric OIDs and enums, raw TimeTicks, every string in hex.
                "-On", "-Ob", "-Oe", "-Ot", "-Ox",
                f"-v{version}", "-c", community, "-r1", "-t5",
                self.address,
                ".".join(map(str, root)),
            ],
            capture_output=True,
            text=True,
            env=NET_SNMP_ENV,
            check=True,
        )  # fmt: skip
        lines: list[str] = []
        for line in result.stdout.splitlines():
            if line.startswith("."):
                lines.append(line)
            elif lines and line.strip():
                lines[-1] += " " + line  # long hex strings wrap
        out: dict[Oid, str] = {}
        for line in lines:
            oid, _, value = line.partition(" = ")
            if "No more variables" in value or "No Such" in value:
                continue
            out[parse_oid(oid)] = " ".join(value.split())
        return out


@pytest.fixture(scope="session")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    """The shared agent; tests must not restart it (use ``own_snmpd`` for that)."""
    agent = Snmpd(tmp_path_factory.mktemp("snmpd"))
    agent.start()
    yield agent
    agent.stop()


@pytest.fixture
def own_snmpd(tmp_path: Path) -> Iterator[Snmpd]:
    """An agent for one test, which may restart it."""
    agent = Snmpd(tmp_path / "snmpd")
    agent.start()
    yield agent
    agent.stop()
