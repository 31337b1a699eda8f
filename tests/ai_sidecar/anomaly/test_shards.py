"""Replicas sharing the anomaly series (``anomaly.shard``): every series trained and
scored by exactly one replica, a host's series together, the same split in every
process; against real Prometheus and VictoriaMetrics, and over the fast fake engine.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.metrics_core import Metric

from ai_sidecar.anomaly.registry import ModelRegistry
from ai_sidecar.anomaly.scoring import AnomalyScorer
from ai_sidecar.anomaly.service import claim_shares, run_scoring
from ai_sidecar.anomaly.shards import Share, share_of
from ai_sidecar.anomaly.signals import SeriesKey, series_key
from ai_sidecar.anomaly.trainer import train_signal
from ai_sidecar.app import create_app
from ai_sidecar.config import AnomalyConfig, parse_config
from ai_sidecar.errors import ConfigError
from ai_sidecar.pipeline import cancel_tasks
from ai_sidecar.promql import HttpPromQLClient
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store.postgres import Location
from ai_sidecar.store.postgres.shares import ShareClaims
from tests.ai_sidecar.anomaly.fakes import FakeEngine, FakeSeries, InlineTrainer
from tests.ai_sidecar.anomaly.test_scoring import Clock, daily, family
from tests.peers.postgres import PASSWORD
from tests.peers.promql import (
    Sample,
    engine_holding,
)

ROOT = Path(__file__).resolve().parents[3]
KEEP = ["job", "instance", "port"]


def keys(hosts: int, ports: int) -> list[SeriesKey]:
    return [
        series_key({"job": "snmp", "instance": f"h{h}", "port": str(p)}, KEEP)
        for h in range(hosts)
        for p in range(ports)
    ]


def owners(key: SeriesKey, shares: list[Share]) -> list[int]:
    return [index for share in shares if share.owns(key) for index in share.indexes]


def test_every_series_belongs_to_exactly_one_share_and_a_hosts_series_to_the_same():
    everything = keys(500, 10)
    shares = [Share.of(i, 7) for i in range(7)]
    owned_by = {key: owners(key, shares) for key in everything}
    assert all(len(found) == 1 for found in owned_by.values())
    by_host: dict[str, set[int]] = {}
    for key, (share,) in owned_by.items():
        by_host.setdefault(dict(key)["instance"], set()).add(share)
    assert all(len(found) == 1 for found in by_host.values())
    # Hosts spread evenly: no share far from a seventh of them.
    sizes = Counter(share for (share,) in owned_by.values())
    assert len(sizes) == 7
    assert max(sizes.values()) < 1.4 * len(everything) / 7 < 2 * min(sizes.values())


def test_a_series_without_the_host_label_is_placed_by_all_its_labels():
    shares = [Share.of(i, 5) for i in range(5)]
    found = {
        owners(series_key({"job": "probe", "target": f"t{n}"}, None), shares)[0] for n in range(100)
    }
    assert found == set(range(5))
    assert Share.of(0, 1).owns(series_key({"job": "probe"}, None))


def test_the_split_is_the_same_in_every_process():
    # Python's own hash() of a string changes with PYTHONHASHSEED: the share must not.
    sample = keys(50, 2)
    script = (
        "import json, sys\n"
        "from ai_sidecar.anomaly.shards import share_of\n"
        "keys = [tuple(map(tuple, k)) for k in json.load(sys.stdin)]\n"
        "print(json.dumps([share_of(k, 10, 'instance') for k in keys]))\n"
    )
    found = []
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(sample),
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        found.append(json.loads(done.stdout))
    assert found[0] == found[1] == [share_of(key, 10, "instance") for key in sample]
    assert len(set(found[0])) > 5


def test_the_shard_setting_is_checked_and_defaults_to_everything():
    assert AnomalyConfig().share == Share.of(0, 1, "instance")
    assert AnomalyConfig().share.everything
    config = parse_config(
        "anomaly:\n  shard: {index: 2, count: 3}\n  hosts: {host_label: node}\n", "scout.yml"
    )
    assert config.anomaly.share == Share.of(2, 3, "node")
    with pytest.raises(ConfigError, match="index 3 is not below count 3"):
        parse_config("anomaly:\n  shard: {index: 3, count: 3}\n", "scout.yml")
    with pytest.raises(ConfigError, match="count"):
        parse_config("anomaly:\n  shard: {index: 0, count: 0}\n", "scout.yml")


def test_claiming_shares_needs_the_postgresql_store(tmp_path):
    config = parse_config("anomaly:\n  enabled: true\n  shard: {index: auto, count: 4}\n", "x")
    assert config.anomaly.share == Share(frozenset(range(4)), 4)
    settings = SidecarSettings(prometheus_url="http://127.0.0.1:9", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="index auto claims shares through the PostgreSQL store"):
        create_app(settings, config)
    with pytest.raises(ConfigError, match="index"):
        parse_config("anomaly:\n  shard: {index: any, count: 4}\n", "x")


# -- replicas over the fake engine ----------------------------------------------------

STEP = 300.0
T0 = 1_800_000_000 // 86_400 * 86_400 + 12 * 3600


def sharded(index: int, count: int) -> AnomalyConfig:
    signal = {"name": "load", "query": "load", "step": "5m", "history": "2d", "keep_labels": KEEP}
    return AnomalyConfig.model_validate(
        {
            "enabled": True,
            "score_interval": "5m",
            "query_delay": "0s",
            "signals": [signal],
            "shard": {"index": index, "count": count},
        },
        strict=False,
    )


def fake_engine(hosts: int) -> FakeEngine:
    return FakeEngine(
        [
            FakeSeries({"job": "snmp", "instance": f"h{h}", "port": str(p)}, daily(10 * h + p))
            for h in range(hosts)
            for p in range(2)
        ]
    )


async def scored(engine, config: AnomalyConfig, directory: Path, clock: Clock) -> AnomalyScorer:
    registry = ModelRegistry(directory, config.keep_versions)
    trainer = InlineTrainer(engine, registry, config)
    scorer = AnomalyScorer(config, engine, registry, trainer, clock=clock)
    await scorer.cycle()
    await scorer.wait_for_training()
    clock.now += STEP
    await scorer.cycle()
    return scorer


def score_labels(scorer: AnomalyScorer) -> list[tuple[tuple[str, str], ...]]:
    return list(family(scorer.families, "scout_anomaly_score"))


async def test_replicas_score_every_series_once_and_a_new_split_drops_and_retrains(tmp_path):
    engine = fake_engine(12)
    everything = {exported_as(key) for key in keys(12, 2)}
    exported: list[tuple[tuple[str, str], ...]] = []
    for index in range(3):
        scorer = await scored(engine, sharded(index, 3), tmp_path / str(index), Clock(T0))
        exported += score_labels(scorer)
        assert scorer.states["load"].meta.series == len(score_labels(scorer)) > 0
    # The union is every series once, with its own labels and no replica's.
    assert Counter(exported) == Counter(everything)
    # Replica 0 restarted as share 0 of 2: the rows of series it no longer owns
    # are gone at once, and its model, trained for the old split, is retrained.
    clock = Clock(T0 + 2 * STEP)
    again = await scored(engine, sharded(0, 2), tmp_path / "0", clock)
    assert again.states["load"].meta.version == 2
    assert set(score_labels(again)) == {
        labels for labels in everything if Share.of(0, 2).owns(_key(labels))
    }


async def test_claimed_shares_that_change_are_scored_dropped_and_retrained(tmp_path):
    engine = fake_engine(12)
    config = sharded(0, 2)
    registry = ModelRegistry(tmp_path, config.keep_versions)
    trainer = InlineTrainer(engine, registry, config)
    clock = Clock(T0)
    scorer = AnomalyScorer(
        config, engine, registry, trainer, clock=clock, share=config.shares_claimed(())
    )

    async def cycles() -> set[tuple[tuple[str, str], ...]]:
        await scorer.cycle()
        await scorer.wait_for_training()
        clock.now += STEP
        await scorer.cycle()
        return set(score_labels(scorer))

    def of(*indexes: int) -> set[tuple[tuple[str, str], ...]]:
        share = config.shares_claimed(indexes)
        return {exported_as(key) for key in keys(12, 2) if share.owns(key)}

    def shares() -> tuple[float, float]:
        held = family(scorer.families, "scout_anomaly_shares_held")
        return held[()], family(scorer.families, "scout_anomaly_shares")[()]

    # Nothing claimed yet: nothing trained, nothing exported.
    assert await cycles() == set()
    assert trainer.calls == []
    assert shares() == (0, 2)
    scorer.use_share(config.shares_claimed({0}))
    assert await cycles() == of(0) != set()
    assert shares() == (1, 2)
    # The other replica died and this one claimed its share: retrained for both.
    scorer.use_share(config.shares_claimed({0, 1}))
    assert await cycles() == of(0, 1)
    assert shares() == (2, 2)
    assert scorer.states["load"].meta.version == 2
    # Share 0 went to a newcomer: its series leave this replica's /metrics at once.
    scorer.use_share(config.shares_claimed({1}))
    clock.now += STEP
    await scorer.cycle()
    assert set(score_labels(scorer)) == of(1)
    assert len(trainer.calls) == 2


async def test_a_share_given_up_is_in_use_until_the_cycle_without_it_is_published(tmp_path):
    # The claims unlock a share given back only once no published row is of it.
    engine = fake_engine(12)
    config = sharded(0, 2)
    registry = ModelRegistry(tmp_path, config.keep_versions)
    trainer = InlineTrainer(engine, registry, config)
    scorer = AnomalyScorer(
        config, engine, registry, trainer, clock=Clock(T0), share=config.shares_claimed({0, 1})
    )
    published: list[frozenset[int]] = []
    running = asyncio.create_task(
        scorer.run(lambda families: published.append(scorer.share.indexes))
    )
    try:
        await until(lambda: len(published) == 1, "the first cycle")
        scorer.use_share(config.shares_claimed({1}))
        assert scorer.shares_in_use == {0, 1}
        await until(lambda: len(published) == 2, "the cycle of the new share")
        assert published[-1] == {1}
        assert scorer.shares_in_use == {1}
    finally:
        await cancel_tasks([running])


async def test_shares_given_up_for_a_silent_store_leave_metrics_at_once(tmp_path):
    # A replica cut off from PostgreSQL gives every share up before the server
    # hands them on: their rows must leave /metrics then, not when the next
    # cycle ends (a cycle may take minutes).
    engine = fake_engine(12)
    config = sharded(0, 2)
    registry = ModelRegistry(tmp_path, config.keep_versions)
    trainer = InlineTrainer(engine, registry, config)
    clock = Clock(T0)
    scorer = AnomalyScorer(
        config, engine, registry, trainer, clock=clock, share=config.shares_claimed({0, 1})
    )
    published: list[list[Metric]] = []
    running = asyncio.create_task(scorer.run(published.append))
    try:
        await until(lambda: len(published) == 1, "the first cycle")
        await scorer.wait_for_training()
        clock.now += STEP
        scorer.use_share(config.shares_claimed({1}))  # wakes the loop
        await until(lambda: len(published) == 2, "the cycle of share 1")
        assert score_labels_of(published[-1])
        # Given up: nothing scored is left on /metrics at once, before any cycle.
        scorer.use_share(config.shares_claimed(()))
        assert score_labels_of(published[-1]) == []
        assert family(published[-1], "scout_anomaly_shares_held")[()] == 0
        await until(lambda: len(published) == 4, "the cycle without shares")
        assert score_labels_of(published[-1]) == []
    finally:
        await cancel_tasks([running])


def score_labels_of(families: list[Metric]) -> list[tuple[tuple[str, str], ...]]:
    return list(family(families, "scout_anomaly_score"))


class BrokenClaims(ShareClaims):
    """Claims whose round fails with an error nobody expected (a bug), then holds share 1."""

    def __init__(self) -> None:
        super().__init__(Location("postgresql://127.0.0.1:1/scout"), 2)
        self.rounds = 0

    async def claim(self, in_use: Collection[int] = frozenset()) -> frozenset[int]:
        self.rounds += 1
        if self.rounds == 2:
            raise RuntimeError("a bug")
        return frozenset({1})


async def test_a_claims_round_that_fails_unexpectedly_gives_the_shares_up_and_claiming_goes_on(
    tmp_path, monkeypatch
):
    # The claims' connection is closed when their task ends: a scorer still
    # scoring the last shares would export them beside the replica that takes
    # them over. A round failing with any error gives them up, and the next
    # rounds go on.
    monkeypatch.setattr("ai_sidecar.anomaly.service.CLAIM_INTERVAL", 0.01)
    config = sharded(0, 2)
    registry = ModelRegistry(tmp_path, config.keep_versions)
    scorer = AnomalyScorer(
        config, fake_engine(4), registry, InlineTrainer(fake_engine(4), registry, config)
    )
    claims = BrokenClaims()
    shares: list[frozenset[int]] = []
    monkeypatch.setattr(scorer, "use_share", lambda share: shares.append(share.indexes))
    sidecar = parse_config("anomaly:\n  shard: {index: auto, count: 2}\n", "scout.yml")
    claiming = asyncio.create_task(claim_shares(claims, scorer, sidecar))
    try:
        await until(lambda: len(shares) >= 3, "three rounds")
        assert shares[:3] == [{1}, set(), {1}]
        assert not claiming.done()
    finally:
        await cancel_tasks([claiming])


async def test_hosts_of_shares_given_back_leave_the_host_models(tmp_path):
    # Their host models would count in scout_anomaly_hosts_modelled on two
    # replicas, and fill max_hosts so that new hosts of this share are refused.
    engine = fake_engine(12)
    config = sharded(0, 2)
    registry = ModelRegistry(tmp_path, config.keep_versions)
    trainer = InlineTrainer(engine, registry, config)
    clock = Clock(T0)
    scorer = AnomalyScorer(
        config, engine, registry, trainer, clock=clock, share=config.shares_claimed({0, 1})
    )
    await scorer.cycle()
    await scorer.wait_for_training()
    clock.now += STEP
    await scorer.cycle()
    hosts = scorer._hosts
    assert hosts is not None
    assert set(hosts.hosts) == {f"h{h}" for h in range(12)}
    share = config.shares_claimed({1})
    scorer.use_share(share)
    clock.now += STEP
    await scorer.cycle()
    mine = {f"h{h}" for h in range(12) if share.owns((("instance", f"h{h}"),))}
    assert set(hosts.hosts) == mine != set()


def exported_as(key: SeriesKey) -> tuple[tuple[str, str], ...]:
    """The label set of the series' scout_anomaly_score: the signal and its own labels."""
    return tuple(sorted([("signal", "load"), *key]))


