"""Grafana provisioning and dashboards, validated without a Grafana server.

Three layers, as no Grafana can run here:

- structure, in Python: variables, datasource references, queries, layout,
  ``$__rate_interval``, and the provisioning paths against docker-compose.yml;
- types, against Grafana's own schema: each dashboard is type-checked with
  ``tsc --strict`` as a ``Dashboard`` from ``@grafana/schema``, at the version
  of the Grafana image docker-compose.yml runs (npm install into a cache dir);
- PromQL: every panel's queries run against a real Prometheus loaded with the
  shipped rule files, scraping a real exporter and a real sidecar.
"""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_sidecar.anomaly.scoring import build_families
from exporter.targets.firewall.scraper import FIREWALL_STATUS
from scripts.localstack import (
    Service,
    exporter_service,
    free_port,
    prometheus_service,
    sidecar_service,
)
from tests.conftest import http_get, wait_for
from tests.firewall_names import FLOW_METRICS, KNOWN, TARGET_LABELS, unknown_uses, used_names
from tests.peers.firewall_stack import EXPORTER_FLAGS, FirewallSources
from tests.peers.snmp import RealSnmpd
from tests.peers.winrm import WindowsHosts

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


REPO = Path(__file__).resolve().parent.parent
GRAFANA = REPO / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
DASHBOARD_NAMES = ("network", "firewall", "servers", "ai-insights")
DATASOURCE_REFS = {"${datasource}", "$datasource"}
# Panel types that carry no query.
NO_QUERY_TYPES = {"row", "text", "news", "dashlist"}
# Jobs scraped more slowly than the datasource's timeInterval, and the metrics
# they bring: panels reading them set their min interval to the job's scrape
# interval, so $__rate_interval spans at least four of its samples.
SLOW_JOB_METRICS = {
    "snmp": re.compile(r"\b(if[A-Z]\w*|\w*ifIndex:\w+|instance:wan_\w+)"),
    "firewall": re.compile(r"\bscout_firewall_\w+"),
    "winrm": re.compile(r"\bwindows_\w+"),
}


def load(name: str) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((DASHBOARD_DIR / f"{name}.json").read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels of collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def query_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in panels(dashboard) if p["type"] not in NO_QUERY_TYPES)


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, value) pair in a JSON document."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


@pytest.fixture(params=DASHBOARD_NAMES)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


# ---------------------------------------------------------------- structure


def test_the_four_dashboards_are_shipped_and_nothing_else():
    assert sorted(p.stem for p in DASHBOARD_DIR.glob("*.json")) == sorted(DASHBOARD_NAMES)
    uids = [load(name)["uid"] for name in DASHBOARD_NAMES]
    assert len(set(uids)) == len(uids), uids


def test_dashboard_is_a_grafana_11_model(dashboard):
    assert dashboard["schemaVersion"] == 39
    assert dashboard["title"].startswith("Scout / ")
    assert "scout" in dashboard["tags"]
    # Provisioned from a file, the dashboard has no instance-specific id.
    assert "id" not in dashboard or dashboard["id"] is None


def test_datasource_variable(dashboard):
    datasource = variables(dashboard)["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"


def test_job_and_instance_variables_are_chained(dashboard):
    found = variables(dashboard)
    job, instance = found["job"], found["instance"]
    assert job["type"] == instance["type"] == "query"
    assert job["datasource"]["uid"] in DATASOURCE_REFS
    assert instance["datasource"]["uid"] in DATASOURCE_REFS
    assert re.fullmatch(r"label_values\((.+), job\)", variable_query(job)), variable_query(job)
    instance_query = variable_query(instance)
    assert re.fullmatch(r"label_values\((.+), instance\)", instance_query), instance_query
    assert 'job=~"$job"' in instance_query
    # Grafana resolves variables in order: the job must come before its instances.
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names.index("datasource") < names.index("job") < names.index("instance")


def test_every_variable_a_query_uses_is_defined_before_it(dashboard):
    names: list[str] = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            used = set(re.findall(r"\$\{?(\w+)", variable_query(variable)))
            assert used <= set(names), (variable["name"], used - set(names))
        names.append(variable["name"])
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= set(names), (panel["title"], used - set(names))


def test_every_panel_has_a_query(dashboard):
    for panel in query_panels(dashboard):
        targets = panel.get("targets", [])
        assert targets, panel["title"]
        for target in targets:
            assert target.get("expr", "").strip(), (panel["title"], target.get("refId"))
        ref_ids = [t["refId"] for t in targets]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]


