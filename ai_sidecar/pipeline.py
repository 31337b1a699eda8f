"""The background half of the sidecar: worker and return trip, started together.

The same :func:`run_pipeline` runs inside the HTTP process (``create_app``'s
default, used by tests) or in a process of its own (``ai_sidecar.worker_process``,
what ``scout-sidecar serve`` does), so both paths share one wiring, and both
build the worker's components with the same factory
(:func:`ai_sidecar.components.build_components` unless a test gives another).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiohttp

from ai_sidecar.anomaly.evidence import ScrapedAnomalyEvidence
from ai_sidecar.clock import utc_now
from ai_sidecar.components import ComponentsFactory
from ai_sidecar.config import SidecarConfig
from ai_sidecar.enrichment.llm.reload import LlmSettingsHub
from ai_sidecar.metrics import SidecarMetrics
from ai_sidecar.models import Alert
from ai_sidecar.notify import PostPermit, ReturnTrip, ReturnTripPolicy
from ai_sidecar.notify.signing import graph_links
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import Store
from ai_sidecar.store.retention import prune_forever
from ai_sidecar.worker import Worker

log = logging.getLogger("ai_sidecar")


def return_trip_policy(config: SidecarConfig, settings: SidecarSettings) -> ReturnTripPolicy:
    trip = config.return_trip
    return ReturnTripPolicy(
        keepalive=trip.keepalive,
        repost_interval=trip.repost_interval,
        resolved_repeat_for=trip.resolved_repeat_for,
        resolved_repeat_interval=trip.resolved_repeat_interval,
        retry_backoff_max=trip.retry_backoff_max,
        prometheus_url=settings.prometheus_url,
        grafana_url=trip.grafana_url,
        external_url=trip.external_url,
        graph_links=graph_links(config, settings.data_dir),
        zone=config.notifications.zone,
        language=config.language,
    )


async def _run_forever(name: str, work: Callable[[], Awaitable[None]]) -> None:
    """Keep a background loop alive: a crash is logged and the loop restarts."""
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:  # pipeline boundary: log, pause, and carry on
            log.exception("background loop failed; restarting it", extra={"loop": name})
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def run_pipeline(
    db: Store,
    settings: SidecarSettings,
    config: SidecarConfig,
    metrics: SidecarMetrics,
    session: aiohttp.ClientSession,
    wakeup: asyncio.Event,
    components: ComponentsFactory,
    *,
    permit: PostPermit | None = None,
    llm_settings: LlmSettingsHub | None = None,
) -> AsyncIterator[None]:
    """Run the worker and the return trip until the block exits; the worker stops first.

    ``permit``: the worker lease, asked before every post (None: the only replica).
    ``llm_settings``: the process's ``llm`` section and ``language`` in force
    (they may have been reloaded since start); the components' reloadable parts
    follow the section, the worker and the return trip follow the language.
    """
    if llm_settings is not None:
        config = config.model_copy(
            update={"llm": llm_settings.current, "language": llm_settings.language}
        )

    async def take_in(alerts: Sequence[Alert]) -> None:
        # What reconciliation finds is stored like a webhook delivery.
        await db.ingest(alerts, utc_now())
        wakeup.set()

    trip = ReturnTrip(
        db,
        settings.alertmanager_urls,
        return_trip_policy(config, settings),
        metrics,
        session,
        take_in=take_in,
        permit=permit,
    )
    built = components(config, settings, session, db=db, metrics=metrics)
    unregister = (
        [] if llm_settings is None else [llm_settings.register(r) for r in built.reloadable]
    )
    # Whatever the components opened (the LLM analyst's calls, its provider's
    # connections) is closed
    # however the pipeline ends, a worker that could not start included.
    try:
        if isinstance(built.anomaly, ScrapedAnomalyEvidence):
            built.anomaly.observe(metrics.anomaly_evidence)
        worker = Worker(db, config, built, trip, metrics.worker, wakeup)
        if llm_settings is not None:
            unregister.append(llm_settings.follow_language(worker.set_language))
            # Notifications follow a reloaded language too, from their next copy.
            unregister.append(llm_settings.follow_language(trip.use_language))
        await worker.start()
        trip_task = asyncio.create_task(_run_forever("return_trip", trip.run))
        worker_tasks = [
            asyncio.create_task(_run_forever("correlate", worker.correlate_forever)),
            asyncio.create_task(_run_forever("analyse", worker.analyse_forever)),
            asyncio.create_task(
                _run_forever(
                    "retention",
                    lambda: prune_forever(
                        db,
                        config.store.retention,
                        metrics.store_pruned,
                        audit_retention=config.llm.audit_retention,
                    ),
                )
            ),
        ]
        if built.topology is not None:
            built.topology.observe(metrics.topology)
            worker_tasks.append(
                asyncio.create_task(_run_forever("topology", built.topology.refresh_forever))
            )
        try:
            yield
        finally:
            await cancel_tasks(worker_tasks)
            await cancel_tasks([trip_task])
    finally:
        for stop_following in unregister:
            stop_following()
        for closer in built.closers:
            await closer.close()


async def cancel_tasks(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until each has finished."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
