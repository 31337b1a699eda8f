"""``/console/preferences``: the language a user reads the console in.

A choice among the languages with a catalogue, or "the browser's" (no
choice: Accept-Language, then the config's ``language``), kept in the store
(:meth:`~ai_sidecar.store.protocol.Store.save_console_language`). Any
signed-in user may choose, viewers too: it changes nothing but their pages.
"""

from __future__ import annotations

from aiohttp import web
from babel import Locale

from ai_sidecar.clock import utc_now
from ai_sidecar.console.pages.common import signed_for, signed_redirect
from ai_sidecar.console.session import checked_form, console_user
from ai_sidecar.console.templating import render
from ai_sidecar.i18n import available_languages, catalogue_language
from ai_sidecar.keys import STORE

PREFERENCES_PATH = "/console/preferences"


def language_names() -> list[tuple[str, str]]:
    """Each language by its own name ("English", "Français"): a reader finds theirs."""
    return [
        (code, (Locale.parse(code).get_display_name(code) or code).capitalize())
        for code in available_languages()
    ]


async def preferences(request: web.Request) -> web.Response:
    user = await console_user(request)
    chosen = await request.app[STORE].get_console_language(user.name)
    context = {
        "choices": language_names(),
        "chosen": chosen,
        "saved": request.query.get("done") == "saved"
        and signed_for(request.query, user, PREFERENCES_PATH),
        "refused": False,
    }
    return await render(request, "preferences.html", context, user=user)


async def save_preferences(request: web.Request) -> web.Response:
    user = await console_user(request)
    form = await checked_form(request, user)
    typed = form.get("language", "")
    # "" is "the browser's": no choice kept. Tags ignore case ("FR" is "fr").
    language = typed and catalogue_language(typed)
    if language is None:
        context = {
            "choices": language_names(),
            "chosen": await request.app[STORE].get_console_language(user.name),
            "saved": False,
            "refused": True,
        }
        return await render(request, "preferences.html", context, user=user, status=400)
    await request.app[STORE].save_console_language(user.name, language, utc_now())
    raise signed_redirect(user, PREFERENCES_PATH, done="saved")
