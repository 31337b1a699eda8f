"""The training process: a result comes back through the pipe; closing ends a fit at once."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from aiohttp import web

from ai_sidecar.anomaly.trainer import TrainingError, TrainingJob, TrainingProcess
from ai_sidecar.config import AnomalyConfig
from ai_sidecar.worker_process import die_with_parent

pytestmark = pytest.mark.peers


def job(url: str, data_dir: Path, timeout: str) -> TrainingJob:
    config = AnomalyConfig.model_validate(
        {
            "query_timeout": timeout,
            "retries": 0,
            "signals": [{"name": "load", "query": "load", "step": "5m", "history": "1d"}],
        },
        strict=False,
    )
    return TrainingJob(url, data_dir, config, ("load",), time.time())


async def engine(aiohttp_server, stall: bool) -> str:
    async def answer(request: web.Request) -> web.Response:
        if stall:
            await asyncio.sleep(60)
        kind = "vector" if request.path.endswith("/query") else "matrix"
        return web.json_response({"status": "success", "data": {"resultType": kind, "result": []}})

    app = web.Application()
    app.router.add_route("*", "/api/v1/{tail:.*}", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


async def test_a_result_comes_back_from_the_training_process(aiohttp_server, tmp_path):
    url = await engine(aiohttp_server, stall=False)
    process = TrainingProcess()
    result = await process.run(job(url, tmp_path, "5s"))
    # An engine without the signal's series: nothing to train, and no error.
    assert result.trained == {"load": None}
    assert result.failed == {}


async def test_closing_ends_a_running_fit_at_once(aiohttp_server, tmp_path):
    url = await engine(aiohttp_server, stall=True)
    process = TrainingProcess()
    running = asyncio.create_task(process.run(job(url, tmp_path, "60s")))
    await asyncio.sleep(2)  # spawned, and waiting on the stalled engine
    assert not running.done()
    began = time.monotonic()
    await asyncio.to_thread(process.close)
    with pytest.raises(TrainingError, match="ended without a result"):
        await running
    assert time.monotonic() - began < 5


def _report_if_alive(report: Path) -> None:
    """A grandchild: waits until its parent has died, then asks to die with it."""
    import multiprocessing
    import os

    parent = multiprocessing.parent_process()
    assert parent is not None
    report.with_suffix(".pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while os.getppid() == parent.pid and time.monotonic() < deadline:
        time.sleep(0.05)
    die_with_parent()
    report.write_text("still running, orphaned")


def _start_orphan_then_die(report: Path) -> None:
    import multiprocessing
    import os

    multiprocessing.get_context("spawn").Process(target=_report_if_alive, args=(report,)).start()
    os._exit(0)  # before the grandchild has asked to die with it


def test_a_child_whose_parent_died_before_it_started_ends_itself(tmp_path):
    # A kill -9 of the scoring process while a training process is still
    # starting must not leave that training running for minutes, orphaned.
    report = tmp_path / "report"
    parent = multiprocessing.get_context("spawn").Process(
        target=_start_orphan_then_die, args=(report,)
    )
    parent.start()
    parent.join(60)
    pid_file = report.with_suffix(".pid")
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    try:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not report.exists()
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie nobody reaps yet counts as ended.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
