"""What README.md and docs/ name exists in the code: flags, config keys, metrics, links.

People follow the docs literally, so a flag, a config key, a metric name or a
link the docs give and the code lacks is a defect. Each check reads the real
definitions (the argparse parsers, the config models and their loaders, the
metric registries, the firewall schema, the shipped SNMP modules, and the
exposition samples the code's docstrings keep as its metric contract) rather
than a list kept here, and each has a case showing it catches a wrong name.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric
from pydantic import BaseModel

from ai_sidecar import cli as sidecar_cli
from ai_sidecar.anomaly.scoring import build_families
from ai_sidecar.config import SidecarConfig
from ai_sidecar.config import parse_config as parse_sidecar_config
from ai_sidecar.errors import ConfigError as SidecarConfigError
from ai_sidecar.metrics import create_metrics
from exporter import cli as exporter_cli
from exporter.config import ExporterConfig
from exporter.config import parse_config as parse_exporter_config
from exporter.errors import ConfigError as ExporterConfigError
from exporter.schema.firewall import SCHEMA
from exporter.scrape import collector_status_families
from exporter.targets.registry import TARGET_KINDS
from exporter.targets.snmp.modules import builtin_modules
from tests.firewall_names import FLOW_METRICS

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.yml"))
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml")) + sorted(
    (REPO / "prometheus" / "sharded" / "rules").glob("*.yml")
)
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def fenced_blocks(path: Path) -> Iterator[tuple[int, str, str]]:
    """(first line number, language, text) of each fenced block, its indent removed."""
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, language = len(opening.group(1)), opening.group(2)
        end = index + 1
        while not re.match(r"^\s*```\s*$", lines[end]):
            end += 1
        yield index + 2, language, "\n".join(line[indent:] for line in lines[index + 1 : end])
        index = end + 1


def code_text(path: Path) -> str:
    """What a page shows as code: its fenced blocks and inline code spans."""
    blocks = [text for _, _, text in fenced_blocks(path)]
    outside = re.sub(r"(?ms)^\s*```.*?^\s*```\s*$", "", path.read_text())
    return "\n".join(blocks + CODE_SPAN.findall(outside))


# ------------------------------------------------------------------ CLI flags

PROGRAMS = {"scout-exporter": exporter_cli.build_parser, "scout-sidecar": sidecar_cli.build_parser}


def _commands(parser: argparse.ArgumentParser, path: str, out: dict[str, set[str]]) -> None:
    options: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _commands(sub, f"{path} {name}", out)
        options.update(action.option_strings)
    out[path] = options


def cli_commands() -> dict[str, set[str]]:
    """Every command and subcommand ("scout-sidecar anomaly score") and its options."""
    out: dict[str, set[str]] = {}
    for program, build in PROGRAMS.items():
        _commands(build(), program, out)
    return out


def unknown_flags(text: str, commands: dict[str, set[str]]) -> list[str]:
    """Flags of ``scout-*`` command lines in ``text`` that their (sub)command lacks."""
    found = []
    joined = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    for match in re.finditer(r"\b(scout-(?:exporter|sidecar))((?:[ \t]+[^\s`|;&)]+)*)", joined):
        command, words = match.group(1), match.group(2).split()
        while words and f"{command} {words[0]}" in commands:
            command = f"{command} {words.pop(0)}"
        has_subcommands = any(c.startswith(f"{command} ") for c in commands)
        if has_subcommands and words and re.fullmatch(r"[a-z]+", words[0]):
            found.append(f"{command} {words[0]}")
            continue
        if command == "scout-sidecar" and any(w not in ("--version", "--help") for w in words):
            command = "scout-sidecar serve"  # serve is the default command
        for word in words:
            flag = word.strip("[]").split("=")[0].rstrip(".,:]")
            # A synopsis's --collector.<name> stands for every collector's flag.
            pattern = "".join(
                r"[\w.-]+" if part.startswith("<") else re.escape(part)
                for part in re.split(r"(<\w+>)", flag)
            )
            known = any(re.fullmatch(pattern, option) for option in commands[command])
            if flag.startswith("--") and not known:
                found.append(f"{command} {flag}")
    return found


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_flag_a_command_line_in_the_docs_gives_exists(page):
    assert unknown_flags(page.read_text(), cli_commands()) == []


def test_the_flag_check_catches_a_misspelt_or_misplaced_flag():
    commands = cli_commands()
    assert unknown_flags("scout-sidecar report --perod week", commands) == [
        "scout-sidecar report --perod"
    ]
    # --web.listen-address belongs to serve, not to report.
    assert unknown_flags("scout-sidecar report --web.listen-address=:1", commands) == [
        "scout-sidecar report --web.listen-address"
    ]
    assert unknown_flags("scout-exporter \\\n    --web.listen-adress=:9", commands) == [
        "scout-exporter --web.listen-adress"
    ]
    assert unknown_flags("scout-sidecar anomaly scores in.csv out.csv", commands) == [
        "scout-sidecar anomaly scores"
    ]
    assert (
        unknown_flags("scout-exporter [--collector.<name> | --no-collector.<name>]", commands) == []
    )
    assert unknown_flags("scout-exporter [--colector.<name>]", commands) == [
        "scout-exporter --colector.<name>"
    ]
    assert unknown_flags("scout-sidecar --dry-run --config.file x.yml", commands) == []


# ---------------------------------------------------------------- config keys

EXPORTER_SECTIONS = set(ExporterConfig.model_fields)
SIDECAR_SECTIONS = {f.alias or n for n, f in SidecarConfig.model_fields.items()}


def scout_config_examples() -> Iterator[tuple[str, str, str]]:
    """(place, which daemon, text) of every fenced YAML block that is a Scout config."""
    for page in DOCS:
        for line, language, text in fenced_blocks(page):
            if language not in ("yaml", "yml", ""):
                continue
            try:
                document = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if not isinstance(document, dict) or not document:
                continue
            place = f"{page.relative_to(REPO)}:{line}"
            if set(document) <= EXPORTER_SECTIONS:
                yield place, "exporter", text
            elif set(document) <= SIDECAR_SECTIONS:
                yield place, "sidecar", text


def load_example(daemon: str, text: str, source: str) -> None:
    """Load through the daemon's own loader; a file path the reader's machine lacks is no error."""
    parse = parse_exporter_config if daemon == "exporter" else parse_sidecar_config
    try:
        parse(text, source, expand_env=True)
    except (ExporterConfigError, SidecarConfigError) as error:
        problems = [line for line in str(error).splitlines() if "is not a file" not in line]
        if problems:
            raise


@pytest.fixture
def example_secrets(monkeypatch):
    """The ${VAR}s the examples expand, long enough for SNMPv3's 8-character minimum."""
    for page in DOCS:
        for name in set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", page.read_text())):
            monkeypatch.setenv(name, f"example-{name.lower()}")


