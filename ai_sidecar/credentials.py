"""Secrets from the environment: a variable, or the file its ``*_FILE`` twin names.

The file form suits Docker and Kubernetes secrets. Errors name the variable
and the file, never the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ai_sidecar.errors import ConfigError


def read_secret(environ: Mapping[str, str], variable: str, file_variable: str) -> str | None:
    """A secret from ``variable``, or from the file ``file_variable`` names; never echoed."""
    value = environ.get(variable, "").strip() or None
    path = environ.get(file_variable, "").strip()
    if not path:
        return value
    if value is not None:
        raise ConfigError(f"set {variable} or {file_variable}, not both")
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{file_variable}: cannot read {path}: {reason}") from None
    if not text:
        raise ConfigError(f"{file_variable}: {path} is empty")
    return text
