"""Real Alertmanagers for tests, running Scout's shipped configuration.

The config is the shipped ``alertmanager/alertmanager.yml``, parsed, with only
what a test must change swapped on the parsed YAML (never by text
replacement): the sidecar's webhook URL, the Slack URL, the SMTP smarthost and
the secret files (through :func:`scripts.localstack.load_alertmanager_config`),
and the timings of each route, found by its receiver. Routes, matchers,
inhibitions and templates are the shipped ones, so a test that passes here
says something about what operators run.

* :func:`render_config`: write such a config.
* :class:`Alertmanager`: one ``prometheus-alertmanager`` (0.25, Debian) on a
  free loopback port, alone (``--cluster.listen-address=``) or as a member of
  an HA cluster (its own 127.0.0.1 cluster port, ``--cluster.peer`` to the
  others): see :func:`start_cluster`.

Typical use::

    config = render_config(tmp_path, sidecar_url=..., slack_url=slack.url,
                           smtp_smarthost=smtp.smarthost)
    with Alertmanager(tmp_path, config) as am:
        am.post([{"labels": {"alertname": "LinkDown"}}])
"""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ai_sidecar.models import format_time
from scripts.localstack import (
    SIDECAR_RECEIVER,
    Service,
    find_binary,
    free_port,
    load_alertmanager_config,
    write_yaml,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = REPO / "alertmanager" / "alertmanager.yml"
TEST_TOKEN = "test-webhook-token-0123456789"

# Receivers of the shipped routes, which is how the routes are found.
ENRICHED_RECEIVER = "scout-slack"
EMAIL_RECEIVER = "scout-email"
RAW_RECEIVER = "people-raw"
DEADMAN_RECEIVER = "deadman"


@dataclass(frozen=True, slots=True)
class Timings:
    """Route timings for tests, in Alertmanager's duration syntax."""

    # The enriched route (and its P1/P2 child).
    enriched_wait: str = "1s"
    enriched_interval: str = "1s"
    # The fail-open delay: raw alerts reach people after this (and the root route).
    fail_open: str = "4s"
    raw_interval: str = "2s"
    # The route to the sidecar's webhook.
    sidecar_interval: str = "1s"
    repeat: str = "1h"


def _routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield route
    for child in route.get("routes", []):
        yield from _routes(child)


def _retime(route: dict[str, Any], wait: str, interval: str, repeat: str) -> None:
    route.update(group_wait=wait, group_interval=interval, repeat_interval=repeat)


def render_config(
    workdir: Path,
    *,
    sidecar_url: str,
    slack_url: str,
    smtp_smarthost: str,
    webhook_token: str = TEST_TOKEN,
    timings: Timings = Timings(),
    deadman_url: str | None = None,
) -> Path:
    """Write the shipped config with test endpoints, secrets and timings; return its path."""
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    for name, value in {
        "webhook-token": webhook_token,
        "slack-api-url": slack_url,
        "smtp-password": "test-only",
    }.items():
        (secrets_dir / name).write_text(value)
    config = load_alertmanager_config(
        SHIPPED_CONFIG, secrets_dir=secrets_dir, sidecar_url=sidecar_url
    )
    config["global"].update(smtp_smarthost=smtp_smarthost, smtp_require_tls=False)
    _retime(config["route"], timings.fail_open, timings.raw_interval, timings.repeat)
    found = set()
    for route in _routes(config["route"]):
        receiver = route.get("receiver")
        if route is config["route"]:
            continue
        if receiver in (ENRICHED_RECEIVER, EMAIL_RECEIVER):
            _retime(route, timings.enriched_wait, timings.enriched_interval, timings.repeat)
        elif receiver == SIDECAR_RECEIVER:
            _retime(route, "0s", timings.sidecar_interval, timings.repeat)
        elif receiver == RAW_RECEIVER:
            _retime(route, timings.fail_open, timings.raw_interval, timings.repeat)
        elif receiver == DEADMAN_RECEIVER:
            _retime(route, "0s", "1s", timings.repeat)
        found.add(receiver)
    missing = {ENRICHED_RECEIVER, EMAIL_RECEIVER, SIDECAR_RECEIVER, RAW_RECEIVER} - found
    assert not missing, f"the shipped config lost the routes to {missing}"
    if deadman_url is not None:
        for receiver in config["receivers"]:
            if receiver["name"] == DEADMAN_RECEIVER:
                receiver["webhook_configs"][0]["url"] = deadman_url
    path = workdir / "alertmanager.yml"
    write_yaml(path, config)
    return path


def postable(
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    *,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    generator_url: str = "",
) -> dict[str, Any]:
    """One alert in ``POST /api/v2/alerts`` form, as Prometheus would send it."""
    alert: dict[str, Any] = {
        "labels": dict(labels),
        "annotations": dict(annotations or {}),
        "startsAt": format_time(starts_at or datetime.now(UTC)),
    }
    if ends_at is not None:
        alert["endsAt"] = format_time(ends_at)
    if generator_url:
        alert["generatorURL"] = generator_url
    return alert


@dataclass
class Alertmanager:
    """One Alertmanager process on loopback; a context manager that stops it on exit."""

    workdir: Path
    config: Path
    name: str = "alertmanager"
    cluster_port: int | None = None
    cluster_peers: Sequence[int] = ()
    port: int = field(default_factory=free_port)
    service: Service = field(init=False)

    def __post_init__(self) -> None:
        address = f"127.0.0.1:{self.port}"
        if self.cluster_port is None:
            cluster = ["--cluster.listen-address="]
        else:
            cluster = [
                f"--cluster.listen-address=127.0.0.1:{self.cluster_port}",
                f"--cluster.advertise-address=127.0.0.1:{self.cluster_port}",
                *(f"--cluster.peer=127.0.0.1:{peer}" for peer in self.cluster_peers),
                # Loopback gossip takes milliseconds; short intervals keep the
                # second peer's wait for the first one's notification short.
                "--cluster.gossip-interval=50ms",
                "--cluster.pushpull-interval=1s",
                "--cluster.peer-timeout=3s",
                "--cluster.settle-timeout=2s",
            ]
        self.service = Service(
            name=self.name,
            argv=[
                find_binary("prometheus-alertmanager", "alertmanager"),
                f"--config.file={self.config}",
                f"--storage.path={self.workdir / self.name}",
                f"--web.listen-address={address}",
                f"--web.external-url=http://{address}/",
                *cluster,
                "--log.level=debug",
            ],
            ready_url=f"http://{address}/-/ready",
            log_path=self.workdir / "logs" / f"{self.name}.log",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self.service.start()
        self.service.wait_ready()
        return self

    def stop(self) -> None:
        self.service.stop(grace=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts``, as Prometheus does."""
        status, body = self._request("POST", "/api/v2/alerts", list(alerts))
        assert status == 200, (status, body)

    def alerts(self, *filters: str, **params: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` with matchers ``filters`` (e.g. 'scout_enriched="true"')."""
        query = [*params.items(), *(("filter", f) for f in filters)]
        status, body = self._request("GET", "/api/v2/alerts?" + urllib.parse.urlencode(query))
        assert status == 200, (status, body)
        assert isinstance(body, list)
        return body

    def silence(self, name: str, value: str, hours: float = 1.0) -> str:
        """``POST /api/v2/silences``: mute alerts whose label ``name`` is ``value``."""
        now = datetime.now(UTC)
        status, body = self._request(
            "POST",
            "/api/v2/silences",
            {
                "matchers": [{"name": name, "value": value, "isRegex": False, "isEqual": True}],
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(hours=hours)).isoformat(),
                "createdBy": "scout tests",
                "comment": "maintenance",
            },
        )
        assert status == 200, (status, body)
        return str(body["silenceID"])

    def silences(self) -> list[dict[str, Any]]:
        """``GET /api/v2/silences``: every silence the peer holds, expired ones included."""
        status, body = self._request("GET", "/api/v2/silences")
        assert status == 200, (status, body)
        assert isinstance(body, list)
        return body

    def groups(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts/groups``: one entry per route and group, with its receiver."""
        status, body = self._request("GET", "/api/v2/alerts/groups")
        assert status == 200, (status, body)
        assert isinstance(body, list)
        return body

    def log_tail(self, lines: int = 30) -> str:
        return self.service.log_tail(lines)


def free_gossip_port() -> int:
    """A port free for TCP and UDP both: the cluster's gossip listens on both, and
    a test's UDP peers (snmpsim's hundreds of endpoints) may hold a TCP-free port."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@contextlib.contextmanager
def start_cluster(workdir: Path, config: Path, size: int = 2) -> Iterator[list[Alertmanager]]:
    """``size`` Alertmanagers gossiping with each other on loopback; stopped on exit."""
    cluster_ports: list[int] = []
    while len(cluster_ports) < size:
        port = free_gossip_port()
        if port not in cluster_ports:
            cluster_ports.append(port)
    members = [
        Alertmanager(
            workdir,
            config,
            name=f"alertmanager-{n}",
            cluster_port=port,
            cluster_peers=[p for p in cluster_ports if p != port],
        )
        for n, port in enumerate(cluster_ports)
    ]
    started: list[Alertmanager] = []
    try:
        for member in members:
            started.append(member.start())
        yield members
    finally:
        for member in reversed(started):
            member.stop()
