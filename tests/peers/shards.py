"""The sharded deployment on loopback, as scripts/shards.py generates it, with real processes.

:class:`ShardedStack` starts, for the SNMP devices it is given (``host:port``
targets in one file_sd list that every shard reads):

- N shards, each ``scout-exporter`` plus Debian's Prometheus running its
  generated ``shard-k.yml`` (hashmod share, ``shard`` external label, the
  shipped rules, remote write);
- the global tier: VictoriaMetrics (the global view), the global Prometheus
  (``global.yml``), vmalert with the sharded deployment's rule
  (``prometheus/sharded/rules/``), an Alertmanager HA pair with the shipped
  config, and the sidecar querying the global view.

Every rule is the shipped one, with only ``for:`` shortened where a test says
(``for_overrides``, by alert name), on the parsed YAML. Slack and SMTP go to
sinks. The benchmark ``benchmarks/shard_fleet.py`` runs the same stack.

Typical use::

    with ShardedStack(tmp_path, ["127.0.0.1:16100", ...], shards=2) as stack:
        stack.wait_scraped()
        stack.shard_targets(0)
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from scripts.localstack import (
    Service,
    StackError,
    exporter_service,
    find_binary,
    free_port,
    prometheus_service,
    write_yaml,
)
from scripts.shards import Deployment, write_deployment
from tests.peers.alertmanager import Alertmanager, Timings, render_config, start_cluster
from tests.peers.history import victoria_metrics_service
from tests.peers.notify import SlackSink, SmtpSink
from tests.peers.sidecar import Sidecar, start_sidecar
from tests.peers.snmp import free_udp_port

REPO = Path(__file__).resolve().parents[2]
SHIPPED_RULES = REPO / "prometheus" / "rules"
SHARDED_RULES = REPO / "prometheus" / "sharded" / "rules"
# The file_sd lists of the template; the stack fills snmp.yml, the rest stay empty.
TARGET_LISTS = ("snmp.yml", "firewall.yml", "winrm.yml", "icmp.yml")
SIDECAR_CONFIG = """\
return_trip:
  repost_interval: 1s
  retry_backoff_max: 2s
"""


def hashmod(value: str, modulus: int) -> int:
    """Prometheus's ``hashmod`` relabel action: the MD5's last 8 bytes, big-endian, mod N."""
    return int.from_bytes(hashlib.md5(value.encode()).digest()[8:], "big") % modulus


def distinct_free_ports(count: int, taken: set[int]) -> list[int]:
    """``count`` free ports, none in ``taken`` nor twice (a port just closed may come back)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


def render_rules(source: Path, destination: Path, for_overrides: Mapping[str, str]) -> Path:
    """Copy the rule files of ``source`` with ``for:`` set per alert name; return the directory."""
    for path in sorted(source.glob("*.yml")):
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") in for_overrides:
                    rule["for"] = for_overrides[rule["alert"]]
        write_yaml(destination / path.name, document)
    return destination


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def api(base: str, path: str, **params: str | Sequence[str]) -> Any:
    """``base`` + ``path`` with ``params`` (a sequence repeats the parameter); its ``data``."""
    query = urllib.parse.urlencode(params, doseq=True)
    body = get_json(f"{base}{path}?{query}")
    assert body["status"] == "success", body
    return body["data"]


