"""Flow export peers for tests and benchmarks: packets built byte by byte, pcaps, pmacctd.

* ``Flow`` and the builders ``v5_packet``, ``v9_packet`` / ``v9_template`` /
  ``v9_data``, ``ipfix_packet`` / ``ipfix_template`` / ``ipfix_data``: NetFlow
  and IPFIX datagrams written with ``struct`` from the RFC layouts, so the
  parsers are checked against the wire format rather than against themselves.
* ``write_pcap``: an Ethernet capture holding the packets of some flows.
* ``replay_with_pmacctd``: Debian's ``pmacctd`` with its ``nfprobe`` plugin
  reads such a capture (``pcap_savefile``), exports the flows as NetFlow v5, v9
  or IPFIX to a UDP receiver and exits.
"""

from __future__ import annotations

import ipaddress
import struct
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# (element id, length) pairs; a length of 0xFFFF is IPFIX variable length.
Layout = Sequence[tuple[int, int]]

# A template like a router's: addresses, counters, interfaces, protocol, ports.
IPV4_LAYOUT: Layout = ((8, 4), (12, 4), (1, 4), (2, 4), (10, 2), (14, 2), (4, 1), (7, 2), (11, 2))
IPV6_LAYOUT: Layout = ((27, 16), (28, 16), (1, 8), (2, 8), (10, 4), (14, 4), (4, 1), (11, 2))


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow as an exporter reports it."""

    source: str
    destination: str
    octets: int
    packets: int
    input_ifindex: int = 1
    output_ifindex: int = 2
    protocol: int = 17
    source_port: int = 40000
    destination_port: int = 53

    def element(self, element: int) -> int | bytes:
        """The value of information element ``element`` (NetFlow v9 / IPFIX numbering)."""
        return self.elements().get(element, 0)

    def elements(self) -> dict[int, int | bytes]:
        """The flow's information elements by number (others are 0)."""
        return {
            1: self.octets,
            2: self.packets,
            4: self.protocol,
            7: self.source_port,
            8: ipaddress.ip_address(self.source).packed,
            10: self.input_ifindex,
            11: self.destination_port,
            12: ipaddress.ip_address(self.destination).packed,
            14: self.output_ifindex,
            27: ipaddress.ip_address(self.source).packed,
            28: ipaddress.ip_address(self.destination).packed,
        }


def v5_packet(flows: Sequence[Flow], *, sampling_interval: int = 0, sequence: int = 0) -> bytes:
    header = struct.pack(
        "!HHIIIIBBH", 5, len(flows), 1000, 1_700_000_000, 0, sequence, 0, 0, sampling_interval
    )
    records = b"".join(
        struct.pack(
            "!4s4s4sHHIIIIHHBBBBHHBBH",
            ipaddress.ip_address(flow.source).packed,
            ipaddress.ip_address(flow.destination).packed,
            bytes(4),
            flow.input_ifindex,
            flow.output_ifindex,
            flow.packets,
            flow.octets,
            0,
            0,
            flow.source_port,
            flow.destination_port,
            0,
            0,
            flow.protocol,
            0,
            0,
            0,
            0,
            0,
            0,
        )
        for flow in flows
    )
    return header + records


def encode_value(value: int | bytes, length: int) -> bytes:
    """A field value on the wire: integers big-endian, bytes as they are; varlen prefixed."""
    raw = value if isinstance(value, bytes) else value.to_bytes(length if length != 0xFFFF else 8)
    if length == 0xFFFF:
        return (
            bytes([len(raw)]) if len(raw) < 255 else b"\xff" + struct.pack("!H", len(raw))
        ) + raw
    if len(raw) != length:
        raise ValueError(f"value {value!r} is not {length} bytes")
    return raw


def encode_record(layout: Layout, values: Mapping[int, int | bytes]) -> bytes:
    return b"".join(encode_value(values.get(element, 0), length) for element, length in layout)


def _set(set_id: int, body: bytes, align: bool = False) -> bytes:
    if align and len(body) % 4:
        body += bytes(4 - len(body) % 4)
    return struct.pack("!HH", set_id, 4 + len(body)) + body


def v9_template(template_id: int, layout: Layout) -> bytes:
    fields = b"".join(struct.pack("!HH", element, length) for element, length in layout)
    return _set(0, struct.pack("!HH", template_id, len(layout)) + fields)


