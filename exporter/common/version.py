"""The installed distribution's version, shared by both daemons' ``--version`` and info metrics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scout")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
