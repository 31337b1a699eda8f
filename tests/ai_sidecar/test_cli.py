"""The sidecar's command line: subcommands, with ``serve`` as the default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ai_sidecar.cli import build_parser, settings_from, with_default_command
from ai_sidecar.errors import ConfigError
from ai_sidecar.settings import SidecarSettings


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai_sidecar.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", "SCOUT_DATA_DIR": str(data_dir)},
    )


def test_serve_flags_belong_to_the_serve_command_only():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--dry-run"])
    args = parser.parse_args(["serve", "--dry-run", "--web.listen-address=127.0.0.1:9"])
    assert (args.command, args.dry_run, args.listen) == ("serve", True, ("127.0.0.1", 9))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["serve"]),
        (["--dry-run"], ["serve", "--dry-run"]),
        (["--log.level=debug", "--dry-run"], ["serve", "--log.level=debug", "--dry-run"]),
        (["serve", "--dry-run"], ["serve", "--dry-run"]),
        (["--version"], ["--version"]),
        (["--help"], ["--help"]),
        (["anomaly", "score"], ["anomaly", "score"]),
    ],
)
def test_a_command_line_without_a_command_means_serve(argv, expected):
    assert with_default_command(argv) == expected


def test_serve_is_the_default_and_can_be_named(tmp_path):
    named = run_cli("serve", "--dry-run", "--web.insecure-no-auth", data_dir=tmp_path)
    implied = run_cli("--dry-run", "--web.insecure-no-auth", data_dir=tmp_path)
    assert (named.returncode, implied.returncode) == (0, 0)
    assert named.stdout == implied.stdout == "scout-sidecar: settings and config are valid\n"


def test_unknown_command_is_refused_with_the_known_ones(tmp_path):
    result = run_cli("frobnicate", data_dir=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr
    assert "'serve'" in result.stderr


def test_help_lists_the_commands_and_serve_help_lists_its_flags(tmp_path):
    root = run_cli("--help", data_dir=tmp_path)
    serve = run_cli("serve", "--help", data_dir=tmp_path)
    assert root.returncode == serve.returncode == 0
    assert "serve" in root.stdout
    assert "--web.listen-address" not in root.stdout
    assert "--web.listen-address" in serve.stdout
    assert "SCOUT_WEBHOOK_TOKEN" in serve.stdout


def test_prometheus_token_comes_from_a_file_and_never_shows(tmp_path):
    token_file = tmp_path / "prometheus-token"
    token_file.write_text("canary-prom-7f3a\n")
    args = build_parser().parse_args(["serve", "--web.insecure-no-auth"])
    environ = {
        "SCOUT_PROMETHEUS_URL": "http://127.0.0.1:9090/prom",
        "SCOUT_PROMETHEUS_BEARER_TOKEN_FILE": str(token_file),
    }
    settings = settings_from(args, environ)
    assert settings.prometheus_bearer_token == "canary-prom-7f3a"
    assert "canary-prom-7f3a" not in repr(settings)
    both = {**environ, "SCOUT_PROMETHEUS_BEARER_TOKEN": "canary-other-11"}
    with pytest.raises(ConfigError) as refused:
        settings_from(args, both)
    assert str(refused.value) == (
        "set SCOUT_PROMETHEUS_BEARER_TOKEN or SCOUT_PROMETHEUS_BEARER_TOKEN_FILE, not both"
    )


def test_a_prometheus_token_without_a_prometheus_url_is_refused():
    args = build_parser().parse_args(["serve", "--web.insecure-no-auth"])
    with pytest.raises(ConfigError) as refused:
        settings_from(args, {"SCOUT_PROMETHEUS_BEARER_TOKEN": "canary-lonely-5"})
    assert str(refused.value) == "a Prometheus token is set but SCOUT_PROMETHEUS_URL is not"


def test_the_store_password_comes_from_a_file_and_never_shows(tmp_path):
    password_file = tmp_path / "store-password"
    password_file.write_text("canary-store-81c2\n")
    args = build_parser().parse_args(["serve", "--web.insecure-no-auth"])
    environ = {
        "SCOUT_STORE_URL": "postgresql://scout@db.example:5432/scout",
        "SCOUT_STORE_PASSWORD_FILE": str(password_file),
    }
    settings = settings_from(args, environ)
    assert settings.store_password == "canary-store-81c2"
    location = settings.store_location
    assert location is not None
    assert location.name == "postgresql://db.example:5432/scout"
    assert "canary-store-81c2" not in repr(settings)
    assert "canary-store-81c2" not in repr(location)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql://scout:canary-inline-3@db/scout",
            "SCOUT_STORE_URL: remove the password from the connection string; "
            "set SCOUT_STORE_PASSWORD or SCOUT_STORE_PASSWORD_FILE instead",
        ),
        (
            "host=db password=canary-inline-3 dbname=scout",
            "SCOUT_STORE_URL: remove the password from the connection string; "
            "set SCOUT_STORE_PASSWORD or SCOUT_STORE_PASSWORD_FILE instead",
        ),
        (
            "host=db sslpassword=canary-inline-3 dbname=scout",
            "SCOUT_STORE_URL: remove sslpassword from the connection string; "
            "use a client key without a passphrase, readable only by the sidecar",
        ),
        (
            "postgresql://scout@db/scout?sslpassword=canary-inline-3",
            "SCOUT_STORE_URL: remove sslpassword from the connection string; "
            "use a client key without a passphrase, readable only by the sidecar",
        ),
        (
            "mysql://db/canary-inline-3",
            "SCOUT_STORE_URL: expected a postgresql:// URL or key=value pairs",
        ),
        (
            "host=db canary-inline-3",
            "SCOUT_STORE_URL: not a valid PostgreSQL connection string",
        ),
    ],
)
def test_a_bad_store_url_is_refused_without_echoing_it(url, message):
    args = build_parser().parse_args(["serve", "--web.insecure-no-auth"])
    with pytest.raises(ConfigError) as refused:
        settings_from(args, {"SCOUT_STORE_URL": url})
    assert str(refused.value) == message


def test_settings_never_show_the_secrets_of_a_store_url():
    settings = SidecarSettings(
        store_url="postgresql://scout:canary-repr-1@db.example/scout?sslpassword=canary-repr-2",
        store_password="canary-repr-3",
    )
    location = settings.store_location
    assert location is not None
    for text in (repr(settings), repr(location), str(location)):
        assert "canary-repr" not in text
    assert "db.example" in repr(location)


def test_a_store_password_without_a_store_url_is_refused():
    args = build_parser().parse_args(["serve", "--web.insecure-no-auth"])
    with pytest.raises(ConfigError) as refused:
        settings_from(args, {"SCOUT_STORE_PASSWORD": "canary-lonely-9"})
    assert str(refused.value) == "a store password is set but SCOUT_STORE_URL is not"


def test_dry_run_with_a_store_url_never_prints_the_password(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ai_sidecar.cli", "--dry-run", "--web.insecure-no-auth"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "SCOUT_DATA_DIR": str(tmp_path / "data"),
            "SCOUT_STORE_URL": "postgresql://scout@db.example/scout",
            "SCOUT_STORE_PASSWORD": "canary-dry-run-4d",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "settings and config are valid" in result.stdout
    assert "canary-dry-run-4d" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("key_env", "returncode"),
    [({}, 1), ({"GEMINI_API_KEY": "canary-cli-key-77"}, 0)],
    ids=["missing", "set"],
)
def test_a_configured_llm_without_its_key_is_refused_at_start(tmp_path, key_env, returncode):
    config = tmp_path / "sidecar.yml"
    config.write_text("llm: {provider: gemini}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ai_sidecar.cli",
            "--dry-run",
            "--web.insecure-no-auth",
            f"--config.file={config}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", "SCOUT_DATA_DIR": str(tmp_path / "data"), **key_env},
    )
    assert result.returncode == returncode, result.stderr
    if returncode:
        assert result.stderr.strip() == (
            "scout-sidecar: llm.provider is gemini but GEMINI_API_KEY is not set: "
            "set it, or GEMINI_API_KEY_FILE naming a file that holds the key"
        )
    assert "canary-cli-key-77" not in result.stdout + result.stderr


def test_dry_run_checks_a_set_graph_key_and_creates_no_default_one(tmp_path):
    key = tmp_path / "graph-shared.key"
    config = tmp_path / "sidecar.yml"
    config.write_text(f"graphs: {{key_file: {key}}}\n")
    argv = ("--dry-run", "--web.insecure-no-auth", f"--config.file={config}")
    data_dir = tmp_path / "data"
    missing = run_cli(*argv, data_dir=data_dir)
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "scout-sidecar: graphs.key_file: cannot read it (No such file or directory)",
    )
    key.write_bytes(b"short")
    short = run_cli(*argv, data_dir=data_dir)
    assert "the key needs at least 16 bytes" in short.stderr
    key.write_bytes(b"k" * 32)
    key.chmod(0o600)
    assert run_cli(*argv, data_dir=data_dir).returncode == 0
    config.write_text("{}\n")
    assert run_cli(*argv, data_dir=data_dir).returncode == 0
    assert not (data_dir / "graph.key").exists()
