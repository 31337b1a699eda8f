"""How the fleet benchmark counts scrapes past their deadline (benchmarks/snmp_fleet.py)."""

from __future__ import annotations

from benchmarks.snmp_fleet import SCRAPE_DEADLINE, Interval


def test_the_deadline_runs_from_when_a_scrape_was_due_not_from_when_it_began():
    # Two answered scrapes, each quick once begun; the second waited 12 s for a slot
    # behind the exporter's backlog. Prometheus, which sent it on time, gave up on it.
    slot = Interval(ok=2, walls=[0.2, 0.3], late=[0.0, 12.0], since_due=[0.2, 12.3])
    assert all(wall < SCRAPE_DEADLINE for wall in slot.walls)
    assert slot.past_deadline == 1


def test_a_failed_scrape_counts_once():
    slot = Interval(ok=1, failed=1, walls=[0.2], since_due=[0.2])
    assert slot.past_deadline == 1
