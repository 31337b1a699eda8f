"""Alertmanager's webhook (payload version 4): ``POST /api/v1/alertmanager``.

:func:`parse_payload` is a pure parser from request bytes to a
:class:`WebhookPayload`; every problem it finds is a
:class:`~ai_sidecar.errors.BadRequestError` whose message names the JSON path
and what is wrong, so whoever configured the sender can fix it from the 400
alone. Beyond the shape it refuses what no Alertmanager sends and what would
do harm once stored: a label name that is empty or holds a control or
formatting character, and a fingerprint that holds one; a ``startsAt`` more
than :data:`MAX_START_AHEAD` in the future (its enriched copy would never
expire and keep muting the raw alert), or before :data:`EARLIEST_START`
(Go's zero time among them: no start at all);
an ``endsAt`` before ``startsAt`` (Go's zero time means no end), and a
resolved alert's ``endsAt`` more than :data:`MAX_START_AHEAD` in the future
(correlation adds windows to it, and year 9999 plus a window overflows); a
``truncatedAlerts`` outside 0 to :data:`MAX_TRUNCATED_ALERTS`; two alerts
with one fingerprint but different labels (one fingerprint is one label set);
and an alert larger than real rules make (see :data:`MAX_LABELS`). An
annotation value longer than :data:`MAX_ANNOTATION_VALUE_CHARS` is cut to
that length instead: a templated description can grow that long in a real
rule, and refusing it would refuse the whole delivery, whose other alerts
Alertmanager does not send again after a 4xx.

:func:`receive` is the handler. It checks the token, the size and the media
type, parses (a large body in a worker thread, so the event loop keeps serving
other requests meanwhile), stores the alerts durably and only then answers
200. Bad input is a 4xx, which Alertmanager does not retry; a store that
cannot write now is a 503, which it does retry. Delivery is at least once and HA peers send the same
alerts, so storage is idempotent and repeats are counted, not stored twice.
Enriched copies of alerts that Alertmanager routed back here (the loop guard)
are dropped and counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Literal

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from ai_sidecar.auth import require_token
from ai_sidecar.errors import (
    ApiError,
    BadRequestError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaError,
)
from ai_sidecar.keys import METRICS, SETTINGS, STORE, WAKEUP
from ai_sidecar.models import Alert, format_time
from ai_sidecar.store import StoreError

log = logging.getLogger(__name__)

SUPPORTED_VERSION = "4"
# Go's zero time.Time: Alertmanager's endsAt for an alert with no known end.
GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
# The earliest startsAt taken: the Unix epoch. Alertmanager never sends the
# zero time as a start (its API gives an alert without one the time it arrived,
# and its validation calls a zero start "start time missing"), but it takes any
# other start, however old: 0.25 accepts 1900-01-01 or 0001-01-01T00:00:01Z on
# its API, which has no authentication by default, and delivers them to this
# webhook. Prometheus stamps alerts with its clock in milliseconds since the
# epoch, so no real alert starts before it. Incidents are correlated on the
# alerts' own startsAt, and a start near year 1 leaves no room for the windows'
# arithmetic: a start minus a window overflows, and the worker would fail on
# every batch that holds the alert, for good.
EARLIEST_START = datetime(1970, 1, 1, tzinfo=UTC)
# Most labels and annotations one alert may carry. Prometheus and Alertmanager
# set no limit (Alertmanager 0.25 takes an alert of 100,000 labels, 1.6 MB, and
# delivers it here); a real alert has its series' labels plus its rule's and
# the external ones, a few dozen at most. Every label travels with the alert's
# enriched copy, which is posted again to every peer each repost interval while
# it fires and rendered and hashed again whenever its incident changes (0.8 s
# for that one alert): without a cap, one request costs that again and again.
MAX_LABELS = 256
MAX_ANNOTATIONS = 256
# Longest label or annotation name: Kubernetes label keys copied into labels
# (label_ plus a 253-character prefix and a 63-character name) reach about 320.
MAX_NAME_CHARS = 1024
# Longest label value and annotation value. Label values identify the alert
# and go back to Alertmanager unchanged: probe URLs or ifAlias texts are far
# shorter. Annotations carry descriptions and runbook text, so more room; a
# longer annotation value is cut (ending in CUT_MARK), not refused, because a
# description templated from a query result can grow that long in a real rule.
MAX_LABEL_VALUE_CHARS = 16 * 1024
MAX_ANNOTATION_VALUE_CHARS = 64 * 1024
CUT_MARK = "\u2026"
# Alertmanager's fingerprints are 16 hex digits; the store indexes them.
MAX_FINGERPRINT_CHARS = 128
# A 400 lists at most this many problems; a payload broken everywhere would
# otherwise answer with a message as large as itself.
MAX_PROBLEMS = 5
# Values echoed in messages are cut to this many characters.
MAX_ECHO = 64
# How far ahead of the sidecar's clock an alert may start, or a resolved one
# end: clocks of Prometheus, Alertmanager and the sidecar differ a little,
# never by more.
MAX_START_AHEAD = timedelta(minutes=10)
# Alertmanager counts the alerts that max_alerts cut off a delivery; no group
# is larger than this.
MAX_TRUNCATED_ALERTS = 1_000_000
# Bodies larger than this are parsed in a worker thread. Parsing costs about
# 80 ns a byte: a 16 MiB body held the event loop, and every other request,
# for over a second; one of this size takes a few milliseconds, less than the
# hop to a thread is worth for the one-alert deliveries that make up most
# traffic.
PARSE_OFF_LOOP_BYTES = 64 * 1024

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # only 0-9 are digits: int() would accept other scripts' digits
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


class StoreUnavailableError(ApiError):
    """503: the alerts could not be stored now; Alertmanager retries on a 5xx."""

    http_status = 503


@dataclass(frozen=True, slots=True)
class WebhookPayload:
    """One webhook request of Alertmanager, envelope and alerts."""

    version: str
    group_key: str
    truncated_alerts: int
    status: str
    receiver: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    alerts: tuple[Alert, ...]


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def _echo(value: object) -> str:
    """A value as JSON for a message, cut to MAX_ECHO characters (containers by type)."""
    if isinstance(value, str):
        cut = value[:MAX_ECHO]
        # ensure_ascii: escapes control characters, so a message stays one line.
        return json.dumps(cut) + ("..." if len(value) > MAX_ECHO else "")
    if isinstance(value, dict | list | tuple):
        return f"an {_json_type(value)}"
    text = json.dumps(value)
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


def _time_error(problem: str, value: str) -> PydanticCustomError:
    # The message is fully formatted here: braces in the value must stay literal.
    return PydanticCustomError("scout", "{message}", {"message": f"{problem}: {_echo(value)}"})


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "scout",
            "{message}",
            {"message": f"must be an RFC 3339 time string, got {_json_type(value)}"},
        )
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise _time_error("not an RFC 3339 time", value)
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    # Go writes nanoseconds; Python keeps microseconds, so the rest is dropped.
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        if zulu:
            tz = UTC
        else:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            if int(off_m) > 59:
                raise ValueError("offset minutes out of range")
            tz = timezone(-offset if sign == "-" else offset)
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise _time_error(f"not a valid time ({exc})", value) from None


def _parse_start(value: object) -> datetime:
    parsed = _parse_time(value)
    if parsed == GO_ZERO_TIME:  # what Go writes for a time never set
        raise _time_error("Go's zero time (unset); an alert must say when it started", str(value))
    if parsed < EARLIEST_START:
        raise _time_error(f"before the Unix epoch ({format_time(EARLIEST_START)})", str(value))
    return parsed


def _parse_end(value: object) -> datetime | None:
    if value is None:
        return None
    parsed = _parse_time(value)
    return None if parsed == GO_ZERO_TIME else parsed


def _cut_annotation(value: str) -> str:
    if len(value) <= MAX_ANNOTATION_VALUE_CHARS:
        return value
    return value[: MAX_ANNOTATION_VALUE_CHARS - len(CUT_MARK)] + CUT_MARK


def _check_version(value: object) -> str:
    if value != SUPPORTED_VERSION:
        raise PydanticCustomError(
            "scout_version",
            "{message}",
            {
                "message": f"unsupported webhook payload version {_echo(value)}; "
                f'only version "{SUPPORTED_VERSION}" (Alertmanager webhook v4) is supported'
            },
        )
    return SUPPORTED_VERSION


StartTime = Annotated[datetime, PlainValidator(_parse_start)]
EndTime = Annotated[datetime | None, PlainValidator(_parse_end)]
Name = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]
Labels = Annotated[
    dict[Name, Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE_CHARS)]],
    Field(min_length=1, max_length=MAX_LABELS),
]
Annotations = Annotated[
    dict[Name, Annotated[str, AfterValidator(_cut_annotation)]],
    Field(max_length=MAX_ANNOTATIONS),
]


class _AlertIn(BaseModel):
    # Unknown keys are ignored: Alertmanager may add fields in later releases.
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Annotations = Field(default_factory=dict)
    startsAt: StartTime
    endsAt: EndTime = None
    generatorURL: str = ""
    fingerprint: Annotated[str, Field(min_length=1, max_length=MAX_FINGERPRINT_CHARS)]


class _PayloadIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Annotated[str, PlainValidator(_check_version)]
    groupKey: str = ""
    truncatedAlerts: Annotated[int, Field(ge=0, le=MAX_TRUNCATED_ALERTS)] = 0
    status: str = ""
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[_AlertIn]


def _path(loc: tuple[int | str, ...]) -> str:
    """``alerts[3].labels.team``; keys that are not identifiers in brackets: ``labels["a.b"]``,
    as are long ones, cut like any echoed value."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif len(item) <= MAX_ECHO and _IDENTIFIER.fullmatch(item):
            parts.append(f".{item}" if parts else item)
        else:
            parts.append(f"[{_echo(item)}]")
    return "".join(parts)


