"""One ``/firewall`` scrape: every endpoint of the vendor's API at once, mapped to the schema.

A scrape sends the module's vendor's requests in parallel over the scraper's
one ``ApiClient`` (a pooled HTTP session kept between scrapes), each bounded
by the scrape deadline, and maps what answered to the firewall schema
(``exporter.schema.firewall``). Besides the handler's
``scout_firewall_scrape_duration_seconds``, the families are the schema's::

    scout_firewall_up 1.0
    scout_firewall_info{firmware="v7.4.3",hostname="fw-hq",model="FGT60F",vendor="fortinet"} 1.0
    scout_firewall_sessions 51234.0
    scout_firewall_rules_dropped_total 0.0
    ...

How a scrape ends:

* every endpoint answered: ``scout_firewall_up 1`` and every family the
  answers fill;
* some failed (a 403 for a page the API user may not read, a 404 from an
  older firmware, a timeout, malformed JSON, an answer over
  ``max_response_bytes``), or answered without something the mapping needs
  (the vendor's ``Reading.notes``: a field the API user may not read, a rule
  listed twice): ``up 1`` with what the others gave, and one note naming each
  failed endpoint and each gap and why, logged at info;
* the firewall refused the credentials (HTTP 401 on any endpoint), or no
  endpoint answered at all: ``scout_firewall_up 0`` alone, logged as a
  warning. ``up 0`` is in the answer from the start, so a scrape cut short
  at the deadline still says so.

The credentials (``HttpAuth``) go in a header to the target only: the
handler has already checked the target against the module's and the auth's
``allowed_targets``, and pinned a name to the address it checked, which is
the address connected to (the certificate is still checked against the name).

Rules go through the module's ``RuleBudget``; what it leaves out, and what
the vendor's mapping left out (a rule an answer lists twice), is added to a
``rules_dropped`` counter kept per target and module for as long as this
scraper lives (until the next reload), exported as
``scout_firewall_rules_dropped_total``.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric
from yarl import URL

from exporter.clients.firewall_api import (
    AiohttpApiClient,
    ApiAuthError,
    ApiClient,
    ApiError,
    ApiRequest,
)
from exporter.clients.probe_net import (
    ProbeError,
    TargetError,
    interface_index,
    parse_ip,
    split_host_port,
    tls_context,
)
from exporter.config import HttpAuth
from exporter.errors import BadRequestError
from exporter.schema.firewall import RuleBudget, failed, render
from exporter.targets.firewall.fortigate import FortiGate
from exporter.targets.firewall.modules import FirewallModuleType
from exporter.targets.firewall.opnsense import OPNsense
from exporter.targets.firewall.pfsense import PfSense
from exporter.targets.firewall.values import Node
from exporter.targets.firewall.vendor import Answers, Endpoint, ShapeError, Vendor
from exporter.targets.kind import (
    IPAddress,
    ScrapeJob,
    SelfMetric,
    StatusMetrics,
    preferred_address,
)

# The vendors, by the module's ``prober``.
VENDORS: Mapping[str, Vendor[Any]] = {
    "fortigate": FortiGate(),
    "opnsense": OPNsense(),
    "pfsense": PfSense(),
}

# scout_firewall_up is the success family (the schema's); the handler adds the duration.
FIREWALL_STATUS = StatusMetrics(
    duration=SelfMetric(
        "scout_firewall_scrape_duration_seconds", "Seconds the firewall scrape took."
    ),
)

# Room left after the last request for the mapping and rendering, before the handler's cut.
RENDER_RESERVE_SECONDS = 0.05
# Targets whose rules_dropped counter is remembered; the least recently scraped go first.
MAX_TRACKED_TARGETS = 4096
# A name (253) with a port, or a bracketed IPv6 address with a zone and a port.
MAX_TARGET_LENGTH = 300

Families = list[Metric]
FirewallJob = ScrapeJob["FirewallTarget", FirewallModuleType, HttpAuth]


@dataclass(frozen=True, slots=True)
class FirewallTarget:
    """``host[:port]`` as the caller wrote it; ``address`` once pinned by the allow-lists."""

    host: str
    port: int | None = None
    address: str | None = None

    @property
    def host_is_address(self) -> bool:
        try:
            return parse_ip(self.host) is not None
        except TargetError:
            return False


def parse_target(text: str) -> FirewallTarget:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port``; no scheme (the module has it)."""
    if "://" in text or "/" in text or "@" in text:
        raise BadRequestError(
            f"invalid target {text!r}: give host or host:port; "
            "the module says https or http, and the vendor the paths"
        )
    try:
        parsed = split_host_port(text)
        address = parse_ip(parsed.host)
    except TargetError as exc:
        raise BadRequestError(str(exc)) from None
    # An address in its canonical form: a zone kept only where one is needed (fe80::1%eth0).
    host = parsed.host if address is None else str(address)
    return FirewallTarget(host, parsed.port)