CONFIG_ERRORS = (ExporterConfigError, SidecarConfigError)
EXAMPLE_BLOCKS = list(scout_config_examples())


def test_the_docs_have_config_examples_of_both_daemons():
    daemons = [daemon for _, daemon, _ in EXAMPLE_BLOCKS]
    assert daemons.count("exporter") >= 5, daemons
    assert daemons.count("sidecar") >= 10, daemons


@pytest.mark.parametrize(
    ("place", "daemon", "text"), [pytest.param(*block, id=block[0]) for block in EXAMPLE_BLOCKS]
)
def test_every_config_example_in_the_docs_loads(place, daemon, text, example_secrets):
    load_example(daemon, text, place)


def uncommented(text: str) -> str:
    """The example with the settings commented out inside its sections switched on.

    ``  # key: value`` under a section is a setting to turn on; a ``#`` in the
    first column is prose, which may quote a setting in part.
    """
    return re.sub(r"(?m)^(\s+)# ?(\s*[a-z_]+:(?: .*)?)$", r"\1\2", text)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_files_load_with_their_commented_settings_switched_on(example, example_secrets):
    daemon = example.name.removeprefix("scout-").removesuffix(".yml")
    text = example.read_text()
    load_example(daemon, text, str(example))
    switched_on = uncommented(text)
    assert switched_on != text or daemon == "exporter"
    load_example(daemon, switched_on, f"{example} (commented settings on)")


def test_the_example_check_catches_a_key_the_code_lacks():
    with pytest.raises(CONFIG_ERRORS, match="unknown key"):
        load_example("sidecar", "graphs:\n  key_fil: /etc/scout/key\n", "t")
    with pytest.raises(CONFIG_ERRORS, match="unknown key"):
        load_example("sidecar", uncommented("llm:\n  # max_tokens: 10\n"), "t")


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in getattr(annotation, "__args__", ()):
        yield from _models(argument)


def config_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key path of a config model; list items and mapping entries elided."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        keys.add(key)
        for sub in _models(field.annotation):
            keys |= config_keys(sub, f"{key}.")
    return keys


