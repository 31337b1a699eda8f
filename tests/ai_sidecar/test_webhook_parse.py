"""The webhook parser on a recorded Alertmanager 0.25 delivery and on each kind of bad input.

The fixture is the body Alertmanager 0.25.0 (Debian's prometheus-alertmanager)
posted to a loopback webhook receiver after two alerts were sent to its
/api/v2/alerts and one of them was resolved; it is stored byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ai_sidecar.errors import BadRequestError
from ai_sidecar.models import Alert, format_time
from ai_sidecar.webhook import (
    EARLIEST_START,
    MAX_ANNOTATION_VALUE_CHARS,
    MAX_ANNOTATIONS,
    MAX_FINGERPRINT_CHARS,
    MAX_LABEL_VALUE_CHARS,
    MAX_LABELS,
    MAX_NAME_CHARS,
    MAX_START_AHEAD,
    MAX_TRUNCATED_ALERTS,
    WebhookPayload,
    parse_payload,
)

FIXTURE = Path(__file__).parent / "fixtures" / "alertmanager-0.25-webhook.json"
STARTED = datetime(2026, 11, 21, 7, 52, 2, 533277, tzinfo=UTC)


def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_bytes())
    return data


def body_of(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_recorded_alertmanager_delivery() -> None:
    payload = parse_payload(FIXTURE.read_bytes())

    assert payload == WebhookPayload(
        version="4",
        group_key='{}:{alertname="InterfaceDown", instance="sw-core-1"}',
        truncated_alerts=0,
        status="firing",
        receiver="scout",
        group_labels={"alertname": "InterfaceDown", "instance": "sw-core-1"},
        common_labels={
            "alertname": "InterfaceDown",
            "instance": "sw-core-1",
            "job": "snmp",
            "severity": "critical",
        },
        common_annotations={},
        external_url="http://127.0.0.1:46693",
        alerts=(
            Alert(
                fingerprint="32a57348a5d263f5",
                status="firing",
                labels={
                    "alertname": "InterfaceDown",
                    "ifName": "Gi0/1",
                    "instance": "sw-core-1",
                    "job": "snmp",
                    "severity": "critical",
                },
                annotations={
                    "description": "ifOperStatus is 2 (down) while ifAdminStatus is 1 (up).",
                    "summary": "Interface Gi0/1 on sw-core-1 is down",
                },
                starts_at=STARTED,
                # Alertmanager sends Go's zero time for "no end yet".
                ends_at=None,
                # JSON's \u0026 escape decoded.
                generator_url="http://127.0.0.1:9090/graph?g0.expr=ifOperStatus+%3D%3D+2&g0.tab=1",
            ),
            Alert(
                fingerprint="28dabb766dc3f91a",
                status="resolved",
                labels={
                    "alertname": "InterfaceDown",
                    "ifName": "Gi0/2",
                    "instance": "sw-core-1",
                    "job": "snmp",
                    "severity": "critical",
                },
                annotations={"summary": "Interface Gi0/2 on sw-core-1 is down"},
                starts_at=STARTED,
                ends_at=datetime(2026, 11, 21, 7, 57, 1, 533277, tzinfo=UTC),
                generator_url="http://127.0.0.1:9090/graph?g0.expr=ifOperStatus+%3D%3D+2&g0.tab=1",
            ),
        ),
    )


def test_unknown_keys_are_ignored_and_optional_fields_default() -> None:
    data = recorded()
    data["someFutureField"] = {"x": 1}
    first = data["alerts"][0]
    first["silencedBy"] = []
    for optional in ("annotations", "endsAt", "generatorURL"):
        del first[optional]
    for envelope in ("groupKey", "status", "receiver", "groupLabels", "externalURL"):
        del data[envelope]

    payload = parse_payload(body_of(data))

    alert = payload.alerts[0]
    assert (alert.annotations, alert.ends_at, alert.generator_url) == ({}, None, "")
    assert (payload.group_key, payload.receiver, payload.group_labels) == ("", "", {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Nanoseconds (Go's RFC3339Nano) are cut to microseconds.
        ("2024-05-01T10:00:00.123456789Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T12:30:00+02:30", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T05:00:00.5-05:00", datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)),
        # RFC 3339 allows lower-case separators.
        ("2024-05-01t10:00:00z", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ],
)
def test_times_are_read_as_rfc3339_and_kept_in_utc(text: str, expected: datetime) -> None:
    data = recorded()
    data["alerts"][0]["startsAt"] = text
    data["alerts"][0]["endsAt"] = text
    alert = parse_payload(body_of(data)).alerts[0]
    assert alert.starts_at == expected
    assert alert.ends_at == expected
    assert alert.starts_at.utcoffset() is not None
    assert alert.starts_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_null_end_time_means_no_end() -> None:
    data = recorded()
    data["alerts"][1]["endsAt"] = None
    assert parse_payload(body_of(data)).alerts[1].ends_at is None


Mutation = Callable[[dict[str, Any]], Any]


def set_in(*path: str | int, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def drop(*path: str | int) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


BAD_PAYLOADS: list[tuple[str, Mutation, str]] = [
    (
        "version-3",
        set_in("version", value="3"),
        'version: unsupported webhook payload version "3"; '
        'only version "4" (Alertmanager webhook v4) is supported',
    ),
    (
        "version-number",
        set_in("version", value=4),
        "version: unsupported webhook payload version 4; "
        'only version "4" (Alertmanager webhook v4) is supported',
    ),
    ("version-missing", drop("version"), "version: required"),
    ("alerts-missing", drop("alerts"), "alerts: required"),
    ("alerts-object", set_in("alerts", value={}), "alerts: must be an array, got object"),
    ("alerts-null", set_in("alerts", value=None), "alerts: must be an array, got null"),
    ("alert-number", set_in("alerts", 1, value=7), "alerts[1]: must be an object, got number"),
    (
        "status",
        set_in("alerts", 0, "status", value="pending"),
        'alerts[0].status: must be "firing" or "resolved", got "pending"',
    ),
    ("status-missing", drop("alerts", 1, "status"), "alerts[1].status: required"),
    (
        "labels-empty",
        set_in("alerts", 0, "labels", value={}),
        "alerts[0].labels: must not be empty",
    ),
    ("labels-missing", drop("alerts", 0, "labels"), "alerts[0].labels: required"),
    (
        "label-value-number",
        set_in("alerts", 0, "labels", "team", value=42),
        "alerts[0].labels.team: must be a string, got number",
    ),
    (
        "label-name-odd",
        set_in("alerts", 0, "labels", "a.b c", value=None),
        'alerts[0].labels["a.b c"]: must be a string, got null',
    ),
    (
        # A name as long as a body: the message echoes it cut, like any value.
        "long-label-name-is-cut",
        set_in("alerts", 0, "labels", "n" * 100, value=42),
        f'alerts[0].labels["{"n" * 64}"...]: must be a string, got number',
    ),
    (
        "annotations-string",
        set_in("alerts", 0, "annotations", value="down"),
        "alerts[0].annotations: must be an object, got string",
    ),
    (
        "starts-words",
        set_in("alerts", 1, "startsAt", value="yesterday"),
        'alerts[1].startsAt: not an RFC 3339 time: "yesterday"',
    ),
    (
        "starts-no-zone",
        set_in("alerts", 0, "startsAt", value="2024-05-01T10:00:00"),
        'alerts[0].startsAt: not an RFC 3339 time: "2024-05-01T10:00:00"',
    ),
    (
        "starts-date-only",
        set_in("alerts", 0, "startsAt", value="2024-05-01"),
        'alerts[0].startsAt: not an RFC 3339 time: "2024-05-01"',
    ),
    (
        "starts-other-digits",
        set_in("alerts", 0, "startsAt", value="\uff12\uff10\uff12\uff14-05-01T10:00:00Z"),
        'alerts[0].startsAt: not an RFC 3339 time: "\\uff12\\uff10\\uff12\\uff14-05-01T10:00:00Z"',
    ),
    (
        "starts-feb-30",
        set_in("alerts", 0, "startsAt", value="2024-02-30T10:00:00Z"),
        "alerts[0].startsAt: not a valid time (day is out of range for month): "
        '"2024-02-30T10:00:00Z"',
    ),
    (
        "starts-before-year-1",
        set_in("alerts", 0, "startsAt", value="0001-01-01T00:00:00+01:00"),
        "alerts[0].startsAt: not a valid time (date value out of range): "
        '"0001-01-01T00:00:00+01:00"',
    ),
    (
        # What Go writes for a time never set: Alertmanager always sets a start.
        "starts-go-zero-time",
        set_in("alerts", 0, "startsAt", value="0001-01-01T00:00:00Z"),
        "alerts[0].startsAt: Go's zero time (unset); an alert must say when it started: "
        '"0001-01-01T00:00:00Z"',
    ),
    (
        # Alertmanager 0.25 takes this start on its API and delivers it.
        "starts-a-second-after-go-zero-time",
        set_in("alerts", 0, "startsAt", value="0001-01-01T00:00:01Z"),
        'alerts[0].startsAt: before the Unix epoch (1970-01-01T00:00:00Z): "0001-01-01T00:00:01Z"',
    ),
    (
        "starts-before-the-epoch",
        set_in("alerts", 1, "startsAt", value="1970-01-01T00:59:59.999+01:00"),
        "alerts[1].startsAt: before the Unix epoch (1970-01-01T00:00:00Z): "
        '"1970-01-01T00:59:59.999+01:00"',
    ),
    (
        "labels-too-many",
        set_in("alerts", 0, "labels", value={f"l{i}": "x" for i in range(MAX_LABELS + 1)}),
        "alerts[0].labels: must have at most 256 entries",
    ),
    (
        "annotations-too-many",
        set_in("alerts", 1, "annotations", value={f"a{i}": "" for i in range(MAX_ANNOTATIONS + 1)}),
        "alerts[1].annotations: must have at most 256 entries",
    ),
    (
        "label-name-too-long",
        set_in("alerts", 0, "labels", "n" * (MAX_NAME_CHARS + 1), value="x"),
        f'alerts[0].labels["{"n" * 64}"...]: name must be at most 1024 characters, got 1025',
    ),
    (
        "annotation-name-too-long",
        set_in("alerts", 0, "annotations", "n" * (MAX_NAME_CHARS + 1), value="x"),
        f'alerts[0].annotations["{"n" * 64}"...]: name must be at most 1024 characters, got 1025',
    ),
    (
        "label-value-too-long",
        set_in("alerts", 0, "labels", "ifName", value="v" * (MAX_LABEL_VALUE_CHARS + 1)),
        "alerts[0].labels.ifName: must be at most 16384 characters, got 16385",
    ),
    (
        # A value's problem, though its label is named like pydantic's marker of a key.
        "label-named-key-marker-value-too-long",
        set_in("alerts", 0, "labels", "[key]", value="v" * (MAX_LABEL_VALUE_CHARS + 1)),
        'alerts[0].labels["[key]"]: must be at most 16384 characters, got 16385',
    ),
    (
        "fingerprint-too-long",
        set_in("alerts", 1, "fingerprint", value="f" * (MAX_FINGERPRINT_CHARS + 1)),
        "alerts[1].fingerprint: must be at most 128 characters, got 129",
    ),
    (
        "starts-offset-minutes",
        set_in("alerts", 0, "startsAt", value="2024-05-01T10:00:00+01:75"),
        "alerts[0].startsAt: not a valid time (offset minutes out of range): "
        '"2024-05-01T10:00:00+01:75"',
    ),
    (
        "starts-number",
        set_in("alerts", 0, "startsAt", value=1714557600),
        "alerts[0].startsAt: must be an RFC 3339 time string, got number",
    ),
    ("starts-missing", drop("alerts", 0, "startsAt"), "alerts[0].startsAt: required"),
    (
        "ends-words",
        set_in("alerts", 1, "endsAt", value="soon"),
        'alerts[1].endsAt: not an RFC 3339 time: "soon"',
    ),
    (
        "fingerprint-empty",
        set_in("alerts", 0, "fingerprint", value=""),
        "alerts[0].fingerprint: must not be empty",
    ),
    ("fingerprint-missing", drop("alerts", 1, "fingerprint"), "alerts[1].fingerprint: required"),
    (
        "generator-url-number",
        set_in("alerts", 0, "generatorURL", value=1),
        "alerts[0].generatorURL: must be a string, got number",
    ),
    (
        "truncated-negative",
        set_in("truncatedAlerts", value=-1),
        "truncatedAlerts: must be 0 or more, got -1",
    ),
    (
        "truncated-fraction",
        set_in("truncatedAlerts", value=1.5),
        "truncatedAlerts: must be a whole number, got 1.5",
    ),
    (
        "long-value-is-cut",
        set_in("alerts", 0, "startsAt", value="x" * 500),
        f'alerts[0].startsAt: not an RFC 3339 time: "{"x" * 64}"...',
    ),
    (
        "version-wins-over-the-rest",
        lambda data: data.update(version="5", alerts=[{"state": "active"}]),
        'version: unsupported webhook payload version "5"; '
        'only version "4" (Alertmanager webhook v4) is supported',
    ),
    (
        "two-problems",
        lambda data: data["alerts"][0].update(status="up", fingerprint=""),
        'alerts[0].status: must be "firing" or "resolved", got "up"; '
        "alerts[0].fingerprint: must not be empty",
    ),
]


# The recorded delivery's alerts start at STARTED; "now" is a minute later.
NOW = STARTED + timedelta(minutes=1)


def second_alert_as_first(data: dict[str, Any]) -> None:
    data["alerts"][1]["fingerprint"] = data["alerts"][0]["fingerprint"]


CONSISTENCY = [
    (
        "label-name-empty",
        set_in("alerts", 0, "labels", "", value="x"),
        'alerts[0].labels[""]: label name must not be empty',
    ),
    (
        "label-name-newline",
        set_in("alerts", 1, "labels", "team\nx", value="x"),
        'alerts[1].labels["team\\nx"]: label name must not hold control or formatting'
        ' characters: "team\\nx"',
    ),
    (
        "label-name-bidi",
        set_in("alerts", 0, "labels", "a\u202eb", value="x"),
        'alerts[0].labels["a\\u202eb"]: label name must not hold control or formatting'
        ' characters: "a\\u202eb"',
    ),
    (
        "starts-far-ahead",
        set_in("alerts", 0, "startsAt", value="9999-12-31T00:00:00Z"),
        "alerts[0].startsAt: more than 10 minutes in the future (now 2026-11-21T07:53:02.533277Z):"
        " 9999-12-31T00:00:00Z",
    ),
    (
        # Correlation adds windows to a resolved alert's end: year 9999 overflows.
        "resolved-ends-far-ahead",
        set_in("alerts", 1, "endsAt", value="9999-12-31T23:59:59Z"),
        "alerts[1].endsAt: a resolved alert cannot end in the future, more than 10 minutes"
        " (now 2026-11-21T07:53:02.533277Z): 9999-12-31T23:59:59Z",
    ),
    (
        "resolved-ends-just-past-the-tolerance",
        set_in("alerts", 1, "endsAt", value="2026-11-21T08:03:02.533278Z"),
        "alerts[1].endsAt: a resolved alert cannot end in the future, more than 10 minutes"
        " (now 2026-11-21T07:53:02.533277Z): 2026-11-21T08:03:02.533278Z",
    ),
    (
        "ends-before-start",
        set_in("alerts", 1, "endsAt", value="2026-11-21T07:52:02Z"),
        "alerts[1].endsAt: before startsAt: 2026-11-21T07:52:02Z < 2026-11-21T07:52:02.533277Z",
    ),
    (
        "truncated-absurd",
        set_in("truncatedAlerts", value=10**12),
        "truncatedAlerts: must be at most 1000000, got 1000000000000",
    ),
    (
        "fingerprint-two-label-sets",
        second_alert_as_first,
        'alerts[1].fingerprint: "32a57348a5d263f5" is also alerts[0]\'s, whose labels differ;'
        " one fingerprint is one label set",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [pytest.param(m, msg, id=name) for name, m, msg in [*BAD_PAYLOADS, *CONSISTENCY]],
)
def test_bad_payload_is_refused_with_its_path_and_problem(mutate: Mutation, message: str) -> None:
    data = recorded()
    mutate(data)
    with pytest.raises(BadRequestError) as caught:
        parse_payload(body_of(data), NOW)
    assert str(caught.value) == message
    assert caught.value.http_status == 400


def test_at_most_five_problems_are_listed() -> None:
    data = recorded()
    data["alerts"] = [{"labels": {"a": "b"}, "startsAt": "2024-05-01T10:00:00Z"}] * 4
    with pytest.raises(BadRequestError) as caught:
        parse_payload(body_of(data))
    # Two problems per alert (status and fingerprint), eight in all.
    assert str(caught.value) == (
        "alerts[0].status: required; alerts[0].fingerprint: required; "
        "alerts[1].status: required; alerts[1].fingerprint: required; "
        "alerts[2].status: required; and 3 more"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "request body is empty; expected an Alertmanager webhook payload"),
        (b"  \n", "request body is empty; expected an Alertmanager webhook payload"),
        (b"{", "request body is not valid JSON: EOF while parsing an object at line 1 column 1"),
        (
            b'{"version": "4", "alerts": [],}',
            "request body is not valid JSON: trailing comma at line 1 column 31",
        ),
        (b"\xff\xfe{}", "request body is not valid JSON: expected value at line 1 column 1"),
        (
            b'{"version": "4", "alerts": []} extra',
            "request body is not valid JSON: trailing characters at line 1 column 32",
        ),
        (b"[]", "request body must be a JSON object, got array"),
        (b"null", "request body must be a JSON object, got null"),
        (b'"alerts"', "request body must be a JSON object, got string"),
    ],
)
def test_body_that_is_not_a_json_object(body: bytes, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_payload(body)
    assert str(caught.value) == message


def test_empty_alert_list_is_a_valid_payload() -> None:
    payload = parse_payload(b'{"version": "4", "alerts": []}')
    assert payload.alerts == ()
    assert payload.truncated_alerts == 0


def test_what_real_alertmanagers_send_is_still_accepted() -> None:
    data = recorded()
    # Clocks differ a little: a start up to MAX_START_AHEAD ahead is accepted.
    data["alerts"][0]["startsAt"] = format_time(NOW + MAX_START_AHEAD)
    # A resolved alert may end the instant it started; Go's zero time is no end.
    data["alerts"][1]["endsAt"] = data["alerts"][1]["startsAt"]
    data["alerts"].append({**data["alerts"][0], "endsAt": "0001-01-01T00:00:00Z"})
    data["truncatedAlerts"] = MAX_TRUNCATED_ALERTS
    payload = parse_payload(body_of(data), NOW)
    # The same alert twice (same fingerprint, same labels) is a repeat, not an error.
    assert [a.fingerprint for a in payload.alerts] == [
        "32a57348a5d263f5",
        "28dabb766dc3f91a",
        "32a57348a5d263f5",
    ]
    assert payload.truncated_alerts == MAX_TRUNCATED_ALERTS


def test_alerts_at_every_limit_are_accepted_whole() -> None:
    data = recorded()
    first, second = data["alerts"]
    # The earliest start taken, with Go's zero time as endsAt ("no end"), as
    # Alertmanager sends a firing alert.
    first["startsAt"] = "1970-01-01T00:00:00Z"
    first["endsAt"] = "0001-01-01T00:00:00Z"
    labels = {f"{i:0{MAX_NAME_CHARS}d}": "v" * MAX_LABEL_VALUE_CHARS for i in range(MAX_LABELS - 1)}
    first["labels"] = {"alertname": "Wide", **labels}
    annotations = {
        f"{i:0{MAX_NAME_CHARS}d}": "a" * MAX_ANNOTATION_VALUE_CHARS for i in range(MAX_ANNOTATIONS)
    }
    second["annotations"] = annotations
    second["fingerprint"] = "f" * MAX_FINGERPRINT_CHARS

    wide, annotated = parse_payload(body_of(data), NOW).alerts

    assert (wide.starts_at, wide.ends_at) == (EARLIEST_START, None)
    assert wide.labels == first["labels"]
    assert len(wide.labels) == MAX_LABELS
    assert annotated.annotations == annotations
    assert annotated.fingerprint == "f" * MAX_FINGERPRINT_CHARS


def test_a_firing_alert_may_end_far_ahead_and_a_resolved_one_within_the_tolerance() -> None:
    # Alertmanager sets a firing alert's endsAt ahead (when it will resolve it
    # if nothing renews it); amtool sets it years ahead. Clocks differ a little.
    data = recorded()
    firing, resolved = data["alerts"]
    firing["endsAt"] = "9999-12-31T23:59:59Z"
    resolved["endsAt"] = format_time(NOW + MAX_START_AHEAD)

    first, second = parse_payload(body_of(data), NOW).alerts

    assert first.ends_at == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert second.ends_at == NOW + MAX_START_AHEAD


def test_an_annotation_value_over_the_cap_is_cut_not_refused() -> None:
    # A description templated from a query can grow this long in a real rule;
    # refusing it would lose the delivery's other alerts (no retry after a 4xx).
    data = recorded()
    long = "".join(f"line {i}\n" for i in range(20_000))
    assert len(long) > MAX_ANNOTATION_VALUE_CHARS
    data["alerts"][0]["annotations"]["description"] = long
    data["alerts"][1]["annotations"]["summary"] = "s" * (MAX_ANNOTATION_VALUE_CHARS + 1)

    cut, other = parse_payload(body_of(data), NOW).alerts

    description = cut.annotations["description"]
    assert len(description) == MAX_ANNOTATION_VALUE_CHARS
    assert description == long[: MAX_ANNOTATION_VALUE_CHARS - 1] + "\u2026"
    assert cut.annotations["summary"] == "Interface Gi0/1 on sw-core-1 is down"
    assert other.annotations["summary"] == "s" * (MAX_ANNOTATION_VALUE_CHARS - 1) + "\u2026"
    assert other.fingerprint == "28dabb766dc3f91a"


def test_start_is_checked_against_the_clock_by_default() -> None:
    data = recorded()
    data["alerts"][0]["startsAt"] = format_time(datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(BadRequestError, match=r"alerts\[0\]\.startsAt: more than 10 minutes"):
        parse_payload(body_of(data))
