"""Strict YAML config loading for both daemons: typed models, errors that point at a line.

Every mapping is strict: an unknown or duplicate key is an error naming the file,
the line and the key. ``${VAR}`` references are expanded only when the caller
opts in; ``$$`` is a literal ``$``. Values under the caller's secret paths are
never repeated in an error message.

The loader takes any pydantic model and any exception class, so the exporter and
the sidecar validate their own files with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

M = TypeVar("M", bound=BaseModel)


def load_model(
    path: Path,
    model_cls: type[M],
    *,
    expand_env: bool = False,
    error: type[Exception],
    secret_paths: Collection[str] = (),
) -> M:
    """Read ``path`` and validate it as ``model_cls``; problems raise ``error``.

    Each daemon passes its own models and exception class, so both report
    config mistakes the same way.
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
        secret_paths=secret_paths,
    )


def parse_model(
    text: str,
    source: str,
    model_cls: type[M],
    *,
    expand_env: bool = False,
    error: type[Exception],
    secret_paths: Collection[str] = (),
) -> M:
    """Validate YAML ``text`` as ``model_cls``; every error names ``source`` and a line.

    An empty document gives ``model_cls()``, its defaults. Errors are raised
    ``from None``: pydantic's own exception would carry the offending values,
    secrets among them, into any traceback. Values at or under ``secret_paths``
    are never repeated in a message: each is a dotted path of keys where ``*``
    stands for any one key (``auths``, ``modules.*.headers``).
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
        lines = [_describe(source, root, err, secret_paths) for err in exc.errors()]
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


def _may_hold_secret(path: list[str], secret_paths: Collection[str]) -> bool:
    """Whether the value at ``path`` is, is inside, or contains a secret path.

    A value that contains one counts too: a secret section written as a plain
    string is still the secret.
    """
    for pattern in secret_paths:
        parts = pattern.split(".")
        if all(want in ("*", have) for want, have in zip(parts, path, strict=False)):
            return True
    return False


def _describe(
    source: str, root: yaml.Node, err: ErrorDetails, secret_paths: Collection[str]
) -> str:
    """Turn a pydantic error into ``file:line: path: message`` for a person."""
    loc = [str(part) for part in err["loc"]]
    node, path = _find(root, loc)
    secret = _may_hold_secret(path, secret_paths)
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
        given = "" if secret else f" {ctx.get('tag')!r}"
        return (
            f"{source}:{_line(node)}: {where}: unknown {tag}{given}"
            f" (expected one of: {ctx.get('expected_tags')})"
        )
    if kind == "union_tag_not_found":
        return f'{source}:{_line(node)}: {where}: missing required key "{tag}"'
    if kind == "pattern_regex":
        problem = "invalid regular expression" if secret else _regex_problem(err["input"])
        return f"{source}:{_line(node)}: {where}: {problem}"
    if kind == "value_error":
        return f"{source}:{_line(node)}: {where}: {err['msg'].removeprefix('Value error, ')}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        message = "should be a mapping"
    else:
        message = err["msg"][0].lower() + err["msg"][1:]
    shown = "" if secret else f", got {err['input']!r}"
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
