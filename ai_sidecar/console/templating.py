"""Jinja2 templates for the console, escaped by default, in the page's language.

Alert labels and annotations are untrusted and may carry ``<script>``:
autoescaping is on for every template, and no template marks alert text safe.
They may carry bidi controls too, which every printed value shows as U+FFFD.

Every visible word goes through the "console" catalogue (Jinja2's i18n
extension, new-style gettext: placeholders are escaped like any variable).
One environment per language, each with its catalogue installed, so pages in
two languages render side by side without sharing state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from gettext import NullTranslations
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from ai_sidecar import __version__
from ai_sidecar.console.health import health_summary
from ai_sidecar.console.language import page_words
from ai_sidecar.console.session import CSRF_FIELD, SESSIONS, ConsoleUser
from ai_sidecar.console.words import REFUSALS, REFUSED
from ai_sidecar.correlate.wording import analysis_translator, layer_name
from ai_sidecar.i18n import SOURCE_LANGUAGE, available_languages, translator
from ai_sidecar.store import StoreError

PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"
# Bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): one in
# an alert's text would reorder what follows it on the page (the next labels,
# the rest of the row) until its paragraph ends. Shown as U+FFFD, as the PDF
# report shows them; letters of right-to-left scripts need none of them.
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)], "\ufffd")


def _inert(value: object) -> object:
    """What a template prints, bidi controls made visible (Jinja2's ``finalize``)."""
    if isinstance(value, str) and not value.isprintable():
        return value.translate(_BIDI_CONTROLS)
    return value


@functools.cache
def environment(language: str) -> jinja2.Environment:
    """The templates in ``language`` (one of :func:`available_languages`)."""
    found = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
        finalize=_inert,
    )
    # As the catalogue extracts them (ai_sidecar.i18n.catalogues): whitespace collapsed.
    found.policies["ext.i18n.trimmed"] = True
    translations = translator(language, "console").translations
    found.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    found.globals.update(_plain_gettext(translations))
    found.globals["version"] = __version__
    found.globals["csrf_field"] = CSRF_FIELD
    found.globals["language"] = language
    # Layer names as the analysis words them (fr: liaison, équipement); English as stored.
    found.filters["layer"] = functools.partial(layer_name, analysis_translator(language))
    found.globals["languages"] = available_languages()
    return found


def _plain_gettext(translations: NullTranslations) -> dict[str, Callable[..., str]]:
    """``_``, ``gettext`` and ``ngettext`` as Jinja2's new-style ones answer (the message
    marked safe, its placeholders filled with escaped values, ``num`` for a plural's
    count), without taking the template's context.

    Jinja2's take it to call the catalogue and to read whether autoescaping is on,
    which it always is here; and a function that takes the context, called inside a
    block or a loop, gets a copy of the context made for that one call: a list
    page's 50 rows made some 190 copies, and its translated cells cost about as
    much as the rest of the page.
    """

    def gettext(message: str, /, **variables: Any) -> str:
        return Markup(translations.gettext(message)) % variables

    def ngettext(singular: str, plural: str, num: int, /, **variables: Any) -> str:
        variables.setdefault("num", num)
        return Markup(translations.ngettext(singular, plural, num)) % variables

    return {"_": gettext, "gettext": gettext, "ngettext": ngettext}


# English: the reports' CLI and tests render with it.
ENVIRONMENT = environment(SOURCE_LANGUAGE)

# Pages are per user and change by the second: no cache may keep them, and no
# other origin may frame them or run scripts in them.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def render(
    request: web.Request,
    template: str,
    context: dict[str, Any],
    *,
    user: ConsoleUser | None,
    status: int = 200,
) -> web.Response:
    """``template`` rendered for ``user`` (None on the login page), with the health banner,
    in the page's language (:mod:`ai_sidecar.console.language`)."""
    words = await page_words(request, user)
    page = (
        environment(words.language)
        .get_template(template)
        .render(
            user=user,
            health=await health_summary(request.app) if user is not None else None,
            request_path=request.path,
            words=words,
            **context,
        )
    )
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


def refusal_message(exc: web.HTTPException) -> str:
    """What the error page says of ``exc``: the console's own message (marked with
    ``N_``), or, for a refusal that carries aiohttp's developer text, its words for
    the status (:data:`~ai_sidecar.console.words.REFUSALS`)."""
    developers = exc.text in (None, "", f"{exc.status}: {exc.reason}")
    if developers or isinstance(exc, web.HTTPRequestEntityTooLarge):
        return REFUSALS.get(exc.status, REFUSED)
    return exc.text or ""


async def render_refusal(request: web.Request, exc: web.HTTPException) -> web.Response:
    """``exc`` (a 4xx the console or aiohttp raised) as the console's error page."""
    response = await render_error(request, exc.status, refusal_message(exc))
    if "Allow" in exc.headers:  # a 405 says which methods the address takes
        response.headers["Allow"] = exc.headers["Allow"]
    return response


async def render_error(request: web.Request, status: int, message: str) -> web.Response:
    """An error page for the app's middleware, in the console's layout: with the
    navigation, language and health banner of the signed-in user when the request
    carries a live session, else as any page shows to someone not signed in. The
    message is translated when the catalogue has it (messages marked with ``N_``)."""
    user = await _signed_in(request)
    try:
        return await _error_page(request, status, message, user)
    except (StoreError, web.HTTPException):
        if user is None:
            raise
        # The store failed after the session was found: the page for anyone.
        return await _error_page(request, status, message, None)


async def _signed_in(request: web.Request) -> ConsoleUser | None:
    sessions = request.app.get(SESSIONS)
    if sessions is None:
        return None
    try:
        return await sessions.user_for(request)
    except (StoreError, web.HTTPException):
        return None  # the store may be what the error is about


async def _error_page(
    request: web.Request, status: int, message: str, user: ConsoleUser | None
) -> web.Response:
    words = await page_words(request, user)
    context = {"status": status, "message": words.t.gettext(message) if message else message}
    return await render(request, "error.html", context, user=user, status=status)
