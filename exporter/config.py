"""The exporter's config file: strict YAML, typed models, errors that point at a line.

Layout::

    collectors:        # what the per-host collectors export and filter
      host: {...}
    auths:             # credentials, by name; referenced from scrape URLs, never inlined
      core_v3: {type: snmp, version: 3, ...}

Every mapping is strict: an unknown or duplicate key is an error naming the file,
the line and the key. Secrets are held as ``SecretStr`` and rendered as
``<secret>`` wherever the config is shown. ``${VAR}`` references are expanded
only when the caller opts in (``--config.expand-env``); ``$$`` is a literal ``$``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from exporter.errors import ConfigError

SECRET_MASK = "<secret>"

Secret = Annotated[SecretStr, PlainSerializer(lambda _: SECRET_MASK, return_type=str)]
# Field names that hold secrets; their values never appear in messages.
SECRET_FIELDS = frozenset(
    {"community", "auth_password", "priv_password", "password", "bearer_token"}
)
Regex = Annotated[re.Pattern[str], PlainSerializer(lambda p: p.pattern, return_type=str)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NameFilter(StrictModel):
    """Which names to keep: those matching ``include`` (if set) and not ``exclude``.

    Both regexes are anchored at both ends, as in Prometheus. A filter written in
    the config file replaces the built-in one whole: to keep the default exclude
    while adding an include, repeat the exclude (``/config`` shows it).
    """

    include: Regex | None = None
    exclude: Regex | None = None

    def keeps(self, name: str) -> bool:
        if self.include is not None and not self.include.fullmatch(name):
            return False
        return self.exclude is None or not self.exclude.fullmatch(name)


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


class CollectorsConfig(StrictModel):
    host: HostCollectorConfig = Field(default_factory=HostCollectorConfig)


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

    @model_validator(mode="after")
    def _fields_match_version(self) -> Self:
        if self.version in (1, 2):
            if self.community is None:
                raise ValueError(f"SNMP v{self.version} needs a community")
            if self.username or self.security_level or self.auth_password or self.priv_password:
                raise ValueError(f"SNMP v{self.version} takes only a community, not v3 fields")
            return self
        if self.community is not None:
            raise ValueError("SNMP v3 takes a username, not a community")
        if not self.username or self.security_level is None:
            raise ValueError("SNMP v3 needs username and security_level")
        needs_auth = self.security_level in ("authNoPriv", "authPriv")
        if needs_auth and (self.auth_protocol is None or self.auth_password is None):
            raise ValueError(f"{self.security_level} needs auth_protocol and auth_password")
        if self.security_level == "authPriv" and (
            self.priv_protocol is None or self.priv_password is None
        ):
            raise ValueError("authPriv needs priv_protocol and priv_password")
        return self


class HttpAuth(StrictModel):
    """Credentials for REST APIs (firewalls): basic auth or a bearer token."""

    type: Literal["http"]
    username: str | None = None
    password: Secret | None = None
    bearer_token: Secret | None = None

    @model_validator(mode="after")
    def _one_scheme(self) -> Self:
        if self.bearer_token is not None and self.username is not None:
            raise ValueError("use either username/password or bearer_token, not both")
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        if self.bearer_token is None and self.username is None:
            raise ValueError("needs username/password or bearer_token")
        return self


class WinrmAuth(StrictModel):
    type: Literal["winrm"]
    username: str
    password: Secret
    transport: Literal["ntlm", "kerberos", "credssp", "basic"] = "ntlm"


Auth = Annotated[SnmpAuth | HttpAuth | WinrmAuth, Field(discriminator="type")]


class ExporterConfig(StrictModel):
    collectors: CollectorsConfig = Field(default_factory=CollectorsConfig)
    auths: dict[str, Auth] = Field(default_factory=dict)

    def masked_yaml(self) -> str:
        """The effective config with every secret replaced by ``<secret>``."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_config(path: Path | None, *, expand_env: bool = False) -> ExporterConfig:
    """Read and validate ``path``; ``None`` gives the built-in defaults."""
    if path is None:
        return ExporterConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    return parse_config(text, str(path), expand_env=expand_env)


