"""Registers the ``peers`` marker for the sidecar's tests until pyproject does.

Tests that start real daemons (Prometheus, VictoriaMetrics, Alertmanager) carry
it, so ``pytest -m "not peers"`` is the fast lane.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "peers: starts real daemons (slow lane)")
