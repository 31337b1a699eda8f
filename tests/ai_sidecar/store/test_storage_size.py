"""What the SQLite store costs on disk: one compressed text per enriched copy, a bounded WAL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from ai_sidecar.components import WORKER_SYNCHRONOUS
from ai_sidecar.models import Alert
from ai_sidecar.store import OutboxCopy, OutboxPlan, SqliteStore
from ai_sidecar.store.sqlite import engine, transactions
from ai_sidecar.store.sqlite.store import QUICK_ROWS
from tests.ai_sidecar.builders import T0, alert

PEERS = ("http://am-a:9093", "http://am-b:9093", "http://am-c:9093")
NOW = 1_790_000_000.0


def _wal(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


@contextlib.asynccontextmanager
async def _store(path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(path)
    try:
        yield store
    finally:
        await store.close()


def _copy(member: str, state: str = "firing") -> OutboxCopy:
    analysis = "The uplink of sw1 lost its carrier; everything behind it is unreachable. " * 8
    return OutboxCopy(
        fingerprint=f"copy-{member}",
        incident_id="inc-1",
        member=member,
        state="resolved" if state == "resolved" else "firing",
        alert=json.dumps(
            {"labels": {"instance": member}, "annotations": {"ai_summary": analysis}},
            sort_keys=True,
        ),
        raw=json.dumps({"labels": {"instance": member}, "annotations": {}}, sort_keys=True),
        ends_at=NOW if state == "resolved" else None,
    )


def _stored_text(path: Path) -> list[tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT fingerprint, length(alert) + length(raw) FROM return_trip_copies"
            " ORDER BY fingerprint"
        ).fetchall()
    return [(fingerprint, int(size)) for fingerprint, size in rows]


async def test_a_copy_posted_to_every_peer_keeps_one_compressed_text(tmp_path: Path) -> None:
    path = tmp_path / "scout.db"
    copies = tuple(_copy(f"m{n}") for n in range(3))
    async with _store(path) as store:
        plan = OutboxPlan("inc-1", frozenset(c.member for c in copies), copies)
        await store.enqueue_posts([plan], PEERS, now=NOW, repeat_for=300)
        due = await store.due_posts(PEERS, before=NOW)
        for peer in PEERS:
            rows = [row for row in due if row.peer == peer]
            await store.complete_accepted(
                peer, rows, now=NOW, firing_due=NOW + 60, resolved_due=NOW + 60
            )
        posts = await store.list_posts()
    # Every peer still reads the whole text, as it was enqueued.
    assert len(posts) == len(PEERS) * len(copies)
    assert {(row.fingerprint, row.alert, row.raw) for row in posts} == {
        (c.fingerprint, c.alert, c.raw) for c in copies
    }
    stored = _stored_text(path)
    assert [fingerprint for fingerprint, _ in stored] == [c.fingerprint for c in copies]
    for (_, size), copy in zip(stored, copies, strict=True):
        assert size < (len(copy.alert) + len(copy.raw)) / 2


async def test_a_copys_text_goes_with_its_last_peer_row(tmp_path: Path) -> None:
    path = tmp_path / "scout.db"
    firing, resolved = _copy("m1"), _copy("m1", "resolved")
    async with _store(path) as store:
        plan = OutboxPlan("inc-1", frozenset({"m1"}), (firing,))
        await store.enqueue_posts([plan], PEERS, now=NOW, repeat_for=300)
        # One peer refuses it for good; the others still need the text.
        [refused] = [row for row in await store.list_posts() if row.peer == PEERS[0]]
        await store.complete_refused(refused)
        assert [f for f, _ in _stored_text(path)] == ["copy-m1"]
        # The resolution is posted until its repeats are over, then deleted.
        plan = OutboxPlan("inc-1", frozenset({"m1"}), (resolved,))
        await store.enqueue_posts([plan], PEERS, now=NOW, repeat_for=0)
        for peer in PEERS[1:]:
            rows = [row for row in await store.list_posts() if row.peer == peer]
            await store.complete_accepted(
                peer, rows, now=NOW + 1, firing_due=NOW + 60, resolved_due=NOW + 60
            )
        assert await store.list_posts() == []
    assert _stored_text(path) == []


async def test_the_wal_is_emptied_once_the_writer_is_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "WAL_IDLE_TRUNCATE", 0.2)
    path = tmp_path / "scout.db"
    async with _store(path) as store:
        for batch in range(40):
            alerts = [
                alert("InterfaceDown", instance=f"sw{batch}-{n}", at=timedelta(seconds=n))
                for n in range(50)
            ]
            await store.ingest(alerts, T0)
        assert _wal(path) > 100_000
        for _ in range(50):
            if _wal(path) == 0:
                break
            await asyncio.sleep(0.1)
        assert _wal(path) == 0
        # Still a working store.
        assert await store.alert_count() == 2000


def _large_alerts(batch: int, count: int) -> list[Alert]:
    """``count`` alerts of about 4 kB each (a long description), named after ``batch``."""
    return [
        alert(
            "InterfaceDown",
            instance=f"sw{batch}-{n}",
            at=timedelta(seconds=n),
            description="x" * 4000,
        )
        for n in range(count)
    ]


async def test_a_wal_grown_behind_a_long_reader_is_cut_back_to_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No idle truncation here: only the size limit is under test.
    monkeypatch.setattr(engine, "WAL_IDLE_TRUNCATE", 3600.0)
    path = tmp_path / "scout.db"
    async with _store(path) as store:
        reader = sqlite3.connect(path)
        try:
            # A reader in an old snapshot keeps every checkpoint from restarting the WAL.
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM alerts").fetchall()
            for batch in range(30):
                await store.ingest(_large_alerts(batch, 100), T0)
            grown = _wal(path)
            reader.execute("COMMIT")
        finally:
            reader.close()
        # The webhook's small commits (the quick writer) leave checkpoints to
        # the other connections, so an acknowledgement never waits for one...
        for batch in range(3):
            await store.ingest(
                [alert("InterfaceDown", instance=f"late{batch}", at=timedelta(seconds=batch))], T0
            )
        still = _wal(path)
        # ...and a commit of the writer thread checkpoints the oversized WAL;
        # the next starts it over, cut back.
        for batch in range(2):
            await store.ingest(
                [
                    alert("InterfaceDown", instance=f"bulk{batch}-{n}", at=timedelta(seconds=n))
                    for n in range(QUICK_ROWS + 1)
                ],
                T0,
            )
        after = _wal(path)
    assert grown > 2 * transactions.WAL_SIZE_LIMIT
    assert still >= grown
    assert after <= transactions.WAL_SIZE_LIMIT


async def test_the_wal_stays_bounded_under_a_sustained_write_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The production shape with never an idle moment: the webhook's quick
    # writes (which leave checkpoints to the others) and the worker process's
    # own connection, folding what arrived and moving its cursor. The worker's
    # commits checkpoint the WAL, so it is written again from its start instead
    # of growing with everything ever written.
    monkeypatch.setattr(engine, "WAL_IDLE_TRUNCATE", 3600.0)
    path = tmp_path / "scout.db"
    largest = 0
    async with _store(path) as webhook:
        worker = await SqliteStore.open(path, inline=True, synchronous=WORKER_SYNCHRONOUS)
        try:
            for batch in range(80):
                await webhook.ingest(_large_alerts(batch, QUICK_ROWS), T0)
                largest = max(largest, _wal(path))
                pending = await worker.pending(10 * QUICK_ROWS)
                await worker.save_progress(pending[-1].seq, [])
                largest = max(largest, _wal(path))
            assert await worker.pending(1) == []
        finally:
            await worker.close()
    written = path.stat().st_size
    assert written > 3 * transactions.WAL_SIZE_LIMIT
    assert largest <= transactions.WAL_SIZE_LIMIT
