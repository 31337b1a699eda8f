"""Reconciliation: raw alerts read back from Alertmanager, a second intake beside the webhook.

**Reconciliation, and the Alertmanager behaviour behind it.** The inhibition
that mutes a raw alert while its enriched copy fires also mutes the raw
alert's notifications to the sidecar's own webhook receiver: muting happens
per notification, whatever the receiver. That includes the raw alert's
*resolution*, and Alertmanager does not send it later either, not even once
the copy is gone: a resolved alert that a flush has handled (here: muted)
leaves its aggregation group. Verified against Alertmanager 0.25 in
``tests/ai_sidecar/intake/test_reconcile.py``
(``test_premise_inhibited_resolution_never_reaches_the_webhook``). Without a
remedy the sidecar would keep the copy alive forever, and with it the
inhibition.

So on every keep-alive round the sidecar asks each peer which raw alerts it
still has: ``GET /api/v2/alerts`` with ``active``, ``silenced``,
``inhibited`` and ``unprocessed`` all ``true`` (so the inhibited ones are
listed too) and ``filter=scout_enriched!="true"``. Alertmanager 0.25 answers
with firing alerts only (a resolved alert is left out even while it is kept)
and gives each its label-set ``fingerprint``, the same value its webhook
sends. A member whose fingerprint no peer that answered lists, for at least
``missing_grace`` (default: two repost intervals), is handed to
``take_in`` as a resolved alert, so the normal pipeline resolves it
and the resolution of its copy follows. The grace covers an Alertmanager that
restarted (it keeps no alerts across a restart) until Prometheus sends its
alerts again, about a minute later. When no peer answers nothing is resolved:
an unreachable peer is not evidence.

**When it resolved.** Alertmanager's API leaves a resolved alert out, so its
``endsAt`` is never there to read: a member gone from every peer is stamped
resolved at the last reconciliation that saw it listed (by this process; if
none did, when it was first seen missing). The true end lies between that
time and the next reconciliation, so the stamp is early by less than one
repost interval, never late by the grace: an alert may read as having
lasted up to one interval less than it did, never longer.

The same answer covers the inhibition's other blind spot. Its ``equal`` list
cannot name every label, so an enriched copy can also mute a sibling raw
alert that differs only in an unlisted label (a second disk on the same
host), and that sibling then never reaches the webhook either. Any raw alert
that a peer reports inhibited by one of the sidecar's own copies, and whose
episode the store does not hold, is handed to the pipeline as a firing alert,
the way the webhook would have delivered it.

And a third: a raw alert that fires again after its episode resolved. Its
resolution was muted on the sidecar's receiver too, so Alertmanager's
notification log still holds it as notified firing there, and a new episode
with the same labels (same fingerprint, a new ``startsAt``) is not sent to the
webhook before that route's ``repeat_interval`` (1 h) has passed. So any
listed raw alert whose fingerprint the store knows (the webhook delivered it
once: it is on the sidecar's route) but whose episode (fingerprint and
``startsAt``) it does not, and that a peer lists as active (not silenced, not
inhibited by the operator's own rules: a maintenance silence keeps a flapping
device out of the sidecar, as it keeps it from people), is also handed on as
firing; the correlator's flap
rules then reopen the incident or place the new episode. Reconciliation
therefore runs every interval, also while no copy fires. A fingerprint the
store has never seen is left to the webhook unless one of our copies mutes it:
Alertmanager only holds back what it notified before, and alerts of the routes
that never reach the sidecar (Watchdog, the sidecar's own alerts) must not
reach the correlator. (A fingerprint whose rows retention pruned is unknown
again: its re-fire waits for the repeat, or reaches people raw.) The API
gives ``startsAt`` to the millisecond and the webhook to the microsecond, so
episodes are compared to the millisecond.

Nothing is taken in by this road that the webhook would refuse, and what is
taken in is cut as the webhook cuts it (:func:`ai_sidecar.webhook.admitted`):
Alertmanager's API takes such alerts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from ai_sidecar.errors import BadRequestError
from ai_sidecar.models import Alert, episode_start, parse_time
from ai_sidecar.store import Store
from ai_sidecar.webhook import admitted

log = logging.getLogger("ai_sidecar.intake.reconcile")


class RawAlertSource(Protocol):
    """Where the raw alerts of the Alertmanager peers are read (``GET /api/v2/alerts``)."""

    async def raw_alerts(self, peer: str) -> list[dict[str, Any]] | None:
        """The raw alerts ``peer`` holds, each with its ``fingerprint``; None: no answer."""
        ...


def _listed_raw(raw: Mapping[str, Any]) -> Alert | None:
    """A raw alert from Alertmanager's API as the webhook would have delivered it."""
    try:
        labels = {str(k): str(v) for k, v in raw["labels"].items()}
        annotations = {str(k): str(v) for k, v in (raw.get("annotations") or {}).items()}
        starts_at = parse_time(str(raw["startsAt"]).replace("Z", "+00:00"))
    except (KeyError, AttributeError, TypeError, ValueError):
        return None
    return Alert(
        fingerprint=str(raw["fingerprint"]),
        status="firing",
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        generator_url=str(raw.get("generatorURL") or ""),
    )


