"""Users, sessions, CSRF tokens, the login form and logout.

- :mod:`.passwords`: argon2id hashes (bcrypt accepted), generated passwords;
- :mod:`.users`: users from ``console.users_file``, then from the store;
- :mod:`.service`: sessions in the store, lockout, the sign-in metric
  (:class:`~.service.ConsoleLogin`, the console's session backend);
- :mod:`.routes`: GET/POST /console/login, POST /console/logout;
- :mod:`.commands`: ``scout-sidecar user add|list|remove|passwd``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from ai_sidecar.console.login.passwords import dummy_hash
from ai_sidecar.console.login.routes import LOGIN, add_login_routes
from ai_sidecar.console.login.service import ConsoleLogin, create_login_metric
from ai_sidecar.console.login.users import UserDirectory
from ai_sidecar.console.session import SESSIONS
from ai_sidecar.keys import CONFIG, METRICS, STORE


def setup_login(app: web.Application) -> None:
    """Register /console/login and /console/logout and install the session backend.

    The backend needs the store, so it is built at start-up, after the store
    opens; a backend already installed (a test's) is left in place.
    """
    logins = create_login_metric(app[METRICS].registry)

    async def install(app: web.Application) -> AsyncIterator[None]:
        # Made now, off the loop: the first unknown name must not take twice as long.
        await asyncio.to_thread(dummy_hash)
        config = app[CONFIG].console
        login = ConsoleLogin(
            app[STORE], config, UserDirectory(app[STORE], config.users_file), logins
        )
        app[LOGIN] = login
        if SESSIONS not in app:
            app[SESSIONS] = login
        yield

    app.cleanup_ctx.append(install)
    add_login_routes(app)


__all__ = ["LOGIN", "ConsoleLogin", "setup_login"]
