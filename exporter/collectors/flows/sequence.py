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
expected one is out of order too (a late datagram, a duplicate); one far behind
is remembered, and only if the next datagram continues from it did the exporter
restart (a reset, the stream starts again there, nothing lost). A restart too:
a v5 or v9 header whose uptime went back, and a jump forward larger than the
stream could have sent (its learned rate, times ``RATE_FACTOR``, since its last
datagram). A message of unknown size is never a reset.
A stream's first header, and the header after an IPFIX message whose data
records could not be counted (a set of an unknown template), set the number
expected next without counting anything.

Streams live in their exporter's ``ExporterFlows`` and go with it when the
exporter falls silent; each exporter holds at most ``MAX_STREAMS`` of them
(the least recently seen is forgotten, its open gaps counted: its next header
starts it again) and each stream at
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
# Once a stream's rate is learned (over windows of ``RATE_WINDOW`` seconds), a jump
# beyond the floor is loss only up to ``RATE_FACTOR`` times that rate over the time
# since its last datagram: an exporter that restarts at 0 from a number above 2^31
# jumps ahead by 2^32 less that number, far beyond it.
RATE_WINDOW: Final = 60.0
RATE_FACTOR: Final = 8
# A v9 packet holds tens of records: the floor and the bound for its packet numbers
# are this many times smaller.
V9_RECORDS_PER_PACKET: Final = 32
# The header's uptime (v5, v9: ms since boot) going back by more than this is a
# restart, definitively; a late datagram's is behind by far less.
UPTIME_SLACK_MS: Final = 10_000
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
    its last datagram came, its recent gaps ``[start, size, open]``, its exporter's
    uptime (v5, v9), its learned rate and the number a far-behind datagram would
    continue from (``candidate``)."""

    __slots__ = (
        "candidate",
        "expected",
        "floor",
        "gaps",
        "most",
        "rate",
        "seen",
        "uptime",
        "window",
    )

    def __init__(self, per_packet: int = 1) -> None:
        self.expected: int | None = None
        self.seen = 0.0
        self.gaps: list[list[int]] = []
        self.uptime: int | None = None
        self.candidate: int | None = None
        # v9 numbers packets, each of tens of records: its bounds are that much smaller.
        self.floor = JUMP_FLOOR // per_packet
        self.most = MAX_PER_SECOND // per_packet
        self.rate: float | None = None
        self.window: tuple[int, float] | None = None

    def observe(
        self,
        number: int,
        size: int | None,
        now: float,
        counts: list[int],
        uptime: int | None = None,
    ) -> None:
        """A datagram numbered ``number`` holding ``size`` records or packets (None: not
        known, as for an IPFIX message with data of an unknown template), its header's
        uptime in ms (v5, v9; None for IPFIX, whose header has none)."""
        expected = self.expected
        step = 0 if size is None else size
        if expected is not None and number != expected:
            ahead = (number - expected) & _MASK
            if (uptime is not None and self._restarted(uptime, now)) or (number == self.candidate):
                self._reset(counts)
            elif ahead < _HALF:
                if ahead <= self._bound(now):
                    self._open(expected, ahead, counts)
                else:
                    self._reset(counts)
            else:
                counts[OUT_OF_ORDER] += 1
                self.seen = now
                if (
                    not self._fill(number, size, counts)
                    and size is not None
                    and WRAP - ahead > REORDER_DATAGRAMS * max(step, 1)
                ):
                    # Far behind: a stray (a duplicate, a very late datagram) or a
                    # restart; only the next datagram continuing from it says restart.
                    self.candidate = (number + step) & _MASK
                return
        self._advance(number, size, now, uptime)

    def _advance(self, number: int, size: int | None, now: float, uptime: int | None) -> None:
        self.candidate = None
        self._learn(number, now)
        self.expected = None if size is None else (number + size) & _MASK
        self.seen = now
        if uptime is not None:
            self.uptime = uptime

    def _restarted(self, uptime: int, now: float) -> bool:
        """Whether the exporter's uptime went back: it booted again, whatever the number."""
        previous = self.uptime
        if previous is None or uptime >= previous - UPTIME_SLACK_MS:
            return False
        # The 32-bit millisecond uptime wraps every 49.7 days, back by about 2^32 less
        # the time that passed: that is no restart.
        return (uptime - previous) & _MASK > (now - self.seen) * 1000 + UPTIME_SLACK_MS

    def _learn(self, number: int, now: float) -> None:
        """The stream's rate, over windows of ``RATE_WINDOW`` seconds; a quieter window
        halves it at most, so a busy hour after a quiet one still fits."""
        window = self.window
        if window is None:
            self.window = (number, now)
            return
        elapsed = now - window[1]
        if elapsed >= RATE_WINDOW:
            rate = ((number - window[0]) & _MASK) / elapsed
            self.rate = rate if self.rate is None else max(rate, self.rate / 2)
            self.window = (number, now)

    def _bound(self, now: float) -> float:
        """The largest jump forward that is loss: what the stream could have sent since
        its last datagram, at ``RATE_FACTOR`` times its learned rate (at most
        ``MAX_PER_SECOND`` until learned), never less than the floor."""
        rate = self.most if self.rate is None else min(self.most, RATE_FACTOR * self.rate)
        return max(self.floor, rate * (now - self.seen))

    def _reset(self, counts: list[int]) -> None:
        counts[RESETS] += 1
        self.commit(counts)
        self.gaps.clear()
        self.window = None

    def observe_run(
        self,
        numbers: list[int],
        uptimes: list[int] | None,
        size: int,
        now: float,
        counts: list[int],
    ) -> None:
        """Datagrams of ``size`` (at least 1) each, in arrival order: one step when each
        follows the one before (the common case), else each on its own, as ``observe``
        would. A run across the wrap takes the second way: once in 2^32."""
        first = numbers[0]
        if first == self.expected and numbers == list(
            range(first, first + size * len(numbers), size)
        ):
            self._learn(first, now)  # as the first datagram alone would: same ``now``
            self._advance(numbers[-1], size, now, None if uptimes is None else uptimes[-1])
            return
        for index, number in enumerate(numbers):
            self.observe(number, size, now, counts, None if uptimes is None else uptimes[index])

    def _open(self, start: int, size: int, counts: list[int]) -> None:
        gaps = self.gaps
        if len(gaps) >= MAX_GAPS:
            _, oldest, is_open = gaps.pop(0)
            counts[LOST] += oldest * is_open  # no late datagram can close it any more
        gaps.append([start, size, 1])

    def _fill(self, number: int, size: int | None, counts: list[int]) -> bool:
        """Whether a datagram behind the expected number falls in a remembered gap; the
        part it covers of an open gap is then no longer loss (all of it from the
        datagram on when its size is not known)."""
        for index, (start, gap, is_open) in enumerate(self.gaps):
            into = (number - start) & _MASK
            if into >= gap:
                continue
            if is_open:
                # What is before the datagram stays open, and what is after.
                covered = gap - into if size is None else min(max(size, 1), gap - into)
                after = gap - into - covered
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
                # The least recently seen: a scan only when full (made-up ids), so a
                # busy stream's hits cost no reordering.
                streams = self.streams
                idle = min(streams, key=lambda known: streams[known][0].seen)
                old, old_counts = streams.pop(idle)
                old.commit(old_counts)
            counts = self.counts.setdefault(label, [0, 0, 0])
            stream = SequenceStream(V9_RECORDS_PER_PACKET if version == 9 else 1)
            found = self.streams[key] = (stream, counts)
        return found

    def commit(self) -> None:
        """Count every open gap as lost (at each scrape: what a scrape shows is final)."""
        for stream, counts in self.streams.values():
            stream.commit(counts)
