"""Network calls the TCP and HTTP probers make: resolve, connect, handshake, fetch.

The probers depend on the ``Resolver``, ``Dialer`` and ``HttpFetcher`` protocols
only; they decide what to measure and how to report it, while everything that
touches a socket lives here.

A failure of one attempt (refused, timed out, certificate not trusted) is raised
as ``AttemptFailed`` with a message meant for a log line; a target that cannot
be probed at all raises ``TargetError`` or ``ResolveError``.

Tree::

    ExporterError
     └── ProbeError            a probe could not do what it was asked
          ├── TargetError      the target does not parse
          ├── ResolveError     the host has no address the module allows
          ├── AttemptFailed    one connection or request failed
          ├── AddressNotAllowedError  (exporter.targets.allowlist) the address
          │                    connected to is not in the module's allow-list
          └── IcmpPermissionError  (exporter.clients.icmp) no ICMP socket may be opened
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import aiohttp
from aiohttp import hdrs
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.tracing import Trace
from yarl import URL

from exporter.clients.dns import shared_resolver
from exporter.common.version import __version__
from exporter.errors import ExporterError

IpProtocol = Literal["ip4", "ip6"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Letters, digits, hyphens, underscores and dots: what DNS names and /etc/hosts
# entries use. Anything else (spaces, slashes, '@') is a typo, not a host.
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?\.?")


class ProbeError(ExporterError):
    """A probe could not do what it was asked; the message is fit for a log line."""


class TargetError(ProbeError):
    """The target does not parse as host, host:port, [v6]:port or URL."""


class ResolveError(ProbeError):
    """The host does not resolve, or not to an address of an allowed family."""


class AttemptFailed(ProbeError):
    """One connection attempt or request failed; the others may still succeed."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int | None


def split_host_port(target: str) -> HostPort:
    """Parse ``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    text = target.strip()
    if not text:
        raise TargetError("empty target")
    port_text: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise TargetError(f"target {target!r} has '[' without a closing ']'")
        if rest:
            if not rest.startswith(":"):
                raise TargetError(f"target {target!r}: expected ':port' after ']'")
            port_text = rest[1:]
        if not _is_ip(host, version=6):
            raise TargetError(f"target {target!r}: {host!r} in brackets is not an IPv6 address")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        # Two or more colons without brackets can only be an IPv6 address.
        host = text
    check_host(host, target)
    return HostPort(host, None if port_text is None else parse_port(port_text, target))


def check_host(host: str, target: str) -> None:
    """Raise ``TargetError`` unless ``host`` is an IP address or a plausible host name."""
    if not host:
        raise TargetError(f"target {target!r} has no host")
    if not _is_ip(host) and not _HOSTNAME.fullmatch(host):
        raise TargetError(f"target {target!r}: {host!r} is not a host name or IP address")


def parse_port(text: str, target: str) -> int:
    if not text.isdigit():
        raise TargetError(f"target {target!r}: port {text!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise TargetError(f"target {target!r}: port {port} is out of range 1-65535")
    return port


def _is_ip(host: str, version: int | None = None) -> bool:
    address = parse_ip(host)
    return address is not None and (version is None or address.version == version)


# What may follow the '%' of a link-local address: an interface name as Linux
# allows it (at most IFNAMSIZ - 1 = 15 characters, never '/', ':', '%' or white
# space), kept to the characters interface names are made of, or an interface
# index. The zone reaches socket calls, URLs and log lines, so anything else is
# refused rather than passed on.
_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def parse_ip(host: str) -> IPAddress | None:
    """``host`` as an IP address, an IPv6 zone kept (``fe80::1%eth0``); ``None`` if not one.

    Raises ``TargetError`` for an address whose zone is not an interface name or
    index, or an IPv4 address with a zone: such a host is a mistake, not a name.
    """
    text, percent, zone = host.partition("%")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if not percent:
        return address
    if address.version != 6:
        raise TargetError(f"{host!r}: only an IPv6 address takes a zone (%interface)")
    if not _ZONE.fullmatch(zone) or zone in (".", ".."):
        hint = f"; a port goes after brackets: [{text}%...]:port" if ":" in zone else ""
        raise TargetError(f"{host!r}: zone {zone!r} is not an interface name or index{hint}")
    if not needs_zone(address):
        # ::1%lo or 2001:db8::1%eth0: one address whatever the link, so the zone is
        # dropped, as Go and blackbox_exporter do. Kept, it would break the connect:
        # glibc's getaddrinfo takes an interface name only on a link-local address.
        return address
    return ipaddress.IPv6Address(f"{address}%{zone}")


def needs_zone(address: IPAddress) -> bool:
    """Whether ``address`` means something on one link only: fe80::/10, and multicast
    of interface-local or link-local scope (ff01::/16, ff02::/16, with any flags:
    ff12::, ff32::...).

    Such an address is reached through the interface a zone names, and the
    kernel marks its replies with that interface; any other address is one
    host's, whichever link leads there.
    """
    if address.version != 6:
        return False
    # Multicast: ff, then 4 flag bits, then 4 scope bits (RFC 4291 §2.7).
    return address.is_link_local or (int(address) >> 112) & 0xFF0F in (0xFF01, 0xFF02)


def unzoned(address: IPAddress) -> IPAddress:
    """``address`` without its zone: what allow-lists and comparisons see."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(int(address))
    return address


