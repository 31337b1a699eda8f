"""The web configuration file (``--web.config.file``): TLS, basic auth and response headers.

The format is Prometheus exporter-toolkit's, the file node_exporter and
blackbox_exporter read, so one file can serve them all::

    tls_server_config:
      cert_file: server.crt          # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.crt
    http_server_config:
      headers: {X-Content-Type-Options: nosniff}
    basic_auth_users:
      prometheus: $2b$10$...         # bcrypt hashes, never passwords

Parsing is as strict as the daemon's own config (unknown keys are errors that
name the line; nothing under ``basic_auth_users`` or a key is repeated in an
error). A setting Python's ``ssl`` module cannot honour is refused with the
reason, never ignored.

The file is read at start and again on every reload (SIGHUP or
``POST /-/reload``); exporter-toolkit reads it on every request instead. A
reload is two steps, so it can take effect together with the main config or
not at all: :meth:`WebSecurity.prepare` reads and builds everything and
changes nothing, :meth:`WebSecurity.commit` puts the result in force. A reload
takes new users, headers, certificates, keys and client CAs at once; the
listener's protocol settings (client_auth_type, versions, ciphers, curves) are
fixed when the socket opens, so a reload that changes them fails and says a
restart is needed.

No TLS session tickets are issued, so no client resumes a session across a
reload; a TLS 1.2 session-ID resumption (OpenSSL's server cache, which Python
cannot turn off) of a session made before the client CAs changed is refused
per request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import ssl
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Self

import bcrypt
from aiohttp import web
from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from exporter.common.models import Secret, StrictModel
from exporter.common.yamlconfig import load_model

log = logging.getLogger(__name__)


class WebConfigError(Exception):
    """The web config file cannot be read, is invalid, or cannot be applied."""


ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TlsVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
# OpenSSL 3 allows TLS 1.0 and 1.1 only at security level 0 (which would also
# weaken every TLS 1.2 and 1.3 connection on the listener), and Python deprecates
# them: a listener configured for them would complete no such handshake.
_UNSUPPORTED_VERSIONS = frozenset({"TLS10", "TLS11"})

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's names for the suites crypto/tls.CipherSuites() offers (TLS 1.0-1.2), and OpenSSL's.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
# TLS 1.3 suites are accepted by name but, as in Go, not configurable: all stay on.
TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
# Go's CurveID names, and OpenSSL's.
CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}

ResponseHeader = Literal[
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
]
# The values exporter-toolkit accepts for the two headers that have a fixed set.
_HEADER_VALUES: dict[ResponseHeader, tuple[str, ...]] = {
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
}

# A bcrypt hash in modular crypt format: $2a$, $2b$ or $2y$, a cost, 53 characters.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}")


class TlsServerConfig(StrictModel):
    cert_file: str | None = None
    key_file: str | None = None
    cert: str | None = None
    key: Secret | None = None
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: str | None = None
    client_ca: str | None = None
    client_allowed_sans: list[str] = Field(default_factory=list)
    min_version: TlsVersionName = "TLS12"
    max_version: TlsVersionName = "TLS13"
    cipher_suites: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] = Field(default_factory=list)

    @field_validator("client_auth_type", mode="before")
    @classmethod
    def _blank_is_no_client_cert(cls, value: object) -> object:
        return "NoClientCert" if value == "" else value  # as exporter-toolkit reads it

    @field_validator("client_auth_type")
    @classmethod
    def _python_can_honour(cls, value: str) -> str:
        if value in ("RequestClientCert", "RequireAnyClientCert"):
            raise ValueError(
                f"{value} is not supported: Python's ssl module cannot ask for a client"
                " certificate without verifying it; use RequireAndVerifyClientCert"
                " (or VerifyClientCertIfGiven) with client_ca_file"
            )
        return value

    @field_validator("min_version", "max_version")
    @classmethod
    def _openssl_can_handshake(cls, value: str) -> str:
        if value in _UNSUPPORTED_VERSIONS:
            raise ValueError(
                f"{value} is not supported: OpenSSL 3 allows TLS 1.0 and 1.1 only at security"
                " level 0, which Scout does not lower, so no client could connect with it;"
                " use TLS12 or TLS13"
            )
        return value

    @field_validator("cipher_suites")
    @classmethod
    def _known_suites(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in CIPHER_SUITES and name not in TLS13_SUITES:
                raise ValueError(f"unknown cipher suite {name!r} (Go's crypto/tls names)")
        return value

    @field_validator("curve_preferences")
    @classmethod
    def _one_known_curve(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in CURVES:
                raise ValueError(f"unknown curve {name!r} (expected one of: {', '.join(CURVES)})")
        if len(value) > 1:
            raise ValueError(
                "Python's ssl module sets one curve; list one (or none for OpenSSL's defaults)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for name in ("cert", "key", "client_ca"):
            if getattr(self, name) is not None and getattr(self, f"{name}_file") is not None:
                raise ValueError(f"give {name} or {name}_file, not both")
        if self.cert is None and self.cert_file is None:
            raise ValueError("missing cert_file (or cert)")
        if self.key is None and self.key_file is None:
            raise ValueError("missing key_file (or key)")
        has_ca = self.client_ca_file is not None or self.client_ca is not None
        verifies = self.client_auth_type != "NoClientCert"
        if verifies and not has_ca:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        if has_ca and not verifies:
            raise ValueError("client_ca_file is set but client_auth_type is NoClientCert")
        if self.client_allowed_sans and self.client_auth_type != "RequireAndVerifyClientCert":
            raise ValueError(
                "client_allowed_sans needs client_auth_type RequireAndVerifyClientCert"
            )
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version")
        return self

    def fixed_settings(self) -> dict[str, object]:
        """What the listening socket keeps until a restart."""
        return {
            "client_auth_type": self.client_auth_type,
            "min_version": self.min_version,
            "max_version": self.max_version,
            "cipher_suites": self.cipher_suites,
            "prefer_server_cipher_suites": self.prefer_server_cipher_suites,
            "curve_preferences": self.curve_preferences,
        }


class HttpServerConfig(StrictModel):
    # aiohttp speaks HTTP/1.1 only: `http2: true` (the default) is accepted, as
    # exporter-toolkit serves HTTP/1.1 to every client that does not ask for h2.
    http2: bool = True
    headers: dict[ResponseHeader, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_values(self) -> Self:
        for header, text in self.headers.items():
            if any(ord(c) < 32 or ord(c) == 127 for c in text):
                raise ValueError(f"{header}: a header value cannot hold control characters")
        for name, allowed in _HEADER_VALUES.items():
            value = self.headers.get(name)
            if value and value.lower() not in allowed:  # blank means unset, as in exporter-toolkit
                raise ValueError(f"{name} must be one of: {', '.join(allowed)}")
        return self


def _is_bcrypt_hash(hashed: SecretStr) -> SecretStr:
    if not _BCRYPT_HASH.fullmatch(hashed.get_secret_value()):
        raise ValueError("not a bcrypt hash (make one with `htpasswd -nBC 10 '' | tr -d ':\\n'`)")
    return hashed


BcryptHash = Annotated[Secret, AfterValidator(_is_bcrypt_hash)]


class RateLimitConfig(StrictModel):
    interval: str | None = None
    burst: int | None = None


class WebConfig(StrictModel):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = Field(default_factory=HttpServerConfig)
    basic_auth_users: dict[str, BcryptHash] = Field(default_factory=dict)
    rate_limit: RateLimitConfig | None = None

    @field_validator("tls_server_config", mode="before")
    @classmethod
    def _empty_means_no_tls(cls, value: object) -> object:
        # exporter-toolkit serves plain HTTP when the section sets nothing.
        return None if value == {} else value

    @field_validator("rate_limit")
    @classmethod
    def _no_rate_limit(cls, value: RateLimitConfig | None) -> RateLimitConfig | None:
        if value is not None:
            raise ValueError("not supported by Scout; limit requests in a reverse proxy")
        return value


# Nothing written under these is repeated in an error: hashes, and inline keys.
WEB_SECRET_PATHS = ("basic_auth_users", "tls_server_config.key")


def load_web_config(path: Path) -> WebConfig:
    """Read and validate ``path``; problems raise :class:`WebConfigError`."""
    return load_model(path, WebConfig, error=WebConfigError, secret_paths=WEB_SECRET_PATHS)


def _refuse_encrypted_key() -> str:
    # Without a callback OpenSSL would prompt on the terminal for a passphrase.
    raise WebConfigError("the key is encrypted; exporter-toolkit reads unencrypted keys only")


def _load_cert_chain(context: ssl.SSLContext, tls: TlsServerConfig, base: Path) -> None:
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(base / tls.cert_file, base / tls.key_file, _refuse_encrypted_key)
        return
    # An inline cert or key: ssl loads chains only from files, so write private copies.
    with tempfile.TemporaryDirectory(prefix="scout-tls-") as private:
        cert = base / tls.cert_file if tls.cert_file else Path(private, "cert.pem")
        key = base / tls.key_file if tls.key_file else Path(private, "key.pem")
        if tls.cert is not None:
            cert.write_text(tls.cert)
        if tls.key is not None:
            key.touch(mode=0o600)
            key.write_text(tls.key.get_secret_value())
        context.load_cert_chain(cert, key, _refuse_encrypted_key)


def _check_readable(tls: TlsServerConfig, base: Path, source: str) -> None:
    """Name the file that is missing: ssl's own error says only "No such file"."""
    for name in ("cert_file", "key_file", "client_ca_file"):
        value = getattr(tls, name)
        if value is None:
            continue
        try:
            with (base / value).open("rb"):
                pass
        except OSError as exc:
            raise WebConfigError(
                f"{source}: tls_server_config.{name}: cannot read {base / value}: {exc.strerror}"
            ) from None


