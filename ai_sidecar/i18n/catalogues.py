"""Which sources feed which catalogue, and the checks that keep catalogues whole.

Extraction reads the code with Babel: Python calls of ``gettext``,
``ngettext`` (also as methods: ``t.gettext(...)``) and ``N_`` (a message
marked where it is defined and translated where it is shown), and Jinja2
templates' ``{% trans %}`` blocks and ``_()``/``gettext()`` calls.

``python scripts/i18n.py update`` brings every language's catalogues in line
with the code (new messages empty, messages no longer in the code dropped);
``check`` lists what is missing or unused, and the test suite runs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir, extract_from_file
from babel.messages.pofile import read_po, write_po

from ai_sidecar.i18n import DOMAINS, Domain, available_languages, catalogue_path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent

# Paths relative to the repository root; a directory means every .py and
# template (.html, .txt) below it.
DOMAIN_SOURCES: dict[Domain, tuple[str, ...]] = {
    "analysis": (
        "ai_sidecar/anomaly/evidence.py",
        "ai_sidecar/enrichment",
        "ai_sidecar/correlate",
        "ai_sidecar/correlation.py",
        "ai_sidecar/priority.py",
    ),
    "notify": ("ai_sidecar/notify",),
    "console": ("ai_sidecar/console",),
}

KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}
METHOD_MAP = [
    ("**.py", "python"),
    ("**/templates/**.html", "jinja2"),
    ("**/templates/**.txt", "jinja2"),
]
OPTIONS_MAP = {"**/templates/**": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}


def extract(domain: Domain) -> Catalog:
    """Every message the domain's sources use, in source order."""
    catalogue = Catalog(domain=domain)
    for relative in DOMAIN_SOURCES[domain]:
        path = PACKAGE_ROOT / relative
        if path.is_dir():
            found: Iterator[tuple[str, int, str | tuple[str, ...], list[str], str | None]] = (
                extract_from_dir(path, METHOD_MAP, OPTIONS_MAP, KEYWORDS)
            )
            prefix = relative
        else:
            found = (
                (path.name, line, message, comments, context)
                for line, message, comments, context in extract_from_file("python", path, KEYWORDS)
            )
            prefix = str(Path(relative).parent)
        for filename, line, message, comments, context in found:
            catalogue.add(
                message,
                locations=[(f"{prefix}/{filename}", line)],
                auto_comments=comments,
                context=context,
            )
    return catalogue


def read_catalogue(language: str, domain: Domain) -> Catalog:
    path = catalogue_path(language, domain)
    if not path.is_file():
        return Catalog(locale=language, domain=domain)
    with path.open("rb") as po:
        return read_po(po, locale=language, domain=domain)


@dataclass(frozen=True)
class Problem:
    language: str
    domain: Domain
    kind: str  # "missing", "untranslated", "fuzzy", "unused", "plural forms"
    message: str

    def __str__(self) -> str:
        return f"{self.language}/{self.domain}: {self.kind}: {self.message!r}"


def _key(message: object) -> str:
    return message[0] if isinstance(message, tuple) else str(message)


def check(language: str) -> list[Problem]:
    """What keeps ``language``'s catalogues from matching the code."""
    problems: list[Problem] = []
    # The language's plural forms as CLDR gives them (French: one, many, other).
    plural_count = Catalog(locale=language).num_plurals
    for domain in DOMAINS:
        wanted = {_key(m.id): m for m in extract(domain) if m.id}
        have = {_key(m.id): m for m in read_catalogue(language, domain) if m.id}
        for key in wanted.keys() - have.keys():
            problems.append(Problem(language, domain, "missing", key))
        for key in have.keys() - wanted.keys():
            problems.append(Problem(language, domain, "unused", key))
        for key in wanted.keys() & have.keys():
            entry = have[key]
            strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
            if entry.fuzzy:
                problems.append(Problem(language, domain, "fuzzy", key))
            elif not all(strings):
                problems.append(Problem(language, domain, "untranslated", key))
            elif isinstance(wanted[key].id, tuple) != isinstance(entry.id, tuple) or (
                isinstance(entry.string, tuple) and len(strings) != plural_count
            ):
                problems.append(Problem(language, domain, "plural forms", key))
    return sorted(problems, key=str)


def update(language: str) -> dict[Domain, int]:
    """Bring ``language``'s catalogues in line with the code; new (empty) entries per domain."""
    added: dict[Domain, int] = {}
    for domain in DOMAINS:
        template = extract(domain)
        catalogue = read_catalogue(language, domain)
        before = {_key(m.id) for m in catalogue if m.id}
        catalogue.update(template, no_fuzzy_matching=True)
        catalogue.obsolete.clear()
        added[domain] = len({_key(m.id) for m in catalogue if m.id} - before)
        path = catalogue_path(language, domain)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as po:
            po.write(_header(language, domain, Catalog(locale=language).plural_forms).encode())
            write_po(po, catalogue, width=100, omit_header=True, sort_output=False)
    return added


def _header(language: str, domain: Domain, plural_forms: str) -> str:
    """A fixed header: no dates or tool versions, so an update changes only messages.
    Plural forms are CLDR's, as Babel gives them for the language."""
    return (
        f'# Scout\'s "{domain}" messages in {language} (ai_sidecar/i18n; '
        "python scripts/i18n.py update).\n"
        'msgid ""\nmsgstr ""\n'
        '"Project-Id-Version: scout\\n"\n'
        f'"Language: {language}\\n"\n'
        '"MIME-Version: 1.0\\n"\n'
        '"Content-Type: text/plain; charset=UTF-8\\n"\n'
        '"Content-Transfer-Encoding: 8bit\\n"\n'
        f'"Plural-Forms: {plural_forms}\\n"\n\n'
    )


def other_languages() -> tuple[str, ...]:
    return available_languages()[1:]
