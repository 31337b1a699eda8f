"""The store seam: what the sidecar keeps durably, as domain verbs, and the values they trade.

Every part of the sidecar that keeps data (the webhook, the worker, the
incidents API, the return trip) talks to a :class:`Store` and sees neither a
connection, a cursor nor SQL. SQLite (:mod:`ai_sidecar.store.sqlite`) is the
embedded implementation; another database only has to provide the same verbs
and pass ``tests/ai_sidecar/store/test_contract.py``.

What a store keeps:

- **alerts**: every delivery the webhook accepted, once per (fingerprint,
  status, startsAt), numbered by ``seq`` in arrival order; a ``seq`` is never
  handed out twice, even after pruning;
- **the cursor**: the highest ``seq`` the worker has folded into incidents
  (everything above it is the backlog);
- **incidents** with their members, and **feedback** on them, and beside
  each incident a summary row for the console's list
  (:mod:`ai_sidecar.store.listing`);
- **actions** people took on incidents from the console;
- **the outbox**: the enriched copies the return trip posts to each
  Alertmanager peer (:mod:`ai_sidecar.notify`), one row per peer and copy
  fingerprint, with when it is due next;
- **report digests**: which scheduled digest slots were sent, and who is
  sending one (:mod:`ai_sidecar.store.digests`);
- **the LLM audit**: every exchange with an LLM
  (:class:`~ai_sidecar.enrichment.llm.base.LlmExchange`), kept for
  ``llm.audit_retention`` whatever becomes of its incident.
- **console accounts**: users, their sessions and failed sign-ins
  (:mod:`ai_sidecar.store.accounts`), shared by replicas of one store.

Times in the outbox are Unix seconds (``float``), as the return trip computes
its schedule in them; everything else is an aware :class:`datetime`.

Errors::

    SidecarError
    └── StoreError              the store cannot take or serve data now: disk full,
        │                       I/O error, unreadable file; worth retrying later
        ├── StoreClosedError    the store was closed (shutdown in progress)
        └── SchemaVersionError  the data was written by a newer Scout; retrying
                                cannot help, the operator must upgrade
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from ai_sidecar.enrichment.llm.base import LlmExchange
from ai_sidecar.errors import SidecarError
from ai_sidecar.i18n import SOURCE_LANGUAGE
from ai_sidecar.models import Alert, Incident, IncidentStatus, Priority, ReceivedAlert


class StoreError(SidecarError):
    """The store cannot take or serve data now; the caller should retry later."""


class StoreClosedError(StoreError):
    """The store was closed."""


class SchemaVersionError(StoreError):
    """The stored data has a schema newer than this Scout knows; it is not touched."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """How many alerts of one :meth:`Store.ingest` call were new or already stored."""

    new: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Backlog:
    """Stored alerts the worker has not processed yet."""

    depth: int
    oldest_received_at: datetime | None


@dataclass(frozen=True, slots=True)
class Feedback:
    """One person's verdict on an incident."""

    incident_id: str
    useful: bool
    comment: str
    at: datetime


ActionKind = Literal["acknowledge", "unacknowledge", "assign", "silence"]
ACTION_KINDS: tuple[ActionKind, ...] = ("acknowledge", "unacknowledge", "assign", "silence")


@dataclass(frozen=True, slots=True)
class IncidentAction:
    """Something a person did to an incident from the console."""

    incident_id: str
    kind: ActionKind
    # The console user who did it.
    actor: str
    # assign: the assignee ("" takes the assignment back); silence: what was
    # silenced, as the console wrote it (ids, end time); otherwise "".
    detail: str
    at: datetime


@dataclass(frozen=True, slots=True)
class IncidentQuery:
    """Which incidents a console list shows (every field optional: all incidents).

    ``words``: each must appear, case-insensitively, in the incident's title,
    root cause or its members' labels; ``since``/``until``: the incident was
    created at or after ``since`` and before ``until``.
    """

    status: IncidentStatus | None = None
    priorities: tuple[Priority, ...] = ()
    site: str | None = None
    words: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class IncidentSummary:
    """One row of the console's incident list, as the store keeps it beside the incident.

    ``title`` is the notifications' plain-words title (``P3 · Gi1/0/1 down on
    sw-3 (site paris)``); ``cause`` the analysis' root cause, or the root-cause
    alert in plain words. ``acknowledged_by`` and ``assignee`` come from the
    console actions (None / "" when nobody).
    """

    id: str
    status: IncidentStatus
    priority: Priority
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    site: str
    title: str
    cause: str
    members: int
    firing: int
    analyst: str
    acknowledged_by: str | None = None
    assignee: str = ""


