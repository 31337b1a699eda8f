"""Exceptions raised by the exporter.

Tree::

    ExporterError
     ├── ConfigError        the config file cannot be read or is invalid
     ├── CollectorBusyError a collector is still running from an earlier scrape
     ├── ListenError        a collector cannot bind its port (the flow listener's)
     └── BadRequestError    a request's parameters are wrong (HTTP 400)
          └── TargetRefusedError  (exporter.targets.allowlist) no allow-list admits
                                  the target (HTTP 403)
"""


class ExporterError(Exception):
    """Root of every exception the exporter raises on purpose."""


class ConfigError(ExporterError):
    """The config is invalid; the message names the file, line and key."""


class CollectorBusyError(ExporterError):
    """A collector has not finished its previous run, so it is not started again."""


class ListenError(ExporterError):
    """A collector cannot listen where the config says; the message names the address
    and the reason, in the words of the HTTP port's error."""


class BadRequestError(ExporterError):
    """A parameter is wrong; the message tells the caller which and why."""

    http_status = 400
