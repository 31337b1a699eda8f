"""The shipped Prometheus and Alertmanager configs, checked by their own tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RULE_TESTS = sorted((REPO / "prometheus" / "tests").glob("*.yml"))


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=60, check=False
    )


def test_prometheus_config_is_valid():
    result = run("promtool", "check", "config", REPO / "prometheus" / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_file_has_unit_tests():
    rule_files = {p.name for p in (REPO / "prometheus" / "rules").glob("*.yml")}
    tested = {p.name.replace(".test.yml", ".yml") for p in RULE_TESTS}
    assert rule_files
    assert rule_files <= tested


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(test_file):
    result = run("promtool", "test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_config_is_valid():
    result = run("amtool", "check-config", REPO / "alertmanager" / "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