class ShardedStack:
    """N shards and the global tier on loopback; a context manager (see the module)."""

    def __init__(
        self,
        workdir: Path,
        devices: Sequence[str],
        *,
        shards: int = 2,
        scrape_interval: str = "2s",
        for_overrides: Mapping[str, str] | None = None,
        query_step: str = "4s",
        timings: Timings | None = None,
    ) -> None:
        self.workdir = workdir
        self.devices = list(devices)
        self.shards = shards
        self.scrape_interval = scrape_interval
        self.for_overrides = dict(for_overrides or {})
        self.query_step = query_step
        self.timings = timings or Timings()
        self._stack = contextlib.ExitStack()
        self.exporters: list[Service] = []
        self.prometheis: list[Service] = []
        self.prometheus_urls: list[str] = []
        self.alertmanagers: list[Alertmanager] = []
        self.services: dict[str, Service] = {}

    # ----------------------------------------------------------------------------
    # Start and stop

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _run(self, service: Service, timeout: float = 60.0) -> Service:
        service.start()
        self._stack.callback(service.stop, 5)
        service.wait_ready(timeout)
        return service

    def _start(self) -> None:
        work = self.workdir
        self.slack = self._stack.enter_context(SlackSink())
        smtp = self._stack.enter_context(SmtpSink())
        sidecar_port = free_port()
        am_config = render_config(
            work / "alertmanager",
            sidecar_url=f"http://127.0.0.1:{sidecar_port}",
            slack_url=self.slack.url,
            smtp_smarthost=f"{smtp.host}:{smtp.port}",
            timings=self.timings,
        )
        self.alertmanagers = self._stack.enter_context(
            start_cluster(work / "alertmanager", am_config, size=2)
        )
        vm_service, self.global_view = victoria_metrics_service(work / "global")
        self._run(vm_service)
        self.services["victoria-metrics"] = vm_service
        (work / "sidecar").mkdir(parents=True, exist_ok=True)
        self.sidecar: Sidecar = start_sidecar(
            work / "sidecar",
            sidecar_port,
            [am.url for am in self.alertmanagers],
            SIDECAR_CONFIG,
            log_level="info",
            prometheus_url=self.global_view,
        )
        self._stack.callback(self.sidecar.service.stop, 5)

        targets = work / "targets"
        targets.mkdir(parents=True, exist_ok=True)
        for name in TARGET_LISTS:
            groups = [{"targets": self.devices}] if name == "snmp.yml" else []
            write_yaml(targets / name, groups)
        taken = {sidecar_port, int(self.global_view.rsplit(":", 1)[1])}
        taken |= {am.port for am in self.alertmanagers}
        *exporter_ports, global_port, vmalert_port = distinct_free_ports(self.shards + 2, taken)
        prometheus_ports = distinct_free_ports(self.shards, taken | set(exporter_ports))
        deployment = Deployment(
            exporters=[f"127.0.0.1:{p}" for p in exporter_ports],
            prometheis=[f"127.0.0.1:{p}" for p in prometheus_ports],
            global_prometheus=f"127.0.0.1:{global_port}",
            victoria_metrics=self.global_view.removeprefix("http://"),
            vmalert=f"127.0.0.1:{vmalert_port}",
            alertmanagers=[am.url.removeprefix("http://") for am in self.alertmanagers],
            sidecar=f"127.0.0.1:{sidecar_port}",
            scrape_interval=self.scrape_interval,
            targets_dir=targets,
            rules_dir=render_rules(SHIPPED_RULES, work / "rules", self.for_overrides),
        )
        configs = write_deployment(deployment, work / "configs")
        for k in range(self.shards):
            shard_dir = work / f"shard-{k}"
            exporter = exporter_service(shard_dir, exporter_ports[k])
            self.exporters.append(self._run(exporter))
            prometheus = prometheus_service(configs[k], shard_dir, prometheus_ports[k])
            self.prometheis.append(self._run(prometheus))
            self.prometheus_urls.append(f"http://127.0.0.1:{prometheus_ports[k]}")
        self.global_prometheus = f"http://127.0.0.1:{global_port}"
        self._run(prometheus_service(configs[-1], work / "global", global_port))
        vmalert_rules = render_rules(SHARDED_RULES, work / "vmalert-rules", self.for_overrides)
        self.vmalert = f"http://127.0.0.1:{vmalert_port}"
        vmalert = Service(
            name="vmalert",
            argv=[
                find_binary("vmalert"),
                f"-httpListenAddr=127.0.0.1:{vmalert_port}",
                f"-rule={vmalert_rules}/*.yml",
                f"-datasource.url={self.global_view}",
                # How long a silent series still counts: a few scrape intervals.
                f"-datasource.queryStep={self.query_step}",
                f"-remoteWrite.url={self.global_view}",
                *(f"-notifier.url={am.url}" for am in self.alertmanagers),
                "-evaluationInterval=1s",
                f"-external.url={self.vmalert}",
            ],
            ready_url=f"{self.vmalert}/health",
            log_path=work / "global" / "logs" / "vmalert.log",
        )
        self.services["vmalert"] = self._run(vmalert)

    def kill_shard(self, shard: int) -> None:
        """Stop shard ``shard``'s Prometheus (its exporter goes on)."""
        self.prometheis[shard].stop(grace=5)

    # ----------------------------------------------------------------------------
    # What the processes say

    def shard_targets(self, shard: int, job: str = "snmp") -> dict[str, str]:
        """Shard ``shard``'s active targets of ``job``: instance -> health."""
        data = api(self.prometheus_urls[shard], "/api/v1/targets", state="active")
        return {
            t["labels"]["instance"]: t["health"]
            for t in data["activeTargets"]
            if t["labels"]["job"] == job
        }

    def shard_series(self, shard: int, match: str) -> list[dict[str, str]]:
        """The series shard ``shard``'s own TSDB holds for ``match`` (no external labels)."""
        return list(api(self.prometheus_urls[shard], "/api/v1/series", **{"match[]": match}))

    def global_series(self, match: str) -> list[dict[str, str]]:
        return list(api(self.global_view, "/api/v1/series", **{"match[]": match}))

    def global_query(self, query: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = api(self.global_view, "/api/v1/query", query=query)["result"]
        return result

    def firing(self, alertname: str) -> list[list[dict[str, Any]]]:
        """Each Alertmanager peer's raw alerts named ``alertname`` (not the sidecar's copies)."""
        return [
            am.alerts(f'alertname="{alertname}"', 'scout_enriched!="true"')
            for am in self.alertmanagers
        ]

    def log_tails(self) -> str:
        services = [*self.exporters, *self.prometheis, *self.services.values()]
        return "\n".join(f"{s.name} ({s.log_path}):\n{s.log_tail()}" for s in services)


def owners(stack: ShardedStack) -> dict[str, int]:
    """Each scraped SNMP target's shard, once every target of every shard is up ({} before).

    A target two shards scrape fails the assertion: hashmod must partition them.
    """
    found: dict[str, list[int]] = {}
    for shard in range(stack.shards):
        for instance, health in stack.shard_targets(shard).items():
            if health != "up":
                return {}
            found.setdefault(instance, []).append(shard)
    assert all(len(shards) == 1 for shards in found.values()), found
    return {instance: shards for instance, [shards] in found.items()}


def without_shard(series: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in series.items() if k != "shard"))


