"""The shipped Prometheus and Alertmanager configs, checked by their own tools."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.localstack import write_prometheus_config
from tests.firewall_names import unknown_uses, used_names

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


REPO = Path(__file__).resolve().parent.parent
# The shipped rules, and the sharded deployment's own (vmalert's, docs/sharding.md).
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml")) + sorted(
    (REPO / "prometheus" / "sharded" / "rules").glob("*.yml")
)
RULE_TESTS = sorted((REPO / "prometheus" / "tests").glob("*.yml"))
RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_URL = "https://github.com/scout-monitoring/scout/blob/main/docs/runbooks.md#"
SEVERITIES = {"critical", "warning", "info"}
# level:metric:operations, as in the Prometheus naming conventions for recording rules.
RECORD_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_]+")
ALERT_NAME = re.compile(r"[A-Z][a-z0-9]*(?:[A-Z][a-z0-9]*)*")
# Alerts that cannot have a quiet case: the Watchdog must fire always.
ALWAYS_FIRING = {"Watchdog"}
MULTI_TARGET_PATHS = {"/snmp", "/probe", "/firewall", "/winrm"}


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    # A guard against a hung promtool, not a time limit: the largest rule test
    # file takes about 25 s on a quiet 2-core machine and over 60 s beside a
    # parallel test run.
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=600, check=False
    )


def test_prometheus_config_is_valid():
    result = run("promtool", "check", "config", REPO / "prometheus" / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(kind: str) -> list[dict[str, Any]]:
    """Every rule of ``kind`` ("alert" or "record") in the shipped rule files."""
    return [
        rule
        for path in RULE_FILES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if kind in rule
    ]


def unit_tests() -> list[dict[str, Any]]:
    return [test for path in RULE_TESTS for test in load_yaml(path)["tests"]]


def promql_names(expr: str) -> set[str]:
    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))


def test_prometheus_config_scrapes_every_multi_target_endpoint():
    config = load_yaml(REPO / "prometheus" / "prometheus.yml")
    jobs = {job["metrics_path"]: job for job in config["scrape_configs"] if "metrics_path" in job}
    assert set(jobs) >= MULTI_TARGET_PATHS
    for path in MULTI_TARGET_PATHS:
        job = jobs[path]
        relabel = {
            (tuple(r.get("source_labels", ())), r["target_label"]) for r in job["relabel_configs"]
        }
        assert (("__address__",), "__param_target") in relabel, path
        assert (("__param_target",), "instance") in relabel, path
        # The target is read from __address__ before it becomes the exporter's.
        order = [r["target_label"] for r in job["relabel_configs"]]
        assert order.index("__param_target") < order.index("__address__"), path
        for sd in job["file_sd_configs"]:
            for name in sd["files"]:
                assert isinstance(load_yaml(REPO / "prometheus" / name), list), name
    honoring = [job["job_name"] for job in config["scrape_configs"] if job.get("honor_labels")]
    assert honoring == ["scout-sidecar"]


def to_exporter(job: dict[str, Any]) -> dict[str, Any]:
    """The relabelling that sends a multi-target job's scrapes to the exporter."""
    [rule] = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
    return rule


def test_new_target_files_scrape_nothing_by_default():
    for name in ("firewall.yml", "winrm.yml"):
        assert load_yaml(REPO / "prometheus" / "targets" / name) == []


def test_local_stack_points_every_multi_target_job_at_its_exporter(tmp_path):
    source = REPO / "prometheus" / "prometheus.yml"
    destination = tmp_path / "prometheus.yml"
    addresses = {"scout-exporter": "127.0.0.1:18781", "scout-sidecar": "127.0.0.1:18782"}
    write_prometheus_config(source, destination, addresses, "127.0.0.1:19093")
    config = load_yaml(destination)
    jobs = {job.get("metrics_path"): job for job in config["scrape_configs"]}
    for path in MULTI_TARGET_PATHS:
        assert to_exporter(jobs[path])["replacement"] == "127.0.0.1:18781", path
        for sd in jobs[path]["file_sd_configs"]:
            assert all(Path(f).is_absolute() and Path(f).exists() for f in sd["files"]), path
    result = run("promtool", "check", "config", destination)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_files_are_clean_for_promtool():
    result = run("promtool", "check", "rules", *RULE_FILES)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARN" not in output.upper(), output


def test_alerts_follow_the_conventions():
    alerts = rules("alert")
    assert alerts
    runbooks = RUNBOOKS.read_text()
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in alerts:
        name = rule["alert"]
        assert ALERT_NAME.fullmatch(name), f"{name} is not CamelCase"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), name
        assert re.search(rf"^## {name}$", runbooks, re.MULTILINE), f"no runbook section for {name}"


def test_firewall_rules_read_only_schema_and_flow_names():
    document = load_yaml(REPO / "prometheus" / "rules" / "firewall.rules.yml")
    exprs = [rule["expr"] for group in document["groups"] for rule in group["rules"]]
    assert any(used_names(expr) for expr in exprs)
    for expr in exprs:
        assert unknown_uses(expr) == [], expr


