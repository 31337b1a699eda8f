"""Which scheduled report digests were sent, and who is sending one: the SQL both stores share.

One row per schedule slot (its time as the stores' fixed-width UTC text). A
sender first *claims* the slot for a while; the claim is granted when the slot
is new, already its own, or held by a claim that has lapsed, and never once
the slot is done. Replicas sharing a PostgreSQL store therefore send each
digest once, and a replica that dies mid-send leaves a claim another can take
over when it lapses. A slot is *done* when it was sent or given up.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DigestQueries:
    claim: str
    finish: str
    last_done: str


def digest_queries(mark: str) -> DigestQueries:
    return DigestQueries(
        claim=(
            "INSERT INTO report_digests (slot, holder, claimed_until)"
            f" VALUES ({mark}, {mark}, {mark}) ON CONFLICT (slot) DO UPDATE SET"
            " holder = excluded.holder, claimed_until = excluded.claimed_until"
            " WHERE report_digests.done_at IS NULL AND (report_digests.holder = excluded.holder"
            f" OR report_digests.claimed_until < {mark})"
        ),
        finish=(
            f"UPDATE report_digests SET done_at = {mark}"
            f" WHERE slot = {mark} AND holder = {mark} AND done_at IS NULL"
        ),
        last_done="SELECT max(slot) FROM report_digests WHERE done_at IS NOT NULL",
    )


SQLITE = digest_queries("?")
POSTGRES = digest_queries("%s")
