"""The weekly report over a storm-filled store: how long it takes to make and to render.

Set-up: a week of alerts (``--alerts``, default 50,000 firings) is written to a
real SQLite store the way the sidecar writes it: the webhook ingests each
minute's alerts, the real correlator (default config) folds them into
incidents, the worker saves what changed. The week holds site storms (a
site's switches lose a few dozen to a few hundred ports and hosts within two
minutes, then recover), flapping ports, and single background alerts on
other sites; a share of the incidents is acknowledged, given feedback, and
explained by an LLM (audit rows). No Prometheus: its tables say so.

Measured, each ``--runs`` times (median shown):

- **model**: :func:`ai_sidecar.console.reports.model.build_report` over the
  store (reading the week's incidents with their members, actions, feedback,
  LLM audit; counting);
- **chart**, **HTML**, **PDF**: the renderings the console and the CLI serve;

and, as the peer, the same aggregates (incidents by priority, firings per
alert rule and per target, members, firing alerts received, mean time to
resolve) in one plain SQL query over the same file with SQLite's JSON
functions. The two are checked to agree before any figure is printed. Goal (issue 16): the weekly
report over 50,000 alerts in 5 s or less.

Usage: python benchmarks/console_report.py [--alerts N] [--runs N] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_sidecar.config import CorrelationConfig, SidecarConfig
from ai_sidecar.console.reports.model import Report, build_report
from ai_sidecar.console.reports.period import Period, report_period
from ai_sidecar.console.reports.render import chart_png, report_html, report_pdf
from ai_sidecar.correlation import Correlator
from ai_sidecar.enrichment.llm.base import LlmExchange
from ai_sidecar.models import Alert, Incident
from ai_sidecar.store import IncidentAction, SqliteStore
from ai_sidecar.store.sqlite.incidents import stamp
from benchmarks.store_soak import fold

START = datetime(2026, 11, 2, tzinfo=UTC)
WEEK = timedelta(days=7)
SITES = 400
SWITCHES_PER_SITE = 6
PORTS = 48


def _alert(name: str, at: datetime, severity: str, **labels: str) -> Alert:
    labels = {"alertname": name, "severity": severity, "job": "snmp", **labels}
    key = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return Alert(
        fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
        status="firing",
        labels=labels,
        annotations={"summary": f"{name} on {labels.get('instance', '')}"},
        starts_at=at,
        generator_url="http://prometheus.example.net:9090/graph?g0.expr=up",
    )


def week_of_alerts(total: int, rng: random.Random) -> list[tuple[Alert, datetime | None]]:
    """(firing alert, when it resolves) pairs over the week, in start order."""
    made: list[tuple[Alert, datetime | None]] = []
    while len(made) < total:
        at = START + timedelta(seconds=rng.uniform(0, WEEK.total_seconds() - 7200))
        site = rng.randrange(SITES)
        roll = rng.random()
        if roll < 0.35:  # a site storm: ports and hosts of one site within two minutes
            size = min(total - len(made), int(rng.paretovariate(1.5) * 15))
            ends = at + timedelta(minutes=rng.uniform(5, 180))
            for _ in range(size):
                switch = rng.randrange(SWITCHES_PER_SITE)
                instance = f"sw{switch}.site{site}.example.net"
                when = at + timedelta(seconds=rng.uniform(0, 120))
                if rng.random() < 0.85:
                    alert = _alert(
                        "InterfaceDown",
                        when,
                        "warning",
                        site=f"site{site}",
                        instance=instance,
                        ifName=f"Gi0/{rng.randrange(PORTS)}",
                    )
                else:
                    alert = _alert(
                        "HostDown", when, "critical", site=f"site{site}", instance=instance
                    )
                made.append((alert, ends))
        elif roll < 0.45:  # a flapping port: fires and clears a few times
            instance = f"sw0.site{site}.example.net"
            port = f"Gi0/{rng.randrange(PORTS)}"
            for flap in range(rng.randrange(2, 6)):
                when = at + timedelta(minutes=3 * flap)
                alert = _alert(
                    "InterfaceFlapping",
                    when,
                    "warning",
                    site=f"site{site}",
                    instance=instance,
                    ifName=port,
                )
                made.append((alert, when + timedelta(minutes=1)))
        else:  # background: one alert on its own
            name = rng.choice(["CpuHigh", "DiskFull", "ProbeSlow", "InterfaceErrors"])
            alert = _alert(
                name,
                at,
                "warning",
                site=f"site{site}",
                instance=f"srv{rng.randrange(20)}.site{site}",
            )
            made.append(
                (alert, at + timedelta(minutes=rng.uniform(2, 600)) if rng.random() < 0.9 else None)
            )
    made = made[:total]
    made.sort(key=lambda pair: pair[0].starts_at)
    return made


async def fill(path: Path, total: int, seed: int) -> int:
    """The store for the week; returns how many incidents it holds."""
    rng = random.Random(seed)
    pairs = week_of_alerts(total, rng)
    # Every event (a firing or a resolution) by the minute it arrives in.
    events: dict[int, list[Alert]] = {}
    for alert, ends in pairs:
        minute = int((alert.starts_at - START).total_seconds() // 60)
        events.setdefault(minute, []).append(alert)
        if ends is not None:
            events.setdefault(int((ends - START).total_seconds() // 60) + 1, []).append(
                replace(alert, status="resolved", ends_at=ends)
            )
    store = await SqliteStore.open(path)
    config = CorrelationConfig()
    correlator = Correlator(config)
    incidents: dict[str, Incident] = {}
    try:
        for minute in sorted(events):
            now = START + timedelta(minutes=minute)
            await store.ingest(events[minute], now)
            received = await store.pending(len(events[minute]) + 1)
            if not received:
                continue
            changed = fold(correlator, received, now)
            await store.save_progress(received[-1].seq, list(changed.values()))
            incidents.update(changed)
            if minute % 60 == 0:
                correlator.forget_resolved_before(now - config.flap_window)
        for incident in incidents.values():
            if rng.random() < 0.6:
                await store.record_action(
                    IncidentAction(
                        incident.id,
                        "acknowledge",
                        "noc",
                        "",
                        incident.created_at + timedelta(minutes=rng.uniform(1, 45)),
                    )
                )
            if rng.random() < 0.3:
                await store.add_feedback(
                    incident.id, rng.random() < 0.7, "", incident.updated_at + timedelta(minutes=5)
                )
            if incident.priority in ("P1", "P2"):
                await store.record_llm_exchange(
                    LlmExchange(
                        incident.id,
                        incident.created_at + timedelta(seconds=30),
                        "gemini",
                        "gemini-2.5-flash",
                        "prompt",
                        "{}",
                        1800,
                        300,
                        0.0012,
                        2.1,
                        "ok",
                    )
                )
    finally:
        await store.close()
    return len(incidents)


# The peer: the same aggregates in one SQL statement, with SQLite's JSON functions.
PEER_SQL = """
WITH period AS (SELECT ? AS start, ? AS finish),
counted AS (
    SELECT i.id, i.priority, i.created_at, i.resolved_at, i.status
    FROM incidents AS i, period
    WHERE i.updated_at >= period.start AND i.created_at >= period.start
      AND i.created_at < period.finish
      AND coalesce(json_extract(i.doc, '$.rootCauseReasons[0]'), '') NOT LIKE 'merged into %'
),
members AS (
    SELECT c.id, json_extract(m.doc, '$.labels.alertname') AS alertname,
           coalesce(
               json_extract(m.doc, '$.labels.instance'), json_extract(m.doc, '$.labels.device'),
               json_extract(m.doc, '$.labels.host'), json_extract(m.doc, '$.labels.firewall'), ''
           ) AS target,
           1 + json_extract(m.doc, '$.flapCount') AS firings
    FROM counted AS c JOIN incident_members AS m ON m.incident_id = c.id
)
SELECT 'priority', priority, count(*), NULL FROM counted GROUP BY priority
UNION ALL
SELECT 'rule', alertname, sum(firings), count(DISTINCT id) FROM members GROUP BY alertname
UNION ALL
SELECT 'target', target, sum(firings), count(DISTINCT id) FROM members GROUP BY target
UNION ALL
SELECT 'members', NULL, count(*), sum(firings) FROM members
UNION ALL
SELECT 'received', NULL, count(*), NULL FROM alerts, period
WHERE received_at >= period.start AND received_at < period.finish AND status = 'firing'
UNION ALL
SELECT 'resolve', NULL, count(*),
       avg((julianday(substr(resolved_at, 1, 26)) - julianday(substr(created_at, 1, 26))) * 86400)