def target_host(target: FirewallTarget, _module: FirewallModuleType) -> str:
    """The host the allow-lists judge: the target's, as written."""
    return target.host


def pin_target(target: FirewallTarget, addresses: Sequence[IPAddress]) -> FirewallTarget:
    """The target bound to an address the allow-lists checked, IPv4 first.

    The connection goes to that address, so a DNS answer that changed since
    the check cannot send the credentials elsewhere.
    """
    return FirewallTarget(target.host, target.port, str(preferred_address(addresses)))


def unresolved_scrape(_job: FirewallJob, error: str, families: Families) -> tuple[bool, str | None]:
    """A target whose name did not resolve: ``scout_firewall_up 0``."""
    families.extend(failed())
    return False, error


def credential_headers(auth: HttpAuth) -> dict[str, str]:
    """The header that carries ``auth``'s credentials."""
    if auth.bearer_token is not None:
        return {"Authorization": f"Bearer {auth.bearer_token.get_secret_value()}"}
    if auth.api_key is not None:
        return {"X-API-Key": auth.api_key.get_secret_value()}
    password = auth.password.get_secret_value() if auth.password is not None else ""
    pair = f"{auth.username or ''}:{password}".encode()
    return {"Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}"}


@dataclass(frozen=True, slots=True)
class Fetched:
    """One endpoint's payload, or why there is none."""

    endpoint: Endpoint
    payload: Node | None = None
    error: ApiError | ShapeError | None = None


