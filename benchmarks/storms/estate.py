"""A randomised estate: devices, links, services, scrape targets and what is known of them.

The estate is a tree rooted at the data centre's core router: distribution
switches hang off the core, access switches off those, and access points,
servers and endpoints (phones, printers, cameras) off the access switches. The
core also reaches a firewall and an Internet edge router with one or more ISP
links (SaaS services and Internet probe targets sit behind them), and a WAN
aggregation router whose MPLS links lead to branch sites. The exporter (the
poller) runs on a server on a management switch at the core: every /snmp and
/probe target is reached from there, so reachability is "connected to the
poller".

Ground truth is the :class:`Estate` itself: every device, link and service, with
element ids (``dev:``, ``link:``, ``svc:``, ``disk:``, ``sessions:``, ``poller:``)
that alerts are attributed to. What a correlator could learn of it is the much
poorer :class:`ObservedTopology` (:meth:`Estate.observed`): LLDP neighbour rows
from the devices that speak LLDP, the scrape topology, the file_sd target groups
as users wrote them (site labels sometimes missing, ``upstream`` or ``via``
sometimes set, names sometimes IPs) and the explicit dependencies a user would
have written into the sidecar config, some of them forgotten.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from ai_sidecar.correlate.topology import is_ip, split_instance

Kind = Literal[
    "core",
    "wan_agg",
    "firewall",
    "edge",
    "branch_router",
    "dist",
    "access",
    "ap",
    "linux",
    "windows",
    "endpoint",
    "internet",
]
NETWORK_KINDS = frozenset(
    {"core", "wan_agg", "firewall", "edge", "branch_router", "dist", "access"}
)
LinkRole = Literal["lan", "wan", "isp"]
ProbeKind = Literal["http", "tcp"]
Naming = Literal["fqdn", "short", "ip"]

DOMAIN = "corp.example"
EXPORTER_JOB = "scout-exporter"
SNMP_JOB = "snmp"
ICMP_JOB = "probe_icmp"
HTTP_JOB = "probe_http"
TCP_JOB = "probe_tcp"
FIREWALL_JOB = "firewall"
WINRM_JOB = "winrm"
# Jobs whose targets the exporter reaches on Prometheus's behalf.
POLLED_JOBS = (SNMP_JOB, ICMP_JOB, HTTP_JOB, TCP_JOB, FIREWALL_JOB, WINRM_JOB)

_SITE_NAMES = (
    "ams",
    "ber",
    "cph",
    "dub",
    "fra",
    "gva",
    "hel",
    "lis",
    "lon",
    "lyo",
    "mad",
    "mil",
    "muc",
    "osl",
    "par",
    "prg",
    "rom",
    "sto",
    "vie",
    "waw",
    "zrh",
    "bcn",
    "bru",
    "ath",
)
_SAAS = ("crm", "mail", "erp-cloud", "payroll", "tickets", "docs", "chat", "backup", "ci", "maps")
_APPS = ("erp", "shop", "intranet", "wiki", "git", "hr", "billing", "portal", "api", "reports")


@dataclass(frozen=True, slots=True)
class Port:
    """One interface: ``ifName``, ``ifAlias`` (may be empty) and ``ifIndex``."""

    name: str
    alias: str
    index: int


@dataclass(frozen=True, slots=True)
class Link:
    """A cable or circuit: ``upper`` is the end nearer the core."""

    id: str
    upper: str
    upper_port: Port
    lower: str
    lower_port: Port
    role: LinkRole


@dataclass(frozen=True, slots=True)
class Device:
    """A box with an address. ``uplink`` is the link towards the core (None at the root)."""

    name: str
    kind: Kind
    site: str
    address: str  # as the user wrote it in file_sd, so the alerts' instance
    ip: str
    sys_name: str  # what it says its name is over LLDP
    uplink: str | None
    lldp: bool  # answers LLDP, so its neighbours see it

    @property
    def element(self) -> str:
        return f"dev:{self.name}"


@dataclass(frozen=True, slots=True)
class Service:
    """Something probed over HTTP or TCP, running on ``host``."""

    name: str
    host: str
    probe: ProbeKind
    instance: str
    depends_on: tuple[str, ...] = ()  # other services' names (an app on its database)
    uses_dns: bool = False  # the probe names a host the exporter must resolve
    windows_service: str = ""  # the Windows service running it, if any
    site: str = ""

    @property
    def element(self) -> str:
        return f"svc:{self.name}"


@dataclass(frozen=True, slots=True)
class TargetGroup:
    """One file_sd entry, as a user writes it."""

    job: str
    targets: tuple[str, ...]
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Target:
    """One scrape target: the labels its alerts carry, and what it is in truth."""

    job: str
    instance: str
    labels: Mapping[str, str]  # job, instance and the group's labels
    element: str


@dataclass(frozen=True, slots=True)
class Shape:
    """How big an estate to draw; ranges are inclusive."""

    dists: tuple[int, int] = (3, 5)
    access_per_dist: tuple[int, int] = (2, 4)
    aps_per_access: tuple[int, int] = (1, 4)
    endpoints_per_access: tuple[int, int] = (2, 6)
    servers_per_access: tuple[int, int] = (0, 2)
    branches: tuple[int, int] = (3, 6)
    branch_access: tuple[int, int] = (1, 3)
    isps: tuple[int, int] = (1, 2)
    saas: tuple[int, int] = (3, 6)
    # The first branch's access switches instead of branch_access (a campus).
    big_site_access: int = 0


@dataclass(frozen=True, slots=True)
class ObservedTopology:
    """What a correlator could know of the estate; see :meth:`to_yaml` for the format."""

    neighbours: tuple[Mapping[str, str], ...]
    pollers: tuple[Mapping[str, Any], ...]
    target_groups: tuple[TargetGroup, ...]
    dependencies: tuple[Mapping[str, Any], ...]
    addresses: tuple[Mapping[str, str], ...] = ()

    @property
    def edges(self) -> int:
        """Edges a graph built from all of it would have (neighbours, polls, dependencies)."""
        polled = sum(len(poller["targets"]) for poller in self.pollers)
        return len(self.neighbours) + polled + len(self.dependencies)

    def to_yaml(self) -> str:
        """The topology file (format version 2). Five sections:

        - ``neighbours``: one row per LLDP/CDP neighbour as the exporter would
          export it (``scout_lldp_neighbor_info``): ``job`` and ``instance`` of
          the device that reported it, ``local_port`` (ifName) and
          ``local_port_alias``, ``remote_sysname``, ``remote_port`` and
          ``remote_address`` (the management address the neighbour advertised);
        - ``pollers``: each poller (``job``/``instance`` of its own scrape) and
          the ``{job, instance}`` targets it reaches for Prometheus;
        - ``target_groups``: the file_sd entries, ``job``, ``targets``, ``labels``;
        - ``dependencies``: explicit edges a user wrote into the sidecar config,
          ``from`` and ``to`` as label matchers (``job``/``instance``) and ``why``;
        - ``addresses`` (new in version 2): what the exporter's scrapes resolved
          each target written as a name to (``scout_target_address_info``),
          ``instance`` and ``address``.
        """
        document = {
            "version": 2,
            "neighbours": [dict(row) for row in self.neighbours],
            "pollers": [dict(poller) for poller in self.pollers],
            "target_groups": [
                {"job": g.job, "targets": list(g.targets), "labels": dict(g.labels)}
                for g in self.target_groups
            ],
            "dependencies": [dict(d) for d in self.dependencies],
            "addresses": [dict(row) for row in self.addresses],
        }
        return yaml.safe_dump(document, sort_keys=False, width=120)

    def info_series(self) -> list[str]:
        """The neighbour rows as exposition lines, the way Prometheus would hold them."""
        lines = []
        for row in self.neighbours:
            labels = ",".join(f'{name}="{value}"' for name, value in row.items())
            lines.append(f"scout_lldp_neighbor_info{{{labels}}} 1")
        return lines


@dataclass(slots=True)
class Estate:
    """The whole estate; built by :func:`build_estate`, then only read."""

    devices: dict[str, Device] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    target_groups: list[TargetGroup] = field(default_factory=list)
    poller: str = ""  # the device the exporter runs on
    exporter: Target | None = None
    dns_service: str = ""  # the resolver the exporter uses
    core: str = ""
    edge: str = ""
    firewall: str = ""
    wan_agg: str = ""
    isp_links: list[str] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)
    hq: str = ""
    # Written-down dependencies the user forgot: (from service, to service).
    forgotten: set[tuple[str, str]] = field(default_factory=set)
    _children: dict[str, list[str]] = field(default_factory=dict)

    # -- structure -------------------------------------------------------------

    def children(self, device: str) -> list[str]:
        """Devices whose uplink ends on ``device``."""
        return self._children.get(device, [])

    def below(self, device: str) -> list[str]:
        """``device`` and everything in its subtree, breadth first."""
        found, queue = [], deque([device])
        while queue:
            name = queue.popleft()
            found.append(name)
            queue.extend(self.children(name))
        return found

    def path_to_core(self, device: str) -> list[str]:
        """Element ids from ``device`` up to the core: devices and links, nearest first."""
        path = []
        name: str | None = device
        while name is not None:
            path.append(f"dev:{name}")
            uplink = self.devices[name].uplink
            if uplink is None:
                break
            path.append(f"link:{uplink}")
            name = self.links[uplink].upper
        return path

    def unreachable(self, failed: Iterable[str]) -> set[str]:
        """Devices the poller cannot reach while ``failed`` elements are down.

        The tree is walked from the poller's side: a failed element cuts off its
        subtree, and a failure on the poller's own path cuts off everything.
        """
        down = set(failed)
        poller_path = self.path_to_core(self.poller)
        if any(element in down for element in poller_path):
            return set(self.devices) - {self.poller}
        reachable: set[str] = set()
        queue = deque([self.core])
        while queue:
            name = queue.popleft()
            if f"dev:{name}" in down:
                continue
            reachable.add(name)
            for child in self.children(name):
                if f"link:{self.devices[child].uplink}" not in down:
                    queue.append(child)
        return set(self.devices) - reachable

    def targets_of(self, element: str) -> list[Target]:
        return [t for t in self.targets if t.element == element]

    def services_on(self, devices: Iterable[str]) -> list[Service]:
        names = set(devices)
        return [s for s in self.services.values() if s.host in names]

    def ground_truth_edges(self) -> list[tuple[str, str, str]]:
        """(element, what it depends on, why): the physical and logical graph."""
        edges = []
        for device in self.devices.values():
            if device.uplink is not None:
                link = self.links[device.uplink]
                edges.append((device.element, f"link:{link.id}", "uplink"))
                edges.append((f"link:{link.id}", f"dev:{link.upper}", "cabled to"))
        for service in self.services.values():
            edges.append((service.element, f"dev:{service.host}", "runs on"))
            edges.extend((service.element, f"svc:{other}", "uses") for other in service.depends_on)
            if service.uses_dns and self.dns_service:
                edges.append((service.element, f"svc:{self.dns_service}", "resolved by"))
        for target in self.targets:
            if target.job in POLLED_JOBS:
                edges.append((target.element, f"poller:{self.poller}", "polled by"))
        return edges

    # -- what a correlator may know ------------------------------------------

    def observed(self) -> ObservedTopology:
        """The LLDP rows, scrape topology, file_sd groups and written-down dependencies."""
        snmp = {t.element: t for t in self.targets if t.job == SNMP_JOB}
        neighbours: list[Mapping[str, str]] = []
        for link in self.links.values():
            ends = (
                (link.upper, link.upper_port, link.lower, link.lower_port),
                (link.lower, link.lower_port, link.upper, link.upper_port),
            )
            for local, local_port, remote, remote_port in ends:
                reporter = snmp.get(f"dev:{local}")
                other = self.devices[remote]
                if reporter is None or not other.lldp:
                    continue
                neighbours.append(
                    {
                        "job": reporter.job,
                        "instance": reporter.instance,
                        "local_port": local_port.name,
                        "local_port_alias": local_port.alias,
                        "remote_sysname": other.sys_name,
                        "remote_port": remote_port.name,
                        "remote_address": other.ip,
                    }
                )
        polled = [
            {"job": t.job, "instance": t.instance} for t in self.targets if t.job in POLLED_JOBS
        ]
        exporter = self.exporter
        pollers = (
            ()
            if exporter is None
            else ({"job": exporter.job, "instance": exporter.instance, "targets": polled},)
        )
        return ObservedTopology(
            neighbours=tuple(neighbours),
            pollers=pollers,
            target_groups=tuple(self.target_groups),
            dependencies=tuple(self._written_dependencies()),
            addresses=tuple(self._resolved_names()),
        )

    def _resolved_names(self) -> Iterable[Mapping[str, str]]:
        """What the exporter resolves each target written as a name to, as it exports it.

        A name resolves to the address of the box the target is on: a device's,
        or for a service its host's. SaaS names resolve to public addresses of
        their own (documentation range), not to the ISP device that stands for
        the Internet here. Drawn from no random state, so storms are unchanged.
        """
        saas = sorted(
            name
            for name, service in self.services.items()
            if self.devices[service.host].kind == "internet"
        )
        public = {name: f"192.0.2.{10 + index}" for index, name in enumerate(saas)}
        rows: dict[tuple[str, str], None] = {}
        # Every target here is a multi-target scrape (/snmp, /probe, /firewall,
        # /winrm); the exporter's own /metrics exports no such row.
        for target in self.targets:
            host, _ = split_instance(target.instance)
            address = self._address_of(target.element, public)
            if host and address and not is_ip(host):
                rows[(target.instance, address)] = None
        return [{"instance": instance, "address": address} for instance, address in rows]

    def _address_of(self, element: str, public: Mapping[str, str]) -> str:
        kind, _, name = element.partition(":")
        if kind in ("dev", "poller") and name in self.devices:
            return self.devices[name].ip
        if kind == "svc" and name in self.services:
            return public.get(name) or self.devices[self.services[name].host].ip
        return ""

    def _written_dependencies(self) -> Iterable[Mapping[str, Any]]:
        probe_of = {t.element: t for t in self.targets if t.job in (HTTP_JOB, TCP_JOB)}
        for service in self.services.values():
            mine = probe_of.get(service.element)
            if mine is None:
                continue
            for other in service.depends_on:
                theirs = probe_of.get(f"svc:{other}")
                if theirs is None or (service.name, other) in self.forgotten:
                    continue
                yield {
                    "from": {"job": mine.job, "instance": mine.instance},
                    "to": {"job": theirs.job, "instance": theirs.instance},
                    "why": "application on its backend",
                }
            if self.devices[service.host].kind == "internet":
                for isp in self.isp_links:
                    link = self.links[isp]
                    if (service.name, isp) in self.forgotten:
                        continue
                    yield {
                        "from": {"job": mine.job, "instance": mine.instance},
                        "to": {
                            "instance": self.devices[link.upper].address,
                            "ifName": link.upper_port.name,
                        },
                        "why": "SaaS through the ISP link",
                    }


# -- building ------------------------------------------------------------------


@dataclass(slots=True)
class _SiteStyle:
    """How one site's targets were written down; sites differ, as in real estates."""

    name: str
    naming: Naming
    site_label: bool
    upstream_label: str  # "", "upstream" or "via"
    subnet: int
    vendor: str
    snmp_module: str
    snmp_auth: str


