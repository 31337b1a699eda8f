"""Config reload: SIGHUP and POST /-/reload put the file's llm section in force, wherever
the analyst runs; an invalid file changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from ai_sidecar.app import create_app
from ai_sidecar.components import Components
from ai_sidecar.config import LlmConfig, SidecarConfig, load_config
from ai_sidecar.enrichment.base import AnalystDeclined, IncidentContext
from ai_sidecar.enrichment.chain import AnalystChain
from ai_sidecar.enrichment.llm.reload import LlmSettingsHub
from ai_sidecar.keys import RELOADER
from ai_sidecar.metrics import SidecarMetrics, create_metrics
from ai_sidecar.models import Analysis, Incident
from ai_sidecar.priority import NoAnomalyEvidence
from ai_sidecar.reload import ConfigReloader
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import Store
from ai_sidecar.worker_process import NICENESS, follow_reloads
from scripts.localstack import Service, free_port, sidecar_service
from tests.ai_sidecar.builders import OfflineContext, alert, payload
from tests.ai_sidecar.test_app import wait_until
from tests.conftest import http_get

TOKEN = "reload-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LLM_ON = "llm:\n  provider: gemini\n  enabled: true\n"
LLM_OFF = "llm:\n  provider: gemini\n  enabled: false\n"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def settings(tmp_path: Path, config_file: Path) -> SidecarSettings:
    return SidecarSettings(data_dir=tmp_path / "data", webhook_token=TOKEN, config_file=config_file)


class Switchable:
    """Stands in for the LLM analyst: speaks unless the llm section in force says no."""

    name = "switchable"

    def __init__(self, config: LlmConfig) -> None:
        self.config = config

    def reconfigure(self, config: LlmConfig) -> None:
        self.config = config

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        if not self.config.active:
            raise AnalystDeclined("disabled", "the LLM kill switch is on")
        return Analysis("from the LLM", "x", "y", (), 0.5, 0.1)


class Local:
    name = "local"

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        return Analysis("from the local rules", "x", "y", (), 0.5, 0.1)


def switchable_components(
    config: SidecarConfig,
    settings: SidecarSettings,
    session: aiohttp.ClientSession,
    *,
    db: Store,
    metrics: SidecarMetrics,
) -> Components:
    """Importable by name, so the worker process can build it too."""
    switchable = Switchable(config.llm)
    return Components(
        AnalystChain(Local(), (switchable,)),
        OfflineContext(),
        NoAnomalyEvidence(),
        reloadable=(switchable,),
    )


@dataclass
class Reloading:
    """A reloader of a file with the LLM on, its metrics, and the configs it applied."""

    path: Path
    reloader: ConfigReloader
    metrics: SidecarMetrics
    applied: list[SidecarConfig] = field(default_factory=list)


def reloading(tmp_path: Path) -> Reloading:
    path = write_config(tmp_path / "scout.yml", LLM_ON)
    metrics = create_metrics()
    applied: list[SidecarConfig] = []
    reloader = ConfigReloader(settings(tmp_path, path), load_config(path), metrics, applied.append)
    return Reloading(path, reloader, metrics, applied)


def sample(metrics: SidecarMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_a_reload_applies_the_llm_section_and_names_what_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r = reloading(tmp_path)
    config = r.reloader.config
    write_config(r.path, LLM_OFF + "store:\n  retention: 3d\n")
    with caplog.at_level(logging.INFO, logger="ai_sidecar.reload"):
        assert await r.reloader.reload() is None
    [new] = r.applied
    assert new.llm.enabled is False
    # Only the llm section is live: the store keeps the retention it started with.
    assert new.store == config.store
    assert r.reloader.config is new
    assert "changes to store take a restart" in caplog.text
    assert sample(r.metrics, "scout_sidecar_config_reloads_total", outcome="success") == 1
    assert sample(r.metrics, "scout_sidecar_config_last_reload_successful") == 1


async def test_an_invalid_file_keeps_the_config_in_force(tmp_path: Path) -> None:
    r = reloading(tmp_path)
    config = r.reloader.config
    write_config(r.path, LLM_OFF + "  retries: 99\n")
    problem = await r.reloader.reload()
    assert problem is not None
    assert "retries" in problem
    assert r.applied == []
    assert r.reloader.config is config
    assert sample(r.metrics, "scout_sidecar_config_reloads_total", outcome="failure") == 1
    assert sample(r.metrics, "scout_sidecar_config_last_reload_successful") == 0


async def test_the_endpoint_needs_the_token_and_answers_400_with_the_error(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    path = write_config(tmp_path / "scout.yml", LLM_ON)
    app = create_app(settings(tmp_path, path), load_config(path), components=switchable_components)
    client = await aiohttp_client(app)
    assert (await client.post("/-/reload")).status == 401
    write_config(path, "llm: [not, a, mapping]\n")
    refused = await client.post("/-/reload", headers=AUTH)
    assert refused.status == 400
    assert "llm" in (await refused.json())["error"]
    assert app[RELOADER].config.llm.enabled is True
    write_config(path, LLM_OFF)
    taken = await client.post("/-/reload", headers=AUTH)
    assert taken.status == 200
    assert app[RELOADER].config.llm.enabled is False
    metrics = await (await client.get("/metrics")).text()
    assert 'scout_sidecar_config_reloads_total{outcome="failure"} 1.0' in metrics
    assert 'scout_sidecar_config_reloads_total{outcome="success"} 1.0' in metrics


async def test_sighup_reloads(aiohttp_client: Any, tmp_path: Path) -> None:
    path = write_config(tmp_path / "scout.yml", LLM_ON)
    app = create_app(
        settings(tmp_path, path),
        load_config(path),
        components=switchable_components,
        reload_on_sighup=True,
    )
    await aiohttp_client(app)
    write_config(path, LLM_OFF)
    os.kill(os.getpid(), signal.SIGHUP)

    async def switched_off() -> bool:
        return app[RELOADER].config.llm.enabled is False

    await wait_until(switched_off, 10)


@pytest.mark.parametrize("worker_process", [False, True], ids=["inline", "worker-process"])
async def test_the_kill_switch_reaches_the_analyst_wherever_it_runs(
    aiohttp_client: Any, tmp_path: Path, worker_process: bool
) -> None:
    path = write_config(tmp_path / "scout.yml", LLM_ON)
    app = create_app(
        settings(tmp_path, path),
        load_config(path),
        components=switchable_components,
        worker_process=worker_process,
    )
    client = await aiohttp_client(app)

    async def analysed_by(instance: str) -> dict[str, Any] | None:
        body = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
        for incident in body:
            labels = [m["labels"].get("instance") for m in incident["alerts"]]
            if instance in labels and incident["analysis"]:
                return dict(incident)
        return None

    first = alert("DeviceDown", site="ams", instance="r1")
    assert (await client.post("/api/v1/alertmanager", json=payload(first), headers=AUTH)).ok
    before = await wait_until(lambda: analysed_by("r1"), 30)
    assert before["analyst"] == "switchable"

    write_config(path, LLM_OFF)
    assert (await client.post("/-/reload", headers=AUTH)).status == 200
    second = alert("DiskFull", site="fra", instance="s9")
    assert (await client.post("/api/v1/alertmanager", json=payload(second), headers=AUTH)).ok
    after = await wait_until(lambda: analysed_by("s9"), 30)
    assert after["analyst"] == "local"
    assert after["skippedAnalysts"] == [
        {
            "analyst": "switchable",
            "reason": "declined",
            "detail": "disabled: the LLM kill switch is on",
        }
    ]


async def test_the_worker_process_follows_sections_from_its_control_pipe() -> None:
    received: list[LlmConfig] = []

    class Listener:
        def reconfigure(self, config: LlmConfig) -> None:
            received.append(config)

    hub = LlmSettingsHub(LlmConfig())
    hub.register(Listener())
    receiver, sender = multiprocessing.Pipe(duplex=False)
    follow_reloads(receiver, hub)
    off = LlmConfig(enabled=False)
    sender.send(off)

    async def arrived() -> bool:
        return bool(received)

    await wait_until(arrived, 5)
    assert received == [off]
    assert hub.current == off
    # The parent gone: the reader stops, nothing raises.
    sender.close()
    await asyncio.sleep(0.05)
    asyncio.get_running_loop().remove_reader(receiver.fileno())
    receiver.close()


def test_a_listener_that_fails_does_not_stop_the_others() -> None:
    received: list[LlmConfig] = []

    class Broken:
        def reconfigure(self, config: LlmConfig) -> None:
            raise RuntimeError("boom")

    class Fine:
        def reconfigure(self, config: LlmConfig) -> None:
            received.append(config)

    hub = LlmSettingsHub(LlmConfig())
    hub.register(Broken())
    stop = hub.register(Fine())
    hub.publish(LlmConfig(enabled=False))
    assert len(received) == 1
    stop()
    hub.publish(LlmConfig())
    assert len(received) == 1


def test_serve_reloads_on_sighup_to_its_process_group_and_keeps_its_worker(
    tmp_path: Path, start_service: Callable[[Service], Service]
) -> None:
    # No provider: the real components would want its API key.
    path = write_config(tmp_path / "scout.yml", "llm:\n  enabled: true\n")
    port = free_port()
    env = {"SCOUT_WEBHOOK_TOKEN": TOKEN, "SCOUT_DATA_DIR": str(tmp_path / "data")}
    service = start_service(sidecar_service(tmp_path, port, [f"--config.file={path}"], env))
    assert service.process is not None
    http = psutil.Process(service.process.pid)

    def workers() -> list[int]:
        """The worker processes that are up: past the start that lowers their priority."""
        found = []
        for child in http.children():
            with contextlib.suppress(psutil.Error):  # a zombie: one that died
                started = child.nice() == http.nice() + NICENESS
                if started and "spawn_main" in " ".join(child.cmdline()):
                    found.append(child.pid)
        return sorted(found)

    deadline = time.monotonic() + 10
    while not (before := workers()):
        assert time.monotonic() < deadline, "no worker process"
        time.sleep(0.05)
    write_config(path, "llm:\n  enabled: false\n")
    # What a terminal's hangup does: the whole group gets it; only the parent reloads.
    os.killpg(os.getpgid(service.process.pid), signal.SIGHUP)
    reloaded = 'scout_sidecar_config_reloads_total{outcome="success"} 1.0'
    deadline = time.monotonic() + 10
    while reloaded not in (body := http_get(f"http://127.0.0.1:{port}/metrics")[1]):
        assert time.monotonic() < deadline, body[-2000:]
        time.sleep(0.05)
    assert "scout_sidecar_config_last_reload_successful 1.0" in body
    time.sleep(0.5)
    assert workers() == before
    assert service.process.poll() is None
