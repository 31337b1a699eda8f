"""The incident-list benchmark in small: its incidents and every case it measures are right."""

from __future__ import annotations

from pathlib import Path

from ai_sidecar.store import IncidentQuery, SqliteStore
from benchmarks.console_list import (
    CASES,
    PEER,
    build_incidents,
    deep_page,
    fill_store,
    measure,
)


async def test_the_benchmark_store_and_cases_are_what_it_says(tmp_path: Path) -> None:
    incidents = build_incidents(300)
    assert len({i.id for i in incidents}) == 300
    assert any(i.status == "open" for i in incidents)
    assert any(i.analysis is not None for i in incidents)
    path = tmp_path / "data" / "scout.db"
    await fill_store(path, incidents)
    store = await SqliteStore.open(path)
    try:
        page = await store.incident_page(IncidentQuery(), limit=50)
        assert page.total == 300
        assert page.rows[0].id == max(incidents, key=lambda i: i.created_at).id
        searched = await store.incident_page(IncidentQuery(words=("gi1/0/7",)), limit=50)
        assert 0 < searched.total < 300
    finally:
        await store.close()

    results = await measure(tmp_path / "data", requests=5, incidents=300)

    assert deep_page(300) == ("console: deep page (offset 150)", "/console/incidents?page=4")
    assert set(results) == {name for name, _ in (*CASES, deep_page(300), PEER)}
    for name, (p50, p95, size) in results.items():
        assert 0 < p50 <= p95, name
        assert size > 0, name