def test_recording_rules_are_named_level_metric_operations():
    records = rules("record")
    assert records
    for rule in records:
        assert RECORD_NAME.fullmatch(rule["record"]), rule["record"]


def test_every_alert_is_unit_tested_firing_and_quiet():
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in unit_tests():
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in rules("alert")}
    assert not alerts - firing, f"alerts without a firing case: {sorted(alerts - firing)}"
    need_quiet = alerts - ALWAYS_FIRING
    assert not need_quiet - quiet, f"alerts without a quiet case: {sorted(need_quiet - quiet)}"


def test_every_recording_rule_is_unit_tested_with_a_value():
    valued: set[str] = set()
    for test in unit_tests():
        for case in test.get("promql_expr_test", []):
            if case.get("exp_samples"):
                valued |= promql_names(case["expr"])
    records = {rule["record"] for rule in rules("record")}
    assert not records - valued, f"recording rules without a test: {sorted(records - valued)}"


def test_every_rule_file_has_unit_tests():
    rule_files = {p.name for p in RULE_FILES}
    tested = {p.name.replace(".test.yml", ".yml") for p in RULE_TESTS}
    assert rule_files
    assert rule_files <= tested


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(test_file):
    result = run("promtool", "test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


# Labels an alert carries to describe it, never the only difference between two
# alerts of one rule: the correlation layer, a filesystem's type, an interface's
# alias, a tunnel's type and remote end (its name tells tunnels apart).
DESCRIPTIVE_LABELS = {"layer", "fstype", "ifAlias", "type", "remote"}


def test_the_inhibition_compares_every_label_that_tells_alerts_apart():
    """An enriched copy mutes its own raw alert only, not a sibling on another gateway."""
    config = load_yaml(REPO / "alertmanager" / "alertmanager.yml")
    [enriched_mutes_raw] = [
        rule
        for rule in config["inhibit_rules"]
        if rule["source_matchers"] == ['scout_enriched="true"']
    ]
    carried = {
        label
        for test in unit_tests()
        for case in test.get("alert_rule_test", [])
        for alert in case.get("exp_alerts") or []
        for label in alert.get("exp_labels", {})
    }
    assert {"gateway", "exporter", "tunnel"} <= carried
    missing = carried - DESCRIPTIVE_LABELS - set(enriched_mutes_raw["equal"])
    assert not missing, f"labels the inhibition does not compare: {sorted(missing)}"


def test_alertmanager_config_is_valid():
    result = run("amtool", "check-config", REPO / "alertmanager" / "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr


# The label naming the exporter a series was scraped through (its own address on
# the exporter's job): ExporterDown and its muting join on it, per exporter.
EXPORTER_LABEL = "scout_exporter"
# Every config that scrapes devices through an exporter: the single-node one and
# the sharded deployment's shards (scripts/shards.py makes them from it).
SCRAPING_CONFIGS = [
    REPO / "prometheus" / "prometheus.yml",
    *sorted((REPO / "prometheus" / "sharded").glob("shard-*.yml")),
]


def names_its_exporter(job: dict[str, Any]) -> bool:
    """Whether ``job`` copies its final ``__address__`` (the exporter's) into the label."""
    relabel = job.get("relabel_configs", [])
    at = [i for i, r in enumerate(relabel) if r.get("target_label") == EXPORTER_LABEL]
    if len(at) != 1:
        return False
    rule = relabel[at[0]]
    copies = (
        rule.get("source_labels") == ["__address__"]
        and rule.get("action", "replace") == "replace"
        and rule.get("regex", "(.*)") == "(.*)"
        and rule.get("replacement", "$1") == "$1"
    )
    # Read before __address__ becomes the exporter's, it would name the device.
    later = all(i < at[0] for i, r in enumerate(relabel) if r.get("target_label") == "__address__")
    return copies and later


def jobs_through_the_exporter(config: dict[str, Any]) -> tuple[str, set[str]]:
    """The exporter's address, and the jobs whose scrapes are sent to it."""
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    [exporter] = jobs["scout-exporter"]["static_configs"][0]["targets"]
    through = {
        name
        for name, job in jobs.items()
        if any(r.get("replacement") == exporter for r in job.get("relabel_configs", []))
    }
    return exporter, through


@pytest.mark.parametrize("path", SCRAPING_CONFIGS, ids=lambda path: path.name)
def test_exporter_down_and_its_muting_name_every_job_scraped_through_the_exporter(path):
    """ExporterDown's evidence and the device TargetDowns it mutes are the jobs whose
    scrapes go through the exporter: a job added there and missed here would page
    once per device for a dead exporter, or keep ExporterDown from firing. Each of
    them, and the exporter's own job, names the exporter in one label, which both
    join on: without it on a job, ExporterDown would not see its devices, and two
    exporters under one Prometheus would answer for each other's."""
    config = load_yaml(path)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    _, through = jobs_through_the_exporter(config)
    assert {"snmp", "firewall", "winrm", "probe_icmp"} <= through
    labelled = {name for name, job in jobs.items() if names_its_exporter(job)}
    assert labelled == through | {"scout-exporter"}
    [expr] = [rule["expr"] for rule in rules("alert") if rule["alert"] == "ExporterDown"]
    assert re.findall(r"\bon \(([^)]*)\)", expr) == [EXPORTER_LABEL, EXPORTER_LABEL]
    in_expr = set(re.findall(r'up\{job=~"([^"]+)"\}', expr))
    am = load_yaml(REPO / "alertmanager" / "alertmanager.yml")
    [muted] = [
        rule
        for rule in am["inhibit_rules"]
        if 'alertname="ExporterDown"' in rule["source_matchers"]
        and 'job="scout-exporter"' not in rule["target_matchers"]
    ]
    assert EXPORTER_LABEL in muted["equal"]
    # Alertmanager takes a label absent on both sides as equal: a TargetDown
    # without it must not be muted by an ExporterDown without it.
    assert f'{EXPORTER_LABEL}=~".+"' in muted["target_matchers"]
    [in_inhibition] = [
        m.removeprefix('job=~"').removesuffix('"')
        for m in muted["target_matchers"]
        if m.startswith("job=~")
    ]
    assert in_expr == {in_inhibition}
    # ExporterNotScraped guards ExporterDown's join: the same device jobs.
    [guard] = [rule["expr"] for rule in rules("alert") if rule["alert"] == "ExporterNotScraped"]
    assert set(re.findall(r'up\{job=~"([^"]+)"\}', guard)) == {in_inhibition}
    assert re.findall(r"\b(?:on|by) \(([^)]*)\)", guard) == [EXPORTER_LABEL, EXPORTER_LABEL]
    pattern = re.compile(in_inhibition)
    assert {name for name in jobs if pattern.fullmatch(name)} == through


@pytest.mark.parametrize("path", SCRAPING_CONFIGS, ids=lambda path: path.name)
def test_prometheus_labels_each_device_with_the_exporters_own_label_value(path, tmp_path):
    """What Prometheus itself makes of the relabelling (promtool runs the discovery):
    every target of a job through the exporter carries the very value the
    exporter's own target does, which ExporterDown joins on."""
    config = load_yaml(path)
    _, through = jobs_through_the_exporter(config)
    targets = tmp_path / "targets.yml"
    # Several targets: a shard keeps its hashmod share of them only.
    group = {"targets": [f"192.0.2.{i}" for i in range(1, 9)], "labels": {"module": "if_mib"}}
    targets.write_text(yaml.safe_dump([group]))
    config["rule_files"] = []
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(targets)]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))

    def labels(job: str) -> list[dict[str, str]]:
        result = run("promtool", "check", "service-discovery", "--timeout=1s", copy, job)
        assert result.returncode == 0, result.stdout + result.stderr
        # Targets relabelling dropped (another shard's share) have no labels.
        return [t["labels"] for t in json.loads(result.stdout) if t["labels"]]

    [own] = labels("scout-exporter")
    assert own[EXPORTER_LABEL] == own["instance"]
    for job in sorted(through):
        devices = labels(job)
        assert devices, job
        assert {d[EXPORTER_LABEL] for d in devices} == {own[EXPORTER_LABEL]}, job
        assert all(d["instance"].startswith("192.0.2.") for d in devices), job


