"""What the worker works with, built from the config in one place.

:func:`build_components` makes the analyst chain (:func:`build_analysts`: the
configured LLM analyst in front of the local one, which is the fallback), the
source of Prometheus context (through the :mod:`ai_sidecar.promql` client),
the source of anomaly evidence (the scores Prometheus scraped from the
sidecar, read back through the same client) and the dependency graph correlation
follows (read from Prometheus on a schedule). The pipeline calls it in whichever
process runs the worker, the HTTP process or the worker process, so both get
the same components.

:func:`open_store` opens the store the settings name, SQLite or PostgreSQL,
for whichever process asks.

Tests replace the components with a :class:`ComponentsFactory` of their own. A factory
given to the worker process must be importable by name (a module-level
function), since the process is spawned and receives it pickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import aiohttp

from ai_sidecar.anomaly.evidence import ScrapedAnomalyEvidence
from ai_sidecar.config import SidecarConfig
from ai_sidecar.context import MetricsContextSource, PrometheusContext
from ai_sidecar.correlate import TopologyProvider, TopologyRefresher
from ai_sidecar.enrichment.chain import AnalystChain
from ai_sidecar.enrichment.llm.reload import LlmReconfigurable
from ai_sidecar.enrichment.local import LocalAnalyst
from ai_sidecar.priority import AnomalyEvidenceSource, NoAnomalyEvidence
from ai_sidecar.promql import BearerToken, HttpPromQLClient
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import PostgresStore, SqliteStore, Store
from ai_sidecar.store.postgres.engine import Fence
from ai_sidecar.store.sqlite import Synchronous

if TYPE_CHECKING:  # the metrics module imports the worker, which imports this one
    from ai_sidecar.metrics import SidecarMetrics


@dataclass(frozen=True, slots=True)
class Components:
    """The worker's collaborators: who analyses, the evidence they are given, the graph.

    ``topology`` None: correlation without a dependency graph (tests' components).
    ``reloadable``: what applies a reloaded ``llm`` section (the LLM guard and
    policy), registered with the process's settings hub while the pipeline runs.
    ``closers``: what holds connections or calls in flight (the LLM analyst and
    its provider), closed when the pipeline stops.
    """

    analysts: AnalystChain
    context: MetricsContextSource
    anomaly: AnomalyEvidenceSource
    topology: TopologyProvider | None = None
    reloadable: tuple[LlmReconfigurable, ...] = ()
    closers: tuple[Closable, ...] = ()


class Closable(Protocol):
    async def close(self) -> None: ...


class ComponentsFactory(Protocol):
    """Builds the components for one run of the pipeline.

    ``session``, ``db`` and ``metrics`` are the pipeline's: the LLM analyst
    calls out through the session, keeps its audit in the store and counts on
    the pipeline's registry.
    """

    def __call__(
        self,
        config: SidecarConfig,
        settings: SidecarSettings,
        session: aiohttp.ClientSession,
        *,
        db: Store,
        metrics: SidecarMetrics,
    ) -> Components: ...


def promql_client(
    settings: SidecarSettings, session: aiohttp.ClientSession
) -> HttpPromQLClient | None:
    """The client of the Prometheus the settings name; None when they name none."""
    if settings.prometheus_url is None:
        return None
    token = settings.prometheus_bearer_token
    return HttpPromQLClient(
        settings.prometheus_url, session, auth=None if token is None else BearerToken(token)
    )


def build_components(
    config: SidecarConfig,
    settings: SidecarSettings,
    session: aiohttp.ClientSession,
    *,
    db: Store,
    metrics: SidecarMetrics,
) -> Components:
    """The production components, as the config and the settings describe them."""
    client = promql_client(settings, session)
    analysts = build_analysts(config, settings, db=db, metrics=metrics)
    return Components(
        analysts=analysts.chain,
        context=PrometheusContext.from_config(client, config.analysis),
        anomaly=NoAnomalyEvidence() if client is None else ScrapedAnomalyEvidence(client),
        topology=TopologyRefresher(client, config.correlation),
        reloadable=analysts.reloadable,
        closers=analysts.closers,
    )


@dataclass(frozen=True, slots=True)
class Analysts:
    """The analyst chain, what follows a reloaded ``llm`` section, and what to close at exit."""

    chain: AnalystChain
    reloadable: tuple[LlmReconfigurable, ...] = ()
    closers: tuple[Closable, ...] = ()


def build_analysts(
    config: SidecarConfig, settings: SidecarSettings, *, db: Store, metrics: SidecarMetrics
) -> Analysts:
    """The local analyst, behind the configured LLM analyst when a provider is configured.

    Without one (``llm.provider: none``, or no API key in the environment) the
    local analyst speaks alone. With the kill switch on (``llm.enabled:
    false``) the LLM analyst is built all the same, and its guard declines
    every call, so a reload can turn the LLM on without a restart.
    """
    local = LocalAnalyst(config.runbooks)
    if config.llm.provider == "none":
        return Analysts(AnalystChain(fallback=local))
    # Imported here: the providers load the vendor SDKs (slow to import), which only a
    # configured LLM needs.
    from ai_sidecar.enrichment.llm.analyst import LlmAnalyst
    from ai_sidecar.enrichment.llm.audit import StoreAudit
    from ai_sidecar.enrichment.llm.budget import BUDGET_FILE
    from ai_sidecar.enrichment.llm.guard import LlmGuard
    from ai_sidecar.enrichment.llm.policy import LlmPolicy
    from ai_sidecar.enrichment.llm.providers import build_provider

    provider = build_provider(config.llm.model_copy(update={"enabled": True}))
    if provider is None:
        return Analysts(AnalystChain(fallback=local))
    guard = LlmGuard(
        config.llm,
        metrics.llm,
        audit=StoreAudit(db),
        state_file=settings.data_dir / BUDGET_FILE,
    )
    policy = LlmPolicy(config.llm, metrics.llm)
    analyst = LlmAnalyst(local, provider, guard, policy, config.llm, metrics.llm)
    return Analysts(
        AnalystChain(fallback=local, preferred=(analyst,)),
        reloadable=(guard, policy),
        closers=(analyst,),
    )


# How the worker process's pipeline commits to the SQLite file (one-shot
# commands, which write accounts and settings, keep FULL). Everything it writes
# (incidents, the cursor, analyses, the return trip's rows) is derived from the
# stored alerts and its own to-do lists, which roll back with it (so may the
# audit row of an LLM exchange, whose incident is then analysed again). NORMAL does
# not fsync at COMMIT: a kill -9 loses nothing (the WAL is in the page cache),
# and a power cut can roll back only the worker's latest transactions, whose
# work it then does again (at least once). The webhook's connections stay FULL,
# and each of their fsyncs also makes every earlier WAL frame durable. Why: a
# FULL commit holds the file's write lock through its fsync (5-25 ms on a busy
# disk), and the webhook's next group commit waited that long behind it.
WORKER_SYNCHRONOUS: Synchronous = "NORMAL"


async def open_store(
    settings: SidecarSettings,
    *,
    worker: bool = False,
    fence: Fence | None = None,
    synchronous: Synchronous = "FULL",
) -> Store:
    """The store ``settings`` name: PostgreSQL when a store URL is set, else the SQLite file.

    ``worker``: for the worker process and one-shot commands (SQLite: one
    connection on its thread). ``synchronous``: SQLite only; how its commits
    sync (the worker process's pipeline: :data:`WORKER_SYNCHRONOUS`).
    ``fence``: PostgreSQL only; the worker lease every transaction must prove.
    """
    location = settings.store_location
    if location is None:
        return await SqliteStore.open(
            settings.database_path, inline=worker, synchronous=synchronous
        )
    return await PostgresStore.open(location, fence=fence)
