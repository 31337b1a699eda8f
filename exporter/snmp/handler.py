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
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

from aiohttp import web

from exporter.clients.snmp import Credentials
from exporter.config import SnmpAuth
from exporter.keys import LIVE_CONFIG, SETTINGS, SNMP_SCRAPER
from exporter.scrape import scrape_deadline
from exporter.snmp.exposition import Family, render_text
from exporter.snmp.modules import SnmpModule, builtin_modules
from exporter.snmp.scraper import ModuleResult, SnmpScraper, Target

log = logging.getLogger(__name__)

DEFAULT_MODULE = "if_mib"
DEFAULT_AUTH = "public_v2"
BUILTIN_AUTHS: Mapping[str, SnmpAuth] = {
    DEFAULT_AUTH: SnmpAuth.model_validate({"type": "snmp", "version": 2, "community": "public"}),
}
MAX_MODULES_PER_SCRAPE = 20


class BadRequest(Exception):
    """A parameter is wrong; the message is shown to the caller as a 400."""


def parse_target(text: str) -> Target:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address; ``udp://`` optional."""
    raw = text.strip()
    if "://" in raw:
        scheme, _, raw = raw.partition("://")
        if scheme != "udp":
            raise BadRequest(f"unsupported transport {scheme!r} in target: SNMP runs over udp")
    host, port = raw, "161"
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise BadRequest(f"invalid target {text!r}: expected [ipv6]:port")
            port = rest[1:]
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    if not host or any(c.isspace() or c in "/?#@[]" for c in host):
        raise BadRequest(f"invalid target {text!r}: expected host or host:port")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise BadRequest(f"invalid target {text!r}: {exc}") from exc
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(f"invalid port in target {text!r}")
    return Target(host, int(port))


def _modules(request: web.Request) -> dict[str, SnmpModule]:
    config = request.app[LIVE_CONFIG].config
    configured = {k: m for k, m in config.modules.items() if isinstance(m, SnmpModule)}
    return {**builtin_modules(), **configured}


def _auths(request: web.Request) -> dict[str, object]:
    return {**BUILTIN_AUTHS, **request.app[LIVE_CONFIG].config.auths}


def resolve(request: web.Request) -> tuple[Target, list[tuple[str, SnmpModule]], str, SnmpAuth]:
    query = request.query
    target_text = query.get("target", "").strip()
    if not target_text:
        raise BadRequest("'target' parameter must be specified")
    target = parse_target(target_text)
    names = [n.strip() for n in query.get("module", DEFAULT_MODULE).split(",") if n.strip()]
    if not names:
        raise BadRequest("'module' parameter is empty")
    if len(names) > MAX_MODULES_PER_SCRAPE:
        raise BadRequest(f"too many modules: {len(names)} (at most {MAX_MODULES_PER_SCRAPE})")
    known = _modules(request)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadRequest(
            f"unknown module {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
        )
    auth_name = query.get("auth", DEFAULT_AUTH).strip()
    auth = _auths(request).get(auth_name)
    if auth is None:
        raise BadRequest(f"unknown auth {auth_name!r}")
    if not isinstance(auth, SnmpAuth):
        raise BadRequest(f"auth {auth_name!r} is not an SNMP auth")
    return target, [(n, known[n]) for n in dict.fromkeys(names)], auth_name, auth


async def snmp(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        target, modules, auth_name, auth = resolve(request)
    except BadRequest as exc:
        return web.Response(status=400, text=f"{exc}\n")
    timeout = scrape_deadline(
        request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
        request.app[SETTINGS].timeout_offset_seconds,
    )
    deadline = asyncio.get_running_loop().time() + timeout
    scraper = request.app[SNMP_SCRAPER]
    credentials = Credentials.from_auth(auth)
    sessions = [scraper.session(target, auth_name, credentials, m) for _, m in modules]
    # Modules with the same timeouts share a session: count each session once.
    unique = {id(s): s for s in sessions}
    before = {k: (s.stats.pdus_sent, s.stats.retries) for k, s in unique.items()}
    results = await asyncio.gather(
        *(
            _bounded(
                scraper.scrape_module(s, (target, auth_name, name), name, m, deadline),
                name,
                deadline,
            )
            for s, (name, m) in zip(sessions, modules, strict=True)
        )
    )
    pdus = sum(s.stats.pdus_sent - before[k][0] for k, s in unique.items())
    retries = sum(s.stats.retries - before[k][1] for k, s in unique.items())
    for result in results:
        if result.error:
            log.warning(
                "snmp module failed: %s",
                result.error,
                extra={"target": str(target), "snmp_module": result.module, "auth": auth_name},
            )
    families = _self_families(results, time.perf_counter() - started, pdus, retries)
    for result in results:
        families += result.families
    response = web.Response(text=render_text(families), content_type="text/plain", charset="utf-8")
    response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression(web.ContentCoding.gzip)
    return response


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


def _self_families(
    results: list[ModuleResult], duration: float, pdus: int, retries: int
) -> list[Family]:
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
            await scraper.drop_idle()

    pruner = asyncio.create_task(prune())
    yield
    pruner.cancel()
    await asyncio.gather(pruner, return_exceptions=True)
    await scraper.close()


def setup_snmp(app: web.Application) -> None:
    app.cleanup_ctx.append(snmp_scraper_ctx)
    app.router.add_get("/snmp", snmp)
