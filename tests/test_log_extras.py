"""No logging call names an ``extra`` key that a LogRecord already has.

``logging`` raises KeyError for such a key when the record is made, so the
call fails exactly when something went wrong: the worker process's watch
thread died that way on the first crash it reported, and no worker was ever
started again.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESERVED = frozenset(vars(logging.LogRecord("n", 0, "p", 0, "m", (), None))) | {
    "message",
    "asctime",
}


def _reserved_extras(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno}: {key.value!r}"
                    for key in keyword.value.keys
                    if isinstance(key, ast.Constant) and key.value in RESERVED
                ]
    return found


def test_no_log_call_overwrites_a_record_attribute() -> None:
    found = [
        hit
        for package in ("ai_sidecar", "exporter", "scripts")
        for path in sorted((ROOT / package).rglob("*.py"))
        for hit in _reserved_extras(path)
    ]
    assert found == []
