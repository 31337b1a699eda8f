"""The pipeline's lifetime: what the components opened is closed when it ends, however it ends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ai_sidecar.components import Components
from ai_sidecar.config import SidecarConfig
from ai_sidecar.enrichment.chain import AnalystChain
from ai_sidecar.enrichment.llm.base import LlmReply, LlmRequest
from ai_sidecar.enrichment.local import LocalAnalyst
from ai_sidecar.metrics import create_metrics
from ai_sidecar.pipeline import run_pipeline
from ai_sidecar.priority import NoAnomalyEvidence
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import SqliteStore, Store, StoreError
from tests.ai_sidecar.builders import OfflineContext


class ClosingProvider:
    """An LLM provider that only records whether it was closed."""

    name = "gemini"
    model = "gemini-2.5-flash"
    local = False

    def __init__(self) -> None:
        self.closed = False

    async def complete(self, request: LlmRequest) -> LlmReply:
        raise AssertionError("not called")

    async def close(self) -> None:
        self.closed = True


class StoreThatCannotStart:
    """A store whose incidents cannot be read (a locked or broken file at start)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def active_incidents(self, **_: Any) -> Any:
        raise StoreError("database is locked")


@pytest.mark.parametrize("starts", [True, False], ids=["stops", "fails-to-start"])
async def test_the_providers_are_closed_when_the_pipeline_ends(
    tmp_path: Path, starts: bool
) -> None:
    provider = ClosingProvider()

    def components(*_: Any, **__: Any) -> Components:
        return Components(
            AnalystChain(LocalAnalyst(())),
            OfflineContext(),
            NoAnomalyEvidence(),
            closers=(provider,),
        )

    store = await SqliteStore.open(tmp_path / "scout.db")
    db: Any = store if starts else StoreThatCannotStart(store)
    settings = SidecarSettings(data_dir=tmp_path, webhook_token="t" * 20)
    try:
        async with aiohttp.ClientSession() as session:
            pipeline = run_pipeline(
                db,
                settings,
                SidecarConfig(),
                create_metrics(),
                session,
                asyncio.Event(),
                components,
            )
            if starts:
                async with pipeline:
                    assert not provider.closed
            else:
                with pytest.raises(StoreError):
                    async with pipeline:
                        pass
    finally:
        await store.close()
    assert provider.closed