@dataclass(frozen=True, slots=True)
class IncidentPage:
    """One page of a filtered list, newest first, and how many incidents match in all."""

    rows: tuple[IncidentSummary, ...]
    total: int


PostState = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True)
class OutboxCopy:
    """What one member's enriched copy should be now, before it is fanned out to peers."""

    # The copy's label-set fingerprint, as Alertmanager computes it.
    fingerprint: str
    incident_id: str
    # The raw alert's fingerprint (the incident member).
    member: str
    state: PostState
    # The postable alert as JSON without endsAt, which is set at each post.
    alert: str
    # The raw alert as JSON, to hand a resolution to the pipeline when
    # reconciliation finds it gone from every Alertmanager.
    raw: str
    # Resolved copies: when the member stopped firing (Unix seconds).
    ends_at: float | None


@dataclass(frozen=True, slots=True)
class OutboxPlan:
    """The copies one incident calls for, with the incident's whole member set.

    A big incident may be enqueued in several plans; each carries every member
    fingerprint, so copies of members that left the incident are resolved
    whichever plan comes first.
    """

    incident_id: str
    members: frozenset[str]
    copies: tuple[OutboxCopy, ...]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One enriched copy as the outbox holds it for one peer."""

    peer: str
    fingerprint: str
    incident_id: str
    member: str
    state: PostState
    alert: str
    raw: str
    # Resolved copies: when the member stopped firing, and until when the
    # resolution is posted again.
    ends_at: float | None
    resolved_until: float | None
    due_at: float
    posted_at: float | None
    # Bumped by every change :meth:`Store.enqueue_posts` makes; completing a post
    # only touches the revision that was sent, so a newer change is never lost.
    revision: int


@dataclass(frozen=True, slots=True)
class PruneResult:
    """Rows one :meth:`Store.prune` call removed, by kind."""

    alerts: int = 0
    incidents: int = 0
    members: int = 0
    feedback: int = 0
    posts: int = 0
    llm_exchanges: int = 0
    actions: int = 0

    def counts(self) -> dict[str, int]:
        """Kind -> rows removed, for the pruned-rows metric."""
        return {
            "alerts": self.alerts,
            "incidents": self.incidents,
            "members": self.members,
            "feedback": self.feedback,
            "posts": self.posts,
            "llm_exchanges": self.llm_exchanges,
            "actions": self.actions,
        }

    def __add__(self, other: PruneResult) -> PruneResult:
        return PruneResult(
            self.alerts + other.alerts,
            self.incidents + other.incidents,
            self.members + other.members,
            self.feedback + other.feedback,
            self.posts + other.posts,
            self.llm_exchanges + other.llm_exchanges,
            self.actions + other.actions,
        )


@dataclass(frozen=True, slots=True)
class LlmUsage:
    """What every kept LLM exchange of an incident adds up to."""

    calls: int = 0
    tokens: int = 0
    # Estimated, in the provider's currency (LlmExchange.cost).
    cost: float = 0.0


@dataclass(frozen=True, slots=True)
class ConsoleAccount:
    """A console user as the store keeps it."""

    name: str
    # "viewer" or "operator" (ai_sidecar.console.session.Role).
    role: str
    password_hash: str = ""


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """One signed-in browser."""

    # SHA-256 (hex) of the id the cookie carries.
    key: str
    user: str
    csrf_token: str
    # A digest of the password hash the user signed in with.
    credential: str
    created_at: datetime
    seen_at: datetime


class Store(Protocol):
    """Durable alerts, incidents, feedback and outbox. Every verb is async.

    A write verb returns only once its change is durable. Failures of the
    storage raise :class:`StoreError`; any verb called after :meth:`close`
    raises :class:`StoreClosedError`.
    """

    # --- alerts and the worker's cursor -------------------------------------

    async def ingest(self, alerts: Sequence[Alert], received_at: datetime) -> IngestResult:
        """Store ``alerts``; repeats of a stored (fingerprint, status, startsAt) are
        counted as duplicates and not stored again."""
        ...

    async def stored_episodes(self, fingerprints: Sequence[str]) -> set[tuple[str, datetime]]:
        """(fingerprint, startsAt) of every stored alert of ``fingerprints``, whatever
        its status (reconciliation: which episodes the webhook never delivered)."""
        ...

    async def pending(self, limit: int) -> list[ReceivedAlert]:
        """Up to ``limit`` alerts above the worker's cursor, oldest first."""
        ...

    async def save_progress(
        self, cursor: int, incidents: Sequence[Incident], *, language: str = SOURCE_LANGUAGE
    ) -> None:
        """Save ``incidents`` and move the worker's cursor to ``cursor``, atomically.

        ``language``: what the console list's title of each is written in (the
        config's ``language``, :func:`ai_sidecar.store.listing.listing_row`).

        A cursor past the last ``seq`` ever handed out raises ValueError and
        changes nothing: alerts stored later would sit below it, never processed.
        """
        ...

    async def backlog(self) -> Backlog:
        """How many stored alerts wait for the worker, and when the oldest arrived."""
        ...

    async def alert_count(self) -> int:
        """Alerts stored in total, processed or not."""
        ...

    async def firing_started_between(self, start: datetime, end: datetime) -> int:
        """Firing alerts stored whose ``startsAt`` is at or after ``start`` and before
        ``end``, whenever they arrived: each firing episode (fingerprint and startsAt)
        once, re-deliveries not counted. On the alerts' own clock, as incidents'
        creation is, so that a report's two counts agree when alerts arrive late."""
        ...

    # --- incidents and feedback -------------------------------------------------

    async def save_incidents(
        self, incidents: Sequence[Incident], *, language: str = SOURCE_LANGUAGE
    ) -> None:
        """Insert or replace ``incidents`` (by id), members included; ``language`` as
        :meth:`save_progress` says."""
        ...

    async def active_incidents(self, resolved_since: datetime) -> list[Incident]:
        """Open incidents plus those resolved at or after ``resolved_since``, oldest first."""
        ...

    async def latest_update(self) -> datetime | None:
        """The newest ``updated_at`` of any incident: how far, in alert time, the worker got."""
        ...

    async def incident_ids(self) -> list[str]:
        """Every stored incident's id (the correlator must never reuse one)."""
        ...

    async def list_incidents(
        self,
        *,
        status: IncidentStatus | None = None,
        since: datetime | None = None,
        limit: int = 100,
        before: tuple[datetime, str] | None = None,
    ) -> list[Incident]:
        """Incidents updated at or after ``since`` (all when None), most recently updated first.

        The order is (``updated_at``, ``id``) descending, ties broken by id;
        ``before`` (an incident's ``updated_at`` and ``id``) keeps only those
        after it in that order: the next page of a listing that ended there.
        """
        ...

    async def get_incident(self, incident_id: str) -> Incident | None:
        """One incident with its members, or None."""
        ...

    async def incident_page(
        self, query: IncidentQuery, *, limit: int, offset: int = 0
    ) -> IncidentPage:
        """Incidents matching ``query``, newest created first (then by id, descending):
        ``limit`` of them after skipping ``offset``, and the total that match.

        Served from a summary row kept beside each incident (no incident is
        decoded), so a page of a store of 10,000 incidents costs milliseconds.
        """

    async def incidents_created_between(self, start: datetime, end: datetime) -> list[Incident]:
        """Incidents created at or after ``start`` and before ``end``, with their members,
        oldest first (by creation, then id): the incidents a report over that period counts."""
        ...

    async def add_feedback(
        self, incident_id: str, useful: bool, comment: str, at: datetime
    ) -> bool:
        """Record feedback on an incident; False (nothing stored) when there is no such incident."""
        ...

    async def feedback(self, incident_id: str) -> list[Feedback]:
        """Feedback on one incident in the order it was given."""
        ...

    async def feedback_between(self, start: datetime, end: datetime) -> list[Feedback]:
        """Feedback given at or after ``start`` and before ``end``, in the order given."""
        ...

    # --- what people did from the console -----------------------------------------

    async def record_action(self, action: IncidentAction) -> bool:
        """Record ``action``; False (nothing stored) when there is no such incident."""
        ...

    async def actions(self, incident_id: str) -> list[IncidentAction]:
        """Actions on one incident in the order they were taken."""
        ...

    async def actions_between(self, start: datetime, end: datetime) -> list[IncidentAction]:
        """Actions taken at or after ``start`` and before ``end``, in the order taken."""
        ...

    # --- the scheduled report digest -----------------------------------------------

    async def claim_digest(
        self, slot: datetime, holder: str, *, now: datetime, hold: timedelta
    ) -> bool:
        """Claim sending the digest of ``slot`` until ``now + hold``; True when granted:
        the slot is new, already ``holder``'s, or its claim lapsed before ``now``. Never
        granted once the slot is done."""
        ...

    async def finish_digest(self, slot: datetime, holder: str, *, at: datetime) -> bool:
        """Mark ``slot`` done (sent or given up); False when ``holder`` does not hold it."""
        ...

    async def last_digest(self) -> datetime | None:
        """The latest slot done, or None before the first."""
        ...

    # --- the return trip's outbox -------------------------------------------------

    async def enqueue_posts(
        self, plans: Sequence[OutboxPlan], peers: Sequence[str], *, now: float, repeat_for: float
    ) -> None:
        """Record the copies ``plans`` call for on every peer; durable when this returns.

        Per plan: copies of members no longer in ``members`` are resolved; a
        firing copy is inserted (due now) or, if its text or incident changed
        or it had resolved, rewritten and due now, while the member's copies
        under other label sets are resolved; a resolved copy turns the
        member's firing rows into resolutions. A resolution is due now and
        repeated until ``now + repeat_for``. Written in several short
        transactions when there are many copies.
        """
        ...

    async def sync_outbox_peers(self, peers: Sequence[str], *, now: float) -> int:
        """Give peers new to the outbox every copy the others have (due ``now``) and
        drop the rows of peers not in ``peers``; returns how many rows were dropped."""
        ...

    async def due_posts(
        self, peers: Sequence[str], *, before: float, beyond: float | None = None
    ) -> list[OutboxRow]:
        """Rows of ``peers`` due at or before ``before``, and (if given) those due
        after ``beyond``, by due time then fingerprint.

        ``beyond``: past the latest time any schedule sets from now, so a row due
        after it was scheduled before the clock went back (the poster takes it
        as due).

        Nothing is locked: one poster per data directory reads and completes them.
        """
        ...

    async def next_post_due(self, peers: Sequence[str]) -> dict[str, float]:
        """Per peer that has rows, the earliest due time among them."""
        ...

    async def count_due_posts(self, *, now: float) -> int:
        """Rows due at or before ``now``, over all peers."""
        ...

    async def complete_accepted(
        self,
        peer: str,
        rows: Sequence[OutboxRow],
        *,
        now: float,
        firing_due: float,
        resolved_due: float,
    ) -> None:
        """``peer`` accepted ``rows``: mark them posted at ``now`` and due again at
        ``firing_due`` or ``resolved_due``; a resolution whose repeats are over is
        deleted. A row changed since it was read (another revision) is left alone."""
        ...

    async def complete_refused(self, row: OutboxRow) -> None:
        """The peer refused ``row`` for good: delete it, unless it changed since."""
        ...

    async def list_posts(self) -> list[OutboxRow]:
        """Every outbox row, by peer then fingerprint."""
        ...

    async def firing_members(self) -> dict[str, str]:
        """Raw fingerprint -> raw alert JSON of every member whose copy fires."""
        ...

    async def firing_copies(self) -> set[str]:
        """Fingerprints of the copies that fire (what may inhibit a raw alert)."""
        ...

    # --- the LLM audit --------------------------------------------------------------

    async def record_llm_exchange(self, exchange: LlmExchange) -> None:
        """Keep ``exchange`` (its incident need not be stored, nor stay stored)."""
        ...

    async def llm_exchanges(
        self,
        *,
        incident_id: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[LlmExchange]:
        """Kept exchanges of ``incident_id`` (all when None) made at or after ``since``,
        oldest first; with ``limit``, only the newest ``limit`` of them."""
        ...

    async def llm_usage(self, incident_id: str) -> LlmUsage:
        """The calls, tokens (input and output) and cost of every kept exchange of
        ``incident_id``, added up by the store: not only the newest that a page lists."""
        ...

    async def prune_llm_exchanges(self, older_than: datetime, batch: int) -> int:
        """Remove exchanges made before ``older_than``, ``batch`` rows per short
        transaction; returns how many went."""
        ...

    # --- console users, sessions and failed sign-ins ----------------------------------

    async def save_console_user(self, account: ConsoleAccount, at: datetime) -> None:
        """Add ``account``, or replace the role and password hash of the user of that name."""
        ...

    async def replace_console_password_hash(
        self, name: str, old_hash: str, new_hash: str, at: datetime
    ) -> bool:
        """Give the user ``new_hash`` if their hash is still ``old_hash``; False when the
        user was removed or given another password meanwhile (nothing is written)."""
        ...

    async def get_console_user(self, name: str) -> ConsoleAccount | None:
        """The stored user called ``name`` ignoring case (with the stored spelling), or
        None; of two spellings an older store may hold, the exact one, else the older."""
        ...

    async def list_console_users(self) -> list[ConsoleAccount]:
        """Every stored user, by name."""
        ...

    async def remove_console_user(self, name: str) -> bool:
        """Remove the user and end their sessions; False when there was no such user."""
        ...

    async def save_console_language(self, name: str, language: str, at: datetime) -> None:
        """Keep the console language ``name`` chose (``fr``); "" forgets their choice."""
        ...

    async def get_console_language(self, name: str) -> str:
        """The console language ``name`` chose, or "" when they chose none."""
        ...

    async def open_console_session(self, session: ConsoleSession) -> None:
        """Keep a new session (its key is new: 256 random bits, hashed)."""
        ...

    async def get_console_session(self, key: str) -> ConsoleSession | None:
        """The session stored under ``key``, or None."""
        ...

    async def touch_console_session(self, key: str, seen_at: datetime) -> None:
        """Record a request of the session at ``seen_at`` (an earlier time changes nothing)."""
        ...

    async def close_console_session(self, key: str) -> None:
        """End the session (nothing happens when there is none)."""
        ...

    async def prune_console_sessions(self, created_before: datetime, seen_before: datetime) -> int:
        """End sessions opened before ``created_before`` or idle since before
        ``seen_before``; returns how many."""
        ...

    async def record_login_failure(
        self, keys: Sequence[str], at: datetime, forget_before: datetime
    ) -> None:
        """Count a failed sign-in at ``at`` under each of ``keys``, and forget every
        failure before ``forget_before`` (all that happens when ``keys`` is empty)."""
        ...

    async def login_failures(
        self, keys: Sequence[str], since: datetime
    ) -> dict[str, list[datetime]]:
        """Per key of ``keys``, its failed sign-ins at or after ``since``, oldest first."""
        ...

    async def clear_login_failures(self, key: str) -> None:
        """Forget the failed sign-ins under ``key`` (after a successful one)."""
        ...

    # --- housekeeping ------------------------------------------------------------

    async def prune(self, older_than: datetime, batch: int) -> PruneResult:
        """Remove what is older than ``older_than``, ``batch`` rows per short transaction.

        Removed: processed alerts received before ``older_than``, unless a member
        of an open incident still fires under their fingerprint (a re-delivery
        would otherwise be stored and folded again); resolved incidents resolved
        before ``older_than`` with their members, feedback and resolved outbox
        rows. Never removed: open incidents, alerts above the worker's cursor.
        """
        ...

    async def close(self) -> None:
        """Finish queued work, then release the store. Safe to call twice."""
        ...
