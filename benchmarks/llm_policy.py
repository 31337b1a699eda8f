"""How often the hybrid policy lets an alert storm reach the LLM, and what a call adds to a page.

Part 1, calls (issue 13: at least 95 % of alerts need no LLM call, at most one
call per incident). Replayed storms from :mod:`benchmarks.storms` (every
scenario, seeds 0, 1, ... until ``--alerts`` alerts, each storm on a day of
its own) go through the real worker with the production components
(:func:`ai_sidecar.components.build_components`): correlation, priority, the
local analyst, and the Gemini analyst behind its policy, guard and audit,
talking through ``google-genai`` to a fake Gemini server on 127.0.0.1. The
worker analyses after every delivery, unpaced: every version of every
incident is offered to the analyst, the worst case for the policy. Printed:
alerts, incidents, LLM calls, the share of alerts that needed no call, calls
per incident (mean and the most any incident got), and beside it the peer:
the calls an analyst without the policy would make (one per analysis).

Part 2, latency (issue 13: p95 within the enriched route's group_wait + the
LLM's latency + 2 s). Real Alertmanager with the shipped routes (timings
shortened as the notification tests do), the sidecar as a process, a Slack
sink, and the fake Gemini answering each call after ``--llm-delay`` seconds.
``--incidents`` separate P2 incidents are posted to Alertmanager a few
seconds apart; the time from each post to its enriched Slack message is
measured, with the LLM and, side by side, with the local analyst alone.

Nothing is asserted; the figures go to ``docs/benchmarks.md``.

Usage: python benchmarks/llm_policy.py [--alerts N] [--incidents N]
       [--llm-delay S] [--skip-calls] [--skip-latency]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from ai_sidecar.components import build_components
from ai_sidecar.config import SidecarConfig, parse_config
from ai_sidecar.enrichment.llm.policy import LlmPolicy
from ai_sidecar.metrics import create_metrics
from ai_sidecar.models import Alert, Incident
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import SqliteStore
from ai_sidecar.worker import Worker
from benchmarks.common import raise_interrupt
from benchmarks.storms.alertmanager import at_time
from benchmarks.storms.scenarios import SCENARIOS, Storm, generate
from scripts.localstack import free_port
from tests.peers.alertmanager import Alertmanager, Timings, postable, render_config
from tests.peers.llm import Answer, FakeGemini
from tests.peers.notify import SlackSink, SmtpSink, slack_text
from tests.peers.sidecar import start_sidecar

# A valid answer for any incident: the policy, not the answer, is measured here.
ANSWER = json.dumps(
    {
        "summary": "Benchmark analysis",
        "root_cause": "The first failing element",
        "impact": "Services behind it",
        "actions": ["Check the element"],
        "confidence": 0.7,
        "false_positive_likelihood": 0.1,
        "evidence": [],
        "false_positives": [],
    }
)
KEY_ENV = "GEMINI_API_KEY"
START = at_time(0.0)
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class CallCounts:
    alerts: int
    incidents: int
    calls: int
    analyses: int
    most_calls: int
    called: int
    declined: Counter[str]

    @property
    def no_call_share(self) -> float:
        return 1.0 - self.calls / self.alerts if self.alerts else 1.0


def progress(message: str) -> None:
    sys.stderr.write(f"\r\x1b[K{message}")
    sys.stderr.flush()


def storms(wanted: int) -> list[Storm]:
    """Every scenario in turn, seed after seed, until ``wanted`` alerts were delivered."""
    chosen: list[Storm] = []
    total = 0
    seed = 0
    while total < wanted:
        for name in SCENARIOS:
            storm = generate(name, seed)
            chosen.append(storm)
            total += sum(len(d.alerts) for d in storm.deliveries)
            progress(f"generating storms: {len(chosen)} storms, {total:,} alerts")
            if total >= wanted:
                break
        seed += 1
    sys.stderr.write("\n")
    return chosen


def benchmark_config(base_url: str) -> SidecarConfig:
    """The network preset, Gemini through the fake, and no budget cap: the policy alone decides."""
    return parse_config(
        f"""
llm:
  provider: gemini
  base_url: {base_url}
  timeout: 10s
  budget: {{requests_per_day: 0, requests_per_minute: 0, tokens_per_minute: 0}}
""",
        "benchmark",
    )


class CountingSink:
    """The return trip's seam: counts what would be posted back."""

    def __init__(self) -> None:
        self.scheduled = 0

    async def schedule(self, incidents: list[Incident]) -> None:
        self.scheduled += len(incidents)


