"""GET/POST /console/login and POST /console/logout.

The login form is guarded against login CSRF (another site signing the
browser in as someone else) by a double-submitted token: GET sets it in the
``scout_login`` cookie (HttpOnly, SameSite=Strict, path /console/login) and in
the form's hidden ``csrf_token``; a POST whose two copies differ is refused.
A double-submitted token only holds while nobody else can set the cookie,
and a sibling subdomain or a man in the middle of a plain-HTTP request can.
So when cookies are Secure (TLS, or ``secure_cookies``) the cookie is
``__Host-scout_login`` (Secure, Path=/, no Domain), which browsers let
neither a sibling subdomain nor a plain-HTTP response set, and the plain
name is not read; and a POST the browser marks as coming from another site
(``Sec-Fetch-Site: cross-site`` or ``same-site``, which every current browser
sends and a page cannot forge) is refused whatever its token.
After sign-in, ``next`` brings the browser back where it was sent from, only
ever to a path under /console/ (never ``//host``, a scheme, or ``..``).
"""

from __future__ import annotations

import hmac
import math
import re
from urllib.parse import unquote, urlsplit

from aiohttp import web

from ai_sidecar.console.language import page_words
from ai_sidecar.console.login.service import (
    COOKIE_PATH,
    MAX_COOKIE_CHARS,
    ConsoleLogin,
    Outcome,
    new_token,
)
from ai_sidecar.console.session import (
    CSRF_FIELD,
    LOGIN_PATH,
    checked_form,
    console_user,
    read_form,
)
from ai_sidecar.console.templating import render
from ai_sidecar.console.words import N_

LOGIN = web.AppKey("console_login", ConsoleLogin)
LOGIN_COOKIE = "scout_login"
# The form's cookie when cookies are Secure (see HOST_SESSION_COOKIE).
HOST_LOGIN_COOKIE = "__Host-" + LOGIN_COOKIE
# What new_token() makes: URL-safe base64.
TOKEN = re.compile(rf"[A-Za-z0-9_-]{{32,{MAX_COOKIE_CHARS}}}")
DEFAULT_NEXT = "/console/incidents"
# How long a login form may be left open before it is posted.
LOGIN_FORM_SECONDS = 3600
# A sign-in form is a name, a password (at most 1024 characters), its token
# and next (2048): anything much bigger is not one, and is refused before it
# is read, since anyone may post it.
LOGIN_FORM_BYTES = 16 * 1024
# What the browser says of a request that another site's page made.
FOREIGN_FETCH_SITES = frozenset({"cross-site", "same-site"})

# Translated on the page (the "console" catalogue).
WRONG = N_("The user name or password is wrong.")
EXPIRED = N_("The sign-in form had expired or came from elsewhere. Please sign in again.")


def safe_next(value: str | None) -> str:
    """``value`` if it is a path under /console/ of this site, else the default page."""
    if not value or len(value) > 2048 or "\\" in value or not value.isprintable():
        return DEFAULT_NEXT
    parts = urlsplit(value)
    path_ok = parts.path == COOKIE_PATH or parts.path.startswith(COOKIE_PATH + "/")
    if (
        parts.scheme
        or parts.netloc
        or not path_ok
        or value.startswith("//")
        # Browsers resolve %2e%2e as .. too.
        or ".." in unquote(parts.path).split("/")
        or parts.path.startswith(LOGIN_PATH)
    ):
        return DEFAULT_NEXT
    return value


def login_cookie(login: ConsoleLogin, request: web.Request) -> tuple[str, str]:
    """The form cookie's name and path for ``request``: ``__Host-`` and ``/`` (the
    prefix demands it) when cookies are Secure, else /console/login alone (a
    ``__Host-`` cookie needs Secure, which a browser drops on plain HTTP)."""
    if login.secure(request):
        return HOST_LOGIN_COOKIE, "/"
    return LOGIN_COOKIE, LOGIN_PATH


async def login_page(
    request: web.Request,
    *,
    next_page: str,
    username: str = "",
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    login = request.app[LOGIN]
    name, path = login_cookie(login, request)
    token = request.cookies.get(name, "")
    if not TOKEN.fullmatch(token):
        token = new_token()
    response = await render(
        request,
        "login.html",
        {"next": next_page, "username": username, "error": error, "form_token": token},
        user=None,
        status=status,
    )
    response.set_cookie(
        name,
        token,
        path=path,
        max_age=LOGIN_FORM_SECONDS,
        httponly=True,
        samesite="Strict",
        secure=login.secure(request),
    )
    return response


async def show_login(request: web.Request) -> web.Response:
    return await login_page(request, next_page=safe_next(request.query.get("next")))


async def submit_login(request: web.Request) -> web.StreamResponse:
    login = request.app[LOGIN]
    form = await read_form(request, max_bytes=LOGIN_FORM_BYTES)
    next_page = safe_next(form.get("next"))
    username = form.get("username", "")
    cookie = request.cookies.get(login_cookie(login, request)[0], "")
    given = form.get(CSRF_FIELD, "")
    if (
        request.headers.get("Sec-Fetch-Site", "").lower() in FOREIGN_FETCH_SITES
        or not cookie
        or not hmac.compare_digest(
            given.encode(errors="surrogateescape"), cookie.encode(errors="surrogateescape")
        )
    ):
        login.refused(login.client_address(request))
        return await login_page(
            request, next_page=next_page, username=username, error=EXPIRED, status=403
        )
    result = await login.sign_in(username, form.get("password", ""), login.client_address(request))
    if result.outcome is Outcome.LOCKED:
        wait = 0 if result.retry_after is None else result.retry_after.total_seconds()
        minutes = max(1, math.ceil(wait / 60))
        response = await login_page(
            request,
            next_page=next_page,
            username=username,
            error=(await page_words(request, None))
            .t.ngettext(
                "Too many failed sign-ins for this user or from this address. "
                "Try again in {minutes} minute.",
                "Too many failed sign-ins for this user or from this address. "
                "Try again in {minutes} minutes.",
                minutes,
            )
            .format(minutes=minutes),
            status=429,
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    if result.session_id is None:
        return await login_page(
            request, next_page=next_page, username=username, error=WRONG, status=401
        )
    # A session this browser had (someone else's, or planted) ends here.
    await login.sign_out(request)
    response = web.HTTPSeeOther(next_page)
    login.set_session_cookie(request, response, result.session_id)
    name, path = login_cookie(login, request)
    # A browser takes the deletion of a __Host- cookie only with its attributes.
    response.del_cookie(name, path=path, secure=login.secure(request) or None)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    user = await console_user(request)
    await checked_form(request, user)
    login = request.app[LOGIN]
    await login.sign_out(request)
    response = web.HTTPSeeOther(LOGIN_PATH)
    login.clear_session_cookie(request, response)
    raise response


def add_login_routes(app: web.Application) -> None:
    app.router.add_get(LOGIN_PATH, show_login, name="console-login")
    app.router.add_post(LOGIN_PATH, submit_login)
    app.router.add_post("/console/logout", logout, name="console-logout")
