"""A v2c SNMP responder fast enough to stand in for 10,000 devices: answers learnt from snmpd.

``benchmarks/snmp_fleet.py`` measures an exporter scraping thousands of devices;
the agents must keep up without taking the cores the exporter is measured on.
net-snmp's snmpd builds every answer anew (about 330,000 OIDs/s for 10,000
49-port devices a minute is more than it does), so this process stands in front
of one snmpd and replays its answers:

* A request is keyed by its community, PDU type and everything after the
  request-id (non-repeaters, max-repetitions, the OIDs asked for). Every device
  of a fleet serves the same tables, so the same request from any device on any
  port gets the same answer.
* The first time a key is seen, the request goes to the real snmpd (``--upstream``)
  with a request-id of ours; its answer is stored as the bytes after its
  request-id. Later requests with that key are answered from memory: the stored
  bytes re-wrapped around the asker's request-id (lengths re-encoded). So every
  answer is one snmpd gave, byte for byte, except the request-id.
* Answers are frozen at first sight: counters do not grow. An exporter's CPU does
  not depend on the values, only on how many there are and their types.

One process listens on ``--ports`` UDP ports; ``snmp_fleet.py`` starts a few,
each with its share of the ports, so the agents use several cores if they need
them. Only SNMPv1/v2c (community) messages are served.

Usage: python benchmarks/snmp_responder.py --host H --ports FIRST-LAST --upstream H:P
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import sys
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/snmp_responder.py` from anywhere
    sys.path.insert(0, str(REPO))

from exporter.clients.snmp import ber  # noqa: E402

# An upstream request unanswered this long is sent again when the key is asked for.
UPSTREAM_RETRY_SECONDS = 1.0

# (community, PDU tag, PDU contents after the request-id)
Key = tuple[bytes, int, bytes]
Address = tuple[str | int, ...]


def split_request(data: bytes) -> tuple[bytes, Key, bytes]:
    """``(message head, key, encoded request-id)`` of a v1/v2c message.

    The head is the version and community elements, which the answer repeats.
    Raises ``ValueError``/``IndexError`` for what is not a community message.
    """
    _version, community, pdu_pos = ber.decode_community_message(data)
    tag, start, end = ber.read_tlv(data, pdu_pos)
    _, id_end = ber.expect(data, start, ber.INTEGER, "request-id")
    head_start = ber.read_tlv(data, 0)[1]
    return data[head_start:pdu_pos], (community, tag, data[id_end:end]), data[start:id_end]


def wrap(head: bytes, request_id: bytes, tail: bytes, tag: int = ber.RESPONSE) -> bytes:
    """A whole message: ``head`` (version, community), then a PDU of request-id and ``tail``."""
    return ber.tlv(ber.SEQUENCE, head + ber.tlv(tag, request_id + tail))


class Responder(asyncio.DatagramProtocol):
    """Every port's protocol: answers from the store, or asks upstream once per key."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (3.11's does not subclass DatagramTransport).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            head, key, request_id = split_request(data)
        except (ValueError, IndexError):
            return  # not a community message: an agent ignores it too
        tail = self.upstream.answers.get(key)
        assert self.transport is not None
        if tail is not None:
            self.transport.sendto(wrap(head, request_id, tail), addr)
        else:
            self.upstream.ask(head, key, request_id, self.transport, addr)


class Upstream(asyncio.DatagramProtocol):
    """The real agent: asked once per key, its answers kept in ``answers``."""

    def __init__(self) -> None:
        self.answers: dict[Key, bytes] = {}
        self.transport: asyncio.DatagramTransport | None = None
        # request-id of ours -> key; key -> (asked at, the askers waiting for it)
        self._asked: dict[int, Key] = {}
        self._waiting: dict[
            Key, tuple[float, list[tuple[bytes, bytes, asyncio.DatagramTransport, Address]]]
        ] = {}
        self._next_id = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (3.11's does not subclass DatagramTransport).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def ask(
        self,
        head: bytes,
        key: Key,
        request_id: bytes,
        reply_on: asyncio.DatagramTransport,
        addr: Address,
    ) -> None:
        now = asyncio.get_running_loop().time()
        asked_at, waiters = self._waiting.get(key, (0.0, []))
        waiters.append((head, request_id, reply_on, addr))
        if now - asked_at < UPSTREAM_RETRY_SECONDS:
            return
        self._waiting[key] = (now, waiters)
        our_id = self._next_id
        self._next_id += 1
        self._asked[our_id] = key
        assert self.transport is not None
        self.transport.sendto(wrap(head, ber.encode_integer(our_id), key[2], key[1]))

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            _head, (_community, tag, tail), request_id = split_request(data)
            our_id = int.from_bytes(request_id[2:], "big", signed=True)
        except (ValueError, IndexError):
            return
        key = self._asked.pop(our_id, None)
        if key is None or tag != ber.RESPONSE:
            return
        self.answers[key] = tail
        _, waiters = self._waiting.pop(key, (0.0, []))
        for head, asker_id, reply_on, asker in waiters:
            reply_on.sendto(wrap(head, asker_id, tail), asker)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--ports", required=True, help="FIRST-LAST, both included")
    parser.add_argument("--upstream", required=True, help="the real agent, HOST:PORT")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    first, _, last = args.ports.partition("-")
    ports = range(int(first), int(last or first) + 1)
    host, _, port = args.upstream.rpartition(":")
    upstream = Upstream()
    await loop.create_datagram_endpoint(lambda: upstream, remote_addr=(host, int(port)))
    for listen_port in ports:
        await loop.create_datagram_endpoint(
            lambda: Responder(upstream), local_addr=(args.host, listen_port)
        )
    print(f"snmp_responder: listening on {args.host}:{first}-{last}", flush=True)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # One descriptor per port.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