def _problem(error: ErrorDetails) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind in ("scout", "scout_version"):
        what = str(ctx["message"])
    elif kind == "missing":
        what = "required"
    elif kind == "string_type":
        what = f"must be a string, got {_json_type(value)}"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        what = f"must be an object, got {_json_type(value)}"
    elif kind == "list_type":
        what = f"must be an array, got {_json_type(value)}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        what = f"must be a whole number, got {_echo(value)}"
    elif kind == "greater_than_equal":
        what = f"must be 0 or more, got {_echo(value)}"
    elif kind == "less_than_equal":
        what = f"must be at most {ctx['le']}, got {_echo(value)}"
    elif kind in ("too_short", "string_too_short"):
        what = "must not be empty"
    elif kind == "too_long":  # pydantic stops counting at the limit
        what = f"must have at most {ctx['max_length']} entries"
    elif kind == "string_too_long" and isinstance(value, str):
        what = f"must be at most {ctx['max_length']} characters, got {len(value)}"
    elif kind == "literal_error":
        what = f'must be "firing" or "resolved", got {_echo(value)}'
    else:  # anything pydantic adds later still gets a readable message
        what = error["msg"]
    loc = error["loc"]
    # A problem of a name, not of its value: pydantic locates a key's problem at
    # (..., "labels", key, "[key]"), and a value's at (..., "labels", key), whose
    # key may itself be "[key]".
    if len(loc) >= 3 and loc[-1] == "[key]" and loc[-3] in ("labels", "annotations"):
        loc, what = loc[:-1], f"name {what}"
    path = _path(loc)
    if not path:  # the body itself is not an object
        return f"request body must be a JSON object, got {_json_type(value)}"
    return f"{path}: {what}"


