"""The console: server-rendered pages behind a login, on the sidecar's port.

Three parts, each with its own routes:

- :mod:`ai_sidecar.console.login`: users, sessions, CSRF, login and logout;
- :mod:`ai_sidecar.console.pages`: incidents, an incident's page and its actions,
  anomalies, and the health shown on every page;
- :mod:`ai_sidecar.console.reports`: reports as HTML, CSV and PDF, and the digest.

Every page handler asks :mod:`ai_sidecar.console.session` who is signed in and
renders through :mod:`ai_sidecar.console.templating`, whose templates escape
everything: alert text is untrusted.
"""

from __future__ import annotations

from aiohttp import web

from ai_sidecar.request_errors import CONSOLE_PREFIX


def setup_console(app: web.Application) -> None:
    """Register the console's routes and what they need under ``app``."""
    # Imported here, not above: the pages import the anomaly views (pandas,
    # sklearn), and a process that only needs a console module (the CLI's user
    # commands, an intake process) should not pay about 130 MB for them.
    from ai_sidecar.console.login import setup_login
    from ai_sidecar.console.pages import setup_pages
    from ai_sidecar.console.reports import setup_reports
    from ai_sidecar.console.templating import STATIC_DIR

    setup_login(app)
    setup_pages(app)
    setup_reports(app)
    app.router.add_static(f"{CONSOLE_PREFIX}/static/", STATIC_DIR, name="console-static")


__all__ = ["setup_console"]