CONFIG_KEYS = config_keys(ExporterConfig) | config_keys(SidecarConfig)
SECTIONS = EXPORTER_SECTIONS | SIDECAR_SECTIONS
# A dotted name in code: a config key (llm.policy.min_priority), a file (runbooks.md).
DOTTED = re.compile(r"(?<![\w./:-])([a-z_]+(?:\.[a-zA-Z_]+)+)(?![\w(/-])")


def unknown_keys(text: str) -> list[str]:
    """Dotted config keys in ``text`` (those under a top-level section) the models lack."""
    found = []
    for key in DOTTED.findall(text):
        parts = key.split(".")
        if parts[0] not in SECTIONS or parts[-1] in ("md", "yml", "py", "lock", "npz"):
            continue
        if parts[0] in ("modules", "auths"):
            del parts[1:2]  # a module's or an auth's name
        if ".".join(parts) not in CONFIG_KEYS:
            found.append(key)
    return found


@pytest.mark.parametrize("page", DOCS + EXAMPLES, ids=lambda p: p.name)
def test_every_dotted_config_key_the_docs_name_exists(page):
    assert unknown_keys(code_text(page)) == []


def test_the_key_check_catches_a_key_the_code_lacks():
    assert unknown_keys("llm.policy.min_prio and correlation.window") == ["llm.policy.min_prio"]
    assert unknown_keys("modules.api_health.allowed_targets, auths.x.tokn") == ["auths.x.tokn"]


# --------------------------------------------------------------- metric names

SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| [-+]?(?:\d|NaN|Inf))")
METRIC_CLASSES = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram"}
# Names Prometheus itself makes.
PROMETHEUS_NAMES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
# scout_* names in the docs that are not metrics: labels and annotations of the
# enriched alerts, cookies, a database table. Each must be in the code.
NOT_METRICS = {
    "scout_enriched",
    "scout_incident",
    "scout_priority",
    "scout_lang",
    "scout_title",
    "scout_timeline",
    "scout_resolution",
    "scout_console_url",
    "scout_incident_url",
    "scout_login",
    "scout_session",
    "scout_schema",
}


