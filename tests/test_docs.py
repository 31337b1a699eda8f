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
import functools
import itertools
import json
import re
import subprocess
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

# An opening fence: its indent, its run of backticks or tildes, its label
# (```shell-session, ```yaml title=x); a closing one repeats the run, bare.
FENCE = re.compile(r"^(\s*)(```+|~~~+)([^\s`]*).*$")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def split_page(text: str) -> tuple[list[tuple[int, str, str]], str]:
    """A page's fenced blocks, as (first line number, label, text without the
    indent), and the rest of the page; an unclosed fence runs to the end."""
    lines = text.splitlines()
    blocks, outside = [], []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            outside.append(lines[index])
            index += 1
            continue
        indent, run, label = len(opening.group(1)), opening.group(2), opening.group(3)
        closing = re.compile(rf"^\s*{re.escape(run[0])}{{{len(run)},}}\s*$")
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        body = "\n".join(line[indent:] for line in lines[index + 1 : end])
        blocks.append((index + 2, label, body))
        index = end + 1
    return blocks, "\n".join(outside)


def fenced_blocks(path: Path) -> list[tuple[int, str, str]]:
    return split_page(path.read_text())[0]


def code_text(path: Path) -> str:
    """What a page shows as code: its fenced blocks and inline code spans."""
    blocks, outside = split_page(path.read_text())
    return "\n".join([text for _, _, text in blocks] + CODE_SPAN.findall(outside))


def test_fences_with_any_label_or_run_are_read_whole():
    page = "```shell-session\n$ a\n```\n~~~~yaml title=x\nb: 1\n```\n~~~~\n`c`\n```\nd\n"
    assert split_page(page) == (
        [(2, "shell-session", "$ a"), (5, "yaml", "b: 1\n```"), (10, "", "d")],
        "`c`",
    )


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


def command_lines(text: str) -> list[str]:
    """Lines of shell code whole: continuations joined, comments dropped, and a
    synopsis's indented ``[--flag]`` lines joined to their ``scout-*`` line."""
    lines: list[str] = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = re.sub(r"(?:^|\s)#.*", "", line)
        if re.match(r"\s+\[", line) and lines and "scout-" in lines[-1]:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


PROGRAM = re.compile(r"(?<![\w./-])(scout-(?:exporter|sidecar))(?![\w.-])")


def _flag_known(flag: str, options: set[str]) -> bool:
    # A synopsis's --collector.<name> stands for every collector's flag.
    pattern = "".join(
        r"[\w.-]+" if part.startswith("<") else re.escape(part)
        for part in re.split(r"(<\w+>)", flag)
    )
    return any(re.fullmatch(pattern, option) for option in options)


def command_flags(program: str, words: str, commands: dict[str, set[str]]) -> list[str]:
    """Unknown subcommands and flags in the words after ``program`` on one line.

    ``[`` and ``]`` separate words, and so does ``|``: after it, a subcommand's
    name starts again from the program (``user list | user remove NAME``), a
    flag is another of the same command's, and a word after a spaced ``|`` is
    a shell pipe's next command, which ends the line.
    """
    found = []
    tokens = re.findall(r"\s\|\s|\||[^\s|\[\]]+", re.split(r"[;&)`]", words)[0])
    command: str | None = program
    naming = True  # the words so far name subcommands
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        if token.strip() == "|":
            if f"{program} {following}" in commands:
                command, naming = program, True
            elif token != "|" and not following.startswith("-"):
                break
            continue
        if command is None:
            continue
        if naming and f"{command} {token}" in commands:
            command = f"{command} {token}"
            continue
        has_subcommands = any(c.startswith(f"{command} ") for c in commands)
        if naming and has_subcommands and re.fullmatch(r"[a-z][\w-]*", token):
            found.append(f"{command} {token}")
            command = None  # its flags are not known until a | names another
            continue
        naming = False
        if not token.startswith("--"):
            continue
        flag = token.split("=")[0].rstrip(".,:")
        if _flag_known(flag, commands[command]):
            continue
        if command == "scout-sidecar" and _flag_known(flag, commands["scout-sidecar serve"]):
            continue  # serve is the default command
        found.append(f"{'scout-sidecar serve' if command == 'scout-sidecar' else command} {flag}")
    return found


