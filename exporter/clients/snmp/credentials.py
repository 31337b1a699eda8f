"""Who the client is to an agent: a community (v1, v2c) or a USM user (v3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from exporter.clients.snmp import usm

if TYPE_CHECKING:
    from pydantic import SecretStr

    from exporter.config import SnmpAuth


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who we are to the agent. Secret fields are left out of the repr."""

    version: Literal[1, 2, 3]
    community: str = field(default="", repr=False)
    username: str = ""
    security_level: Literal["noAuthNoPriv", "authNoPriv", "authPriv"] = "noAuthNoPriv"
    auth_protocol: str | None = None
    auth_password: str = field(default="", repr=False)
    priv_protocol: str | None = None
    priv_password: str = field(default="", repr=False)
    context_name: str = ""

    def __post_init__(self) -> None:
        if self.version not in (1, 2, 3):
            raise ValueError(f"SNMP version must be 1, 2 or 3, not {self.version!r}")
        if self.version != 3:
            return
        if not self.username:
            raise ValueError("SNMPv3 needs a username")
        if self.security_level not in ("noAuthNoPriv", "authNoPriv", "authPriv"):
            raise ValueError(f"unknown SNMPv3 security level {self.security_level!r}")
        if self.security_level != "noAuthNoPriv":
            if self.auth_protocol not in usm.AUTH_PROTOCOLS:
                raise ValueError(
                    f"{self.security_level} needs auth_protocol, one of "
                    f"{', '.join(usm.AUTH_PROTOCOLS)}; got {self.auth_protocol!r}"
                )
            if not self.auth_password:
                raise ValueError(f"{self.security_level} needs an auth_password")
        if self.security_level == "authPriv":
            if self.priv_protocol not in usm.PRIV_KEY_SIZES:
                raise ValueError(
                    f"authPriv needs priv_protocol, one of {', '.join(usm.PRIV_KEY_SIZES)};"
                    f" got {self.priv_protocol!r}"
                )
            if not self.priv_password:
                raise ValueError("authPriv needs a priv_password")

    @classmethod
    def from_auth(cls, auth: SnmpAuth) -> Credentials:
        """The credentials of a validated ``auths:`` entry of the config file."""

        def secret(value: SecretStr | None) -> str:
            return "" if value is None else value.get_secret_value()

        return cls(
            version=auth.version,
            community=secret(auth.community),
            username=auth.username or "",
            security_level=auth.security_level or "noAuthNoPriv",
            auth_protocol=auth.auth_protocol,
            auth_password=secret(auth.auth_password),
            priv_protocol=auth.priv_protocol,
            priv_password=secret(auth.priv_password),
            context_name=auth.context_name or "",
        )
