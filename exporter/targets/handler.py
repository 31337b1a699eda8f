"""``GET /{kind}?target=&module=&auth=``: one handler for every multi-target kind.

For every kind alike: the parameters are read (each of ``target`` and ``auth``
at most once; ``module`` comma-separated or repeated where the kind takes
several) and a wrong one is a 400 that says what is wrong; the auth is looked
up by name and checked to be of a type the kind takes; the deadline is
Prometheus's ``X-Prometheus-Scrape-Timeout-Seconds`` minus the offset; the
kind's scraper runs under ``measure``, which adds the per-target success and
duration; the outcome's error is logged with any password in the target
masked; and the families are rendered in the kind's exposition. A target that
does not answer is a 200 that says so in its metrics, never an HTTP error, so
Prometheus keeps ``up`` for the exporter.

Where the modules or the auth carry ``allowed_targets``, the target must pass
every list before anything is sent (``exporter.targets.allowlist``): one that
does not is a 403 naming the list, counted and logged by ``TargetRefusals``;
a name that does not resolve is a failed scrape, as it would have been anyway.

A target given by name rather than address also gets, whatever became of the
scrape, ``scout_target_address_info{address}``: one series per address the
name resolves to, from the per-process cache of ``exporter.targets.addresses``
(filled with the allow-lists' own lookup where they made one), so that the
sidecar can take it and a target given by address as one host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from exporter.clients.probe_net import ResolveError, TargetError, parse_ip
from exporter.config import ExporterConfig
from exporter.errors import BadRequestError
from exporter.keys import LIVE_CONFIG, SETTINGS, TARGET_ADDRESSES, TARGET_REFUSALS
from exporter.scrape import scrape_deadline
from exporter.targets.addresses import (
    ADDRESS_HELP,
    ADDRESS_LABEL,
    ADDRESS_METRIC,
    AddressCache,
    is_name,
)
from exporter.targets.allowlist import AllowList, TargetRefusedError, admit
from exporter.targets.kind import (
    A,
    F,
    IPAddress,
    M,
    ScrapeJob,
    T,
    TargetKind,
    mask_password,
    measure,
)
from exporter.targets.refusals import TargetRefusals

log = logging.getLogger(__name__)

AnyKind = TargetKind[Any, Any, Any, Any]


def _single(request: web.Request, name: str, default: str) -> str:
    """A parameter given at most once; empty means the default, as snmp_exporter has it."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadRequestError(f"'{name}' parameter given {len(values)} times; give it once")
    return (values[0].strip() if values else "") or default


def kind_modules(kind: TargetKind[T, M, A, F], config: ExporterConfig) -> dict[str, M]:
    """The kind's built-in modules, then the config's of its types (replacing by name)."""
    configured = {
        name: module
        for name, module in config.modules.items()
        if isinstance(module, kind.module_types)
    }
    return {**kind.default_modules(), **configured}


def _modules(
    kind: TargetKind[T, M, A, F],
    request: web.Request,
    config: ExporterConfig,
    kinds: Sequence[AnyKind],
) -> tuple[tuple[str, M], ...]:
    names = [
        name.strip()
        for value in request.query.getall("module", [])
        for name in value.split(",")
        if name.strip()
    ]
    names = list(dict.fromkeys(names))
    known = kind_modules(kind, config)
    if not names:
        if kind.default_module is None:
            raise BadRequestError(f"'module' parameter must be one of: {', '.join(sorted(known))}")
        names = [kind.default_module]
    if len(names) > kind.max_modules:
        raise BadRequestError(f"too many modules: {len(names)} (at most {kind.max_modules})")
    unknown = [name for name in names if name not in known]
    for name in unknown:
        owner = next((k for k in kinds if k is not kind and name in kind_modules(k, config)), None)
        if owner is not None:
            raise BadRequestError(f"module {name!r} is for /{owner.name}, not /{kind.name}")
    if unknown:
        raise BadRequestError(
            f"unknown module {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
        )
    return tuple((name, known[name]) for name in names)


def _auth(
    kind: TargetKind[T, M, A, F], request: web.Request, config: ExporterConfig
) -> tuple[str, A] | None:
    """The auth named by the request (or the kind's default), or ``None`` if the kind takes none."""
    if not kind.auth_types:
        return None
    name = _single(request, "auth", kind.default_auth or "")
    if not name:
        raise BadRequestError("'auth' parameter must be specified")
    auths: Mapping[str, object] = {**(kind.builtin_auths or {}), **config.auths}
    auth = auths.get(name)
    if auth is None:
        raise BadRequestError(f"unknown auth {name!r}")
    if not isinstance(auth, kind.auth_types):
        found = getattr(auth, "type", type(auth).__name__)
        raise BadRequestError(f"auth {name!r} is of type {found}, which /{kind.name} does not take")
    return name, auth


