"""The exporter's config file: strict YAML, typed models, errors that point at a line.

Layout::

    collectors:        # what the per-host collectors export and filter
      host: {...}
    auths:             # credentials, by name; referenced from scrape URLs, never inlined
      core_v3: {type: snmp, version: 3, ...}
    modules:           # what the multi-target endpoints read, by name (?module=)
      cisco_cpu: {prober: snmp, metrics: [...]}

Every mapping is strict: an unknown or duplicate key is an error naming the file,
the line and the key. Secrets are held as ``SecretStr`` and rendered as
``<secret>`` wherever the config is shown. ``${VAR}`` references are expanded
only when the caller opts in (``--config.expand-env``); ``$$`` is a literal ``$``.

The loader itself lives in :mod:`exporter.common.yamlconfig`, shared with the sidecar.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    Field,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)

from exporter.common.durations import Duration
from exporter.common.models import NameFilter, Secret, StrictModel, drop_extension_keys
from exporter.common.yamlconfig import load_model, parse_model
from exporter.errors import ConfigError
from exporter.targets.allowlist import AllowedTargets, AllowList, needs_allow_list
from exporter.targets.firewall.modules import FirewallModuleType
from exporter.targets.probe.modules import ProbeModuleType
from exporter.targets.snmp.modules import SnmpModule
from exporter.targets.winrm.modules import WinrmModule

# Kernel and container pseudo filesystems: their sizes say nothing about disk space.
DEFAULT_FSTYPE_EXCLUDE = (
    "autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|efivarfs|erofs|fusectl"
    "|fuse\\.lxcfs|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|ramfs|rpc_pipefs"
    "|securityfs|selinuxfs|squashfs|sysfs|tracefs"
)
# Per-container and per-pod mounts come and go, which would make label sets unbounded.
DEFAULT_MOUNTPOINT_EXCLUDE = (
    "/(dev|proc|sys)(/.*)?|/run/credentials/.+|/run/user/\\d+/.+"
    "|/var/lib/(docker|containers/storage|kubelet)/.+|/snap/.+"
)
# Partitions are already counted in their whole disk; ram, loop and floppy are not disks.
DEFAULT_DISK_EXCLUDE = (
    "(z?ram|loop|fd|sr)\\d+|(h|s|v|xv)d[a-z]+\\d+|nvme\\d+n\\d+p\\d+|mmcblk\\d+p\\d+"
)
# Loopback and per-container virtual interfaces; bridges, bonds and VLANs are kept.
DEFAULT_NETDEV_EXCLUDE = "lo|veth.*|cali.*|lxc.*|docker\\d+|br-[0-9a-f]{12}"


def _filter(exclude: str) -> Any:
    return Field(default_factory=lambda: NameFilter(exclude=re.compile(exclude)))


class HostCollectorConfig(StrictModel):
    fstypes: NameFilter = _filter(DEFAULT_FSTYPE_EXCLUDE)
    mountpoints: NameFilter = _filter(DEFAULT_MOUNTPOINT_EXCLUDE)
    disks: NameFilter = _filter(DEFAULT_DISK_EXCLUDE)
    network_devices: NameFilter = _filter(DEFAULT_NETDEV_EXCLUDE)


class NetfilterCollectorConfig(StrictModel):
    """``--collector.netfilter``: the local nftables ruleset and connection tracking.

    Rule series follow ``exporter.schema.firewall.RuleBudget``: rules with a
    comment and named counters by default, every rule with ``all_rules``, at
    most ``max_rule_series`` either way.
    """

    nft_command: str = "nft"
    # Where /proc/sys/net/netfilter and /proc/net/stat live (a host's, seen from a container).
    # Not strict: YAML has no path type, so the path comes as a string.
    procfs: Annotated[Path, Field(strict=False)] = Path("/proc")
    all_rules: bool = False
    max_rule_series: int = Field(default=500, ge=0)


class FlowsCollectorConfig(StrictModel):
    """``--collector.flows``: top bandwidth consumers from NetFlow v5/v9 and IPFIX.

    ``listen`` is ``host:port`` for the UDP listener. Talkers are ranked over
    ``window``; the top ``top_n`` per direction get series, the rest is summed
    into an ``other`` bucket; a talker out of the top N for ``ttl`` loses its
    series. ``max_series`` bounds every flow series together. ``exporters``, if
    set, lists the networks flow packets are accepted from.
    """

    listen: str = "0.0.0.0:2055"
    top_n: int = Field(default=20, ge=1, le=1000)
    window: Duration = timedelta(minutes=5)
    ttl: Duration = timedelta(minutes=15)
    max_series: int = Field(default=2000, ge=10)
    # Optional extra aggregations: per subnet (prefix lengths), per protocol and port.
    ipv4_prefix: int | None = Field(default=None, ge=8, le=32)
    ipv6_prefix: int | None = Field(default=None, ge=16, le=128)
    by_protocol_port: bool = False
    exporters: list[IPvAnyNetwork] | None = None
    max_templates: int = Field(default=1000, ge=1)

    @field_validator("listen")
    @classmethod
    def _listen_is_host_and_port(cls, value: str) -> str:
        # Imported here: the flows package imports this module. Checked at load, so a typo
        # fails the config check rather than the exporter's start.
        from exporter.collectors.flows.listener import parse_listen

        parse_listen(value)
        return value


class CollectorsConfig(StrictModel):
    host: HostCollectorConfig = Field(default_factory=HostCollectorConfig)
    netfilter: NetfilterCollectorConfig = Field(default_factory=NetfilterCollectorConfig)
    flows: FlowsCollectorConfig = Field(default_factory=FlowsCollectorConfig)


def _check_allow_list(secret_kind: str | None, allowed_targets: AllowList | None) -> None:
    """An auth that sends a secret must say where it may go."""
    if secret_kind is not None and allowed_targets is None:
        raise ValueError(needs_allow_list(f"sends {secret_kind}"))


# The community agents ship with: known to everyone, so not a secret.
PUBLIC_COMMUNITY = "public"


class SnmpAuth(StrictModel):
    """SNMP credentials, as snmp_exporter spells them."""

    type: Literal["snmp"]
    version: Literal[1, 2, 3] = 2
    community: Secret | None = None
    username: str | None = None
    security_level: Literal["noAuthNoPriv", "authNoPriv", "authPriv"] | None = None
    auth_protocol: Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"] | None = None
    auth_password: Secret | None = None
    priv_protocol: Literal["DES", "AES", "AES192", "AES256"] | None = None
    priv_password: Secret | None = None
    context_name: str | None = None
    # The targets these credentials may be sent to (see exporter.targets.allowlist).
    allowed_targets: AllowedTargets | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_a_number(cls, value: object) -> object:
        # YAML's `true` would otherwise pass as version 1.
        if isinstance(value, bool):
            raise ValueError("input should be 1, 2 or 3")
        return value

    @model_validator(mode="after")
    def _fields_match_version(self) -> Self:
        v3_fields = (
            "username",
            "security_level",
            "auth_protocol",
            "auth_password",
            "priv_protocol",
            "priv_password",
            "context_name",
        )
        given = [name for name in v3_fields if getattr(self, name) is not None]
        if self.version in (1, 2):
            if self.community is None or not self.community.get_secret_value():
                raise ValueError(f"SNMP v{self.version} needs a community")
            if given:
                raise ValueError(
                    f"SNMP v{self.version} takes only a community, not {', '.join(given)}"
                )
            return self
        if self.community is not None:
            raise ValueError("SNMP v3 takes a username, not a community")
        if not self.username or self.security_level is None:
            raise ValueError("SNMP v3 needs username and security_level")
        auth = [n for n in ("auth_protocol", "auth_password") if getattr(self, n) is not None]
        priv = [n for n in ("priv_protocol", "priv_password") if getattr(self, n) is not None]
        if self.security_level == "noAuthNoPriv" and auth + priv:
            raise ValueError(f"noAuthNoPriv takes no {', '.join(auth + priv)}")
        if self.security_level != "noAuthNoPriv" and len(auth) < 2:
            raise ValueError(f"{self.security_level} needs auth_protocol and auth_password")
        if self.security_level == "authNoPriv" and priv:
            raise ValueError(f"authNoPriv takes no {', '.join(priv)}")
        if self.security_level == "authPriv" and len(priv) < 2:
            raise ValueError("authPriv needs priv_protocol and priv_password")
        for name in ("auth_password", "priv_password"):
            secret = getattr(self, name)
            # RFC 3414 keys need 8 characters; agents reject shorter ones at run time.
            if secret is not None and len(secret.get_secret_value()) < 8:
                raise ValueError(f"{name} must be at least 8 characters (RFC 3414)")
        return self

    @model_validator(mode="after")
    def _secrets_need_an_allow_list(self) -> Self:
        _check_allow_list(self.secret_kind, self.allowed_targets)
        return self

    @property
    def secret_kind(self) -> str | None:
        """What secret the auth sends a target, or ``None`` when it sends none.

        ``public`` is the community every agent ships with and every scanner
        tries, so it is no secret; any other community is, and travels in clear
        in every packet. SNMPv3 with authentication sends keyed digests an agent
        run by the caller could attack offline; noAuthNoPriv sends only a user name.
        """
        if self.version in (1, 2):
            community = self.community.get_secret_value() if self.community else ""
            return None if community == PUBLIC_COMMUNITY else "an SNMP community"
        if self.security_level in ("authNoPriv", "authPriv"):
            return f"SNMPv3 {self.security_level} credentials"
        return None


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class HttpAuth(StrictModel):
    """Credentials for REST APIs (``/firewall``): one of three schemes.

    ``bearer_token`` is sent as ``Authorization: Bearer`` (a FortiOS API token,
    or a pfSense REST API JWT); ``username``/``password`` as HTTP basic auth
    (an OPNsense API key and secret); ``api_key`` as ``X-API-Key`` (the pfSense
    REST API package's keys). Every scheme but a bare user name sends a
    secret, so the auth must say where it may go (``allowed_targets``).
    """

    type: Literal["http"]
    username: str | None = None
    password: Secret | None = None
    bearer_token: Secret | None = None
    api_key: Secret | None = None
    # The targets these credentials may be sent to (see exporter.targets.allowlist).
    allowed_targets: AllowedTargets | None = None

    @model_validator(mode="after")
    def _one_scheme(self) -> Self:
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        given = [
            name
            for name, value in (
                ("username/password", self.username),
                ("bearer_token", self.bearer_token),
                ("api_key", self.api_key),
            )
            if value is not None
        ]
        if len(given) == 2:
            raise ValueError(f"use either {given[0]} or {given[1]}, not both")
        if len(given) > 2:
            raise ValueError(f"use one of {', '.join(given[:-1])} or {given[-1]}, not several")
        if not given or (given == ["username/password"] and not self.username):
            raise ValueError("needs username/password, bearer_token or api_key")
        return self

    @model_validator(mode="after")
    def _header_safe(self) -> Self:
        # A token or key goes in a header as it is (basic auth is base64): a control
        # character would end the header or start another, and the request is refused.
        for name, secret in (("bearer_token", self.bearer_token), ("api_key", self.api_key)):
            if secret is not None and _CONTROL_CHARACTER.search(secret.get_secret_value()):
                raise ValueError(
                    f"{name} holds a control character (a line break from a file or a "
                    "variable?), which cannot travel in an HTTP header"
                )
        return self

    @model_validator(mode="after")
    def _secrets_need_an_allow_list(self) -> Self:
        _check_allow_list(self.secret_kind, self.allowed_targets)
        return self

    @property
    def scheme(self) -> Literal["basic", "bearer", "api_key"]:
        """How the credentials travel: basic auth, a bearer token, or an X-API-Key header."""
        if self.bearer_token is not None:
            return "bearer"
        if self.api_key is not None:
            return "api_key"
        return "basic"

    @property
    def secret_kind(self) -> str | None:
        """What secret the auth sends a target, or ``None`` for a user name alone."""
        if self.bearer_token is not None:
            return "a bearer token"
        if self.api_key is not None:
            return "an API key"
        return "a password" if self.password is not None else None


class WinrmAuth(StrictModel):
    """WinRM credentials for ``/winrm``, and how the WS-Man listener is reached.

    NTLM, Kerberos and CredSSP encrypt every message themselves, so plain HTTP
    (5985) is fine for them; Basic sends the password as it is and is refused
    unless ``https`` (5986). Over HTTPS the server's certificate is verified,
    against ``ca_file`` if given, else the system's CAs. Every transport hands
    the target something an attacker's host could use (a password, an NTLM
    response to crack offline), so ``allowed_targets`` is required.
    """

    type: Literal["winrm"]
    username: str
    password: Secret
    transport: Literal["ntlm", "kerberos", "credssp", "basic"] = "ntlm"
    https: bool = False
    # PEM certificate authorities to trust instead of the system's, for an internal PKI.
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    # The targets these credentials may be sent to (see exporter.targets.allowlist).
    allowed_targets: AllowedTargets | None = None

    @model_validator(mode="after")
    def _basic_only_over_https(self) -> Self:
        if self.transport == "basic" and not self.https:
            raise ValueError("transport basic sends the password in clear: it needs https: true")
        if not self.https and (self.ca_file is not None or self.insecure_skip_verify):
            raise ValueError("ca_file and insecure_skip_verify need https: true")
        if self.ca_file is not None and self.insecure_skip_verify:
            raise ValueError("use either ca_file or insecure_skip_verify, not both")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ValueError("ca_file is not a file")
        _check_allow_list("WinRM credentials", self.allowed_targets)
        return self


Auth = Annotated[SnmpAuth | HttpAuth | WinrmAuth, Field(discriminator="type")]


# What a multi-target endpoint reads, chosen by the module's ``prober``: snmp for
# /snmp, icmp, tcp and http for /probe, fortigate, opnsense and pfsense for
# /firewall, winrm for /winrm (see exporter.targets.registry).
Module = Annotated[
    SnmpModule | ProbeModuleType | FirewallModuleType | WinrmModule,
    Field(discriminator="prober"),
]


class ExporterConfig(StrictModel):
    """The whole file. Top-level keys starting with ``x-`` are ignored (YAML anchors)."""

    collectors: CollectorsConfig = Field(default_factory=CollectorsConfig)
    auths: dict[str, Auth] = Field(default_factory=dict)
    modules: dict[str, Module] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _drop_extension_keys(cls, data: object) -> object:
        return drop_extension_keys(data)

    def masked_yaml(self) -> str:
        """The effective config with every secret replaced by ``<secret>``."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# Where values are never echoed in an error: a misplaced secret is still a
# secret, and an HTTP module's headers carry tokens.
SECRET_PATHS = ("auths", "modules.*.headers")


def load_config(path: Path | None, *, expand_env: bool = False) -> ExporterConfig:
    """Read and validate ``path``; ``None`` gives the built-in defaults."""
    if path is None:
        return ExporterConfig()
    return load_model(
        path,
        ExporterConfig,
        expand_env=expand_env,
        error=ConfigError,
        secret_paths=SECRET_PATHS,
    )


def parse_config(text: str, source: str, *, expand_env: bool = False) -> ExporterConfig:
    """Validate YAML ``text``; every error names ``source`` and a line."""
    return parse_model(
        text,
        source,
        ExporterConfig,
        expand_env=expand_env,
        error=ConfigError,
        secret_paths=SECRET_PATHS,
    )