def unknown_flags(text: str, commands: dict[str, set[str]]) -> list[str]:
    """Subcommands and flags of ``scout-*`` command lines in ``text`` that the code lacks."""
    found = []
    for line in command_lines(text):
        starts = list(PROGRAM.finditer(line))
        ends = [match.start() for match in starts[1:]] + [len(line)]
        for match, end in zip(starts, ends, strict=False):  # no ends without a start
            words = line[match.end() : end]
            found += command_flags(match.group(1), words, commands)
    return found


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_flag_a_command_line_in_the_docs_gives_exists(page):
    assert unknown_flags(code_text(page), cli_commands()) == []


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
    for misspelt in ("back-test", "back_test", "score2"):
        assert unknown_flags(f"scout-sidecar anomaly {misspelt} x.csv", commands) == [
            f"scout-sidecar anomaly {misspelt}"
        ]
    assert unknown_flags("scout-sidecar usr-add NAME", commands) == ["scout-sidecar usr-add"]
    assert (
        unknown_flags("scout-exporter [--collector.<name> | --no-collector.<name>]", commands) == []
    )
    assert unknown_flags("scout-exporter [--colector.<name>]", commands) == [
        "scout-exporter --colector.<name>"
    ]
    assert unknown_flags("scout-sidecar --dry-run --config.file x.yml", commands) == []


def test_the_flag_check_reads_the_synopses_whole():
    """The README's synopsis lines, each with a misspelt flag after a ``|`` or
    on a continuation line."""
    commands = cli_commands()
    readme = (REPO / "README.md").read_text()
    synopses = {
        "scout-sidecar report --period day|week|month --format pdf|html|csv --output FILE"
        " [--end DATE] [--language en|fr]": (
            "--output FILE",
            "--outptu FILE",
            "scout-sidecar report --outptu",
        ),
        "scout-sidecar user add NAME --role viewer|operator"
        " [--password-stdin | --password-file FILE | --generate]": (
            "--password-file",
            "--pasword-file",
            "scout-sidecar user add --pasword-file",
        ),
        "scout-sidecar llm audit --since 24h|RFC3339 [--incident ID] [--output FILE]": (
            "[--incident",
            "[--incidnet",
            "scout-sidecar llm audit --incidnet",
        ),
    }
    for line, (right, wrong, reported) in synopses.items():
        assert line in readme
        assert unknown_flags(line, commands) == []
        assert unknown_flags(line.replace(right, wrong), commands) == [reported]
    report = "--end DATE] [--language en|fr]\n              [--config.file=FILE]\n"
    assert report in readme
    typo = report.replace("--config.file", "--config.fiel")
    assert unknown_flags(f"scout-sidecar report {typo}", commands) == [
        "scout-sidecar report --config.fiel"
    ]
    exporter = "               [--scrape.timeout-offset=0.5] [--path.rootfs=DIR]\n"
    assert exporter in readme
    typo = exporter.replace("rootfs", "rotfs")
    assert unknown_flags(f"scout-exporter [--dry-run]\n{typo}", commands) == [
        "scout-exporter --path.rotfs"
    ]
    # The subcommand after a | starts from the program again.
    assert unknown_flags("scout-sidecar user list | user remov NAME", commands) == [
        "scout-sidecar user remov"
    ]


def test_the_flag_check_reads_code_only_and_not_comments(tmp_path):
    commands = cli_commands()
    assert unknown_flags("other-tool --verbose  # as scout-sidecar --verbos would", commands) == []
    assert unknown_flags("scout-exporter --dry-run | grep --count valid", commands) == []
    page = tmp_path / "page.md"
    page.write_text("Run scout-sidecar with care.\n\n```sh\nscout-sidecar --dry-rn\n```\n")
    assert unknown_flags(code_text(page), commands) == ["scout-sidecar serve --dry-rn"]


# ---------------------------------------------------------------- config keys

EXPORTER_SECTIONS = set(ExporterConfig.model_fields)
SIDECAR_SECTIONS = {f.alias or n for n, f in SidecarConfig.model_fields.items()}


def config_daemon(document: dict[Any, Any]) -> str | None:
    """The daemon whose sections a YAML document shares a key with, if any."""
    if set(document) & EXPORTER_SECTIONS:
        return "exporter"
    if set(document) & SIDECAR_SECTIONS:
        return "sidecar"
    return None


