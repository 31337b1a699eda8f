"""The console's templates translate as Jinja2's own new-style gettext does, without
a copy of the template's context per translated cell."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import pytest

from ai_sidecar.console.language import words_in
from ai_sidecar.console.pages.incidents import Filters
from ai_sidecar.console.session import ConsoleUser, Role
from ai_sidecar.console.templating import environment
from ai_sidecar.i18n import available_languages, translator
from ai_sidecar.models import PRIORITIES
from ai_sidecar.store.protocol import IncidentSummary

CREATED = datetime(2026, 12, 3, 14, 30, tzinfo=UTC)
ZONE = ZoneInfo("Europe/Paris")
# Text a template must escape wherever it is put in a message: markup, quotes,
# an ampersand, and what would be a placeholder in printf-style formatting.
HOSTILE = "<b>&\"'%(site)s %s 100%"


def jinja_reference(language: str) -> jinja2.Environment:
    """The console's environment in ``language``, its gettext Jinja2's own new-style one."""
    ours = environment(language)
    reference = jinja2.Environment(
        loader=ours.loader,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
        finalize=ours.finalize,
    )
    reference.policies.update(ours.policies)
    reference.filters.update(ours.filters)
    reference.globals.update(
        {k: v for k, v in ours.globals.items() if k not in ("_", "gettext", "ngettext")}
    )
    reference.install_gettext_translations(  # type: ignore[attr-defined]
        translator(language, "console").translations, newstyle=True
    )
    return reference


def list_page(language: str, rows: int) -> dict[str, Any]:
    """The incident list's context: ``rows`` rows, open and resolved, handled and not,
    with hostile names wherever a message holds one."""
    words = words_in(language, ZONE)
    summaries = [
        IncidentSummary(
            id=f"inc-{n}",
            status="open" if n % 2 else "resolved",
            priority=PRIORITIES[n % len(PRIORITIES)],
            created_at=CREATED - timedelta(minutes=7 * n),
            updated_at=CREATED,
            resolved_at=None if n % 2 else CREATED,
            site=HOSTILE if n % 3 else "",
            title=f"{HOSTILE} title {n}",
            cause=HOSTILE,
            members=n + 1,
            firing=n,
            analyst="local" if n % 2 else "",
            acknowledged_by=HOSTILE if n % 4 == 1 else None,
            assignee=HOSTILE if n % 5 == 2 else "",
        )
        for n in range(rows)
    ]
    return {
        "user": ConsoleUser(HOSTILE, Role.OPERATOR, "csrf-0123456789"),
        "health": None,
        "request_path": "/console/incidents",
        "words": words,
        "filters": Filters(site=HOSTILE, q=HOSTILE, problems=[HOSTILE]),
        "priorities": PRIORITIES,
        "zone": str(ZONE),
        "rows": [
            {
                "summary": s,
                "href": f"/console/incidents/{s.id}",
                "age": words.age(s.created_at, CREATED + timedelta(hours=3)),
                "created": words.time(s.created_at),
            }
            for s in summaries
        ],
        "total": rows,
        "page": 2,
        "pages": 3,
        "prev_link": "/console/incidents",
        "next_link": "/console/incidents?page=3",
    }


@pytest.mark.parametrize("language", available_languages())
@pytest.mark.parametrize("rows", [1, 50])
def test_the_list_page_is_what_jinjas_own_gettext_renders(language: str, rows: int) -> None:
    context = list_page(language, rows)
    page = environment(language).get_template("incidents.html").render(context)
    expected = jinja_reference(language).get_template("incidents.html").render(context)
    assert page == expected
    assert "&lt;b&gt;&amp;&#34;&#39;%(site)s %s 100%" in page
    assert "<b>" not in page


@pytest.mark.parametrize("language", available_languages())
def test_an_error_page_is_what_jinjas_own_gettext_renders(language: str) -> None:
    context = {"user": None, "health": None, "request_path": "/x", "status": 404}
    context["message"] = HOSTILE
    page = environment(language).get_template("error.html").render(context)
    assert page == jinja_reference(language).get_template("error.html").render(context)


def test_translated_cells_copy_no_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jinja2 copies the context for each call of a function that takes it, made in a
    loop or a block: the list's translated cells made about four copies a row."""
    copies = 0
    derived = jinja2.runtime.Context.derived

    def counted(self: jinja2.runtime.Context, locals: Any = None) -> jinja2.runtime.Context:
        nonlocal copies
        copies += 1
        return derived(self, locals)

    monkeypatch.setattr(jinja2.runtime.Context, "derived", counted)
    template = environment("fr").get_template("incidents.html")
    template.render(list_page("fr", 1))
    one_row = copies
    copies = 0
    template.render(list_page("fr", 50))
    assert copies == one_row
