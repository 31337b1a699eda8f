"""The catalogues: complete for every language, and the machinery that keeps them so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import ai_sidecar.i18n as i18n
from ai_sidecar.i18n import catalogues
from ai_sidecar.i18n.catalogues import check, other_languages, update


def test_every_language_has_every_message_and_no_unused_one() -> None:
    """Fails when an English string is added without its translation (or one is left over):
    run ``python scripts/i18n.py update`` and translate what it adds."""
    assert other_languages(), "no language besides English: the catalogue directory is missing"
    problems = [str(p) for language in other_languages() for p in check(language)]
    assert problems == []


def test_english_needs_no_catalogue_and_an_unknown_language_is_refused() -> None:
    english = i18n.translator("en", "notify")
    assert english.is_source
    assert english.gettext("Root cause") == "Root cause"
    assert english.ngettext("{n} alert", "{n} alerts", 1) == "{n} alert"
    assert english.ngettext("{n} alert", "{n} alerts", 0) == "{n} alerts"
    with pytest.raises(i18n.UnknownLanguageError, match="available: en, fr"):
        i18n.translator("xx", "notify")


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A source tree and a catalogue directory of their own."""
    (tmp_path / "src" / "templates").mkdir(parents=True)
    (tmp_path / "locales" / "fr" / "LC_MESSAGES").mkdir(parents=True)
    monkeypatch.setattr(catalogues, "PACKAGE_ROOT", tmp_path)
    monkeypatch.setattr(
        catalogues, "DOMAIN_SOURCES", {"analysis": (), "notify": ("src",), "console": ()}
    )
    monkeypatch.setattr(i18n, "LOCALES_DIR", tmp_path / "locales")
    i18n.translator.cache_clear()
    yield tmp_path
    i18n.translator.cache_clear()


def test_update_then_translate_then_check_round_trip(sandbox: Path) -> None:
    code = sandbox / "src" / "wording.py"
    code.write_text(
        "def words(t, n):\n"
        "    return t.gettext('Link down'), t.ngettext('{n} alert', '{n} alerts', n)\n"
    )
    (sandbox / "src" / "templates" / "page.html").write_text(
        "<p>{% trans %}Root cause{% endtrans %}</p>"
    )
    missing = {(p.kind, p.message) for p in check("fr")}
    assert missing == {
        ("missing", "Link down"),
        ("missing", "{n} alert"),
        ("missing", "Root cause"),
    }

    assert update("fr")["notify"] == 3
    assert {p.kind for p in check("fr")} == {"untranslated"}

    po = i18n.catalogue_path("fr", "notify")
    text = po.read_text()
    text = text.replace('msgid "Link down"\nmsgstr ""', 'msgid "Link down"\nmsgstr "Lien coupé"')
    text = text.replace(
        'msgid "Root cause"\nmsgstr ""', 'msgid "Root cause"\nmsgstr "Cause racine"'
    )
    # CLDR's French forms: one (0 and 1), many (exact millions), other.
    text = text.replace(
        'msgstr[0] ""\nmsgstr[1] ""\nmsgstr[2] ""',
        'msgstr[0] "{n} alerte"\nmsgstr[1] "{n} d\'alertes"\nmsgstr[2] "{n} alertes"',
    )
    po.write_text(text)
    assert check("fr") == []

    french = i18n.translator("fr", "notify")
    assert french.gettext("Link down") == "Lien coupé"
    assert french.gettext("Root cause") == "Cause racine"
    # French plural rules: 0 and 1 are singular, exact millions take "de".
    forms = [french.ngettext("{n} alert", "{n} alerts", n) for n in (0, 1, 2, 1_000_000)]
    assert forms == ["{n} alerte", "{n} alerte", "{n} alertes", "{n} d'alertes"]
    assert french.gettext("Not in the catalogue") == "Not in the catalogue"

    # A message the code no longer uses is reported, then dropped by update.
    code.write_text("def words(t, n):\n    return t.ngettext('{n} alert', '{n} alerts', n)\n")
    assert [(p.kind, p.message) for p in check("fr")] == [("unused", "Link down")]
    update("fr")
    assert check("fr") == []
    assert "Lien coupé" not in po.read_text()
    assert "{n} alertes" in po.read_text()


def test_a_fuzzy_entry_is_reported_and_not_used(sandbox: Path) -> None:
    (sandbox / "src" / "wording.py").write_text("def f(t):\n    return t.gettext('Link down')\n")
    update("fr")
    po = i18n.catalogue_path("fr", "notify")
    po.write_text(
        po.read_text().replace(
            'msgid "Link down"\nmsgstr ""', '#, fuzzy\nmsgid "Link down"\nmsgstr "Lien coupé"'
        )
    )
    assert [(p.kind, p.message) for p in check("fr")] == [("fuzzy", "Link down")]
    assert i18n.translator("fr", "notify").gettext("Link down") == "Link down"


def test_french_formats_dates_durations_numbers_and_sizes_its_own_way() -> None:
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    def plain(text: str) -> str:  # French typesetting's no-break spaces, as plain ones
        return text.replace("\u202f", " ").replace("\xa0", " ")

    french = i18n.translator("fr", "console")
    at = datetime(2026, 12, 3, 3, 33, 12, tzinfo=UTC)
    assert plain(french.datetime(at, ZoneInfo("Europe/Paris"))) == "3 déc. 2026, 04:33:12"
    assert plain(french.ago(timedelta(minutes=5))) == "il y a 5 minutes"
    assert plain(french.duration(timedelta(hours=2, minutes=5))) == "2 heures"
    assert plain(french.number(12345.6, digits=1)) == "12 345,6"
    assert plain(french.percent(0.5)) == "50 %"
    assert plain(french.byte_size(1.5 * 1024**3)) == "1,5 Go"
    english = i18n.translator("en", "console")
    assert english.number(12345.6, digits=1) == "12,345.6"