async def replay_calls(chosen: list[Storm], directory: Path) -> CallCounts:
    with FakeGemini(default=Answer(ANSWER)) as fake:
        os.environ.setdefault(KEY_ENV, "benchmark-key")
        config = benchmark_config(fake.base_url)
        settings = SidecarSettings(data_dir=directory)
        db = await SqliteStore.open(directory / "scout.db")
        metrics = create_metrics()
        now = [START]
        alerts = 0
        try:
            async with aiohttp.ClientSession() as session:
                components = build_components(config, settings, session, db=db, metrics=metrics)
                # The policy's clock follows the storm's own time: replayed in seconds,
                # a storm would otherwise fit inside one reanalysis interval.
                [policy] = [r for r in components.reloadable if isinstance(r, LlmPolicy)]
                policy._clock = lambda: (now[0] - START).total_seconds()
                worker = Worker(
                    db,
                    config,
                    components,
                    CountingSink(),
                    metrics.worker,
                    asyncio.Event(),
                    clock=lambda: now[0],
                )
                await worker.start()
                for day, storm in enumerate(chosen):
                    for delivery in storm.deliveries:
                        shift = timedelta(seconds=day * DAY)
                        now[0] = at_time(delivery.at) + shift
                        batch = [_shifted(alert, shift) for alert in delivery.alerts]
                        await db.ingest(batch, now[0])
                        alerts += len(batch)
                        while await worker.correlate_once():
                            pass
                        await worker.analyse_pending()
                    # The storm is over: the calls the policy deferred come due.
                    now[0] += config.llm.policy.reanalysis_interval
                    await worker.analyse_pending()
                    progress(f"replaying: storm {day + 1}/{len(chosen)}, {alerts:,} alerts")
                sys.stderr.write("\n")
                incidents = await db.list_incidents()
                exchanges = await db.llm_exchanges()
                for closer in components.closers:
                    await closer.close()
        finally:
            await db.close()
    per_incident = Counter(e.incident_id for e in exchanges)
    registry = metrics.registry
    analyses = registry.get_sample_value(
        "scout_sidecar_analysis_duration_seconds_count", {"analyst": "gemini"}
    )
    declined: Counter[str] = Counter()
    for family in registry.collect():
        if family.name == "scout_llm_fallbacks":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:
                    declined[sample.labels["reason"]] = int(sample.value)
    return CallCounts(
        alerts=alerts,
        incidents=len(incidents),
        calls=len(fake.requests),
        analyses=int(analyses or 0),
        most_calls=max(per_incident.values(), default=0),
        called=len(per_incident),
        declined=declined,
    )


def _shifted(alert: Alert, by: timedelta) -> Alert:
    return replace(
        alert,
        starts_at=alert.starts_at + by,
        ends_at=None if alert.ends_at is None else alert.ends_at + by,
    )


def report_calls(counts: CallCounts) -> None:
    per_incident = counts.calls / counts.incidents if counts.incidents else 0.0
    peer = counts.analyses
    print(
        f"\nCalls: {counts.alerts:,} alerts, {counts.incidents:,} incidents, "
        f"{counts.calls:,} LLM calls"
    )
    print(f"  alerts that needed no LLM call: {counts.no_call_share:.1%} (goal >= 95%)")
    print(f"  calls per incident: {per_incident:.2f} mean, {counts.most_calls} at most (goal <= 1)")
    ratio = counts.calls / peer if peer else 0.0
    print(
        f"  peer (an LLM analyst without the policy, one call per analysis): {peer:,} calls; "
        f"policy / peer = {ratio:.3f}"
    )
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in counts.declined.most_common())
    print(f"  local analysis instead, by reason: {reasons or 'none'}")


# The notification tests' timings: the enriched route waits 5 s for an incident's
# alerts to gather (10 s as shipped); the raw, fail-open route 60 s here, so it
# never fires during a measurement.
TIMINGS = Timings(enriched_wait="5s", enriched_interval="1s", fail_open="60s", raw_interval="2s")
ENRICHED_WAIT = 5.0
SIDECAR_CONFIG = """\
return_trip:
  keepalive: 20s
  repost_interval: 5s
"""


def latency_storm(index: int) -> list[dict[str, object]]:
    """One P2 incident of its own: a WAN link down at site ``index`` and two probes behind it."""
    common = {"site": f"site-{index:03d}", "job": "snmp", "severity": "critical"}
    router = f"rtr-{index:03d}"
    return [
        postable(
            {"alertname": "LinkDown", "instance": router, "interface": "wan0", **common},
            {"summary": f"WAN uplink wan0 on {router} is down"},
        ),
        *(
            postable(
                {"alertname": "ProbeFailed", "instance": f"{name}-{index:03d}", **common},
                {"summary": f"{name}-{index:03d} does not answer"},
            )
            for name in ("web", "mail")
        ),
    ]