def interface_index(address: IPAddress) -> int:
    """The index of the interface ``address``'s zone names; 0 for an address that needs none.

    Raises ``ResolveError`` when this host has no such interface, or when a
    link-local address has no zone: the kernel would refuse the connect
    (EINVAL) with no word of why.
    """
    zone = address.scope_id if isinstance(address, ipaddress.IPv6Address) else None
    if not zone:
        if address.version == 6 and address.is_link_local:
            raise ResolveError(
                f"{address} is link-local, reachable only through one interface: "
                f"write it with the interface's name, as in {address}%eth0"
            )
        return 0
    if not needs_zone(address):
        return 0  # ::1%lo: the same host on any link, the zone is no part of it
    try:
        if zone.isdigit():
            socket.if_indextoname(int(zone))
            return int(zone)
        return socket.if_nametoindex(zone)
    except (OSError, OverflowError):
        raise ResolveError(
            f"{address}: this host has no network interface {zone!r} (the zone after '%')"
        ) from None


Answer = TypeVar("Answer")


def reachable(addresses: Sequence[IPAddress]) -> list[IPAddress]:
    """``addresses`` a name resolved to, less those that cannot be connected to
    (see :func:`reachable_answers`)."""
    return reachable_answers(addresses, lambda address: address)


def reachable_answers(
    answers: Sequence[Answer], address_of: Callable[[Answer], IPAddress]
) -> list[Answer]:
    """``answers`` a name resolved to (a resolver's records, each read with
    ``address_of``), less those that cannot be connected to.

    The system resolver gives a name's link-local address no zone, and a
    connect to it fails as "invalid argument": such an address is left out.
    Raises ``ResolveError`` saying a zone is needed when none is left.
    """
    left = [answer for answer in answers if not _lacks_zone(address_of(answer))]
    if answers and not left:
        interface_index(address_of(answers[0]))  # raises, saying a zone is needed
    return left


def _lacks_zone(address: IPAddress) -> bool:
    return (
        isinstance(address, ipaddress.IPv6Address)
        and address.is_link_local
        and not address.scope_id
    )


def pick_address(
    host: str, addresses: Sequence[IPAddress], preferred: IpProtocol, fallback: bool
) -> IPAddress:
    """The first address of the preferred family, else (if allowed) of the other one."""
    want = 4 if preferred == "ip4" else 6
    for address in addresses:
        if address.version == want:
            return address
    other = [a for a in addresses if a.version != want]
    if other and fallback:
        return other[0]
    if other:
        return _no_family(host, want)
    raise ResolveError(f"{host!r} resolved to no address")


def _no_family(host: str, version: int) -> IPAddress:
    raise ResolveError(f"{host!r} has no IPv{version} address, and ip_protocol_fallback is off")


@dataclass(frozen=True, slots=True)
class Resolved:
    address: IPAddress
    lookup_seconds: float


class Resolver(Protocol):
    """Turns a host name into the one address a probe will use."""

    async def resolve(
        self, host: str, preferred: IpProtocol, fallback: bool, deadline: float
    ) -> Resolved:
        """``deadline`` is in ``loop.time()``; raises ``ResolveError``.

        An IP address is used as given, whatever the preferred family: whoever
        wrote it asked for that address.
        """
        ...


class SystemResolver:
    """The system's resolver (``getaddrinfo``, so /etc/hosts counts), run off the loop."""

    async def resolve(
        self, host: str, preferred: IpProtocol, fallback: bool, deadline: float
    ) -> Resolved:
        address = parse_ip(host)
        if address is not None:
            # The zone stays: fe80::1 is reached through the interface it names.
            interface_index(address)
            return Resolved(address, 0.0)
        started = time.perf_counter()
        addresses = reachable(await lookup(host, deadline))
        chosen = pick_address(host, addresses, preferred, fallback)
        return Resolved(chosen, time.perf_counter() - started)


