"""`make up`'s stack runner: the whole stack on loopback, and nothing left after Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from scripts.localstack import free_port, port_is_free
from tests.conftest import promql, wait_for

REPO = Path(__file__).resolve().parent.parent


def start_stack(tmp_path: Path, ports: dict[str, int]) -> subprocess.Popen[str]:
    argv = [sys.executable, str(REPO / "scripts" / "localstack.py"), f"--data-dir={tmp_path}"]
    argv += [f"--{name}-port={port}" for name, port in ports.items()]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_stack_serves_host_metrics_and_ctrl_c_leaves_nothing(tmp_path):
    ports = {n: free_port() for n in ("prometheus", "alertmanager", "exporter", "sidecar")}
    stack = start_stack(tmp_path, ports)
    children: list[psutil.Process] = []
    try:
        assert stack.stdout is not None
        banner = [stack.stdout.readline() for _ in range(2)]
        assert banner[0].startswith("Scout stack is up"), "".join(banner) + stack.stdout.read()
        children = psutil.Process(stack.pid).children(recursive=True)
        assert len(children) == 4
        prometheus = f"http://127.0.0.1:{ports['prometheus']}"
        # The shipped config scrapes every 15s; the first scrape comes within one interval.
        rows = wait_for(
            lambda: promql(prometheus, 'scout_host_load1{job="scout-exporter"}'),
            timeout=40,
            what="host metrics through Prometheus",
        )
        assert rows[0]["metric"]["instance"] == f"127.0.0.1:{ports['exporter']}"
        up = wait_for(
            lambda: len(promql(prometheus, "up == 1")) == 5 or None,
            timeout=40,
            what="all five targets up (four services and the loopback probe)",
        )
        assert up
        # The multi-target ICMP job reaches loopback through the exporter's /probe.
        probe = wait_for(
            lambda: promql(prometheus, 'scout_probe_success{job="probe_icmp"} == 1'),
            timeout=40,
            what="the ICMP probe of loopback",
        )
        assert probe[0]["metric"]["instance"] == "127.0.0.1"
        alertmanagers = promql(prometheus, "prometheus_notifications_alertmanagers_discovered")
        assert alertmanagers[0]["value"][1] == "1"
    finally:
        stack.send_signal(signal.SIGINT)
        output, _ = stack.communicate(timeout=60)
    assert stack.returncode == 0, output
    assert "stopped." in output
    still_running = [p.pid for p in children if p.is_running() and p.status() != "zombie"]
    assert still_running == []
    assert all(port_is_free(port) for port in ports.values())


def test_busy_port_names_the_variable_to_override(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {
            "prometheus": busy,
            "alertmanager": free_port(),
            "exporter": free_port(),
            "sidecar": free_port(),
        }
        stack = start_stack(tmp_path, ports)
        output, _ = stack.communicate(timeout=60)
    assert stack.returncode == 1
    assert f"port {busy} is in use: pick another with `make up PROMETHEUS_PORT=<port>`" in output