def _odd_label_name(name: str) -> str | None:
    """What is wrong with a label name, if anything."""
    if not name:
        return "label name must not be empty"
    # Cc: control characters; Cf: formatting ones, bidi overrides among them.
    # isprintable() is False for both, so most names skip the per-character pass.
    if not name.isprintable() and any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        return f"label name must not hold control or formatting characters: {_echo(name)}"
    return None


def _consistency_problems(model: _PayloadIn, now: datetime) -> list[str]:
    """What is wrong across fields: label names, times, repeated fingerprints."""
    problems: list[str] = []
    labels_of: dict[str, tuple[int, dict[str, str]]] = {}
    latest = now + MAX_START_AHEAD
    ahead = f"{MAX_START_AHEAD.total_seconds() / 60:g} minutes"
    # Each distinct name checked once: a storm repeats the same few names.
    names: set[str] = set().union(*(alert.labels for alert in model.alerts))
    odd = {name: problem for name in names if (problem := _odd_label_name(name))}
    for index, alert in enumerate(model.alerts):
        for name in sorted(alert.labels.keys() & odd.keys()) if odd else ():
            problems.append(f"{_path(('alerts', index, 'labels', name))}: {odd[name]}")
        if alert.startsAt > latest:
            problems.append(
                f"alerts[{index}].startsAt: more than {ahead} in the future"
                f" (now {format_time(now)}): {format_time(alert.startsAt)}"
            )
        fingerprint = alert.fingerprint
        # U+0000 among them: no Alertmanager sends it, and PostgreSQL keeps no such text.
        if not fingerprint.isprintable() and any(
            unicodedata.category(ch) in ("Cc", "Cf") for ch in fingerprint
        ):
            problems.append(
                f"alerts[{index}].fingerprint: must not hold control or formatting characters:"
                f" {_echo(fingerprint)}"
            )
        if alert.endsAt is not None and alert.endsAt < alert.startsAt:
            problems.append(
                f"alerts[{index}].endsAt: before startsAt: {format_time(alert.endsAt)}"
                f" < {format_time(alert.startsAt)}"
            )
        # A firing alert's endsAt is when Alertmanager will call it resolved if
        # nothing renews it, so ahead is normal (amtool sets it years ahead); the
        # sidecar never computes with it. A resolved alert has ended.
        elif alert.status == "resolved" and alert.endsAt is not None and alert.endsAt > latest:
            problems.append(
                f"alerts[{index}].endsAt: a resolved alert cannot end in the future, more than"
                f" {ahead} (now {format_time(now)}): {format_time(alert.endsAt)}"
            )
        first, labels = labels_of.setdefault(alert.fingerprint, (index, alert.labels))
        if labels is not alert.labels and labels != alert.labels:
            problems.append(
                f"alerts[{index}].fingerprint: {_echo(alert.fingerprint)} is also"
                f" alerts[{first}]'s, whose labels differ; one fingerprint is one label set"
            )
    return problems


