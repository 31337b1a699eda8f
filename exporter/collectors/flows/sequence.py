"""Export loss from the sequence numbers in flow headers: what never reached the collector.

Each header numbers what its exporter sent before it, per stream, modulo 2^32:

* NetFlow v5 ``flow_sequence``: flow records, per engine (``engine_type``, ``engine_id``);
* NetFlow v9 (RFC 3954) ``sequence number``: export packets, per Source ID;
* IPFIX (RFC 7011) ``Sequence Number``: Data Records (those of options templates
  included, template records not), per Observation Domain.

So the next header of a stream should carry this one's number plus what this
one holds (its records, or 1 for a v9 packet). A number further on is a gap:
that many records (v5, IPFIX) or packets (v9) were lost on the way, in the
kernel's queue, or arrived unreadable (``scout_flow_bad_packets_total``
counts those too). A gap is held open until the next scrape (``commit``): a
datagram that arrives late, inside an open gap, closes that part of it and
counts as out of order, so reordering is never loss. A number behind the
expected one is out of order too (a late datagram, a duplicate), unless it is
too far behind or the jump forward too large to be loss: then the exporter
restarted (a reset, the stream starts again from that header, nothing lost).
A stream's first header, and the header after an IPFIX message whose data
records could not be counted (a set of an unknown template), set the number
expected next without counting anything.

Streams live in their exporter's ``ExporterFlows`` and go with it when the
exporter falls silent; each exporter holds at most ``MAX_STREAMS`` of them
(the first made is forgotten, its open gaps counted: its next header starts it
again) and each stream at
most ``MAX_GAPS`` gaps, so made-up domain ids or sequence numbers cost bounded
memory.
"""

from __future__ import annotations

from typing import Final

WRAP: Final = 1 << 32
_MASK: Final = WRAP - 1
# Numbers less than half the space ahead are ahead; the others behind (RFC 1982 style).
_HALF: Final = 1 << 31
# A jump forward of up to this many records or packets between two datagrams of a
# stream is loss whenever it comes: 2^20 (a second of a very busy router's records)
# is 1/4096 of the number space, so an exporter that restarts at a random number
# lands in it that rarely.
JUMP_FLOOR: Final = 1 << 20
# Beyond the floor a jump is loss only if the exporter could have sent that much
# since its previous datagram reached us, at a million records (or packets) a
# second, more than any router exports: a collector cut off for minutes still sees
# the whole gap as loss, while a restart at a random number, far away in the
# number space, is a reset. (A stream silent longer than the exporter's lifetime,
# ``max(ttl, window)``, is forgotten, which bounds that span.)
MAX_PER_SECOND: Final = 1_000_000
# A number behind the expected one by at most this many datagrams (of the size of
# the one that came) is late or repeated, so out of order: reordering on a path is
# a few datagrams at most. Further behind, the stream started again (a restart to 0
# after more than 64 datagrams; a younger exporter's restart looks like
# reordering until its numbers pass the old ones, and counts no loss meanwhile).
REORDER_DATAGRAMS: Final = 64
# Gaps a stream remembers for late datagrams, and streams an exporter holds.
MAX_GAPS: Final = 8
MAX_STREAMS: Final = 256

# The counters of one exporter and version, a list for cheap updates: records or
# packets lost (as committed), datagrams out of order, resets.
LOST: Final = 0
OUT_OF_ORDER: Final = 1
RESETS: Final = 2


class SequenceStream:
    """One stream's next expected number (None: unknown, the next header sets it), when
    its last datagram came, and its recent gaps ``[start, size, open]``."""

    __slots__ = ("expected", "gaps", "seen")

    def __init__(self) -> None:
        self.expected: int | None = None
        self.seen = 0.0
        self.gaps: list[list[int]] = []

    def observe(self, number: int, size: int | None, now: float, counts: list[int]) -> None:
        """A datagram numbered ``number`` holding ``size`` records or packets (None: not
        known, as for an IPFIX message with data of an unknown template)."""
        expected = self.expected
        step = 0 if size is None else size
        if expected is not None and number != expected:
            ahead = (number - expected) & _MASK
            if ahead < _HALF:
                if ahead <= max(JUMP_FLOOR, MAX_PER_SECOND * (now - self.seen)):
                    self._open(expected, ahead, counts)
                else:
                    self._reset(counts)
            elif self._fill(number, step, counts) or (
                WRAP - ahead <= REORDER_DATAGRAMS * max(step, 1)
            ):
                counts[OUT_OF_ORDER] += 1
                self.seen = now
                return
            else:
                self._reset(counts)
        self.expected = None if size is None else (number + step) & _MASK
        self.seen = now

    def _reset(self, counts: list[int]) -> None:
        counts[RESETS] += 1
        self.commit(counts)
        self.gaps.clear()

    def observe_run(self, numbers: list[int], size: int, now: float, counts: list[int]) -> None:
        """Datagrams of ``size`` (at least 1) each, in arrival order: one step when each
        follows the one before (the common case), else each on its own, as ``observe``
        would. A run across the wrap takes the second way: once in 2^32."""
        first = numbers[0]
        if first == self.expected and numbers == list(
            range(first, first + size * len(numbers), size)
        ):
            self.expected = (numbers[-1] + size) & _MASK
            self.seen = now
            return
        for number in numbers:
            self.observe(number, size, now, counts)

    def _open(self, start: int, size: int, counts: list[int]) -> None:
        gaps = self.gaps
        if len(gaps) >= MAX_GAPS:
            _, oldest, is_open = gaps.pop(0)
            counts[LOST] += oldest * is_open  # no late datagram can close it any more
        gaps.append([start, size, 1])

    def _fill(self, number: int, step: int, counts: list[int]) -> bool:
        """Whether a datagram behind the expected number falls in a remembered gap; the
        part it covers of an open gap is then no longer loss."""
        for index, (start, size, is_open) in enumerate(self.gaps):
            into = (number - start) & _MASK
            if into >= size:
                continue
            if is_open:
                # What is before the datagram stays open, and what is after.
                covered = min(max(step, 1), size - into)
                after = size - into - covered
                del self.gaps[index]
                if into:
                    self.gaps.insert(index, [start, into, 1])
                if after:
                    self._open((start + into + covered) & _MASK, after, counts)
            return True
        return False

    def commit(self, counts: list[int]) -> None:
        """Count the open gaps as lost; they stay remembered, so a very late datagram in
        one is still out of order, not a reset."""
        for gap in self.gaps:
            if gap[2]:
                counts[LOST] += gap[1]
                gap[2] = 0


class SequenceStreams:
    """The streams of one exporter by (version, stream id), at most ``MAX_STREAMS``,
    and the counts per version label."""

    __slots__ = ("counts", "streams")

    def __init__(self) -> None:
        self.streams: dict[tuple[int, int], tuple[SequenceStream, list[int]]] = {}
        self.counts: dict[str, list[int]] = {}

    def stream(self, version: int, label: str, stream_id: int) -> tuple[SequenceStream, list[int]]:
        """The stream and its version's counts, created when first seen."""
        key = (version, stream_id)
        found = self.streams.get(key)
        if found is None:
            if len(self.streams) >= MAX_STREAMS:
                oldest = next(iter(self.streams))
                old, old_counts = self.streams.pop(oldest)
                old.commit(old_counts)
            counts = self.counts.setdefault(label, [0, 0, 0])
            found = self.streams[key] = (SequenceStream(), counts)
        return found

    def commit(self) -> None:
        """Count every open gap as lost (at each scrape: what a scrape shows is final)."""
        for stream, counts in self.streams.values():
            stream.commit(counts)
