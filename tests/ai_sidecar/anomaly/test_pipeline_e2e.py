"""End to end with real parts: weeks of history in Prometheus, training in its own
process, the scoring loop, and Prometheus scraping the scores back from /metrics.

Prometheus holds 14 days and 2 hours of a 5-minute gauge for three hosts
(a daily cycle plus noise), backfilled with promtool one file per day; h1
carries an injected anomaly 50 to 20 minutes before the data ends. The model
is trained (a spawned training process, through the real PromQL API) on
everything up to two hours before the end; the scoring loop then steps
through those two hours one point per cycle, each cycle's numbers are scraped
by the same Prometheus, and the test reads them back with PromQL.

That Prometheus also evaluates the shipped alert rule (AnomalyDetected), with
its `for: 5m` and `keep_firing_for` scaled down 20 times (the rule's own
timing is promtool's to test, in prometheus/tests/anomaly.rules.test.yml; the
expression is the shipped one, checked here). Its clock is the wall clock, so
from the anomaly's onset the loop moves at one cycle every 3 s, as a 1-minute
signal does in real life scaled the same way, until the alert fires: the rule
must see the score stay red for five cycles.

The CLI's ``anomaly train``, ``models`` and ``rollback`` run against the same
Prometheus. The sidecar app started with ``anomaly.enabled`` trains and
exports on its own.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import pty
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml

from ai_sidecar.anomaly.registry import ModelRegistry
from ai_sidecar.anomaly.scoring import AnomalyScorer, build_families
from ai_sidecar.anomaly.service import ProcessTrainer
from ai_sidecar.app import create_app
from ai_sidecar.config import AnomalyConfig, SidecarConfig
from ai_sidecar.keys import METRICS
from ai_sidecar.metrics import ForwardedMetrics
from ai_sidecar.promql import HttpPromQLClient
from ai_sidecar.settings import SidecarSettings
from tests.conftest import free_port
from tests.peers.promql import Sample, backfill, start_prometheus

# The alert test waits out the rule's scaled `for` in real time.
pytestmark = [pytest.mark.peers, pytest.mark.waits]

METRIC = "scout_e2e_load"
STEP = 300
HOSTS = ("h1", "h2", "h3")
END = (int(time.time()) - 15 * 60) // STEP * STEP
TRAINED_TO = END - 2 * 3600
BEGIN = TRAINED_TO - 14 * 86_400
ANOMALY = (END - 50 * 60, END - 20 * 60)
SHIPPED_RULES = Path(__file__).resolve().parents[3] / "prometheus" / "rules" / "anomaly.rules.yml"
# The shipped rule's `for: 5m` in real time made this test wait six minutes;
# its copy here waits 20 times less, and every wall-clock duration with it.
TIME_SCALE = 20
# Wall seconds per cycle from the anomaly's onset until the alert fires: a
# 1-minute signal scaled down, so the scaled `for` spans five cycles.
PACE = 60.0 / TIME_SCALE
ALERT = 'ALERTS{alertname="AnomalyDetected"}'
SIGNAL = {
    "name": "load",
    "query": METRIC,
    "step": "5m",
    "history": "14d",
    "keep_labels": ["job", "instance"],
}


def normal_value(host: int, at: int, rng: np.random.Generator) -> float:
    return 100 + 20 * host + 30 * math.sin(2 * math.pi * at / 86_400) + rng.normal(0, 2)


def values() -> dict[str, dict[int, float]]:
    """Every host's value at every step (seeded); h1 is 80 higher during ANOMALY."""
    rng = np.random.default_rng(12)
    found: dict[str, dict[int, float]] = {host: {} for host in HOSTS}
    for at in range(BEGIN, END + 1, STEP):
        for n, host in enumerate(HOSTS):
            value = normal_value(n, at, rng)
            if host == "h1" and ANOMALY[0] <= at <= ANOMALY[1]:
                value += 80
            found[host][at] = value
    return found


VALUES = values()


def samples() -> Iterator[Sample]:
    for host, points in VALUES.items():
        for at, value in points.items():
            yield METRIC, {"job": "e2e", "instance": host}, value, at


def query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return list(json.load(response)["data"]["result"])


def anomaly_config(**extra: Any) -> AnomalyConfig:
    return AnomalyConfig.model_validate(
        {
            "enabled": True,
            "score_interval": "5m",
            "query_delay": "0s",
            "signals": [SIGNAL],
            # The daily refit six hours after the replayed day's end: at the
            # default 03:00 a run between 03:15 and 05:15 would refit mid-test.
            "retrain": {"at": time.strftime("%H:%M", time.gmtime(END + 6 * 3600))},
            **extra,
        },
        strict=False,
    )


@pytest.fixture(scope="module")
def history_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("e2e")
    backfill(directory, samples())
    return directory


