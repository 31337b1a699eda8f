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

The loader itself (:func:`parse_model`, :func:`load_model`) takes any pydantic
model and exception class: the sidecar validates its own file with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from exporter.errors import ConfigError
from exporter.models import Regex, Secret, StrictModel, drop_extension_keys
from exporter.targets.probe.modules import ProbeModuleType
from exporter.targets.snmp.modules import SnmpModule


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
        if self.bearer_token is None and not self.username:
            raise ValueError("needs username/password or bearer_token")
        return self


class WinrmAuth(StrictModel):
    type: Literal["winrm"]
    username: str
    password: Secret
    transport: Literal["ntlm", "kerberos", "credssp", "basic"] = "ntlm"


Auth = Annotated[SnmpAuth | HttpAuth | WinrmAuth, Field(discriminator="type")]


# What a multi-target endpoint reads, chosen by the module's ``prober``: snmp for
# /snmp, icmp, tcp and http for /probe (see exporter.targets.registry).
Module = Annotated[SnmpModule | ProbeModuleType, Field(discriminator="prober")]


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


# Top-level sections whose values are never echoed in an error: a misplaced
# secret is still a secret.
SECRET_SECTIONS = frozenset({"auths"})

M = TypeVar("M", bound=BaseModel)


def load_config(path: Path | None, *, expand_env: bool = False) -> ExporterConfig:
    """Read and validate ``path``; ``None`` gives the built-in defaults."""
    if path is None:
        return ExporterConfig()
    return load_model(path, ExporterConfig, expand_env=expand_env, secret_sections=SECRET_SECTIONS)


def parse_config(text: str, source: str, *, expand_env: bool = False) -> ExporterConfig:
    """Validate YAML ``text``; every error names ``source`` and a line."""
    return parse_model(
        text, source, ExporterConfig, expand_env=expand_env, secret_sections=SECRET_SECTIONS
    )


def load_model(
    path: Path,
    model_cls: type[M],
    *,
    expand_env: bool = False,
    error: type[Exception] = ConfigError,
    secret_sections: Collection[str] = (),
) -> M:
    """Read ``path`` and validate it as ``model_cls``; problems raise ``error``.

    The sidecar shares this loader with its own models and exception class, so
    both daemons report config mistakes the same way.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text file (invalid UTF-8 at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read config: {exc.strerror or exc}") from None
    return parse_model(
        text,
        str(path),
        model_cls,
        expand_env=expand_env,
        error=error,
        secret_sections=secret_sections,
    )


def parse_model(
    text: str,
    source: str,
    model_cls: type[M],
    *,
    expand_env: bool = False,
    error: type[Exception] = ConfigError,
    secret_sections: Collection[str] = (),
) -> M:
    """Validate YAML ``text`` as ``model_cls``; every error names ``source`` and a line.

    An empty document gives ``model_cls()``, its defaults. Errors are raised
    ``from None``: pydantic's own exception would carry the offending values,
    secrets among them, into any traceback. Values under ``secret_sections``
    (top-level keys) are never repeated in a message.
    """
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader rejects control characters up front
        raise error(f"{source}: invalid YAML: {exc}") from None
    try:
        root = loader.get_single_node()
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
            return model_cls()
        problems = list(_check_keys(root, set()))
        if expand_env:
            problems += list(_expand_env(loader, root, set()))
        if problems:
            raise error("\n".join(f"{source}:{p}" for p in problems))
        if not isinstance(root, yaml.MappingNode):
            raise error(f"{source}:{_line(root)}: the top level must be a mapping")
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{mark.line + 1}" if mark else "?"
        raise error(f"{source}:{where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:  # e.g. a control character: the reader has no line for it
        raise error(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise error(f"{source}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(source, root, err, secret_sections) for err in exc.errors()]
        raise error("\n".join(lines)) from None


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _check_keys(node: yaml.Node, seen_nodes: set[int]) -> Iterator[str]:
    """Duplicate and non-scalar keys; each node once, so aliases cannot loop."""
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                yield f"{_line(key)}: keys must be plain names, not lists or mappings"
                continue
            if key.value in keys:
                yield f'{_line(key)}: duplicate key "{key.value}"'
            keys.add(key.value)
            yield from _check_keys(value, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _check_keys(item, seen_nodes)


_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(loader: yaml.SafeLoader, node: yaml.Node, seen_nodes: set[int]) -> Iterator[str]:
    """Replace ``${VAR}`` in string scalars, in place; each node once (aliases share nodes).

    A plain scalar is typed again after expansion, so ``version: ${V}`` with
    ``V=3`` is the number 3, as if written in the file.
    """
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
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
            if node.style is None:
                # types-PyYAML leaves resolve() untyped; it returns the tag string.
                node.tag = loader.resolve(  # type: ignore[no-untyped-call]
                    yaml.ScalarNode, node.value, (True, False)
                )
    elif isinstance(node, yaml.MappingNode):
        for _, value in node.value:
            yield from _expand_env(loader, value, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _expand_env(loader, item, seen_nodes)


def _describe(
    source: str, root: yaml.Node, err: ErrorDetails, secret_sections: Collection[str]
) -> str:
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
    ctx = err.get("ctx", {})
    # Auths are told apart by `type`, modules by `prober`.
    tag = str(ctx.get("discriminator", "type")).strip("'")
    if kind == "union_tag_invalid":
        return (
            f"{source}:{_line(node)}: {where}: unknown {tag} {ctx.get('tag')!r}"
            f" (expected one of: {ctx.get('expected_tags')})"
        )
    if kind == "union_tag_not_found":
        return f'{source}:{_line(node)}: {where}: missing required key "{tag}"'
    if kind == "pattern_regex":
        return f"{source}:{_line(node)}: {where}: {_regex_problem(err['input'])}"
    if kind == "value_error":
        return f"{source}:{_line(node)}: {where}: {err['msg'].removeprefix('Value error, ')}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        message = "should be a mapping"
    else:
        message = err["msg"][0].lower() + err["msg"][1:]
    shown = "" if loc and loc[0] in secret_sections else f", got {err['input']!r}"
    return f"{source}:{_line(node)}: {where}: {message}{shown}"


def _regex_problem(pattern: object) -> str:
    try:
        re.compile(str(pattern))
    except re.error as exc:
        return f"invalid regular expression {pattern!r}: {exc}"
    return f"invalid regular expression {pattern!r}"


def _key_text(key: yaml.Node) -> str:
    """A key as pydantic reports it in an error location (``null`` is ``None``)."""
    if key.tag.endswith(":null"):
        return "None"
    if key.tag.endswith(":bool"):
        return str(key.value.lower() in ("true", "yes", "on"))
    return str(key.value)


def _find(root: yaml.Node, loc: list[str]) -> tuple[yaml.Node, list[str]]:
    """Walk ``loc`` down the YAML tree as far as it goes.

    Returns the key node of the deepest part found (the root if none is) and the
    path that names it. Parts of ``loc`` that are not in the file, such as
    pydantic's union tags or keys that are missing, are skipped.
    """
    node, anchor, path = root, root, []
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if _key_text(k) == part), None)
            if match is not None:
                anchor, node = match
                path.append(part)
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = anchor = node.value[int(part)]
            path.append(part)
    return anchor, path
