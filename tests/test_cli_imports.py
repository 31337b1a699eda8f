"""``scout-sidecar`` builds its parser, and runs a quick command, without the heavy modules.

Every command line builds the parser of every command, so a group that
imported its implementation up front (numpy and the trainer for ``anomaly``,
psycopg for the store, the console for ``user`` and ``report``) would make
``--help`` and ``user list`` pay for all of them, and each of the hundreds
of command processes the tests run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What none of the commands below may import: what serve, anomaly and the
# console load, each costing from tens of milliseconds to most of a second.
HEAVY = (
    "aiohttp",
    "numpy",
    "psycopg",
    "sklearn",
    "pandas",
    "matplotlib",
    "fpdf",
    "google.genai",
    "ai_sidecar.anomaly.trainer",
    "ai_sidecar.anomaly.detector",
    "ai_sidecar.components",
    "ai_sidecar.worker_process",
)
# What running a user command loads anyway: its package starts the console
# (aiohttp), which opens the store through the components.
CONSOLE = ("aiohttp", "psycopg", "ai_sidecar.components")


def _loaded_after(statement: str, tmp_path: Path) -> list[str]:
    """The modules a fresh interpreter holds after ``statement`` (a test process has them all)."""
    code = (
        "import contextlib, json, sys\n"
        "from ai_sidecar import cli\n"
        f"with contextlib.suppress(SystemExit):\n    {statement}\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SCOUT_DATA_DIR": str(tmp_path)},
    )
    loaded: list[str] = json.loads(done.stderr.splitlines()[-1])
    return loaded


def _present(loaded: list[str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name in loaded]


def test_building_the_parser_loads_no_heavy_module(tmp_path: Path) -> None:
    loaded = _loaded_after("cli.build_parser()", tmp_path)
    assert "ai_sidecar.anomaly.cli" in loaded  # the probe really built the parser
    assert _present(loaded, HEAVY) == []


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["user", "--help"], ["user", "list", "--help"], ["anomaly", "score", "--help"]],
)
def test_help_loads_no_heavy_module(argv: list[str], tmp_path: Path) -> None:
    loaded = _loaded_after(f"cli.main({argv!r})", tmp_path)
    assert _present(loaded, HEAVY) == []


def test_user_list_loads_only_what_the_console_needs(tmp_path: Path) -> None:
    loaded = _loaded_after("cli.main(['user', 'list'])", tmp_path)
    assert "ai_sidecar.console.login.commands" in loaded  # the command really ran
    assert [name for name in _present(loaded, HEAVY) if name not in CONSOLE] == []


def test_the_check_sees_a_heavy_module(tmp_path: Path) -> None:
    loaded = _loaded_after("import numpy, ai_sidecar.anomaly.detector", tmp_path)
    assert {"numpy", "ai_sidecar.anomaly.detector"} <= set(_present(loaded, HEAVY))