def parse_config(text: str, source: str, *, expand_env: bool = False) -> ExporterConfig:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return ExporterConfig()
        problems = list(_duplicate_keys(root))
        if expand_env:
            problems += list(_expand_env(root))
        if problems:
            raise ConfigError("\n".join(f"{source}:{p}" for p in problems))
        if not isinstance(root, yaml.MappingNode):
            raise ConfigError(f"{source}:{_line(root)}: the top level must be a mapping")
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{mark.line + 1}" if mark else "?"
        raise ConfigError(f"{source}:{where}: invalid YAML: {exc.problem}") from exc
    finally:
        loader.dispose()
    try:
        return ExporterConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(source, root, err) for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from exc


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _duplicate_keys(node: yaml.Node) -> Iterator[str]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                yield f'{_line(key)}: duplicate key "{key.value}"'
            seen.add(key.value)
            yield from _duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item)


_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(node: yaml.Node) -> Iterator[str]:
    """Replace ``${VAR}`` in plain and quoted strings, in place."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag != "tag:yaml.org,2002:str" or "$" not in node.value:
            return
        missing = [m.group(1) for m in _ENV_REF.finditer(node.value) if m.group(1)]
        missing = [name for name in missing if name not in os.environ]
        for name in missing:
            yield f'{_line(node)}: environment variable "{name}" is not set'
        if not missing:
            node.value = _ENV_REF.sub(
                lambda m: os.environ[m.group(1)] if m.group(1) else "$", node.value
            )
    elif isinstance(node, yaml.MappingNode):
        for _, value in node.value:
            yield from _expand_env(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _expand_env(item)


def _describe(source: str, root: yaml.Node, err: ErrorDetails) -> str:
    """Turn a pydantic error into ``file:line: path: message`` for a person."""
    loc = [str(part) for part in err["loc"]]
    node, path = _find(root, loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent, key = ".".join(path[:-1]) or "top level", path[-1]
        return f'{source}:{_line(node)}: {parent}: unknown key "{key}"'
    if kind == "missing":
        parent = ".".join(path) or "top level"
        return f'{source}:{_line(node)}: {parent}: missing required key "{loc[-1]}"'
    where = ".".join(path) or "top level"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return (
            f"{source}:{_line(node)}: {where}: unknown type {ctx.get('tag')!r}"
            f" (expected one of: {ctx.get('expected_tags')})"
        )
    if kind == "union_tag_not_found":
        return f'{source}:{_line(node)}: {where}: missing required key "type"'
    if kind == "pattern_regex":
        return f"{source}:{_line(node)}: {where}: {_regex_problem(err['input'])}"
    if kind == "value_error":
        return f"{source}:{_line(node)}: {where}: {err['msg'].removeprefix('Value error, ')}"
    if kind in ("model_type", "dict_type"):
        message = "should be a mapping"
    else:
        message = err["msg"][0].lower() + err["msg"][1:]
    # Never echo what was given for a secret, not even in an error.
    shown = "" if loc[-1] in SECRET_FIELDS else f", got {err['input']!r}"
    return f"{source}:{_line(node)}: {where}: {message}{shown}"


def _regex_problem(pattern: object) -> str:
    try:
        re.compile(str(pattern))
    except re.error as exc:
        return f"invalid regular expression {pattern!r}: {exc}"
    return f"invalid regular expression {pattern!r}"


def _find(root: yaml.Node, loc: list[str]) -> tuple[yaml.Node, list[str]]:
    """Walk ``loc`` down the YAML tree as far as it goes.

    Returns the key node of the deepest part found (the root if none is) and the
    path that names it. Parts of ``loc`` that are not in the file, such as
    pydantic's union tags or keys that are missing, are skipped.
    """
    node, anchor, path = root, root, []
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is not None:
                anchor, node = match
                path.append(part)
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = anchor = node.value[int(part)]
            path.append(part)
    return anchor, path
