"""The answer an LLM must give: its JSON schema, and the check that turns it into an Analysis.

Providers send :data:`ANSWER_SCHEMA` as structured output where the vendor
supports it, but no vendor's promise is taken on trust: :func:`parse_answer`
checks every answer by hand (a dozen rules; a JSON-schema library would add a
dependency for less readable errors). An answer that fails raises
:class:`InvalidAnswer`, whose message says what was wrong in words the model
can act on: the analyst sends it back once with the prompt.

Fingerprints the model names in ``evidence`` or ``false_positives`` that are
not members of the incident are dropped rather than failing the answer: a
model that cites one member too many still explains the incident.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ai_sidecar.enrichment.llm.language import answer_language
from ai_sidecar.models import Analysis, Incident, analysis_to_json

TEXT_FIELDS = ("summary", "root_cause", "impact")
SCORE_FIELDS = ("confidence", "false_positive_likelihood")
LIST_FIELDS = ("actions", "evidence", "false_positives")
FIELDS = (*TEXT_FIELDS, "actions", *SCORE_FIELDS, "evidence", "false_positives")
# How much of a name from the answer an error message quotes.
QUOTED = 40


def _strings(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "description": description}


def _score(description: str) -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": 1, "description": description}


ANSWER_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "description": "What happened, in one or two sentences."},
        "root_cause": {
            "type": "string",
            "description": "The most likely cause and why the data points to it.",
        },
        "impact": {"type": "string", "description": "What is affected and how badly."},
        "actions": _strings("What to do next, most useful first; one short step each."),
        "confidence": _score("How sure the root cause is right, 0 to 1."),
        "false_positive_likelihood": _score("How likely the incident is no real problem, 0 to 1."),
        "evidence": _strings("Fingerprints of the members that support the root cause."),
        "false_positives": _strings("Fingerprints of members that look like false positives."),
    },
    "required": list(FIELDS),
    "additionalProperties": False,
}


class InvalidAnswer(ValueError):
    """An answer that is not the schema's JSON; the message says why, for the retry prompt."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def answer_json(analysis: Analysis) -> dict[str, Any]:
    """An analysis in the answer's shape: the draft the model improves, a cached answer.

    The stored shape, but for one key: the answer spells every field as the
    schema does.
    """
    shown = analysis_to_json(analysis)
    shown["false_positives"] = shown.pop("falsePositives")
    return shown


def _quoted(name: str) -> str:
    name = name if len(name) <= QUOTED else name[: QUOTED - 1] + "…"
    return json.dumps(name)


def _reject_constant(name: str) -> float:
    raise InvalidAnswer(f"the answer is not valid JSON: {name} is not a number in JSON")


def _decode(text: str) -> object:
    body = text.strip()
    # Models often wrap JSON in a Markdown code fence despite being told not to.
    # By hand: the regular expression this replaces backtracked in cubic time over
    # whitespace, and a model can answer 3,000 blanks (18 s of a blocked worker).
    fence = "```"
    if len(body) >= 2 * len(fence) and body.startswith(fence) and body.endswith(fence):
        inner = body[len(fence) : -len(fence)]
        body = (inner[4:] if inner[:4].lower() == "json" else inner).strip()
    if not body:
        raise InvalidAnswer("the answer is empty; expected one JSON object")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(
            f"the answer is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "answer with one JSON object and nothing else"
        ) from None
    except RecursionError:
        # "[[[[..." a thousand deep: a model talked into it must not get past validation.
        raise InvalidAnswer(
            "the answer is nested too deeply; answer with one flat JSON object"
        ) from None


def _check_fields(data: Mapping[str, Any]) -> None:
    missing = [name for name in FIELDS if name not in data]
    extra = sorted(str(name) for name in data if name not in FIELDS)
    problems = []
    if missing:
        problems.append("missing field" + ("s " if len(missing) > 1 else " ") + ", ".join(missing))
    if extra:
        shown = ", ".join(_quoted(name) for name in extra[:5])
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        problems.append("unexpected field" + ("s " if len(extra) > 1 else " ") + shown + more)
    if problems:
        raise InvalidAnswer("; ".join(problems))


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise InvalidAnswer(f"{name} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise InvalidAnswer(f"{name} must not be empty")
    return value


def _list(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = data[name]
    if not isinstance(value, list):
        raise InvalidAnswer(f"{name} must be a list of strings, got {_json_type(value)}")
    for item in value:
        if not isinstance(item, str):
            raise InvalidAnswer(f"{name} must hold only strings, got {_json_type(item)}")
    return tuple(value)


def _score_of(data: Mapping[str, Any], name: str) -> float:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidAnswer(f"{name} must be a number from 0 to 1, got {_json_type(value)}")
    if math.isnan(value) or not 0 <= value <= 1:
        raise InvalidAnswer(f"{name} must be a number from 0 to 1, got {value:g}")
    return round(float(value), 2)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _members(fingerprints: tuple[str, ...], incident: Incident) -> tuple[str, ...]:
    """The incident's members among ``fingerprints``, each once, in the answer's order."""
    return tuple(dict.fromkeys(f for f in fingerprints if f in incident.members))


def parse_answer(
    text: str, incident: Incident, language: str | None = None, *, limit: int | None = None
) -> Analysis:
    """The analysis in ``text``, or :class:`InvalidAnswer` saying what is wrong with it.

    ``language``: the one the prompt asked for; an answer whose prose is
    plainly in another is invalid (:mod:`ai_sidecar.enrichment.llm.language`).
    ``limit``: the most characters the answer may hold (``LlmRequest.answer_limit``);
    a longer one is refused unread.

    Nothing of the answer's values is quoted in the error but field names (cut
    short): the message goes back to the model and into logs.
    """
    if limit is not None and len(text) > limit:
        raise InvalidAnswer(
            f"the answer is {len(text)} characters long, more than the {limit} allowed; "
            "answer with one short JSON object"
        )
    data = _decode(text)
    if not isinstance(data, dict):
        raise InvalidAnswer(f"the answer must be a JSON object, got {_json_type(data)}")
    _check_fields(data)
    texts = {name: _text(data, name) for name in TEXT_FIELDS}
    lists = {name: _list(data, name) for name in LIST_FIELDS}
    scores = {name: _score_of(data, name) for name in SCORE_FIELDS}
    if language is not None:
        found = answer_language([*texts.values(), *lists["actions"]])
        if found is not None and found != language:
            raise InvalidAnswer(
                f"the answer is written in {found!r}; write summary, root_cause, impact "
                f"and actions in {language!r}"
            )
    return Analysis(
        summary=texts["summary"],
        root_cause=texts["root_cause"],
        impact=texts["impact"],
        actions=lists["actions"],
        confidence=scores["confidence"],
        false_positive_likelihood=scores["false_positive_likelihood"],
        evidence=_members(lists["evidence"], incident),
        false_positives=_members(lists["false_positives"], incident),
    )
