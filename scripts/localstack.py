"""Run Scout's local stack on loopback: Prometheus, Alertmanager, the exporter, the sidecar.

``make up`` calls this. Every process runs in its own process group and is
stopped on Ctrl-C (or SIGTERM), so nothing is left behind. The process helpers
here are also what the test suite and the benchmarks use to run real peers.

Secrets live in ``DATA_DIR/secrets/`` (``.stack/secrets/`` by default), made on
first start and kept afterwards, so you can put real values in them:

- ``webhook-token``: a random bearer token; Alertmanager sends it to the
  sidecar's webhook and the sidecar reads it through ``SCOUT_WEBHOOK_TOKEN_FILE``;
- ``slack-api-url``: your Slack incoming-webhook URL (a placeholder that
  refuses connections until you set it);
- ``smtp-password``: empty until you set it;
- ``console-admin``: the password of the console's first operator login,
  ``admin``, made with ``scout-sidecar user add`` when the stack first starts
  (``scout-sidecar user passwd`` changes it, with ``SCOUT_DATA_DIR`` set to
  the stack's ``sidecar/`` directory). Delete the file for a new password at
  the next start.

The shipped ``alertmanager/alertmanager.yml`` reads its secrets from
``/etc/scout/secrets/``; the copy the stack runs has those paths, the
template paths and the sidecar's address rewritten on the parsed YAML.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


class StackError(Exception):
    """The stack cannot start; the message says what to do."""


# Listening ports are drawn from outside the kernel's ephemeral range: a port drawn
# from inside it (as bind to port 0 does) can be taken as the local end of any
# outgoing connection, from this process or another, before the server that was
# meant to listen there binds it; the server then fails with "address in use".
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LISTEN_PORTS_FLOOR = 10000  # above the well-known and most registered daemons' ports
_DRAWS = 200


def _ports_outside_ephemeral_range() -> list[range]:
    try:
        low, high = (int(n) for n in _EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return []
    ranges = [range(_LISTEN_PORTS_FLOOR, low), range(max(high + 1, _LISTEN_PORTS_FLOOR), 65536)]
    # Test workers run side by side (pytest-xdist names them in the environment):
    # each draws from its own residue class, so two never draw the same port.
    try:
        worker = int(os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw"))
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", ""))
    except ValueError:
        worker, workers = 0, 1
    if not 0 <= worker < workers:
        worker, workers = 0, 1
    ranges = [range(r.start + (worker - r.start) % workers, r.stop, workers) for r in ranges]
    return [r for r in ranges if len(r)]


def _can_bind(
    host: str, port: int, kind: socket.SocketKind, *, reuse_address: bool = False
) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing is bound to now, for TCP or (``SOCK_DGRAM``) for UDP: the two are
    separate, and a busy machine may hold many UDP ports that are free for TCP.

    Drawn at random outside the ephemeral range where the machine has one, so
    that concurrent tests drawing ports rarely meet and outgoing connections
    never take the port first."""
    ranges = _ports_outside_ephemeral_range()
    choices = sum(len(r) for r in ranges)
    for _ in range(_DRAWS if choices else 0):
        index = secrets.randbelow(choices)
        for candidates in ranges:
            if index < len(candidates):
                port = candidates[index]
                break
            index -= len(candidates)
        if _can_bind(host, port, kind):
            return port
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now.

    SO_REUSEADDR, as the servers themselves set it, so connections of a stack
    that just stopped (TIME_WAIT) do not count as the port being in use.
    """
    return _can_bind(host, port, socket.SOCK_STREAM, reuse_address=True)


def find_binary(*names: str) -> str:
    """The first of ``names`` on PATH or beside this Python (the venv's scripts)."""
    for name in names:
        beside_python = Path(sys.executable).parent / name
        if beside_python.exists():
            return str(beside_python)
        found = shutil.which(name)
        if found:
            return found
    raise StackError(f"none of {', '.join(names)} is installed; run `make up` to install them")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# How long a service may take to answer its readiness URL. The sidecar alone spends
# about 3 s of CPU importing its libraries: 11 s before it was ready on a 2-core
# machine running the test suite beside it.
READY_TIMEOUT = 60.0


@dataclass
class Service:
    """A child process with a readiness URL and a log file."""

    name: str
    argv: list[str]
    ready_url: str
    log_path: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group, so Ctrl-C reaches us alone
                env=self.env,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited():
                raise StackError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            if http_ok(self.ready_url):
                return
            time.sleep(0.1)
        raise StackError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after ``grace``."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Children of the service (if any) share its group; make sure none survive.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def prometheus_service(
    config: Path, data_dir: Path, port: int, extra_args: Sequence[str] = ()
) -> Service:
    address = f"127.0.0.1:{port}"
    return Service(
        name="prometheus",
        argv=[
            find_binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir / 'prometheus'}",
            f"--web.listen-address={address}",
            f"--web.external-url=http://{address}/",
            "--web.enable-lifecycle",
            *extra_args,
        ],
        ready_url=f"http://{address}/-/ready",
        log_path=data_dir / "logs" / "prometheus.log",
    )


