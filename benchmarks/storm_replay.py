"""How well the sidecar's correlator turns replayed alert storms into incidents (issue 11).

Storms come from :mod:`benchmarks.storms`: a randomised estate, a physical
fault, the shipped rules' timing and the shipped Alertmanager route to the
sidecar, with every alert's true incident and root element kept. Each
scenario is generated ``--seeds`` times (seed 0, 1, ...; the same seed gives
the same storm) and folded through the correlator in process, with the config
of a shipped preset parsed as a user would write it. Per scenario it prints:

- alerts (episodes that reached the sidecar), incidents expected and found,
  compression (alerts per found incident);
- pairwise precision, recall and F1 of the incident partition (per-storm means);
- root-cause accuracy (right root / incidents whose root raised an alert), over
  all incidents and over the scenario's own (without background faults);
- background alerts merged into another incident.

Then the throughput of correlation on one core: the first ``--alerts``
alerts a large campus power failure delivers, folded on CPU time once right
after generating the storm and building the graph, and once more with that
garbage collected first (see :func:`benchmarks.storms.scoring.replay`).

Nothing is asserted; the figures go to ``docs/benchmarks.md``.

Storms are folded by the topology-aware correlator, given the graph the
sidecar would build from each estate's observed topology
(:func:`topology_correlator`), or with ``--correlator today`` without one.
The topology-aware one is also given the co-firing edges learned from
``--history`` earlier storms of the same kind on the same estate
(:func:`learned_history`), as the worker learns them from its store.

With ``--names community`` every alert carries the name one community rule
set gives it (drawn per storm, see :mod:`benchmarks.storms.names`) and no
``layer`` label, as users who bring their own rules would deliver it.

Usage: python -m benchmarks.storm_replay [--seeds N] [--first-seed N] [--scenario NAME ...]
       [--preset network|firewall|windows] [--alerts N] [--no-throughput]
       [--correlator topology|today] [--history N] [--write-topology DIR]
       [--names shipped|community]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import timedelta
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_sidecar.config import CorrelationConfig
from ai_sidecar.correlate import CoFiring, Dependency, Poller, build_snapshot, learn_with
from ai_sidecar.correlation import Correlator
from ai_sidecar.i18n import SOURCE_LANGUAGE
from benchmarks.common import raise_interrupt
from benchmarks.storms.estate import ObservedTopology, Shape
from benchmarks.storms.names import NAMINGS
from benchmarks.storms.scenarios import SCENARIOS, generate
from benchmarks.storms.scoring import (
    CorrelatorFactory,
    Replay,
    StormScore,
    Summary,
    evaluate_storm,
    in_language,
    preset_config,
    replay,
    shifted,
    summarise,
    todays_correlator,
)


def topology_correlator(
    config: CorrelationConfig, topology: ObservedTopology, cofiring: CoFiring | None = None
) -> Correlator:
    """The correlator given the graph the sidecar would build from what the estate exposes.

    Neighbour rows as ``scout_lldp_neighbor_info`` would carry them, one target
    row per file_sd target (``up``'s labels), the exporter as poller of the
    jobs the shipped config polls, the written-down dependencies as the
    sidecar config's ``correlation.dependencies``, and the addresses targets'
    names resolved to as ``scout_target_address_info`` would carry them.
    """
    polls = config.topology.pollers
    pollers = [
        Poller(str(poller["instance"]), rule.polls)
        for poller in topology.pollers
        for rule in polls
        if rule.job == poller["job"]
    ]
    targets = [
        {"job": group.job, "instance": instance, **group.labels}
        for group in topology.target_groups
        for instance in group.targets
    ]
    dependencies = [
        Dependency(dict(d["from"]), dict(d["to"]), str(d.get("why", "")))
        for d in topology.dependencies
    ]
    snapshot = build_snapshot(
        neighbours=topology.neighbours,
        targets=targets,
        pollers=pollers,
        dependencies=dependencies,
        roots=config.topology.roots,
        addresses=topology.addresses,
    )
    return Correlator(config, snapshot, cofiring)


FACTORIES: dict[str, CorrelatorFactory] = {
    "today": todays_correlator,
    "topology": topology_correlator,
}

HEADER = (
    "| scenario | storms | alerts | incidents expected | found | compression "
    "| precision | recall | F1 | root cause | root cause (main) | background merged |"
)


def row(name: str, summary: Summary) -> str:
    return (
        f"| {name} | {summary.storms} | {summary.alerts} | {summary.incidents_expected} "
        f"| {summary.incidents_found} | {summary.compression:.1f} | {summary.precision:.3f} "
        f"| {summary.recall:.3f} | {summary.f1:.3f} | {summary.root_accuracy:.1%} "
        f"({summary.root_correct}/{summary.root_scored}) "
        f"| {f'{summary.main_root_accuracy:.1%}' if summary.main_root_scored else '-'} "
        f"({summary.main_root_correct}/{summary.main_root_scored}) "
        f"| {summary.background_merged}/{summary.background_alerts} |"
    )


def progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{text}")
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def learned_history(
    name: str, seed: int, earlier: int, config: CorrelationConfig, names: str = "shipped"
) -> CoFiring:
    """Co-firing edges learned from ``earlier`` storms of the same kind on storm ``seed``'s estate.

    Each is replayed through the topology correlator (nothing learned yet, as
    after an install); its incidents, moved back a day per storm so the
    storms do not overlap, are the store's history.
    """
    history = []
    for back in range(1, earlier + 1):
        storm = generate(name, seed, earlier=back, names=names)
        found = replay(storm, config, topology_correlator)
        day = -timedelta(days=back)
        history += [shifted(incident, day) for incident in found.incidents.values()]
    return learn_with(config.cofiring, history)


def quality(
    scenarios: list[str],
    seeds: int,
    preset: str,
    factory: CorrelatorFactory,
    earlier: int = 0,
    language: str = SOURCE_LANGUAGE,
    first_seed: int = 0,
    names: str = "shipped",
) -> list[StormScore]:
    config = preset_config(preset)
    scores = []
    total = len(scenarios) * seeds
    for number, (name, seed) in enumerate(
        ((name, seed) for name in scenarios for seed in range(first_seed, first_seed + seeds)),
        start=1,
    ):
        progress(f"[{number}/{total}] {name} seed {seed}")
        chosen = factory
        if earlier and factory is topology_correlator:
            learned = learned_history(name, seed, earlier, config, names)
            chosen = partial(topology_correlator, cofiring=learned)
        storm = generate(name, seed, names=names)
        scores.append(evaluate_storm(storm, config, in_language(chosen, language)))
    progress(f"[{total}/{total}] done")
    sys.stderr.write("\n")
    return scores


def throughput(alerts: int, preset: str, factory: CorrelatorFactory) -> None:
    """Fold the first ``alerts`` alerts of a big campus power failure; alerts per CPU second."""
    access = max(10, alerts // 30)
    shape = Shape(aps_per_access=(4, 10), endpoints_per_access=(14, 24), big_site_access=access)
    progress(f"generating a {alerts}-alert storm ({access} access switches)")
    storm = generate("site_power", 0, shape=shape, noise=False)
    sys.stderr.write("\n")
    deliveries, count = [], 0
    for delivery in storm.deliveries:
        if count >= alerts:
            break
        keep = delivery.alerts[: alerts - count]
        deliveries.append(type(delivery)(delivery.at, delivery.peer, delivery.group, keep))
        count += len(keep)
    trimmed = type(storm)(
        storm.scenario,
        storm.seed,
        storm.estate,
        storm.incidents,
        storm.episodes,
        tuple(deliveries),
        storm.peers,
    )
    topology = storm.estate.observed()
    # Right after generating the storm and building the graph (as measured
    # before 2026-12-03's speed pass), then on a settled heap (see replay).
    owing = replay(trimmed, preset_config(preset), factory)
    result = replay(trimmed, preset_config(preset), factory, settled=True)
    print(
        f"\nThroughput ({preset} preset): {result.alerts} alerts in "
        f"{len(result.incidents)} incidents, {result.cpu_seconds:.3f} s CPU: "
        f"{_rate(result):,.0f} alerts/s on one core on a settled heap "
        f"({_rate(owing):,.0f} right after building the storm and graph); "
        f"observed topology: {topology.edges} edges "
        f"({len(topology.neighbours)} LLDP rows), {len(storm.estate.devices)} devices"
    )


def _rate(result: Replay) -> float:
    return result.alerts / result.cpu_seconds if result.cpu_seconds else float("inf")


def main() -> None:
    signal.signal(signal.SIGTERM, raise_interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="storms per scenario (default 5)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seed of the first storm (default 0)"
    )
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="only these (repeatable)"
    )
    parser.add_argument("--preset", default="network", choices=("network", "firewall", "windows"))
    parser.add_argument("--alerts", type=int, default=10_000, help="throughput storm size")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument(
        "--correlator",
        default="topology",
        choices=sorted(FACTORIES),
        help="today's (group keys only) or the topology-aware one (default)",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=5,
        metavar="N",
        help="earlier storms of the same estate to learn co-firing edges from (default 5; 0: none)",
    )
    parser.add_argument(
        "--language",
        action="append",
        help="replay again with the reasons in this language and compare its figures "
        "(repeatable; default: en and fr)",
    )
    parser.add_argument(
        "--names",
        default="shipped",
        choices=NAMINGS,
        help="the alerts' names: the shipped rules' (default), or one community rule set's "
        "per storm, without layer labels",
    )
    parser.add_argument(
        "--write-topology",
        type=Path,
        metavar="DIR",
        help="also write each storm's observed topology (YAML) and ground-truth edges here",
    )
    args = parser.parse_args()
    scenarios = args.scenario or list(SCENARIOS)
    started = time.monotonic()
    factory = FACTORIES[args.correlator]
    languages = args.language or [SOURCE_LANGUAGE, "fr"]
    by_language = {
        language: quality(
            scenarios,
            args.seeds,
            args.preset,
            factory,
            args.history,
            language,
            args.first_seed,
            args.names,
        )
        for language in languages
    }
    scores = by_language[languages[0]]
    if args.write_topology is not None:
        write_topologies(args.write_topology, scenarios, args.seeds)
    learning = args.history and args.correlator == "topology"
    print(
        f"Storm replay: {args.seeds} seeds per scenario (from {args.first_seed}), "
        f"{args.preset} preset, {args.names} alert names, "
        f"{args.correlator} correlator"
        f"{f', co-firing learned from {args.history} earlier storms' if learning else ''}\n"
    )
    print(HEADER)
    print("|---" * (HEADER.count("|") - 1) + "|")
    for name in scenarios:
        print(row(name, summarise(s for s in scores if s.scenario == name)))
    print(row("**all**", summarise(scores)))
    if len(languages) > 1:
        # The language changes the reasons' words only: every figure must be the same.
        print(f"\nThe same storms with the analysis in each language:\n\n{HEADER}")
        print("|---" * (HEADER.count("|") - 1) + "|")
        for language, found in by_language.items():
            print(row(f"**all**, {language}", summarise(found)))
        same = all(found == scores for found in by_language.values())
        print(
            f"\nF1 and root-cause accuracy identical in every language: {'yes' if same else 'NO'}"
        )
    if not args.no_throughput:
        throughput(args.alerts, args.preset, factory)
    print(f"\n({time.monotonic() - started:.0f} s)")


def write_topologies(directory: Path, scenarios: list[str], seeds: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in scenarios:
        for seed in range(seeds):
            storm = generate(name, seed)
            (directory / f"{name}-{seed}.topology.yml").write_text(
                storm.estate.observed().to_yaml()
            )
            edges = "\n".join(f"{a}\t{b}\t{why}" for a, b, why in storm.estate.ground_truth_edges())
            (directory / f"{name}-{seed}.truth.tsv").write_text(edges + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