async def scrape_target(
    kind: TargetKind[T, M, A, F], kinds: Sequence[AnyKind], request: web.Request
) -> web.Response:
    live = request.app[LIVE_CONFIG]
    config = live.config
    target_text = _single(request, "target", "")
    if not target_text:
        raise BadRequestError("'target' parameter must be specified")
    if len(target_text) > kind.max_target_length:
        raise BadRequestError(f"target longer than {kind.max_target_length} characters")
    target = kind.parse_target(target_text)
    modules = _modules(kind, request, config, kinds)
    named = _auth(kind, request, config)
    auth_name, auth = named if named is not None else (None, None)
    timeout = scrape_deadline(
        request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
        request.app[SETTINGS].timeout_offset_seconds,
    )
    deadline = asyncio.get_running_loop().time() + timeout
    shown = mask_password(target_text, target_text)
    unresolved: str | None = None
    # Read before the allow-lists may pin the target to an address.
    name = _target_name(kind, target, modules[0][1])
    checked: tuple[IPAddress, ...] = ()
    lists = _allow_lists(modules, auth_name, auth)
    if lists:
        try:
            target, checked = await _admitted(kind, target, modules, lists, deadline)
        except TargetRefusedError as refusal:
            request.app[TARGET_REFUSALS].record(kind.name, refusal)
            raise
        except BadRequestError as exc:
            raise BadRequestError(mask_password(str(exc), target_text)) from None
        except ResolveError as exc:
            # What the scrape would have found itself: a failed scrape, not an HTTP error.
            unresolved = str(exc)
    job: ScrapeJob[T, M, A] = ScrapeJob(target, modules, auth_name, auth, deadline)
    families: list[F] = []
    scrape = (
        _failed(kind, job, unresolved, families)
        if unresolved is not None
        else live.target_scraper(kind).scrape(job, families)
    )
    addresses = request.app[TARGET_ADDRESSES]
    rows: tuple[str, ...] | None = None
    looking_up: asyncio.Future[tuple[str, ...]] | None = None
    if name is not None:
        # One dict lookup when the name is known; a first lookup runs beside the scrape.
        rows = addresses.put(name, checked) if checked else addresses.cached(name)
        if rows is None:
            looking_up = asyncio.ensure_future(addresses.resolve(name, deadline))
    try:
        outcome = await measure(
            scrape,
            families,
            deadline=job.deadline,
            status=kind.status,
            exposition=kind.exposition,
            noun=kind.noun,
            subject=repr(shown),
        )
        if looking_up is not None:
            rows = await looking_up
    finally:
        if looking_up is not None:
            looking_up.cancel()  # the request was given up: the lookup itself goes on
    if rows:
        outcome.families.append(
            kind.exposition.info(
                ADDRESS_METRIC, ADDRESS_HELP, [{ADDRESS_LABEL: row} for row in rows]
            )
        )
    if outcome.error:
        log.log(
            logging.INFO if outcome.success else logging.WARNING,
            "%s: %s",
            kind.noun,
            mask_password(outcome.error, target_text),
            # "module" is taken by LogRecord; "probe_module" is what /probe always logged.
            extra={"target": shown, f"{kind.name}_module": ",".join(name for name, _ in modules)},
        )
    return kind.exposition.render(request, outcome.families)


def _allow_lists(
    modules: Sequence[tuple[str, object]], auth_name: str | None, auth: object
) -> list[tuple[str, AllowList]]:
    """The allow-lists a scrape must pass, named by where they are in the config.

    A list of ``any`` is left out: it admits everything without a lookup.
    """
    carriers = [(f"modules.{name}", module) for name, module in modules]
    if auth is not None:
        carriers.append((f"auths.{auth_name}", auth))
    lists = [(owner, getattr(carrier, "allowed_targets", None)) for owner, carrier in carriers]
    return [(o, a) for o, a in lists if isinstance(a, AllowList) and not a.everything]


def _target_name(kind: TargetKind[T, M, A, F], target: T, module: M) -> str | None:
    """The host name ``target`` is given by; ``None`` for an address, or a host not told."""
    try:
        host = kind.target_host(target, module)
    except BadRequestError:  # a bad target is the scrape's failure to report, not this
        return None
    # DNS names are case-blind and may end in the root's dot: one entry for each host.
    return host.lower().rstrip(".") if is_name(host) else None


async def _admitted(
    kind: TargetKind[T, M, A, F],
    target: T,
    modules: Sequence[tuple[str, M]],
    lists: Sequence[tuple[str, AllowList]],
    deadline: float,
) -> tuple[T, tuple[IPAddress, ...]]:
    """``target``, once every list admits it, pinned to the checked address if the kind
    pins; and the addresses checked (none where every list admitted the name itself)."""
    host = kind.target_host(target, modules[0][1])
    admission = await admit(host, lists, deadline)
    # An address as written is not pinned: no DNS answer can change it, and pinned to
    # its checked form it would lose its zone (fe80::1%eth0 is not reached as fe80::1).
    # The C resolver's other spellings of an address (0x7f.1) are pinned all the same.
    if kind.pin_target is not None and admission.addresses and not _is_address(host):
        return kind.pin_target(target, admission.addresses), admission.addresses
    return target, admission.addresses


def _is_address(host: str) -> bool:
    try:
        return parse_ip(host.removeprefix("[").removesuffix("]")) is not None
    except TargetError:  # admit() has refused such a zone already
        return False


async def _failed(
    kind: TargetKind[T, M, A, F], job: ScrapeJob[T, M, A], error: str, families: list[F]
) -> tuple[bool, str | None]:
    return kind.unresolved(job, error, families)


def _handler(
    kind: TargetKind[T, M, A, F], kinds: Sequence[AnyKind]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return await scrape_target(kind, kinds, request)

    return handle


async def _close_addresses(app: web.Application) -> None:
    await app[TARGET_ADDRESSES].close()


def setup_targets(app: web.Application, kinds: Sequence[AnyKind]) -> None:
    """A ``GET /{name}`` route for every kind in the table, the count of refused targets,
    and the cache of the addresses targets' names resolve to."""
    app[TARGET_REFUSALS] = TargetRefusals()
    app[TARGET_ADDRESSES] = AddressCache()
    app.on_cleanup.append(_close_addresses)
    for kind in kinds:
        app.router.add_get(f"/{kind.name}", _handler(kind, kinds))
