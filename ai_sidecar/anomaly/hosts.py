"""Per host, an IsolationForest over the residuals of the host's signals.

The detector scores each series on its own. Some failures show only in how a
host's signals move together: traffic up while CPU stays flat, memory climbing
while requests fall, each within its own band. Per host, an IsolationForest
(scikit-learn) learns the usual combinations of that host's residuals and
scores how unusual the current one is.

- **Features.** Each cycle, for each signal a host has series in, two numbers
  from the series' latest points: the mean standardised residual
  ``(observed - expected) / half band`` and the largest absolute one, clipped
  to ``±RESIDUAL_CLIP``. A host's columns are the signals it has been seen
  with; a signal that appears later adds columns, zero (as expected) in the
  earlier samples.
- **Learning.** One sample per host every ``sample_every``, kept in a ring of
  ``max_samples``, unless one of its series raised an alarm in that cycle: an
  anomaly is not what a host normally looks like. A forest is fitted once the
  ring holds ``min_samples`` and refitted every ``refit``, a few hosts per
  cycle so a restart does not stall the loop. The forest sees the samples
  whitened (rotated onto their principal axes and scaled to unit spread):
  its splits are parallel to the axes, so a combination that breaks a
  correlation (traffic up, CPU down, each within its band) is isolated as
  quickly as a value out of range, which it would not be on the raw columns.
- **Scoring.** Every cycle, every host with a forest, in one worker-thread
  call: ``scout_anomaly_host_score`` is the share of the host's own training
  samples that look less anomalous than the current one (its empirical
  tail probability, so 0.999 reads the same on every host), labelled with the
  host label (``instance`` by default) so incidents and dashboards match it.
  A host with no series scored in the cycle has no score (not its last one).
- **Bounded.** At most ``max_hosts`` hosts (others are counted as dropped);
  rings are float32; a host not seen for ``forget_after`` is forgotten.
- **Restarts.** The rings are written with the detectors' checkpoints and
  read back at start; forests are refitted from them (a fit takes tens of
  milliseconds), so no model is ever unpickled.

Exposition::

    # HELP scout_anomaly_host_score How unusual the host's signals are together, 0..1.
    # TYPE scout_anomaly_host_score gauge
    scout_anomaly_host_score{instance="fw-1"} 0.9991
    # HELP scout_anomaly_hosts_modelled Hosts with a fitted multivariate model.
    # TYPE scout_anomaly_hosts_modelled gauge
    scout_anomaly_hosts_modelled 42
    # HELP scout_anomaly_hosts_dropped_total Hosts left out because max_hosts was reached.
    # TYPE scout_anomaly_hosts_dropped_total counter
    scout_anomaly_hosts_dropped_total 0
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sklearn.ensemble import IsolationForest

from ai_sidecar.anomaly.signals import SeriesKey
from ai_sidecar.config import HostModelsConfig

# Residuals beyond this many half-bands say "far out" already; larger ones would
# only stretch the forest's split ranges.
RESIDUAL_CLIP = 50.0
# Series keys whose host name is remembered, at most (a cache, cleared past it).
HOST_CACHE_LIMIT = 200_000
# Fits per cycle at most: after a restart every host is due at once.
FITS_PER_CYCLE = 20
# Subsample per tree: the IsolationForest paper found 256 enough; 128 halves
# the trees kept per host (at most 255 nodes each) at a small cost in
# resolution, which matters at a thousand hosts.
TREE_SAMPLES = 128
# Whitening floor: a direction the samples never move along (a flat signal)
# must not turn float noise into huge whitened values.
MIN_SPREAD = 0.05


class ScoredSignal(Protocol):
    """What the hosts model reads of one signal after a cycle (``SignalState`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def keys(self) -> Sequence[SeriesKey]: ...

    def latest_residuals(self) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.bool_]]:
        """Rows scored at the latest grid time, their standardised residuals, their flags."""
        ...


def _average_path_length(samples: NDArray[np.float64]) -> NDArray[np.float64]:
    """The mean depth an unsuccessful search takes in a tree of ``samples`` points.

    The normalisation of the IsolationForest paper, as scikit-learn computes it.
    """
    samples = np.asarray(samples, dtype=np.float64)
    out = np.zeros_like(samples)
    out[samples == 2] = 1.0
    many = samples > 2
    out[many] = (
        2.0 * (np.log(samples[many] - 1.0) + np.euler_gamma)
        - 2.0 * (samples[many] - 1.0) / samples[many]
    )
    return out


@dataclass(frozen=True, slots=True)
class _Forest:
    """A fitted IsolationForest as flat arrays, scored for many points in a few numpy calls.

    scikit-learn scores one tree at a time through joblib: tens of milliseconds
    for one point, which per host and per cycle adds up to seconds for a few
    hundred hosts, and its tree objects take megabytes per host. Here every
    tree is a row of node arrays (padded to the widest tree): a point walks
    all trees at once, one numpy step per level. The scores equal
    ``-IsolationForest.score_samples`` (a test holds them to it).
    """

    # Small types: a thousand hosts' forests stay near 150 MB.
    left: NDArray[np.int16]  # (trees, nodes); -1 at a leaf
    right: NDArray[np.int16]
    feature: NDArray[np.int16]  # the original column each node splits on
    threshold: NDArray[np.float64]  # kept exact: points are compared against it
    leaf_depth: NDArray[np.float32]  # path length credited at each node if it is a leaf
    normaliser: float  # trees x the average path length of max_samples points

    @classmethod
    def from_sklearn(cls, forest: Any) -> _Forest:
        trees = [estimator.tree_ for estimator in forest.estimators_]
        width = max(tree.node_count for tree in trees)
        shape = (len(trees), width)
        left = np.full(shape, -1, dtype=np.int16)
        right = np.full(shape, -1, dtype=np.int16)
        feature = np.zeros(shape, dtype=np.int16)
        threshold = np.zeros(shape)
        leaf_depth = np.zeros(shape, dtype=np.float32)
        for row, (tree, columns) in enumerate(zip(trees, forest.estimators_features_, strict=True)):
            count = tree.node_count
            left[row, :count] = tree.children_left
            right[row, :count] = tree.children_right
            # A tree sees the columns in the order bagging drew them.
            feature[row, :count] = np.asarray(columns)[np.maximum(tree.feature, 0)]
            threshold[row, :count] = tree.threshold
            leaf_depth[row, :count] = (
                tree.compute_node_depths()
                + _average_path_length(tree.n_node_samples.astype(np.float64))
                - 1.0
            )
        normaliser = len(trees) * float(
            _average_path_length(np.array([float(forest.max_samples_)]))[0]
        )
        return cls(left, right, feature, threshold, leaf_depth, normaliser)

    def anomaly(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """``2 ** -(mean path length / normaliser)`` per point: near 1 is isolated fast."""
        # Trees compare in float32, as scikit-learn's do.
        points = points.astype(np.float32).astype(np.float64)
        count, trees = points.shape[0], self.left.shape[0]
        tree = np.arange(trees)[None, :]
        node = np.zeros((count, trees), dtype=np.int16)
        point = np.arange(count)[:, None]
        while True:
            children_left = self.left[tree, node]
            inner = children_left >= 0
            if not inner.any():
                break
            values = points[point, self.feature[tree, node]]
            goes_left = values <= self.threshold[tree, node]
            step = np.where(goes_left, children_left, self.right[tree, node])
            node = np.where(inner, step, node)
        depth = self.leaf_depth[tree, node].astype(np.float64).sum(axis=1)
        if self.normaliser == 0:
            return np.ones(count)
        return np.asarray(2.0 ** (-depth / self.normaliser))


@dataclass(frozen=True, slots=True)
class _Whitening:
    """Centre, rotate onto the principal axes, scale each to unit spread."""

    centre: NDArray[np.float64]
    rotation: NDArray[np.float64]  # columns: principal axes, divided by their spread

    @classmethod
    def fit(cls, samples: NDArray[np.float64]) -> _Whitening:
        centre = samples.mean(axis=0)
        _, singular, axes = np.linalg.svd(samples - centre, full_matrices=False)
        spread = np.maximum(singular / math.sqrt(max(1, samples.shape[0] - 1)), MIN_SPREAD)
        return cls(centre, axes.T / spread)

    def apply(self, samples: NDArray[np.float64]) -> NDArray[np.float64]:
        width = self.centre.size
        # Columns added since the fit are not in the model: use what it knows.
        return (samples[:, :width] - self.centre) @ self.rotation


@dataclass(slots=True)
class _Host:
    """One host's ring of samples, its columns and, once fitted, its forest."""

    columns: list[str]
    ring: NDArray[np.float32]
    count: int = 0  # samples ever added (the ring holds the last max_samples)
    last_sample: float = -math.inf
    last_seen: float = -math.inf
    forest: _Forest | None = None
    whitening: _Whitening | None = None
    reference: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    fitted_at: float = -math.inf
    score: float = math.nan

    @property
    def samples(self) -> NDArray[np.float32]:
        size = self.ring.shape[0]
        if self.count <= size:
            return self.ring[: self.count]
        start = self.count % size
        return np.concatenate([self.ring[start:], self.ring[:start]])

    def widen(self, columns: Sequence[str]) -> None:
        """Add columns for signals seen for the first time; earlier samples read 0 there."""
        new = [c for c in columns if c not in self.columns]
        if new:
            self.columns.extend(new)
            self.ring = np.pad(self.ring, ((0, 0), (0, len(new))))

    def vector(self, features: Mapping[str, float]) -> NDArray[np.float32]:
        return np.array([features.get(c, 0.0) for c in self.columns], dtype=np.float32)


class HostModels:
    """Every host's multivariate model; ``observe`` once per scoring cycle (in a thread)."""

    def __init__(self, config: HostModelsConfig) -> None:
        self._config = config
        self._hosts: dict[str, _Host] = {}
        # Hosts refused for the budget, each counted once (bounded: hostile
        # label values must not grow it for ever; past the bound, a host may
        # be counted again).
        self._refused: set[str] = set()
        self._host_of: dict[SeriesKey, str] = {}
        self.dropped_total = 0

    @property
    def hosts(self) -> Mapping[str, _Host]:
        return self._hosts

    def observe(self, signals: Sequence[ScoredSignal], now: float) -> None:
        """Take this cycle's residuals: learn (when due), fit (when due), then score."""
        features, alarmed = self._features(signals)
        for host in self._hosts.keys() - features.keys():
            # No series of the host this cycle: its last score is not its state now.
            self._hosts[host].score = math.nan
        for host, found in features.items():
            state = self._host(host, sorted(found), now)
            if state is None:
                continue
            state.last_seen = now
            state.widen(sorted(found))
            vector = state.vector(found)
            due = now - state.last_sample >= self._config.sample_every.total_seconds()
            if due and host not in alarmed:
                state.ring[state.count % state.ring.shape[0]] = vector
                state.count += 1
                state.last_sample = now
            state.score = self._score(state, vector)
        self._fit_due(now)
        self._forget(now)

    def _features(
        self, signals: Sequence[ScoredSignal]
    ) -> tuple[dict[str, dict[str, float]], set[str]]:
        features: dict[str, dict[str, float]] = defaultdict(dict)
        alarmed: set[str] = set()
        if len(self._host_of) > HOST_CACHE_LIMIT:
            self._host_of.clear()  # series churn: rebuilt from this cycle's keys
        for signal in signals:
            rows, residual, flags = signal.latest_residuals()
            hosts = [self._host_name(signal.keys[row]) for row in rows]
            usable = np.array([bool(h) for h in hosts], dtype=bool) & np.isfinite(residual)
            if not usable.any():
                continue
            names, group = np.unique(np.array(hosts, dtype=object)[usable], return_inverse=True)
            clipped = np.clip(residual[usable], -RESIDUAL_CLIP, RESIDUAL_CLIP)
            sums = np.bincount(group, weights=clipped, minlength=names.size)
            counts = np.bincount(group, minlength=names.size)
            largest = np.zeros(names.size)
            np.maximum.at(largest, group, np.abs(clipped))
            means = sums / counts
            for index, host in enumerate(names):
                found = features[host]
                found[f"{signal.name}:mean"] = float(means[index])
                found[f"{signal.name}:max"] = float(largest[index])
            alarmed.update(names[np.unique(group[flags[usable]])])
        return features, alarmed

    def _host_name(self, key: SeriesKey) -> str:
        host = self._host_of.get(key)
        if host is None:
            host = dict(key).get(self._config.host_label, "")
            self._host_of[key] = host
        return host

    def _host(self, host: str, columns: list[str], now: float) -> _Host | None:
        state = self._hosts.get(host)
        if state is None:
            if len(self._hosts) >= self._config.max_hosts:
                if host not in self._refused:
                    if len(self._refused) >= 10 * self._config.max_hosts:
                        self._refused.clear()
                    self._refused.add(host)
                    self.dropped_total += 1
                return None
            ring = np.zeros((self._config.max_samples, len(columns)), dtype=np.float32)
            state = _Host(columns=list(columns), ring=ring, last_seen=now)
            self._hosts[host] = state
        return state

    def _score(self, state: _Host, vector: NDArray[np.float32]) -> float:
        forest, whitening = state.forest, state.whitening
        if forest is None or whitening is None:
            return math.nan
        anomaly = float(forest.anomaly(whitening.apply(vector[None, :].astype(np.float64)))[0])
        reference = state.reference
        # The share of training samples less anomalous than this one.
        return float(np.searchsorted(reference, anomaly, side="left")) / (reference.size + 1)

    def _fit_due(self, now: float) -> None:
        refit = self._config.refit.total_seconds()
        due = [
            (host, state)
            for host, state in self._hosts.items()
            if min(state.count, state.ring.shape[0]) >= self._config.min_samples
            and (state.forest is None or now - state.fitted_at >= refit)
        ]
        due.sort(key=lambda item: item[1].fitted_at)  # never-fitted and oldest first
        for host, state in due[:FITS_PER_CYCLE]:
            self._fit(host, state, now)

    def _fit(self, host: str, state: _Host, now: float) -> None:
        whitening = _Whitening.fit(state.samples.astype(np.float64))
        samples = whitening.apply(state.samples.astype(np.float64))
        # A seed per host: refits of one host are repeatable, hosts are not alike.
        seed = int.from_bytes(hashlib.blake2s(host.encode(), digest_size=4).digest(), "big")
        fitted = IsolationForest(
            n_estimators=self._config.trees,
            max_samples=min(TREE_SAMPLES, samples.shape[0]),
            random_state=seed,
        ).fit(samples)
        # Only the flat arrays are kept: scikit-learn's objects are far bigger.
        forest = _Forest.from_sklearn(fitted)
        state.forest = forest
        state.whitening = whitening
        state.reference = np.sort(forest.anomaly(samples))
        state.fitted_at = now

    def keep(self, owned: Callable[[str], bool]) -> None:
        """Drop the hosts ``owned`` refuses (another replica's share now)."""
        for host in [h for h in self._hosts if not owned(h)]:
            del self._hosts[host]

    def _forget(self, now: float) -> None:
        horizon = self._config.forget_after.total_seconds()
        for host in [h for h, s in self._hosts.items() if now - s.last_seen > horizon]:
            del self._hosts[host]

    # -- persistence: the rings only; forests are refitted from them ----------

    def state(self) -> dict[str, NDArray[Any]]:
        """Arrays to write (``np.savez``-able, no pickles)."""
        arrays: dict[str, NDArray[Any]] = {}
        hosts = sorted(self._hosts)
        arrays["hosts"] = np.array(hosts, dtype=np.str_)
        for index, host in enumerate(hosts):
            state = self._hosts[host]
            arrays[f"ring_{index}"] = state.samples
            arrays[f"columns_{index}"] = np.array(state.columns, dtype=np.str_)
            arrays[f"times_{index}"] = np.array([state.last_sample, state.last_seen])
        return arrays

    def restore(self, arrays: Mapping[str, NDArray[Any]], now: float) -> None:
        """Rings back from :meth:`state`; the forests are fitted at the next cycles."""
        try:
            hosts = [str(h) for h in arrays.get("hosts", np.array([], dtype=np.str_))]
        except TypeError:
            return  # not a list of hosts: start every host afresh
        for index, host in enumerate(hosts[: self._config.max_hosts]):
            try:
                samples = np.asarray(arrays[f"ring_{index}"], dtype=np.float32)
                columns = [str(c) for c in arrays[f"columns_{index}"]]
                last_sample, last_seen = (float(v) for v in arrays[f"times_{index}"])
            except (KeyError, ValueError, TypeError):
                continue  # written by an incompatible version: start this host afresh
            if samples.ndim != 2 or samples.shape[1] != len(columns):
                continue
            if not np.isfinite(samples).all() or math.isnan(last_sample + last_seen):
                continue  # damaged: no forest can be fitted on it, or it is never due
            samples = samples[-self._config.max_samples :]
            ring = np.zeros((self._config.max_samples, len(columns)), dtype=np.float32)
            ring[: samples.shape[0]] = samples
            self._hosts[host] = _Host(
                columns=columns,
                ring=ring,
                count=samples.shape[0],
                last_sample=last_sample,
                last_seen=max(last_seen, now - self._config.forget_after.total_seconds() / 2),
            )

    def families(self) -> list[Metric]:
        label = self._config.host_label
        score = GaugeMetricFamily(
            "scout_anomaly_host_score",
            "How unusual the host's signals are together, 0..1 (tail probability).",
            labels=[label],
        )
        for host, state in sorted(self._hosts.items()):
            if math.isfinite(state.score):
                score.add_metric([host], state.score)
        modelled = GaugeMetricFamily(
            "scout_anomaly_hosts_modelled",
            "Hosts with a fitted multivariate model.",
            value=sum(1 for s in self._hosts.values() if s.forest is not None),
        )
        dropped = CounterMetricFamily(
            "scout_anomaly_hosts_dropped",
            "Hosts left out because max_hosts was reached.",
            value=self.dropped_total,
        )
        return [score, modelled, dropped]
