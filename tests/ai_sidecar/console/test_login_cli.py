"""``scout-sidecar user ...`` end to end: real processes on the store the console signs in from."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiohttp.test_utils import TestClient

from tests.ai_sidecar.console.login_helpers import console_app, sign_in

PASSWORD = "a long enough password"


def run_cli(
    data_dir: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai_sidecar.cli", "user", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "SCOUT_DATA_DIR": str(data_dir)},
    )


def test_add_list_passwd_remove(tmp_path: Path):
    data = tmp_path / "data"
    added = run_cli(data, "add", "olivia", "--role", "operator", "--password-stdin", stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    assert added.stdout == ""
    assert PASSWORD not in added.stderr
    assert run_cli(data, "add", "victor", "--role", "viewer", "--generate").returncode == 0

    listed = run_cli(data, "list")
    assert listed.stdout == "olivia\toperator\nvictor\tviewer\n"

    again = run_cli(data, "add", "olivia", "--role", "viewer", "--password-stdin", stdin=PASSWORD)
    assert again.returncode == 2
    assert "user 'olivia' exists" in again.stderr

    password_file = tmp_path / "new-password"
    password_file.write_text("another long password\n")
    changed = run_cli(data, "passwd", "olivia", f"--password-file={password_file}")
    assert changed.returncode == 0, changed.stderr
    assert "another long password" not in changed.stdout + changed.stderr

    assert run_cli(data, "remove", "victor").returncode == 0
    assert run_cli(data, "list").stdout == "olivia\toperator\n"
    missing = run_cli(data, "remove", "victor")
    assert missing.returncode == 2
    assert "no stored user 'victor'" in missing.stderr


def test_generate_prints_the_password_once_alone(tmp_path: Path):
    first = run_cli(tmp_path, "add", "admin", "--role", "operator", "--generate")
    second = run_cli(tmp_path, "passwd", "admin", "--generate")
    for result in (first, second):
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 1
        assert len(lines[0]) >= 24
        assert lines[0] not in result.stderr
    assert first.stdout != second.stdout


def test_bad_input_is_refused_with_a_clear_message(tmp_path: Path):
    short = run_cli(
        tmp_path, "add", "olivia", "--role", "viewer", "--password-stdin", stdin="short"
    )
    assert short.returncode == 2
    assert "at least 12 characters" in short.stderr
    assert "short" not in short.stderr.replace("at least", "")
    no_terminal = run_cli(tmp_path, "add", "olivia", "--role", "viewer", stdin="")
    assert no_terminal.returncode == 2
    assert "--password-stdin, --password-file or --generate" in no_terminal.stderr
    bad_name = run_cli(tmp_path, "add", "<script>", "--role", "viewer", "--generate")
    assert bad_name.returncode == 2
    assert "a user name is 1 to 64 letters" in bad_name.stderr
    unreadable = run_cli(tmp_path, "passwd", "olivia", f"--password-file={tmp_path / 'absent'}")
    assert unreadable.returncode == 2
    assert "cannot read" in unreadable.stderr
    assert run_cli(tmp_path, "list").stdout == ""  # nothing was added
    nowhere = run_cli(tmp_path / "absent", "list")
    assert nowhere.returncode == 2
    assert "no store at" in nowhere.stderr


def _converse(argv: list[str], env: dict[str, str], answers: list[str]) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal, typing each answer at each ``Password`` prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, its terminal the pty
        os.execve(argv[0], argv, env)
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            # Only once the prompt is out: getpass turns echo off just before it.
            if pending and shown.endswith(b": "):
                os.write(fd, pending.pop(0).encode() + b"\n")
    finally:
        if time.monotonic() >= deadline:  # stuck waiting for input: fail, do not hang
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_a_terminal_is_asked_twice_and_the_password_is_not_echoed(tmp_path: Path):
    env = {"PATH": "/usr/bin:/bin", "SCOUT_DATA_DIR": str(tmp_path)}
    argv = [sys.executable, "-m", "ai_sidecar.cli", "user", "add", "olivia", "--role", "viewer"]
    status, shown = _converse(argv, env, [PASSWORD, PASSWORD])
    assert status == 0, shown
    assert "Password again:" in shown
    assert PASSWORD not in shown

    argv[5] = "victor"
    status, shown = _converse(argv, env, [PASSWORD, PASSWORD + "x"])
    assert status == 2
    assert "the two passwords differ" in shown
    assert run_cli(tmp_path, "list").stdout == "olivia\tviewer\n"


async def test_a_user_added_by_the_cli_signs_in_and_passwd_ends_the_session(
    aiohttp_client, tmp_path: Path
):
    data = tmp_path / "data"
    added = run_cli(data, "add", "olivia", "--role", "operator", "--password-stdin", stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    client: TestClient = await aiohttp_client(console_app(data))
    assert (await sign_in(client, "olivia", PASSWORD)).status == 303
    assert (await client.get("/console/probe/whoami", allow_redirects=False)).status == 200

    changed = run_cli(data, "passwd", "olivia", "--password-stdin", stdin="the new password")
    assert changed.returncode == 0, changed.stderr
    assert (await client.get("/console/probe/whoami", allow_redirects=False)).status == 303
    assert (await sign_in(client, "olivia", PASSWORD)).status == 401
    assert (await sign_in(client, "olivia", "the new password")).status == 303


async def test_a_password_file_saved_with_a_byte_order_mark_signs_in_as_typed(
    aiohttp_client, tmp_path: Path
):
    data = tmp_path / "data"
    password_file = tmp_path / "password.txt"
    password_file.write_bytes(b"\xef\xbb\xbf" + PASSWORD.encode() + b"\r\n")  # Notepad's
    added = run_cli(data, "add", "olivia", "--role", "viewer", f"--password-file={password_file}")
    assert added.returncode == 0, added.stderr
    client: TestClient = await aiohttp_client(console_app(data))
    assert (await sign_in(client, "olivia", PASSWORD)).status == 303


async def test_role_changes_a_users_role_at_their_next_request(aiohttp_client, tmp_path: Path):
    data = tmp_path / "data"
    added = run_cli(data, "add", "olivia", "--role", "operator", "--password-stdin", stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    client: TestClient = await aiohttp_client(console_app(data))
    assert (await sign_in(client, "olivia", PASSWORD)).status == 303
    assert (await (await client.get("/console/probe/whoami")).json())["role"] == "operator"

    demoted = run_cli(data, "role", "olivia", "viewer")
    assert demoted.returncode == 0, demoted.stderr
    assert "'olivia' is now viewer (was operator)" in demoted.stderr
    # The session stays open and holds the new role at once.
    whoami = await client.get("/console/probe/whoami", allow_redirects=False)
    assert whoami.status == 200
    assert (await whoami.json())["role"] == "viewer"
    assert run_cli(data, "list").stdout == "olivia\tviewer\n"

    same = run_cli(data, "role", "olivia", "viewer")
    assert same.returncode == 0
    assert "already viewer; nothing was changed" in same.stderr
    unknown = run_cli(data, "role", "nobody", "operator")
    assert unknown.returncode == 2
    assert "no stored user 'nobody'" in unknown.stderr
    bad = run_cli(data, "role", "olivia", "admin")
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr
    assert run_cli(data, "list").stdout == "olivia\tviewer\n"


async def test_names_ignore_case_and_keep_their_spelling(aiohttp_client, tmp_path: Path):
    data = tmp_path / "data"
    added = run_cli(data, "add", "Olivia", "--role", "operator", "--password-stdin", stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    twin = run_cli(data, "add", "olivia", "--role", "viewer", "--password-stdin", stdin=PASSWORD)
    assert twin.returncode == 2
    assert "user 'olivia' exists as 'Olivia' (names ignore case)" in twin.stderr
    assert run_cli(data, "list").stdout == "Olivia\toperator\n"

    client: TestClient = await aiohttp_client(console_app(data))
    assert (await sign_in(client, "OLIVIA", PASSWORD)).status == 303
    shown = await client.get("/console/probe/whoami")
    assert (await shown.json())["name"] == "Olivia"

    # The other commands find the user whatever the case typed, and keep one row.
    assert run_cli(data, "role", "oLiViA", "viewer").returncode == 0
    changed = run_cli(data, "passwd", "olivia", "--password-stdin", stdin="the new password")
    assert changed.returncode == 0, changed.stderr
    assert run_cli(data, "list").stdout == "Olivia\tviewer\n"
    assert (await sign_in(client, "olivia", "the new password")).status == 303
    removed = run_cli(data, "remove", "OLIVIA")
    assert removed.returncode == 0, removed.stderr
    assert "removed 'Olivia'" in removed.stderr
    assert run_cli(data, "list").stdout == ""