def alertmanager_service(config: Path, data_dir: Path, port: int) -> Service:
    address = f"127.0.0.1:{port}"
    return Service(
        name="alertmanager",
        argv=[
            find_binary("prometheus-alertmanager", "alertmanager"),
            f"--config.file={config}",
            f"--storage.path={data_dir / 'alertmanager'}",
            f"--web.listen-address={address}",
            f"--web.external-url=http://{address}/",
            # Empty: no gossip on 0.0.0.0:9094 for a single local instance.
            "--cluster.listen-address=",
        ],
        ready_url=f"http://{address}/-/ready",
        log_path=data_dir / "logs" / "alertmanager.log",
    )


def scout_service(
    command: Sequence[str], data_dir: Path, port: int, env: dict[str, str] | None = None
) -> Service:
    """A Scout daemon (``["scout-exporter"]`` or ``["scout-sidecar", "serve"]``) on ``port``.

    ``env`` is added to this process's environment.
    """
    address = f"127.0.0.1:{port}"
    name = command[0]
    return Service(
        name=name,
        argv=[find_binary(name), *command[1:], f"--web.listen-address={address}"],
        ready_url=f"http://{address}/-/ready",
        log_path=data_dir / "logs" / f"{name}.log",
        env=None if env is None else {**os.environ, **env},
    )


def exporter_service(data_dir: Path, port: int, args: Sequence[str] = ()) -> Service:
    return scout_service(["scout-exporter", *args], data_dir, port)


def sidecar_service(
    data_dir: Path, port: int, args: Sequence[str] = (), env: dict[str, str] | None = None
) -> Service:
    return scout_service(["scout-sidecar", "serve", *args], data_dir, port, env)


# Where the shipped alertmanager.yml (and docker-compose.yml) expect secrets.
SHIPPED_SECRETS_DIR = "/etc/scout/secrets"
# The receiver in alertmanager.yml that posts raw alerts to the sidecar.
SIDECAR_RECEIVER = "scout-sidecar"
WEBHOOK_PATH = "/api/v1/alertmanager"
# Until the operator puts a real Slack webhook URL in the file: a loopback
# port nothing listens on, so Alertmanager logs failed notifications instead
# of sending them anywhere.
SLACK_PLACEHOLDER = "http://127.0.0.1:9/set-your-slack-webhook-url-here"


