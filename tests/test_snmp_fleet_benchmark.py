"""What benchmarks/snmp_fleet.py counts: deadlines, requests, the collector, a backlog."""

from __future__ import annotations

from benchmarks.snmp_fleet import (
    SCOUT_PDUS,
    SCOUT_RETRIES,
    SCRAPE_DEADLINE,
    FleetRun,
    Interval,
    behind,
    gc_over_run,
    self_metric,
)


def test_the_deadline_runs_from_when_a_scrape_was_due_not_from_when_it_began():
    # Two answered scrapes, each quick once begun; the second waited 12 s for a slot
    # behind the exporter's backlog. Prometheus, which sent it on time, gave up on it.
    slot = Interval(ok=2, walls=[0.2, 0.3], late=[0.0, 12.0], since_due=[0.2, 12.3])
    assert all(wall < SCRAPE_DEADLINE for wall in slot.walls)
    assert slot.past_deadline == 1


def test_a_failed_scrape_counts_once():
    slot = Interval(ok=1, failed=1, walls=[0.2], since_due=[0.2])
    assert slot.past_deadline == 1


def test_requests_per_scrape_are_read_from_scoutsself_metrics():
    body = "# TYPE scout_snmp_pdus_sent gauge\nscout_snmp_pdus_sent 18\nscout_snmp_retries 2\n"
    assert self_metric(body, SCOUT_PDUS) == 18
    assert self_metric(body, SCOUT_RETRIES) == 2
    assert self_metric("scout_snmp_module_success 1\n", SCOUT_PDUS) == 0


def test_the_collectors_work_is_counted_over_the_run_only():
    before = {"seconds": [1.0, 0.5, 2.0], "collections": [10, 1, 1], "longest": [0.1, 0.2, 1.5]}
    after = {"seconds": [3.0, 0.5, 2.0], "collections": [15, 1, 1], "longest": [0.3, 0.2, 1.5]}
    assert gc_over_run(before, after) == {
        "seconds": [2.0, 0.0, 0.0],
        "collections": [5, 0, 0],
        "longest": [0.3, 0.2, 1.5],
    }
    assert gc_over_run(None, after) is None


def test_a_run_whose_scrapes_spill_into_later_intervals_is_behind():
    on_time = FleetRun("scout", 1, 60.0, [Interval(), Interval()], elapsed=121.0)
    spilled = FleetRun("scout", 1, 60.0, [Interval(), Interval()], elapsed=363.0)
    assert not behind(on_time)
    assert behind(spilled)
