"""An incident's members as values that share one log, so a join does not copy them.

The correlator returns a new :class:`~ai_sidecar.models.Incident` value for
every alert it folds, and every value must keep the members it was made with.
Copying the member mapping each time costs O(members) per alert: a storm that
grows one incident to thousands of members spends most of its time copying.
Instead each tracked incident appends every member value it takes to a
:class:`MemberLog`, and each incident value holds a :class:`MemberView` of the
log as it stood: the log only grows (members are never removed from a tracked
incident), so a view needs only the log's length at the time.

A view is a read-only ``Mapping`` in the order a ``dict`` would have: members
in the order they first joined, each with its latest value as of the view.
It pickles as a plain ``dict``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

from ai_sidecar.models import Member

# A log holding more than this many values per member (duplicates and flaps
# append values too) is started afresh from its latest values on the next put.
_VALUES_PER_MEMBER = 2
_SLACK = 64


class MemberLog:
    """Every member value one incident has taken, appended in order.

    ``put`` returns the log to keep using: itself, or a compacted copy once
    superseded values outnumber the live ones (views taken before keep the old
    log, so they never change).
    """

    __slots__ = ("_order", "_positions", "_values")

    def __init__(self, members: Mapping[str, Member] | None = None) -> None:
        self._values: list[Member] = []
        # Each fingerprint's values' positions in ``_values``, ascending (tuples,
        # which the garbage collector stops tracking, unlike lists) ...
        self._positions: dict[str, tuple[int, ...]] = {}
        # ... and the fingerprints in the order they first joined.
        self._order: list[str] = []
        for member in (members or {}).values():
            self._put(member)

    def put(self, member: Member) -> MemberLog:
        """Add a member, or a newer value of one; the log to use from now on."""
        log = self
        if len(self._values) > _VALUES_PER_MEMBER * len(self._order) + _SLACK:
            log = MemberLog(self.view())
        log._put(member)
        return log

    def _put(self, member: Member) -> None:
        position = len(self._values)
        self._values.append(member)
        fingerprint = member.fingerprint
        positions = self._positions.get(fingerprint)
        if positions is None:
            self._positions[fingerprint] = (position,)
            self._order.append(fingerprint)
        else:
            self._positions[fingerprint] = (*positions, position)

    def view(self) -> MemberView:
        """The members as they stand now; later puts do not change it."""
        return MemberView(self, len(self._values), len(self._order))

    def __contains__(self, fingerprint: str) -> bool:
        return fingerprint in self._positions

    def latest(self, fingerprint: str) -> Member:
        """A member's latest value (KeyError if it never joined)."""
        return self._values[self._positions[fingerprint][-1]]


class MemberView(Mapping[str, Member]):
    """Members by fingerprint, as a :class:`MemberLog` stood when the view was taken."""

    __slots__ = ("_count", "_end", "_log")

    def __init__(self, log: MemberLog, end: int, count: int) -> None:
        self._log = log
        # Values before ``end`` are visible; they hold ``count`` fingerprints,
        # the first ``count`` of the log's order.
        self._end = end
        self._count = count

    def __getitem__(self, fingerprint: str) -> Member:
        log = self._log
        positions = log._positions[fingerprint]
        end = self._end
        last = positions[-1]
        if last < end:
            return log._values[last]
        if positions[0] >= end:
            raise KeyError(fingerprint)
        return log._values[positions[bisect_left(positions, end) - 1]]

    def __contains__(self, fingerprint: object) -> bool:
        positions = self._log._positions.get(fingerprint) if isinstance(fingerprint, str) else None
        return positions is not None and positions[0] < self._end

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        return islice(self._log._order, self._count)

    def __repr__(self) -> str:
        return repr(dict(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (list(self.items()),))
