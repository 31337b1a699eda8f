"""Which series this sidecar replica models: its share of every signal's series.

With ``anomaly.shard: {index: i, count: n}`` the replicas split the series of
every signal ``n`` ways and replica ``i`` trains and scores share ``i`` only
(with ``index: auto``, the shares it claims through PostgreSQL,
:mod:`ai_sidecar.store.postgres.shares`), so each series is modelled, and
exported, by exactly one replica: the union of the replicas'
``scout_anomaly_*`` series is what one sidecar would export, with no replica
label to double them.

A series' share is a hash of its host label's value (``anomaly.hosts.host_label``,
``instance`` by default) when its kept labels have one, else of all its kept
labels, modulo ``count``. By host, so that one replica sees all of a host's
signals: its per-host model (:mod:`.hosts`) stays whole and its host score is
exported once. The hash is BLAKE2b, the same in every process and on every
machine (Python's ``hash()`` of a string is salted per process).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from ai_sidecar.anomaly.signals import SeriesKey


def share_of(key: SeriesKey, count: int, host_label: str) -> int:
    """The share (0 .. count - 1) series ``key`` belongs to among ``count``."""
    if count == 1:
        return 0
    host = next((value for name, value in key if name == host_label), None)
    identity = f"{host_label}={host}" if host is not None else "\0".join(f"{n}={v}" for n, v in key)
    digest = hashlib.blake2b(identity.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True, slots=True)
class Share:
    """Shares ``indexes`` of ``count``: the series this replica trains and scores.

    One index when the config names it; those claimed through PostgreSQL
    with ``index: auto`` (:mod:`ai_sidecar.store.postgres.shares`), maybe none.
    """

    indexes: frozenset[int] = frozenset({0})
    count: int = 1
    host_label: str = "instance"

    def __post_init__(self) -> None:
        if self.count < 1 or not all(0 <= index < self.count for index in self.indexes):
            raise ValueError(f"share {self} does not exist")

    @classmethod
    def of(cls, index: int, count: int, host_label: str = "instance") -> Share:
        return cls(frozenset({index}), count, host_label)

    @property
    def everything(self) -> bool:
        """Whether this share is every series."""
        return len(self.indexes) == self.count

    def owns(self, key: SeriesKey) -> bool:
        return self.everything or share_of(key, self.count, self.host_label) in self.indexes

    def within(self, indexes: Iterable[int], count: int) -> bool:
        """Whether every series of this share is in shares ``indexes`` of ``count``."""
        other = frozenset(indexes)
        if len(other) == count:
            return True
        return count == self.count and self.indexes <= other

    def foreign(self, keys: Iterable[SeriesKey]) -> int:
        """How many of ``keys`` belong to other shares."""
        return 0 if self.everything else sum(not self.owns(key) for key in keys)

    def __str__(self) -> str:
        return f"{','.join(map(str, sorted(self.indexes))) or 'none'}/{self.count}"
