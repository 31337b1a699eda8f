"""The LLM audit: every exchange kept in the store.

:class:`StoreAudit` is the :class:`~ai_sidecar.enrichment.llm.base.LlmAudit`
the guard writes to (``LlmGuard(config, metrics, audit=StoreAudit(store))``):
the store's verb has a precise name (``record_llm_exchange``), the audit seam a
short one. The incident API shows an incident's exchanges and
``scout-sidecar llm audit`` exports them, both in the JSON shape of
:func:`ai_sidecar.store.exchanges.exchange_to_json`.
"""

from __future__ import annotations

import logging

from ai_sidecar.enrichment.llm.base import LlmExchange
from ai_sidecar.store.protocol import Store, StoreError

log = logging.getLogger("ai_sidecar.enrichment.llm.audit")


class StoreAudit:
    """Keeps each exchange in ``store`` for ``llm.audit_retention``.

    A store that cannot take the record now (a full disk) costs the record,
    not the answer: the call was made and paid for, and failing it would make
    the worker retry the incident and pay again. The loss is logged.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def record(self, exchange: LlmExchange) -> None:
        try:
            await self._store.record_llm_exchange(exchange)
        except StoreError as exc:
            log.warning(
                "could not keep an LLM exchange in the audit",
                extra={"incident": exchange.incident_id, "error": str(exc)},
            )