def _listed(problems: list[str], total: int) -> str:
    message = "; ".join(problems[:MAX_PROBLEMS])
    if total > MAX_PROBLEMS:
        message += f"; and {total - MAX_PROBLEMS} more"
    return message


def _bad_payload(exc: ValidationError) -> BadRequestError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", first["msg"])
        return BadRequestError(f"request body is not valid JSON: {detail}")
    # A payload of another version has another shape: its field errors would be noise.
    for error in errors:
        if error["type"] == "scout_version":
            return BadRequestError(_problem(error))
    problems = [_problem(e) for e in errors[:MAX_PROBLEMS]]
    return BadRequestError(_listed(problems, len(errors)))


def parse_payload(body: bytes, now: datetime | None = None) -> WebhookPayload:
    """Parse and validate a webhook body; raise BadRequestError saying what is wrong and where.

    ``now`` (default: the clock) is what a ``startsAt`` may not be far ahead of.
    """
    if not body.strip():
        raise BadRequestError("request body is empty; expected an Alertmanager webhook payload")
    try:
        model = _PayloadIn.model_validate_json(body)
    except ValidationError as exc:
        raise _bad_payload(exc) from None
    problems = _consistency_problems(model, _now() if now is None else now)
    if problems:
        raise BadRequestError(_listed(problems, len(problems)))
    return WebhookPayload(
        version=model.version,
        group_key=model.groupKey,
        truncated_alerts=model.truncatedAlerts,
        status=model.status,
        receiver=model.receiver,
        group_labels=model.groupLabels,
        common_labels=model.commonLabels,
        common_annotations=model.commonAnnotations,
        external_url=model.externalURL,
        alerts=tuple(
            Alert(
                fingerprint=a.fingerprint,
                status=a.status,
                labels=a.labels,
                annotations=a.annotations,
                starts_at=a.startsAt,
                ends_at=a.endsAt,
                generator_url=a.generatorURL,
            )
            for a in model.alerts
        ),
    )