async def lookup(host: str, deadline: float | None = None) -> list[IPAddress]:
    """Every address ``host`` has, in the resolver's order; raises ``ResolveError``.

    ``deadline`` (``loop.time()``) bounds the wait; ``None`` leaves that to the caller.
    """
    try:
        # The lookup runs in a thread that cannot be stopped; the probe stops waiting.
        async with asyncio.timeout_at(deadline):
            infos = await shared_resolver().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise ResolveError(f"looking up {host!r} did not finish by the deadline") from None
    except socket.gaierror as exc:
        raise ResolveError(f"cannot resolve {host!r}: {exc.strerror}") from None
    except UnicodeError:
        raise ResolveError(f"cannot resolve {host!r}: not a valid DNS name") from None
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
            if address not in addresses:
                addresses.append(address)
    return addresses


def tls_context(verify: bool, ca_file: str | None = None) -> ssl.SSLContext:
    """A client context; without ``verify`` the peer's certificate is still received.

    ``ca_file`` (PEM) is trusted on top of the system's certificate authorities.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ProbeError(f"cannot load tls_ca_file {ca_file!r}: {_why(exc)}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def peer_chain_der(ssl_object: Any) -> tuple[bytes, ...]:
    """The certificates the peer presented, leaf first, DER-encoded.

    Python 3.13 has ``get_unverified_chain``; 3.10 to 3.12 have it on the
    private ``_sslobj`` only. Where neither exists, the leaf alone is returned.
    Works with verification off too, since the binary form needs no validation.
    """
    if ssl_object is None:
        return ()
    method = getattr(ssl_object, "get_unverified_chain", None)
    if method is None:
        method = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    chain = method() if method is not None else None
    if chain:
        der = getattr(ssl, "_ssl").ENCODING_DER  # noqa: B009 - private module, untyped
        return tuple(c if isinstance(c, bytes) else c.public_bytes(der) for c in chain)
    leaf = ssl_object.getpeercert(binary_form=True)
    return (leaf,) if leaf else ()


@dataclass(frozen=True, slots=True)
class Dialed:
    """One TCP connection made, and closed again."""

    connect_seconds: float
    tls_handshake_seconds: float | None = None
    tls_version: str | None = None
    peer_certificates: tuple[bytes, ...] = ()


class Dialer(Protocol):
    """Opens one TCP connection, with an optional TLS handshake, and closes it."""

    async def dial(
        self, address: IPAddress, port: int, tls: ssl.SSLContext | None, server_name: str | None
    ) -> Dialed:
        """Raises ``AttemptFailed``; the caller bounds the time it may take."""
        ...


class _Quiet(asyncio.Protocol):
    """Ignores whatever the peer sends: only the connection itself is measured."""


class SocketDialer:
    async def dial(
        self, address: IPAddress, port: int, tls: ssl.SSLContext | None, server_name: str | None
    ) -> Dialed:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            transport, protocol = await loop.create_connection(_Quiet, str(address), port)
        except ConnectionRefusedError:
            raise AttemptFailed(f"connection to {_join(address, port)} refused") from None
        except OSError as exc:
            raise AttemptFailed(f"cannot connect to {_join(address, port)}: {_why(exc)}") from None
        connected = time.perf_counter()
        if tls is None:
            transport.close()
            return Dialed(connected - started)
        try:
            secure = await loop.start_tls(transport, protocol, tls, server_hostname=server_name)
        except ssl.SSLCertVerificationError as exc:
            transport.abort()
            raise AttemptFailed(f"TLS certificate not trusted: {exc.verify_message}") from None
        except (ssl.SSLError, OSError) as exc:
            transport.abort()
            raise AttemptFailed(f"TLS handshake failed: {_why(exc)}") from None
        except BaseException:
            transport.abort()
            raise
        if secure is None:  # start_tls returns None only if the loop closed meanwhile
            transport.abort()
            raise AttemptFailed("TLS handshake did not complete")
        handshake = time.perf_counter() - connected
        ssl_object = secure.get_extra_info("ssl_object")
        chain = peer_chain_der(ssl_object)
        version = ssl_object.version() if ssl_object is not None else None
        # No close_notify exchange: the probe is done and must not wait on the peer.
        secure.abort()
        return Dialed(connected - started, handshake, version, chain)


def _join(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.errno:
        # asyncio words a refused connect as "Connect call failed (...)"; the errno says it.
        return os.strerror(exc.errno).lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


# Enough for a health page or an API status document; a probe is not a download.
MAX_BODY_BYTES = 1 << 20


class AddressCheck(Protocol):
    """Whether a connection made for ``host`` to ``address`` may carry the request."""

    def __call__(self, host: str, address: IPAddress) -> None:
        """Raise a ``ProbeError`` saying why not; return if it may."""
        ...


@dataclass(frozen=True, slots=True)
class HttpRequest:
    url: URL
    method: str
    headers: Mapping[str, str]
    follow_redirects: bool
    # Built once per probe, not per request: loading the trust store takes
    # milliseconds that would otherwise count as round trip.
    tls: ssl.SSLContext
    preferred_ip_protocol: IpProtocol
    ip_protocol_fallback: bool
    read_body: bool = True
    # Asked about every connection (redirects' too) before the request is sent.
    check_address: AddressCheck | None = None


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    version: str
    # The Content-Length header, else the bytes of body read (None for HEAD without one).
    content_length: int | None
    body: bytes
    redirects: int
    # The connection's own, for the final response: address family and certificates.
    ip_version: int | None
    peer_certificates: tuple[bytes, ...]
    # First lookup of the request (the target's own host); 0 for an IP address.
    dns_lookup_seconds: float


class HttpFetcher(Protocol):
    """Makes one HTTP request on a fresh connection and reads the response."""

    async def fetch(self, request: HttpRequest) -> HttpReply:
        """Raises ``AttemptFailed``; the caller bounds the time it may take."""
        ...


def _zoneless_host(host_port: str) -> str:
    """``[fe80::1%eth0]:8080`` as ``[fe80::1]:8080``: the Host header and SNI carry no zone."""
    if not host_port.startswith("["):
        return host_port
    inside, _, rest = host_port[1:].partition("]")
    return f"[{inside.partition('%')[0]}]{rest}"


def url_address(url: URL) -> IPAddress | None:
    """The IP address ``url``'s host is, zone kept where one is needed; ``None`` for a name.

    A zone in a URL is written ``[fe80::1%25eth0]`` (RFC 6874); yarl's ``host``
    has that ``%25`` read as ``%`` already, so it is read here and nowhere
    else: ``%2525eth0`` names an interface ``25eth0``, never ``eth0``.
    Raises ``TargetError`` for a zone that is not an interface name or index.
    """
    raw = url.raw_host
    if raw is None or ":" not in raw:
        return None  # a name, or IPv4: no zone to read
    return parse_ip(url.host or "")


class ZonedHostRequest(ClientRequest):
    """aiohttp's request, for a URL whose host is a zoned link-local address.

    aiohttp connects to the URL's raw host, so that becomes the address with
    its zone read (``url_address``): the zone of a link-local address kept,
    any other address's dropped. The zone means something on this host only
    (RFC 6874: a client must not send it), so the default Host header leaves it
    out, and so does the name TLS checks the certificate against (a
    certificate names ``fe80::1``, never an interface). Only a host that is an
    IPv6 address is touched: a name with ``%`` in it is no zone. Every hop of a
    redirect makes a request of its own, so each is judged by its own URL.
    """

    def __init__(self, method: str, url: URL, *args: Any, **kwargs: Any) -> None:
        zoned = "%" in (url.raw_host or "")
        address = url_address(url) if zoned else None
        if address is not None:
            url = url.with_host(str(address))
        super().__init__(method, url, *args, **kwargs)
        if not isinstance(address, ipaddress.IPv6Address) or not address.scope_id:
            return
        if self.server_hostname is None:
            self.server_hostname = str(unzoned(address))
        default = self.url.host_port_subcomponent
        if default is not None and self.headers.get(hdrs.HOST) == default:
            self.headers[hdrs.HOST] = _zoneless_host(default)


class _PreferringResolver(AbstractResolver):
    """aiohttp's resolver hook: the module's address family first, and timing."""

    def __init__(self, preferred: IpProtocol, fallback: bool) -> None:
        self._preferred = preferred
        self._fallback = fallback
        self.lookups: list[float] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        started = time.perf_counter()
        try:
            # A name's link-local address comes without a zone: left out, as
            # SystemResolver leaves it, and said to need one if it is all there is.
            addresses = reachable(await lookup(host))
            chosen = pick_address(host, addresses, self._preferred, self._fallback)
        except ResolveError as exc:
            # aiohttp reports an OSError from its resolver as a DNS failure.
            raise OSError(str(exc)) from None
        finally:
            self.lookups.append(time.perf_counter() - started)
        # Only the chosen family is offered, so the connection uses it.
        same = [a for a in addresses if a.version == chosen.version]
        return [
            ResolveResult(
                hostname=host,
                host=str(a),
                port=port,
                family=socket.AF_INET if a.version == 4 else socket.AF_INET6,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in same
        ]

    async def close(self) -> None:
        return None


class LinkLocalCheckingResolver(AbstractResolver):
    """aiohttp's own resolver, its answers checked as ``SystemResolver`` checks its own.

    A name whose address is link-local comes back without a zone, and a
    connect to it fails as "invalid argument"; such an address is left out,
    and a name with no other says that a zone is needed, as a literal does.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        try:
            return reachable_answers(results, lambda result: ipaddress.ip_address(result["host"]))
        except ResolveError as exc:
            # aiohttp reports an OSError from its resolver as a DNS failure.
            raise OSError(f"{host!r} resolved to {exc}") from None

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class _Connected:
    ip_version: int | None
    peer_certificates: tuple[bytes, ...]


