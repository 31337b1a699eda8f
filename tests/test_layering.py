"""The sidecar depends on the exporter only through ``exporter.common``.

The two daemons ship in one distribution, but the sidecar must not pull in the
exporter's collectors, probers or clients (importing them opens nothing, but it
ties the sidecar's start-up and failure modes to code it never runs).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = "exporter.common"


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name ``path`` imports, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from exporter import x`` may name a submodule: check each name.
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _outside_common(name: str) -> bool:
    return (name == "exporter" or name.startswith("exporter.")) and not (
        name == ALLOWED or name.startswith(ALLOWED + ".")
    )


def test_sidecar_sources_import_only_the_common_package() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in sorted((ROOT / "ai_sidecar").rglob("*.py"))
        for line, name in _imported_modules(path)
        if _outside_common(name)
    ]
    assert offenders == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import exporter.config\nfrom exporter import app\nfrom exporter.common import web\n"
    )
    names = [name for _, name in _imported_modules(sample) if _outside_common(name)]
    assert names == ["exporter.config", "exporter.app"]


def test_importing_the_sidecar_loads_no_other_exporter_module() -> None:
    # Run in a fresh interpreter: this test process has imported the exporter already.
    code = (
        "import sys, ai_sidecar.app, ai_sidecar.cli, ai_sidecar.worker_process\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] == 'exporter')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = done.stdout.split()
    assert "exporter.common.yamlconfig" in loaded  # the probe really ran the imports
    assert [name for name in loaded if name != "exporter" and _outside_common(name)] == []