_VENDOR_PORTS = {
    "cisco": ("Gi1/0/{n}", "Te1/1/{n}"),
    "juniper": ("ge-0/0/{n}", "xe-0/1/{n}"),
    "aruba": ("1/1/{n}", "1/1/{n}"),
    "mikrotik": ("ether{n}", "sfp-sfpplus{n}"),
}


class _Builder:
    def __init__(self, rng: random.Random, shape: Shape) -> None:
        self.rng = rng
        self.shape = shape
        self.estate = Estate()
        self.hosts: dict[str, int] = {}
        self.next_port: dict[str, int] = {}
        self.styles: dict[str, _SiteStyle] = {}
        self.groups: dict[tuple[str, str, str], list[str]] = {}  # (job, site, upstream) -> targets
        self.group_labels: dict[tuple[str, str, str], dict[str, str]] = {}
        self.member_of: dict[str, tuple[tuple[str, str, str], str]] = {}

    # names and addresses
    def pick(self, span: tuple[int, int]) -> int:
        return self.rng.randint(span[0], span[1])

    def style(self, site: str) -> _SiteStyle:
        return self.styles[site]

    def new_site(self, name: str) -> None:
        rng = self.rng
        self.styles[name] = _SiteStyle(
            name=name,
            naming=rng.choices(("fqdn", "short", "ip"), weights=(5, 3, 2))[0],
            site_label=rng.random() < 0.85,
            upstream_label=rng.choices(("", "upstream", "via"), weights=(5, 4, 1))[0],
            subnet=len(self.styles) + 1,
            vendor=rng.choice(tuple(_VENDOR_PORTS)),
            snmp_module=rng.choice(("if_mib", "if_mib,system")),
            snmp_auth=rng.choice(("public_v2", "snmpv3_ro")),
        )
        self.estate.sites.append(name)

    def add_device(
        self, stem: str, kind: Kind, site: str, parent: str | None, role: LinkRole
    ) -> str:
        count = self.hosts.get(stem, 0) + 1
        self.hosts[stem] = count
        name = f"{stem}-{count}"
        style = self.style(site)
        serial = len(self.estate.devices) + 1
        ip = f"10.{style.subnet}.{serial // 250}.{serial % 250 + 1}"
        if kind == "internet":
            ip = f"203.0.113.{count}"
        address = {"fqdn": f"{name}.{site}.{DOMAIN}", "short": name, "ip": ip}[style.naming]
        if kind == "internet":
            address = ip
        sys_name = f"{name}.{DOMAIN}" if self.rng.random() < 0.3 else name
        lldp = kind in NETWORK_KINDS or kind == "ap"
        lldp = lldp or (kind == "linux" and self.rng.random() < 0.4)
        lldp = lldp or (kind == "endpoint" and self.rng.random() < 0.5)  # phones do LLDP-MED
        uplink = None
        if parent is not None:
            uplink = self.connect(parent, name, kind, role)
        device = Device(name, kind, site, address, ip, sys_name, uplink, lldp)
        self.estate.devices[name] = device
        if parent is not None:
            self.estate._children.setdefault(parent, []).append(name)
        return name

    def port(self, device: str, fast: bool, alias: str) -> Port:
        index = self.next_port.get(device, 0) + 1
        self.next_port[device] = index
        site = self.estate.devices[device].site if device in self.estate.devices else ""
        vendor = self.styles[site].vendor if site in self.styles else "cisco"
        pattern = _VENDOR_PORTS[vendor][1 if fast else 0]
        if self.rng.random() < 0.15:
            alias = ""  # nobody wrote a description
        return Port(pattern.format(n=index), alias, index)

    def connect(self, parent: str, child: str, kind: Kind, role: LinkRole) -> str:
        fast = kind in NETWORK_KINDS
        upper_alias = {
            "isp": f"ISP-{len(self.estate.isp_links) + 1} Internet uplink",
            "wan": f"MPLS to {child}",
            "lan": f"{child}" if fast else f"{kind} {child}",
        }[role]
        upper_port = self.port(parent, fast, upper_alias)
        lower_port = Port("Gi0/0/0" if role != "lan" else "eth0", f"uplink to {parent}", 1)
        link_id = f"{parent}:{upper_port.name}"
        self.estate.links[link_id] = Link(link_id, parent, upper_port, child, lower_port, role)
        return link_id

    # targets
    def monitor(self, job: str, instance: str, element: str, site: str, upstream: str = "") -> None:
        style = self.style(site) if site in self.styles else None
        labels: dict[str, str] = {}
        if job == SNMP_JOB and style is not None:
            labels["module"] = style.snmp_module
            labels["auth"] = style.snmp_auth
        if style is not None and style.site_label:
            labels["site"] = site
        written_upstream = ""
        if style is not None and style.upstream_label and upstream:
            written_upstream = upstream
            labels[style.upstream_label] = upstream
        key = (job, site, written_upstream)
        self.groups.setdefault(key, []).append(instance)
        self.group_labels[key] = labels
        all_labels = {"job": job, "instance": instance, **labels}
        self.estate.targets.append(Target(job, instance, all_labels, element))

    def reference(self, device: str) -> str:
        """How a user names the device a target sits behind: usually as its instance."""
        dev = self.estate.devices[device]
        return dev.address if self.rng.random() < 0.8 else dev.name


