"""Every firewall and flow source the Firewall dashboard reads, running, for one exporter.

:class:`FirewallSources` starts them side by side:

* a network namespace with an nftables ruleset and traffic through it
  (:class:`tests.peers.netfilter.FirewalledNamespace`), and in it an exporter
  of its own with only the netfilter collector, as on a Linux firewall: it
  reads the namespace's ruleset and connection tracking;
* the fake FortiGate, OPNsense and pfSense REST APIs with counters that grow
  (:class:`tests.peers.firewall_api.FakeFirewalls`), read through ``/firewall``;
* snmpsim serving the hand-written firewall recordings of the SNMP module
  tests (FortiGate, Palo Alto, Cisco ASA, Check Point, pfSense), read through
  ``/snmp`` with each vendor's module;
* ``pmacctd`` with ``nfprobe`` replaying a capture of known flows to the
  exporter's flows collector, again and again, as NetFlow v5, v9 and IPFIX in
  turn, so the flow counters keep growing.

It gives the main exporter's config and flags (:meth:`exporter_config`,
:data:`EXPORTER_FLAGS`), the namespace's exporter to scrape beside it
(:attr:`netfilter_exporter`) and Prometheus's jobs for the rest
(:meth:`scrape_configs`), whose relabelling is the shipped
``prometheus/prometheus.yml``'s::

    with FirewallSources(workdir) as sources:
        config.write_text(yaml.safe_dump(sources.exporter_config()))
        jobs = sources.scrape_configs(exporter_address)
        ...  # start the exporter with config and EXPORTER_FLAGS, then:
        sources.start_flows()
"""

from __future__ import annotations

import subprocess
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from scripts.localstack import Service, find_binary
from tests.exporter.targets.snmp.recorded import recording_auths
from tests.peers.firewall_api import (
    FORTIGATE_TOKEN,
    OPNSENSE_KEY,
    OPNSENSE_SECRET,
    PFSENSE_KEY,
    FakeFirewalls,
)
from tests.peers.flows import Flow, replay_with_pmacctd, udp_frame, write_pcap
from tests.peers.netfilter import FirewalledNamespace
from tests.peers.snmp import SnmpsimDevices, _Peer, free_udp_port

REPO = Path(__file__).resolve().parents[2]
SHIPPED_PROMETHEUS = REPO / "prometheus" / "prometheus.yml"
RECORDINGS = REPO / "tests" / "exporter" / "targets" / "snmp" / "recordings" / "firewalls"
# Each recording (its community is its file name) and the SNMP module that reads it.
SNMP_MODULES = {
    "fortigate-hq": "fortigate",
    "paloalto-edge": "paloalto",
    "cisco-asa-dmz": "cisco_asa",
    "checkpoint-gw1": "checkpoint",
    "checkpoint-gw2": "checkpoint",
    "pfsense-fw": "pf",
}
# Each fake REST API's auth, as the exporter config's auths: names it.
REST_AUTHS: dict[str, dict[str, Any]] = {
    "fortigate": {"type": "http", "bearer_token": FORTIGATE_TOKEN},
    "opnsense": {"type": "http", "username": OPNSENSE_KEY, "password": OPNSENSE_SECRET},
    "pfsense": {"type": "http", "api_key": PFSENSE_KEY},
}
LOOPBACK = ["127.0.0.0/8"]
EXPORTER_FLAGS = ("--collector.flows",)
# Where the namespace's exporter listens, inside the namespace.
NETFILTER_EXPORTER_PORT = 8781
# Few enough top talkers that the capture's others fold into "other".
TOP_N = 3
# Source i sends PACKETS[i] UDP packets of PAYLOADS[i] bytes, to one of two servers.
PACKETS = (5, 3, 7, 2, 9, 4, 6)
PAYLOADS = (100, 900, 50, 1200, 400, 30, 700)
SERVERS = ("10.1.0.1", "10.1.0.2")


def free_udp_ports(count: int) -> list[int]:
    """``count`` different UDP ports of 127.0.0.1 that nothing listens on now.

    From ``free_udp_port``, not port 0: the daemons bind them later, and a port of
    the ephemeral range may meanwhile be taken by any outgoing datagram socket.
    """
    ports: list[int] = []
    while len(ports) < count:
        port = free_udp_port()
        if port not in ports:
            ports.append(port)
    return ports


def capture(path: Path) -> Path:
    """A pcap of known flows: a few more sources than the top N."""
    frames = [
        udp_frame(
            Flow(f"10.0.0.{i + 1}", SERVERS[i % 2], count * (28 + size), count, 40000 + i),
            size,
        )
        for i, (count, size) in enumerate(zip(PACKETS, PAYLOADS, strict=True))
        for _ in range(count)
    ]
    return write_pcap(path, frames)


class FlowReplays(_Peer):
    """``pmacctd`` sending ``pcap``'s flows to ``receiver`` (v5, v9, IPFIX in turn) till stopped."""

    VERSIONS = (5, 9, 10)
    FAILURES_IN_A_ROW = 3

    def __init__(self, pcap: Path, receiver: tuple[str, int], workdir: Path) -> None:
        self.pcap = pcap
        self.receiver = receiver
        self.workdir = workdir
        self.replays = 0
        self.failure: BaseException | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._replay, name="FlowReplays", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=90)

    def _replay(self) -> None:
        failed: list[str] = []
        try:
            while not self._stopping.is_set():
                version = self.VERSIONS[self.replays % len(self.VERSIONS)]
                try:
                    replay_with_pmacctd(self.pcap, self.receiver, version, self.workdir)
                except subprocess.CalledProcessError as exc:
                    # Now and then, on a loaded machine, pmacctd's core loses the
                    # pipe to its nfprobe plugin and exits 1; the next run is fine.
                    failed.append(exc.stderr)
                    if len(failed) == self.FAILURES_IN_A_ROW:
                        raise RuntimeError(f"pmacctd failed {len(failed)} times: {failed}") from exc
                    continue
                failed.clear()
                self.replays += 1
        except BaseException as exc:  # read by the test through `failure`
            self.failure = exc


