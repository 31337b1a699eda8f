"""Typed keys for everything the exporter's aiohttp app holds."""

from aiohttp import web

from exporter.live import LiveConfig, Settings
from exporter.scrape import ScrapeRunner
from exporter.targets.addresses import AddressCache
from exporter.targets.refusals import TargetRefusals

SETTINGS = web.AppKey("settings", Settings)
LIVE_CONFIG = web.AppKey("live_config", LiveConfig)
RUNNER = web.AppKey("scrape_runner", ScrapeRunner)
TARGET_REFUSALS = web.AppKey("target_refusals", TargetRefusals)
TARGET_ADDRESSES = web.AppKey("target_addresses", AddressCache)
