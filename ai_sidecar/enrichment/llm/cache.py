"""The shape cache: an LLM answer kept for incidents that look like the one it explained.

Two incidents "look alike" when they have the same alertnames, the same label
names on each alertname (their shape, never their values), and the same
root-cause rule and root-cause alertname (:func:`shape_key`). A storm of
``InterfaceDown`` on a hundred switches is one shape: the first incident is
explained by the LLM, the others get its answer, still redacted, and the
analyst restores it with each incident's own pseudonyms.

Entries live for the policy's ``cache_ttl`` (0 turns the cache off) and the
cache holds at most ``max_entries`` of them, the least recently used leaving
first, so a stream of ever-new shapes cannot grow it without end.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ai_sidecar.i18n import SOURCE_LANGUAGE
from ai_sidecar.models import Incident

DEFAULT_MAX_SHAPES = 1000

K = TypeVar("K")
V = TypeVar("V")


class LruMap(Generic[K, V]):
    """A mapping that forgets its least recently used entries beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def drop(self, keep: Callable[[V], bool]) -> None:
        """Forget every entry whose value ``keep`` refuses."""
        for key in [k for k, v in self._items.items() if not keep(v)]:
            del self._items[key]


def shape_key(incident: Incident, language: str = SOURCE_LANGUAGE) -> str:
    """What an incident looks like without its label values, as a short digest.

    The parts: every alertname with the label names its members carry (a
    member's label set is its shape), the root-cause rule and layer of the
    ranking, and the root-cause member's alertname. Hosts, interfaces and
    addresses (label values) are left out, so the same failure on another
    device has the same key. The answer's ``language`` is part of it: an
    answer kept in English never stands for a French one.
    """
    shapes = sorted(
        {(m.alertname, tuple(sorted(m.labels))) for m in incident.members.values()},
    )
    facts = incident.root_cause_facts
    root = incident.members.get(incident.root_cause or "")
    parts = {
        "shapes": shapes,
        "rule": None if facts is None else facts.rule,
        "layer": None if facts is None else facts.layer,
        "root": None if root is None else root.alertname,
        "language": language,
    }
    text = json.dumps(parts, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class _Entry:
    answer: str
    stored_at: float


class ShapeCache:
    """Redacted answers by :func:`shape_key`, each for ``ttl`` seconds, LRU-bounded."""

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = DEFAULT_MAX_SHAPES,
        clock: Callable[[], float],
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: LruMap[str, _Entry] = LruMap(max_entries)

    @property
    def ttl(self) -> float:
        return self._ttl

    @ttl.setter
    def ttl(self, seconds: float) -> None:
        """A new TTL (config reload) applies to the entries already kept too."""
        self._ttl = seconds
        self.prune()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        """The answer kept for ``key``, unless it is older than the TTL."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, self._clock()):
            return None
        return entry.answer

    def put(self, key: str, answer: str) -> None:
        """Keep ``answer`` for ``key`` from now on (nothing when the cache is off)."""
        if self._ttl <= 0:
            return
        self.prune()
        self._entries.put(key, _Entry(answer, self._clock()))

    def prune(self) -> None:
        """Drop the expired entries."""
        now = self._clock()
        self._entries.drop(lambda entry: not self._expired(entry, now))

    def _expired(self, entry: _Entry, now: float) -> bool:
        return self._ttl <= 0 or now - entry.stored_at >= self._ttl