def admitted(alert: Alert, now: datetime) -> Alert:
    """``alert`` as this webhook would store it from a delivery at ``now`` (annotation
    values cut); BadRequestError, saying why, if it would refuse it.

    For alerts that come in by another road (read back from Alertmanager's API
    by reconciliation), so that no road lets in what the webhook keeps out.
    """
    delivered = {
        "status": alert.status,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": format_time(alert.starts_at),
        "endsAt": format_time(alert.ends_at or GO_ZERO_TIME),
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }
    body = json.dumps({"version": SUPPORTED_VERSION, "alerts": [delivered]}).encode()
    (parsed,) = parse_payload(body, now).alerts
    return replace(alert, annotations=parsed.annotations)


ALERTS_NOT_STORED = "alerts not stored, retry later: the store cannot write now"
# Where Alertmanager posts (the receiver in alertmanager.yml).
WEBHOOK_PATH = "/api/v1/alertmanager"


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body is larger than the limit of {limit} bytes")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, however many TCP segments it came in, refusing more than
    ``limit`` bytes whatever Content-Length claimed."""
    chunks: list[bytes] = []
    size = 0
    # A chunked body has no length up front, and a declared one may lie: read
    # at most one byte past the limit, never the whole thing.
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise _too_large(limit)
    return b"".join(chunks)


def _now() -> datetime:
    return datetime.now(UTC)


async def _parse(body: bytes) -> WebhookPayload:
    """parse_payload, in a worker thread for a body above PARSE_OFF_LOOP_BYTES."""
    if len(body) > PARSE_OFF_LOOP_BYTES:
        return await asyncio.to_thread(parse_payload, body)
    return parse_payload(body)


async def receive(request: web.Request) -> web.Response:
    """Validate, store durably, then acknowledge one webhook request."""
    app = request.app
    settings = app[SETTINGS]
    metrics = app[METRICS]
    try:
        require_token(request, settings.webhook_token)
    except UnauthorizedError:
        metrics.webhook.alerts_invalid.labels("unauthorized").inc()
        raise
    limit = settings.max_body_bytes
    declared = request.content_length
    # Refused before the media type and before reading: nothing of it is needed.
    if declared is not None and declared > limit:
        metrics.webhook.alerts_invalid.labels("too_large").inc()
        raise _too_large(limit)
    if request.content_type != "application/json":
        metrics.webhook.alerts_invalid.labels("media_type").inc()
        raise UnsupportedMediaError(
            f"Content-Type must be application/json, got {_echo(request.content_type)}"
        )
    try:
        body = await read_body(request, limit)
    except PayloadTooLargeError:
        metrics.webhook.alerts_invalid.labels("too_large").inc()
        raise
    try:
        payload = await _parse(body)
    except BadRequestError as exc:
        metrics.webhook.alerts_invalid.labels("invalid").inc()
        log.info("webhook payload refused", extra={"reason": str(exc)[:300]})
        raise

    # The loop guard: an enriched copy came back through Alertmanager's routing.
    alerts = [a for a in payload.alerts if not a.is_enriched]
    looped = len(payload.alerts) - len(alerts)
    if looped:
        metrics.webhook.alerts_looped.inc(looped)
    if payload.truncated_alerts:
        metrics.webhook.alerts_truncated.inc(payload.truncated_alerts)

    try:
        result = await app[STORE].ingest(alerts, _now())
    except StoreError as exc:
        # The reason is for the log only, as on every other endpoint: it names
        # the store's file or the database's host and user.
        log.warning("cannot store webhook alerts; answering 503", extra={"reason": str(exc)})
        raise StoreUnavailableError(ALERTS_NOT_STORED) from exc
    metrics.webhook.alerts_received.inc(result.new + result.duplicates)
    metrics.webhook.alerts_duplicate.inc(result.duplicates)
    if result.new:
        app[WAKEUP].set()
    return web.json_response(
        {
            "status": "stored",
            "alerts": len(payload.alerts),
            "new": result.new,
            "duplicates": result.duplicates,
            "ignored_enriched": looped,
        }
    )
