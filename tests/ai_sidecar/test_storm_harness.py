"""The storm harness (benchmarks/storms) measures honestly: its physics, its scorer, a run.

Issue 11's correlation work is judged by these storms, so the simulator must
produce alerts the way Prometheus and Alertmanager do and the scorer must count
right. Nothing here asserts how well today's correlator does.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import yaml

from ai_sidecar.correlation import Correlator
from ai_sidecar.models import Incident, Member
from benchmarks.storm_replay import topology_correlator
from benchmarks.storms.alertmanager import Route, at_time, deliver, sidecar_route
from benchmarks.storms.names import COMMUNITY, community_names
from benchmarks.storms.prometheus import Condition, Episode, evaluate, observed_spans
from benchmarks.storms.rules import CATALOGUE, load_rules, read_rule_files
from benchmarks.storms.scenarios import SCENARIOS, Storm, generate
from benchmarks.storms.scoring import (
    evaluate_storm,
    pairwise,
    preset_config,
    replay,
    score,
    summarise,
)

RULES = load_rules()
SNMP_LABELS = {"job": "snmp", "instance": "sw-1", "site": "ams"}


def condition(rule: str, start: float, end: float | None, **labels: str) -> Condition:
    return Condition(rule, {**SNMP_LABELS, **labels}, start, end, "inc-1", "dev:sw-1", True)


# -- rules ---------------------------------------------------------------------------


def test_catalogue_agrees_with_every_shipped_rule_it_names() -> None:
    shipped = read_rule_files()
    assert "InterfaceDown" in shipped
    for name, spec in shipped.items():
        if name in CATALOGUE:
            assert RULES[name].hold == spec.hold, name
            assert RULES[name].labels.get("severity") == spec.labels.get("severity"), name
            assert RULES[name].provenance == "shipped"


# -- Prometheus timing -------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["TargetDown", "InterfaceDown", "ProbeLatencyHigh"])
def test_an_alert_never_fires_before_its_for_has_passed(rule: str) -> None:
    hold = RULES[rule].hold.total_seconds()
    rng = random.Random(7)
    starts = [rng.uniform(0, 3600) for _ in range(200)]
    conditions = [condition(rule, s, s + 3600, ifName=f"Gi{i}") for i, s in enumerate(starts)]
    episodes = evaluate(conditions, RULES, rng)
    assert len(episodes) == len(conditions)
    by_port = {c.labels["ifName"]: c for c in conditions}
    lateness = []
    for episode in episodes:
        start = by_port[episode.labels["ifName"]].start
        assert episode.fired_at >= start + hold
        lateness.append(episode.fired_at - start - hold)
        assert episode.resolved_at is not None
        assert episode.resolved_at >= start + 3600
    # The grids add up to a scrape interval and an evaluation, not more.
    assert max(lateness) <= 60 + 25 + 3 + 15
    assert max(lateness) > 0


def test_a_condition_shorter_than_for_never_fires() -> None:
    # Seen on a 60 s scrape grid (and shifted whole on the 15 s evaluation
    # grid), a condition lasts a whole number of scrapes: a 3m `for:` needs
    # four failed scrapes in a row.
    hold = RULES["SnmpDeviceUnreachable"].hold.total_seconds()
    rng = random.Random(3)
    conditions = [
        condition("SnmpDeviceUnreachable", 1000.0 * i, 1000.0 * i + hold, instance=f"s{i}")
        for i in range(200)
    ]
    assert evaluate(conditions, RULES, rng) == []
    # A little longer fires or not, depending on where the scrapes fall.
    longer = [condition("SnmpDeviceUnreachable", c.start, c.start + hold + 30) for c in conditions]
    assert (
        0
        < len(
            evaluate(
                [replace(c, labels={**c.labels, "instance": str(i)}) for i, c in enumerate(longer)],
                RULES,
                rng,
            )
        )
        < len(longer)
    )


def test_a_condition_between_two_scrapes_is_never_seen() -> None:
    assert observed_spans([(10.0, 40.0)], 0.0, 60.0, 0.0, 1.0) == []
    assert observed_spans([(10.0, 70.0)], 0.0, 60.0, 0.0, 1.0) == [(75.0, 135.0, 0)]


def test_spans_with_no_false_sample_between_them_are_one_episode() -> None:
    spans = observed_spans([(10.0, 70.0), (100.0, 200.0)], 0.0, 60.0, 0.0, 1.0)
    assert spans == [(75.0, 255.0, 0)]


def test_the_same_series_keeps_one_fingerprint_across_episodes() -> None:
    rng = random.Random(1)
    episodes = evaluate(
        [condition("InterfaceDown", 0, 600), condition("InterfaceDown", 1200, 1800)], RULES, rng
    )
    assert len(episodes) == 2
    assert episodes[0].fingerprint == episodes[1].fingerprint
    assert episodes[0].labels["alertname"] == "InterfaceDown"
    assert episodes[0].labels["severity"] == RULES["InterfaceDown"].labels["severity"]


# -- Alertmanager timing ---------------------------------------------------------------


def _episodes(count: int, seed: int = 5) -> list[Episode]:
    rng = random.Random(seed)
    conditions = []
    for i in range(count):
        start = rng.uniform(0, 1800)
        instance = f"sw-{i % 4}"  # several alerts share a group key
        conditions.append(
            condition(
                "InterfaceDown",
                start,
                start + rng.uniform(300, 900),
                instance=instance,
                ifName=f"Gi1/0/{i}",
            )
        )
    return evaluate(conditions, RULES, rng)


def test_the_shipped_route_is_read_from_alertmanager_yml() -> None:
    route = sidecar_route()
    assert route.group_by == ("alertname", "instance")
    assert route.group_interval > 0
    assert route.repeat_interval >= route.group_interval


def test_deliveries_respect_group_wait_and_group_interval() -> None:
    route = Route(("alertname", "instance"), group_wait=30, group_interval=60, repeat_interval=3600)
    episodes = _episodes(40)
    deliveries = deliver(episodes, route, random.Random(2))
    first_fire: dict[tuple[str, ...], float] = {}
    for episode in episodes:
        key: tuple[str, ...] = (episode.labels["alertname"], episode.labels["instance"])
        first_fire[key] = min(first_fire.get(key, math.inf), episode.fired_at)
    by_group: dict[tuple[str, ...], list[float]] = {}
    for delivery in deliveries:
        by_group.setdefault(delivery.group, []).append(delivery.at)
    assert by_group
    for group, times in by_group.items():
        # group_wait after the first alert reached Alertmanager, never before.
        assert times[0] >= first_fire[group] + route.group_wait
        for earlier, later in itertools.pairwise(times):
            assert later - earlier >= route.group_interval - 1


def test_every_episode_is_delivered_firing_then_resolved() -> None:
    episodes = _episodes(30)
    deliveries = deliver(episodes, sidecar_route(), random.Random(4))
    firing: dict[tuple[str, float], float] = {}
    resolved: dict[tuple[str, float], float] = {}
    for delivery in deliveries:
        for alert in delivery.alerts:
            key = (alert.fingerprint, alert.starts_at.timestamp())
            target = firing if alert.status == "firing" else resolved
            target.setdefault(key, delivery.at)
            if alert.status == "resolved":
                assert alert.ends_at is not None
                assert alert.ends_at > alert.starts_at
    for episode in episodes:
        key = (episode.fingerprint, at_time(episode.fired_at).timestamp())
        assert firing[key] >= episode.fired_at
        assert resolved[key] > firing[key]


def test_an_ha_pair_duplicates_deliveries_with_identical_fingerprints() -> None:
    episodes = _episodes(20)
    single = deliver(episodes, sidecar_route(), random.Random(9))
    pair = deliver(episodes, sidecar_route(), random.Random(9), peers=2, gossip_loss=1.0)
    copies = [d for d in pair if d.peer == 1]
    assert copies
    assert len(pair) > len(single)
    originals = {
        frozenset((a.fingerprint, a.status, a.starts_at) for a in d.alerts)
        for d in pair
        if d.peer == 0
    }
    for copy in copies:
        assert frozenset((a.fingerprint, a.status, a.starts_at) for a in copy.alerts) in originals
    # With gossip working, the second peer stays quiet for what the first sent.
    quiet = deliver(episodes, sidecar_route(), random.Random(9), peers=2, gossip_loss=0.0)
    assert len([d for d in quiet if d.peer == 1]) < len(copies)


# -- the scorer ----------------------------------------------------------------------------


def test_a_perfect_partition_scores_one() -> None:
    scores = pairwise(["a", "a", "b", "c", "c", "c"], [1, 1, 2, 3, 3, 3])
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 1.0, 1.0)


def test_all_in_one_has_full_recall_and_the_share_of_true_pairs_as_precision() -> None:
    scores = pairwise(["a", "a", "b", "b", "b"], [0] * 5)
    # 1 + 3 true pairs out of 10.
    assert scores.recall == 1.0
    assert scores.precision == pytest.approx(0.4)


def test_all_apart_has_no_recall() -> None:
    scores = pairwise(["a", "a", "b", "b"], [0, 1, 2, 3])
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 0.0, 0.0)


def test_known_pairwise_values() -> None:
    scores = pairwise(["a", "a", "b", "b"], ["x", "x", "x", "y"])
    assert (scores.true_positive, scores.false_positive, scores.false_negative) == (1, 2, 1)
    assert scores.precision == pytest.approx(1 / 3)
    assert scores.recall == pytest.approx(1 / 2)
    assert scores.f1 == pytest.approx(0.4)


def _truthful_incidents(
    storm: Storm, *, one: bool = False, wrong_root: bool = False
) -> dict[str, Incident]:
    """Incidents exactly as the truth has them (or all in one), built by hand."""
    groups: dict[str, list[Episode]] = {}
    for episode in storm.episodes:
        groups.setdefault("all" if one else episode.incident, []).append(episode)
    incidents = {}
    for name, episodes in groups.items():
        members = {}
        for fp in {e.fingerprint for e in episodes}:
            mine = [e for e in episodes if e.fingerprint == fp]
            members[fp] = Member(
                fingerprint=fp,
                labels=dict(mine[0].labels),
                annotations={},
                status="firing",
                starts_at=at_time(max(e.fired_at for e in mine)),
                first_starts_at=at_time(min(e.fired_at for e in mine)),
            )
        roots = sorted(e.fingerprint for e in episodes if e.root == (not wrong_root))
        created = at_time(min(e.fired_at for e in episodes))
        incidents[name] = Incident(
            id=name,
            status="open",
            group={},
            members=members,
            created_at=created,
            updated_at=created,
            root_cause=roots[0] if roots else None,
        )
    return incidents


@pytest.fixture(scope="module")
def storm() -> Storm:
    return generate("core_link_cut", 0)


def test_the_truth_itself_scores_perfectly(storm: Storm) -> None:
    result = score(storm, _truthful_incidents(storm))
    assert result.pairs.f1 == 1.0
    assert result.root_scored == len(storm.incidents)
    assert result.root_correct == result.root_scored
    assert result.background_merged == 0
    assert result.incidents_found == result.incidents_expected == len(storm.incidents)


def test_a_wrong_root_cause_is_counted_wrong(storm: Storm) -> None:
    result = score(storm, _truthful_incidents(storm, wrong_root=True))
    main = [i for i in storm.incidents.values() if not i.background]
    assert result.main_root_scored == len(main)
    assert result.main_root_correct == 0


def test_one_big_incident_merges_every_background_alert(storm: Storm) -> None:
    result = score(storm, _truthful_incidents(storm, one=True))
    assert result.pairs.recall == 1.0
    assert result.pairs.precision < 1.0
    assert result.incidents_found == 1
    assert result.background_alerts > 0
    assert result.background_merged == result.background_alerts
    assert result.root_correct == 1  # one incident can name only one root


def test_an_empty_correlator_output_leaves_every_alert_alone(storm: Storm) -> None:
    result = score(storm, {})
    assert result.pairs.recall == 0.0
    assert result.incidents_found == result.alerts
    assert result.root_correct == 0


# -- storms ------------------------------------------------------------------------------


def test_a_seed_gives_the_same_storm() -> None:
    first, second = generate("two_sites", 3), generate("two_sites", 3)
    assert first.deliveries == second.deliveries
    assert generate("two_sites", 4).deliveries != first.deliveries


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - {"site_power"}))
def test_every_scenario_has_a_main_incident_whose_root_raised_an_alert(name: str) -> None:
    storm = generate(name, 0)
    assert storm.deliveries
    incidents = {e.incident for e in storm.episodes if e.root}
    main = [i for i in storm.incidents.values() if not i.background]
    if name != "background":
        assert main
        assert any(i.id in incidents for i in main)
    for episode in storm.episodes:
        assert episode.incident in storm.incidents


def test_the_observed_topology_is_a_readable_file(storm: Storm) -> None:
    topology = storm.estate.observed()
    document = yaml.safe_load(topology.to_yaml())
    assert document["version"] == 2
    assert document["neighbours"]
    assert document["addresses"]
    assert all(set(row) == {"instance", "address"} for row in document["addresses"])
    assert document["pollers"]
    assert document["target_groups"]
    assert set(document["neighbours"][0]) >= {
        "instance",
        "local_port",
        "remote_sysname",
        "remote_port",
        "remote_address",
    }
    assert len(topology.info_series()) == len(document["neighbours"])
    assert topology.edges >= len(document["neighbours"])


def test_a_small_storm_set_runs_end_to_end() -> None:
    config = preset_config("network")
    scores = [evaluate_storm(generate(name, 1), config) for name in ("ha_duplicates", "dns_chain")]
    summary = summarise(scores)
    assert summary.storms == 2
    assert summary.alerts > 0
    for figure in (summary.precision, summary.recall, summary.f1, summary.root_accuracy):
        assert 0.0 <= figure <= 1.0
    assert summary.incidents_found >= 1


def test_storm_times_are_datetimes_after_t0() -> None:
    assert at_time(90) - at_time(0) == timedelta(seconds=90)


def test_nothing_the_hung_poller_serves_fires_while_it_is_out() -> None:
    """Its series go stale: only Prometheus's own ``up`` (TargetDown) can alert then."""
    checked = 0
    for seed in range(6):
        storm = generate("poller_failure", seed)
        exporter = storm.estate.exporter
        assert exporter is not None
        [outage] = [
            e
            for e in storm.episodes
            if e.labels["alertname"] == "TargetDown" and e.labels["instance"] == exporter.instance
        ]
        # The exporter stopped answering when its TargetDown's for: (5m) began.
        blind_from = outage.fired_at - 5 * 60 - 60
        blind_to = math.inf if outage.resolved_at is None else outage.resolved_at - 60
        for episode in storm.episodes:
            if episode.labels["alertname"] == "TargetDown":
                continue
            checked += 1
            assert not blind_from < episode.fired_at < blind_to, episode.labels
    assert checked > 0, "background faults still fire outside the outage"


