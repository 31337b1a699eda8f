"""The exporter as a process: start, stop, and errors a person would see."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import signal
import socket
import subprocess
import sys
import urllib.request

import bcrypt
import pytest

from exporter.cli import build_parser
from exporter.common.listen import parse_listen_address
from exporter.common.logs import configure_logging
from scripts.localstack import free_port
from tests.conftest import http_get, run_on_busy_port, wait_for
from tests.exporter.test_config import run_exporter


def test_sigterm_after_scrapes_exits_cleanly_and_quietly(exporter_factory):
    service, url = exporter_factory("--log.format=json")
    for _ in range(3):
        assert http_get(f"{url}/metrics")[0] == 200
    assert service.process is not None
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=10) == 0
    assert "still running" not in service.log_path.read_text()


def test_busy_port_is_a_clear_error():
    result, port = run_on_busy_port("exporter.cli")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


def test_malformed_listen_address_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "--web.listen-address=localhost"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "expected HOST:PORT, got 'localhost'" in result.stderr


def test_live_metrics_endpoint_passes_promtool_check_metrics(exporter_factory):
    _, url = exporter_factory()
    status, text = http_get(f"{url}/metrics")
    assert status == 200
    assert "scout_host_cpu_seconds_total{" in text
    assert "scout_exporter_build_info{" in text
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":8781", (None, 8781)),
        ("127.0.0.1:8781", ("127.0.0.1", 8781)),
        ("[::1]:8781", ("::1", 8781)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_addresses(text, expected):
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["::1:8781", "host:\u0663", "host:0", "host:65536", "8781"])
def test_bad_listen_addresses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_listen_address(text)


def test_json_logs_carry_context_fields(capsys):
    configure_logging("info", "json")
    try:
        logging.getLogger("exporter.test").warning(
            "collector failed: %s", "boom", extra={"collector": "host"}
        )
    finally:
        logging.getLogger().handlers.clear()
    record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert record["level"] == "warn"
    assert record["msg"] == "collector failed: boom"
    assert record["collector"] == "host"
    assert record["logger"] == "exporter.test"


def test_snmp_wrap_large_counters_is_on_by_default_and_can_be_turned_off():
    # snmp_exporter's flag, with its default: Counter64 values modulo 2^53.
    assert build_parser().parse_args([]).snmp_wrap_large_counters is True
    args = build_parser().parse_args(["--no-snmp.wrap-large-counters"])
    assert args.snmp_wrap_large_counters is False
    assert build_parser().parse_args(["--snmp.wrap-large-counters"]).snmp_wrap_large_counters


@pytest.mark.parametrize(("loaded", "said"), [(True, "compiled"), (False, "python")])
def test_the_start_line_says_which_snmp_loops_run(monkeypatch, capsys, loaded, said):
    from exporter import cli

    monkeypatch.setattr(cli, "compiled", object() if loaded else None)
    # Only the start: no server, no signal handlers, the test process's collector untouched.
    monkeypatch.setattr(cli, "serve_on", lambda *args, **kwargs: 0)
    monkeypatch.setattr(cli, "tune_garbage_collector", lambda: None)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    try:
        listen = ["--web.listen-address=127.0.0.1:9"] * 2
        assert cli.main([*listen, "--log.format=json"]) == 0
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    (start,) = [line for line in lines if line["msg"] == "starting"]
    assert start["snmp_loops"] == said
    assert start["address"] == "127.0.0.1:9"  # given twice, served and told once


def test_a_busy_flow_port_is_the_same_clear_error_as_a_busy_http_port(tmp_path):
    config = tmp_path / "exporter.yml"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config.write_text(f"collectors:\n  flows:\n    listen: 127.0.0.1:{port}\n")
        result = run_exporter(
            "--collector.flows",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{free_port()}",
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"scout-exporter: cannot listen on 127.0.0.1:{port} (flows, UDP): Address already in use"
    )


def test_every_listen_address_is_served_with_the_same_web_config(tmp_path):
    password = "listen-twice-canary"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
        "http_server_config:\n  headers: {X-Frame-Options: deny}\n"
    )
    ports = [free_port(), free_port()]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter.cli",
            f"--web.config.file={web_config}",
            # The first twice: an address given again is served once, not a bind error.
            *(f"--web.listen-address=127.0.0.1:{port}" for port in [*ports, ports[0]]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    credentials = base64.b64encode(f"prometheus:{password}".encode()).decode()
    try:
        for port in ports:
            url = f"http://127.0.0.1:{port}/-/ready"
            assert wait_for(lambda url=url: http_get(url)[0], what=f"port {port}") == 401
            request = urllib.request.Request(url, headers={"Authorization": f"Basic {credentials}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
                assert response.headers["X-Frame-Options"] == "deny"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.5", "half"])
def test_the_timeout_offset_must_be_a_finite_number_of_seconds(value):
    result = run_exporter(f"--scrape.timeout-offset={value}", "--dry-run")
    assert result.returncode == 2
    assert "argument --scrape.timeout-offset: expected" in result.stderr
    assert repr(value) in result.stderr


def test_a_timeout_offset_of_zero_is_taken():
    assert build_parser().parse_args(["--scrape.timeout-offset=0"]).timeout_offset == 0.0