def _seconds(duration: str) -> float:
    """A Prometheus duration ("90s", "1m30s", "5m") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("path", SCRAPING_CONFIGS, ids=lambda path: path.name)
def test_exporter_down_fires_before_the_first_device_target_down(path):
    """ExporterDown must fire before any device TargetDown it mutes, or those page
    first. After the exporter dies, a device job's ``up`` turns 0 at the latest one
    scrape interval plus timeout later (a blackholed host), and the earliest at
    once (connection refused): so the slowest job's interval plus timeout, plus a
    rule evaluation, must fit in the gap between the two alerts' ``for``; in the
    single-node config and on every shard alike."""
    config = load_yaml(path)
    defaults = config["global"]
    alerts = {rule["alert"]: rule for rule in rules("alert")}
    [expr] = [alerts["ExporterDown"]["expr"]]
    [pattern] = set(re.findall(r'up\{job=~"([^"]+)"\}', expr))
    slowest = max(
        _seconds(job.get("scrape_interval", defaults["scrape_interval"]))
        + _seconds(job.get("scrape_timeout", defaults["scrape_timeout"]))
        for job in config["scrape_configs"]
        if re.fullmatch(pattern, job["job_name"])
    )
    gap = _seconds(alerts["TargetDown"]["for"]) - _seconds(alerts["ExporterDown"]["for"])
    assert slowest + _seconds(defaults["evaluation_interval"]) < gap
