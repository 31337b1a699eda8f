"""The ``http`` prober: one or more HTTP(S) requests, each on a fresh connection.

Targets are ``http://`` and ``https://`` URLs; anything else (``host``,
``host:port``, ``host/path``, ``[v6]:port``) is taken as ``http://`` + target.
A link-local host keeps its zone, written ``[fe80::1%25eth0]`` (RFC 6874) or
``[fe80::1%eth0]``; the request goes out on that interface, with the zone left
out of the Host header and the TLS name.
Each request resolves, connects and (for https) handshakes anew, so every one
measures the whole path. A request counts as answered when a response came
back; it passes when its status is valid (2xx unless ``valid_status_codes`` says
otherwise) and its body matches every ``fail_if_body_not_matches_regexp``. The
probe succeeds when at least one request passed and the loss is within
``fail_if_loss_ratio_above``, if set. Redirects are followed by default, and
the status and the rest describe the final response of the last request.

Sample exposition, besides the families every probe has (see
``exporter.targets.probe.base``; the round trip of a request is the whole request,
body included)::

    # HELP scout_probe_success 1 if the probe succeeded.
    # TYPE scout_probe_success gauge
    scout_probe_success 1.0
    # HELP scout_probe_rtt_avg_seconds Mean round trip.
    # TYPE scout_probe_rtt_avg_seconds gauge
    scout_probe_rtt_avg_seconds 0.0871
    # HELP scout_probe_http_status_code Status code of the final response.
    # TYPE scout_probe_http_status_code gauge
    scout_probe_http_status_code 200.0
    # HELP scout_probe_http_version HTTP version of the final response.
    # TYPE scout_probe_http_version gauge
    scout_probe_http_version 1.1
    # HELP scout_probe_http_content_length_bytes Content-Length, else the body bytes read.
    # TYPE scout_probe_http_content_length_bytes gauge
    scout_probe_http_content_length_bytes 1256.0
    # HELP scout_probe_http_redirects Redirects followed to the final response.
    # TYPE scout_probe_http_redirects gauge
    scout_probe_http_redirects 1.0
    # HELP scout_probe_tls_cert_expiry_timestamp_seconds Unix time the TLS chain first expires.
    # TYPE scout_probe_tls_cert_expiry_timestamp_seconds gauge
    scout_probe_tls_cert_expiry_timestamp_seconds 1.7356896e+09

The body is read up to ``MAX_BODY_BYTES``; the expressions see that much.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, Self

from pydantic import Field, PlainSerializer, model_validator
from yarl import URL

from exporter.clients.probe_net import (
    AiohttpFetcher,
    HttpFetcher,
    HttpReply,
    HttpRequest,
    TargetError,
    check_host,
    interface_index,
    tls_context,
    url_address,
)
from exporter.common.models import SECRET_MASK, Regex
from exporter.targets.allowlist import needs_allow_list
from exporter.targets.probe.base import (
    BaseProber,
    CaFile,
    Metrics,
    PacketModule,
    add_rtt_families,
    add_tls_expiry,
    loss_verdict,
    run_attempts,
    shortfall,
    summarize,
)

# Header names that mark a credential: such a header's value never shows in
# /config, and a module that sends one needs allowed_targets.
_SENSITIVE_HEADER_WORDS = (
    "auth",
    "cookie",
    "token",
    "key",
    "secret",
    "password",
    "session",
    "credential",
    "signature",
)


def credential_headers(headers: Mapping[str, str]) -> list[str]:
    """The names among ``headers`` that carry a credential (Authorization, X-Api-Key, Cookie)."""
    return [name for name in headers if any(w in name.lower() for w in _SENSITIVE_HEADER_WORDS)]


def _mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    secret = credential_headers(headers)
    return {name: SECRET_MASK if name in secret else value for name, value in headers.items()}


Headers = Annotated[dict[str, str], PlainSerializer(_mask_headers, return_type=dict[str, str])]


class HttpModule(PacketModule):
    prober: Literal["http"] = "http"
    count: int = Field(default=1, ge=1, le=100)
    timeout_seconds: float = Field(default=5.0, gt=0.0, le=300.0)
    method: Literal["GET", "HEAD"] = "GET"
    # Empty means any 2xx.
    valid_status_codes: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=list)
    follow_redirects: bool = True
    tls_insecure_skip_verify: bool = False
    tls_ca_file: CaFile | None = None
    headers: Headers = Field(default_factory=dict)
    fail_if_body_not_matches_regexp: list[Regex] = Field(default_factory=list)

    @model_validator(mode="after")
    def _credentials_need_an_allow_list(self) -> Self:
        carried = credential_headers(self.headers)
        if carried and self.allowed_targets is None:
            noun = "header" if len(carried) == 1 else "headers"
            raise ValueError(needs_allow_list(f"sends the {noun} {', '.join(carried)}"))
        return self

    def target_host(self, target: str) -> str:
        """The URL's host; a URL with user info is refused where an allow-list applies."""
        url = target_url(target)
        if url.user is not None or url.password is not None:
            # userinfo is how "https://listed.example.net@elsewhere/" fools a reader.
            raise TargetError("a target with user info (user:password@) is refused here")
        return url.host or ""


