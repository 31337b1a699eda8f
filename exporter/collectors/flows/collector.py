"""``--collector.flows``: top bandwidth consumers from NetFlow v5, v9 and IPFIX.

Routers send flow records to a UDP port (``collectors.flows.listen``, default
``0.0.0.0:2055``); the collector decodes them (``v5``, ``v9``, ``ipfix``
modules), applies the sampling rate, and counts bytes and packets per talker
(``aggregate``). sFlow is not read: its samples are packet headers, a
different model, and are reported as ``unknown_version``.

Sample exposition (the metric contract)::

  # HELP scout_flow_talker_bytes_total Bytes of flows by talker since the talker entered ...
  # TYPE scout_flow_talker_bytes_total counter
  scout_flow_talker_bytes_total{address="10.1.1.9",direction="source",exporter="10.0.0.1"} 8.1e+09
  scout_flow_talker_bytes_total{address="other",direction="source",exporter="10.0.0.1"} 2.4e+10
  scout_flow_talker_bytes_total{address="fd00::9",direction="destination",exporter="10.0.0.1"} 5e+09
  scout_flow_talker_bytes_total{address="other",direction="destination",exporter="10.0.0.1"} 2.7e+10
  # TYPE scout_flow_talker_packets_total counter
  scout_flow_talker_packets_total{address="10.1.1.9",direction="source",exporter="10.0.0.1"} 6.2e+06
  # TYPE scout_flow_conversation_bytes_total counter   (only with by_protocol_port)
  scout_flow_conversation_bytes_total{exporter="10.0.0.1",port="443",protocol="tcp"} 1.9e+10
  scout_flow_conversation_bytes_total{exporter="10.0.0.1",port="other",protocol="other"} 1.3e+10
  # TYPE scout_flow_folded_records_total counter
  scout_flow_folded_records_total{direction="source",exporter="10.0.0.1"} 120377
  # TYPE scout_flow_interface_bytes_total counter
  scout_flow_interface_bytes_total{direction="in",exporter="10.0.0.1",ifindex="2"} 3.2e+10
  scout_flow_interface_bytes_total{direction="out",exporter="10.0.0.1",ifindex="3"} 3.1e+10
  # TYPE scout_flow_records_total counter
  scout_flow_records_total{exporter="10.0.0.1",version="ipfix"} 1.5e+06
  # TYPE scout_flow_packets_total counter
  scout_flow_packets_total{exporter="10.0.0.1",version="ipfix"} 51234
  # TYPE scout_flow_sequence_lost_records_total counter   (v5 and IPFIX number records)
  scout_flow_sequence_lost_records_total{exporter="10.0.0.1",version="ipfix"} 120
  # TYPE scout_flow_sequence_lost_packets_total counter   (v9 numbers export packets)
  scout_flow_sequence_lost_packets_total{exporter="10.0.0.2",version="v9"} 3
  # TYPE scout_flow_sequence_out_of_order_total counter
  scout_flow_sequence_out_of_order_total{exporter="10.0.0.1",version="ipfix"} 1
  # TYPE scout_flow_sequence_resets_total counter
  scout_flow_sequence_resets_total{exporter="10.0.0.1",version="ipfix"} 0
  # TYPE scout_flow_templates gauge
  scout_flow_templates{exporter="10.0.0.1"} 3
  # TYPE scout_flow_bad_packets_total counter
  scout_flow_bad_packets_total{reason="truncated"} 0
  scout_flow_bad_packets_total{reason="unknown_template"} 2
  # TYPE scout_flow_series gauge
  scout_flow_series 57
  # TYPE scout_flow_series_budget gauge
  scout_flow_series_budget 2000
  # TYPE scout_flow_dropped_series_total counter
  scout_flow_dropped_series_total 0
  # TYPE scout_flow_receive_drops_total counter
  scout_flow_receive_drops_total 0

Why ``rate()`` stays right while talkers come and go: every record adds its
bytes to exactly one series, its talker's if the talker has a series at that
moment, else ``other``. Ranking happens at each scrape, over the last
``window``; a talker that makes the top ``top_n`` gets a counter at that
scrape, exposed as 0 first, so nothing it sent before counts as an increase;
it keeps the counter until it has been out of the top N for ``ttl`` (so a
talker hovering at rank N does not flap), and the counter disappears at a
scrape that already showed everything it counted. Hence, for one Prometheus
scraping the collector, ``sum(rate(scout_flow_talker_bytes_total[5m]))`` by
exporter and direction, ``other`` included, equals the rate of all bytes;
``topk(10, rate(...{address!="other"}[5m]))`` is the top consumers.

Bounds: ``scout_flow_series`` counts every series with an ``exporter`` label
and never exceeds ``max_series`` (a refused series is
``scout_flow_dropped_series_total``); keys tracked for ranking are capped per
exporter and direction, and flows waiting to be counted in batches at
``BATCH`` records or ``PENDING_BYTES`` (see ``aggregate``); templates are capped at
``max_templates``; packets from outside ``exporters`` (when set), truncated or
lying packets, data without a template and template floods are dropped and
counted in ``scout_flow_bad_packets_total{reason}``; datagrams the kernel
dropped before the listener could read them (a queue overflow: a flood, or a
receive buffer too small for the routers' bursts) in
``scout_flow_receive_drops_total``.

Export loss (see ``sequence``): the sequence numbers in the headers say what
each exporter sent; a gap is counted as lost records (v5, IPFIX) or packets
(v9), per exporter and version, at the first scrape after it, unless late
datagrams filled it before. Sequence state lives with the exporter's and is
forgotten with it; the three counters are charged to the series budget with
the version's records and packets.

A reload builds a new collector, which takes over from the old one (see
``FlowIngest.take_over``): the templates always, the counts while the settings
that rank and label them are unchanged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, TypeVar, cast

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import HostView
from exporter.collectors.flows.aggregate import (
    CONVERSATION,
    PORTS,
    AggregationSettings,
    ExporterFlows,
    FlowAggregator,
    key_label,
)
from exporter.collectors.flows.columns import RawFlows
from exporter.collectors.flows.decoder import (
    SEQUENCE_AT,
    UPTIME_AT,
    VERSION_NUMBERS,
    FlowDecoder,
    like_runs,
    sequence_of,
    uptime_of,
)
from exporter.collectors.flows.listener import DatagramBatch, UdpListener
from exporter.collectors.flows.records import (
    BAD_PACKET_REASONS,
    MALFORMED,
    NOT_ALLOWED,
    SERIES_BUDGET,
    BadPacketError,
)
from exporter.config import ExporterConfig, FlowsCollectorConfig

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Exporter addresses remembered as allowed or not (more are looked up each time).
_ALLOWED_CACHE_SIZE: Final = 4096
# A count of data records, or None where it is not known.
_Records = TypeVar("_Records", int, int | None)
# The sequence counters of a version no stream of which has been seen yet.
_NO_SEQUENCE: Final = (0, 0, 0)
_PROTOCOL_NAMES: Final = {
    1: "icmp",
    6: "tcp",
    17: "udp",
    47: "gre",
    50: "esp",
    58: "ipv6-icmp",
    132: "sctp",
}


def _no_room(version: str, exporter: str) -> BadPacketError:
    return BadPacketError(SERIES_BUDGET, f"no room for {version} from {exporter}")


def settings_from_config(config: FlowsCollectorConfig) -> AggregationSettings:
    return AggregationSettings(
        top_n=config.top_n,
        window=config.window.total_seconds(),
        ttl=config.ttl.total_seconds(),
        max_series=config.max_series,
        ipv4_prefix=config.ipv4_prefix,
        ipv6_prefix=config.ipv6_prefix,
        by_protocol_port=config.by_protocol_port,
    )


def _numbered(version: str, records: _Records) -> _Records | int:
    """What a header's sequence number counts of a datagram holding ``records`` data
    records (None: not known): those records, but a v9 packet is one."""
    return 1 if version == "v9" else records


def _observe(
    flows: ExporterFlows,
    datagram: bytes | memoryview,
    version: str,
    records: int | None,
    now: float,
) -> None:
    """Follow the sequence number of a datagram that decoded (see ``sequence``)."""
    number = VERSION_NUMBERS[version]
    stream_id, sequence = sequence_of(datagram, number)
    stream, counts = flows.sequences.stream(number, version, stream_id)
    stream.observe(sequence, _numbered(version, records), now, counts, uptime_of(datagram, number))


class _Run:
    """Consecutive quick datagrams of one exporter and version, counted in one step
    (see ``FlowIngest.ingest_batch``)."""

    __slots__ = (
        "_bytes_left",
        "_exporter",
        "_flows",
        "_ingest",
        "_parts",
        "_records_left",
        "_version",
        "now",
        "packets",
    )

    def __init__(self, ingest: FlowIngest, now: float) -> None:
        self._ingest = ingest
        self.now = now
        # The exporter of the datagram before and its state: a batch is mostly one
        # router's burst, and no refresh can forget an exporter inside a batch.
        self._exporter: str | None = None
        self._flows: ExporterFlows | None = None
        self._version = ""
        self._parts: list[RawFlows] = []
        self.packets = 0
        self._records_left = self._bytes_left = 0

    def join(self, exporter: str, version: str) -> ExporterFlows:
        """Make the run one of ``exporter`` and ``version``, counting the run before if
        it was another's; its exporter's state. ``BadPacketError`` if the budget has
        no room for the exporter."""
        if exporter is not self._exporter or self._flows is None or version != self._version:
            self.close()
            if exporter is not self._exporter or self._flows is None:
                self._flows = self._ingest._exporter(exporter, self.now)
                self._exporter = exporter
            self._version = version
        return self._flows

    def _open(self) -> None:
        # A run starts with the room the pending flows leave.
        if not self.packets:
            self._records_left, self._bytes_left = self._ingest.aggregator.pending_room()

    def room(self, records: int, size: int) -> int:
        """Datagrams of ``records`` records and ``size`` bytes each that join before the
        run must be counted (at least one)."""
        self._open()
        return max(1, min(-(-self._records_left // records), -(-self._bytes_left // size)))

    def add(self, parts: Sequence[RawFlows], packets: int) -> None:
        """Add ``packets`` datagrams' flows; the run is counted once they fill the room."""
        self._open()
        self._parts += parts
        self.packets += packets
        for _, data, count, _ in parts:
            self._records_left -= count
            self._bytes_left -= len(data)
        if self._records_left <= 0 or self._bytes_left <= 0:
            self.close()

    def close(self) -> None:
        """Count the run, if it holds anything."""
        if self.packets:
            self._ingest._add_run(
                self._flows, self._version, self._parts, self.packets, self.now, self._exporter
            )
            self._parts, self.packets = [], 0