def build_estate(rng: random.Random, shape: Shape | None = None) -> Estate:
    """Draw an estate of ``shape`` (default: a mid-sized company) from ``rng``."""
    b = _Builder(rng, shape or Shape())
    e = b.estate
    sites = rng.sample(_SITE_NAMES, k=1 + b.pick(b.shape.branches))
    hq = sites[0]
    e.hq = hq
    for site in sites:
        b.new_site(site)
    b.new_site("internet")
    b.styles["internet"].site_label = rng.random() < 0.4
    b.styles["internet"].upstream_label = ""

    e.core = b.add_device("core", "core", hq, None, "lan")
    e.firewall = b.add_device("fw", "firewall", hq, e.core, "lan")
    e.edge = b.add_device("edge", "edge", hq, e.firewall, "lan")
    e.wan_agg = b.add_device("wan", "wan_agg", hq, e.core, "lan")
    mgmt = b.add_device("sw-mgmt", "access", hq, e.core, "lan")
    e.poller = b.add_device("scout", "linux", hq, mgmt, "lan")
    exporter_instance = f"{e.devices[e.poller].address}:8781"
    e.exporter = Target(
        EXPORTER_JOB,
        exporter_instance,
        {"job": EXPORTER_JOB, "instance": exporter_instance},
        f"poller:{e.poller}",
    )
    e.target_groups.append(TargetGroup(EXPORTER_JOB, (exporter_instance,), {}))
    for device in (e.core, e.firewall, e.edge, e.wan_agg, mgmt):
        _monitor_network(b, device)

    # Internet: ISP links from the edge router; SaaS and public probe targets beyond.
    internet_hosts = []
    for _ in range(b.pick(b.shape.isps)):
        isp = b.add_device("isp", "internet", "internet", e.edge, "isp")
        e.isp_links.append(e.devices[isp].uplink or "")
        internet_hosts.append(isp)
    for index, host in enumerate(internet_hosts):
        b.monitor(ICMP_JOB, e.devices[host].address, f"dev:{host}", "internet")
        if index == 0:
            b.monitor(ICMP_JOB, "198.51.100.53", f"dev:{host}", "internet")
    for saas in rng.sample(_SAAS, k=b.pick(b.shape.saas)):
        url = f"https://{saas}.saas-{rng.randint(1, 99)}.example/"
        service = Service(saas, internet_hosts[0], "http", url, uses_dns=True, site="internet")
        e.services[saas] = service
        b.monitor(HTTP_JOB, url, service.element, "internet")

    # DNS: the exporter's resolver, on a server next to the poller.
    dns_host = b.add_device("dns", rng.choice(("linux", "windows")), hq, mgmt, "lan")
    _monitor_server(b, dns_host, mgmt)
    e.dns_service = f"dns-{dns_host}"
    e.services[e.dns_service] = Service(
        e.dns_service,
        dns_host,
        "tcp",
        f"{e.devices[dns_host].address}:53",
        windows_service="DNS" if e.devices[dns_host].kind == "windows" else "",
        site=hq,
    )
    b.monitor(TCP_JOB, e.services[e.dns_service].instance, f"svc:{e.dns_service}", hq, "")

    servers: list[str] = []
    for _ in range(b.pick(b.shape.dists)):
        dist = b.add_device("sw-dist", "dist", hq, e.core, "lan")
        _monitor_network(b, dist)
        for _ in range(b.pick(b.shape.access_per_dist)):
            servers += _access_switch(b, hq, dist)
    for number, site in enumerate(sites[1:]):
        router = b.add_device(f"rtr-{site}", "branch_router", site, e.wan_agg, "wan")
        _monitor_network(b, router)
        size = b.pick(b.shape.branch_access)
        if number == 0 and b.shape.big_site_access:
            size = b.shape.big_site_access
        for _ in range(size):
            servers += _access_switch(b, site, router)
    _add_services(b, servers)
    for (job, _site, _up), instances in b.groups.items():
        labels = b.group_labels[(job, _site, _up)]
        e.target_groups.append(TargetGroup(job, tuple(instances), labels))
    return e


