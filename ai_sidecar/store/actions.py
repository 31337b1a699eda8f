"""What people did to incidents from the console, and feedback over a period:
the SQL and row codecs both stores share.

Actors and details are stored as ASCII JSON text, as feedback comments are in
PostgreSQL: whatever a person typed (even U+0000) is kept as typed. Times are
the stores' fixed-width UTC text, so a period is a range on ``at``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from ai_sidecar.store.protocol import ACTION_KINDS, ActionKind, Feedback, IncidentAction
from ai_sidecar.store.sqlite.incidents import encode_json, stamp, unstamp


@dataclass(frozen=True)
class ActionQueries:
    """The statements, written with one backend's parameter marker."""

    incident_exists: str
    insert: str
    of_incident: str
    between: str
    feedback_between: str
    delete_of: str


def action_queries(mark: str, any_of: str) -> ActionQueries:
    """``mark``: the parameter marker (``?``, ``%s``); ``any_of``: a membership test
    on ``incident_id`` for a list of ids, with its markers."""
    columns = "incident_id, kind, actor, detail, at"
    return ActionQueries(
        incident_exists=f"SELECT 1 FROM incidents WHERE id = {mark}",
        insert=(
            f"INSERT INTO incident_actions ({columns})"
            f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark})"
        ),
        of_incident=(
            f"SELECT {columns} FROM incident_actions WHERE incident_id = {mark} ORDER BY id"
        ),
        between=(
            f"SELECT {columns} FROM incident_actions WHERE at >= {mark} AND at < {mark}"
            " ORDER BY at, id"
        ),
        feedback_between=(
            "SELECT incident_id, useful, comment, at FROM feedback"
            f" WHERE at >= {mark} AND at < {mark} ORDER BY at, id"
        ),
        delete_of=f"DELETE FROM incident_actions WHERE incident_id {any_of}",
    )


# Backends read these at call time: the stores import this module while
# ai_sidecar.store.sqlite is still being imported.
SQLITE = action_queries("?", "IN ({marks})")
POSTGRES = action_queries("%s", "= ANY(%s)")


def action_row(action: IncidentAction) -> tuple[str, str, str, str, str]:
    if action.kind not in ACTION_KINDS:
        raise ValueError(f"unknown action kind {action.kind!r}")
    return (
        action.incident_id,
        action.kind,
        encode_json(action.actor),
        encode_json(action.detail),
        stamp(action.at),
    )


def decode_actions(rows: Sequence[Sequence[Any]]) -> list[IncidentAction]:
    return [
        IncidentAction(
            incident_id,
            cast(ActionKind, kind),
            json.loads(actor),
            json.loads(detail),
            unstamp(at),
        )
        for incident_id, kind, actor, detail, at in rows
    ]


def decode_feedback(rows: Sequence[Sequence[Any]], *, json_comments: bool) -> list[Feedback]:
    """Feedback rows; PostgreSQL keeps comments as JSON text, SQLite as they came."""
    return [
        Feedback(
            incident_id,
            bool(useful),
            json.loads(comment) if json_comments else comment,
            unstamp(at),
        )
        for incident_id, useful, comment, at in rows
    ]
