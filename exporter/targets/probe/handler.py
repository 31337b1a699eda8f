"""``GET /probe?target=&module=``: one probe, as blackbox_exporter's endpoint.

``module`` names a probe module: the built-in ``icmp``, ``tcp`` and ``http``, or one
from the config's ``modules:``. A missing or unknown parameter is a 400 with the
reason; a target that does not answer, or cannot even be resolved, is a 200 with
``scout_probe_success 0`` and the reason in the exporter's log.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from yarl import URL

from exporter.errors import BadRequestError
from exporter.keys import LIVE_CONFIG, SETTINGS
from exporter.models import SECRET_MASK
from exporter.scrape import scrape_deadline
from exporter.targets.probe.http import HttpModule
from exporter.targets.probe.icmp import IcmpModule
from exporter.targets.probe.registry import DEFAULT_MODULES, run_probe
from exporter.targets.probe.tcp import TcpModule
from exporter.web import render_families

log = logging.getLogger(__name__)

ProbeModuleType = IcmpModule | TcpModule | HttpModule
MAX_TARGET_LENGTH = 2048


def _probe_modules(request: web.Request) -> dict[str, ProbeModuleType]:
    configured = {
        name: module
        for name, module in request.app[LIVE_CONFIG].config.modules.items()
        if isinstance(module, ProbeModuleType)
    }
    return {**DEFAULT_MODULES, **configured}


async def probe(request: web.Request) -> web.Response:
    target = request.query.get("target", "").strip()
    if not target:
        raise BadRequestError("'target' parameter must be specified")
    if len(target) > MAX_TARGET_LENGTH:
        raise BadRequestError(f"target longer than {MAX_TARGET_LENGTH}")
    name = request.query.get("module", "").strip()
    modules = _probe_modules(request)
    if not name:
        raise BadRequestError(f"'module' parameter must be one of: {', '.join(sorted(modules))}")
    module = modules.get(name)
    if module is None:
        if name in request.app[LIVE_CONFIG].config.modules:
            raise BadRequestError(f"module {name!r} is for /snmp, not /probe")
        raise BadRequestError(f"unknown module {name!r}; known: {', '.join(sorted(modules))}")
    timeout = scrape_deadline(
        request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
        request.app[SETTINGS].timeout_offset_seconds,
    )
    result = await run_probe(target, module, asyncio.get_running_loop().time() + timeout)
    if result.error:
        log.log(
            logging.INFO if result.success else logging.WARNING,
            "probe: %s",
            mask_password(result.error, target),
            extra={"target": mask_password(target, target), "probe_module": name},
        )
    return render_families(request, result.families)


def mask_password(text: str, target: str) -> str:
    """``text`` without the password of a target URL (``http://user:pass@host/``)."""
    try:
        password = URL(target).password if "://" in target else None
    except ValueError:  # not a URL after all: then it holds no password either
        return text
    return text.replace(password, SECRET_MASK) if password else text


def setup_probe(app: web.Application) -> None:
    app.router.add_get("/probe", probe)
