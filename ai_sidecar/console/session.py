"""Who is signed in to the console, and what they may do.

Pages depend only on this module: :func:`console_user` for any page,
:func:`operator_user` for actions, :func:`checked_form` for every POST. How a
session is found (cookie, store, expiry) is the :class:`SessionBackend`'s
business, which :mod:`ai_sidecar.console.login` provides; tests of the pages
may install a backend of their own.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from ai_sidecar.console.words import N_

# The hidden form field every console form carries.
CSRF_FIELD = "csrf_token"
LOGIN_PATH = "/console/login"
# A POSTed body that does not parse, or does not decode as its headers say.
UNREADABLE_FORM = N_("the form could not be read: send it again from the page")
# A page or API answer when the store cannot serve (PostgreSQL restarting, a full disk).
STORE_UNAVAILABLE = N_("the store cannot be reached for a moment: try again shortly")


class Role(StrEnum):
    """viewer reads; operator also gives feedback, acknowledges, assigns and silences."""

    VIEWER = "viewer"
    OPERATOR = "operator"


@dataclass(frozen=True)
class ConsoleUser:
    name: str
    role: Role
    # The session's synchronizer token: every form posts it back.
    csrf_token: str

    @property
    def can_act(self) -> bool:
        return self.role is Role.OPERATOR


class SessionBackend(Protocol):
    async def user_for(self, request: web.Request) -> ConsoleUser | None:
        """The user whose live session ``request`` carries, or None."""


SESSIONS = web.AppKey("console_sessions", SessionBackend)


class ForbiddenError(web.HTTPForbidden):
    """Rendered as the console's error page by the app's middleware."""


async def console_user(request: web.Request) -> ConsoleUser:
    """The signed-in user; anyone else is sent to the login form and back here after."""
    user = await request.app[SESSIONS].user_for(request)
    if user is None:
        target = request.rel_url.path_qs if request.method == "GET" else "/console/"
        raise web.HTTPSeeOther(f"{LOGIN_PATH}?next={quote(target, safe='')}")
    return user


async def operator_user(request: web.Request) -> ConsoleUser:
    """The signed-in user, who must hold the operator role."""
    user = await console_user(request)
    if not user.can_act:
        raise ForbiddenError(text=N_("this action needs the operator role"))
    return user


class BadFormError(web.HTTPBadRequest):
    """A POST body that is not a form: rendered as the console's error page."""


async def read_form(request: web.Request, *, max_bytes: int | None = None) -> MultiDictProxy[str]:
    """The POSTed form's text fields (no console form uploads files).

    A body that does not parse (a broken multipart, bytes that are not in its
    charset, an unknown charset) is a 400 page, not a 500 with a traceback.
    ``max_bytes`` lowers the app's body limit (sized for the webhook's
    batches) for a form anyone may post before signing in: a body above it,
    declared or sent, is a 413 page.
    """
    if max_bytes is not None:
        if request.content_length is not None and request.content_length > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_bytes, request.content_length)
        # The same body stream, read under the lower limit (chunked bodies too).
        request = request.clone(client_max_size=max_bytes)
    try:
        form = await request.post()
    except (ValueError, LookupError):  # UnicodeDecodeError is a ValueError
        raise BadFormError(text=UNREADABLE_FORM) from None
    return MultiDictProxy(MultiDict((k, v) for k, v in form.items() if isinstance(v, str)))


async def checked_form(request: web.Request, user: ConsoleUser) -> MultiDictProxy[str]:
    """The POSTed form, once its CSRF token matches ``user``'s session."""
    form = await read_form(request)
    given = form.get(CSRF_FIELD, "")
    if not hmac.compare_digest(given.encode(errors="surrogateescape"), user.csrf_token.encode()):
        raise ForbiddenError(text=N_("the form's CSRF token is missing or stale: reload the page"))
    return form
