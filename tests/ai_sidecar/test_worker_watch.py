"""The watch over the sidecar's child processes outlives a child that cannot be started,
and starts each with only what it uses."""

from __future__ import annotations

import multiprocessing
import pickle
import socket
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from ai_sidecar import worker_process
from ai_sidecar.app import create_app
from ai_sidecar.config import load_config
from ai_sidecar.intake.processes import INTAKE_SETTINGS, IntakeProcesses
from ai_sidecar.metrics import ForwardedMetrics, create_metrics
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.worker_process import WorkerProcess, watched_children
from exporter.common.serving import ServerLimits


def touch_and_exit(marker: Path, *args: Any) -> None:
    """The child: leave a mark, then exit (the watch starts another)."""
    marker.touch()


class RefusingFirstStarts:
    """The spawn context, but the first ``refusals`` starts fail as a refused fork does."""

    def __init__(self, refusals: int) -> None:
        self.real = multiprocessing.get_context("spawn")
        self.refusals = refusals

    def Pipe(self, duplex: bool) -> Any:
        return self.real.Pipe(duplex=duplex)

    def Process(self, **kwargs: Any) -> Any:
        process = self.real.Process(**kwargs)
        if self.refusals:
            self.refusals -= 1

            def refuse() -> None:
                raise OSError(11, "Resource temporarily unavailable")

            process.start = refuse
        return process


def test_a_child_that_cannot_be_started_is_tried_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(worker_process, "RESTART_DELAY", 0.05)
    marker = tmp_path / "started"
    watch = WorkerProcess(
        marker,  # type: ignore[arg-type]  # the test child's only argument
        ForwardedMetrics([]),
        target=touch_and_exit,
        name="scout-test-child",
    )
    watch._context = RefusingFirstStarts(refusals=2)  # type: ignore[assignment]
    watch.start()
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if time.monotonic() > deadline:
                pytest.fail("no child ran after two refused starts")
            time.sleep(0.05)
    finally:
        watch.stop()
    refused = [r for r in caplog.records if "cannot run the child process" in r.getMessage()]
    assert len(refused) == 2


class RecordingStarts:
    """The spawn context, but a child is never started: what it would have been started
    with is recorded, and the start refused as a refused fork is."""

    def __init__(self) -> None:
        self.real = multiprocessing.get_context("spawn")
        self.starts: list[dict[str, Any]] = []

    def Pipe(self, duplex: bool) -> Any:
        return self.real.Pipe(duplex=duplex)

    def Process(self, **kwargs: Any) -> Any:
        self.starts.append(kwargs)
        raise OSError(11, "Resource temporarily unavailable")


def started_with(child: WorkerProcess) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments ``child``'s target would get, its pipe left out."""
    recorder = RecordingStarts()
    child._context = recorder  # type: ignore[assignment]
    child.start()
    try:
        deadline = time.monotonic() + 60
        while not recorder.starts:
            if time.monotonic() > deadline:
                pytest.fail("the watch never started the child")
            time.sleep(0.01)
    finally:
        child.stop()
    start = recorder.starts[0]
    return start["args"][:-1], start["kwargs"]


PROMETHEUS_TOKEN = "prometheus-bearer-secret"
WEBHOOK_TOKEN = "webhook-bearer-secret"
STORE_PASSWORD = "store-password-secret"


def secret_settings(tmp_path: Path) -> SidecarSettings:
    # Every field the intake processes take away from its default, so that one
    # left behind shows.
    return SidecarSettings(
        data_dir=tmp_path,
        webhook_token=WEBHOOK_TOKEN,
        prometheus_url="http://127.0.0.1:9",
        prometheus_bearer_token=PROMETHEUS_TOKEN,
        store_url="postgresql://scout@127.0.0.1:9/scout",
        store_password=STORE_PASSWORD,
        max_body_bytes=1234,
        log_level="debug",
        log_format="json",
    )


# The settings no intake process reads: each stays in the main process.
NOT_FOR_INTAKES = {
    "listen_host",
    "listen_port",
    "prometheus_url",
    "prometheus_bearer_token",
    "alertmanager_urls",
    "config_file",
}


def test_every_setting_is_given_to_intake_processes_or_kept_from_them():
    """A field added to the settings must be put on one list or the other, by
    someone who decided whether the intake processes need it (a secret they do
    not use must not cross into them)."""
    every = {setting.name for setting in fields(SidecarSettings)}
    assert set(INTAKE_SETTINGS) | NOT_FOR_INTAKES == every
    assert not set(INTAKE_SETTINGS) & NOT_FOR_INTAKES


def test_an_intake_process_gets_only_what_it_uses(tmp_path):
    """The webhook's token, body limit, store and logging; not the Prometheus token,
    the config or the worker's components, which it does not use."""
    settings = secret_settings(tmp_path)
    listening = socket.create_server(("127.0.0.1", 0))
    intake = IntakeProcesses(settings, create_metrics(), [listening], ServerLimits(), 1)
    try:
        args, kwargs = started_with(intake.children[0])
    finally:
        intake.close()
        listening.close()
    [given] = args
    assert isinstance(given, SidecarSettings)
    for name in INTAKE_SETTINGS:
        assert getattr(given, name) == getattr(settings, name), name
        assert getattr(given, name) != getattr(SidecarSettings(), name), name
    assert given.store_location == settings.store_location
    assert set(kwargs) == {"sockets", "socket_path", "limits"}
    # The listening sockets cross as descriptors, not pickled.
    crossing = pickle.dumps((args, {k: v for k, v in kwargs.items() if k != "sockets"}))
    assert PROMETHEUS_TOKEN.encode() not in crossing
    assert STORE_PASSWORD.encode() in crossing  # the store's own: it writes alerts


def test_a_child_that_takes_no_config_refuses_a_reloaded_one(tmp_path):
    """Given one, its next start would fail on the unknown argument, and again at
    every restart."""
    listening = socket.create_server(("127.0.0.1", 0))
    intake = IntakeProcesses(
        secret_settings(tmp_path), create_metrics(), [listening], ServerLimits(), 1
    )
    try:
        with pytest.raises(ValueError, match="takes no reloaded config"):
            intake.children[0].reconfigure(load_config(None))
    finally:
        intake.close()
        listening.close()


def test_children_that_answer_no_request_never_get_the_webhook_token(tmp_path):
    settings = secret_settings(tmp_path)
    # The shipped example's config: anomaly scoring on.
    config = load_config(Path(__file__).parents[2] / "docs" / "examples" / "scout-sidecar.yml")
    app = create_app(settings, config, worker_process=True)
    children = watched_children(app)
    assert len(children) == 2  # the worker and the anomaly scorer
    for child in children:
        args, kwargs = started_with(child)
        crossing = pickle.dumps((args, kwargs))
        assert WEBHOOK_TOKEN.encode() not in crossing
        # What they do use: Prometheus (scoring, graphs) and the store.
        assert PROMETHEUS_TOKEN.encode() in crossing
        assert STORE_PASSWORD.encode() in crossing
