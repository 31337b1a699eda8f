"""Where the anomaly loop runs: beside the HTTP app, or in a process of its own.

``scout-sidecar serve`` runs the scoring loop in a child process (like the
worker, :mod:`ai_sidecar.worker_process`, and under the same watch: restarted
if it dies, stopped with the app). Its families travel through a pipe once per
cycle and the HTTP process serves them as they came
(:class:`~ai_sidecar.metrics.ForwardedMetrics`). Training runs in yet another
process (:class:`~ai_sidecar.anomaly.trainer.TrainingProcess`), so neither a
fit nor a scoring cycle takes the GIL from the webhook or the worker. An app
built without the worker process (tests) runs the loop as a background task.

The loop starts only when ``anomaly.enabled`` is true and a Prometheus URL is
set: without one there is no history to learn from. With
``anomaly.shard.index: auto`` it models the shares of the series it claims
through the PostgreSQL store (:mod:`ai_sidecar.store.postgres.shares`),
claimed again every few seconds beside it; none until the first claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing.connection
import os
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from ai_sidecar.anomaly.registry import ModelRegistry
from ai_sidecar.anomaly.scoring import AnomalyScorer, build_families
from ai_sidecar.anomaly.shards import Share
from ai_sidecar.anomaly.trainer import TrainingJob, TrainingProcess, TrainingResult
from ai_sidecar.config import SidecarConfig
from ai_sidecar.errors import ConfigError
from ai_sidecar.metrics import ForwardedMetrics
from ai_sidecar.pipeline import cancel_tasks
from ai_sidecar.promql import BearerToken, HttpPromQLClient
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store.postgres.shares import CLAIM_INTERVAL, ShareClaims
from ai_sidecar.worker_process import (
    WorkerProcess,
    background_settings,
    become_child,
    lock_file,
    stop_on_signals,
    until_stopped,
    watch_child,
)

log = logging.getLogger("ai_sidecar.anomaly")

LOCK_FILE = "anomaly.lock"


class ProcessTrainer:
    """:class:`~ai_sidecar.anomaly.scoring.Trainer` in a spawned training process."""

    def __init__(self, settings: SidecarSettings, config: SidecarConfig) -> None:
        if settings.prometheus_url is None:
            raise ValueError("training needs a Prometheus URL")
        self._settings = settings
        self._config = config
        self._process = TrainingProcess()

    async def train(self, signals: Sequence[str], now: float, share: Share) -> TrainingResult:
        job = TrainingJob(
            prometheus_url=str(self._settings.prometheus_url),
            data_dir=self._settings.data_dir,
            config=self._config.anomaly,
            signals=tuple(signals),
            now=now,
            bearer_token=self._settings.prometheus_bearer_token,
            share=share,
        )
        return await self._process.run(job)

    def close(self) -> None:
        self._process.close()


def wanted(settings: SidecarSettings, config: SidecarConfig) -> bool:
    """Whether this sidecar scores anomalies at all."""
    return config.anomaly.enabled and settings.prometheus_url is not None


def add_anomaly_scoring(
    app: web.Application,
    settings: SidecarSettings,
    config: SidecarConfig,
    registry: CollectorRegistry,
    *,
    separate_process: bool,
) -> None:
    """Serve the anomaly families on ``registry`` (the app's) and run the loop that makes them."""
    if not wanted(settings, config):
        return
    if config.anomaly.shard.index == "auto" and settings.store_location is None:
        raise ConfigError(
            "anomaly.shard.index auto claims shares through the PostgreSQL store:"
            " set SCOUT_STORE_URL, or give each replica its index"
        )
    forwarded = ForwardedMetrics(build_families([], 0.0))
    registry.register(forwarded)
    if separate_process:
        child = WorkerProcess(
            background_settings(settings),
            forwarded,
            target=anomaly_main,
            name="scout-sidecar-anomaly",
            target_kwargs={"config": config},
        )
        watch_child(app, child)
        return

    async def inline(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run_scoring(settings, config, forwarded.update))
        yield
        await cancel_tasks([task])

    app.cleanup_ctx.append(inline)


async def run_scoring(
    settings: SidecarSettings,
    config: SidecarConfig,
    publish: Callable[[list[Metric]], None],
) -> None:
    """The loop, with its session, client, registry and training process, until cancelled."""
    trainer = ProcessTrainer(settings, config)
    auth = (
        None
        if settings.prometheus_bearer_token is None
        else BearerToken(settings.prometheus_bearer_token)
    )
    location = settings.store_location
    claims = (
        ShareClaims(location, config.anomaly.shard.count)
        if config.anomaly.shard.index == "auto" and location is not None
        else None
    )
    try:
        async with aiohttp.ClientSession() as session:
            client = HttpPromQLClient(str(settings.prometheus_url), session, auth=auth)
            scorer = AnomalyScorer(
                config.anomaly,
                client,
                ModelRegistry(settings.data_dir, config.anomaly.keep_versions),
                trainer,
                share=None if claims is None else config.anomaly.shares_claimed(()),
            )
            if claims is None:
                await scorer.run(publish)
                return
            claiming = asyncio.create_task(claim_shares(claims, scorer, config))
            try:
                await scorer.run(publish)
            finally:
                await cancel_tasks([claiming])
    finally:
        await asyncio.to_thread(trainer.close)


async def claim_shares(claims: ShareClaims, scorer: AnomalyScorer, config: SidecarConfig) -> None:
    """Claim shares every CLAIM_INTERVAL and hand them to ``scorer``, until cancelled."""
    try:
        while True:
            try:
                # A share given back stays locked until the scorer no longer exports it.
                held = await claims.claim(in_use=scorer.shares_in_use)
            except Exception:
                # Not a store failure (claim() gives those up itself): a bug. The
                # shares are given up, not scored without a claim, and claiming goes on.
                log.exception("anomaly shares given up: the claims round failed")
                await claims.release()
                held = frozenset()
            scorer.use_share(config.anomaly.shares_claimed(held))
            await asyncio.sleep(CLAIM_INTERVAL)
    finally:
        await claims.release()


def anomaly_main(
    settings: SidecarSettings,
    metrics_pipe: multiprocessing.connection.Connection,
    *,
    config: SidecarConfig,
) -> None:
    """Entry point of the anomaly process."""
    become_child(settings.log_level, settings.log_format)
    lock = lock_file(settings.data_dir / LOCK_FILE)
    try:
        asyncio.run(_serve(settings, config, metrics_pipe))
    finally:
        os.close(lock)


async def _serve(
    settings: SidecarSettings,
    config: SidecarConfig,
    pipe: multiprocessing.connection.Connection,
) -> None:
    stop = stop_on_signals()

    def publish(families: list[Metric]) -> None:
        with contextlib.suppress(OSError, ValueError):
            pipe.send(families)

    scoring = asyncio.create_task(run_scoring(settings, config, publish))
    log.info("anomaly process started", extra={"pid": os.getpid()})
    await until_stopped(scoring, stop)
    await cancel_tasks([scoring])
    log.info("anomaly process stopped")
