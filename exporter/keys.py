"""Typed keys for everything the exporter's aiohttp app holds."""

from aiohttp import web

from exporter.live import LiveConfig, Settings
from exporter.scrape import ScrapeRunner

SETTINGS = web.AppKey("settings", Settings)
LIVE_CONFIG = web.AppKey("live_config", LiveConfig)
RUNNER = web.AppKey("scrape_runner", ScrapeRunner)
