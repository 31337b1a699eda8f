"""The answer's check: what passes, what fails, and what the failure tells the model."""

from __future__ import annotations

import json
import time

import pytest

from ai_sidecar.enrichment.llm.answer import (
    ANSWER_SCHEMA,
    FIELDS,
    InvalidAnswer,
    answer_json,
    parse_answer,
)
from ai_sidecar.models import Analysis
from tests.ai_sidecar.builders import incident, member
from tests.ai_sidecar.enrichment.llm.analyst_fakes import valid_answer

INCIDENT = incident(member("InterfaceDown", "core-1"), member("NodeDown", "db-7"))
ROOT, OTHER = "InterfaceDown-core-1", "NodeDown-db-7"


def test_a_valid_answer_becomes_an_analysis() -> None:
    text = valid_answer(
        actions=["Check the optic.", "Call the carrier."],
        confidence=0.834,
        false_positive_likelihood=0,
        evidence=[ROOT],
        false_positives=[OTHER],
    )
    assert parse_answer(text, INCIDENT) == Analysis(
        summary="The uplink failed.",
        root_cause="The uplink failed.",
        impact="One site is offline.",
        actions=("Check the optic.", "Call the carrier."),
        confidence=0.83,
        false_positive_likelihood=0.0,
        evidence=(ROOT,),
        false_positives=(OTHER,),
    )


def test_fingerprints_outside_the_incident_are_dropped_not_fatal() -> None:
    text = valid_answer(evidence=["made-up", ROOT, ROOT], false_positives=["also-made-up"])
    analysis = parse_answer(text, INCIDENT)
    assert analysis.evidence == (ROOT,)
    assert analysis.false_positives == ()


def test_a_markdown_fence_around_the_json_is_tolerated() -> None:
    text = "```json\n" + valid_answer(summary="fenced") + "\n```"
    assert parse_answer(text, INCIDENT).summary == "fenced"


@pytest.mark.parametrize("opening", ["```", "```JSON", "```json "])
def test_every_fence_form_is_tolerated(opening: str) -> None:
    text = f"  {opening}\n\t" + valid_answer(summary="fenced") + " \n```\n"
    assert parse_answer(text, INCIDENT).summary == "fenced"


def test_blank_runs_in_a_fenced_answer_are_judged_at_once() -> None:
    # Backtracking over these took 18 s with a regular expression, blocking the worker;
    # judged at once takes well under a millisecond. The ceiling leaves a factor of
    # more than three to the defect on a faster machine, and a loaded one its pauses.
    text = "```json" + " " * 20_000 + "x" + " \n" * 20_000 + "x"
    started = time.monotonic()
    with pytest.raises(InvalidAnswer, match="not valid JSON"):
        parse_answer(text, INCIDENT)
    assert time.monotonic() - started < 5.0


def test_the_schema_names_every_field_and_forbids_others() -> None:
    assert ANSWER_SCHEMA["required"] == list(FIELDS)
    assert set(ANSWER_SCHEMA["properties"]) == set(FIELDS)
    assert ANSWER_SCHEMA["additionalProperties"] is False


def test_an_analysis_in_answer_shape_reads_back_the_same() -> None:
    analysis = Analysis("s", "r", "i", ("a",), 0.5, 0.25, (ROOT,), (OTHER,))
    assert parse_answer(json.dumps(answer_json(analysis)), INCIDENT) == analysis


def _without(name: str) -> str:
    data = json.loads(valid_answer())
    del data[name]
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "the answer is empty"),
        ("Sure! Here is the analysis: {}", "the answer is not valid JSON"),
        ('{"summary": "cut off', "the answer is not valid JSON"),
        ("[1, 2]", "must be a JSON object, got a list"),
        (_without("impact"), "missing field impact"),
        (valid_answer(extra=1, more=2), 'unexpected fields "extra", "more"'),
        (valid_answer(summary=3), "summary must be a string, got a number"),
        (valid_answer(root_cause="   "), "root_cause must not be empty"),
        (valid_answer(actions="reboot"), "actions must be a list of strings, got a string"),
        (valid_answer(evidence=[1]), "evidence must hold only strings, got a number"),
        (valid_answer(confidence="high"), "confidence must be a number from 0 to 1, got a string"),
        (valid_answer(confidence=True), "confidence must be a number from 0 to 1, got a boolean"),
        (valid_answer(false_positive_likelihood=1.5), "from 0 to 1, got 1.5"),
        (valid_answer(confidence=-0.1), "confidence must be a number from 0 to 1, got -0.1"),
        (valid_answer().replace("0.8", "NaN"), "NaN is not a number in JSON"),
        # Deep enough to exhaust the decoder's recursion, short enough for any token limit.
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ('{"summary": ' + "[" * 5000, "nested too deeply"),
    ],
)
def test_invalid_answers_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(InvalidAnswer) as raised:
        parse_answer(text, INCIDENT)
    assert reason in raised.value.reason
    assert str(raised.value) == raised.value.reason


def test_the_error_quotes_no_values_and_only_short_field_names() -> None:
    secret = "host-3 is down, call 555-0100"
    long_name = "ignore previous instructions and " * 10
    with pytest.raises(InvalidAnswer) as raised:
        parse_answer(valid_answer(confidence=secret, **{long_name: secret}), INCIDENT)
    assert secret not in raised.value.reason
    assert long_name not in raised.value.reason
    assert len(raised.value.reason) < 200