FROM counted WHERE status = 'resolved'
"""


def peer(path: Path, start: str, finish: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(PEER_SQL, (start, finish)).fetchall()


def week_period() -> Period:
    return report_period(
        "week",
        ZoneInfo("UTC"),
        now=START + WEEK,
        end_date=(START + WEEK - timedelta(days=1)).date(),
    )


async def week_report(path: Path) -> Report:
    store = await SqliteStore.open(path)
    try:
        return await build_report(
            store, week_period(), SidecarConfig().reports, None, now=START + WEEK
        )
    finally:
        await store.close()


def check_agreement(report: Report, rows: list[tuple[Any, ...]]) -> None:
    """Raise AssertionError unless the report and the peer's rows give the same numbers."""
    by_priority = {name: count for kind, name, count, _ in rows if kind == "priority"}
    assert {p: n for p, n in report.by_priority if n} == by_priority, by_priority
    rules = Counter({name: count for kind, name, count, _ in rows if kind == "rule"})
    ranked = sorted(rules.items(), key=lambda item: (-item[1], item[0]))
    assert [(r.name, r.firings) for r in report.rules] == ranked[: len(report.rules)]
    ((_, _, members, firings),) = [r for r in rows if r[0] == "members"]
    assert (report.alerts, report.firings) == (members, firings)
    ((_, _, received, _),) = [r for r in rows if r[0] == "received"]
    assert report.received == received
    ((_, _, resolved, mean_resolve),) = [r for r in rows if r[0] == "resolve"]
    assert report.resolve.count == resolved
    assert report.resolve.mean is not None
    assert abs(report.resolve.mean.total_seconds() - float(mean_resolve)) < 1