def _monitor_network(b: _Builder, device: str) -> None:
    dev = b.estate.devices[device]
    if dev.kind == "firewall":
        b.monitor(FIREWALL_JOB, dev.address, dev.element, dev.site)
    else:
        b.monitor(SNMP_JOB, dev.address, dev.element, dev.site)
    if b.rng.random() < 0.5:
        parent = b.estate.links[dev.uplink].upper if dev.uplink else ""
        b.monitor(
            ICMP_JOB, dev.address, dev.element, dev.site, b.reference(parent) if parent else ""
        )


def _monitor_server(b: _Builder, device: str, switch: str) -> None:
    dev = b.estate.devices[device]
    upstream = b.reference(switch)
    b.monitor(ICMP_JOB, dev.address, dev.element, dev.site, upstream)
    if dev.kind == "windows":
        b.monitor(WINRM_JOB, dev.address, dev.element, dev.site, upstream)


def _access_switch(b: _Builder, site: str, parent: str) -> list[str]:
    rng = b.rng
    switch = b.add_device(f"sw-{site}", "access", site, parent, "lan")
    _monitor_network(b, switch)
    ref = b.reference(switch)
    for _ in range(b.pick(b.shape.aps_per_access)):
        ap = b.add_device(f"ap-{site}", "ap", site, switch, "lan")
        dev = b.estate.devices[ap]
        b.monitor(ICMP_JOB, dev.address, dev.element, site, ref)
    for _ in range(b.pick(b.shape.endpoints_per_access)):
        stem = rng.choice(("phone", "prn", "cam", "badge"))
        endpoint = b.add_device(f"{stem}-{site}", "endpoint", site, switch, "lan")
        dev = b.estate.devices[endpoint]
        b.monitor(ICMP_JOB, dev.address, dev.element, site, ref)
    servers = []
    for _ in range(b.pick(b.shape.servers_per_access)):
        kind: Kind = rng.choice(("linux", "windows"))
        server = b.add_device("srv" if kind == "linux" else "win", kind, site, switch, "lan")
        _monitor_server(b, server, switch)
        servers.append(server)
    return servers


