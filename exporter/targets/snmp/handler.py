"""``GET /snmp?target=&module=&auth=``: parameter-compatible with snmp_exporter.

``module`` defaults to ``if_mib`` and may list several, comma-separated; ``auth``
defaults to ``public_v2`` (SNMP v2c, community ``public``), built in like the
modules, so no config file is needed. A bad parameter is a 400 that says what is
wrong; a device that does not answer is a 200 whose
``scout_snmp_module_success`` is 0, so Prometheus keeps ``up`` for the exporter.

Self-metrics per scrape::

    scout_snmp_scrape_duration_seconds 0.21
    scout_snmp_pdus_sent 31
    scout_snmp_retries 0
    scout_snmp_module_success{module="if_mib"} 1
    scout_snmp_module_duration_seconds{module="if_mib"} 0.2
    scout_snmp_max_repetitions{module="if_mib"} 25
    scout_snmp_cache_used{module="if_mib"} 1
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping
from typing import Any

from aiohttp import web

from exporter.clients.snmp import Credentials
from exporter.config import SnmpAuth
from exporter.errors import BadRequestError
from exporter.keys import LIVE_CONFIG, SETTINGS, SNMP_SCRAPER
from exporter.scrape import scrape_deadline
from exporter.targets.snmp.exposition import Family, Labels, render_text
from exporter.targets.snmp.modules import SnmpModule, builtin_modules
from exporter.targets.snmp.scraper import ModuleResult, SnmpScraper, Target

log = logging.getLogger(__name__)

DEFAULT_MODULE = "if_mib"
DEFAULT_AUTH = "public_v2"
BUILTIN_AUTHS: Mapping[str, SnmpAuth] = {
    DEFAULT_AUTH: SnmpAuth.model_validate({"type": "snmp", "version": 2, "community": "public"}),
}
MAX_MODULES_PER_SCRAPE = 20


# A host name: dot-separated labels of letters, digits, '-' and '_' (not at the ends).
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
MAX_TARGET_LENGTH = 260


def parse_target(text: str) -> Target:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address; ``udp://`` optional."""
    raw = text.strip()
    if len(raw) > MAX_TARGET_LENGTH:
        raise BadRequestError(f"target longer than {MAX_TARGET_LENGTH} characters")
    if "://" in raw:
        scheme, _, raw = raw.partition("://")
        if scheme.lower() != "udp":
            raise BadRequestError(f"unsupported transport {scheme!r} in target: SNMP runs over udp")
    host, port = raw, "161"
    if raw.startswith("["):
        host, closed, rest = raw[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise BadRequestError(f"invalid target {text!r}: expected [ipv6]:port")
        if rest:
            port = rest[1:]
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise BadRequestError(f"invalid port in target {text!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if ":" in host:
            raise BadRequestError(f"invalid target {text!r}: not an IPv6 address") from None
        if not _HOST_NAME.fullmatch(host):
            raise BadRequestError(f"invalid target {text!r}: expected host or host:port") from None
        return Target(host, int(port))
    return Target(str(address), int(port))


def _modules(request: web.Request) -> dict[str, SnmpModule]:
    config = request.app[LIVE_CONFIG].config
    configured = {k: m for k, m in config.modules.items() if isinstance(m, SnmpModule)}
    return {**builtin_modules(), **configured}


def _auths(request: web.Request) -> dict[str, object]:
    return {**BUILTIN_AUTHS, **request.app[LIVE_CONFIG].config.auths}


def _single(request: web.Request, name: str, default: str) -> str:
    """A parameter given at most once; empty means the default, as snmp_exporter has it."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadRequestError(f"'{name}' parameter given {len(values)} times; give it once")
    return (values[0].strip() if values else "") or default


def resolve(request: web.Request) -> tuple[Target, list[tuple[str, SnmpModule]], str, SnmpAuth]:
    target_text = _single(request, "target", "")
    if not target_text:
        raise BadRequestError("'target' parameter must be specified")
    target = parse_target(target_text)
    # Like snmp_exporter: module may repeat (params: {module: [a, b]}) and list several.
    names = [
        name.strip()
        for value in request.query.getall("module", [])
        for name in value.split(",")
        if name.strip()
    ] or [DEFAULT_MODULE]
    names = list(dict.fromkeys(names))
    if len(names) > MAX_MODULES_PER_SCRAPE:
        raise BadRequestError(f"too many modules: {len(names)} (at most {MAX_MODULES_PER_SCRAPE})")
    known = _modules(request)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadRequestError(
            f"unknown module {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
        )
    auth_name = _single(request, "auth", DEFAULT_AUTH)
    auth = _auths(request).get(auth_name)
    if auth is None:
        raise BadRequestError(f"unknown auth {auth_name!r}")
    if not isinstance(auth, SnmpAuth):
        raise BadRequestError(f"auth {auth_name!r} is not an SNMP auth")
    return target, [(n, known[n]) for n in names], auth_name, auth


async def snmp(request: web.Request) -> web.Response:
    started = time.perf_counter()
    target, modules, auth_name, auth = resolve(request)
    timeout = scrape_deadline(
        request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
        request.app[SETTINGS].timeout_offset_seconds,
    )
    deadline = asyncio.get_running_loop().time() + timeout
    scraper = request.app[SNMP_SCRAPER]
    credentials = Credentials.from_auth(auth)
    results = await asyncio.gather(
        *(
            _bounded(
                scraper.scrape_module(
                    scraper.session(target, auth_name, credentials, module),
                    (target, auth_name, name),
                    name,
                    module,
                    deadline,
                ),
                name,
                deadline,
            )
            for name, module in modules
        )
    )
    for result in results:
        if result.error:
            log.warning(
                "snmp module failed: %s",
                result.error,
                extra={"target": str(target), "snmp_module": result.module, "auth": auth_name},
            )
    families = _self_families(results, time.perf_counter() - started)
    families += merge_families(f for result in results for f in result.families)
    response = web.Response(text=render_text(families), content_type="text/plain", charset="utf-8")
    response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression(web.ContentCoding.gzip)
    return response


def merge_families(families: Iterable[Family]) -> list[Family]:
    """One family per name, each label set once: two modules may both read sysUpTime."""
    families = list(families)
    counts = Counter(family.name for family in families)
    merged: dict[str, Family] = {}
    seen: dict[str, set[Labels]] = {}
    for family in families:
        if counts[family.name] == 1:
            merged[family.name] = family  # the common case: nothing to merge
            continue
        into = merged.get(family.name)
        if into is None:
            into = merged[family.name] = Family(family.name, family.help, family.type)
            seen[family.name] = set()
        for labels, value in family.samples:
            key = tuple(sorted(labels))
            if key not in seen[family.name]:
                seen[family.name].add(key)
                into.add(labels, value)
    return list(merged.values())


async def _bounded(
    scrape: Coroutine[Any, Any, ModuleResult], name: str, deadline: float
) -> ModuleResult:
    """The module's result, or a failure at the deadline, whatever the device does."""
    started = time.perf_counter()
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        return await asyncio.wait_for(scrape, timeout=max(remaining, 0))
    except TimeoutError:
        return ModuleResult(
            name, False, time.perf_counter() - started, [], 0, False, "deadline exceeded"
        )


def _self_families(results: list[ModuleResult], duration: float) -> list[Family]:
    pdus = sum(result.pdus_sent for result in results)
    retries = sum(result.retries for result in results)
    scrape = Family("scout_snmp_scrape_duration_seconds", "Seconds the SNMP scrape took.", "gauge")
    scrape.add((), duration)
    sent = Family("scout_snmp_pdus_sent", "SNMP PDUs sent during this scrape.", "gauge")
    sent.add((), pdus)
    retried = Family("scout_snmp_retries", "SNMP requests resent during this scrape.", "gauge")
    retried.add((), retries)
    success = Family("scout_snmp_module_success", "1 if the module was read in full.", "gauge")
    took = Family("scout_snmp_module_duration_seconds", "Seconds spent on the module.", "gauge")
    reps = Family(
        "scout_snmp_max_repetitions", "GETBULK max-repetitions now used for the device.", "gauge"
    )
    cached = Family(
        "scout_snmp_cache_used", "1 if cached lookup labels were reused on this scrape.", "gauge"
    )
    for result in results:
        labels = (("module", result.module),)
        success.add(labels, int(result.success))
        took.add(labels, result.duration_seconds)
        if result.max_repetitions:
            reps.add(labels, result.max_repetitions)
        cached.add(labels, int(result.cache_used))
    return [scrape, sent, retried, success, took, reps, cached]


async def snmp_scraper_ctx(app: web.Application) -> AsyncIterator[None]:
    scraper = app[SNMP_SCRAPER] = SnmpScraper()

    async def prune() -> None:
        while True:
            await asyncio.sleep(300)
            scraper.drop_idle()

    pruner = asyncio.create_task(prune())
    yield
    pruner.cancel()
    await asyncio.gather(pruner, return_exceptions=True)
    await scraper.close()


def setup_snmp(app: web.Application) -> None:
    app.cleanup_ctx.append(snmp_scraper_ctx)
    app.router.add_get("/snmp", snmp)