SeriesView = tuple[int, list[tuple[tuple[str, str], ...]], list[dict[str, str]]]


def device_views(stack: ShardedStack, devices: Sequence[str]) -> dict[str, SeriesView] | None:
    """Per device: its shard, the series that shard holds (sorted, no shard label), and
    the global view's series of it; None until the global view holds them all."""
    views: dict[str, SeriesView] = {}
    for device in devices:
        match = f'{{job="snmp",instance="{device}",__name__!~"ALERTS.*"}}'
        shard = hashmod(device, stack.shards)
        local = sorted(without_shard(s) for s in stack.shard_series(shard, match))
        remote = stack.global_series(match)
        if not local or sorted(without_shard(s) for s in remote) != local:
            return None
        views[device] = (shard, local, remote)
    return views


def spread_endpoints(count: int, shards: int, free: Iterator[int]) -> list[int]:
    """``count`` distinct UDP ports from ``free`` whose ``127.0.0.1:port`` targets fall
    evenly on the shards (hashmod), so every shard has devices whatever ports are free."""
    wanted = [count // shards + (k < count % shards) for k in range(shards)]
    chosen: list[int] = []
    for port in free:
        shard = hashmod(f"127.0.0.1:{port}", shards)
        if wanted[shard] and port not in chosen:
            wanted[shard] -= 1
            chosen.append(port)
        if not any(wanted):
            return chosen
    raise StackError("ran out of free UDP ports")


def device_ports(simulated: int, shards: int, victim_shard: int) -> tuple[list[int], int]:
    """UDP ports for ``simulated`` devices spread over the shards, and one more on
    ``victim_shard`` (for the device that fails), all distinct."""
    free = (free_udp_port() for _ in itertools.count())
    ports = spread_endpoints(simulated, shards, free)
    victim = next(
        p for p in free if p not in ports and hashmod(f"127.0.0.1:{p}", shards) == victim_shard
    )
    return ports, victim
