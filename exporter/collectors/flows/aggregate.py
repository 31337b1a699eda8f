"""Top talkers over a sliding window, with an ``other`` bucket and one series budget for all.

Per exporter there is one ``Ranking`` per direction (source, destination, and
protocol/port when enabled). A ranking does two separate jobs:

* **Ranking**: bytes per key over the last ``window``, kept as a ring of
  ``SLOTS`` per-slot dicts (so the window slides in steps of window/SLOTS).
  Each slot dict is capped at ``capacity`` keys; when it overflows it is cut
  to the half with the most bytes (a capped dict that evicts the smallest, in
  batches so the cost stays O(log capacity) per new key). Columnar batches
  add to the current slot as numpy arrays (``chunks``), compacted to the
  ``capacity`` largest keys once they pass ``CHUNK_FACTOR * capacity``
  entries, and folded into the slot dict when the slot ends or a ranking is
  asked for. Memory per ranking is therefore at most
  ``(SLOTS + CHUNK_FACTOR) * capacity`` keys however many addresses the flows
  carry; a heavy key survives every cut, a key evicted while small is only
  undercounted.
* **Series**: cumulative byte and packet counters for keys that made the top
  ``top_n`` at some ranking pass (``refresh``, run at each scrape). A key gets
  its series at that pass, starting from 0; from then on every record of that
  key adds to it. A record whose key has no series at that moment adds to the
  ``other`` series instead, and to the folded-records counter. A series whose
  key has been out of the top N for ``ttl`` is removed at a later pass.

Records arrive two ways with the same result: tuples (IPv6, odd templates)
are counted one by one in ``add``; IPv4 data sets from fixed-size templates
arrive as views of their records (``columns``), whose bytes are copied into a
per-exporter buffer and counted in batches, reduced per distinct key first.
The pending flows of all exporters are counted once they reach ``BATCH``
records or ``PENDING_BYTES`` bytes, so the buffers stay small whatever the
exporters send, and no datagram is kept. A batch is always counted before a
refresh and before the window moves to its next slot, so batching changes no
ranking and no series value a scrape can see.

Every record's bytes land in exactly one series (its key's or ``other``), so
over any interval the sum of increases over talkers plus ``other`` equals the
increase of the total, even while talkers enter and leave the top N. Because a
series appears at a scrape with value 0 and disappears at a scrape carrying
everything it counted, ``rate()`` and ``increase()`` over the set add up too
(see the collector docstring for the exposition).

A retired series stops counting at once (its records go to ``other``) but is
shown one last time, with its final value, at the scrape of the refresh that
retired it; its budget is freed at the next refresh.

The series budget (``max_series``) covers every series with an ``exporter``
label. A new top-N key that does not fit is refused for this refresh
(``dropped_series`` counts it, its bytes stay in ``other``) and retires the
series that left the top N longest ago (it was on its way out anyway), so the
key gets a series at the next refresh if it is still in the top N.
Per-exporter fixed series (``other``, folded, templates) are charged when the
exporter is first seen; a version's (records, packets, sequence counters) when
it first comes from that exporter; interface series when an ifIndex is first seen.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Final, TypeVar

import numpy as np

from exporter.collectors.flows.columns import Column, PendingFlows, RawFlows, reduce_by_key
from exporter.collectors.flows.records import FlowRecord
from exporter.collectors.flows.sequence import SequenceStreams

# Slots per window: the window slides in steps of window / SLOTS.
SLOTS: Final = 10
# Keys tracked per slot and ranking at least; more when top_n is large.
MIN_CAPACITY: Final = 2048
# Columnar window counts of the current slot compacted past CHUNK_FACTOR * capacity entries.
CHUNK_FACTOR: Final = 4
# Columnar flows held before they are counted (all exporters together): enough records
# for numpy to pay off, and a byte bound for templates with large records.
BATCH: Final = 16384
PENDING_BYTES: Final = 4 * 1024 * 1024
_BY_COUNT = itemgetter(1)

# A key column or a single key: conversation keys are built from either.
KeyT = TypeVar("KeyT", int, Column)
# Conversation keys are protocol * PORTS + destination port.
PORTS: Final = 1 << 16

# Series of each version an exporter sends: records, packets, and the three sequence
# counters (lost, out of order, resets; see ``sequence``).
VERSION_SERIES: Final = 5

SOURCE: Final = "source"
DESTINATION: Final = "destination"
CONVERSATION: Final = "conversation"


@dataclass(frozen=True, slots=True)
class AggregationSettings:
    """The knobs of ``collectors.flows`` that shape aggregation (durations in seconds)."""

    top_n: int = 20
    window: float = 300.0
    ttl: float = 900.0
    max_series: int = 2000
    ipv4_prefix: int | None = None
    ipv6_prefix: int | None = None
    by_protocol_port: bool = False


class Ranking:
    """One ranked dimension of one exporter: window counts, series, ``other``."""

    __slots__ = (
        "_series_columns",
        "capacity",
        "chunked",
        "chunks",
        "current",
        "final",
        "folded",
        "left_at",
        "other",
        "past",
        "series",
        "series_cost",
    )

    def __init__(self, capacity: int, series_cost: int) -> None:
        self.capacity = capacity
        # Bytes per key in the current slot, and in the earlier slots of the window.
        self.current: dict[Hashable, int] = {}
        self.past: deque[dict[Hashable, int]] = deque(maxlen=SLOTS - 1)
        # Cumulative [bytes, packets] for keys with a series, and [bytes, packets] of the rest.
        self.series: dict[Hashable, list[int]] = {}
        self.other = [0, 0]
        self.folded = 0
        # When each series' key was last seen leaving the top N.
        self.left_at: dict[Hashable, float] = {}
        # Series retired at the last refresh: shown once more with their final value.
        self.final: dict[Hashable, list[int]] = {}
        self.series_cost = series_cost
        # Columnar counts of the current slot: (sorted keys, bytes) pairs, entries in all.
        self.chunks: list[tuple[Column, Column]] = []
        self.chunked = 0
        # The int keys with a series as a sorted array, and their counters (built lazily).
        self._series_columns: tuple[Column, list[list[int]]] | None = None

    def prune(self) -> None:
        """Cut the current slot to the half of ``capacity`` with the most bytes."""
        keep = heapq.nlargest(self.capacity // 2, self.current.items(), key=_BY_COUNT)
        self.current = dict(keep)

    def open_series(self, key: Hashable) -> None:
        """Give ``key`` a series, counting from 0."""
        self.series[key] = [0, 0]
        self._series_columns = None

    def retire(self, key: Hashable) -> None:
        """Stop counting into ``key``'s series; it is shown once more, then its cost is freed.

        From now on the key's records go to ``other``; the series keeps its final
        value until the next refresh, so the scrape that follows this refresh
        still sees every byte it counted and no increase is lost to ``rate()``.
        """
        self.final[key] = self.series.pop(key)
        del self.left_at[key]
        self._series_columns = None

    def add_columns(
        self, keys: Column, byte_sums: Column, packet_sums: Column, counts: Column
    ) -> None:
        """Count a reduced batch (sorted distinct keys, sums and records per key) as ``add``
        counts records: into the window, then into each key's series or ``other``."""
        self.chunks.append((keys, byte_sums))
        self.chunked += len(keys)
        if self.chunked > CHUNK_FACTOR * self.capacity:
            self._compact()
        in_series = np.zeros(len(keys), dtype=bool)
        series_keys, counters = self.series_columns()
        if len(series_keys):
            at = np.minimum(np.searchsorted(keys, series_keys), len(keys) - 1)
            for index in np.flatnonzero(keys[at] == series_keys).tolist():
                position = int(at[index])
                in_series[position] = True
                counters[index][0] += int(byte_sums[position])
                counters[index][1] += int(packet_sums[position])
        folded = ~in_series
        self.other[0] += int(byte_sums[folded].sum())
        self.other[1] += int(packet_sums[folded].sum())
        self.folded += int(counts[folded].sum())

    def series_columns(self) -> tuple[Column, list[list[int]]]:
        """The int keys with a series, sorted, as an array; and their counters in that order."""
        if self._series_columns is None:
            held = sorted(
                (key, counters) for key, counters in self.series.items() if type(key) is int
            )
            self._series_columns = (
                np.array([key for key, _ in held], dtype=np.uint64),
                [counters for _, counters in held],
            )
        return self._series_columns

    def _compact(self) -> tuple[Column, Column]:
        """Reduce the chunks to one, cut to the ``capacity`` keys with the most bytes."""
        if len(self.chunks) == 1:
            keys, sums = self.chunks[0]
        else:
            joined, (sums,), _ = reduce_by_key(
                np.concatenate([keys for keys, _ in self.chunks]),
                np.concatenate([sums for _, sums in self.chunks]),
            )
            keys = joined
        if len(keys) > self.capacity:
            kept = np.sort(np.argpartition(sums, -self.capacity)[-self.capacity :])
            keys, sums = keys[kept], sums[kept]
        self.chunks = [(keys, sums)]
        self.chunked = len(keys)
        return keys, sums

    def fold_columns(self) -> None:
        """Move the columnar counts of the current slot into its dict."""
        if not self.chunks:
            return
        keys, sums = self._compact()
        self.chunks = []
        self.chunked = 0
        current = self.current
        for key, count in zip(keys.tolist(), sums.tolist(), strict=True):
            current[key] = current.get(key, 0) + count
        if len(current) > self.capacity:
            self.prune()

    def rotate(self, slots: int) -> None:
        """Move on ``slots`` slots: the current one joins the past, the oldest fall off."""
        self.fold_columns()
        for _ in range(min(slots, SLOTS)):
            self.past.append(self.current)
            self.current = {}

    def window_top(self, top_n: int) -> list[Hashable]:
        """The ``top_n`` keys with the most bytes over the window, largest first."""
        self.fold_columns()
        totals = dict(self.current)
        for slot in self.past:
            for key, count in slot.items():
                totals[key] = totals.get(key, 0) + count
        top = heapq.nlargest(top_n, totals.items(), key=_BY_COUNT)
        return [key for key, count in top if count > 0]

    def exposed(self) -> Iterator[tuple[Hashable, list[int]]]:
        """The series to show: counting ones and those retired at the last refresh."""
        yield from self.series.items()
        yield from self.final.items()

    def tracked_keys(self) -> int:
        return len(self.current) + self.chunked + sum(len(slot) for slot in self.past)