def test_earlier_storms_hit_the_same_estate_with_a_fault_drawn_afresh() -> None:
    storm = generate("core_link_cut", 2)
    earlier = generate("core_link_cut", 2, earlier=1)
    assert earlier.estate.devices.keys() == storm.estate.devices.keys()
    assert earlier.estate.observed() == storm.estate.observed()
    assert [e.fired_at for e in earlier.episodes] != [e.fired_at for e in storm.episodes]
    assert generate("core_link_cut", 2, earlier=1).episodes == earlier.episodes


def test_the_replay_forgets_resolved_incidents_as_the_worker_does() -> None:
    """Forgotten incidents keep their last value; the worker's cutoff trails alert time."""
    config = preset_config("network")
    cutoffs = []

    class Forgetful(Correlator):
        def forget_resolved_before(self, cutoff: datetime) -> None:
            cutoffs.append(cutoff)
            super().forget_resolved_before(cutoff)

    storm = generate("resolve_refire", 0)
    found = replay(storm, config, lambda c, _topology: Forgetful(c))
    assert len(cutoffs) == len(storm.deliveries)
    assert cutoffs == sorted(cutoffs)
    assert cutoffs[-1] <= at_time(storm.deliveries[-1].at) - config.flap_window
    # Incidents the correlator dropped are still scored, with their members.
    assert sum(len(i.members) for i in found.incidents.values()) >= len(
        {a.fingerprint for d in storm.deliveries for a in d.alerts}
    )


