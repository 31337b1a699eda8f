"""The settings a daemon starts with, and the config in force, which reloads can replace."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from exporter.collectors import COLLECTORS, Collector, CollectorSpec, HostView
from exporter.config import ExporterConfig, load_config
from exporter.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Settings:
    config_file: Path | None = None
    expand_env: bool = False
    enabled_collectors: frozenset[str] = frozenset(
        spec.name for spec in COLLECTORS if spec.enabled_by_default
    )
    timeout_offset_seconds: float = 0.5
    host_view: HostView = field(default_factory=HostView)
    # TLS, basic auth and headers (exporter-toolkit's format); None serves plain HTTP.
    web_config_file: Path | None = None
    # POST /-/reload answers only with --web.enable-lifecycle, as in Prometheus.
    enable_lifecycle: bool = False


class LiveConfig:
    """The config in force, the collectors built from it, and how the last reload went."""

    def __init__(
        self, settings: Settings, config: ExporterConfig, specs: Sequence[CollectorSpec]
    ) -> None:
        self._settings = settings
        self._specs = [s for s in specs if s.name in settings.enabled_collectors]
        self.config = config
        self.collectors = self._build(config)
        self.last_reload_successful = True
        self.last_reload_success_time = time.time()

    def _build(self, config: ExporterConfig) -> dict[str, Collector]:
        return {spec.name: spec.build(config, self._settings.host_view) for spec in self._specs}

    def reload(self) -> None:
        """Load the config file again; on error keep the old config and raise."""
        try:
            config = load_config(self._settings.config_file, expand_env=self._settings.expand_env)
            collectors = self._build(config)
        except ConfigError:
            self.last_reload_successful = False
            raise
        except Exception as exc:  # reload boundary: never let a surprise pass as success
            self.last_reload_successful = False
            raise ConfigError(f"unexpected error loading the config: {exc!r}") from None
        self.config, self.collectors = config, collectors
        self.last_reload_successful = True
        self.last_reload_success_time = time.time()
