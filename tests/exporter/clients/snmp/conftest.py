"""A real net-snmp ``snmpd`` on a free 127.0.0.1 port, and net-snmp's own tools to compare with.

The agent serves communities ``public`` (everything) and ``second`` (the
system group only), one SNMPv3 user per security level and protocol pair in
``V3_USERS``, and a 40-row ``prTable`` (one ``proc`` line each) to walk
tables longer than this machine's interface list. ``createUser`` state goes
to the test's own persistent directory, never to /var/lib/snmp.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.clients.snmp import Credentials, Oid, parse_oid
from tests.peers.snmp import RealSnmpd

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


def _extra_config() -> str:
    lines = ["rocommunity second 127.0.0.1 .1.3.6.1.2.1.1"]
    for creds in V3_USERS.values():
        user = f"createUser {creds.username}"
        if creds.auth_protocol:
            user += f" {_NET_SNMP_AUTH[creds.auth_protocol]} {creds.auth_password}"
        if creds.priv_protocol:
            user += f" {_NET_SNMP_PRIV[creds.priv_protocol]} {creds.priv_password}"
        lines += [user, f"rouser {creds.username} {_LEVELS[creds.security_level]}"]
    # Processes that never run: a table of PR_ROWS rows whose values do not move.
    lines += [f"proc scout-test-{n}" for n in range(1, PR_ROWS + 1)]
    return "\n".join(lines)


# Net-snmp reads no MIB files this way: faster, and no warnings about missing ones.
NET_SNMP_ENV = {**os.environ, "MIBS": "", "MIBDIRS": ""}


class Snmpd(RealSnmpd):
    """The shared snmpd peer with this suite's users, a restricted community and a prTable.

    ``restart`` keeps the port (and, as snmpd does with ``-C``, forgets its state).
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, sys_name=SYS_NAME, extra_config=_extra_config())

    @property
    def address(self) -> str:
        return self.target

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
    with Snmpd(tmp_path_factory.mktemp("snmpd")) as agent:
        yield agent


@pytest.fixture
def own_snmpd(tmp_path: Path) -> Iterator[Snmpd]:
    """An agent for one test, which may restart it."""
    with Snmpd(tmp_path / "snmpd") as agent:
        yield agent