class ExporterFlows:
    """What one flow exporter sent: rankings, interface totals, record and packet counts."""

    __slots__ = (
        "conversation",
        "destination",
        "inputs",
        "last_seen",
        "outputs",
        "packets",
        "pending",
        "records",
        "sequences",
        "source",
    )

    def __init__(self, capacity: int, by_protocol_port: bool, now: float) -> None:
        self.source = Ranking(capacity, series_cost=2)
        self.destination = Ranking(capacity, series_cost=2)
        self.conversation = Ranking(capacity, series_cost=1) if by_protocol_port else None
        # Bytes per ifIndex, in and out.
        self.inputs: dict[int, int] = {}
        self.outputs: dict[int, int] = {}
        # Per version label: records and packets.
        self.records: dict[str, int] = {}
        self.packets: dict[str, int] = {}
        self.last_seen = now
        # Columnar flows not counted yet: reduced per key a batch at a time.
        self.pending = PendingFlows()
        # The sequence numbers of its streams: export loss (see ``sequence``).
        self.sequences = SequenceStreams()

    def rankings(self) -> list[tuple[str, Ranking]]:
        found = [(SOURCE, self.source), (DESTINATION, self.destination)]
        if self.conversation is not None:
            found.append((CONVERSATION, self.conversation))
        return found


