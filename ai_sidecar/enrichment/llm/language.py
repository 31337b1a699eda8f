"""Which language an LLM answer is written in, judged on its prose with py3langid.

The prompt asks for the configured language; an answer in another one is
invalid output, like an answer that breaks the schema (the analyst retries
once, then the local analysis goes out). Answers are full of names that belong
to no language (``InterfaceDown``, ``core-1``, ``Gi1/0/24``, pseudonyms such
as ``host-1``), so the check reads only plain words: letters alone, no digit or
separator, no capital after the first letter. They are taken from all the free
text at once (summary, root cause, impact, actions), since one field alone can
be a few words long, and judged only when there are at least
``MIN_JUDGED_WORDS`` of them: below that, no language is claimed and the
answer passes. Identification is restricted to the languages Scout has
catalogues for, so it picks the likeliest of those.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from ai_sidecar.i18n import available_languages

# Twelve plain words: a sentence or two, enough for py3langid to tell English
# from French reliably; a shorter answer is not judged.
MIN_JUDGED_WORDS = 12
_PLAIN_WORD = re.compile(r"[^\W\d_][^\W\d_A-Z]*(?:['\u2019][^\W\d_]+)?")
_PUNCTUATION = '.,;:!?()«»"“”'


@functools.cache
def _identifier() -> LanguageIdentifier:
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(available_languages()))
    return identifier


def plain_words(texts: Iterable[str]) -> list[str]:
    """The words of ``texts`` that are language, not names."""
    return [
        word
        for text in texts
        for token in text.split()
        if _PLAIN_WORD.fullmatch(word := token.strip(_PUNCTUATION))
    ]


def answer_language(texts: Iterable[str]) -> str | None:
    """The language ``texts`` are written in, or None when too short to judge."""
    words = plain_words(texts)
    if len(words) < MIN_JUDGED_WORDS:
        return None
    language, _ = _identifier().classify(" ".join(words))
    return str(language)
