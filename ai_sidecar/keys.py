"""Typed keys for everything the sidecar's aiohttp app holds."""

from aiohttp import web
from prometheus_client import CollectorRegistry

from ai_sidecar.settings import SidecarSettings

SETTINGS = web.AppKey("settings", SidecarSettings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
