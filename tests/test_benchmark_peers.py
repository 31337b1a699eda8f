"""The benchmarks' peers come from the project's own files; one missing is told plainly."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A distribution a benchmark reports the version of: the peer it measures against.
_NAMED = re.compile(r"""metadata\.version\(\s*["']([^"']+)["']\s*\)""")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_by_the_project() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    return {_canonical(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def test_every_peer_a_benchmark_measures_against_is_in_the_project_dependencies():
    named = {
        (_canonical(name), script.name)
        for script in (REPO / "benchmarks").glob("*.py")
        for name in _NAMED.findall(script.read_text())
    }
    assert ("pywinrm", "winrm_fleet.py") in named  # the scan sees what it is for
    missing = sorted(pair for pair in named if pair[0] not in _installed_by_the_project())
    assert missing == []


def test_the_winrm_client_benchmark_without_pywinrm_says_how_to_install_it():
    # pywinrm hidden from the import system, as on a machine without the dev extra.
    hide_and_run = (
        "import runpy, sys; sys.modules['winrm'] = None;"
        " sys.argv = ['winrm_fleet.py', 'clients'];"
        f" runpy.run_path({str(REPO / 'benchmarks' / 'winrm_fleet.py')!r}, run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_and_run], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "compares pypsrp with pywinrm, which is not installed" in done.stderr
    assert "pip install -e '.[dev]'" in done.stderr
    # It stopped before starting any host: nothing was measured.
    assert "clients:" not in done.stdout