def _add_services(b: _Builder, servers: list[str]) -> None:
    """Web checks and database ports on the servers; some apps use a database elsewhere."""
    rng, e = b.rng, b.estate
    databases: list[str] = []
    apps = list(_APPS)
    rng.shuffle(apps)
    for server in servers:
        dev = e.devices[server]
        if rng.random() < 0.45:
            port = 1433 if dev.kind == "windows" else 5432
            name = f"db-{server}"
            e.services[name] = Service(
                name,
                server,
                "tcp",
                f"{dev.address}:{port}",
                windows_service="MSSQLSERVER" if dev.kind == "windows" else "",
                site=dev.site,
            )
            b.monitor(TCP_JOB, e.services[name].instance, e.services[name].element, dev.site)
            databases.append(name)
        if rng.random() < 0.7:
            stem = apps.pop() if apps else f"app{len(e.services)}"
            name = f"{stem}-{server}"
            uses_dns = rng.random() < 0.7
            url = f"https://{stem}.{DOMAIN}/health" if uses_dns else f"http://{dev.ip}:8080/"
            backends = tuple(rng.sample(databases, k=1)) if databases and rng.random() < 0.6 else ()
            e.services[name] = Service(
                name,
                server,
                "http",
                url,
                depends_on=backends,
                uses_dns=uses_dns,
                windows_service="W3SVC" if dev.kind == "windows" else "",
                site=dev.site,
            )
            b.monitor(HTTP_JOB, url, e.services[name].element, dev.site, b.reference(server))
            for backend in backends:
                if rng.random() < 0.3:
                    e.forgotten.add((name, backend))
    for isp in e.isp_links:
        for service in e.services.values():
            if e.devices[service.host].kind == "internet" and rng.random() < 0.3:
                e.forgotten.add((service.name, isp))
