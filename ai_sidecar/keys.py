"""Typed keys for everything the sidecar's aiohttp app holds."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ai_sidecar.config import SidecarConfig
from ai_sidecar.metrics import SidecarMetrics
from ai_sidecar.reload import ConfigReloader
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import Store

SETTINGS = web.AppKey("settings", SidecarSettings)
CONFIG = web.AppKey("config", SidecarConfig)
METRICS = web.AppKey("metrics", SidecarMetrics)
STORE = web.AppKey("store", Store)
# Set by the webhook after it stores alerts; the worker waits on it when idle.
WAKEUP = web.AppKey("wakeup", asyncio.Event)
# The config in force, and how a reload replaces it.
RELOADER = web.AppKey("reloader", ConfigReloader)