class FirewallScraper:
    """The ``/firewall`` kind's state: the HTTP client, TLS contexts, and rules dropped."""

    def __init__(self, client: ApiClient | None = None) -> None:
        self._client: ApiClient = client or AiohttpApiClient()
        self._tls: dict[tuple[bool, str | None], ssl.SSLContext] = {}
        self._dropped: OrderedDict[tuple[str, str, int], float] = OrderedDict()
        self._reading = 0  # scrapes whose requests are out now
        self._closing = False
        self._late_close: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        """Close the HTTP client, or, while scrapes are reading through it, let the
        last of them close it: a reload closes the old scraper mid-scrape, and
        closing the client under its requests would cut them off."""
        self._closing = True
        if not self._reading:
            await self._client.close()

    async def scrape(self, job: FirewallJob, families: Families) -> tuple[bool, str | None]:
        families.extend(failed())  # what the answer says if the deadline cuts this short
        [(module_name, module)] = job.modules
        vendor = VENDORS[module.prober]
        auth = job.auth
        if auth is None or auth.scheme not in vendor.auth_schemes:
            return False, _wrong_scheme(vendor, module, job)
        try:
            tls = self._tls_context(module) if module.scheme == "https" else None
        except ProbeError as exc:
            return False, str(exc)
        try:
            address = parse_ip(job.target.address or job.target.host)
            if address is not None:
                interface_index(address)  # an unknown zone fails here, saying so
        except ProbeError as exc:
            return False, str(exc)
        headers = credential_headers(auth)
        endpoints = vendor.endpoints(module)
        deadline = job.deadline - RENDER_RESERVE_SECONDS
        self._reading += 1
        try:
            fetched = await asyncio.gather(
                *(
                    self._fetch(job.target, module, endpoint, headers, tls, deadline)
                    for endpoint in endpoints
                )
            )
        finally:
            self._reading -= 1
            if self._closing and not self._reading:
                self._late_close = asyncio.get_running_loop().create_task(self._client.close())
        refused = next((f for f in fetched if isinstance(f.error, ApiAuthError)), None)
        if refused is not None:
            return False, f"{refused.endpoint}: {refused.error}"
        failures = [f"{f.endpoint}: {f.error}" for f in fetched if f.error is not None]
        payloads = {f.endpoint.key: f.payload for f in fetched if f.payload is not None}
        if not payloads:
            return False, "no endpoint answered: " + "; ".join(failures)
        reading = vendor.read(module, Answers(payloads))
        snapshot = reading.snapshot
        if reading.rules is not None:
            budget = RuleBudget(all_rules=module.all_rules, max_series=module.max_rule_series)
            snapshot.rules, dropped = budget.apply(reading.rules)
            dropped += reading.rules_dropped
            snapshot.rules_dropped = self._count_dropped(module_name, job.target, module, dropped)
        families[:] = render(snapshot)
        notes = list(reading.notes)
        if failures:
            notes.insert(
                0, f"{len(failures)} of {len(endpoints)} endpoints failed: " + "; ".join(failures)
            )
        return True, ("partial: " + "; ".join(notes)) if notes else None

    def _tls_context(self, module: FirewallModuleType) -> ssl.SSLContext:
        key = (not module.tls_insecure_skip_verify, module.tls_ca_file)
        context = self._tls.get(key)
        if context is None:
            context = self._tls[key] = tls_context(*key)
        return context

    async def _fetch(
        self,
        target: FirewallTarget,
        module: FirewallModuleType,
        endpoint: Endpoint,
        headers: Mapping[str, str],
        tls: ssl.SSLContext | None,
        deadline: float,
    ) -> Fetched:
        port = target.port or module.default_port
        connect_to = target.address or target.host
        url = URL.build(
            scheme=module.scheme,
            # A link-local address keeps its zone: fe80::1 is reached through the
            # interface it names (ZonedHostRequest leaves it out of Host and SNI).
            # A URL writes the '%' as '%25' (RFC 6874), read back once when the
            # request is made: the zone connected through is the one checked.
            host=connect_to.replace("%", "%25"),
            port=port,
            path=endpoint.path,
            query=endpoint.query or None,
        )
        server_name = module.tls_server_name
        request_headers = dict(headers)
        if target.address is not None and not target.host_is_address:
            # Connected by address, addressed by name: the name goes in Host and SNI,
            # and the certificate is checked against it.
            server_name = server_name or target.host
            request_headers["Host"] = _host_header(target.host, port, module)
        request = ApiRequest(
            url=url,
            headers=request_headers,
            tls=tls,
            server_hostname=server_name if tls is not None else None,
            max_bytes=module.max_response_bytes,
            deadline=deadline,
        )
        try:
            answer = await self._client.get_json(request)
            return Fetched(endpoint, endpoint.unwrap(Node(answer)))
        except (ApiError, ShapeError) as exc:
            return Fetched(endpoint, error=exc)

    def _count_dropped(
        self, module_name: str, target: FirewallTarget, module: FirewallModuleType, dropped: int
    ) -> float:
        key = (module_name, target.host.lower(), target.port or module.default_port)
        total = self._dropped.pop(key, 0.0) + dropped
        self._dropped[key] = total
        while len(self._dropped) > MAX_TRACKED_TARGETS:
            self._dropped.popitem(last=False)
        return total


def _wrong_scheme(vendor: Vendor[Any], module: FirewallModuleType, job: FirewallJob) -> str:
    wanted = " or ".join(f"{scheme} ({what})" for scheme, what in vendor.auth_schemes.items())
    given = "none" if job.auth is None else job.auth.scheme
    return f"the {module.prober} API takes {wanted}; auth {job.auth_name!r} is {given}"


def _host_header(host: str, port: int, module: FirewallModuleType) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == (443 if module.scheme == "https" else 80) else f"{shown}:{port}"
