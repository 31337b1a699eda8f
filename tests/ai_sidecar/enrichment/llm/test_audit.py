"""StoreAudit: the guard's audit seam, kept in the store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai_sidecar.enrichment.llm.audit import StoreAudit
from ai_sidecar.enrichment.llm.base import LlmAudit, LlmExchange
from ai_sidecar.store import SqliteStore, StoreError
from tests.ai_sidecar.builders import T0
from tests.ai_sidecar.exchanges import exchange


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "scout.db")
    yield opened
    await opened.close()


async def test_exchanges_recorded_through_the_audit_are_kept_in_the_store(
    store: SqliteStore,
) -> None:
    audit: LlmAudit = StoreAudit(store)
    first, second = exchange("inc-1", T0), exchange("inc-2", T0, outcome="timeout")

    await audit.record(first)
    await audit.record(second)

    assert await store.llm_exchanges() == [first, second]


class FullStore:
    async def record_llm_exchange(self, exchange: LlmExchange) -> None:
        raise StoreError("the disk is full")


async def test_a_store_that_cannot_keep_the_record_costs_the_record_not_the_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit = StoreAudit(FullStore())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="ai_sidecar.enrichment.llm.audit"):
        await audit.record(exchange("inc-7", T0))
    [record] = caplog.records
    assert record.getMessage() == "could not keep an LLM exchange in the audit"
    assert (record.incident, record.error) == ("inc-7", "the disk is full")  # type: ignore[attr-defined]