# -- community alert names -----------------------------------------------------------------


def test_a_storm_draws_one_community_rule_set() -> None:
    names = community_names("core_link_cut", 4)
    assert names == community_names("core_link_cut", 4)
    assert set(names) == set(CATALOGUE) == set(COMMUNITY)
    assert all(name in COMMUNITY[rule] for rule, name in names.items())
    # Two alerts one rule set names alike would be one series.
    assert len(set(names.values())) == len(names)
    drawn = {tuple(sorted(community_names("core_link_cut", seed).items())) for seed in range(10)}
    assert len(drawn) == 10


def test_a_community_storm_is_the_same_storm_under_other_names() -> None:
    shipped = generate("core_link_cut", 0)
    community = generate("core_link_cut", 0, names="community")
    names = community_names("core_link_cut", 0)

    def seen(episode: Episode, renamed: bool) -> tuple[object, ...]:
        labels = {k: v for k, v in episode.labels.items() if k not in ("alertname", "layer")}
        name = episode.labels["alertname"]
        return (
            names[name] if renamed else name,
            sorted(labels.items()),
            episode.fired_at,
            episode.resolved_at,
            episode.incident,
            episode.root,
        )

    assert sorted(map(str, (seen(e, True) for e in shipped.episodes))) == sorted(
        map(str, (seen(e, False) for e in community.episodes))
    )
    assert any("layer" in e.labels for e in shipped.episodes)
    assert not any("layer" in e.labels for e in community.episodes)
    assert {e.labels["alertname"] for e in community.episodes} - set(CATALOGUE)
    assert community.incidents == shipped.incidents


@pytest.mark.parametrize(
    ("name", "seed"),
    [
        ("poller_failure", 0),  # PrometheusTargetDown
        ("ha_duplicates", 3),  # IfDown, SnmpDown, NoPingResponse
        ("flapping_port", 5),  # IfOperDown, NetworkDeviceDown, IcmpDown
        ("maintenance_reboot", 0),  # PortDown, NetworkDeviceDown, WindowsServerOffline
    ],
)
def test_a_storm_under_community_names_is_found_whole_with_its_root_cause(
    name: str, seed: int
) -> None:
    """Alerts without a ``layer`` label, named as community rule sets name them.

    The correlator places each by its name alone: a box that stops answering
    is the device, a port down the link, so the outage takes in what it cut
    off and names the right root cause.
    """
    storm = generate(name, seed, names="community")
    result = evaluate_storm(storm, preset_config("network"), topology_correlator)
    assert result.main_root_scored >= 1
    assert result.main_root_correct == result.main_root_scored
    assert result.pairs.f1 >= 0.95
