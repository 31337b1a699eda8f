"""What a multi-target kind is: the seams between the generic handler and each kind.

A kind (``/snmp``, ``/probe``; ``/firewall`` and ``/winrm`` next) is one row of
the table in ``exporter.targets.registry``. The row says only what differs:
its module and auth types, its built-in modules and auths, how a target is
written, the names of its per-target self-metrics, how its families are
rendered, and how to build its ``TargetScraper``, the object that holds what
the kind keeps between scrapes (sessions, caches) and does one scrape. The
handler in ``exporter.targets.handler`` does the rest, the same for every kind.

Nothing here imports the config: the config's models import the kinds' module
types, and the kinds import this.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web
from yarl import URL

from exporter.clients.probe_net import reachable
from exporter.common.models import SECRET_MASK
from exporter.lifecycle import Lifecycle

log = logging.getLogger(__name__)

T = TypeVar("T")  # a target, as the kind parses it
M = TypeVar("M")  # the kind's module type (a union for a kind with several)
A = TypeVar("A")  # the kind's auth type
F = TypeVar("F")  # a metric family, in the kind's exposition

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def preferred_address(addresses: Sequence[IPAddress]) -> IPAddress:
    """The address a kind pins its target to among those the allow-lists checked: IPv4
    first, as the clients themselves would pick, so pinning changes no route.

    A link-local address the resolver gave without a zone is never picked (a
    connect to it fails); raises ``ResolveError`` saying a zone is needed when
    no other is left.
    """
    return min(reachable(addresses), key=lambda address: address.version != 4)


# A scrape that has not finished this long after its deadline is stopped and reported
# failed. Kinds end their own work earlier (``/snmp``'s modules give up a little
# before the deadline), so this is for a scrape that could not: an event loop held by
# CPU-bound work or a long garbage collection.
DEADLINE_GRACE_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class ScrapeJob(Generic[T, M, A]):
    """One scrape of one target, as the handler resolved it from the request.

    ``modules`` are ``(name, module)`` pairs in the order asked for; ``auth`` is
    ``None`` for a kind that takes none. ``deadline`` is absolute, in ``loop.time()``.
    """

    target: T
    modules: tuple[tuple[str, M], ...]
    auth_name: str | None
    auth: A | None
    deadline: float


class TargetScraper(Lifecycle, Protocol[T, M, A, F]):
    """A kind's state between scrapes, and one scrape of one target.

    Built from the table when the app starts and after every config reload
    (sessions and caches were made from the old modules and auths); started
    then, and closed before it is replaced or the app stops.
    """

    async def scrape(self, job: ScrapeJob[T, M, A], families: list[F]) -> tuple[bool, str | None]:
        """Scrape ``job.target``, appending to ``families``; return success and any error.

        The error (or a note on a partial success) is logged by the handler.
        Families appended before the deadline cut the scrape short are kept, and
        so are those appended while the cancellation unwinds: a kind whose
        success is per module (``/snmp``) appends its status families then, so
        that a scrape the handler had to stop still says what failed.
        """
        ...


class Exposition(Protocol[F]):
    """How a kind's families are built and rendered."""

    def gauge(self, name: str, documentation: str, value: float) -> F:
        """One unlabelled gauge sample, as a family."""
        ...

    def info(self, name: str, documentation: str, labels: Sequence[Mapping[str, str]]) -> F:
        """A gauge family with one sample of 1 per label set: info series, as a family."""
        ...

    def render(self, request: web.Request, families: Sequence[F]) -> web.Response:
        """The answer to ``request``, in the format the kind speaks."""
        ...


@dataclass(frozen=True, slots=True)
class SelfMetric:
    """The name and help text of one of a kind's own gauges."""

    name: str
    documentation: str


@dataclass(frozen=True, slots=True)
class StatusMetrics:
    """A kind's per-target self-metrics: how long the scrape took, and whether it succeeded.

    ``success`` is ``None`` for a kind that reports success per module instead
    (``/snmp``, as snmp_exporter does).
    """

    duration: SelfMetric
    success: SelfMetric | None = None