class _RecordingConnector(aiohttp.TCPConnector):
    """Notes each new connection's peer and certificates as it is made.

    aiohttp hands the connection back (and, with ``force_close``, closes it)
    as soon as a small response has been read whole, before the caller sees
    the response; so the TLS details are taken here, while they are certain
    to be there. Overrides a private method: the http tests guard it.
    """

    def __init__(self, check_address: AddressCheck | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connections: list[_Connected] = []
        self._check_address = check_address

    async def _create_connection(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> ResponseHandler:
        protocol = await super()._create_connection(req, traces, timeout)
        transport = protocol.transport
        peer = transport.get_extra_info("peername") if transport else None
        if self._check_address is not None:
            # The peer of the socket itself: the address the request would go to,
            # whatever a resolver said before (DNS rebinding) or a redirect named.
            try:
                if not peer:
                    raise AttemptFailed("the connection has no peer address to check")
                address = ipaddress.ip_address(str(peer[0]).partition("%")[0])
                self._check_address(req.url.host or "", address)
            except BaseException:
                protocol.close()
                raise
        version = (6 if ":" in str(peer[0]) else 4) if peer else None
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        self.connections.append(_Connected(version, peer_chain_der(ssl_object)))
        return protocol


class AiohttpFetcher:
    """One ``ClientSession`` per request, so each one connects and resolves afresh."""

    user_agent = f"Scout-Probe/{__version__}"

    async def fetch(self, request: HttpRequest) -> HttpReply:
        resolver = _PreferringResolver(request.preferred_ip_protocol, request.ip_protocol_fallback)
        connector = _RecordingConnector(
            check_address=request.check_address,
            resolver=resolver,
            use_dns_cache=False,
            force_close=True,
            ssl=request.tls,
        )
        headers = {"User-Agent": self.user_agent, **request.headers}
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector, headers=headers, request_class=ZonedHostRequest
                ) as session,
                session.request(
                    request.method, request.url, allow_redirects=request.follow_redirects
                ) as response,
            ):
                return await _read_reply(response, request, resolver, connector)
        except aiohttp.ClientConnectorCertificateError as exc:
            reason = getattr(exc.certificate_error, "verify_message", exc.certificate_error)
            raise AttemptFailed(f"TLS certificate not trusted: {reason}") from None
        except aiohttp.ClientConnectorDNSError as exc:
            raise AttemptFailed(str(exc.os_error)) from None
        except aiohttp.ClientConnectorError as exc:
            where = f"{exc.host}:{exc.port}"
            raise AttemptFailed(f"cannot connect to {where}: {_why(exc.os_error)}") from None
        except aiohttp.TooManyRedirects as exc:
            raise AttemptFailed(f"more than {len(exc.history)} redirects") from None
        except aiohttp.InvalidURL as exc:
            raise AttemptFailed(f"invalid URL {str(exc.url)!r}") from None
        except aiohttp.ClientError as exc:
            raise AttemptFailed(f"HTTP request failed: {exc}") from None


async def _read_reply(
    response: aiohttp.ClientResponse,
    request: HttpRequest,
    resolver: _PreferringResolver,
    connector: _RecordingConnector,
) -> HttpReply:
    # Every hop connects anew (force_close), so the last connection made is the final one's.
    final = connector.connections[-1] if connector.connections else _Connected(None, ())
    body = b""
    if request.read_body and request.method != "HEAD":
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_BODY_BYTES:
                break
        body = b"".join(chunks)[:MAX_BODY_BYTES]
    version = response.version
    length = response.content_length
    if length is None and request.method != "HEAD":
        length = len(body)
    return HttpReply(
        status=response.status,
        version=f"{version.major}.{version.minor}" if version else "1.1",
        content_length=length,
        body=body,
        redirects=len(response.history),
        ip_version=final.ip_version,
        peer_certificates=final.peer_certificates,
        dns_lookup_seconds=resolver.lookups[0] if resolver.lookups else 0.0,
    )