def sample_names(name: str, kind: str) -> set[str]:
    if kind == "counter":
        return {name if name.endswith("_total") else f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def exposition_names(text: str) -> set[str]:
    names: set[str] = set()
    for line in text.splitlines():
        typed = re.match(r"\s*# TYPE (\S+) (\w+)$", line)
        if typed:
            names |= sample_names(*typed.groups())
        elif sample := SAMPLE.match(line.strip()):
            names.add(sample.group(1))
    return names


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def source_names() -> set[str]:
    """Names the code's docstrings show as samples, and that its metric constructors name."""
    names: set[str] = set()
    for package in ("exporter", "ai_sidecar"):
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                    names |= exposition_names(ast.get_docstring(node) or "")
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                function = node.func
                called = function.id if isinstance(function, ast.Name) else ""
                name = _literal(node.args[0])
                if name is None:
                    continue
                if called.endswith("MetricFamily"):
                    kind = called.removesuffix("MetricFamily").lower() or "gauge"
                    names |= sample_names(name, kind)
                elif called in METRIC_CLASSES:
                    names |= sample_names(name, METRIC_CLASSES[called])
                elif called in ("Family", "SelfMetric"):
                    type_node = node.args[2] if len(node.args) > 2 else None
                    names |= sample_names(name, _literal(type_node) or "gauge")
    return names


def family_names(families: Any) -> set[str]:
    return {n for family in families for n in sample_names(family.name, family.type)}


def recorded_names() -> set[str]:
    return {
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def exported_names() -> set[str]:
    """Every sample name Scout's two daemons can export, and the rules record."""
    families: list[Metric] = [*create_metrics().registry.collect(), *build_families([], 0.0)]
    return (
        source_names()
        | family_names(families)
        | family_names(collector_status_families([]))
        | {spec.sample_name for spec in SCHEMA}
        | set(FLOW_METRICS)
        | {metric.name for module in builtin_modules().values() for metric in module.metrics}
        | {
            name
            for golden in (REPO / "tests" / "exporter" / "golden").glob("*.prom")
            for name in exposition_names(golden.read_text())
        }
        | recorded_names()
        | PROMETHEUS_NAMES
    )


EXPORTED = exported_names()
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
PROMQL_WORDS |= {"unless", "bool", "offset", "inf", "nan"}


def promql_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    return {
        name
        for name in re.findall(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text)
        if name not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", name)
    }


def rule_exprs() -> Iterator[tuple[str, str]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield rule.get("alert") or rule["record"], str(rule["expr"])


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every panel's queries, and every query variable's, as PromQL."""
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop()
        panels += panel.get("panels", [])
        yield from (target["expr"] for target in panel.get("targets", []) if "expr" in target)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            # label_values(selector, label): the selector is PromQL, the label is not.
            yield re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", text)


def test_every_metric_a_shipped_rule_reads_is_exported():
    unknown = {
        (rule, name)
        for rule, expr in rule_exprs()
        for name in promql_names(expr)
        if name not in EXPORTED
    }
    assert unknown == set()


def test_every_metric_a_dashboard_reads_is_exported():
    for path in DASHBOARDS:
        exprs = list(dashboard_exprs(json.loads(path.read_text())))
        assert exprs, path
        unknown = {name for expr in exprs for name in promql_names(expr) if name not in EXPORTED}
        assert unknown == set(), path.name


DOC_METRIC = re.compile(r"(?<![\w/.:-])((?:scout|windows)_[a-zA-Z0-9_]*[a-z0-9])(?![\w:-])")


SAMPLE_SUFFIXES = {"total", "bucket", "sum", "count", "created", "info"}


def _is_prefix(name: str) -> bool:
    """``name`` starts exported families (``scout_host_memory``), not one sample's suffix."""
    return any(
        exported.startswith(f"{name}_") and exported[len(name) + 1 :] not in SAMPLE_SUFFIXES
        for exported in EXPORTED
    )


def unknown_metrics(text: str) -> set[str]:
    """scout_* and windows_* names in ``text`` that are neither exported nor a prefix of some."""
    return {
        name
        for name in DOC_METRIC.findall(text)
        if name not in EXPORTED and name not in NOT_METRICS and not _is_prefix(name)
    }


# benchmarks.md records measurements: its scout_/windows_ words name storm scenarios.
@pytest.mark.parametrize(
    "page", [p for p in DOCS if p.name != "benchmarks.md"], ids=lambda p: p.name
)
def test_every_metric_the_docs_name_is_exported(page):
    assert unknown_metrics(code_text(page)) == set()


def test_the_metric_check_catches_a_name_the_code_lacks():
    # The names the servers dashboard once read, gone from windows_exporter.
    assert unknown_metrics("`windows_cs_physical_memory_bytes`") == {
        "windows_cs_physical_memory_bytes"
    }
    # A counter's name without its _total is not what Prometheus stores.
    assert unknown_metrics("scout_sidecar_return_trip_failures") == {
        "scout_sidecar_return_trip_failures"
    }
    assert unknown_metrics("scout_host_memory and scout_sidecar_alerts_received_total") == set()
    assert promql_names('rate(scout_foo_total{job="x"}[5m]) > on(instance) up') == {
        "scout_foo_total",
        "up",
    }


def test_names_that_are_not_metrics_are_in_the_code():
    code = "\n".join(
        path.read_text()
        for folder in ("ai_sidecar", "alertmanager")
        for path in (REPO / folder).rglob("*")
        if path.suffix in (".py", ".tmpl", ".yml")
    )
    assert {name for name in NOT_METRICS if not re.search(rf"\b{name}\b", code)} == set()


# ------------------------------------------------------------------ endpoints


def test_every_multi_target_endpoint_is_in_the_tables_of_endpoints():
    """The README's endpoint table, and security.md's table of what a caller can do."""
    readme = (REPO / "README.md").read_text()
    security = (REPO / "docs" / "security.md").read_text()
    for kind in TARGET_KINDS:
        assert re.search(rf"^\| `/{kind.name}\?target=", readme, re.MULTILINE), kind.name
        assert re.search(rf"^\| `GET /{kind.name}\?target=", security, re.MULTILINE), kind.name


# ---------------------------------------------------------------------- links


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings (repeats get -1, -2, ...)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    outside = re.sub(r"(?ms)^\s*```.*?^\s*```\s*$", "", page.read_text())
    for heading in re.findall(r"(?m)^#{1,6}\s+(.*?)\s*#*\s*$", outside):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
            continue
        if anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_link_check_catches_a_missing_file_and_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n## Sign-in and roles\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#sign-in-and-roles) [gone](c.md) [anchor](a.md#sign-in) [self](#x)\n# X\n"
    )
    assert broken_links(page) == ["c.md", "a.md#sign-in"]