def _resolved_raw(member_fingerprint: str, raw: str, ends_at: datetime) -> Alert:
    data = json.loads(raw)
    starts_at = parse_time(data["startsAt"])
    return Alert(
        fingerprint=member_fingerprint,
        status="resolved",
        labels=data["labels"],
        annotations=data["annotations"],
        starts_at=starts_at,
        ends_at=max(ends_at, starts_at),
        generator_url=data["generatorURL"],
    )


Episode = tuple[str, datetime]


def _episode(fingerprint: str, starts_at: datetime) -> Episode:
    return fingerprint, episode_start(starts_at)


def _member_episode(member_fingerprint: str, raw: str) -> Episode:
    return _episode(member_fingerprint, parse_time(json.loads(raw)["startsAt"]))


class Reconciler:
    """Resolves members gone from every peer; takes in raw alerts the webhook withholds.

    The return trip calls :meth:`run_if_due` on each round; a reconciliation
    runs every ``interval``.
    """

    def __init__(
        self,
        store: Store,
        peers: Sequence[str],
        source: RawAlertSource,
        *,
        interval: timedelta,
        grace: timedelta,
        take_in: Callable[[Sequence[Alert]], Awaitable[None]],
        permitted: Callable[[], bool] = lambda: True,
    ) -> None:
        """``permitted``: whether this replica still leads. A replica that no
        longer does reconciles nothing and takes nothing in: the new leader's
        reconciler does."""
        self._store = store
        self._peers = tuple(peers)
        self._source = source
        self._interval = interval
        self._grace = grace
        self._take_in = take_in
        self._permitted = permitted
        self._next_at: datetime | None = None
        self._missing_since: dict[str, datetime] = {}
        # Member fingerprint -> the last reconciliation that saw it listed:
        # the stamp of its resolution once it is gone (see the module docstring).
        self._seen_at: dict[str, datetime] = {}
        # Withheld episodes left out because the webhook would refuse them,
        # logged once each while a peer lists them.
        self._refused: set[Episode] = set()

    @property
    def next_at(self) -> datetime | None:
        """When the next reconciliation is due; None before the first."""
        return self._next_at

    async def run_if_due(self, now: datetime) -> None:
        """Reconcile if it is time, and plan the next one."""
        if self._next_at is not None and now < self._next_at:
            return
        if not self._permitted():
            return  # still due: the next round, leading again, reconciles
        # Reading every firing member is the costly part of a round in a storm,
        # so it happens only when a reconciliation is due. It runs while no
        # copy fires too: a re-fire after a resolve is caught up then.
        self._next_at = now + self._interval
        firing = await self._store.firing_members()
        await self._reconcile(firing, now)

    async def _catch_up(
        self, answered: Sequence[list[dict[str, Any]]], firing: Mapping[str, str], now: datetime
    ) -> None:
        """Hand on listed raw alerts the webhook withholds (see the module docstring)."""
        ours = await self._store.firing_copies()
        held = {_member_episode(member, raw) for member, raw in firing.items()}
        listed: dict[Episode, Alert] = {}
        muted: set[str] = set()
        # Episodes some peer lists as active: neither silenced (an operator's
        # maintenance window) nor inhibited by the operator's own rules.
        active: set[Episode] = set()
        for answer in answered:
            for raw in answer:
                alert = _listed_raw(raw)
                if alert is None:
                    continue
                episode = _episode(alert.fingerprint, alert.starts_at)
                if episode in held:
                    continue
                listed.setdefault(episode, alert)
                status = raw.get("status") or {}
                inhibited_by = status.get("inhibitedBy") or []
                if any(source in ours for source in inhibited_by):
                    muted.add(alert.fingerprint)
                elif status.get("state") == "active":
                    active.add(episode)
        self._refused.intersection_update(listed)
        if not listed:
            return
        stored = {
            _episode(fingerprint, starts_at)
            for fingerprint, starts_at in await self._store.stored_episodes(
                sorted({fingerprint for fingerprint, _ in listed})
            )
        }
        known = {fingerprint for fingerprint, _ in stored}
        withheld = [
            alert
            for episode, alert in listed.items()
            if episode not in stored
            and (alert.fingerprint in muted or (alert.fingerprint in known and episode in active))
        ]
        withheld = self._admissible(withheld, now)
        if not withheld or not self._permitted():
            return
        log.info(
            "raw alerts Alertmanager withholds from the webhook; taking them in",
            extra={"alerts": len(withheld), "fingerprints": [a.fingerprint for a in withheld[:20]]},
        )
        try:
            await self._take_in(withheld)
        except asyncio.CancelledError:
            raise
        except Exception:  # pipeline boundary: the next round tries again
            log.exception("handing withheld raw alerts to the pipeline failed")

    def _admissible(self, withheld: list[Alert], now: datetime) -> list[Alert]:
        """``withheld`` without what the webhook would refuse, and cut as it would cut.

        Alertmanager's API has no authentication by default and takes alerts the
        webhook refuses (a ``startsAt`` in year 1, a hundred thousand labels);
        it even moves an alert's ``startsAt`` to the earliest one posted with
        its labels. Read back here, such an alert must not reach the pipeline.
        """
        admissible = []
        for alert in withheld:
            try:
                admissible.append(admitted(alert, now))
                continue
            except BadRequestError as exc:
                problem = str(exc)
            episode = _episode(alert.fingerprint, alert.starts_at)
            if episode not in self._refused:
                self._refused.add(episode)
                log.warning(
                    "raw alert Alertmanager lists that the webhook would refuse; not taken in",
                    extra={"fingerprint": alert.fingerprint, "reason": problem[:300]},
                )
        return admissible

    async def _reconcile(self, firing: Mapping[str, str], now: datetime) -> None:
        answers = await asyncio.gather(*(self._source.raw_alerts(peer) for peer in self._peers))
        answered = [answer for answer in answers if answer is not None]
        if not answered:
            return  # no evidence either way: keep everything alive
        if not self._permitted():
            return  # the lead lapsed while the peers answered
        present = {a["fingerprint"] for answer in answered for a in answer}
        await self._catch_up(answered, firing, now)
        for member in list(self._missing_since):
            if member in present or member not in firing:
                del self._missing_since[member]
        for member in list(self._seen_at):
            if member not in firing:
                del self._seen_at[member]
        gone: list[Alert] = []
        for member, raw in firing.items():
            if member in present:
                self._seen_at[member] = now
                continue
            since = self._missing_since.setdefault(member, now)
            if now - since >= self._grace:
                gone.append(_resolved_raw(member, raw, self._seen_at.get(member, since)))
                # Not again before another grace: the pipeline needs time to act.
                self._missing_since[member] = now
        if not gone or not self._permitted():
            return
        log.info(
            "raw alerts gone from every Alertmanager; resolving them",
            extra={"alerts": len(gone), "fingerprints": [a.fingerprint for a in gone[:20]]},
        )
        try:
            await self._take_in(gone)
        except asyncio.CancelledError:
            raise
        except Exception:  # pipeline boundary: the next round tries again
            log.exception("handing resolved raw alerts to the pipeline failed")