def _masker(prefix4: int | None, prefix6: int | None) -> Callable[[int | bytes], object] | None:
    if prefix4 is None and prefix6 is None:
        return None
    mask4 = (0xFFFFFFFF << (32 - (prefix4 if prefix4 is not None else 32))) & 0xFFFFFFFF
    bits6 = prefix6 if prefix6 is not None else 128
    mask6 = ((1 << 128) - 1) ^ ((1 << (128 - bits6)) - 1)

    def mask(address: int | bytes) -> object:
        if isinstance(address, int):
            return address & mask4
        return (int.from_bytes(address) & mask6).to_bytes(16)

    return mask


class FlowAggregator:
    """Counts records into rankings and interface totals; ``refresh`` re-ranks at each scrape.

    Not thread-safe: the collector serialises ``add`` (listener thread) and
    ``refresh``/reads (scrape thread) with one lock.
    """

    def __init__(self, settings: AggregationSettings, now: float) -> None:
        self.settings = settings
        self.capacity = max(MIN_CAPACITY, 8 * settings.top_n)
        self.exporters: dict[str, ExporterFlows] = {}
        self.series = 0
        self.dropped_series = 0
        self._mask = _masker(settings.ipv4_prefix, settings.ipv6_prefix)
        prefix4 = settings.ipv4_prefix
        self._mask4 = None if prefix4 is None else (0xFFFFFFFF << (32 - prefix4)) & 0xFFFFFFFF
        self._slot_length = settings.window / SLOTS
        self._slot_end = now + self._slot_length
        # ifIndexes refused for lack of budget since the last refresh (counted once each).
        self._refused: set[tuple[int, int, str]] = set()
        # Interface value and the time it last changed, to retire idle interfaces after ttl.
        self._interface_seen: dict[tuple[str, str, int], tuple[int, float]] = {}
        # Columnar flows held by all exporters together (see ``BATCH``).
        self._pending_records = 0
        self._pending_bytes = 0

    # -- exporters ---------------------------------------------------------------------------

    def fixed_cost(self) -> int:
        """Series an exporter always has: templates, ``other`` and folded per ranking."""
        rankings = 3 if self.settings.by_protocol_port else 2
        return 1 + 2 * 2 + (1 if self.settings.by_protocol_port else 0) + rankings

    def exporter(self, address: str, now: float) -> ExporterFlows | None:
        """The state of exporter ``address``, created if the budget has room for it."""
        flows = self.exporters.get(address)
        if flows is None:
            if not self._charge(self.fixed_cost()):
                return None
            flows = self.exporters[address] = ExporterFlows(
                self.capacity, self.settings.by_protocol_port, now
            )
        flows.last_seen = now
        return flows

    def _charge(self, cost: int) -> bool:
        if self.series + cost > self.settings.max_series:
            return False
        self.series += cost
        return True

    # -- ingest (hot path) -------------------------------------------------------------------

    def add(
        self,
        flows: ExporterFlows,
        version: str,
        records: Sequence[FlowRecord],
        now: float,
        columns: Sequence[RawFlows] = (),
    ) -> bool:
        """Count one packet's flows; False if its version needed series the budget lacks.

        Tuples are counted at once; columns wait in ``pending`` until the
        exporters' pending flows reach ``BATCH`` records or ``PENDING_BYTES``
        (or a refresh, or the next window slot).
        """
        if not self._count_packets(flows, version, 1, now):
            return False
        if columns:
            self._add_pending(flows, version, columns)
        if not records:
            return True
        flows.records[version] += len(records)
        source, destination = flows.source, flows.destination
        src_now, src_series, src_other = source.current, source.series, source.other
        dst_now, dst_series, dst_other = destination.current, destination.series, destination.other
        inputs, outputs = flows.inputs, flows.outputs
        mask = self._mask
        src_folded = dst_folded = 0
        # The two directions are written out rather than looped over: this loop runs
        # once per record, and local names are the cheapest lookups Python has.
        for src, dst, octets, packets, in_if, out_if, _proto, _port in records:
            if src is not None:
                key = src if mask is None else mask(src)
                src_now[key] = src_now.get(key, 0) + octets
                counters = src_series.get(key)
                if counters is None:
                    src_other[0] += octets
                    src_other[1] += packets
                    src_folded += 1
                else:
                    counters[0] += octets
                    counters[1] += packets
            if dst is not None:
                key = dst if mask is None else mask(dst)
                dst_now[key] = dst_now.get(key, 0) + octets
                counters = dst_series.get(key)
                if counters is None:
                    dst_other[0] += octets
                    dst_other[1] += packets
                    dst_folded += 1
                else:
                    counters[0] += octets
                    counters[1] += packets
            if in_if in inputs:
                inputs[in_if] += octets
            else:
                self._new_interface(flows, "in", in_if, octets)
            if out_if in outputs:
                outputs[out_if] += octets
            else:
                self._new_interface(flows, "out", out_if, octets)
        source.folded += src_folded
        destination.folded += dst_folded
        if len(src_now) > source.capacity:
            source.prune()
        if len(dst_now) > destination.capacity:
            destination.prune()
        if flows.conversation is not None:
            self._add_conversations(flows.conversation, records)
        return True

    def add_run(
        self,
        flows: ExporterFlows,
        version: str,
        columns: Sequence[RawFlows],
        packets: int,
        now: float,
    ) -> bool:
        """Count ``packets`` datagrams of ``version`` whose flows are all columnar, in one step.

        ``columns`` are their data sets in arrival order. The same as ``add(flows,
        version, (), now, parts)`` for each datagram in turn, provided the run
        ends at the datagram that brings the pending flows to ``BATCH`` records
        or ``PENDING_BYTES`` (see ``pending_room``), so batches are counted at
        the same points. False, and nothing counted, if the version needed
        series the budget lacks: then it lacked them for each datagram of the run.
        """
        if not self._count_packets(flows, version, packets, now):
            return False
        self._add_pending(flows, version, columns)
        return True

    def _count_packets(self, flows: ExporterFlows, version: str, packets: int, now: float) -> bool:
        """Count ``packets`` datagrams of ``version`` in the window slot of ``now``;
        False, and nothing counted, if the version needed series the budget lacks."""
        if now >= self._slot_end:
            self._rotate(now)
        if version not in flows.packets:
            if not self._charge(VERSION_SERIES):
                return False
            flows.packets[version] = flows.records[version] = 0
        flows.packets[version] += packets
        return True

    def pending_room(self) -> tuple[int, int]:
        """Records and bytes of columnar flows that may still be added before a batch is counted.

        A run for ``add_run`` ends at the datagram that brings either to 0 or below.
        """
        return BATCH - self._pending_records, PENDING_BYTES - self._pending_bytes

    def _add_pending(self, flows: ExporterFlows, version: str, columns: Sequence[RawFlows]) -> None:
        pending = flows.pending
        records_before, size_before = pending.records, pending.size
        for part in columns:
            pending.add(part)
        added = pending.records - records_before
        flows.records[version] += added
        self._pending_records += added
        self._pending_bytes += pending.size - size_before
        if self._pending_records >= BATCH or self._pending_bytes >= PENDING_BYTES:
            self._flush_all()

    @staticmethod
    def _add_conversations(ranking: Ranking, records: Iterable[FlowRecord]) -> None:
        current, series, other = ranking.current, ranking.series, ranking.other
        folded = 0
        for _src, _dst, octets, packets, _in, _out, proto, port in records:
            key = conversation_key(proto, port)
            current[key] = current.get(key, 0) + octets
            counters = series.get(key)
            if counters is None:
                other[0] += octets
                other[1] += packets
                folded += 1
            else:
                counters[0] += octets
                counters[1] += packets
        ranking.folded += folded
        if len(current) > ranking.capacity:
            ranking.prune()

    def _flush(self, flows: ExporterFlows) -> None:
        """Count the pending columnar flows of ``flows``, one Python step per distinct key."""
        batch = flows.pending.take()
        if batch is None:
            return
        octets, packets = batch.octets, batch.packets
        for ranking, addresses in (
            (flows.source, batch.source),
            (flows.destination, batch.destination),
        ):
            if self._mask4 is not None:
                addresses = addresses & np.uint64(self._mask4)
            keys, (byte_sums, packet_sums), counts = reduce_by_key(addresses, octets, packets)
            ranking.add_columns(keys, byte_sums, packet_sums, counts)
        if flows.conversation is not None:
            conversations = conversation_key(batch.protocol, batch.port)
            keys, (byte_sums, packet_sums), counts = reduce_by_key(conversations, octets, packets)
            flows.conversation.add_columns(keys, byte_sums, packet_sums, counts)
        for direction, totals, ifindexes in (
            ("in", flows.inputs, batch.inputs),
            ("out", flows.outputs, batch.outputs),
        ):
            keys, (byte_sums,), _ = reduce_by_key(ifindexes, octets)
            for ifindex, octet_sum in zip(keys.tolist(), byte_sums.tolist(), strict=True):
                if ifindex in totals:
                    totals[ifindex] += octet_sum
                else:
                    self._new_interface(flows, direction, ifindex, octet_sum)

    def _flush_all(self) -> None:
        for flows in self.exporters.values():
            self._flush(flows)
        self._pending_records = self._pending_bytes = 0

    def pending_bytes(self) -> int:
        """Bytes of columnar flows held, not counted yet (below ``PENDING_BYTES`` plus a packet)."""
        return self._pending_bytes

    def _new_interface(
        self, flows: ExporterFlows, direction: str, ifindex: int, octets: int
    ) -> None:
        totals = flows.inputs if direction == "in" else flows.outputs
        if self._charge(1):
            totals[ifindex] = octets
            return
        # Count a refused interface once per refresh, not once per record.
        refused = (id(flows), ifindex, direction)
        if refused not in self._refused and len(self._refused) < self.settings.max_series:
            self._refused.add(refused)
            self.dropped_series += 1

    def _rotate(self, now: float) -> None:
        # Pending flows arrived in the slot that is ending: count them there.
        self._flush_all()
        elapsed = math.floor((now - self._slot_end) / self._slot_length) + 1
        self._slot_end += elapsed * self._slot_length
        for flows in self.exporters.values():
            for _, ranking in flows.rankings():
                ranking.rotate(elapsed)

    # -- refresh (each scrape) ---------------------------------------------------------------

    def refresh(self, now: float) -> None:
        """Re-rank: give new top-N keys series, retire idle ones, forget silent exporters."""
        self._flush_all()
        if now >= self._slot_end:
            self._rotate(now)
        self._refused.clear()
        settings = self.settings
        self._release_final()
        self._forget_silent_exporters(now)
        newcomers: list[tuple[int, Ranking, Hashable]] = []
        for flows in self.exporters.values():
            flows.sequences.commit()
            for _, ranking in flows.rankings():
                top = ranking.window_top(settings.top_n)
                in_top = set(top)
                for key in ranking.series:
                    if key in in_top:
                        ranking.left_at.pop(key, None)
                    else:
                        ranking.left_at.setdefault(key, now)
                for key, since in list(ranking.left_at.items()):
                    if now - since >= settings.ttl:
                        ranking.retire(key)
                newcomers += [
                    (rank, ranking, key)
                    for rank, key in enumerate(top)
                    if key not in ranking.series and key not in ranking.final
                ]
        # Best ranks first across all rankings, so a tight budget goes to the biggest talkers.
        newcomers.sort(key=itemgetter(0))
        lingering: list[tuple[float, int, Ranking, Hashable]] | None = None
        releasing = 0
        for _, ranking, key in newcomers:
            if self._charge(ranking.series_cost):
                ranking.open_series(key)
                continue
            # No room now: retire lingering series (out of the top N longest first) so
            # that the next refresh has room; this one is refused.
            if lingering is None:
                lingering = self._lingering()
            while lingering and releasing < ranking.series_cost:
                _, _, holder, old = lingering.pop()
                holder.retire(old)
                releasing += holder.series_cost
            releasing -= min(releasing, ranking.series_cost)
            self.dropped_series += 1
        self._retire_idle_interfaces(now)

    def _release_final(self) -> None:
        for flows in self.exporters.values():
            for _, ranking in flows.rankings():
                self.series -= len(ranking.final) * ranking.series_cost
                ranking.final.clear()

    def _lingering(self) -> list[tuple[float, int, Ranking, Hashable]]:
        """Series out of the top N, the longest out last (so ``pop`` gives it first)."""
        return sorted(
            (
                (since, id(ranking), ranking, key)
                for flows in self.exporters.values()
                for _, ranking in flows.rankings()
                for key, since in ranking.left_at.items()
            ),
            key=itemgetter(0, 1),
            reverse=True,
        )

    def _retire_idle_interfaces(self, now: float) -> None:
        seen = self._interface_seen
        for address, flows in self.exporters.items():
            for direction, totals in (("in", flows.inputs), ("out", flows.outputs)):
                for ifindex, value in list(totals.items()):
                    key = (address, direction, ifindex)
                    before = seen.get(key)
                    if before is None or before[0] != value:
                        seen[key] = (value, now)
                    elif now - before[1] >= self.settings.ttl:
                        del totals[ifindex]
                        del seen[key]
                        self.series -= 1

    def _forget_silent_exporters(self, now: float) -> None:
        horizon = max(self.settings.ttl, self.settings.window)
        self.forget_exporters(lambda _, flows: now - flows.last_seen >= horizon)

    def forget_exporters(self, gone: Callable[[str, ExporterFlows], bool]) -> None:
        """Drop the exporters ``gone`` picks (by address and state), and their series."""
        for address, flows in list(self.exporters.items()):
            if not gone(address, flows):
                continue
            released = self.fixed_cost() + VERSION_SERIES * len(flows.packets)
            released += len(flows.inputs) + len(flows.outputs)
            released += sum(
                (len(r.series) + len(r.final)) * r.series_cost for _, r in flows.rankings()
            )
            self.series -= released
            del self.exporters[address]
            for direction, totals in (("in", flows.inputs), ("out", flows.outputs)):
                for ifindex in totals:
                    self._interface_seen.pop((address, direction, ifindex), None)

    def tracked_keys(self) -> int:
        """Keys held for ranking over all exporters (bounded by SLOTS * capacity each)."""
        return sum(r.tracked_keys() for f in self.exporters.values() for _, r in f.rankings())


def conversation_key(protocol: KeyT, port: KeyT) -> KeyT:
    """The key of a (protocol, destination port) pair: one integer, for dicts and arrays."""
    return protocol * PORTS + port


def key_label(key: Hashable, settings: AggregationSettings) -> str:
    """The ``address`` label of a talker key: a host, or a subnet when a prefix is set."""
    if isinstance(key, int):
        host = ipaddress.IPv4Address(key)
        prefix = settings.ipv4_prefix
    else:
        host = ipaddress.IPv6Address(key)  # type: ignore[assignment]
        prefix = settings.ipv6_prefix
    return str(host) if prefix is None else f"{host}/{prefix}"