def build_ssl_context(tls: TlsServerConfig, base: Path, source: str) -> ssl.SSLContext:
    """A server context for ``tls``; files are read now. Raises :class:`WebConfigError`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # No session tickets (TLS 1.3 or 1.2): a resumed session skips the client
    # certificate check, so one issued before a reload could outlive a removed CA.
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    _check_readable(tls, base, source)
    step = "cert_file, key_file"
    try:
        _load_cert_chain(context, tls, base)
        step = "client_ca_file"
        if tls.client_ca_file is not None:
            context.load_verify_locations(cafile=base / tls.client_ca_file)
        elif tls.client_ca is not None:
            context.load_verify_locations(cadata=tls.client_ca)
        context.verify_mode = {
            "NoClientCert": ssl.CERT_NONE,
            "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
            "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
        }[tls.client_auth_type]
        step = "cipher_suites"
        wanted = [CIPHER_SUITES[s] for s in tls.cipher_suites if s in CIPHER_SUITES]
        if wanted:
            context.set_ciphers(":".join(wanted))
            available = {c["name"] for c in context.get_ciphers()}
            for suite in tls.cipher_suites:
                if suite in CIPHER_SUITES and CIPHER_SUITES[suite] not in available:
                    raise WebConfigError(f"{suite} is not available in this OpenSSL")
        if tls.prefer_server_cipher_suites:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        step = "curve_preferences"
        for curve in tls.curve_preferences:
            context.set_ecdh_curve(CURVES[curve])
    except (WebConfigError, OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WebConfigError(f"{source}: tls_server_config: {step}: {reason}") from None
    return context


@dataclass(frozen=True, slots=True)
class PreparedWebConfig:
    """One load of the file, built and checked: what :meth:`WebSecurity.commit` puts in force."""

    config: WebConfig
    users: Mapping[str, bytes]
    # For each user, a hash of that user's cost that matches no password: an
    # unknown name is checked against one of them (see decoy_for).
    decoys: Mapping[str, bytes]
    context: ssl.SSLContext | None
    # The client CA certificates (DER) the context verifies against.
    client_cas: frozenset[bytes]
    # client_allowed_sans, IP addresses parsed so that every spelling compares equal.
    allowed_sans: frozenset[str | ipaddress.IPv4Address | ipaddress.IPv6Address]

    def decoy_for(self, username: str) -> bytes:
        """The hash an unknown ``username`` is checked against, the same one every time.

        Only called when there are users.

        Its cost is a real user's, picked by rendezvous hashing keyed by each
        user's own (secret) hash: names spread over the users' costs as the users
        do, so how long an answer takes tells which costs are in use, never
        whether a name exists. A reload moves a name only to an added user or
        off a removed or re-hashed one; a restart moves none.
        """
        owner = max(
            self.users,
            key=lambda name: hmac.digest(self.users[name], username.encode(), "sha256"),
        )
        return self.decoys[owner]


def _decoy(cost: bytes) -> bytes:
    """A well-formed hash of ``cost`` that no password matches, made in about a millisecond.

    A cost-4 hash of a random password relabelled with ``cost``: checking it
    costs 2**cost rounds like any hash of that cost, while making it at that
    cost could take seconds.
    """
    made = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=4))
    return made[:4] + cost + made[6:]


def _allowed_sans(
    names: list[str],
) -> frozenset[str | ipaddress.IPv4Address | ipaddress.IPv6Address]:
    # An entry that reads as an address matches an IP SAN in any spelling, and
    # still, as in exporter-toolkit, a DNS or URI SAN of exactly that text.
    addresses = (_ip(name) for name in names)
    return frozenset(names).union(address for address in addresses if address is not None)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an address (an IPv4-mapped IPv6 one as IPv4, as Go prints it), or None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


def _prepare(config: WebConfig, base: Path, source: str) -> PreparedWebConfig:
    users = {
        name: hashed.get_secret_value().encode() for name, hashed in config.basic_auth_users.items()
    }
    costs = {name: hashed.split(b"$")[2] for name, hashed in users.items()}
    by_cost = {cost: _decoy(cost) for cost in set(costs.values())}
    decoys = {name: by_cost[cost] for name, cost in costs.items()}
    tls = config.tls_server_config
    context = None if tls is None else build_ssl_context(tls, base, source)
    client_cas = context.get_ca_certs(binary_form=True) if context else []
    return PreparedWebConfig(
        config=config,
        users=users,
        decoys=decoys,
        context=context,
        client_cas=frozenset(client_cas),
        allowed_sans=_allowed_sans(tls.client_allowed_sans if tls else []),
    )


# bcrypt reads no further: Go's bcrypt (exporter-toolkit) ignores the bytes past
# it, while Python's bcrypt 5 refuses longer passwords outright.
_BCRYPT_MAX_PASSWORD = 72


def _check_password(password: bytes, hashed: bytes) -> bool:
    return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], hashed)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Verified (user, hash, password) keys kept: a Prometheus or two scraping every 15 s
# should not pay bcrypt (about 70 ms at cost 10) on every scrape.
_CACHE_SIZE = 64
REALM = "scout"


class WebSecurity:
    """The web config in force: the TLS context, basic auth and response headers.

    Requests are checked by :meth:`middleware`; :meth:`add_headers` runs as the
    app's ``on_response_prepare`` hook; a reload is :meth:`prepare` (read the
    file again, change nothing) then :meth:`commit`. Without a file every
    request is let through, as before.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._active = self._load()
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        # The cache holds keyed hashes of passwords, never the passwords.
        self._cache_key = secrets.token_bytes(32)
        self._listener: ssl.SSLContext | None = None
        # When the client CAs last changed (time.time()); a TLS session made
        # before then was verified against CAs no longer trusted.
        self._client_cas_changed_at: float | None = None

    def _load(self) -> PreparedWebConfig:
        if self._path is None:
            return _prepare(WebConfig(), Path("."), "")
        config = load_web_config(self._path)
        return _prepare(config, self._path.parent, str(self._path))

    @property
    def config(self) -> WebConfig:
        return self._active.config

    def ssl_context(self) -> ssl.SSLContext | None:
        """The listener's context; each handshake switches to the newest load's files."""
        if self._active.context is None:
            return None
        if self._listener is None:
            self._listener = self._active.context
            self._listener.sni_callback = self._newest_files
        return self._listener

    def _newest_files(
        self, connection: ssl.SSLObject, _name: str | None, _: ssl.SSLContext
    ) -> None:
        # Certificate, key and client CA store follow the swapped context;
        # verify mode and protocol settings stay the listener's (see prepare).
        newest = self._active.context
        if newest is not None and newest is not connection.context:
            connection.context = newest

    def prepare(self) -> PreparedWebConfig | None:
        """Read and build the file again without changing anything in force.

        Returns what :meth:`commit` applies (``None`` without a file); raises
        :class:`WebConfigError` when the file is invalid or cannot be applied.
        Blocking (files, and a cost-4 bcrypt hash per cost in use): run it off the event loop.
        """
        if self._path is None:
            return None
        config = load_web_config(self._path)
        before, after = self._active.config.tls_server_config, config.tls_server_config
        if (before is None) != (after is None):
            raise WebConfigError(
                f"{self._path}: TLS cannot be turned on or off by a reload;"
                " restart scout-exporter to apply it"
            )
        if before is not None and after is not None:
            old, new = before.fixed_settings(), after.fixed_settings()
            changed = [name for name in old if old[name] != new[name]]
            if changed:
                raise WebConfigError(
                    f"{self._path}: tls_server_config: {', '.join(changed)} changed;"
                    " restart scout-exporter to apply it (a reload takes new"
                    " certificates, keys, client CAs, users and headers only)"
                )
        return _prepare(config, self._path.parent, str(self._path))

    def commit(self, prepared: PreparedWebConfig | None) -> None:
        """Put what :meth:`prepare` built in force, from the next request and handshake on."""
        if prepared is None:
            return
        if prepared.client_cas != self._active.client_cas:
            self._client_cas_changed_at = time.time()
        self._active = prepared
        self._verified.clear()

    async def add_headers(self, _: web.Request, response: web.StreamResponse) -> None:
        for name, value in self._active.config.http_server_config.headers.items():
            if value:
                response.headers[name] = value

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        active = self._active
        if self._resumes_an_outdated_session(request):
            refused = web.Response(
                status=403,
                text="TLS session predates a change of client CAs; reconnect without resuming\n",
            )
            refused.force_close()  # the next request must come with a new handshake
            return refused
        if active.allowed_sans and not _san_allowed(request, active.allowed_sans):
            return web.Response(status=403, text="client certificate not allowed\n")
        if active.users and not await self._authenticated(request, active):
            return web.Response(
                status=401,
                text="unauthorized\n",
                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
        return await handler(request)

    def _resumes_an_outdated_session(self, request: web.Request) -> bool:
        # A resumed session skips certificate verification: its client was
        # verified against the CAs in force when the session was made.
        changed_at = self._client_cas_changed_at
        if changed_at is None or request.transport is None:
            return False
        connection = request.transport.get_extra_info("ssl_object")
        if not isinstance(connection, ssl.SSLObject | ssl.SSLSocket):
            return False
        if not connection.session_reused:
            return False
        session = connection.session
        # The session's time is whole seconds, rounded down: a session from the
        # same second as the change counts as older (refused, never let through).
        return session is None or session.time <= changed_at

    async def _authenticated(self, request: web.Request, active: PreparedWebConfig) -> bool:
        credentials = _basic_credentials(request.headers.get("Authorization", ""))
        if credentials is None:
            return False
        username, password = credentials
        hashed = active.users.get(username)
        checked = hashed if hashed is not None else active.decoy_for(username)
        key = self._cache_entry(username, checked, password)
        if hashed is not None and key in self._verified:
            self._verified.move_to_end(key)
            return True
        # Off the event loop: bcrypt takes tens of milliseconds by design.
        matched = await asyncio.to_thread(_check_password, password, checked)
        if not matched or hashed is None or active is not self._active:
            return False
        self._verified[key] = None
        while len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return True

    def _cache_entry(self, username: str, hashed: bytes, password: bytes) -> bytes:
        digest = hmac.new(self._cache_key, digestmod=hashlib.sha256)
        for part in (username.encode(), hashed, password):
            digest.update(len(part).to_bytes(4, "big") + part)
        return digest.digest()


def _basic_credentials(header: str) -> tuple[str, bytes] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        username, sep, password = decoded.partition(b":")
        return (username.decode(), password) if sep else None
    except ValueError:  # not ASCII, not base64 (binascii.Error), or not UTF-8
        return None


# The SAN kinds exporter-toolkit compares (Go's DNSNames, EmailAddresses,
# IPAddresses, URIs), as Python's ssl names them.
_SAN_KINDS = frozenset({"DNS", "email", "URI"})


def _san_allowed(
    request: web.Request,
    allowed: frozenset[str | ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> bool:
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    for kind, value in (peer or {}).get("subjectAltName", ()):
        # ssl spells an IPv6 SAN 2001:DB8:0:0:0:0:0:1, Go 2001:db8::1: compare addresses.
        name = _ip(value) if kind == "IP Address" else value if kind in _SAN_KINDS else None
        if name is not None and name in allowed:
            return True
    return False


def cross_site_refusal(request: web.Request) -> str | None:
    """Why a state-changing request looks like a browser's cross-site POST, or ``None``.

    Browsers label such requests: ``Sec-Fetch-Site`` (current browsers) and
    ``Origin`` (every browser sends it with a POST). curl, urllib and Prometheus
    tooling send neither. The content type is not a signal: an HTML form can send
    the same one (``application/x-www-form-urlencoded``) that urllib and
    ``curl -d`` send with every POST.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        return "refused: a browser sent this request from another site (Sec-Fetch-Site)"
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != f"{request.scheme}://{request.host}".lower():
        return "refused: the request's Origin is another site"
    return None


WEB_SECURITY = web.AppKey("web_security", WebSecurity)
