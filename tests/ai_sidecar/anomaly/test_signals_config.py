"""The ``anomaly:`` section: strict errors with exact messages, defaults, shipped signals."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from ai_sidecar.anomaly.signals import DEFAULT_SIGNALS, raw_counter_in, series_key
from ai_sidecar.config import SidecarConfig, load_config, parse_config
from ai_sidecar.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"
RULES = Path(__file__).parents[3] / "prometheus" / "rules"

EXPECTED_ERRORS = {
    "invalid-anomaly-unknown-key.yml": '3: anomaly: unknown key "scoring_interval"',
    "invalid-keep-versions.yml": (
        "2: anomaly.keep_versions: input should be greater than or equal to 1, got 0"
    ),
    "invalid-retrain-at.yml": (
        "2: anomaly.retrain.at: should be a time of day as HH:MM (UTC), got '3am'"
    ),
    "invalid-retrain-both.yml": "2: anomaly.retrain: set at or every, not both",
    "invalid-retrain-every.yml": (
        "2: anomaly.retrain.every: should be at least 1m (each refit reads the whole history), "
        "got 30s"
    ),
    "invalid-score-interval.yml": (
        "2: anomaly.score_interval: should be at least 1s (shorter only spins the loop), got 10ms"
    ),
    "invalid-signal-budget.yml": (
        "5: anomaly.signals.0.max_series: input should be greater than or equal to 1, got 0"
    ),
    "invalid-signal-floor.yml": (
        "5: anomaly.signals.0.min_deviation: input should be greater than or equal to 0, got -1"
    ),
    "invalid-signal-history-points.yml": (
        "3: anomaly.signals.0: history / step gives 241920 points per series; "
        "at most 100000 are modelled (use a longer step)"
    ),
    "invalid-signal-history-short.yml": (
        "3: anomaly.signals.0: history (1h) holds fewer than two steps of 1h"
    ),
    "invalid-signal-keep-signal.yml": (
        "5: anomaly.signals.0.keep_labels: 'signal' is set by Scout and cannot be kept"
    ),
    "invalid-signal-name.yml": (
        "3: anomaly.signals.0.name: invalid signal name 'wan in' (letters, digits and _)"
    ),
    "invalid-signal-no-query.yml": '3: anomaly.signals.0: missing required key "query"',
    "invalid-signal-raw-counter-total.yml": (
        "4: anomaly.signals.0.query: reads the counter http_requests_total raw; "
        "model counters through rate() or increase()"
    ),
    "invalid-signal-raw-counter.yml": (
        "4: anomaly.signals.0.query: reads the counter ifHCInOctets raw; "
        "model counters through rate() or increase()"
    ),
    "invalid-signal-seasonality.yml": (
        "5: anomaly.signals.0.seasonality: input should be 'auto', 'daily', 'weekly' "
        "or 'none', got 'hourly'"
    ),
    "invalid-signal-transform.yml": (
        "5: anomaly.signals.0.transform: input should be 'none' or 'log1p', got 'log'"
    ),
    "invalid-signal-twice.yml": "1: anomaly: signal 'cpu' is defined twice",
    "invalid-signal-unknown-key.yml": '5: anomaly.signals.0: unknown key "stepp"',
}


def test_every_invalid_file_has_an_expected_message():
    assert {p.name for p in CONFIGS.glob("invalid-*.yml")} == set(EXPECTED_ERRORS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_invalid_anomaly_config_gives_exact_message(name):
    path = CONFIGS / name
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}:{EXPECTED_ERRORS[name]}"


def test_defaults_are_off_with_the_shipped_signals():
    anomaly = SidecarConfig().anomaly
    assert anomaly.enabled is False
    assert anomaly.score_interval == timedelta(minutes=1)
    assert anomaly.keep_versions == 5
    assert anomaly.retrain.daily_at == (3, 0)
    assert anomaly.retrain.drift_threshold == 0.25
    assert [s.name for s in anomaly.signals] == [str(s["name"]) for s in DEFAULT_SIGNALS]
    for signal in anomaly.signals:
        assert signal.step == timedelta(minutes=1)
        assert signal.history == timedelta(days=14)


def test_every_shipped_signal_reads_a_shipped_recording_rule():
    recorded = {
        rule["record"]
        for path in RULES.glob("*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    names = {signal.name: signal.query for signal in SidecarConfig().anomaly.signals}
    for name, query in names.items():
        used = set(re.findall(r"[a-zA-Z_]+:[a-zA-Z0-9_:]+", query))
        assert used, name
        assert used <= recorded, (name, used - recorded)
    # The concepts the issue asks for are all there.
    assert {
        "interface_bits",
        "interface_utilisation",
        "wan_throughput",
        "probe_rtt",
        "probe_loss",
        "probe_jitter",
        "host_cpu",
        "host_memory",
        "host_filesystem",
    } <= set(names)


def test_a_signal_list_replaces_the_defaults_and_dumps_back():
    text = """
anomaly:
  enabled: true
  score_interval: 30s
  retrain: {every: 6h, drift_threshold: 0.3, min_interval: 2h}
  keep_versions: 3
  series_grace: 30m
  signals:
    - name: wan_in
      query: sum by (instance) (rate(wan_octets_total[5m])) * 8
      step: 5m
      history: 28d
      transform: log1p
      seasonality: weekly
      min_deviation: 1000000
      min_level: 10
      max_series: 50
      keep_labels: [instance]
"""
    config = parse_config(text, "anomaly.yml")
    anomaly = config.anomaly
    assert anomaly.enabled
    assert anomaly.score_interval == timedelta(seconds=30)
    assert anomaly.retrain.every == timedelta(hours=6)
    assert anomaly.retrain.daily_at is None
    (signal,) = anomaly.signals
    assert signal.step == timedelta(minutes=5)
    assert signal.history == timedelta(days=28)
    assert (signal.transform, signal.seasonality) == ("log1p", "weekly")
    assert (signal.min_deviation, signal.min_level, signal.max_series) == (1e6, 10.0, 50)
    assert signal.keep_labels == ["instance"]
    assert anomaly.signal("wan_in") is signal
    with pytest.raises(KeyError, match="no signal 'cpu' \\(configured: wan_in\\)"):
        anomaly.signal("cpu")
    shown = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    assert "history: 4w" in shown
    assert parse_config(shown, "dumped.yml") == config


def test_raw_counter_heuristic():
    assert raw_counter_in("ifHCInOctets * 8") == "ifHCInOctets"
    assert raw_counter_in("node_cpu_seconds_total") == "node_cpu_seconds_total"
    assert raw_counter_in("rate(ifHCInOctets[5m]) * 8") is None
    assert raw_counter_in("increase(errors_total[1h])") is None
    assert raw_counter_in("instance:scout_host_cpu_busy:ratio_rate5m") is None


def test_series_key_keeps_only_the_kept_labels():
    labels = {"__name__": "x", "job": "snmp", "instance": "sw1", "ifIndex": "3", "signal": "s"}
    assert series_key(labels, ["instance", "job", "ifName"]) == (
        ("instance", "sw1"),
        ("job", "snmp"),
    )
    assert series_key(labels, None) == (("ifIndex", "3"), ("instance", "sw1"), ("job", "snmp"))
