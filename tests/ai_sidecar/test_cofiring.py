"""Learned co-firing edges: from repeated co-occurrence only, used, shown, kept across restarts."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest

import ai_sidecar.failures as failures_module
import ai_sidecar.worker as worker_module
from ai_sidecar.config import CorrelationConfig, parse_config
from ai_sidecar.correlate import build_snapshot
from ai_sidecar.correlate.cofiring import CoFiring, learn
from ai_sidecar.correlation import Correlator
from ai_sidecar.models import Alert, Incident
from tests.ai_sidecar.builders import T0, alert
from tests.ai_sidecar.test_worker import make_worker, open_db
from tests.ai_sidecar.test_worker_failures import eventually, fail_calls, running

DAY = timedelta(days=1)


def dns(at: timedelta, ends: timedelta | None = None) -> Alert:
    status = "resolved" if ends is not None else "firing"
    return alert(
        "ProbeFailed", at=at, ends=ends, status=status, job="probe_tcp", instance="dns-1:53"
    )


def app(at: timedelta, ends: timedelta | None = None, name: str = "erp") -> Alert:
    status = "resolved" if ends is not None else "firing"
    return alert(
        "ProbeFailed",
        at=at,
        ends=ends,
        status=status,
        job="probe_http",
        instance=f"https://{name}.corp.example/health",
    )


def history(days: int, *, gap: timedelta = timedelta(minutes=3)) -> list[Incident]:
    """The DNS probe failing ``days`` times in the past, the erp check ``gap`` after it each time.

    Folded by a correlator without edges: nothing connects them, so each
    alert is an incident of its own, as in a store before any learning.
    """
    correlator = Correlator(CorrelationConfig())
    found: dict[str, Incident] = {}
    for day in range(days, 0, -1):
        start = -day * DAY
        for item in (
            dns(start),
            app(start + gap),
            dns(start, ends=start + timedelta(minutes=20)),
            app(start + gap, ends=start + timedelta(minutes=21)),
        ):
            change = correlator.apply(item, T0 + start + timedelta(hours=1))
            assert change is not None
            found[change.incident.id] = change.incident
    return list(found.values())


def test_one_or_two_coincidences_make_no_edge_three_do():
    assert len(history(3)) == 6, "the history keeps them apart"
    assert learn(history(1)).edges == 0
    assert learn(history(2)).edges == 0
    learned = learn(history(3))
    assert learned.edges == 1
    [partner] = learned.of(dns(timedelta(0)).fingerprint)
    assert partner.fingerprint == app(timedelta(0)).fingerprint
    assert partner.together == 3
    assert partner.follows, "the DNS probe fires first: it leads"
    assert not partner.leads


def test_a_single_coincidence_is_refused_as_a_setting():
    with pytest.raises(ValueError, match="at least 2"):
        learn(history(3), min_together=1)


def test_alerts_further_apart_than_the_window_never_pair():
    assert learn(history(4, gap=timedelta(minutes=20))).edges == 0
    assert learn(history(4, gap=timedelta(minutes=20)), window=timedelta(minutes=30)).edges == 1


def test_an_alert_that_fires_all_the_time_gains_no_edge_by_chance():
    incidents = history(3)
    correlator = Correlator(CorrelationConfig())
    # The erp check also fails on its own, often: 3 occasions with DNS out of 10.
    for day in range(16, 9, -1):
        start = -day * DAY
        change = correlator.apply(app(start), T0 + start)
        assert change is not None
        incidents.append(change.incident)
    assert learn(incidents).edges == 0
    assert learn(incidents, min_share=0.3).edges == 1


def fold(correlator: Correlator, *alerts: Alert) -> dict[str, Incident]:
    found: dict[str, Incident] = {}
    for item in alerts:
        change = correlator.apply(item, item.starts_at)
        assert change is not None
        found[change.incident.id] = change.incident
        for gone in change.absorbed:
            found.pop(gone.id)
    return found


def test_learned_partners_join_and_the_leader_is_the_root_cause_named_as_learned():
    now = (dns(timedelta(0)), app(timedelta(minutes=4)), app(timedelta(minutes=2), name="shop"))
    apart = fold(Correlator(CorrelationConfig()), *now)
    assert len(apart) == 3, "without history nothing connects them"

    edges = learn(history(3) + history_shop())
    joined = fold(Correlator(CorrelationConfig(), cofiring=edges), *now)
    [incident] = joined.values()
    assert len(incident.members) == 3
    assert incident.root_cause == now[0].fingerprint
    assert incident.root_cause_facts.explains == 2
    [reason] = [r for r in incident.root_cause_reasons if r.startswith("learned from history")]
    assert "statistical dependency" in reason
    assert "fired after ProbeFailed on dns-1:53 within 15m on 3 past occasions" in reason
    assert "and 1 other alert" in reason


def history_shop() -> list[Incident]:
    correlator = Correlator(CorrelationConfig())
    found = []
    for day in range(3, 0, -1):
        start = -day * DAY
        for item in (dns(start), app(start + timedelta(minutes=5), name="shop")):
            change = correlator.apply(item, T0)
            assert change is not None
            found.append(change.incident)
    return found


def test_a_learned_partner_outside_the_window_does_not_join():
    edges = learn(history(3))
    found = fold(
        Correlator(CorrelationConfig(), cofiring=edges), dns(timedelta(0)), app(timedelta(hours=1))
    )
    assert len(found) == 2


async def test_learned_edges_are_rebuilt_from_the_store_after_a_restart(tmp_path):
    db = await open_db(tmp_path)
    await db.save_incidents(history(3))
    await db.close()

    # A fresh process: nothing but the store.
    db = await open_db(tmp_path)
    await db.ingest([dns(timedelta(0)), app(timedelta(minutes=1))], T0 + timedelta(minutes=1))
    worker, _, _ = make_worker(db)
    await worker.start()
    assert await worker.correlate_once() == 2
    [incident] = await db.list_incidents(since=T0 - timedelta(hours=1))
    assert set(incident.members) == {dns(timedelta(0)).fingerprint, app(timedelta(0)).fingerprint}
    await db.close()


async def test_learning_can_be_switched_off(tmp_path):
    db = await open_db(tmp_path)
    await db.save_incidents(history(3))
    await db.ingest([dns(timedelta(0)), app(timedelta(minutes=1))], T0 + timedelta(minutes=1))
    config = parse_config("correlation:\n  cofiring: {enabled: false}\n", "off.yml")
    worker, _, _ = make_worker(db, config=config)
    await worker.start()
    assert await worker.correlate_once() == 2
    assert len(await db.list_incidents(since=T0 - timedelta(hours=1))) == 2
    await db.close()


def test_no_edges_is_the_default():
    assert Correlator(CorrelationConfig()).cofiring == CoFiring()


def test_a_known_dependency_outranks_a_learned_one():
    """History says the probe fires first, but the graph says the link carries it."""
    topology = build_snapshot(
        neighbours=[
            {"instance": "core-1", "local_port": "Gi0/1", "remote_sysname": "sw-1"},
        ],
        targets=[{"job": "probe_icmp", "instance": "ap-1", "upstream": "sw-1"}],
        roots=["core-1"],
    )
    ap = alert("ProbeLossHigh", job="probe_icmp", instance="ap-1")
    other = alert("ProbeLossHigh", at=timedelta(seconds=10), job="probe_icmp", instance="ap-2")
    port = alert("InterfaceErrors", at=timedelta(minutes=5), instance="core-1", ifName="Gi0/1")
    past: list[Incident] = []
    correlator = Correlator(CorrelationConfig())
    for day in range(3, 0, -1):
        for item in (ap, other, port):
            shifted = replace(item, starts_at=item.starts_at - day * DAY)
            change = correlator.apply(shifted, T0)
            assert change is not None
            past.append(change.incident)
    edges = learn(past)
    assert any(p.follows for p in edges.of(ap.fingerprint)), "the probe leads in history"
    found = fold(Correlator(CorrelationConfig(), topology, edges), ap, other, port)
    [incident] = found.values()
    assert incident.root_cause == port.fingerprint


async def test_a_store_failure_while_learning_neither_stops_the_worker_nor_waits_an_hour(
    tmp_path, monkeypatch
):
    """Learning is optional: a failed read leaves correlation going, and is retried soon."""
    db = await open_db(tmp_path)
    await db.save_incidents(history(3))
    calls = fail_calls(monkeypatch, db, "list_incidents", 1, "database is locked")
    # Retried at once after the first failure, so the test need not wait.
    monkeypatch.setattr(failures_module, "STORE_RETRY_FIRST", 0.0)
    worker, _, metrics = make_worker(db)
    await worker.start()
    relearn_failures = {"stage": "relearn"}
    sample = metrics.registry.get_sample_value
    assert sample("scout_sidecar_worker_failures_total", relearn_failures) == 1.0
    assert sample("scout_sidecar_worker_failures_total", {"stage": "correlate"}) is None

    async with running(worker):
        await eventually(lambda: calls[0] >= 2, "learning tried again")
    await db.ingest([dns(timedelta(0)), app(timedelta(minutes=1))], T0 + timedelta(minutes=1))
    assert await worker.correlate_once() == 2
    [incident] = await db.list_incidents(since=T0 - timedelta(hours=1))
    assert len(incident.members) == 2, "the retried learning's edge joins them"
    await db.close()


async def test_a_bug_in_learning_is_logged_once_and_counted_and_correlation_goes_on(
    tmp_path, monkeypatch, caplog
):
    def broken(*_: object) -> CoFiring:
        raise RuntimeError("bug")

    monkeypatch.setattr(worker_module, "learn_with", broken)
    db = await open_db(tmp_path)
    await db.save_incidents(history(3))
    worker, _, metrics = make_worker(db)
    with caplog.at_level(logging.WARNING, logger=worker_module.log.name):
        await worker.start()
        await worker.relearn()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "learning co-firing edges is failing; its work is kept and retried"
    ]
    assert (
        metrics.registry.get_sample_value(
            "scout_sidecar_worker_failures_total", {"stage": "relearn"}
        )
        == 2.0
    )
    await db.ingest([dns(timedelta(0)), app(timedelta(minutes=1))], T0 + timedelta(minutes=1))
    assert await worker.correlate_once() == 2
    await db.close()


def test_a_flapping_alert_does_not_count_one_occasion_twice():
    """Two occasions, the DNS probe flapping in each: two coincidences, no edge."""
    correlator = Correlator(CorrelationConfig())
    found: dict[str, Incident] = {}
    for day in (2, 1):
        start = -day * DAY
        minute = timedelta(minutes=1)
        for item in (
            dns(start),
            app(start + minute),
            dns(start, ends=start + 2 * minute),
            dns(start + 4 * minute),  # the same probe again: the flap
            dns(start + 4 * minute, ends=start + 6 * minute),
            app(start + minute, ends=start + 7 * minute),
        ):
            change = correlator.apply(item, T0 + start + timedelta(hours=1))
            assert change is not None
            found[change.incident.id] = change.incident
    episodes = [
        (m.first_starts_at, m.starts_at)
        for i in found.values()
        for m in i.members.values()
        if m.fingerprint == dns(timedelta(0)).fingerprint
    ]
    assert all(first != latest for first, latest in episodes), "the probe flapped"
    assert learn(found.values()).edges == 0
    assert learn(found.values(), min_together=2).edges == 1


def test_a_storm_repeated_teaches_no_edges_between_its_alerts():
    """300 devices down together on three days: the graph's business, not 45,000 edges."""
    storms: list[Incident] = []
    for day in (3, 2, 1):
        correlator = Correlator(CorrelationConfig())
        for host in range(300):
            at = -day * DAY + timedelta(seconds=host % 60)
            correlator.apply(alert("TargetDown", at=at, instance=f"host-{host}"), T0)
        storms.extend(correlator.open_incidents())
    assert sum(len(i.members) for i in storms) == 900
    assert learn(storms).edges == 0
    assert learn(storms, max_burst=1000).edges == 300 * 299 // 2