class FirewallSources(_Peer):
    """Every firewall source at once; see the module docstring."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # Every port bound at once, so no two are the same.
        self.flow_port, *snmp_ports = free_udp_ports(1 + len(SNMP_MODULES))
        self.namespace = FirewalledNamespace(workdir)
        self.rest = FakeFirewalls(tuple(REST_AUTHS), growing=True)
        # An endpoint (a port) per recording, so each firewall is an instance of its own.
        self.snmp = SnmpsimDevices(
            workdir,
            devices={},
            recordings=[RECORDINGS / f"{name}.snmprec" for name in SNMP_MODULES],
            endpoints=[f"127.0.0.1:{port}" for port in snmp_ports],
        )
        self.flows = FlowReplays(
            capture(workdir / "flows.pcap"), ("127.0.0.1", self.flow_port), workdir
        )
        self._stack = ExitStack()

    @property
    def netfilter_exporter(self) -> str:
        """The namespace's exporter, ``host:port``, reachable from here."""
        return f"{self.namespace.address}:{NETFILTER_EXPORTER_PORT}"

    def start(self) -> None:
        """Everything but the flow replays, which need the exporter: :meth:`start_flows`."""
        try:
            for peer in (self.namespace, self.rest, self.snmp):
                self._stack.enter_context(peer)
            exporter = Service(
                name="netfilter-exporter",
                argv=self.namespace.argv(
                    find_binary("scout-exporter"),
                    "--no-collector.host",
                    "--collector.netfilter",
                    f"--web.listen-address={self.netfilter_exporter}",
                ),
                ready_url=f"http://{self.netfilter_exporter}/-/ready",
                log_path=self.workdir / "logs" / "netfilter-exporter.log",
            )
            exporter.start()
            self._stack.callback(exporter.stop, grace=5)
            exporter.wait_ready()
        except BaseException:
            self._stack.close()
            raise

    def start_flows(self) -> None:
        self._stack.enter_context(self.flows)

    def stop(self) -> None:
        self._stack.close()

    def exporter_config(self) -> dict[str, Any]:
        """The exporter's config: the collectors' settings, auths and ``/firewall`` modules."""
        snmp_auths: dict[str, Any] = yaml.safe_load(recording_auths(self.snmp.recordings))
        return {
            "collectors": {
                "flows": {
                    "listen": f"127.0.0.1:{self.flow_port}",
                    "top_n": TOP_N,
                    "by_protocol_port": True,
                    "exporters": LOOPBACK,
                },
            },
            "auths": {
                **{
                    vendor: {**auth, "allowed_targets": LOOPBACK}
                    for vendor, auth in REST_AUTHS.items()
                },
                **snmp_auths,
            },
            "modules": {
                f"{vendor}_http": {"prober": vendor, "scheme": "http"} for vendor in REST_AUTHS
            },
        }

    @property
    def instances(self) -> set[str]:
        """Every firewall's ``instance``: the namespace's exporter, the fakes, the recordings."""
        return {
            self.netfilter_exporter,
            *(self.rest.target(vendor) for vendor in REST_AUTHS),
            *self.snmp.endpoints,
        }

    def scrape_configs(self, exporter: str) -> list[dict[str, Any]]:
        """The ``firewall`` and ``snmp`` jobs as shipped, on these targets through ``exporter``.

        The namespace's exporter is not in them: it is a target of the job that
        scrapes ``exporter`` itself (``scout-exporter``).
        """
        rest = shipped_job("firewall", exporter)
        rest["static_configs"] = [
            {
                "targets": [self.rest.target(vendor)],
                "labels": {"module": f"{vendor}_http", "auth": vendor},
            }
            for vendor in REST_AUTHS
        ]
        snmp = shipped_job("snmp", exporter)
        snmp["job_name"] = "snmp-firewall"
        snmp["static_configs"] = [
            {"targets": [endpoint], "labels": {"module": module, "auth": name}}
            for endpoint, (name, module) in zip(
                self.snmp.endpoints, SNMP_MODULES.items(), strict=True
            )
        ]
        # The fakes answer at once; snmpsim takes a second or so for the six.
        rest["scrape_interval"] = rest["scrape_timeout"] = "2s"
        snmp["scrape_interval"] = snmp["scrape_timeout"] = "5s"
        return [rest, snmp]


def shipped_job(name: str, exporter: str) -> dict[str, Any]:
    """Job ``name`` of the shipped Prometheus config, scraping through ``exporter`` instead.

    Its targets are left for the caller (``static_configs``).
    """
    shipped = yaml.safe_load(SHIPPED_PROMETHEUS.read_text())
    [job] = [job for job in shipped["scrape_configs"] if job["job_name"] == name]
    assert isinstance(job, dict)
    job.pop("file_sd_configs")
    [to_exporter] = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
    to_exporter["replacement"] = exporter
    return job