def test_every_panel_and_target_uses_the_datasource_variable(dashboard):
    for panel in query_panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], (panel["title"], target["refId"])


def test_no_datasource_uid_is_hard_coded(dashboard):
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert all(ds["uid"] not in json.dumps(dashboard) for ds in provisioned)
    references = [
        (path, node)
        for path, node in walk(dashboard)
        if path.endswith(".datasource") and node is not None
    ]
    assert references
    for path, reference in references:
        assert isinstance(reference, dict), (path, reference)
        # Grafana's built-in annotation source is no data source of ours.
        if reference.get("type") == "grafana" and reference.get("uid") == "-- Grafana --":
            continue
        assert reference.get("uid") in DATASOURCE_REFS, (path, reference)


def test_panel_ids_and_titles_are_unique(dashboard):
    ids = [p["id"] for p in panels(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(set(ids)) == len(ids), ids
    titles = [p["title"] for p in query_panels(dashboard)]
    assert len(set(titles)) == len(titles), titles


def test_panels_fit_the_grid_and_do_not_overlap(dashboard):
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:  # top level: collapsed rows hold their own layout
        pos = panel["gridPos"]
        assert min(pos["w"], pos["h"]) > 0, panel["title"]
        assert min(pos["x"], pos["y"]) >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_every_range_is_the_rate_interval(dashboard):
    counted = 0
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            for function in re.finditer(r"\b(rate|irate|increase)\s*\(", expr):
                counted += 1
                # The function's argument, up to its closing parenthesis.
                depth, end = 1, function.end()
                while depth:
                    depth += {"(": 1, ")": -1}.get(expr[end], 0)
                    end += 1
                ranges = re.findall(r"\[([^\]]*)\]", expr[function.end() : end])
                assert ranges == ["$__rate_interval"], (panel["title"], expr)
            # No fixed window anywhere else either.
            assert set(re.findall(r"\[([^\]]*)\]", expr)) <= {"$__rate_interval"}, expr
    assert counted, "a dashboard without a single rate() is suspicious"


def test_panels_of_slowly_scraped_jobs_set_their_min_interval(dashboard):
    prometheus = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    default = prometheus["global"]["scrape_interval"]
    interval = {
        job["job_name"]: job.get("scrape_interval", default) for job in prometheus["scrape_configs"]
    }
    for panel in query_panels(dashboard):
        exprs = " ".join(t["expr"] for t in panel["targets"])
        for job, metrics in SLOW_JOB_METRICS.items():
            if metrics.search(exprs):
                assert panel.get("interval") == interval[job], (panel["title"], job)


def test_every_panel_has_a_unit(dashboard):
    for panel in query_panels(dashboard):
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit, panel["title"]
        exprs = [t["expr"] for t in panel["targets"]]
        if all(re.search(r"_bytes_total\b.*\* 8|:\w*_bits:", e) for e in exprs):
            assert unit == "bps", panel["title"]
        if all(re.search(r"(utilisation|loss):?\w*ratio", e) for e in exprs):
            assert unit == "percentunit", panel["title"]


def test_recorded_series_the_dashboards_use_are_recorded_by_shipped_rules(dashboard):
    recorded = {
        rule["record"]
        for path in (REPO / "prometheus" / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            # level:metric:operations names, outside label matchers' values.
            names = re.findall(
                r"\b[a-zA-Z_]+:[a-zA-Z0-9_:]+", re.sub(r'"[^"]*"', "", target["expr"])
            )
            assert set(names) <= recorded, (panel["title"], set(names) - recorded)


def test_anomaly_series_the_dashboards_use_are_exported_by_the_scoring_loop(dashboard):
    exported = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in build_families([], 0.0)
    }
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            names = set(re.findall(r"\bscout_anomaly_\w+", target["expr"]))
            assert names <= exported, (panel["title"], names - exported)


def test_firewall_and_flow_names_the_dashboards_use_are_in_the_schema(dashboard):
    queries = [variable_query(v) for v in dashboard["templating"]["list"] if v["type"] == "query"]
    queries += [t["expr"] for panel in query_panels(dashboard) for t in panel["targets"]]
    for promql in queries:
        assert unknown_uses(promql) == [], promql


def test_the_firewall_dashboard_reads_every_part_of_the_schema():
    dashboard = load("firewall")
    used = {
        name
        for panel in query_panels(dashboard)
        for target in panel["targets"]
        for name in used_names(target["expr"])
    }
    # Everything but the flow collector's own packet counter has a panel.
    assert set(KNOWN) - used == {"scout_flow_talker_packets_total", "scout_flow_packets_total"}
    # The session ratio comes from its recording rule, which the alerts share.
    [ratio] = [p for p in query_panels(dashboard) if p["title"] == "Session table used"]
    assert [t["expr"].split("{")[0] for t in ratio["targets"]] == [
        "instance:scout_firewall_sessions_used:ratio"
    ]


@pytest.mark.parametrize(
    ("promql", "unknown"),
    [
        # The names the dashboard guessed before the schema existed.
        (
            'scout_firewall_conntrack_entries{job=~"$job"}',
            ["metric scout_firewall_conntrack_entries"],
        ),
        (
            "sum by (src_addr) (rate(scout_flow_top_bytes_total[5m]))",
            ["metric scout_flow_top_bytes_total"],
        ),
        (
            'scout_flow_talker_bytes_total{src_addr="10.0.0.1"}',
            ["label src_addr of scout_flow_talker_bytes_total"],
        ),
        (
            'scout_firewall_vpn_tunnel_up{peer="b1", tunnel="x=y"}',
            ["label peer of scout_firewall_vpn_tunnel_up"],
        ),
        # Recorded series and the target's own labels are not the schema's business.
        ('instance:scout_firewall_sessions_used:ratio{job="firewall"}', []),
        ('scout_firewall_sessions{job="firewall", instance="fw1", firewall="hq"}', []),
    ],
)
def test_the_schema_check_rejects_guessed_names_and_labels(promql, unknown):
    assert unknown_uses(promql) == unknown


def test_the_band_panel_shows_each_series_observed_value_between_its_band():
    [panel] = [p for p in panels(load("ai-insights")) if p["title"].endswith("band: $signal")]
    assert panel["repeat"] == "signal"
    ref_of = {
        re.findall(r"\bscout_anomaly_\w+", t["expr"])[0]: t["refId"] for t in panel["targets"]
    }
    assert set(ref_of) == {
        "scout_anomaly_observed",
        "scout_anomaly_lower",
        "scout_anomaly_upper",
        "scout_anomaly_expected",
    }
    style = {
        o["matcher"]["options"]: {prop["id"]: prop["value"] for prop in o["properties"]}
        for o in panel["fieldConfig"]["overrides"]
        if o["matcher"]["id"] == "byFrameRefID"
    }
    # The observed value is the bold solid line; the band's edges are dashed.
    assert style[ref_of["scout_anomaly_observed"]] == {"custom.lineWidth": 2}
    for edge in ("scout_anomaly_lower", "scout_anomaly_upper"):
        assert style[ref_of[edge]]["custom.lineStyle"]["fill"] == "dash"
    assert style[ref_of["scout_anomaly_expected"]]["custom.lineStyle"]["fill"] == "dot"


def test_dashboard_provider_reads_the_directory_compose_mounts():
    provider_file = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "scout.yml").read_text()
    )
    [provider] = provider_file["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = {}
    for volume in compose["services"]["grafana"]["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = source
    assert path in mounts, (path, mounts)
    assert (REPO / mounts[path]).resolve() == DASHBOARD_DIR
    # The provisioning directory itself is where Grafana looks for providers.
    assert (REPO / mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA / "provisioning"


def test_datasource_time_interval_is_the_scrape_interval():
    [datasource] = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    prometheus = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    assert datasource["type"] == "prometheus"
    assert datasource["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]


# ---------------------------------------------------------------- types

TYPESCRIPT_VERSION = "5.6.3"
# A dashboard's JSON holds an enum's value ("absolute"), never its TypeScript
# name (ThresholdsMode.Absolute): accept each string enum's values, and check
# everything else exactly as the schema declares it.
DASHBOARD_TS = """\
import type {{ Dashboard }} from '@grafana/schema';

type AsJson<T> = T extends string
  ? `${{T}}`
  : T extends readonly (infer U)[]
    ? AsJson<U>[]
    : T extends object
      ? {{ [K in keyof T]: AsJson<T[K]> }}
      : T;

export const dashboard: AsJson<Dashboard> = {json};
"""


def grafana_version() -> str:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    image = compose["services"]["grafana"]["image"]
    match = re.fullmatch(r"grafana/grafana(?:-oss)?:(\d+\.\d+\.\d+)", image)
    assert match, image
    return match.group(1)


@pytest.fixture(scope="module")
def tsc() -> list[str]:
    """``tsc`` with ``@grafana/schema`` at the compose file's Grafana version, cached."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not installed: the dashboards are type-checked with "
            "TypeScript; install them with `apt-get install -y nodejs npm` (make test does)"
        )
    version = grafana_version()
    cache = (
        Path(os.environ.get("SCOUT_GRAFANA_SCHEMA_CACHE", Path.home() / ".cache" / "scout"))
        / f"grafana-schema-{version}-ts-{TYPESCRIPT_VERSION}"
    )
    schema = cache / "node_modules" / "@grafana" / "schema" / "package.json"
    compiler = cache / "node_modules" / "typescript" / "bin" / "tsc"
    if not (schema.exists() and compiler.exists()):
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "package.json").write_text('{"private": true}\n')
        result = subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--save-exact",
                f"@grafana/schema@{version}",
                f"typescript@{TYPESCRIPT_VERSION}",
            ],
            cwd=cache,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"npm install failed:\n{result.stdout}\n{result.stderr}"
    assert json.loads(schema.read_text())["version"] == version
    return ["node", str(compiler), "--project"]


def typecheck(
    tsc: list[str], workdir: Path, dashboards: dict[str, dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """Run ``tsc --noEmit --strict`` over one generated .ts file per dashboard."""
    schema = Path(tsc[1]).parent.parent.parent / "@grafana" / "schema"
    workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, document in dashboards.items():
        path = workdir / f"{name}.ts"
        path.write_text(DASHBOARD_TS.format(json=json.dumps(document, indent=2)))
        files.append(path.name)
    config = {
        "compilerOptions": {
            "module": "commonjs",
            "moduleResolution": "node10",
            "target": "es2020",
            "types": [],
            "baseUrl": ".",
            "paths": {"@grafana/schema": [str(schema)]},
        },
        "files": files,
    }
    (workdir / "tsconfig.json").write_text(json.dumps(config))
    return subprocess.run(
        [*tsc, str(workdir / "tsconfig.json"), "--noEmit", "--strict", "--pretty", "false"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dashboards_type_check_against_grafanas_schema(tsc, tmp_path):
    result = typecheck(tsc, tmp_path, {name: load(name) for name in DASHBOARD_NAMES})
    assert result.returncode == 0, result.stdout + result.stderr


def _set(document: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    node: Any = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


def test_the_type_check_catches_wrong_fields(tsc, tmp_path):
    network = load("network")
    stat = next(i for i, p in enumerate(network["panels"]) if p["type"] == "stat")
    broken = {
        "schema-version-string": _set(network, ["schemaVersion"], "39"),
        "grid-width-string": _set(network, ["panels", stat, "gridPos", "w"], "12"),
        "unknown-threshold-mode": _set(
            network, ["panels", stat, "fieldConfig", "defaults", "thresholds", "mode"], "relative!"
        ),
        "misspelt-key": _set(network, ["templatng"], {"list": []}),
        "variable-without-name": _set(
            network, ["templating", "list"], [{"type": "query", "label": "x"}]
        ),
    }
    result = typecheck(tsc, tmp_path, broken)
    assert result.returncode != 0
    for name in broken:
        assert f"{name}.ts(" in result.stdout, (name, result.stdout)


# ---------------------------------------------------------------- PromQL

# Panels that may be empty in the test stack, and why. Every other query of
# every panel must return data there.
EXPECTED_EMPTY = {
    **{
        ("network", title): "the test agent has no interface named as a WAN link"
        for title in ("WAN throughput", "WAN interfaces")
    },
    **{
        ("ai-insights", title): "no signal is trained in the test stack: no scores, bands or models"
        for title in (
            "Anomaly score",
            "Top anomalous series now",
            "Observed and expected band: $signal",
            "Models",
            "Model age",
            "Series tracked",
            "Series dropped and points missing",
            "Scoring lag",
            "Drift",
        )
    },
    ("ai-insights", "Firing alerts"): "nothing need fire in the test stack",
    ("ai-insights", "Analysis failures"): "the local analyst does not fail here",
    # The return trip's posts succeed (refId A); only failures (B) stay empty.
    ("ai-insights", "Return trip", "B"): "posts to the test's Alertmanager do not fail",
}
# $__rate_interval as Grafana computes it for a 1 s scrape (4 x scrape interval
# would be 4s); a minute keeps the fixed-window queries comparable.
RATE_INTERVAL = "1m"
INTERVAL = "15s"
TOKEN = "grafana-test-token"


def substitute(expr: str) -> str:
    """A panel's query as Grafana sends it, with every variable at All."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", INTERVAL)
    return re.sub(r'=~"\$\{?\w+\}?"', '=~".*"', expr)


def all_queries() -> list[tuple[str, str, str, str]]:
    return [
        (name, panel["title"], target["refId"], target["expr"])
        for name in DASHBOARD_NAMES
        for panel in query_panels(load(name))
        for target in panel["targets"]
    ]


def may_be_empty(name: str, title: str, ref_id: str) -> bool:
    return (name, title) in EXPECTED_EMPTY or (name, title, ref_id) in EXPECTED_EMPTY


def test_expected_empty_names_real_panels():
    queries = {(name, title) for name, title, _, _ in all_queries()}
    targets = {(name, title, ref) for name, title, ref, _ in all_queries()}
    for key in EXPECTED_EMPTY:
        assert key in (queries if len(key) == 2 else targets), key


class AlertmanagerSink(http.server.BaseHTTPRequestHandler):
    """Just enough of Alertmanager's API v2 for the sidecar's return trip."""

    def do_GET(self) -> None:
        self._answer(b"[]")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer(b"")

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def query(prometheus: str, expr: str) -> dict[str, Any]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http_get(url)
    result: dict[str, Any] = json.loads(body)
    assert "data" in result, (status, expr, result)
    return result


def unhealthy_targets(prometheus: str) -> list[tuple[str, str, str]]:
    """Each target not up: its job, its scrape URL and its last error."""
    _, body = http_get(f"{prometheus}/api/v1/targets?state=active")
    return [
        (target["labels"]["job"], target["scrapeUrl"], target["lastError"])
        for target in json.loads(body)["data"]["activeTargets"]
        if target["health"] != "up"
    ]


def post_alert(sidecar: str, site: str) -> None:
    """One firing alert at ``site``; alerts at different sites make different incidents."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    labels = {"alertname": "HostMemoryLow", "severity": "warning", "instance": "web1", "site": site}
    body = {
        "version": "4",
        "groupKey": '{}:{alertname="HostMemoryLow"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "scout-sidecar",
        "groupLabels": {},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "Memory low on web1"},
                "startsAt": now,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": hashlib.sha256(site.encode()).hexdigest()[:16],
            }
        ],
    }
    request = urllib.request.Request(
        f"{sidecar}/api/v1/alertmanager",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status < 300


def stack_config(
    exporter: str, sidecar: str, snmpd: str, windows: list[str], firewalls: FirewallSources
) -> str:
    """The test stack's Prometheus config: every second, the shipped rules, these targets."""
    multi_target = [
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["__param_target"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": exporter},
    ]
    return json.dumps(  # JSON is valid YAML
        {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(REPO / "prometheus" / "rules" / "*.yml")],
            "scrape_configs": [
                {
                    "job_name": "scout-exporter",
                    "static_configs": [{"targets": [exporter, firewalls.netfilter_exporter]}],
                },
                {
                    "job_name": "scout-sidecar",
                    "honor_labels": True,
                    "static_configs": [{"targets": [sidecar]}],
                },
                {
                    "job_name": "snmp",
                    "metrics_path": "/snmp",
                    "params": {"module": ["if_mib"]},
                    "static_configs": [{"targets": [snmpd]}],
                    "relabel_configs": multi_target,
                },
                {
                    "job_name": "winrm",
                    "scrape_interval": "2s",
                    "scrape_timeout": "2s",
                    "metrics_path": "/winrm",
                    "params": {"auth": ["windows"]},
                    "static_configs": [{"targets": windows}],
                    "relabel_configs": multi_target,
                },
                {
                    "job_name": "probe_icmp",
                    # Five echoes a probe: a 1 s timeout would cut it to one
                    # answer, and jitter needs two.
                    "scrape_interval": "5s",
                    "scrape_timeout": "5s",
                    "metrics_path": "/probe",
                    "params": {"module": ["icmp"]},
                    "static_configs": [{"targets": ["127.0.0.1"]}],
                    "relabel_configs": multi_target,
                },
                *firewalls.scrape_configs(exporter),
            ],
        }
    )


@pytest.fixture(scope="module")
def firewalls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirewallSources]:
    """Every firewall and flow source, for the stack's exporter (flows start with it)."""
    with FirewallSources(tmp_path_factory.mktemp("firewalls")) as sources:
        yield sources


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, firewalls: FirewallSources
) -> Iterator[str]:
    """Prometheus with the shipped rules, scraping a real exporter and sidecar every second.

    One alert goes through the sidecar, so incidents, analyses and the return
    trip have data. Every firewall source is there too (``FirewallSources``):
    the exporter's netfilter collector on a namespace's ruleset, ``/firewall``
    on the fake FortiGate, OPNsense and pfSense APIs, ``/snmp`` on the firewall
    recordings, and the flows collector fed by pmacctd.
    """
    workdir = tmp_path_factory.mktemp("grafana-stack")
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AlertmanagerSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    ports = {name: free_port() for name in ("prometheus", "exporter", "sidecar")}
    address = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    # A real SNMP agent (this host's interfaces, loopback among them) and a
    # loopback ICMP probe, both through the exporter's multi-target endpoints
    # with the shipped relabelling, so the Network dashboard has data too.
    snmpd = RealSnmpd(workdir / "snmpd", communities=("public",))
    # A simulated Windows server (a WS-Man listener over HTTPS answering the
    # scrape script), so the Servers dashboard's Windows row has data.
    windows = WindowsHosts(workdir / "winrm", hosts=1)
    started: list[Service] = []
    try:
        snmpd.start()
        windows.start()
        config = workdir / "prometheus.yml"
        config.write_text(
            stack_config(
                address["exporter"], address["sidecar"], snmpd.target, windows.targets, firewalls
            )
        )
        exporter_config = workdir / "exporter.yml"
        # One config file: the firewall sources' settings and auths, and the Windows auth.
        settings = firewalls.exporter_config()
        settings["auths"].update(json.loads(windows.config.read_text())["auths"])
        exporter_config.write_text(json.dumps(settings))
        env = {
            "SCOUT_WEBHOOK_TOKEN": TOKEN,
            "SCOUT_DATA_DIR": str(workdir / "sidecar-data"),
            "SCOUT_ALERTMANAGER_URLS": f"http://127.0.0.1:{sink.server_address[1]}",
            "SCOUT_PROMETHEUS_URL": f"http://{address['prometheus']}",
        }
        services: list[Service] = [
            exporter_service(
                workdir, ports["exporter"], [f"--config.file={exporter_config}", *EXPORTER_FLAGS]
            ),
            sidecar_service(workdir, ports["sidecar"], env=env),
            prometheus_service(config, workdir, ports["prometheus"]),
        ]
        for service in services:
            service.start()
            started.append(service)
            service.wait_ready()
        firewalls.start_flows()
        url = f"http://{address['prometheus']}"
        try:
            wait_for(
                lambda: (
                    len(query(url, "up == 1")["data"]["result"]) == 5 + len(firewalls.instances)
                ),
                what="every target up",
            )
        except pytest.fail.Exception:
            pytest.fail(f"targets not up: {unhealthy_targets(url)}")
        for recorded in (
            "instance_ifIndex:if_in_bits:rate5m",
            "instance:scout_probe_loss:ratio_avg5m",
            "instance:scout_firewall_sessions_used:ratio",
        ):
            wait_for(
                lambda recorded=recorded: query(url, recorded)["data"]["result"],
                what=f"the recording rule {recorded}",
            )
        wait_for(
            lambda: (
                firewalls.flows.failure
                or query(url, 'scout_flow_talker_bytes_total{address!="other"}')["data"]["result"]
            ),
            what="pmacctd's flows to be ranked and scraped",
        )
        assert firewalls.flows.failure is None, firewalls.flows.failure
        # A labelled series (per analyst, per peer) appears with its first
        # event, and Prometheus counts no increase for a series' first sample:
        # the first incident creates the series, the second gives them a rate.
        sidecar = f"http://{address['sidecar']}"
        post_alert(sidecar, "site-a")
        wait_for(
            lambda: query(url, "scout_sidecar_return_trip_posts_total")["data"]["result"],
            what="the first incident to be analysed, posted back and scraped",
        )
        post_alert(sidecar, "site-b")
        post_alert(sidecar, "site-b")  # a duplicate
        wait_for(
            lambda: query(
                url,
                "increase(scout_sidecar_analysis_duration_seconds_count[1m]) > 0"
                " and on () increase(scout_sidecar_return_trip_posts_total[1m]) > 0",
            )["data"]["result"],
            timeout=60,
            what="the second incident to be analysed, posted back and scraped",
        )
        yield url
    finally:
        for service in reversed(started):
            service.stop(grace=5)
        snmpd.stop()
        windows.stop()
        sink.shutdown()
        sink.server_close()


def test_the_shipped_rules_are_loaded(prometheus):
    _, body = http_get(f"{prometheus}/api/v1/rules")
    groups = json.loads(body)["data"]["groups"]
    shipped = [
        group["name"]
        for path in (REPO / "prometheus" / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert sorted(g["name"] for g in groups) == sorted(shipped)
    assert all(rule["health"] == "ok" for g in groups for rule in g["rules"]), groups


def test_every_firewall_source_reaches_the_dashboard(prometheus, firewalls):
    def instances(promql: str) -> set[str]:
        return {r["metric"]["instance"] for r in query(prometheus, promql)["data"]["result"]}

    # Waited for, not read once: a source's scrape that missed its deadline on a
    # loaded machine leaves it down or stale until its next scrape.
    wait_for(
        lambda: instances("scout_firewall_up == 1") == firewalls.instances,
        what=f"every firewall source up: {sorted(firewalls.instances)}",
    )
    # The namespace's exporter reads the namespace's own tables, with traffic in them.
    netfilter = f'instance="{firewalls.netfilter_exporter}"'
    wait_for(
        lambda: instances(f"scout_firewall_sessions{{{netfilter}}} > 0"),
        what="sessions in the namespace's tables",
    )
    # Waited for: a rate needs two scrapes in its window, and one may miss its deadline.
    wait_for(
        lambda: instances(
            f"rate(scout_firewall_rule_bytes_total{{{netfilter}}}[{RATE_INTERVAL}]) > 0"
        ),
        what="the namespace's rule counters growing",
    )
    # The fake APIs' counters grow like a firewall's.
    wait_for(
        lambda: instances(
            f'rate(scout_firewall_rule_bytes_total{{job="firewall"}}[{RATE_INTERVAL}]) > 0'
        ),
        what="the fake firewalls' rule counters growing",
    )
    # pmacctd replays as NetFlow v5, v9 and IPFIX in turn; each version's records arrive.
    wait_for(
        lambda: (
            {
                r["metric"]["version"]
                for r in query(prometheus, "scout_flow_records_total > 0")["data"]["result"]
            }
            == {"v5", "v9", "ipfix"}
        ),
        timeout=60,
        what="flow records of every version",
    )
    assert firewalls.flows.failure is None, firewalls.flows.failure


def test_firewall_alerts_go_pending_on_the_faults_the_sources_report(prometheus):
    """The shipped alerts read what the real sources write: the payloads' and
    recordings' down gateways and tunnels and the FortiGate's unsynced HA peer."""

    def alerts() -> set[tuple[str, str]]:
        result = query(prometheus, 'ALERTS{alertname=~"Firewall.+"}')["data"]["result"]
        return {(r["metric"]["alertname"], r["metric"]["job"]) for r in result}

    faults = {
        ("FirewallGatewayDown", "firewall"),
        ("FirewallVpnTunnelDown", "firewall"),
        ("FirewallVpnTunnelDown", "snmp-firewall"),
        ("FirewallHaSyncLost", "snmp-firewall"),
    }
    wait_for(lambda: faults <= alerts(), timeout=20, what=f"the alerts {sorted(faults)}")
    # Every firewall answers: none is unreachable.
    assert "FirewallUnreachable" not in {name for name, _ in alerts()}


def test_the_sources_write_the_names_and_labels_the_dashboard_checks_against(prometheus):
    """What the real sources export is what ``tests.firewall_names`` holds the dashboard to."""
    series = query(prometheus, '{__name__=~"scout_(firewall|flow)_.+"}')["data"]["result"]
    exported: dict[str, set[str]] = {}
    for one in series:
        labels = dict(one["metric"])
        exported.setdefault(labels.pop("__name__"), set()).update(labels)
    # The /firewall handler's own timing, beside the schema like every endpoint's.
    exported.pop(FIREWALL_STATUS.duration.name)
    assert set(exported) <= set(KNOWN)
    # Every flow name is exported here; the firewall schema's, some by each source.
    assert set(FLOW_METRICS) <= set(exported)
    # A label a source leaves empty is no label in Prometheus; the shipped
    # relabelling keeps a target's module and auth labels, and names the
    # exporter the scrape went through.
    target_labels = {*TARGET_LABELS, "module", "auth", "scout_exporter"}
    for name, labels in exported.items():
        assert labels - target_labels <= set(KNOWN[name]), name


@pytest.mark.parametrize(
    ("name", "title", "ref_id", "expr"),
    all_queries(),
    ids=[f"{n}/{t}/{r}" for n, t, r, _ in all_queries()],
)
def test_panel_query_runs(prometheus, name, title, ref_id, expr):
    promql = substitute(expr)
    answer = query(prometheus, promql)
    assert answer["status"] == "success", (promql, answer)
    if may_be_empty(name, title, ref_id):
        return

    def finite() -> list[Any]:
        result = query(prometheus, promql)["data"]["result"]
        return [r for r in result if r["value"][1] not in ("NaN", "+Inf", "-Inf")]

    wait_for(finite, timeout=20, what=f"data for {promql}")


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_variable_queries_run(prometheus, name):
    for variable in load(name)["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable_query(variable))
        assert match, variable["name"]
        selector, label = substitute(match.group(1)), match.group(2)
        url = f"{prometheus}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
            {"match[]": selector}
        )
        status, body = http_get(url)
        assert status == 200, (variable["name"], body)
        values = json.loads(body)["data"]
        if name in ("servers", "ai-insights") and variable["name"] in ("job", "instance"):
            assert values, (name, variable["name"], selector)