def median_time(run, runs: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scout-report-bench-") as tmp:
        path = Path(tmp) / "scout.db"
        started = time.monotonic()
        incidents = asyncio.run(fill(path, args.alerts, args.seed))
        print(
            f"store: {args.alerts:,} alerts folded into {incidents:,} incidents "
            f"in {time.monotonic() - started:.0f} s; {path.stat().st_size / 1e6:.1f} MB"
        )
        period = week_period()
        model_s, report = median_time(lambda: asyncio.run(week_report(path)), args.runs)
        chart_s, chart = median_time(lambda: chart_png(report), args.runs)
        html_s, html = median_time(lambda: report_html(report, chart), args.runs)
        pdf_s, pdf = median_time(lambda: report_pdf(report, chart), args.runs)
        peer_s, rows = median_time(
            lambda: peer(path, stamp(period.start), stamp(period.end)), args.runs
        )

        # The two must agree before either is timed against the other.
        check_agreement(report, rows)

        scout_total = model_s + chart_s + pdf_s
        print(
            f"weekly report: {report.incidents:,} incidents ({report.merged:,} merged), "
            f"{report.alerts:,} alerts, {report.firings:,} firings, "
            f"compression {report.compression:.1f}"
        )
        print(f"  model (store read + counting)  {model_s * 1000:8.0f} ms")
        print(f"  chart (matplotlib PNG)         {chart_s * 1000:8.0f} ms")
        print(
            f"  HTML                           {html_s * 1000:8.0f} ms  ({len(html) / 1e3:.0f} kB)"
        )
        print(f"  PDF                            {pdf_s * 1000:8.0f} ms  ({len(pdf) / 1e3:.0f} kB)")
        print(f"  model + chart + PDF            {scout_total:8.2f} s (goal <= 5 s)")
        print(f"peer: one SQL query over the same file  {peer_s * 1000:8.0f} ms")
        print(f"model / peer: {model_s / peer_s:.2f}x")
        print(f"model + chart + PDF / peer: {scout_total / peer_s:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
