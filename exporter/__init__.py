"""Scout exporter: Prometheus metrics for networks, firewalls and servers."""

from exporter.common.version import __version__

__all__ = ["__version__"]
