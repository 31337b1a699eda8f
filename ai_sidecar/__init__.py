"""Scout AI sidecar: anomaly scores, alert correlation and explained incidents."""

from exporter.common.version import __version__

__all__ = ["__version__"]