def _key(labels: tuple[tuple[str, str], ...]) -> SeriesKey:
    return tuple(sorted(pair for pair in labels if pair[0] != "signal"))


# -- replicas over real engines -------------------------------------------------------

METRIC = "scout_shard_load"
HOSTS = 16
END = (int(time.time()) - 3600) // 300 * 300
BEGIN = END - 86_400


def history() -> Iterator[Sample]:
    for at in range(BEGIN, END + 1, 300):
        for h in range(HOSTS):
            for port in range(2):
                value = 100 + 10 * h + port + 30 * math.sin(2 * math.pi * at / 86_400)
                labels = {"job": "snmp", "instance": f"h{h}", "port": str(port)}
                yield METRIC, labels, value, at


@pytest.fixture(scope="module", params=["prometheus", "victoria-metrics"])
def engine_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    with engine_holding(request.param, tmp_path_factory.mktemp(request.param), history) as url:
        yield url


@pytest.mark.peers
async def test_replicas_train_and_score_every_real_series_exactly_once(engine_url, tmp_path):
    signal = {"name": "load", "query": METRIC, "step": "5m", "history": "1d", "keep_labels": KEEP}
    everything = set(keys(HOSTS, 2))
    trained: list[SeriesKey] = []
    exported: list[tuple[tuple[str, str], ...]] = []
    async with aiohttp.ClientSession() as session:
        client = HttpPromQLClient(engine_url, session)
        for index in range(4):
            config = AnomalyConfig.model_validate(
                {
                    "enabled": True,
                    "score_interval": "5m",
                    "query_delay": "0s",
                    "signals": [signal],
                    "shard": {"index": index, "count": 4},
                },
                strict=False,
            )
            registry = ModelRegistry(tmp_path / str(index), config.keep_versions)
            meta = await train_signal(
                client, config.signal("load"), registry, config, now=END - 2 * 300
            )
            assert meta is not None
            assert all(Share.of(index, 4).owns(key) for key in meta.keys)
            trained += meta.keys
            scorer = AnomalyScorer(
                config, client, registry, InlineTrainer(client, registry, config), clock=lambda: END
            )
            await scorer.cycle()
            exported += score_labels(scorer)
    assert sorted(trained) == sorted(everything)
    assert Counter(exported) == Counter(exported_as(key) for key in everything)


