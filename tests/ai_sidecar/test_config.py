"""The sidecar's config file: every error has an invalid-*.yml case with its exact message."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from ai_sidecar.config import PRESETS, SidecarConfig, labels_match, load_config, parse_config
from ai_sidecar.errors import ConfigError
from exporter.common.durations import format_duration, parse_duration

CONFIGS = Path(__file__).parent / "configs"

EXPECTED_ERRORS = {
    "invalid-unknown-key.yml": '3: correlation: unknown key "windw"',
    "invalid-unknown-top-level-key.yml": '1: top level: unknown key "corelation"',
    "invalid-duplicate-key.yml": '3: duplicate key "window"',
    "invalid-top-level-list.yml": "1: the top level must be a mapping",
    "invalid-section-not-mapping.yml": "1: correlation: should be a mapping, got 'network'",
    "invalid-env-unset.yml": '2: environment variable "SCOUT_TEST_UNSET_VARIABLE" is not set',
    "invalid-duration-spelling.yml": (
        "2: correlation.window: invalid duration '5 minutes' "
        "(write it as Prometheus does: 30s, 5m, 1h30m)"
    ),
    "invalid-duration-order.yml": (
        "2: correlation.window: invalid duration '1m5h' "
        "(write it as Prometheus does: 30s, 5m, 1h30m)"
    ),
    "invalid-duration-number.yml": (
        "2: correlation.max_span: should be a duration such as 30s, 5m or 1h30m, got 3600"
    ),
    "invalid-duration-zero.yml": "2: correlation.flap_window: should be longer than 0s",
    "invalid-cofiring-once.yml": (
        "3: correlation.cofiring.min_together: input should be greater than or equal to 2, got 1"
    ),
    "invalid-preset.yml": (
        "2: correlation.preset: input should be 'network', 'firewall' or 'windows', got 'cloud'"
    ),
    "invalid-resolve.yml": (
        "2: correlation.resolve: input should be 'all_members' or 'root_cause', got 'first_member'"
    ),
    "invalid-group-by-empty.yml": (
        "2: correlation.group_by: should list at least one set of labels"
    ),
    "invalid-group-by-empty-entry.yml": "2: correlation.group_by: entry 1 names no label",
    "invalid-group-by-label.yml": ("3: correlation.group_by.0.1: invalid label name 'device-name'"),
    "invalid-layer.yml": (
        "4: correlation.layers.0.layer: input should be 'device', 'link', 'network', 'host' "
        "or 'service', got 'physical'"
    ),
    "invalid-layer-regex.yml": (
        "3: correlation.layers.0.match.alertname: invalid regular expression 'Wan(Loss': "
        "missing ), unterminated subpattern at position 3"
    ),
    "invalid-layer-missing-match.yml": '3: correlation.layers.0: missing required key "match"',
    "invalid-criticality-level.yml": (
        "4: priority.criticality.0.level: input should be 'critical', 'high', 'normal' "
        "or 'low', got 'urgent'"
    ),
    "invalid-match-label-name.yml": (
        "3: priority.criticality.0.match.site-name: invalid label name 'site-name'"
    ),
    "invalid-runbook-empty.yml": "2: runbooks.0: needs actions or a url",
    "invalid-runbook-url.yml": (
        "3: runbooks.0.url: should be an http:// or https:// URL, got 'javascript:alert(1)'"
    ),
    "invalid-runbook-blank-action.yml": "3: runbooks.0.actions: action 1 is empty",
    "invalid-runbooks-not-a-list.yml": (
        "1: runbooks: input should be a valid list, "
        "got {'match': {'alertname': 'InterfaceDown'}, 'actions': ['x']}"
    ),
    "invalid-context-step.yml": (
        "1: analysis: context_step (1h) is longer than context_range (15m)"
    ),
    "invalid-context-points.yml": (
        "1: analysis: context_range / context_step gives 86400 points; "
        "Prometheus answers at most 11000"
    ),
    "invalid-repost-interval.yml": (
        "1: return_trip: repost_interval (2m) must be shorter than keepalive (1m), "
        "or enriched alerts expire between posts"
    ),
    "invalid-external-url-credentials.yml": (
        "2: return_trip.external_url: should not carry a user:password part"
    ),
    "invalid-store-retention.yml": "2: store.retention: should be longer than 0s",
    "invalid-console-idle-timeout.yml": (
        "1: console: idle_timeout (2h) must not be longer than session_lifetime (1h)"
    ),
    "invalid-console-login-limit.yml": (
        "3: console.login_limit.max_failures: input should be greater than or equal to 1, got 0"
    ),
}


def test_every_invalid_file_has_an_expected_message():
    assert {p.name for p in CONFIGS.glob("invalid-*.yml")} == set(EXPECTED_ERRORS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_invalid_config_gives_exact_message(name, monkeypatch):
    monkeypatch.delenv("SCOUT_TEST_UNSET_VARIABLE", raising=False)
    path = CONFIGS / name
    with pytest.raises(ConfigError) as caught:
        load_config(path, expand_env=True)
    assert str(caught.value) == f"{path}:{EXPECTED_ERRORS[name]}"
    # No pydantic error chained behind ours: it would repeat the values.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_url_credentials_are_not_repeated_in_the_error():
    with pytest.raises(ConfigError) as caught:
        load_config(CONFIGS / "invalid-external-url-credentials.yml")
    assert "hunter2" not in str(caught.value)


def test_full_example_sets_every_key():
    config = load_config(CONFIGS / "full.yml")
    correlation = config.correlation
    assert correlation.preset == "firewall"
    assert correlation.group_keys() == (("site", "zone"), ("firewall",), ("instance",))
    assert correlation.window == timedelta(minutes=2)
    assert correlation.max_span == timedelta(hours=1, minutes=30)
    assert correlation.flap_window == timedelta(minutes=10)
    assert correlation.resolve == "root_cause"
    assert [rule.layer for rule in correlation.layers] == ["link", "service"]
    # Configured layer rules come before the preset's own.
    rules = correlation.layer_rules()
    assert rules[0][1] == "link"
    assert rules[0][0]["alertname"].pattern == "Wan.*Loss"
    assert len(rules) == 2 + len(PRESETS["firewall"].layers)
    # The YAML anchor under x-* is usable and the x-* key itself is ignored.
    assert config.priority.level_of({"site": "dc1"}) == "critical"
    assert config.priority.level_of({"site": "lab", "env": "lab"}) == "low"
    assert config.runbooks[0].actions[0] == "Check the optic and the patch lead on both ends."
    assert config.runbooks[1].actions == []
    assert config.runbooks[1].url == "https://wiki.example.net/runbooks/probes"
    assert config.analysis.context_timeout == timedelta(milliseconds=1500)
    assert config.analysis.context_range == timedelta(minutes=30)
    assert config.analysis.context_step == timedelta(seconds=30)
    console = config.console
    assert console.session_lifetime == timedelta(hours=8)
    assert console.idle_timeout == timedelta(minutes=30)
    assert console.secure_cookies is True
    assert console.users_file == Path("/etc/scout/console-users.yml")
    assert console.login_limit.max_failures == 3
    assert console.login_limit.max_failures_per_address == 50
    assert console.login_limit.window == timedelta(minutes=10)
    assert console.login_limit.lockout == timedelta(hours=1)
    trip = config.return_trip
    assert trip.keepalive == timedelta(minutes=10)
    assert trip.repost_interval == timedelta(minutes=2)
    assert trip.resolved_repeat_for == timedelta(0)
    assert trip.resolved_repeat_interval == timedelta(seconds=30)
    assert trip.retry_backoff_max == timedelta(minutes=2)
    assert trip.grafana_url == "https://grafana.example.net"
    assert trip.external_url == "https://scout.example.net/sidecar"
    assert config.store.retention == timedelta(days=14)
    graphs = config.graphs
    assert graphs.enabled is False
    assert graphs.range == timedelta(hours=3)
    assert graphs.url_ttl == timedelta(days=1)
    assert graphs.key_file == Path("/etc/scout/secrets/graph-key")


def test_dumped_config_reads_back_the_same():
    config = load_config(CONFIGS / "full.yml")
    shown = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    assert "window: 2m" in shown
    assert "max_span: 1h30m" in shown
    assert "context_timeout: 1s500ms" in shown
    assert "retention: 2w" in shown
    assert parse_config(shown, "dumped.yml") == config


def test_no_file_and_empty_file_give_the_defaults(tmp_path):
    empty = tmp_path / "empty.yml"
    empty.write_text("# nothing yet\n")
    defaults = load_config(None)
    assert load_config(empty) == defaults == SidecarConfig()
    assert parse_config("{}", "braces.yml") == defaults
    assert defaults.correlation.preset == "network"
    assert defaults.correlation.group_keys() == (("site",), ("device",), ("instance",))
    assert defaults.correlation.window == timedelta(minutes=5)
    assert defaults.correlation.max_span == timedelta(hours=1)
    assert defaults.correlation.flap_window == timedelta(minutes=15)
    assert defaults.correlation.resolve == "all_members"
    assert defaults.analysis.context_timeout == timedelta(seconds=2)
    assert defaults.return_trip.keepalive == timedelta(minutes=5)
    assert defaults.return_trip.grafana_url is None
    assert defaults.store.retention == timedelta(days=30)


def test_missing_file_is_the_sidecars_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yml: cannot read config: No such file"):
        load_config(tmp_path / "nope.yml")


def test_all_errors_are_reported_at_once():
    text = "correlation: {window: 5}\nanalysis: {context_timeout: 2 s}\nextra: 1\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "many.yml")
    assert str(caught.value).splitlines() == [
        "many.yml:1: correlation.window: should be a duration such as 30s, 5m or 1h30m, got 5",
        "many.yml:2: analysis.context_timeout: invalid duration '2 s' "
        "(write it as Prometheus does: 30s, 5m, 1h30m)",
        'many.yml:3: top level: unknown key "extra"',
    ]


def test_env_expansion_is_opt_in(monkeypatch):
    monkeypatch.setenv("SCOUT_TEST_GRAFANA", "https://grafana.internal")
    text = "return_trip: {grafana_url: '${SCOUT_TEST_GRAFANA}'}\n"
    with pytest.raises(ConfigError, match="should be an http"):
        parse_config(text, "env.yml")
    expanded = parse_config(text, "env.yml", expand_env=True)
    assert expanded.return_trip.grafana_url == "https://grafana.internal"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("2w", timedelta(weeks=2)),
        ("1y", timedelta(days=365)),
        ("250ms", timedelta(milliseconds=250)),
        ("1m0s", timedelta(minutes=1)),
        ("0", timedelta(0)),
    ],
)
def test_prometheus_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "1.5h", "-5m", "5M", "1m1h", "1h 30m", "5mins", "ms"])
def test_durations_prometheus_would_refuse(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=36), "1d12h"),
        (timedelta(days=8), "1w1d"),
        (timedelta(milliseconds=1500), "1s500ms"),
    ],
)
def test_durations_are_shown_in_prometheus_spelling(value, shown):
    assert format_duration(value) == shown
    assert parse_duration(shown) == value


def test_matchers_are_anchored_and_a_missing_label_is_empty():
    match = {"site": re.compile("hq"), "team": re.compile("")}
    assert labels_match(match, {"site": "hq"})
    assert not labels_match(match, {"site": "hq2"})
    assert not labels_match(match, {"site": "hq", "team": "noc"})
    assert not labels_match(match, {})


def test_first_criticality_rule_wins():
    config = parse_config(
        "priority:\n  criticality:\n"
        "    - {match: {device: 'core.*'}, level: critical}\n"
        "    - {match: {site: hq}, level: low}\n",
        "rules.yml",
    )
    assert config.priority.level_of({"site": "hq", "device": "core1"}) == "critical"
    assert config.priority.level_of({"site": "hq", "device": "edge1"}) == "low"
    assert config.priority.level_of({"site": "branch"}) == "normal"


def test_group_by_replaces_the_presets_keys():
    config = parse_config("correlation: {preset: windows, group_by: [[rack]]}", "g.yml")
    assert config.correlation.group_keys() == (("rack",),)
    windows = parse_config("correlation: {preset: windows}", "w.yml")
    assert windows.correlation.group_keys() == (("site",), ("host",), ("instance",))


@pytest.mark.parametrize(
    "url",
    [
        "htps://proxy-user:Pr0xyS3cret@llm-proxy.example:8443/v1",
        "proxy-user:Pr0xyS3cret@llm-proxy.example:8443",
        "https://proxy-user:Pr0xyS3cret@llm-proxy.example:8443/v1",
    ],
)
def test_a_url_with_a_password_is_refused_without_repeating_it(url: str) -> None:
    # The message goes to the log and to the 400 answer of POST /-/reload.
    for text in (f"llm: {{base_url: '{url}'}}", f"return_trip: {{external_url: '{url}'}}"):
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "secret-url.yml")
        assert "Pr0xyS3cret" not in str(caught.value)
        assert "user:password" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (".inf", "input should be a finite number, got inf"),
        ("-.inf", "input should be a finite number, got -inf"),
        (".nan", "input should be a finite number, got nan"),
        ("-0.5", "input should be greater than or equal to 0, got -0.5"),
    ],
)
@pytest.mark.parametrize(
    "key", ["price.input_per_million", "price.output_per_million", "budget.cost_per_month"]
)
def test_an_llm_price_or_budget_must_be_a_finite_amount(key: str, value: str, problem: str) -> None:
    # YAML's .inf and .nan are floats: an infinite price would make every call's
    # cost, the month's spend and the budget check infinite or NaN.
    section, field = key.split(".")
    with pytest.raises(ConfigError) as caught:
        parse_config(f"llm:\n  {section}: {{{field}: {value}}}\n", "price.yml")
    assert str(caught.value) == f"price.yml:2: llm.{key}: {problem}"
    kept = parse_config(f"llm:\n  {section}: {{{field}: 1.5}}\n", "price.yml")
    assert getattr(getattr(kept.llm, section), field) == 1.5


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (".inf", "input should be a finite number, got inf"),
        (".nan", "input should be a finite number, got nan"),
    ],
)
@pytest.mark.parametrize(
    ("yaml", "where"),
    [
        (
            "anomaly:\n  signals:\n    - {{name: wan, query: up, min_deviation: {value}}}\n",
            "anomaly.signals.0.min_deviation",
        ),
        (
            "anomaly:\n  signals:\n    - {{name: wan, query: up, min_level: {value}}}\n",
            "anomaly.signals.0.min_level",
        ),
        ("anomaly:\n  retrain: {{drift_threshold: {value}}}\n", "anomaly.retrain.drift_threshold"),
    ],
)
def test_anomaly_thresholds_must_be_finite(yaml: str, where: str, value: str, problem: str) -> None:
    # An infinite threshold would silently switch the detector or the drift refit off.
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.format(value=value), "anomaly.yml")
    assert f"{where}: {problem}" in str(caught.value)
    assert parse_config(yaml.format(value="2.5"), "anomaly.yml").anomaly is not None