def target_url(target: str) -> URL:
    """The URL to request: the target itself, or ``http://`` + target."""
    text = target.strip()
    scheme, sep, _ = text.partition("://")
    if sep and scheme.lower() not in ("http", "https"):
        raise TargetError(f"target {target!r}: scheme {scheme!r} is not http or https")
    if not sep:
        text = f"http://{text}"
    try:
        url = URL(text)
        port = url.port
    except ValueError as exc:
        raise TargetError(f"target {target!r} is not a valid URL: {exc}") from None
    # [fe80::1%25eth0] is how RFC 6874 writes a zone in a URL. It is checked here
    # and read when the request is made (ZonedHostRequest), by the same
    # url_address, so the interface checked is the one connected through.
    try:
        address = url_address(url)
    except TargetError as exc:
        raise TargetError(f"target {target!r}: {exc}") from None
    if address is None:
        check_host(url.raw_host or "", target)
    if url.raw_path == "/" and not url.raw_query_string:
        url = url.with_path("/")  # spelled out: http://host/, not http://host
    if port is not None and not 1 <= port <= 65535:
        raise TargetError(f"target {target!r}: port {port} is out of range 1-65535")
    return url


def check_reply(reply: HttpReply, module: HttpModule) -> str | None:
    """Why the response fails the module's checks, or None if it passes."""
    valid = module.valid_status_codes
    if valid and reply.status not in valid:
        return f"status {reply.status} is not in valid_status_codes {valid}"
    if not valid and not 200 <= reply.status <= 299:
        return f"status {reply.status} is not 2xx"
    if module.fail_if_body_not_matches_regexp:
        text = reply.body.decode("utf-8", errors="replace")
        for pattern in module.fail_if_body_not_matches_regexp:
            if not pattern.search(text):
                return f"body does not match {pattern.pattern!r}"
    return None


class HttpProber(BaseProber[HttpModule]):
    def __init__(self, fetcher: HttpFetcher | None = None) -> None:
        self.fetcher: HttpFetcher = fetcher or AiohttpFetcher()

    async def run(
        self, target: str, module: HttpModule, deadline: float, metrics: Metrics
    ) -> tuple[bool, str | None]:
        url = target_url(target)
        address = url_address(url)
        if address is not None:
            interface_index(address)  # an unknown zone fails here, saying so
        request = HttpRequest(
            url=url,
            method=module.method,
            headers=dict(module.headers),
            follow_redirects=module.follow_redirects,
            tls=tls_context(not module.tls_insecure_skip_verify, module.tls_ca_file),
            preferred_ip_protocol=module.preferred_ip_protocol,
            ip_protocol_fallback=module.ip_protocol_fallback,
            check_address=module.check_address if module.allowed_targets is not None else None,
        )

        async def fetch() -> HttpReply:
            return await self.fetcher.fetch(request)

        attempts = await run_attempts(
            fetch,
            count=module.count,
            interval=module.interval_seconds,
            attempt_timeout=module.timeout_seconds,
            deadline=deadline,
        )
        replies = [a.value for a in attempts if a.value is not None]
        if replies:
            first, last = replies[0], replies[-1]
            metrics.add(
                "scout_probe_dns_lookup_seconds",
                "Seconds spent resolving the target's host name.",
                first.dns_lookup_seconds,
            )
            if last.ip_version is not None:
                metrics.add(
                    "scout_probe_ip_protocol",
                    "IP version of the address probed (4 or 6).",
                    last.ip_version,
                )
        summary = summarize([a.seconds for a in attempts])
        add_rtt_families(metrics, summary)
        if replies:
            _add_reply_families(metrics, replies[-1])
        checks = [check_reply(r, module) for r in replies]
        success, error = loss_verdict(summary, module, f"requests to {url}")
        failures = [a.error for a in attempts if a.error]
        if not success and failures:
            error = f"{error}: {failures[-1]}"
        if success and all(checks):
            success, error = False, checks[-1]
        notes = [e for e in (error, shortfall(len(attempts), module.count)) if e]
        return success, "; ".join(notes) or None


def _add_reply_families(metrics: Metrics, reply: HttpReply) -> None:
    metrics.add("scout_probe_http_status_code", "Status code of the final response.", reply.status)
    metrics.add(
        "scout_probe_http_version", "HTTP version of the final response.", float(reply.version)
    )
    if reply.content_length is not None:
        metrics.add(
            "scout_probe_http_content_length_bytes",
            "Content-Length, else the body bytes read.",
            reply.content_length,
        )
    metrics.add(
        "scout_probe_http_redirects", "Redirects followed to the final response.", reply.redirects
    )
    add_tls_expiry(metrics, reply.peer_certificates)