def scored_series(families: list[Metric]) -> Counter[tuple[tuple[str, str], ...]]:
    """The scout_anomaly_score series of a replica's families (none before its first cycle)."""
    return Counter(family(families, "scout_anomaly_score").keys() if families else ())


async def until(check: Callable[[], bool], what: str, seconds: float = 120.0) -> None:
    for _ in range(int(seconds * 2)):
        if check():
            return
        await asyncio.sleep(0.5)
    pytest.fail(f"timed out after {seconds:.0f}s waiting for {what}")


@pytest.mark.peers
@pytest.mark.parametrize("engine_url", ["prometheus"], indirect=True)
async def test_replicas_claiming_through_postgresql_cover_every_series_and_take_over(
    engine_url, postgres_server, tmp_path
):
    signal = {"name": "load", "query": METRIC, "step": "5m", "history": "1d", "keep_labels": KEEP}
    anomaly = {
        "enabled": True,
        "score_interval": "1s",
        "query_delay": "0s",
        "series_grace": "3h",
        "signals": [signal],
        "shard": {"index": "auto", "count": 4},
        "hosts": {"enabled": False},
    }
    config = parse_config(yaml.safe_dump({"anomaly": anomaly}), "scout.yml")
    dsn = postgres_server.create_database()
    latest: dict[int, list[Metric]] = {0: [], 1: []}

    def replica(number: int) -> asyncio.Task[None]:
        settings = SidecarSettings(
            prometheus_url=engine_url,
            data_dir=tmp_path / str(number),
            store_url=dsn,
            store_password=PASSWORD,
        )
        return asyncio.create_task(
            run_scoring(settings, config, lambda families: latest.__setitem__(number, families))
        )

    everything = Counter(exported_as(key) for key in keys(HOSTS, 2))
    first, second = replica(0), replica(1)
    try:
        # Two replicas: each series scored by one of them, the union is all of them.
        await until(
            lambda: (
                scored_series(latest[0]) + scored_series(latest[1]) == everything
                and all(scored_series(latest[n]) for n in (0, 1))
            ),
            "the two replicas to split the series",
        )
        # One stops: the other claims its shares and scores every series alone.
        await cancel_tasks([first])
        await until(
            lambda: scored_series(latest[1]) == everything, "the survivor to take the shares over"
        )
    finally:
        await cancel_tasks([first, second])
