"""The languages people read Scout in: gettext catalogues through Babel, and
dates, durations and numbers formatted for the language.

English is the source language: every message id is the English text itself,
so English needs no catalogue and its output is exactly the source's. Another
language is one ``.po`` file per domain under ``locales/<language>/LC_MESSAGES/``,
read at run time (nothing is compiled into the repository); adding a language
is adding its files, no code.

One domain per area, so their catalogues change apart:

- ``analysis``: the local analyst, root-cause reasons, priority explanations,
  the instruction that asks an LLM for its answer's language;
- ``notify``: Slack and e-mail wording, the ``ai_*`` annotations;
- ``console``: the console's pages, reports and the e-mail digest.

Operations stay English (logs, metric names and help, API field names), as in
every Prometheus component: they never go through a catalogue.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from gettext import NullTranslations
from pathlib import Path
from typing import Literal

from babel import Locale
from babel.dates import (
    format_date,
    format_datetime,
    format_time,
    format_timedelta,
    get_datetime_format,
)
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import Translations
from babel.units import format_unit

SOURCE_LANGUAGE = "en"
LOCALES_DIR = Path(__file__).parent / "locales"
Domain = Literal["analysis", "notify", "console"]
DOMAINS: tuple[Domain, ...] = ("analysis", "notify", "console")


def available_languages() -> tuple[str, ...]:
    """English, then every language with a catalogue directory, sorted."""
    found = sorted(p.name for p in LOCALES_DIR.iterdir() if (p / "LC_MESSAGES").is_dir())
    return (SOURCE_LANGUAGE, *(name for name in found if name != SOURCE_LANGUAGE))


def catalogue_language(tag: str) -> str | None:
    """``tag`` as :func:`available_languages` spells it, or None: language tags
    ignore the case of their ASCII letters (``FR`` and ``Fr`` are ``fr``), and
    a language read from outside (a header, a form, the config) may be spelled
    any way while :func:`translator` knows only the catalogue's spelling."""
    if not tag.isascii():
        return None
    return next((known for known in available_languages() if known.lower() == tag.lower()), None)


def catalogue_path(language: str, domain: Domain) -> Path:
    return LOCALES_DIR / language / "LC_MESSAGES" / f"{domain}.po"


@dataclass(frozen=True)
class Translator:
    """One language's messages for one domain, and its locale for formatting."""

    language: str
    domain: Domain
    translations: NullTranslations
    locale: Locale

    @property
    def is_source(self) -> bool:
        """English: callers keep their historical formatting, byte for byte."""
        return self.language == SOURCE_LANGUAGE

    def gettext(self, message: str) -> str:
        return self.translations.gettext(message)

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        """The form the language's plural rules pick for ``count``."""
        return self.translations.ngettext(singular, plural, count)

    # --- formatting in the language's conventions (English callers may keep
    # their own historical formats, which this does not reproduce) -------------

    def minute(self, value: datetime, zone: tzinfo) -> str:
        """Date and time to the minute in ``zone``, as :meth:`datetime` writes them
        (fr: "3 déc. 2026, 04:33")."""
        local = value.astimezone(zone)
        return (
            str(get_datetime_format("medium", locale=self.locale))
            .replace("{1}", format_date(local, "medium", locale=self.locale))
            .replace("{0}", format_time(local, "short", locale=self.locale))
        )

    def datetime(self, value: datetime, zone: tzinfo) -> str:
        """Date and time to the second in ``zone`` (fr: "3 déc. 2026, 04:33:12")."""
        return format_datetime(value, format="medium", tzinfo=zone, locale=self.locale)

    def ago(self, delta: timedelta) -> str:
        """How long ago, rounded as people say it (fr: "il y a 5 minutes")."""
        return format_timedelta(-delta, add_direction=True, locale=self.locale)

    def duration(self, delta: timedelta) -> str:
        """A duration, rounded to its largest unit (fr: "2 heures")."""
        return format_timedelta(delta, threshold=1, locale=self.locale)

    def number(self, value: float, *, digits: int = 0) -> str:
        """A number with the language's separators (fr: "12 345,6")."""
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, format=pattern, locale=self.locale)

    def percent(self, share: float) -> str:
        """``share`` (0.5) as a percentage (fr: "50 %")."""
        return format_percent(share, locale=self.locale)

    def byte_size(self, size: float) -> str:
        """Bytes in the largest unit under 1,024 of it (fr: "1,5 Go")."""
        for unit in ("byte", "kilobyte", "megabyte", "gigabyte", "terabyte"):
            if abs(size) < 1024 or unit == "terabyte":
                break
            size /= 1024
        return format_unit(
            size, f"digital-{unit}", length="short", format="#,##0.#", locale=self.locale
        )


class UnknownLanguageError(ValueError):
    pass


@functools.cache
def translator(language: str, domain: Domain) -> Translator:
    """The translator for ``language`` (``en``, ``fr``, ...) and ``domain``.

    Raises :class:`UnknownLanguageError` for a language without catalogues.
    Cached: catalogues are read once per process.
    """
    if language not in available_languages():
        raise UnknownLanguageError(
            f"no catalogue for language {language!r}; available: "
            + ", ".join(available_languages())
        )
    locale = Locale.parse(language)
    if language == SOURCE_LANGUAGE:
        return Translator(language, domain, NullTranslations(), locale)
    path = catalogue_path(language, domain)
    if not path.is_file():
        return Translator(language, domain, NullTranslations(), locale)
    with path.open("rb") as po:
        catalogue = read_po(po, locale=language, domain=domain)
    compiled = io.BytesIO()
    # Fuzzy entries are drafts: they are not used, as msgfmt would not use them.
    write_mo(compiled, catalogue, use_fuzzy=False)
    compiled.seek(0)
    return Translator(language, domain, Translations(compiled, domain=domain), locale)


__all__ = [
    "DOMAINS",
    "LOCALES_DIR",
    "SOURCE_LANGUAGE",
    "Domain",
    "Translator",
    "UnknownLanguageError",
    "available_languages",
    "catalogue_language",
    "catalogue_path",
    "translator",
]