def scaled_rules(directory: Path) -> Path:
    """The shipped anomaly rules with `for` and `keep_firing_for` divided by
    TIME_SCALE; fails if the rule no longer waits 5 minutes (this test's pacing
    is built on it)."""
    document = yaml.safe_load(SHIPPED_RULES.read_text())
    (rule,) = [
        rule
        for group in document["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "AnomalyDetected"
    ]
    assert (rule["for"], rule["keep_firing_for"]) == ("5m", "15m")
    rule["for"] = f"{5 * 60 // TIME_SCALE}s"
    rule["keep_firing_for"] = f"{15 * 60 // TIME_SCALE}s"
    path = directory / "anomaly.rules.yml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def prometheus_with(history_dir: Path, tmp_path: Path):
    """Start Prometheus on a copy of the history, scraping the given sidecar targets."""
    started = []

    def start(targets: list[str]) -> str:
        directory = tmp_path / "prometheus-run"
        directory.mkdir()
        subprocess.run(
            ["cp", "-r", str(history_dir / "prometheus"), str(directory / "prometheus")],
            check=True,
        )
        scrape = [
            {
                "job_name": "scout-sidecar",
                "honor_labels": True,
                "scrape_interval": "1s",
                "static_configs": [{"targets": targets}],
            }
        ]
        service, url = start_prometheus(
            directory,
            scrape if targets else (),
            rule_files=[scaled_rules(directory)],
            evaluation_interval="1s",
        )
        service.start()
        started.append(service)
        service.wait_ready()
        return url

    yield start
    for service in started:
        service.stop(grace=5)


async def scraped_after(base: str, moment: float) -> None:
    """Wait until Prometheus has scraped the sidecar after ``moment`` (Unix seconds)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(query, base, "timestamp(scout_anomaly_model_version)")
        if found and float(found[0]["value"][1]) > moment:
            return
        await asyncio.sleep(0.1)
    pytest.fail("Prometheus did not scrape the sidecar")


async def alerts_over(base: str, seconds: float) -> set[tuple[str, str]]:
    """AnomalyDetected's (instance, state) pairs seen within ``seconds``; stops once h1 fires."""
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + seconds
    while True:
        rows = await asyncio.to_thread(query, base, ALERT)
        seen |= {(row["metric"]["instance"], row["metric"]["alertstate"]) for row in rows}
        if ("h1", "firing") in seen or time.monotonic() >= deadline:
            return seen
        await asyncio.sleep(1.0)


# Training (a spawned process, over a minute on a loaded machine), then the
# scaled `for`: five cycles of PACE seconds.
@pytest.mark.timeout(600)
async def test_injected_anomaly_scores_high_fires_the_alert_and_normal_points_stay_inside_the_bands(
    tmp_path, aiohttp_server, prometheus_with
):
    port = free_port()
    base = prometheus_with([f"127.0.0.1:{port}"])
    anomaly = anomaly_config()
    settings = SidecarSettings(data_dir=tmp_path / "data", prometheus_url=base)
    app = create_app(settings, SidecarConfig())
    exported = ForwardedMetrics(build_families([], 0.0))
    app[METRICS].registry.register(exported)
    await aiohttp_server(app, host="127.0.0.1", port=port)

    clock_now = [float(TRAINED_TO)]
    trainer = ProcessTrainer(settings, SidecarConfig(anomaly=anomaly))
    registry = ModelRegistry(settings.data_dir, anomaly.keep_versions)
    seen: dict[int, dict[str, dict[str, float]]] = {}
    alerts: dict[int, set[tuple[str, str]]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            client = HttpPromQLClient(base, session)
            scorer = AnomalyScorer(anomaly, client, registry, trainer, clock=lambda: clock_now[0])
            await scorer.cycle()  # no model yet: trains (in the training process)
            result = await scorer.wait_for_training()
            assert result is not None
            assert result.failed == {}
            meta = result.trained["load"]
            assert meta is not None
            assert (meta.series, meta.range_start, meta.range_end) == (3, BEGIN, TRAINED_TO)
            while clock_now[0] < END:
                clock_now[0] += STEP
                await scorer.cycle()
                published = time.time()
                exported.update(scorer.families)
                await scraped_after(base, published)
                at = int(clock_now[0])
                seen[at] = {}
                for name in ("score", "expected", "upper", "lower", "observed", "flag"):
                    rows = await asyncio.to_thread(query, base, f"scout_anomaly_{name}")
                    for row in rows:
                        assert row["metric"]["signal"] == "load"
                        assert row["metric"]["job"] == "e2e"
                        seen[at].setdefault(row["metric"]["instance"], {})[name] = float(
                            row["value"][1]
                        )
                fired = any(("h1", "firing") in found for found in alerts.values())
                paced = ANOMALY[0] <= at <= ANOMALY[1] and not fired
                alerts[at] = await alerts_over(base, PACE if paced else 0.0)
    finally:
        await asyncio.to_thread(trainer.close)

    assert sorted(seen) == list(range(TRAINED_TO + STEP, END + 1, STEP))
    during = [at for at in seen if ANOMALY[0] <= at <= ANOMALY[1]]
    before = [at for at in seen if at < ANOMALY[0]]
    assert max(seen[at]["h1"]["score"] for at in during) >= 0.9
    # The alert: pending from the anomaly's onset, firing five cycles later,
    # on h1 alone (the rule's labels are the series' own).
    assert not any(alerts[at] for at in before)
    assert any(("h1", "firing") in alerts[at] for at in during), alerts
    assert {instance for found in alerts.values() for instance, _ in found} == {"h1"}
    assert max(seen[at]["h1"]["flag"] for at in during) == 1
    assert all(seen[at]["h1"]["score"] < 0.5 for at in before)
    for host in ("h2", "h3"):
        assert max(seen[at][host]["score"] for at in seen) < 0.5
        assert max(seen[at][host]["flag"] for at in seen) == 0
    # Bands: every normal point inside its band, the anomaly's first point above it.
    for at, hosts in seen.items():
        for host, numbers in hosts.items():
            if host == "h1" and at >= ANOMALY[0]:
                continue
            assert numbers["lower"] <= VALUES[host][at] <= numbers["upper"], (host, at)
    # The observed value is the point scored, in the signal's units.
    for at, hosts in seen.items():
        for host, numbers in hosts.items():
            assert numbers["observed"] == pytest.approx(VALUES[host][at], rel=1e-12), (host, at)
    assert seen[ANOMALY[0]]["h1"]["upper"] < VALUES["h1"][ANOMALY[0]]
    version = await asyncio.to_thread(query, base, "scout_anomaly_model_version")
    assert [(r["metric"]["signal"], r["value"][1]) for r in version] == [("load", "1")]


# A child process that imports the models and trains them took over 60 s on a
# machine loaded four times over: the wait is for the outcome, not a timing.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("worker_process", [False, True], ids=["inline", "anomaly-process"])
async def test_the_app_with_anomaly_enabled_trains_and_exports_on_its_own(
    tmp_path, aiohttp_client, prometheus_with, worker_process
):
    base = prometheus_with([])
    settings = SidecarSettings(data_dir=tmp_path / "data", prometheus_url=base)
    settings.data_dir.mkdir()
    config = SidecarConfig(anomaly=anomaly_config(score_interval="1s"))
    # As `scout-sidecar serve` runs it: the loop in a child process, its
    # families forwarded to this one's /metrics.
    app = create_app(settings, config, worker_process=worker_process)
    client = await aiohttp_client(app)
    deadline = time.monotonic() + 240
    text = ""
    while time.monotonic() < deadline:
        text = await (await client.get("/metrics")).text()
        if 'scout_anomaly_series_tracked{signal="load"} 3.0' in text:
            break
        await asyncio.sleep(0.2)
    assert 'scout_anomaly_series_tracked{signal="load"} 3.0' in text
    assert 'scout_anomaly_model_version{signal="load"} 1.0' in text
    assert (settings.data_dir / "anomaly" / "load" / "000001" / "meta.json").is_file()


def run_cli(
    *args: str, env: dict[str, str], stderr: int | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai_sidecar.cli", "anomaly", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr,
        text=True,
        timeout=120,
    )


def test_cli_trains_lists_and_rolls_back(tmp_path, prometheus_with):
    base = prometheus_with([])
    config = tmp_path / "sidecar.yml"
    config.write_text(json.dumps({"anomaly": {"signals": [SIGNAL]}}))
    env = {"SCOUT_PROMETHEUS_URL": base, "SCOUT_DATA_DIR": str(tmp_path / "data")}
    trained = run_cli("train", "--config.file", str(config), env=env)
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.startswith("load: version 1, 3 series, ")
    assert "%|" not in trained.stderr  # no progress bar off a terminal
    # On a terminal the progress bar is drawn on stderr.
    leader, follower = pty.openpty()
    # Left as a new pty opens, 0 columns by 0 rows (as `script` or `docker run -t`
    # open one), where tqdm measuring it itself drew only a blank line.
    assert os.get_terminal_size(follower) == (0, 0)
    again = run_cli(
        "train", "--signal", "load", "--config.file", str(config), env=env, stderr=follower
    )
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    assert again.returncode == 0
    assert again.stdout.startswith("load: version 2, 3 series, ")
    assert b"load: 100%|" in drawn

    listed = run_cli("models", "--config.file", str(config), env=env)
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["SIGNAL", "VERSION", "TRAINED", "RANGE", "SERIES", "QUALITY"]
    assert [line.split()[:2] for line in lines[1:]] == [["load", "1"], ["load", "2*"]]
    assert all(line.split()[4] == "3" for line in lines[1:])
    rolled = run_cli("rollback", "load", "1", "--config.file", str(config), env=env)
    assert rolled.returncode == 0
    assert rolled.stdout.startswith("load: version 1 (trained ")
    listed = run_cli("models", env=env)
    assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == [
        ["load", "1*"],
        ["load", "2"],
    ]
    missing = run_cli("rollback", "load", "7", env=env)
    assert missing.returncode == 2
    assert missing.stderr == "scout-sidecar: signal 'load' has no version 7 (kept: 1, 2)\n"
    unknown = run_cli("train", "--signal", "nope", "--config.file", str(config), env=env)
    assert unknown.returncode == 2
    assert unknown.stderr == "scout-sidecar: no signal 'nope' (configured: load)\n"