def ensure_secrets(directory: Path) -> dict[str, Path]:
    """Create the stack's secret files that are missing; return them by name."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    defaults = {
        "webhook-token": secrets.token_urlsafe(32),
        "slack-api-url": SLACK_PLACEHOLDER,
        "smtp-password": "",
    }
    paths = {}
    for name, value in defaults.items():
        path = directory / name
        if not path.exists():
            _write_private(path, value)
        paths[name] = path
    return paths


# The console's first login, made at the stack's first start.
CONSOLE_ADMIN = "admin"
CONSOLE_ADMIN_SECRET = "console-admin"


def _write_private(path: Path, value: str) -> None:
    """Create ``path`` readable by this user alone (it must not exist yet)."""
    # Created private from the start: a token must not be readable by other users.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as secret:
        secret.write(value)


def _user_command(args: Sequence[str], env: dict[str, str], stdin: str = "") -> str:
    """Run ``scout-sidecar user ARGS`` on the stack's store; its output, or StackError."""
    result = subprocess.run(
        [find_binary("scout-sidecar"), "user", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"cannot set up the console login {CONSOLE_ADMIN!r} "
            f"(scout-sidecar user {args[0]}):\n" + (result.stderr or result.stdout).strip()
        )
    return result.stdout


def ensure_console_login(secrets_dir: Path, sidecar_env: dict[str, str]) -> Path:
    """Make the console's first operator login unless its password file exists; return it.

    The password comes from the system's CSPRNG and goes to the file and to
    ``scout-sidecar user``'s standard input, never to an argument (a process
    listing would show it) or to the output. The user is created (or, when
    the file was deleted, given the new password) through the CLI, in the
    store the sidecar reads (``sidecar_env``), before the file is written: a
    file exists only for a login that works.
    """
    path = secrets_dir / CONSOLE_ADMIN_SECRET
    if path.exists():
        return path
    password = secrets.token_urlsafe(18)
    users = _user_command(["list"], sidecar_env)
    exists = CONSOLE_ADMIN in (line.split("\t")[0] for line in users.splitlines())
    if exists:
        command = ["passwd", CONSOLE_ADMIN, "--password-stdin"]
    else:
        command = ["add", CONSOLE_ADMIN, "--role", "operator", "--password-stdin"]
    _user_command(command, sidecar_env, stdin=password + "\n")
    _write_private(path, password)
    return path


def _repoint_secret_files(node: Any, secrets_dir: Path) -> None:
    """Point every ``*_file`` under the shipped secrets directory at ``secrets_dir``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (
                key.endswith("_file")
                and isinstance(value, str)
                and value.startswith(SHIPPED_SECRETS_DIR + "/")
            ):
                node[key] = str(secrets_dir / Path(value).name)
            else:
                _repoint_secret_files(value, secrets_dir)
    elif isinstance(node, list):
        for item in node:
            _repoint_secret_files(item, secrets_dir)


def load_alertmanager_config(source: Path, *, secrets_dir: Path, sidecar_url: str) -> Any:
    """The shipped Alertmanager config, parsed, made runnable from another directory.

    Secret files come from ``secrets_dir``, templates from beside ``source``,
    and the sidecar's receiver posts to ``sidecar_url`` (its base URL).
    Everything else (routes, inhibitions, templates) is left as shipped.
    """
    config = yaml.safe_load(source.read_text())
    config["templates"] = [str(source.parent / pattern) for pattern in config.get("templates", [])]
    _repoint_secret_files(config, secrets_dir)
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    for hook in receivers[SIDECAR_RECEIVER]["webhook_configs"]:
        hook["url"] = sidecar_url.rstrip("/") + WEBHOOK_PATH
    return config


def write_yaml(destination: Path, document: Any) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(yaml.safe_dump(document, sort_keys=False))


def write_prometheus_config(
    source: Path, destination: Path, addresses: dict[str, str], alertmanager: str
) -> None:
    """Copy ``source`` with each job's targets set to ``addresses[job]``.

    Rule and file_sd paths are made absolute, since Prometheus reads them relative
    to the config file, which now lives elsewhere; multi-target jobs are pointed
    at the exporter's address.
    """
    config = yaml.safe_load(source.read_text())
    config["rule_files"] = [str(source.parent / pattern) for pattern in config["rule_files"]]
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    for job in config["scrape_configs"]:
        if job["job_name"] in addresses:
            job["static_configs"] = [{"targets": [addresses[job["job_name"]]]}]
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(source.parent / pattern) for pattern in sd["files"]]
        # Multi-target jobs reach the targets through the exporter.
        for rule in job.get("relabel_configs", []):
            if rule.get("target_label") == "__address__" and "replacement" in rule:
                rule["replacement"] = addresses["scout-exporter"]
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(yaml.safe_dump(config, sort_keys=False))


@contextlib.contextmanager
def running(services: Sequence[Service], ready_timeout: float = READY_TIMEOUT) -> Iterator[None]:
    """Start ``services`` in order, each ready before the next; stop all on exit."""
    started: list[Service] = []
    try:
        for service in services:
            # Listed before it starts: a Ctrl-C landing inside start() must still stop it.
            started.append(service)
            service.start()
            service.wait_ready(ready_timeout)
        yield
    finally:
        with stop_signals_ignored():
            for service in reversed(started):
                service.stop()


@contextlib.contextmanager
def stop_signals_ignored() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while the services stop, then restore the handlers.

    A second signal is common (an impatient double Ctrl-C; `timeout make up`,
    where both `timeout` and `make` pass one on). Raised in the middle of the stop
    loop, it would leave the services not yet stopped running on their own;
    ignoring it costs nothing, since `Service.stop` already ends in SIGKILL.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be changed from the main thread
        return
    previous: dict[signal.Signals, Any] = {}
    try:
        # Inside the try: a signal landing between the two calls still restores both.
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            previous[stop_signal] = signal.signal(stop_signal, signal.SIG_IGN)
        yield
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--alertmanager-port", type=int, default=9093)
    parser.add_argument("--exporter-port", type=int, default=8781)
    parser.add_argument("--sidecar-port", type=int, default=8782)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".stack")
    parser.add_argument(
        "--exporter-config", type=Path, default=REPO / "docs" / "examples" / "scout-exporter.yml"
    )
    parser.add_argument(
        "--sidecar-config", type=Path, default=REPO / "docs" / "examples" / "scout-sidecar.yml"
    )
    return parser.parse_args(argv)


# Which `make` variable overrides each port, for the error message.
_PORT_VARIABLES = {
    "prometheus_port": "PROMETHEUS_PORT",
    "alertmanager_port": "ALERTMANAGER_PORT",
    "exporter_port": "EXPORTER_PORT",
    "sidecar_port": "SIDECAR_PORT",
}


def check_ports(args: argparse.Namespace) -> None:
    busy = [
        f"  port {getattr(args, attr)} is in use: pick another with `make up {var}=<port>`"
        for attr, var in _PORT_VARIABLES.items()
        if not port_is_free(getattr(args, attr))
    ]
    if busy:
        raise StackError("cannot start the stack:\n" + "\n".join(busy))


def demo_command(args: argparse.Namespace) -> str:
    """``make demo`` with the port variables this stack was started with: the demo
    must talk to the same Alertmanager and sidecar."""
    defaults = parse_args([])
    changed = [
        f"{_PORT_VARIABLES[attr]}={getattr(args, attr)}"
        for attr in ("alertmanager_port", "sidecar_port")
        if getattr(args, attr) != getattr(defaults, attr)
    ]
    return " ".join(["make demo", *changed])


def watch(services: Sequence[Service]) -> None:
    """Return never; raise if a service dies, so the others are stopped too."""
    while True:
        dead = [s for s in services if s.exited()]
        if dead:
            raise StackError(
                "".join(f"{s.name} stopped unexpectedly:\n{s.log_tail()}\n" for s in dead)
            )
        time.sleep(0.5)


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """SIGTERM (from a supervisor or `kill`) stops the stack as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    # A shell starting us in the background leaves SIGINT ignored; Ctrl-C must still work.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.data_dir.resolve()
    addr = {
        "prometheus": f"127.0.0.1:{args.prometheus_port}",
        "alertmanager": f"127.0.0.1:{args.alertmanager_port}",
        "scout-exporter": f"127.0.0.1:{args.exporter_port}",
        "scout-sidecar": f"127.0.0.1:{args.sidecar_port}",
    }
    stop_on_signals()
    try:
        check_ports(args)
        prometheus_config = data / "prometheus.yml"
        write_prometheus_config(
            REPO / "prometheus" / "prometheus.yml",
            prometheus_config,
            addr,
            addr["alertmanager"],
        )
        secret_files = ensure_secrets(data / "secrets")
        alertmanager_config = data / "alertmanager.yml"
        write_yaml(
            alertmanager_config,
            load_alertmanager_config(
                REPO / "alertmanager" / "alertmanager.yml",
                secrets_dir=data / "secrets",
                sidecar_url=f"http://{addr['scout-sidecar']}",
            ),
        )
        sidecar_env = {
            # The file Alertmanager's webhook reads its credentials from.
            "SCOUT_WEBHOOK_TOKEN_FILE": str(secret_files["webhook-token"]),
            "SCOUT_ALERTMANAGER_URLS": f"http://{addr['alertmanager']}",
            "SCOUT_PROMETHEUS_URL": f"http://{addr['prometheus']}",
            "SCOUT_DATA_DIR": str(data / "sidecar"),
        }
        services = [
            # --web.enable-lifecycle: the demo config says to reload with curl (loopback only).
            exporter_service(
                data,
                args.exporter_port,
                [f"--config.file={args.exporter_config}", "--web.enable-lifecycle"],
            ),
            sidecar_service(
                data, args.sidecar_port, [f"--config.file={args.sidecar_config}"], sidecar_env
            ),
            alertmanager_service(alertmanager_config, data, args.alertmanager_port),
            prometheus_service(prometheus_config, data, args.prometheus_port),
        ]
        with running(services):
            login = ensure_console_login(data / "secrets", sidecar_env)
            print("Scout stack is up (Ctrl-C stops it):")
            for name, address in addr.items():
                print(f"  {name:<14} http://{address}/")
            print(
                f"  console        http://{addr['scout-sidecar']}/console/"
                f" (sign in as {CONSOLE_ADMIN}: the password is in {login})"
            )
            print(f"  logs and data  {data}")
            print(
                "  try: curl -s 'http://{}/api/v1/query?query=scout_host_load1'".format(
                    addr["prometheus"]
                )
            )
            print(f"  demo: `{demo_command(args)}` posts an alert storm for the console to show")
            sys.stdout.flush()
            try:
                watch(services)
            except KeyboardInterrupt:
                print(
                    "\nstopping the Scout stack (each service gets 10 s, then is killed;"
                    " Ctrl-C is ignored meanwhile) ...",
                    flush=True,
                )
        print("stopped.")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped.")
        return 130
    except StackError as exc:
        print(f"localstack: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
