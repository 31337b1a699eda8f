"""LLM exchanges (the audit) as JSON: one shape for the stores, the API and the export.

The stores keep an exchange's text fields inside ASCII JSON (see
:mod:`ai_sidecar.store.postgres.schema`: a prompt holds alert text, any
character of which must be storable); the incident API shows an incident's
exchanges under ``llmExchanges`` and ``scout-sidecar llm audit`` writes one per
line, in the same shape. The SQL both stores run on their ``llm_exchanges``
table is here too, with the placeholder as a parameter, as
:func:`ai_sidecar.store.sqlite.incidents.listing_query` does for incidents.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from ai_sidecar.enrichment.llm.base import LlmExchange, Outcome
from ai_sidecar.models import format_time, parse_time
from ai_sidecar.store.protocol import LlmUsage
from ai_sidecar.store.sqlite.incidents import encode_json, stamp


def exchange_to_json(exchange: LlmExchange) -> dict[str, Any]:
    """An exchange as the API and the audit export show it (camelCase, like incidents)."""
    return {
        "incidentId": exchange.incident_id,
        "at": format_time(exchange.at),
        "provider": exchange.provider,
        "model": exchange.model,
        "outcome": exchange.outcome,
        "inputTokens": exchange.input_tokens,
        "outputTokens": exchange.output_tokens,
        "cost": exchange.cost,
        "latency": exchange.latency,
        "prompt": exchange.prompt,
        "answer": exchange.answer,
    }


def exchange_from_json(data: Mapping[str, Any]) -> LlmExchange:
    """The inverse of :func:`exchange_to_json`."""
    return LlmExchange(
        incident_id=data["incidentId"],
        at=parse_time(data["at"]),
        provider=data["provider"],
        model=data["model"],
        prompt=data["prompt"],
        answer=data["answer"],
        input_tokens=int(data["inputTokens"]),
        output_tokens=int(data["outputTokens"]),
        cost=float(data["cost"]),
        latency=float(data["latency"]),
        outcome=cast(Outcome, data["outcome"]),
    )


# --- the table both stores keep them in (llm_exchanges: id, incident_id, at, doc) ---


def exchange_row(exchange: LlmExchange) -> tuple[str, str, str]:
    """(incident_id, at, doc) of ``exchange``, ``at`` in the stores' sortable time text."""
    return exchange.incident_id, stamp(exchange.at), encode_json(exchange_to_json(exchange))


def insert_query(mark: str = "?") -> str:
    return f"INSERT INTO llm_exchanges (incident_id, at, doc) VALUES ({mark}, {mark}, {mark})"


def selection_query(
    incident_id: str | None, since: datetime | None, limit: int | None, mark: str = "?"
) -> tuple[str, list[Any]]:
    """The SQL (with ``mark`` as its placeholder) and parameters selecting exchange docs,
    newest first (:func:`decode_rows` puts them in time order)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    conditions = [
        (f"incident_id = {mark}", incident_id),
        (f"at >= {mark}", None if since is None else stamp(since)),
    ]
    used = [(condition, value) for condition, value in conditions if value is not None]
    params: list[Any] = [value for _, value in used]
    sql = "SELECT doc FROM llm_exchanges"
    if used:
        sql += " WHERE " + " AND ".join(condition for condition, _ in used)
    sql += " ORDER BY at DESC, id DESC"
    if limit is not None:
        sql += f" LIMIT {mark}"
        params.append(limit)
    return sql, params


def usage_query() -> str:
    """SQLite adds up an incident's exchanges (parameter: the incident id): calls,
    tokens, cost. Its ``json_extract`` reads one field and takes any ``\\uXXXX``
    escape elsewhere in the doc as it is."""
    field = "json_extract(doc, '$.{field}')"
    tokens = " + ".join(field.format(field=name) for name in ("inputTokens", "outputTokens"))
    cost = field.format(field="cost")
    return (
        f"SELECT count(*), coalesce(sum({tokens}), 0), coalesce(sum({cost}), 0)"
        " FROM llm_exchanges WHERE incident_id = ?"
    )


def decode_usage(row: Sequence[Any] | None) -> LlmUsage:
    if row is None:
        return LlmUsage()
    calls, tokens, cost = row
    return LlmUsage(int(calls), int(tokens), float(cost))


def docs_query(mark: str) -> str:
    """The docs of an incident's exchanges (parameter: the incident id), for
    :func:`usage_of_docs`."""
    return f"SELECT doc FROM llm_exchanges WHERE incident_id = {mark}"


def usage_of_docs(rows: Sequence[Sequence[Any]]) -> LlmUsage:
    """Adds up the exchanges of :func:`docs_query` in Python, as PostgreSQL cannot:
    its JSON parser refuses a ``\\u0000`` escape or a lone surrogate anywhere in a
    doc, and a prompt may hold either (alert text is whatever a client sent), so a
    cast to ``json`` would break the incident page."""
    docs = [json.loads(row[0]) for row in rows]
    return LlmUsage(
        len(docs),
        sum(int(d["inputTokens"]) + int(d["outputTokens"]) for d in docs),
        # fsum: the exact sum of many small costs, whatever their order.
        math.fsum(float(d["cost"]) for d in docs),
    )


def decode_rows(rows: Sequence[Sequence[Any]]) -> list[LlmExchange]:
    """Exchanges from the rows of :func:`selection_query`, oldest first."""
    return [exchange_from_json(json.loads(row[0])) for row in reversed(rows)]


def prune_query(mark: str = "?") -> str:
    """Deletes up to a batch of exchanges made before a time (parameters: time, batch)."""
    return (
        "DELETE FROM llm_exchanges WHERE id IN (SELECT id FROM llm_exchanges"
        f" WHERE at < {mark} ORDER BY at LIMIT {mark})"
    )
