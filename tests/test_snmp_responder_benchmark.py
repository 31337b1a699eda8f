"""The fleet benchmark's responder answers as the snmpd behind it (benchmarks/snmp_responder.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import snmp_responder
from exporter.clients.snmp import ber
from tests.peers.snmp import RealSnmpd, answers, free_udp_port, snmp_command

pytestmark = pytest.mark.peers

COMMUNITIES = ("fleet0", "fleet1")
IF_TABLE = "1.3.6.1.2.1.2.2"
SYS_DESCR = "1.3.6.1.2.1.1.1.0"


def test_a_request_is_keyed_without_its_request_id_and_answered_around_the_askers():
    pdu = ber.encode_request_pdu(ber.GET_BULK_REQUEST, 70000, 0, 25, [b"\x2b\x06\x01"])
    other = ber.encode_request_pdu(ber.GET_BULK_REQUEST, 5, 0, 25, [b"\x2b\x06\x01"])
    head, key, request_id = snmp_responder.split_request(
        ber.encode_community_message(1, b"fleet0", pdu)
    )
    _, same_key, _ = snmp_responder.split_request(ber.encode_community_message(1, b"fleet0", other))
    _, other_community, _ = snmp_responder.split_request(
        ber.encode_community_message(1, b"fleet1", pdu)
    )
    assert key == same_key
    assert key != other_community
    answer = snmp_responder.wrap(head, request_id, b"\x02\x01\x00\x02\x01\x00\x30\x00")
    version, community, pos = ber.decode_community_message(answer)
    tag, got_id, status, index, varbinds = ber.decode_pdu(answer, pos)
    assert (version, community, tag, got_id, status, index, varbinds) == (
        1,
        b"fleet0",
        ber.RESPONSE,
        70000,
        0,
        0,
        [],
    )


@pytest.fixture
def replayed(tmp_path: Path) -> Iterator[tuple[RealSnmpd, list[int]]]:
    with RealSnmpd(tmp_path, communities=COMMUNITIES) as agent:
        ports = [free_udp_port(), free_udp_port()]
        while ports[0] == ports[1]:
            ports[1] = free_udp_port()
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    snmp_responder.__file__,
                    f"--ports={port}",
                    f"--upstream={agent.target}",
                ],
                stdout=subprocess.DEVNULL,
            )
            for port in ports
        ]
        try:
            deadline = time.monotonic() + 20
            while not all(answers(f"127.0.0.1:{p}", COMMUNITIES[0]) for p in ports):
                assert time.monotonic() < deadline, "the responders never answered"
                time.sleep(0.1)
            yield agent, ports
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)


def walk(target: str, community: str, oid: str) -> list[str]:
    result = snmp_command("snmpbulkwalk", target, oid, community=community)
    assert result.returncode == 0, result.stderr
    return [
        line.split(" = ")[0] if " = Counter" in line or " = Timeticks" in line else line
        for line in result.stdout.splitlines()
    ]


def test_every_port_and_community_answers_what_snmpd_answers(replayed):
    agent, ports = replayed
    direct = {c: walk(agent.target, c, IF_TABLE) for c in COMMUNITIES}
    assert direct[COMMUNITIES[0]]  # snmpd has interfaces to compare
    for port in ports:
        for community in COMMUNITIES:
            # twice: the second walk is answered from memory, with net-snmp checking
            # that each answer carries its own request's id
            for _ in range(2):
                assert walk(f"127.0.0.1:{port}", community, IF_TABLE) == direct[community]


def test_a_community_snmpd_does_not_know_gets_no_answer(replayed):
    _, ports = replayed
    result = snmp_command(
        "snmpget", f"127.0.0.1:{ports[0]}", SYS_DESCR, community="nobody", timeout=0.5, retries=0
    )
    assert result.returncode != 0
    assert "Timeout" in result.stderr + result.stdout
