"""Scout AI sidecar: anomaly scores, alert correlation and explained incidents."""

from exporter import __version__

__all__ = ["__version__"]