class FlowIngest:
    """Decoding plus aggregation for datagrams, with the bad-packet counts; no sockets.

    ``ingest`` and ``collect`` may run in different threads: one lock orders them.
    """

    def __init__(
        self,
        settings: AggregationSettings,
        max_templates: int,
        exporters: Sequence[Network] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.decoder = FlowDecoder(max_templates)
        self.aggregator = FlowAggregator(settings, clock())
        self.bad_packets = dict.fromkeys(BAD_PACKET_REASONS, 0)
        self._exporters = tuple(exporters) if exporters is not None else None
        self._allowed: dict[str, bool] = {}
        self._failure_logged = False

    def _is_allowed(self, address: str) -> bool:
        if self._exporters is None:
            return True
        allowed = self._allowed.get(address)
        if allowed is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return False
            allowed = any(ip in network for network in self._exporters)
            if len(self._allowed) >= _ALLOWED_CACHE_SIZE:
                self._allowed.clear()
            self._allowed[address] = allowed
        return allowed

    def take_over(self, previous: FlowIngest) -> None:
        """Go on from ``previous``, the ingest of the config a reload replaces, whose
        datagrams have stopped coming (its listener is closed); called before this
        ingest is read or fed.

        Kept whatever the new settings: the templates and sampling rates (see
        ``FlowDecoder.carry_from``) and the bad packet counts. Kept while the
        aggregation settings (``top_n``, ``window``, ``ttl``, ``max_series``, the
        prefixes, ``by_protocol_port``) are unchanged: every exporter's counters and
        sequence state; other settings rank and label the flows differently, so
        those counts start again. An exporter the new ``exporters`` no longer admits
        is forgotten by ``forget_unadmitted``, once this config is sure to run: the
        counts may still go back to ``previous``'s config if it is not.

        May be called again with a newer ``previous`` (a failed reload's ingest, which
        had taken over from the same one): its templates are laid over the older
        ones, its bad packet counts replace theirs, and its counters are taken if its
        settings are this one's.
        """
        with previous._lock:
            self.decoder.carry_from(previous.decoder, self._is_allowed)
            if previous.aggregator.settings == self.aggregator.settings:
                self.aggregator = previous.aggregator
                # A scrape still in flight on the replaced collector reads the same counts.
                self._lock = previous._lock
            self.bad_packets = dict(previous.bad_packets)

    def forget_unadmitted(self) -> None:
        """Forget the exporters ``exporters`` does not admit (counts taken over from a
        config that admitted more)."""
        if self._exporters is not None:
            with self._lock:
                self.aggregator.forget_exporters(lambda address, _: not self._is_allowed(address))

    def ingest(self, datagram: bytes, exporter: str) -> None:
        """Decode and count one datagram from ``exporter``; bad ones are counted, never raised."""
        self.ingest_batch(((datagram, exporter),))

    def ingest_batch(self, datagrams: Iterable[tuple[bytes | memoryview, str]]) -> None:
        """Decode and count ``(datagram, exporter)`` pairs received together, in order.

        One lock and one clock reading for the batch (it came in one receive);
        each datagram is read on its own, so a bad one is counted and dropped
        without touching its neighbours. Consecutive quick datagrams (see
        ``FlowDecoder.decode_columns``) of one exporter and version form a run,
        counted by one ``FlowAggregator.add_run``: the per-datagram work is the
        decode and a list append. A run ends where the datagram-at-a-time path
        would have counted a batch or done anything else (another exporter or
        version, a datagram for ``decode``), so the counts are the same.

        A ``DatagramBatch`` (what the listener hands on) is read by runs of like
        datagrams (``decoder.like_runs``): one that ``FlowDecoder.run_layout``
        can read, a router's burst of data packets, is read from its first
        datagram and joins the run as slices of the batch's rows, with no Python
        step per datagram; the counts are the same again.
        """
        with self._lock:
            run = _Run(self, self._clock())
            if isinstance(datagrams, DatagramBatch):
                self._ingest_runs(datagrams, run)
            else:
                self._ingest_each(datagrams, run)
            run.close()

    def _ingest_each(self, datagrams: Iterable[tuple[bytes | memoryview, str]], run: _Run) -> None:
        decode_columns = self.decoder.decode_columns
        for datagram, exporter in datagrams:
            try:
                if self._exporters is not None and not self._is_allowed(exporter):
                    raise BadPacketError(NOT_ALLOWED)
                # Decode first: garbage from a new address must not cost an exporter's series.
                quick = decode_columns(datagram, exporter)
                if quick is None:
                    run.close()
                    self._ingest_slowly(datagram, exporter, run.now)
                    continue
                version, columns = quick
                flows = run.join(exporter, version)
                _observe(flows, datagram, version, sum(part[2] for part in columns), run.now)
                run.add(columns, 1)
            except BadPacketError as error:
                self.bad_packets[error.reason] += 1
            except Exception:  # listener boundary: one odd datagram must not stop the thread
                self._unexpected(1, exporter)

    def _ingest_runs(self, batch: DatagramBatch, run: _Run) -> None:
        starts = like_runs(batch.slots, batch.lengths, batch.senders)
        for start, stop in itertools.pairwise(starts):
            if stop - start < 2 or not self._ingest_alike(batch, start, stop, run):
                self._ingest_each(batch[start:stop], run)

    def _ingest_alike(self, batch: DatagramBatch, start: int, stop: int, run: _Run) -> bool:
        """Count the like datagrams ``start:stop`` of ``batch`` in slices of its rows;
        False, with nothing counted, where each must be read on its own."""
        first, exporter = batch[start]
        if self._exporters is not None and not self._is_allowed(exporter):
            self.bad_packets[NOT_ALLOWED] += stop - start
            return True
        try:
            layout = self.decoder.run_layout(first, exporter)
        except Exception:  # read one at a time, each datagram is counted as it deserves
            return False
        if layout is None:
            return False
        version, (columns, _, count, rate), offset = layout
        size = count * columns.dtype.itemsize
        rows = batch.slots[start:stop, offset : offset + size]
        try:
            flows = run.join(exporter, version)
        except BadPacketError as error:
            self.bad_packets[error.reason] += stop - start
            return True
        except Exception:  # listener boundary, as for one datagram
            self._unexpected(stop - start, exporter)
            return True
        # The run's sequence numbers in one array step (its datagrams are of one stream).
        number = VERSION_NUMBERS[version]
        at = SEQUENCE_AT[number]
        fields = np.ascontiguousarray(batch.slots[start:stop, at : at + 4])
        numbers = fields.view(">u4").ravel().tolist()
        uptimes = None
        if number != 10:  # IPFIX headers have no uptime
            clocks = np.ascontiguousarray(batch.slots[start:stop, UPTIME_AT : UPTIME_AT + 4])
            uptimes = clocks.view(">u4").ravel().tolist()
        stream, sequence_counts = flows.sequences.stream(
            number, version, sequence_of(first, number)[0]
        )
        stream.observe_run(numbers, uptimes, _numbered(version, count), run.now, sequence_counts)
        taken = 0
        while taken < len(rows):
            # As many datagrams as the datagram-at-a-time path puts in the run before it ends.
            take = min(len(rows) - taken, run.room(count, size))
            records = np.ascontiguousarray(rows[taken : taken + take]).reshape(-1)
            run.add([(columns, records.data, take * count, rate)], take)
            taken += take
        return True

    def _add_run(
        self,
        flows: ExporterFlows | None,
        version: str,
        run: list[RawFlows],
        packets: int,
        now: float,
        exporter: str | None,
    ) -> None:
        """Count a run of quick datagrams (see ``ingest_batch``); problems count per datagram."""
        # A run holds datagrams only once their exporter's state was found.
        assert flows is not None
        assert exporter is not None
        try:
            if not self.aggregator.add_run(flows, version, run, packets, now):
                self.bad_packets[SERIES_BUDGET] += packets
        except Exception:  # as for one datagram: counted, logged once, the thread goes on
            self._unexpected(packets, exporter)

    def _unexpected(self, packets: int, exporter: str) -> None:
        self.bad_packets[MALFORMED] += packets
        if not self._failure_logged:
            self._failure_logged = True
            log.exception("flow datagram from %s could not be read", exporter)

    def _exporter(self, exporter: str, now: float) -> ExporterFlows:
        flows = self.aggregator.exporter(exporter, now)
        if flows is None:
            raise BadPacketError(SERIES_BUDGET, f"no room for exporter {exporter}")
        return flows

    def _ingest_slowly(self, datagram: bytes | memoryview, exporter: str, now: float) -> None:
        """Decode and count a datagram the quick read left (templates, options, IPv6, bad)."""
        decoded = self.decoder.decode(datagram, exporter)
        if decoded.problem is not None:
            self.bad_packets[decoded.problem] += 1
        flows = self._exporter(exporter, now)
        version = decoded.version
        # A v5 packet's records are its one part of columns; the others' were counted by set.
        records = decoded.columns[0][2] if version == "v5" else decoded.data_records
        _observe(flows, datagram, version, records, now)
        if not self.aggregator.add(flows, version, decoded.records, now, decoded.columns):
            raise _no_room(version, exporter)

    def collect(self) -> list[Metric]:
        """Re-rank, then render every flow family from the current counts."""
        with self._lock:
            self.aggregator.refresh(self._clock())
            return list(self._families())

    def _families(self) -> Iterator[Metric]:
        aggregator = self.aggregator
        settings = aggregator.settings
        talker_bytes = CounterMetricFamily(
            "scout_flow_talker_bytes",
            "Bytes of flows by talker since the talker entered the top N; "
            'address="other" counts the rest.',
            labels=["exporter", "direction", "address"],
        )
        talker_packets = CounterMetricFamily(
            "scout_flow_talker_packets",
            "Packets of flows by talker since the talker entered the top N; "
            'address="other" counts the rest.',
            labels=["exporter", "direction", "address"],
        )
        conversations = CounterMetricFamily(
            "scout_flow_conversation_bytes",
            "Bytes of flows by protocol and destination port (top N, then other).",
            labels=["exporter", "protocol", "port"],
        )
        folded = CounterMetricFamily(
            "scout_flow_folded_records",
            "Flow records counted in other because their key had no series.",
            labels=["exporter", "direction"],
        )
        interfaces = CounterMetricFamily(
            "scout_flow_interface_bytes",
            "Bytes of flows by exporter interface (ifIndex), in or out.",
            labels=["exporter", "ifindex", "direction"],
        )
        records = CounterMetricFamily(
            "scout_flow_records",
            "Flow records received, by flow protocol version.",
            labels=["exporter", "version"],
        )
        packets = CounterMetricFamily(
            "scout_flow_packets",
            "Flow export packets received and read, by flow protocol version.",
            labels=["exporter", "version"],
        )
        lost_records = CounterMetricFamily(
            "scout_flow_sequence_lost_records",
            "Flow records the exporter sent that were never read (lost on the way, "
            "dropped by the kernel or unreadable), from gaps in the sequence numbers of "
            "NetFlow v5 (per engine) and IPFIX (data records per observation domain).",
            labels=["exporter", "version"],
        )
        lost_packets = CounterMetricFamily(
            "scout_flow_sequence_lost_packets",
            "NetFlow v9 export packets the exporter sent that were never read (lost on "
            "the way, dropped by the kernel or unreadable), from gaps in the sequence "
            "numbers (v9 numbers packets per source id, not records).",
            labels=["exporter", "version"],
        )
        out_of_order = CounterMetricFamily(
            "scout_flow_sequence_out_of_order",
            "Flow export packets whose sequence number was behind the one expected: "
            "late (closing a gap, which is then not loss) or repeated.",
            labels=["exporter", "version"],
        )
        resets = CounterMetricFamily(
            "scout_flow_sequence_resets",
            "Sequence number jumps taken as an exporter restart (its uptime went back, "
            "a datagram continued from one far behind, or a jump further ahead than "
            "the exporter could have sent), not counted as loss.",
            labels=["exporter", "version"],
        )
        templates = GaugeMetricFamily(
            "scout_flow_templates",
            "NetFlow v9 and IPFIX templates held for the exporter.",
            labels=["exporter"],
        )
        for exporter, flows in aggregator.exporters.items():
            for direction, ranking in flows.rankings():
                if direction == CONVERSATION:
                    for key, (octets, _) in ranking.exposed():
                        protocol, port = divmod(cast(int, key), PORTS)
                        name = _PROTOCOL_NAMES.get(protocol, str(protocol))
                        conversations.add_metric([exporter, name, str(port)], octets)
                    conversations.add_metric([exporter, "other", "other"], ranking.other[0])
                else:
                    for key, (octets, count) in ranking.exposed():
                        address = key_label(key, settings)
                        talker_bytes.add_metric([exporter, direction, address], octets)
                        talker_packets.add_metric([exporter, direction, address], count)
                    talker_bytes.add_metric([exporter, direction, "other"], ranking.other[0])
                    talker_packets.add_metric([exporter, direction, "other"], ranking.other[1])
                folded.add_metric([exporter, direction], ranking.folded)
            for direction, totals in (("in", flows.inputs), ("out", flows.outputs)):
                for ifindex, octets in totals.items():
                    interfaces.add_metric([exporter, str(ifindex), direction], octets)
            sequence_counts = flows.sequences.counts
            for version, count in flows.records.items():
                records.add_metric([exporter, version], count)
                packets.add_metric([exporter, version], flows.packets[version])
                lost, late, restarts = sequence_counts.get(version, _NO_SEQUENCE)
                lost_family = lost_packets if version == "v9" else lost_records
                lost_family.add_metric([exporter, version], lost)
                out_of_order.add_metric([exporter, version], late)
                resets.add_metric([exporter, version], restarts)
            templates.add_metric([exporter], self.decoder.templates.count(exporter))
        yield talker_bytes
        yield talker_packets
        if settings.by_protocol_port:
            yield conversations
        yield folded
        yield interfaces
        yield records
        yield packets
        yield lost_records
        yield lost_packets
        yield out_of_order
        yield resets
        yield templates
        bad = CounterMetricFamily(
            "scout_flow_bad_packets",
            "Flow packets dropped (whole or in part), by reason.",
            labels=["reason"],
        )
        for reason, count in self.bad_packets.items():
            bad.add_metric([reason], count)
        yield bad
        yield GaugeMetricFamily(
            "scout_flow_series",
            "Flow series with an exporter label exposed now.",
            value=aggregator.series,
        )
        yield GaugeMetricFamily(
            "scout_flow_series_budget",
            "Most flow series with an exporter label (collectors.flows.max_series).",
            value=settings.max_series,
        )
        yield CounterMetricFamily(
            "scout_flow_dropped_series",
            "Flow series not created because the series budget was spent.",
            value=aggregator.dropped_series,
        )


class FlowsCollector:
    """The flow listener and its counts: ``start`` binds the UDP socket, ``close`` releases it."""

    def __init__(
        self, config: FlowsCollectorConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.flows = FlowIngest(
            settings_from_config(config),
            config.max_templates,
            exporters=config.exporters,
            clock=clock,
        )
        self._listener = UdpListener(config.listen, self.flows.ingest_batch)
        # Kernel drops seen by the listeners of the configs reloads replaced.
        self._drops_before = 0

    @classmethod
    def from_config(cls, config: ExporterConfig, view: HostView) -> FlowsCollector:
        return cls(config.collectors.flows)

    @property
    def address(self) -> tuple[str, int]:
        """Where the listener is bound (the real port when ``listen`` asked for 0)."""
        return self._listener.address

    def take_over(self, previous: object) -> None:
        """Go on from the flows collector a reload replaces (see ``FlowIngest.take_over``);
        called after ``previous`` closed and before ``start``, perhaps again with a
        newer one (a failed reload's)."""
        if isinstance(previous, FlowsCollector):
            self.flows.take_over(previous.flows)
            # The newer one's count includes the older one's.
            self._drops_before = previous.receive_drops()

    def receive_drops(self) -> int:
        """Datagrams the kernel dropped since the collector's first config started."""
        return self._drops_before + (self._listener.socket_drops() or 0)

    async def start(self) -> None:
        self._listener.start()
        # Bound: this config runs, and the counts taken over are its own now.
        self.flows.forget_unadmitted()

    async def close(self) -> None:
        # Joining the thread is quick (it wakes on the socket pair), but never on the loop.
        await asyncio.to_thread(self._listener.stop)

    def collect(self) -> list[Metric]:
        families = self.flows.collect()
        if self._listener.socket_drops() is not None:
            families.append(
                CounterMetricFamily(
                    "scout_flow_receive_drops",
                    "Flow datagrams the kernel dropped before the listener read them, "
                    "mostly on a full socket queue (since the exporter started).",
                    value=self.receive_drops(),
                )
            )
        return families