@dataclass(frozen=True, slots=True)
class Outcome(Generic[F]):
    """A finished scrape: success, the self-metrics followed by the kind's families, the error."""

    success: bool
    families: list[F]
    error: str | None


@dataclass(frozen=True, slots=True)
class TargetKind(Generic[T, M, A, F]):
    """One row of the table of kinds; ``/{name}`` serves it.

    ``module_types`` and ``auth_types`` pick this kind's entries out of the
    config's ``modules:`` and ``auths:`` (no auth types: the kind takes no
    ``auth`` parameter). Without a ``default_module`` the ``module`` parameter
    is required; ``max_modules`` above 1 lets one scrape read several, given
    comma-separated or repeated. ``parse_target`` raises ``BadRequestError``
    for a target that cannot be meant (a 400); one that merely does not answer
    is the scraper's business (a 200 that says so).

    ``target_host`` names the host a target (read with a module) points at, for
    the allow-lists (by default the target as written); it raises
    ``BadRequestError`` if it cannot tell.
    ``pin_target`` binds a target to one of the addresses the allow-lists
    checked, for a kind whose scraper would otherwise look the name up again
    unchecked; a kind without one checks the address where it connects.
    ``unresolved`` is the scrape of a target whose name did not resolve when
    the allow-lists looked it up: it appends the kind's failure families and
    returns success and the error, as a scrape that could not resolve it would.
    """

    name: str
    noun: str  # what one scrape is called in messages: "probe", "SNMP scrape"
    description: str  # for the landing page
    example: str  # a query string for the landing page
    module_types: tuple[type[M], ...]
    default_modules: Callable[[], Mapping[str, M]]
    parse_target: Callable[[str], T]
    status: StatusMetrics
    exposition: Exposition[F]
    build: Callable[[], TargetScraper[T, M, A, F]]
    default_module: str | None = None
    max_modules: int = 1
    auth_types: tuple[type[A], ...] = ()
    builtin_auths: Mapping[str, A] | None = None
    default_auth: str | None = None
    max_target_length: int = 2048
    target_host: Callable[[T, M], str] = lambda target, _module: str(target)
    pin_target: Callable[[T, Sequence[IPAddress]], T] | None = None
    unresolved: Callable[[ScrapeJob[T, M, A], str, list[F]], tuple[bool, str | None]] = (
        lambda _job, error, _families: (False, error)
    )
    # Used instead of ``build`` by a kind whose scraper reads a command-line setting
    # (``exporter.live.Settings``; kept ``Any`` here, which imports nothing of it).
    build_with_settings: Callable[[Any], TargetScraper[T, M, A, F]] | None = None


async def measure(
    scrape: Awaitable[tuple[bool, str | None]],
    families: list[F],
    *,
    deadline: float,
    status: StatusMetrics,
    exposition: Exposition[F],
    noun: str,
    subject: str,
) -> Outcome[F]:
    """Await ``scrape`` (which fills ``families``) by ``deadline``, timed; never raises.

    Cut short a little after the deadline, or failed with an unexpected error,
    the scrape is reported failed with what it had gathered. ``subject`` names
    the target in the log (with any password masked).
    """
    started = time.perf_counter()
    success, error = False, None
    try:
        async with asyncio.timeout_at(deadline + DEADLINE_GRACE_SECONDS):
            success, error = await scrape
    except TimeoutError:
        error = f"the {noun} did not finish by the deadline"
    except Exception as exc:  # the scrape boundary: one bad target never fails others
        log.exception("%s of %s failed", noun, subject)
        error = f"internal error: {type(exc).__name__}: {exc}"
    head: list[F] = []
    if status.success is not None:
        success_metric = status.success
        head.append(
            exposition.gauge(
                success_metric.name, success_metric.documentation, 1.0 if success else 0.0
            )
        )
    head.append(
        exposition.gauge(
            status.duration.name, status.duration.documentation, time.perf_counter() - started
        )
    )
    return Outcome(success, head + families, error)


def mask_password(text: str, target: str) -> str:
    """``text`` without the password of a target URL (``http://user:pass@host/``)."""
    try:
        password = URL(target).password if "://" in target else None
    except ValueError:  # not a URL after all: then it holds no password either
        return text
    return text.replace(password, SECRET_MASK) if password else text
