"""The training process: a result comes back through the pipe; closing ends a fit at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import web

from ai_sidecar.anomaly.trainer import TrainingError, TrainingJob, TrainingProcess
from ai_sidecar.config import AnomalyConfig

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
