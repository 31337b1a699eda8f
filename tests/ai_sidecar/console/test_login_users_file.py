"""Users from ``console.users_file``: they sign in, win over stored users, and follow the file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
import yaml
from aiohttp.test_utils import TestClient

from ai_sidecar.app import create_app
from ai_sidecar.config import ConsoleConfig, SidecarConfig
from ai_sidecar.console.login.users import load_users_file
from ai_sidecar.errors import ConfigError
from ai_sidecar.settings import SidecarSettings
from tests.ai_sidecar.console.login_helpers import (
    OPERATOR_PASSWORD,
    TOKEN,
    VIEWER_PASSWORD,
    add_probe_routes,
    add_user,
    password_hash,
    sign_in,
)

FILE_PASSWORD = "from the users file"


def write_users(path: Path, users: list[dict[str, str]]) -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(yaml.safe_dump({"users": users}))
    # A rewrite within the file system's timestamp granularity still shows.
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.yml"
    write_users(
        path,
        [
            {"name": "fiona", "role": "operator", "password_hash": password_hash(FILE_PASSWORD)},
            {
                "name": "bert",
                "role": "viewer",
                # bcrypt, as htpasswd -B makes it.
                "password_hash": bcrypt.hashpw(
                    VIEWER_PASSWORD.encode(), bcrypt.gensalt(4)
                ).decode(),
            },
        ],
    )
    return path


@pytest.fixture
async def client(aiohttp_client, tmp_path: Path, users_file: Path) -> TestClient:
    config = SidecarConfig(console=ConsoleConfig(users_file=users_file))
    app = create_app(SidecarSettings(data_dir=tmp_path / "data", webhook_token=TOKEN), config)
    add_probe_routes(app)
    return await aiohttp_client(app)


async def whoami(client: TestClient) -> dict[str, str] | None:
    response = await client.get("/console/probe/whoami", allow_redirects=False)
    return await response.json() if response.status == 200 else None


async def test_file_users_sign_in_with_argon2_or_bcrypt_hashes(client: TestClient):
    assert (await sign_in(client, "fiona", FILE_PASSWORD)).status == 303
    assert await whoami(client) == {"name": "fiona", "role": "operator"}
    assert (await sign_in(client, "bert", VIEWER_PASSWORD)).status == 303
    assert await whoami(client) == {"name": "bert", "role": "viewer"}
    assert (await sign_in(client, "bert", "not bert's password")).status == 401


async def test_a_file_user_wins_over_a_stored_one(client: TestClient):
    await add_user(client, "fiona", "viewer", OPERATOR_PASSWORD)
    assert (await sign_in(client, "fiona", OPERATOR_PASSWORD)).status == 401
    assert (await sign_in(client, "fiona", FILE_PASSWORD)).status == 303
    assert await whoami(client) == {"name": "fiona", "role": "operator"}
    # Stored users of other names still sign in.
    await add_user(client, "olivia", "operator", OPERATOR_PASSWORD)
    assert (await sign_in(client, "olivia", OPERATOR_PASSWORD)).status == 303


async def test_file_users_sign_in_whatever_the_case_typed(client: TestClient):
    assert (await sign_in(client, "FIONA", FILE_PASSWORD)).status == 303
    assert await whoami(client) == {"name": "fiona", "role": "operator"}
    # A stored user whose name differs only in case is the file's user: the file wins.
    await add_user(client, "Bert", "operator", OPERATOR_PASSWORD)
    assert (await sign_in(client, "Bert", OPERATOR_PASSWORD)).status == 401
    assert (await sign_in(client, "Bert", VIEWER_PASSWORD)).status == 303
    assert await whoami(client) == {"name": "bert", "role": "viewer"}


async def test_the_file_is_read_again_when_it_changes(client: TestClient, users_file: Path):
    await sign_in(client, "fiona", FILE_PASSWORD)
    write_users(
        users_file,
        [{"name": "fiona", "role": "viewer", "password_hash": password_hash(FILE_PASSWORD)}],
    )
    assert await whoami(client) == {"name": "fiona", "role": "viewer"}
    write_users(users_file, [])
    assert await whoami(client) is None  # removed from the file: the session ends
    assert (await sign_in(client, "fiona", FILE_PASSWORD)).status == 401


async def test_a_broken_file_keeps_the_users_read_before(
    client: TestClient, users_file: Path, caplog
):
    await asyncio.to_thread(users_file.write_text, "users: [ {name: fiona")
    os.utime(users_file, ns=(1, 1))
    assert (await sign_in(client, "fiona", FILE_PASSWORD)).status == 303
    assert "console users file refused" in caplog.text


async def test_a_deleted_file_is_logged_once_and_keeps_the_users_read_before(
    client: TestClient, users_file: Path, caplog
):
    await asyncio.to_thread(users_file.unlink)
    assert (await sign_in(client, "fiona", FILE_PASSWORD)).status == 303
    assert await whoami(client) == {"name": "fiona", "role": "operator"}
    refused = [r for r in caplog.records if "console users file refused" in r.getMessage()]
    assert len(refused) == 1
    assert str(users_file) in refused[0].getMessage()
    # Back again: read as any change is.
    write_users(users_file, [])
    assert await whoami(client) is None


def test_a_bad_file_is_an_error_naming_the_line_without_the_hash(tmp_path: Path):
    path = tmp_path / "users.yml"
    path.write_text("users:\n  - {name: ok, role: viewer, password_hash: '$argon2id$not-a-hash'}\n")
    with pytest.raises(ConfigError) as refused:
        load_users_file(path)
    assert f"{path}:2:" in str(refused.value)
    assert "not-a-hash" not in str(refused.value)

    path.write_text("users:\n  - {name: '<b>', role: admin, password_hash: x}\n")
    with pytest.raises(ConfigError, match="role") as refused:
        load_users_file(path)
    assert "user name" in str(refused.value)


def with_cost(bcrypt_hash: str, cost: int) -> str:
    """The same salt and hash, claiming another cost (as a typo in the file would)."""
    return f"{bcrypt_hash[:4]}{cost:02d}{bcrypt_hash[6:]}"


def test_bcrypt_hashes_are_read_not_run(tmp_path: Path):
    cheap = bcrypt.hashpw(b"x" * 12, bcrypt.gensalt(4)).decode()
    path = tmp_path / "users.yml"
    for refused, reason in [
        (with_cost(cheap, 16), "at most 15"),  # 16 doublings: seconds per sign-in
        (with_cost(cheap, 31), "at most 15"),  # running it to check it never ends
        (cheap[:-1], "not a valid bcrypt hash"),
        (with_cost(cheap, 3), "not a valid bcrypt hash"),
    ]:
        write_users(path, [{"name": "bert", "role": "viewer", "password_hash": refused}])
        with pytest.raises(ConfigError, match=reason):
            load_users_file(path)
    write_users(path, [{"name": "bert", "role": "viewer", "password_hash": with_cost(cheap, 15)}])
    assert load_users_file(path)["bert"].password_hash == with_cost(cheap, 15)


async def test_a_file_anyone_may_write_is_refused(client: TestClient, users_file: Path, caplog):
    await asyncio.to_thread(users_file.chmod, 0o666)
    with pytest.raises(ConfigError, match="can be written by any user of this host"):
        load_users_file(users_file)
    # Made so at run time, and written by someone: refused, the users read before stay.
    write_users(
        users_file,
        [{"name": "mallory", "role": "operator", "password_hash": password_hash(FILE_PASSWORD)}],
    )
    assert (await sign_in(client, "mallory", FILE_PASSWORD)).status == 401
    assert (await sign_in(client, "fiona", FILE_PASSWORD)).status == 303
    assert "chmod o-w" in caplog.text
    # Group-writable is the admin's choice; the chmod alone is a change.
    await asyncio.to_thread(users_file.chmod, 0o660)
    assert (await sign_in(client, "mallory", FILE_PASSWORD)).status == 303


def test_argon2id_hashes_that_would_exhaust_the_host_are_refused(tmp_path: Path):
    made = password_hash(FILE_PASSWORD)  # $argon2id$v=19$m=65536,t=3,p=4$...
    path = tmp_path / "users.yml"
    for refused, reason in [
        (made.replace("m=65536,", "m=4194304,"), "4096 MiB"),  # 4 GiB per attempt
        (made.replace(",t=3,", ",t=200,"), "200 passes"),
    ]:
        write_users(path, [{"name": "bert", "role": "viewer", "password_hash": refused}])
        with pytest.raises(ConfigError, match=reason):
            load_users_file(path)
    sensitive = made.replace("m=65536,t=3,", "m=1048576,t=4,")  # libsodium's heaviest
    write_users(path, [{"name": "bert", "role": "viewer", "password_hash": sensitive}])
    assert load_users_file(path)["bert"].password_hash == sensitive


def test_a_name_listed_twice_is_refused(tmp_path: Path):
    path = tmp_path / "users.yml"
    entry = {"name": "fiona", "role": "viewer", "password_hash": password_hash(FILE_PASSWORD)}
    write_users(path, [entry, entry])
    with pytest.raises(ConfigError, match="'fiona' is listed twice"):
        load_users_file(path)
    write_users(path, [entry, {**entry, "name": "Fiona"}])
    with pytest.raises(ConfigError, match=r"'fiona' is listed twice .*'fiona', 'Fiona'"):
        load_users_file(path)


def test_serve_checks_the_file_before_starting(tmp_path: Path):
    config = tmp_path / "scout.yml"
    config.write_text(f"console:\n  users_file: {tmp_path / 'absent.yml'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "ai_sidecar.cli", "serve", "--dry-run", f"--config.file={config}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "SCOUT_WEBHOOK_TOKEN": TOKEN,
            "SCOUT_DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 1
    assert "absent.yml: cannot read config" in result.stderr
    assert "Traceback" not in result.stderr