def v9_options_template(template_id: int, scope: Layout, options: Layout) -> bytes:
    scope_bytes = b"".join(struct.pack("!HH", e, n) for e, n in scope)
    option_bytes = b"".join(struct.pack("!HH", e, n) for e, n in options)
    body = struct.pack("!HHH", template_id, len(scope_bytes), len(option_bytes))
    return _set(1, body + scope_bytes + option_bytes, align=True)


def data_set(template_id: int, layout: Layout, rows: Iterable[Mapping[int, int | bytes]]) -> bytes:
    return _set(template_id, b"".join(encode_record(layout, row) for row in rows), align=True)


def flow_set(template_id: int, layout: Layout, flows: Iterable[Flow]) -> bytes:
    rows = (flow.elements() for flow in flows)
    return data_set(template_id, layout, rows)


def v9_packet(sets: Sequence[bytes], *, source_id: int = 0, sequence: int = 0) -> bytes:
    return struct.pack(
        "!HHIIII", 9, len(sets), 1000, 1_700_000_000, sequence, source_id
    ) + b"".join(sets)


def ipfix_template(
    template_id: int, layout: Layout, *, enterprise: dict[int, int] | None = None
) -> bytes:
    """An IPFIX template set; ``enterprise`` maps an element to its enterprise number."""
    fields = b""
    for element, length in layout:
        number = (enterprise or {}).get(element)
        if number is None:
            fields += struct.pack("!HH", element, length)
        else:
            fields += struct.pack("!HHI", element | 0x8000, length, number)
    return _set(2, struct.pack("!HH", template_id, len(layout)) + fields)


def ipfix_options_template(template_id: int, scope: Layout, options: Layout) -> bytes:
    fields = b"".join(struct.pack("!HH", e, n) for e, n in (*scope, *options))
    header = struct.pack("!HHH", template_id, len(scope) + len(options), len(scope))
    return _set(3, header + fields)


def ipfix_packet(sets: Sequence[bytes], *, domain: int = 0, sequence: int = 0) -> bytes:
    body = b"".join(sets)
    return struct.pack("!HHIII", 10, 16 + len(body), 1_700_000_000, sequence, domain) + body


# -- pcaps and pmacctd --------------------------------------------------------------------------


def _checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def udp_frame(flow: Flow, payload_size: int) -> bytes:
    """An Ethernet frame with one IPv4 UDP packet of ``flow``; its IP length is 28 + payload."""
    udp = struct.pack("!HHHH", flow.source_port, flow.destination_port, 8 + payload_size, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp) + payload_size,
        1,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(flow.source).packed,
        ipaddress.IPv4Address(flow.destination).packed,
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    ethernet = bytes.fromhex("0200000000020200000000010800")
    return ethernet + ip + udp + bytes(payload_size)


def write_pcap(path: Path, frames: Iterable[bytes], *, start: int = 1_700_000_000) -> Path:
    """A classic libpcap file (Ethernet) with ``frames`` a millisecond apart."""
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for index, frame in enumerate(frames):
            seconds, millis = divmod(index, 1000)
            out.write(struct.pack("<IIII", start + seconds, millis * 1000, len(frame), len(frame)))
            out.write(frame)
    return path


def replay_with_pmacctd(
    pcap: Path, receiver: tuple[str, int], version: int, workdir: Path, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """pmacctd + nfprobe over ``pcap``, exporting NetFlow ``version`` (5, 9, 10) to ``receiver``.

    pmacctd sleeps 2 s before reading a savefile, and flushes every flow when
    the file ends and it exits.
    """
    config = workdir / f"pmacctd-v{version}.conf"
    config.write_text(
        "daemonize: false\n"
        f"pcap_savefile: {pcap}\n"
        "plugins: nfprobe\n"
        f"nfprobe_receiver: {receiver[0]}:{receiver[1]}\n"
        f"nfprobe_version: {version}\n"
        "aggregate: src_host, dst_host, src_port, dst_port, proto\n"
    )
    done = subprocess.run(
        ["pmacctd", "-f", str(config)], capture_output=True, text=True, timeout=timeout
    )
    # At the end of the file the plugin flushes every flow and shuts down; when it
    # closes its pipe before the core does, the core logs "connection lost" and
    # exits 1 (about one run in five on a busy machine). Every record was sent
    # then (checked: same datagrams as a run that exits 0), so that is success.
    plugin_done = "( default_nfprobe/nfprobe ): Shutting down on user request" in done.stderr
    if done.returncode == 0 or (done.returncode == 1 and plugin_done):
        return done
    raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