def scout_config_examples(
    pages: list[Path], root: Path = REPO
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(place, daemon, text) of every fenced YAML block that is a Scout config,
    and the places of blocks fenced ``yaml`` or ``yml`` that are not YAML.

    A block is a daemon's config when one of its top-level keys is one of the
    daemon's sections, so a misspelt section (``graph:``) is an unknown key
    rather than a block passed over. A page showing a config Scout refuses, on
    purpose, fences it with another label (```text): only blocks labelled
    ``yaml``, ``yml`` or nothing are loaded.
    """
    examples, broken = [], []
    for page in pages:
        for line, language, text in fenced_blocks(page):
            if language not in ("yaml", "yml", ""):
                continue
            place = f"{page.relative_to(root)}:{line}"
            try:
                document = yaml.safe_load(text)
            except yaml.YAMLError:
                if language:
                    broken.append(place)
                continue
            daemon = config_daemon(document) if isinstance(document, dict) else None
            if daemon is not None:
                examples.append((place, daemon, text))
    return examples, broken


def load_example(daemon: str, text: str, source: str) -> None:
    """Load through the daemon's own loader; a file path the reader's machine lacks is no error.

    Only the exporter expands ``${VAR}`` (with --config.expand-env); the sidecar
    reads its config as written.
    """
    try:
        if daemon == "exporter":
            parse_exporter_config(text, source, expand_env=True)
        else:
            parse_sidecar_config(text, source)
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
EXAMPLE_BLOCKS, BROKEN_YAML = scout_config_examples(DOCS)


def test_the_docs_have_config_examples_of_both_daemons():
    daemons = [daemon for _, daemon, _ in EXAMPLE_BLOCKS]
    assert daemons.count("exporter") >= 5, daemons
    assert daemons.count("sidecar") >= 10, daemons


@pytest.mark.parametrize(
    ("place", "daemon", "text"), [pytest.param(*block, id=block[0]) for block in EXAMPLE_BLOCKS]
)
def test_every_config_example_in_the_docs_loads(place, daemon, text, example_secrets):
    load_example(daemon, text, place)


def test_every_block_fenced_as_yaml_is_yaml():
    assert BROKEN_YAML == []


def test_a_misspelt_section_or_broken_yaml_is_not_passed_over(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    page = docs / "llm.md"
    page.write_text(
        "```yaml\ngraph:\n  enabled: true\nllm:\n  provider: none\n```\n"
        "```yml\nllm: [\n```\n"
        "```text\ngraphs: {enabled: maybe}\n```\n"
        "```yaml\nglobal:\n  scrape_interval: 15s\n```\n"
    )
    examples, broken = scout_config_examples([page], tmp_path)
    assert (examples, broken) == (
        [("docs/llm.md:2", "sidecar", "graph:\n  enabled: true\nllm:\n  provider: none")],
        ["docs/llm.md:8"],
    )
    with pytest.raises(CONFIG_ERRORS, match="unknown key"):
        load_example(*examples[0][1:], examples[0][0])


def test_sidecar_examples_are_read_without_expanding_variables(monkeypatch):
    monkeypatch.setenv("SCOUT_TEST_LANGUAGE", "fr")
    # The sidecar keeps ${VAR} as written, so the language is refused.
    with pytest.raises(CONFIG_ERRORS):
        load_example("sidecar", "language: ${SCOUT_TEST_LANGUAGE}\n", "t")


def uncommented(text: str) -> str:
    """The example with the settings commented out inside its sections switched on.

    ``  # key: value`` under a section is a setting to turn on; a ``#`` in the
    first column is prose, which may quote a setting in part.
    """
    return re.sub(r"(?m)^(\s+)# ?(\s*[a-z_]+:(?: .*)?)$", r"\1\2", text)


# Which daemon reads each example file; a new file must be added here.
EXAMPLE_DAEMONS = {"scout-exporter.yml": "exporter", "scout-sidecar.yml": "sidecar"}


def test_every_example_file_names_its_daemon():
    assert sorted(example.name for example in EXAMPLES) == sorted(EXAMPLE_DAEMONS)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_files_load_with_their_commented_settings_switched_on(example, example_secrets):
    daemon = EXAMPLE_DAEMONS[example.name]
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
# scout_* names in the docs that are not metrics: the target label naming the
# exporter a scrape went through, labels and annotations of the enriched alerts,
# cookies, a database table. Each must be in the code.
NOT_METRICS = {
    "scout_exporter",
    "scout_enriched",
    "scout_incident",
    "scout_priority",
    "scout_lang",
    "scout_title",
    "scout_timeline",
    "scout_resolution",
    "scout_resolved",
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


# A metric name in the docs, up to any label set; braces after an underscore
# list alternatives (windows_pagefile_{limit,free}_bytes{file}), and a trailing
# _* stands for a family of names (scout_firewall_*).
DOC_METRIC = re.compile(r"(?<![\w/.:{-])((?:scout|windows)_(?:[\w*]|\{[\w,]*\})*+)(?![:-])")


def doc_metric_names(text: str) -> list[str]:
    names = []
    for written in DOC_METRIC.findall(text):
        name = re.sub(r"(?<=[a-zA-Z0-9])\{[\w,]*\}$", "", written)
        if re.fullmatch(r"(?:\w|_\{[\w,]+\})*(?:[a-z0-9]|_\{[\w,]+\}|_\*)", name):
            names += expand_braces(name)
    return names


# benchmarks.md names storm scenarios after what they break.
SCENARIOS = {"benchmarks.md": {"windows_disk"}}


def expand_braces(name: str) -> list[str]:
    parts = re.split(r"\{([\w,]+)\}", name)
    choices = [[part] if i % 2 == 0 else part.split(",") for i, part in enumerate(parts)]
    return ["".join(combination) for combination in itertools.product(*choices)]


def _exported(name: str) -> bool:
    if not name.endswith("_*"):
        return name in EXPORTED
    return any(exported.startswith(name[:-1]) for exported in EXPORTED)


def unknown_metrics(text: str, exempt: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """scout_* and windows_* names in ``text`` that are not exported, and
    ``name_*`` families no exported name starts."""
    return {
        name
        for name in doc_metric_names(text)
        if not _exported(name) and name not in NOT_METRICS and name not in exempt
    }


# A recording rule's name: level:metric:operations.
RECORDED = re.compile(
    r"(?<![\w:/.-])([a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z0-9_]*[a-z0-9])(?![\w:-])"
)


RECORDED_NAMES = recorded_names()


def unknown_recorded(text: str) -> set[str]:
    """Recording rules' names in ``text`` the shipped rules lack (the README
    spells out the naming convention itself, ``level:metric:operations``)."""
    return set(RECORDED.findall(text)) - RECORDED_NAMES - {"level:metric:operations"}


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_metric_the_docs_name_is_exported(page):
    text = code_text(page)
    assert unknown_metrics(text, SCENARIOS.get(page.name, set())) == set()
    assert unknown_recorded(text) == set()


def test_the_metric_check_catches_a_name_the_code_lacks():
    # The names the servers dashboard once read, gone from windows_exporter.
    assert unknown_metrics("`windows_cs_physical_memory_bytes`") == {
        "windows_cs_physical_memory_bytes"
    }
    # A counter's name without its _total is not what Prometheus stores.
    assert unknown_metrics("scout_sidecar_return_trip_failures") == {
        "scout_sidecar_return_trip_failures"
    }
    # The start of real names is not a name.
    assert unknown_metrics("scout_collector_duration, scout_llm_cost") == {
        "scout_collector_duration",
        "scout_llm_cost",
    }
    assert (
        unknown_metrics("scout_host_memory_free_bytes, scout_sidecar_alerts_received_total")
        == set()
    )
    assert unknown_metrics("scout_firewall_* and scout_llm_*") == set()
    assert unknown_metrics("scout_firewal_* and scout_lm_*") == {"scout_firewal_*", "scout_lm_*"}
    assert unknown_metrics("`windows_pagefile_{limit,free}_bytes{file}`") == set()
    assert unknown_metrics("`windows_pagefile_{limit,fre}_bytes{file}`") == {
        "windows_pagefile_fre_bytes"
    }
    assert unknown_metrics("`windows_system_{threads,processes}`, windows_cpu_tim{x}") == {
        "windows_cpu_tim"
    }
    assert unknown_metrics("the windows_disk scenario") == {"windows_disk"}
    assert unknown_metrics("the windows_disk scenario", SCENARIOS["benchmarks.md"]) == set()
    assert promql_names('rate(scout_foo_total{job="x"}[5m]) > on(instance) up') == {
        "scout_foo_total",
        "up",
    }


def test_the_recorded_name_check_catches_a_rule_the_rules_lack():
    recorded = sorted(RECORDED_NAMES)[0]
    level, metric, operations = recorded.split(":")
    assert unknown_recorded(f"sum({recorded}) at 12:30:00") == set()
    assert unknown_recorded(f"{level}:{metric}:{operations}x") == {f"{recorded}x"}


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
    for heading in re.findall(r"(?m)^#{1,6}\s+(.*?)\s*#*\s*$", split_page(page.read_text())[1]):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


@functools.cache
def tracked_paths(root: Path) -> set[Path]:
    """The files git tracks under ``root``, and their folders."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, text=True
    ).stdout
    files = {root / name for name in listed.split("\0") if name}
    return files | {folder for file in files for folder in file.parents}


def broken_links(page: Path, root: Path = REPO, tracked: set[Path] | None = None) -> list[str]:
    """Relative links of ``page`` to no file the repository tracks, or to no heading.

    A link out of the repository, or to a file git ignores (a local config, a
    built module), resolves on the writer's machine only.
    """
    tracked = tracked_paths(root) if tracked is None else tracked
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.is_relative_to(root) or linked not in tracked:
            broken.append(target)
            continue
        if anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_link_check_catches_a_missing_file_and_anchor(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.md").write_text("# Top\n## Sign-in and roles\n")
    (root / "local.yml").write_text("")  # there, but not tracked
    (tmp_path / "outside.md").write_text("")
    page = root / "b.md"
    page.write_text(
        "[ok](a.md#sign-in-and-roles) [gone](c.md) [anchor](a.md#sign-in) [self](#x)\n# X\n"
        "[untracked](local.yml) [out](../outside.md) [folder](.)\n"
    )
    tracked = {root, root / "a.md", page}
    assert broken_links(page, root, tracked) == [
        "c.md",
        "a.md#sign-in",
        "local.yml",
        "../outside.md",
    ]