def notification_latencies(
    directory: Path, incidents: int, llm_delay: float | None
) -> tuple[list[float], list[float]]:
    """Seconds from each incident's post to Alertmanager to its first enriched Slack
    message, and to the first with the model's analysis (none without an LLM).

    ``llm_delay`` None: the local analyst alone; else Gemini (the fake) answering
    after that many seconds, with the shape cache off so every incident calls.
    """
    with (
        SlackSink() as slack,
        SmtpSink() as smtp,
        FakeGemini(default=Answer(ANSWER, delay=llm_delay or 0.0)) as gemini,
    ):
        sidecar_port = free_port()
        am_config = render_config(
            directory,
            sidecar_url=f"http://127.0.0.1:{sidecar_port}",
            slack_url=slack.url,
            smtp_smarthost=smtp.smarthost,
            timings=TIMINGS,
        )
        config_text = SIDECAR_CONFIG
        if llm_delay is not None:
            os.environ[KEY_ENV] = "benchmark-key"
            config_text += (
                f"llm:\n  provider: gemini\n  base_url: {gemini.base_url}\n"
                "  policy: {cache_ttl: 0s}\n"
                "  budget: {requests_per_day: 0, requests_per_minute: 0}\n"
            )
        with Alertmanager(directory, am_config) as am:
            sidecar = start_sidecar(
                directory, sidecar_port, [am.url], config_text, log_level="info"
            )
            try:
                posted: dict[int, float] = {}
                arrived: dict[int, float] = {}
                answered: dict[int, float] = {}
                done = threading.Event()
                watcher = threading.Thread(
                    target=watch_slack, args=(slack, posted, arrived, answered, done), daemon=True
                )
                watcher.start()
                for index in range(incidents):
                    posted[index] = time.monotonic()
                    am.post(latency_storm(index))
                    progress(
                        f"latency ({'local' if llm_delay is None else 'llm'}): "
                        f"posted {index + 1}/{incidents}"
                    )
                    time.sleep(2.0)
                deadline = time.monotonic() + 120
                wanted = arrived if llm_delay is None else answered
                while len(wanted) < incidents and time.monotonic() < deadline:
                    time.sleep(0.1)
                done.set()
                watcher.join()
            finally:
                sidecar.service.stop(grace=5)
        sys.stderr.write("\n")
        if llm_delay is not None and len(gemini.requests) < incidents:
            print(f"  note: only {len(gemini.requests)} LLM calls for {incidents} incidents")
    missing = incidents - len(arrived)
    if missing:
        print(f"  {missing} incidents had no enriched message within 120 s")
    return (
        sorted(arrived[i] - posted[i] for i in arrived),
        sorted(answered[i] - posted[i] for i in answered),
    )


def watch_slack(
    slack: SlackSink,
    posted: dict[int, float],
    arrived: dict[int, float],
    answered: dict[int, float],
    done: threading.Event,
) -> None:
    """Note when each posted incident's first enriched message reaches Slack (any
    member), and the first one with the model's analysis in it."""
    seen = 0
    while not done.is_set():
        messages = slack.messages()
        now = time.monotonic()
        for message in messages[seen:]:
            text = slack_text(message)
            if "[FIRING]" not in text or "(not analysed by Scout)" in text:
                continue
            for index in list(posted):
                if not any(f"{name}-{index:03d}" in text for name in ("rtr", "web", "mail")):
                    continue
                arrived.setdefault(index, now)
                if "Benchmark analysis" in text:
                    answered.setdefault(index, now)
        seen = len(messages)
        time.sleep(0.02)


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile of sorted ``values``."""
    if not values:
        return float("nan")
    return values[max(0, math.ceil(share * len(values)) - 1)]


def report_latency(
    local: list[float], llm: list[float], words: list[float], llm_delay: float
) -> None:
    bound = ENRICHED_WAIT + llm_delay + 2.0
    print(f"\nLatency, post to Alertmanager -> enriched Slack message ({len(llm)} incidents):")
    rows = (
        ("local analyst only", local),
        (f"LLM answering in {llm_delay:g} s", llm),
        ("  ... the LLM's analysis", words),
    )
    for name, values in rows:
        p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
        print(f"  {name:28} p50 {p50:5.2f} s, p95 {p95:5.2f} s")
    added = percentile(llm, 0.95) - percentile(local, 0.95)
    print(
        f"  added by the LLM at p95: {added:.2f} s; p95 with the LLM "
        f"{percentile(llm, 0.95):.2f} s, its analysis {percentile(words, 0.95):.2f} s; "
        f"goal group_wait + LLM + 2 s = {bound:.1f} s"
    )


def main() -> None:
    signal.signal(signal.SIGTERM, raise_interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=2_000, help="storm alerts (default 2000)")
    parser.add_argument("--incidents", type=int, default=20, help="latency incidents (20)")
    parser.add_argument("--llm-delay", type=float, default=1.0, help="fake LLM latency (1 s)")
    parser.add_argument("--skip-calls", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    if not args.skip_calls:
        chosen = storms(args.alerts)
        with tempfile.TemporaryDirectory(prefix="scout-llm-bench-") as directory:
            started = time.monotonic()
            counts = asyncio.run(replay_calls(chosen, Path(directory)))
            report_calls(counts)
            print(f"  replay took {time.monotonic() - started:.1f} s")
    if not args.skip_latency:
        with tempfile.TemporaryDirectory(prefix="scout-llm-latency-") as directory:
            local_dir, llm_dir = Path(directory, "local"), Path(directory, "llm")
            local_dir.mkdir()
            llm_dir.mkdir()
            local, _ = notification_latencies(local_dir, args.incidents, None)
            llm, words = notification_latencies(llm_dir, args.incidents, args.llm_delay)
        report_latency(local, llm, words, args.llm_delay)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
