"""The SNMP client against a real snmpd, net-snmp's own tools, and small fake agents.

Real snmpd answers what it can be made to answer (walks, every v3 security
level, its reports, wrong communities). Misbehaviour no real agent shows on
demand (tooBig, OIDs that do not increase, walks that never end, noise, late
and malformed replies, an SNMPv1-only agent) comes from ``FakeAgent``, a few
lines of asyncio that speak v1/v2c with the client's own BER codec.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import select
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

import pytest
from pydantic import SecretStr

from exporter.clients.snmp import (
    MAX_REPETITIONS,
    Credentials,
    KeyCache,
    Oid,
    SnmpAuthError,
    SnmpError,
    SnmpProtocolError,
    SnmpSession,
    SnmpTimeout,
    ValueKind,
    VarBind,
    ber,
    parse_oid,
    walk,
)
from exporter.clients.snmp.usm import AUTH_PROTOCOLS, MAX_LOCALIZED_KEYS
from exporter.config import SnmpAuth
from tests.exporter.clients.snmp.conftest import PR_ROWS, PR_TABLE, SYS_NAME, V3_USERS, Snmpd

IF_TABLE = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IF_X_TABLE = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
IF_COLUMNS = [(*IF_TABLE, c) for c in range(1, 23)] + [(*IF_X_TABLE, c) for c in range(1, 20)]
SYS_NAME_OID = (1, 3, 6, 1, 2, 1, 1, 5, 0)
SYS_OBJECT_ID = (1, 3, 6, 1, 2, 1, 1, 2, 0)
PUBLIC = Credentials(2, community="public")
COUNTERS = {ValueKind.COUNTER32, ValueKind.COUNTER64}


def render(vb: VarBind) -> str:
    """A value as ``snmpbulkwalk -On -Oe -Ot -Ox`` prints it."""
    value = vb.value
    match vb.kind:
        case ValueKind.OCTET_STRING:
            assert isinstance(value, bytes)
            return "Hex-STRING: " + " ".join(f"{b:02X}" for b in value) if value else '""'
        case ValueKind.TIMETICKS:
            return str(value)
        case ValueKind.OID:
            assert isinstance(value, tuple)
            return "OID: ." + ".".join(map(str, value))
        case ValueKind.IP_ADDRESS:
            assert isinstance(value, bytes)
            return "IpAddress: " + ".".join(map(str, value))
    names = {
        ValueKind.INTEGER: "INTEGER",
        ValueKind.GAUGE32: "Gauge32",
        ValueKind.COUNTER32: "Counter32",
        ValueKind.COUNTER64: "Counter64",
    }
    return f"{names[vb.kind]}: {value}"


def flatten(walked: dict[Oid, list[VarBind]]) -> dict[Oid, VarBind]:
    return {vb.oid: vb for rows in walked.values() for vb in rows}


def session(agent: Snmpd, credentials: Credentials = PUBLIC, **kwargs: float) -> SnmpSession:
    return SnmpSession(agent.host, agent.port, credentials, **kwargs)


# OIDs.


@pytest.mark.parametrize(
    ("text", "oid"),
    [
        ("1.3.6.1.2.1.2.2.1.10", (1, 3, 6, 1, 2, 1, 2, 2, 1, 10)),
        (".1.3.6.1.4.1.2021", (1, 3, 6, 1, 4, 1, 2021)),
        ("2.999.4294967295", (2, 999, 4294967295)),
    ],
)
def test_parse_oid(text, oid):
    assert parse_oid(text) == oid


@pytest.mark.parametrize(
    "text",
    ["1.3.x", "", ".", "1", "1..3", "1.3.", "3.1", "1.40", "-1.3", "1.3.+6", "1.3.4294967296"],
)
def test_parse_oid_rejects_garbage(text):
    with pytest.raises(ValueError, match=re.escape(f"invalid OID {text!r}")):
        parse_oid(text)


# Walks compared with net-snmp.


@pytest.mark.parametrize(
    "root", [IF_TABLE, IF_X_TABLE, PR_TABLE], ids=["ifTable", "ifXTable", "prTable"]
)
async def test_walk_matches_snmpbulkwalk(snmpd, root):
    # net-snmp walks before and after ours: an interface may come or go in between
    # (other software creates them), but ours must equal one of the two exactly.
    before = snmpd.net_snmp_walk(root)
    async with session(snmpd) as client:
        ours = flatten(await client.bulk_walk([root], max_repetitions=25))
    after = snmpd.net_snmp_walk(root)
    theirs = before if list(ours) == list(before) else after
    assert theirs, "net-snmp found nothing to compare with"
    assert list(ours) == list(theirs)  # the same OIDs, in the same order
    for oid, vb in ours.items():
        if vb.kind in COUNTERS:  # counters move between the two walks
            assert theirs[oid].split(":")[0] == render(vb).split(":")[0], oid
        else:
            assert theirs[oid] == render(vb), oid


async def test_column_walk_equals_table_walk(snmpd):
    """Walking the columns in lock-step returns exactly the table, column by column."""
    async with session(snmpd) as client:
        by_column = await client.bulk_walk(IF_COLUMNS, max_repetitions=25)
        by_table = await client.bulk_walk([IF_TABLE, IF_X_TABLE], max_repetitions=25)
    assert list(by_column) == IF_COLUMNS
    for column, rows in by_column.items():
        assert all(vb.oid[: len(column)] == column for vb in rows)
    assert set(flatten(by_column)) == set(flatten(by_table))


async def test_the_shared_oid_table_stays_bounded_and_walks_stay_whole(snmpd, monkeypatch):
    """Sessions share decoded OIDs; past its limit the table starts over, results unchanged."""
    async with session(snmpd) as first, session(snmpd) as second:
        expected = await first.bulk_walk(IF_COLUMNS, max_repetitions=25)
        shared = await second.bulk_walk(IF_COLUMNS, max_repetitions=25)
        assert shared == expected
        assert shared[IF_COLUMNS[0]][0].oid is expected[IF_COLUMNS[0]][0].oid  # one tuple
        monkeypatch.setattr(walk, "_oid_table", {})
        monkeypatch.setattr(walk, "OID_TABLE_LIMIT", 10)
        # One row per reply, each more than the limit: every reply starts a new table.
        again = await first.bulk_walk(IF_COLUMNS, max_repetitions=1)
    assert again == expected
    first_oid = expected[IF_COLUMNS[0]][0].oid
    assert first_oid in {vb.oid for vb in again[IF_COLUMNS[0]]}
    assert ber.encode_oid(first_oid) not in walk._oid_table  # forgotten: the table started over


async def test_v1_walks_with_getnext_and_matches_snmpwalk(snmpd):
    """SNMPv1 cannot carry Counter64: the agent skips ifHC* columns, for both walkers."""
    async with session(snmpd, Credentials(1, community="public")) as client:
        ours = flatten(await client.bulk_walk([IF_X_TABLE, IF_TABLE], max_repetitions=25))
        requests = client.stats.pdus_sent
    theirs = snmpd.net_snmp_walk(IF_X_TABLE, version="1") | snmpd.net_snmp_walk(
        IF_TABLE, version="1"
    )
    assert set(ours) == set(theirs)
    assert all(vb.kind != ValueKind.COUNTER64 for vb in ours.values())
    # GetNext returns one row per request: one request per OID of the longer walk, and more.
    assert requests > len(snmpd.net_snmp_walk(IF_TABLE, version="1"))


async def test_walk_returns_only_oids_below_each_root(snmpd):
    async with session(snmpd) as client:
        walked = await client.bulk_walk(
            [SYS_NAME_OID, (1, 3, 6, 1, 2, 1, 1), (1, 3, 6, 1, 6, 3, 99, 99)], max_repetitions=10
        )
    assert walked[SYS_NAME_OID] == []  # a leaf has nothing below it
    assert walked[(1, 3, 6, 1, 6, 3, 99, 99)] == []
    system = [vb.oid for vb in walked[(1, 3, 6, 1, 2, 1, 1)]]
    assert SYS_NAME_OID in system
    assert all(oid[:7] == (1, 3, 6, 1, 2, 1, 1) for oid in system)


async def test_walk_ends_at_the_end_of_the_communitys_view(snmpd):
    """Community ``second`` sees only the system group: ifTable is empty, not an error."""
    async with session(snmpd, Credentials(2, community="second")) as client:
        walked = await client.bulk_walk([IF_TABLE, (1, 3, 6, 1, 2, 1, 1)], max_repetitions=10)
        [name] = await client.get([SYS_NAME_OID])
    assert walked[IF_TABLE] == []
    assert walked[(1, 3, 6, 1, 2, 1, 1)]
    assert name.value == SYS_NAME.encode()


async def test_multi_column_walk_costs_rows_over_repetitions_requests(snmpd):
    columns = [(*PR_TABLE, 1), (*PR_TABLE, 2), (*PR_TABLE, 3)]
    repetitions = 10
    async with session(snmpd) as client:
        together = await client.bulk_walk(columns, max_repetitions=repetitions)
        lock_step = client.stats.pdus_sent
        for column in columns:
            await client.bulk_walk([column], max_repetitions=repetitions)
        one_by_one = client.stats.pdus_sent - lock_step
    assert [len(together[c]) for c in columns] == [PR_ROWS] * 3
    # The last request only learns that every column has ended.
    assert lock_step <= math.ceil(PR_ROWS / repetitions) + 1
    assert one_by_one >= 3 * math.ceil(PR_ROWS / repetitions)


async def test_huge_max_repetitions_is_capped_and_still_walks(snmpd):
    columns = [(*PR_TABLE, c) for c in (1, 2, 3, 4, 5, 100, 101, 102, 103)]
    async with session(snmpd) as client:
        small = await client.bulk_walk(columns, max_repetitions=5)
        huge = await client.bulk_walk(columns, max_repetitions=100_000)
        assert client.max_repetitions_used == MAX_REPETITIONS
        with pytest.raises(ValueError, match="max_repetitions must be at least 1"):
            await client.bulk_walk(columns, max_repetitions=0)
    assert huge == small


async def test_get_returns_values_in_order_and_marks_missing_objects(snmpd):
    missing_instance = (1, 3, 6, 1, 2, 1, 1, 5, 1)
    missing_object = (1, 3, 6, 1, 2, 1, 1, 99, 0)
    async with session(snmpd) as client:
        got = await client.get([SYS_OBJECT_ID, missing_instance, SYS_NAME_OID, missing_object])
    assert [vb.oid for vb in got] == [SYS_OBJECT_ID, missing_instance, SYS_NAME_OID, missing_object]
    assert got[0].kind == ValueKind.OID
    assert got[0].value == (1, 3, 6, 1, 4, 1, 8072, 3, 2, 10)  # net-snmp on Linux
    assert got[1] == VarBind(missing_instance, ValueKind.NO_SUCH_INSTANCE, None)
    assert got[2] == VarBind(SYS_NAME_OID, ValueKind.OCTET_STRING, SYS_NAME.encode())
    assert got[3] == VarBind(missing_object, ValueKind.NO_SUCH_OBJECT, None)


async def test_v1_get_turns_no_such_name_into_missing_objects(snmpd):
    missing = (1, 3, 6, 1, 2, 1, 1, 99, 0)
    async with session(snmpd, Credentials(1, community="public")) as client:
        got = await client.get([missing, SYS_NAME_OID])
    assert got == [
        VarBind(missing, ValueKind.NO_SUCH_OBJECT, None),
        VarBind(SYS_NAME_OID, ValueKind.OCTET_STRING, SYS_NAME.encode()),
    ]


async def test_concurrent_requests_share_one_session(snmpd):
    async with session(snmpd) as client:
        alone = await client.bulk_walk(IF_COLUMNS, max_repetitions=10)
        results = await asyncio.gather(
            *(client.get([SYS_NAME_OID]) for _ in range(10)),
            *(client.bulk_walk(IF_COLUMNS, max_repetitions=10) for _ in range(3)),
        )
    assert all(
        r == [VarBind(SYS_NAME_OID, ValueKind.OCTET_STRING, SYS_NAME.encode())]
        for r in results[:10]
    )
    for walked in results[10:]:
        assert isinstance(walked, dict)
        assert set(flatten(walked)) == set(flatten(alone))


async def test_an_answer_read_as_the_try_times_out_is_taken_not_resent(snmpd):
    """A busy event loop reads the reply and fires the try's timer in the same turn.

    The agent answered in time; resending (and halving max-repetitions) would only
    load an overloaded exporter further: at 10,000 devices that spiral took one
    scrape from 18 requests to hundreds.
    """
    async with session(snmpd, timeout=0.3, retries=2) as client:
        await client.get([SYS_NAME_OID])  # the socket is open
        sent = client.stats.pdus_sent
        task = asyncio.ensure_future(client.get([SYS_NAME_OID]))
        await asyncio.sleep(0)  # the request is sent; the task waits for its answer
        # The loop is busy past the try's timeout (blocking it is the point), and until
        # the answer has arrived: a loaded machine's snmpd may take longer than 0.6 s.
        time.sleep(0.6)  # noqa: ASYNC251
        assert client._transport._transport is not None
        answer = client._transport._transport.get_extra_info("socket")
        assert select.select([answer], [], [], 10)[0], "snmpd never answered"
        got = await task
    assert got == [VarBind(SYS_NAME_OID, ValueKind.OCTET_STRING, SYS_NAME.encode())]
    assert (client.stats.pdus_sent - sent, client.stats.retries, client.stats.timeouts) == (
        1,
        0,
        0,
    )


# SNMPv3.


@pytest.mark.parametrize("level", list(V3_USERS))
async def test_v3_security_levels_read_what_v2c_reads(snmpd, level):
    async with session(snmpd) as v2c:
        expected = await v2c.bulk_walk([IF_TABLE], max_repetitions=25)
    async with session(snmpd, V3_USERS[level]) as client:
        [name] = await client.get([SYS_NAME_OID])
        walked = await client.bulk_walk([IF_TABLE], max_repetitions=25)
        assert client.stats.retries == 0
    assert name.value == SYS_NAME.encode()
    assert set(flatten(walked)) == set(flatten(expected))


def v3_user(level: str, **changes: str) -> Credentials:
    return dataclasses.replace(V3_USERS[level], **changes)  # type: ignore[arg-type]


async def test_v3_wrong_auth_password_is_a_wrong_digest(snmpd):
    async with session(
        snmpd, v3_user("authNoPriv SHA", auth_password="not-the-password")
    ) as client:
        with pytest.raises(
            SnmpAuthError, match=r"rejected SNMPv3 user 'sha' \(usmStatsWrongDigests\)"
        ):
            await client.get([SYS_NAME_OID])
        assert client.stats.retries == 0  # an answer, not a timeout


async def test_v3_wrong_auth_protocol_is_a_wrong_digest(snmpd):
    async with session(snmpd, v3_user("authNoPriv SHA", auth_protocol="SHA256")) as client:
        with pytest.raises(SnmpAuthError, match="usmStatsWrongDigests"):
            await client.get([SYS_NAME_OID])


async def test_v3_unknown_user(snmpd):
    async with session(snmpd, Credentials(3, username="nobody")) as client:
        with pytest.raises(
            SnmpAuthError, match=r"rejected SNMPv3 user 'nobody' \(usmStatsUnknownUserNames\)"
        ):
            await client.get([SYS_NAME_OID])


async def test_v3_security_level_the_user_does_not_have(snmpd):
    creds = v3_user(
        "authNoPriv SHA", security_level="authPriv", priv_protocol="AES", priv_password="whatever1"
    )
    async with session(snmpd, creds) as client:
        with pytest.raises(SnmpAuthError, match="usmStatsUnsupportedSecLevels"):
            await client.get([SYS_NAME_OID])


async def test_v3_level_below_what_the_agent_requires_is_refused(snmpd):
    """snmpd answers authorizationError when a priv user asks without privacy."""
    creds = v3_user(
        "authPriv SHA/AES", security_level="authNoPriv", priv_protocol="", priv_password=""
    )
    async with session(snmpd, creds) as client:
        with pytest.raises(SnmpAuthError, match="authorizationError"):
            await client.get([SYS_NAME_OID])


async def test_v3_wrong_priv_password_times_out_with_a_hint(snmpd):
    """snmpd cannot decrypt the request and drops it without a report."""
    creds = v3_user("authPriv SHA/AES", priv_password="not-the-priv-password")
    async with session(snmpd, creds, timeout=0.2, retries=1) as client:
        with pytest.raises(SnmpTimeout, match="wrong priv_password or priv_protocol"):
            await client.get([SYS_NAME_OID])
        assert client.stats.retries == 1
        assert client.stats.timeouts == 2


async def test_v3_resyncs_when_its_clock_is_off(snmpd):
    """notInTimeWindow is answered by adopting the agent's clock and sending again, once."""
    async with session(snmpd, V3_USERS["authPriv SHA/AES"]) as client:
        await client.get([SYS_NAME_OID])
        sent = client.stats.pdus_sent
        # What a manager sees after its idea of the agent's clock went stale (the
        # agent's boots moved on): there is no other way to get snmpd there quickly.
        assert client._usm is not None
        assert client._usm.engine is not None
        client._usm.engine.time += 10_000
        [name] = await client.get([SYS_NAME_OID])
    assert name.value == SYS_NAME.encode()
    assert client.stats.pdus_sent == sent + 2  # rejected with notInTimeWindow, then accepted


async def test_v3_rediscovers_an_agent_that_restarted(own_snmpd):
    """snmpd started with -C keeps no state, so a restart gives it a new engine id."""
    async with session(own_snmpd, V3_USERS["authPriv SHA256/AES"]) as client:
        before = await client.get([SYS_NAME_OID])
        own_snmpd.restart()
        after = await client.get([SYS_NAME_OID])
    assert before == after


async def test_key_cache_is_shared_between_sessions(snmpd):
    keys = KeyCache()
    for _ in range(2):
        async with SnmpSession(
            snmpd.host, snmpd.port, V3_USERS["authPriv SHA/AES"], key_cache=keys
        ) as client:
            await client.get([SYS_NAME_OID])
    assert repr(keys) == "KeyCache(2 localized keys)"  # auth and priv, localized once


async def test_secrets_never_appear_in_reprs_errors_or_logs(snmpd, caplog):
    caplog.set_level(logging.DEBUG)
    creds = v3_user(
        "authPriv SHA/AES", auth_password="SECRET-auth-1", priv_password="SECRET-priv-1"
    )
    community = Credentials(2, community="SECRET-community")
    texts = [repr(creds), repr(community)]
    async with session(snmpd, creds, timeout=0.2, retries=0) as client:
        texts.append(repr(client))
        with pytest.raises(SnmpAuthError) as exc_info:
            await client.get([SYS_NAME_OID])
        texts.append(str(exc_info.value))
    async with session(snmpd, community, timeout=0.2, retries=0) as client:
        with pytest.raises(SnmpTimeout) as timeout_info:
            await client.get([SYS_NAME_OID])
        texts.append(str(timeout_info.value))
    texts.append(caplog.text)
    assert "usmStatsWrongDigests" in texts[3]
    for text in texts:
        assert "SECRET" not in text


def test_credentials_from_config():
    auth = SnmpAuth(
        type="snmp",
        version=3,
        username="ops",
        security_level="authPriv",
        auth_protocol="SHA256",
        auth_password=SecretStr("auth-pass"),
        priv_protocol="AES256",
        priv_password=SecretStr("priv-pass"),
        context_name="vlan-10",
        allowed_targets=["192.0.2.0/24"],
    )
    assert Credentials.from_auth(auth) == Credentials(
        3,
        username="ops",
        security_level="authPriv",
        auth_protocol="SHA256",
        auth_password="auth-pass",
        priv_protocol="AES256",
        priv_password="priv-pass",
        context_name="vlan-10",
    )
    v2 = SnmpAuth(type="snmp", version=2, community=SecretStr("public"))
    assert Credentials.from_auth(v2) == Credentials(2, community="public")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"version": 3}, "SNMPv3 needs a username"),
        ({"version": 3, "username": "u", "security_level": "authNoPriv"}, "needs auth_protocol"),
        (
            {"version": 3, "username": "u", "security_level": "authNoPriv", "auth_protocol": "SHA"},
            "needs an auth_password",
        ),
        (
            {
                "version": 3,
                "username": "u",
                "security_level": "authPriv",
                "auth_protocol": "SHA",
                "auth_password": "12345678",
                "priv_protocol": "AES128",
            },
            "authPriv needs priv_protocol, one of DES, AES, AES192, AES256; got 'AES128'",
        ),
    ],
)
def test_invalid_credentials(fields, message):
    with pytest.raises(ValueError, match=message):
        Credentials(**fields)


# Timeouts and deadlines.


async def test_wrong_community_times_out_after_every_retry(snmpd):
    """snmpd drops requests with an unknown community without a word.

    The timeout is above the session's default (1 s), so a session that waited
    the default instead is caught by the lower bound, which a loaded machine
    cannot break; the upper one is twice the right time.
    """
    timeout, retries = 1.5, 1
    loop = asyncio.get_running_loop()
    async with session(
        snmpd, Credentials(2, community="wrong"), timeout=timeout, retries=retries
    ) as client:
        started = loop.time()
        with pytest.raises(
            SnmpTimeout, match=f"no response from {snmpd.address} after 2 tries of 1.5s"
        ):
            await client.get([SYS_NAME_OID])
        elapsed = loop.time() - started
    assert timeout * (retries + 1) <= elapsed < 2 * timeout * (retries + 1)
    assert (client.stats.pdus_sent, client.stats.retries, client.stats.timeouts) == (2, 1, 2)


@pytest.fixture
def silent_peer() -> Iterable[socket.socket]:
    """A UDP socket on 127.0.0.1 that receives and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        yield peer


def received(peer: socket.socket) -> list[tuple[int, int, int]]:
    """``(PDU tag, non-repeaters, max-repetitions)`` of each datagram the peer got."""
    out = []
    while True:
        try:
            data = peer.recv(65535)
        except BlockingIOError:
            return out
        _, _, pos = ber.decode_community_message(data)
        tag, _, field1, field2, _ = ber.decode_pdu(data, pos)
        out.append((tag, field1, field2))


async def test_silent_peer_times_out_and_halves_max_repetitions(silent_peer):
    port = silent_peer.getsockname()[1]
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=0.1, retries=2) as client:
        with pytest.raises(SnmpTimeout, match="after 3 tries"):
            await client.bulk_walk(IF_COLUMNS, max_repetitions=40)
        assert client.max_repetitions_used == 5  # the caller starts from here next time
    bulk = ber.GET_BULK_REQUEST
    assert received(silent_peer) == [(bulk, 0, 40), (bulk, 0, 20), (bulk, 0, 10)]


async def test_deadline_caps_a_walk_of_a_dead_device(silent_peer, snmpd):
    """The dead device costs its own deadline; a live one answers meanwhile."""
    loop = asyncio.get_running_loop()
    port = silent_peer.getsockname()[1]
    finished: list[str] = []

    async def dead() -> None:
        # Tries of 20 s: a walk that waited one out, not the deadline, would take 20 s.
        async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=20, retries=5) as client:
            try:
                await client.bulk_walk(IF_COLUMNS, max_repetitions=25, deadline=loop.time() + 1.5)
            finally:
                finished.append("dead")

    async def live() -> None:
        async with session(snmpd) as client:
            await client.bulk_walk(IF_COLUMNS, max_repetitions=25)
        finished.append("live")

    started = loop.time()
    results = await asyncio.gather(dead(), live(), return_exceptions=True)
    elapsed = loop.time() - started
    assert isinstance(results[0], SnmpTimeout)
    assert "deadline passed waiting for" in str(results[0])
    assert results[1] is None
    assert finished == ["live", "dead"]
    # The deadline, not a try of 20 s; long enough for the live walk to end first
    # on a loaded machine, and the ceiling halfway to the first try's end.
    assert 1.45 <= elapsed < 10.0
    assert len(received(silent_peer)) == 1  # no retry before the deadline


async def test_unresolvable_host(snmpd):
    async with SnmpSession("no-such-host.invalid", 161, PUBLIC) as client:
        with pytest.raises(
            SnmpError, match=r"cannot resolve SNMP host 'no-such-host\.invalid'"
        ) as exc_info:
            await client.get([SYS_NAME_OID])
    assert type(exc_info.value) is SnmpError


async def test_closed_session_refuses_requests(snmpd):
    client = session(snmpd)
    await client.get([SYS_NAME_OID])
    await client.close()
    with pytest.raises(SnmpError, match="is closed"):
        await client.get([SYS_NAME_OID])


# Fake agents for what snmpd will not do.


@dataclass
class Request:
    tag: int
    request_id: int
    field1: int  # error-status, or non-repeaters for GetBulk
    field2: int  # error-index, or max-repetitions for GetBulk
    oids: list[Oid]
    version: int = 1  # as on the wire: 0 is SNMPv1, 1 is SNMPv2c


Table = list[tuple[Oid, bytes]]  # sorted (OID, encoded value)


def table_of(columns: int, rows: int, base: Oid = PR_TABLE) -> Table:
    return [
        ((*base, c, r), ber.encode_integer(c * 1000 + r))
        for c in range(1, columns + 1)
        for r in range(1, rows + 1)
    ]


def successors(table: Table, request: Request) -> list[tuple[Oid, bytes]]:
    """A correct agent's answer to GetNext/GetBulk (non-repeaters 0) over ``table``."""
    repetitions = request.field2 if request.tag == ber.GET_BULK_REQUEST else 1
    current = list(request.oids)
    out: list[tuple[Oid, bytes]] = []
    for _ in range(repetitions):
        for j, oid in enumerate(current):
            after = [(o, v) for o, v in table if o > oid]
            if after:
                out.append(after[0])
                current[j] = after[0][0]
            else:
                out.append((oid, b"\x82\x00"))  # endOfMibView
    return out


def response_pdu(
    request: Request, varbinds: list[tuple[Oid, bytes]], status: int = 0, index: int = 0
) -> bytes:
    return ber.encode_pdu(
        ber.RESPONSE,
        request.request_id,
        status,
        index,
        [(ber.encode_oid(oid), value) for oid, value in varbinds],
    )


def response(
    request: Request, varbinds: list[tuple[Oid, bytes]], status: int = 0, index: int = 0
) -> bytes:
    """A Response to ``request`` with community ``public``, in the request's version."""
    return ber.encode_community_message(
        request.version, b"public", response_pdu(request, varbinds, status, index)
    )


Reply = Callable[[bytes, float], None]  # send(datagram, delay)


class FakeAgent(asyncio.DatagramProtocol):
    """An agent on 127.0.0.1 whose answers come from ``answer(request, reply)``."""

    def __init__(self, answer: Callable[[Request, Reply], None]) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport does not subclass DatagramTransport.
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        version, _, pos = ber.decode_community_message(data)
        tag, request_id, field1, field2, varbinds = ber.decode_pdu(data, pos)
        oids = [ber.decode_oid(o) for o, _, _ in varbinds]
        request = Request(tag, request_id, field1, field2, oids, version)
        self.requests.append(request)
        loop = asyncio.get_running_loop()

        def reply(datagram: bytes, delay: float = 0.0) -> None:
            assert self.transport is not None
            if delay:
                loop.call_later(delay, self.transport.sendto, datagram, addr)
            else:
                self.transport.sendto(datagram, addr)

        self.answer(request, reply)


StartAgent = Callable[[Callable[[Request, Reply], None]], Awaitable[tuple[FakeAgent, int]]]


@pytest.fixture
async def fake_agent() -> AsyncIterator[StartAgent]:
    transports: list[asyncio.DatagramTransport] = []

    async def start(answer: Callable[[Request, Reply], None]) -> tuple[FakeAgent, int]:
        loop = asyncio.get_running_loop()
        transport, agent = await loop.create_datagram_endpoint(
            lambda: FakeAgent(answer), local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        return agent, transport.get_extra_info("sockname")[1]

    yield start
    for transport in transports:
        transport.close()
    await asyncio.sleep(0)  # let the transports finish closing


async def test_too_big_halves_max_repetitions_until_it_fits(fake_agent):
    table = table_of(columns=3, rows=20)

    def answer(request: Request, reply: Reply) -> None:
        if request.tag == ber.GET_BULK_REQUEST and request.field2 > 5:
            reply(response(request, [(o, b"\x05\x00") for o in request.oids], status=1), 0)
        else:
            reply(response(request, successors(table, request)), 0)

    agent, port = await fake_agent(answer)
    columns = [(*PR_TABLE, c) for c in (1, 2, 3)]
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        walked = await client.bulk_walk(columns, max_repetitions=40)
        assert client.max_repetitions_used <= 5
    assert [vb.oid for vb in flatten(walked).values()] == [oid for oid, _ in table]
    assert [r.field2 for r in agent.requests[:4]] == [40, 20, 10, 5]
    assert all(r.field2 == 5 for r in agent.requests[4:])


async def test_too_big_at_one_repetition_is_an_error(fake_agent):
    def answer(request: Request, reply: Reply) -> None:
        reply(response(request, [(o, b"\x05\x00") for o in request.oids], status=1), 0)

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        with pytest.raises(SnmpError, match="answered tooBig"):
            await client.bulk_walk([PR_TABLE], max_repetitions=4)
        with pytest.raises(SnmpError, match="tooBig for a single OID"):
            await client.get([SYS_NAME_OID])


async def test_get_splits_a_request_the_agent_finds_too_big(fake_agent):
    table = table_of(columns=1, rows=8)

    def answer(request: Request, reply: Reply) -> None:
        if len(request.oids) > 2:
            reply(response(request, [(o, b"\x05\x00") for o in request.oids], status=1), 0)
        else:
            reply(response(request, [(o, dict(table)[o]) for o in request.oids]), 0)

    _, port = await fake_agent(answer)
    oids = [oid for oid, _ in table]
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        got = await client.get(oids)
    assert [(vb.oid, vb.value) for vb in got] == [(oid, 1000 + oid[-1]) for oid in oids]


async def test_agent_repeating_an_oid_is_stopped_quickly(fake_agent):
    stuck = (*PR_TABLE, 1, 1)

    def answer(request: Request, reply: Reply) -> None:
        reply(
            response(
                request, [(stuck, ber.encode_integer(1))] * len(request.oids) * request.field2
            ),
            0,
        )

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        with pytest.raises(
            SnmpProtocolError,
            match=r"agent returned non-increasing OID 1\.3\.6\.1\.4\.1\.2021\.2\.1\.1\.1 after",
        ):
            await client.bulk_walk([PR_TABLE], max_repetitions=10)
        # The walk sends its next request before decoding a reply, so the one
        # after the bad reply may already be out; no more than that.
        assert client.stats.pdus_sent <= 2


async def test_agent_going_backwards_between_requests_is_stopped(fake_agent):
    def answer(request: Request, reply: Reply) -> None:
        reply(response(request, [((*PR_TABLE, 1, 5), ber.encode_integer(1))]), 0)

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        with pytest.raises(SnmpProtocolError, match="non-increasing OID"):
            await client.bulk_walk([PR_TABLE], max_repetitions=10)
        assert client.stats.pdus_sent <= 3


async def test_walk_that_never_ends_stops_at_max_oids(fake_agent):
    def endless(request: Request, reply: Reply) -> None:
        # Always a next OID, always in the subtree: a broken agent's endless table.
        varbinds, current = [], request.oids[0]
        for _ in range(request.field2):
            current = (
                (*current[:-1], current[-1] + 1) if len(current) > len(PR_TABLE) else (*current, 1)
            )
            varbinds.append((current, ber.encode_integer(0)))
        reply(response(request, varbinds), 0)

    _, port = await fake_agent(endless)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        with pytest.raises(SnmpProtocolError, match="stopped after 100 OIDs"):
            await client.bulk_walk([PR_TABLE], max_repetitions=10, max_oids=100)
        assert client.stats.pdus_sent == 11


async def test_noise_strays_and_duplicates_are_ignored(fake_agent):
    table = table_of(columns=2, rows=12)

    def answer(request: Request, reply: Reply) -> None:
        pdu = response_pdu(request, successors(table, request))
        good = ber.encode_community_message(1, b"public", pdu)
        reply(b"\x00 not SNMP at all", 0)
        reply(response(Request(request.tag, request.request_id ^ 0x5A5A, 0, 0, []), []), 0)
        reply(ber.encode_community_message(1, b"other-community", pdu), 0)
        reply(ber.encode_community_message(0, b"public", pdu), 0)  # SNMPv1
        reply(good, 0)
        reply(good, 0.01)  # a duplicate, after the client moved on

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        walked = await client.bulk_walk([(*PR_TABLE, 1), (*PR_TABLE, 2)], max_repetitions=5)
    assert [vb.oid for vb in flatten(walked).values()] == [oid for oid, _ in table]


async def test_late_answer_to_an_earlier_try_is_accepted(fake_agent):
    table = table_of(columns=1, rows=3)

    def answer(request: Request, reply: Reply) -> None:
        # The first try's answer arrives after the client has sent its retry;
        # the retry is never answered.
        if len(fake.requests) == 1:
            reply(response(request, successors(table, request)), 0.3)

    fake, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=0.2, retries=3) as client:
        walked = await client.bulk_walk([(*PR_TABLE, 1)], max_repetitions=10)
        assert client.stats.retries == 1
    assert len(walked[(*PR_TABLE, 1)]) == 3


async def test_error_status_names_the_status_and_oid(fake_agent):
    def answer(request: Request, reply: Reply) -> None:
        reply(response(request, [(o, b"\x05\x00") for o in request.oids], status=5, index=2), 0)

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        with pytest.raises(
            SnmpProtocolError, match=r"answered error-status genErr at 1\.3\.6\.1\.2\.1\.1\.2\.0"
        ):
            await client.get([SYS_NAME_OID, SYS_OBJECT_ID])


async def test_malformed_answer_fails_the_request(fake_agent):
    def answer(request: Request, reply: Reply) -> None:
        # A varbind cut short inside lengths that are otherwise consistent.
        pdu = ber.tlv(
            ber.RESPONSE,
            ber.encode_integer(request.request_id)
            + ber.encode_integer(0)
            + ber.encode_integer(0)
            + ber.tlv(ber.SEQUENCE, b"\x30\x05\x06\x03\x2b"),
        )
        reply(ber.encode_community_message(1, b"public", pdu), 0)

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        with pytest.raises(SnmpProtocolError, match="sent a malformed response"):
            await client.get([SYS_NAME_OID])
        # Its community and request id are the request's: the agent answered, if badly.
        assert client.stats.replies == 1
        assert client.stats.undecodable == 0


# Not SNMP: a SEQUENCE that claims 65,535 octets and holds nine.
JUNK = b"\x30\x82\xff\xff" + b"\x02\x01\x01" * 3


async def test_junk_from_the_agents_address_ends_no_request(fake_agent):
    """A datagram that matches no request may be anyone's (the agent's address is
    easy to forge): the request keeps waiting, is resent as usual, and takes the
    real answer when it comes, here a late one to the first try's id."""
    first: list[Request] = []

    def answer(request: Request, reply: Reply) -> None:
        if not first:
            first.append(request)
            reply(JUNK, 0)
        else:
            reply(response(first[0], [(o, b"\x04\x03abc") for o in first[0].oids]), 0)

    agent, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=0.5, retries=2) as client:
        [got] = await client.get([SYS_NAME_OID])
        assert got.value == b"abc"
        assert len(agent.requests) == client.stats.pdus_sent == 2
        assert client.stats.retries == 1
        assert client.stats.undecodable == 1
        assert client.stats.replies == 1


async def test_only_junk_times_out_saying_what_came(fake_agent):
    """Junk is no answer: the request times out after every try, as from a silent
    agent, and its error says what came from the agent's address instead."""

    def answer(request: Request, reply: Reply) -> None:
        reply(JUNK, 0)

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=0.2, retries=1) as client:
        with pytest.raises(SnmpTimeout, match="after 2 tries") as raised:
            await client.get([SYS_NAME_OID])
        assert "datagrams from its address were no SNMP reply to this session" in str(raised.value)
        assert client.stats.pdus_sent == 2
        assert client.stats.undecodable == 2
        assert client.stats.replies == 0


async def test_v1_walk_splits_getnext_on_too_big_and_ends_on_no_such_name(fake_agent):
    """An old v1 agent: tooBig above two varbinds, noSuchName past its last OID."""
    table = table_of(columns=3, rows=4)

    def answer(request: Request, reply: Reply) -> None:
        nulls = [(o, b"\x05\x00") for o in request.oids]
        if len(request.oids) > 2:
            reply(response(request, nulls, status=1), 0)
            return
        found = successors(table, request)
        for index, (_, value) in enumerate(found, start=1):
            if value == b"\x82\x00":  # v1 has no endOfMibView
                reply(response(request, nulls, status=2, index=index), 0)
                return
        reply(response(request, found), 0)

    agent, port = await fake_agent(answer)
    columns = [(*PR_TABLE, c) for c in (1, 2, 3)]
    async with SnmpSession("127.0.0.1", port, Credentials(1, community="public")) as client:
        walked = await client.bulk_walk(columns, max_repetitions=25)
    assert [vb.oid for vb in flatten(walked).values()] == [oid for oid, _ in table]
    assert {(r.version, r.tag) for r in agent.requests} == {(0, ber.GET_NEXT_REQUEST)}
    assert max(len(r.oids) for r in agent.requests[1:]) == 1  # 3 -> tooBig -> 1


# An integer value past 64 bits: a Counter32 of 600 octets is a number of some 1,400
# digits, which rendered as a sample (past 4,300 digits, not even that) Prometheus reads
# as +Inf or a made-up float. gosnmp, and so snmp_exporter, refuses the same.
OVERSIZED_VALUES = [
    pytest.param(ber.tlv(ber.INTEGER, b"\x01" * 9), id="INTEGER of 9 octets"),
    pytest.param(ber.tlv(0x41, b"\x7f" * 600), id="Counter32 of 600 octets"),
    pytest.param(ber.tlv(0x46, b"\x01" + b"\x00" * 8), id="Counter64 of 2^64"),
    pytest.param(ber.tlv(0x43, b"\x7f" * 2500), id="TimeTicks of 2500 octets"),
]


@pytest.mark.parametrize("pure_python", [False, True], ids=["compiled", "pure Python"])
@pytest.mark.parametrize("value", OVERSIZED_VALUES)
async def test_an_integer_value_past_64_bits_is_a_malformed_answer(
    fake_agent, monkeypatch, value, pure_python
):
    if pure_python:
        monkeypatch.setattr(walk, "compiled", None)
    row = (*PR_TABLE, 1, 1)

    def answer(request: Request, reply: Reply) -> None:
        if request.tag == ber.GET_REQUEST or request.oids[0] < row:
            reply(response(request, [(row, value)]), 0)
        else:
            reply(response(request, [(row, b"\x82\x00")]), 0)

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        with pytest.raises(SnmpProtocolError, match=r"malformed value .* past 64 bits"):
            await client.bulk_walk([PR_TABLE], max_repetitions=1)
        with pytest.raises(SnmpProtocolError, match=r"malformed value .* past 64 bits"):
            await client.get([row])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ber.tlv(ber.INTEGER, b"\x80" + b"\x00" * 7), -(2**63)),
        (ber.tlv(ber.INTEGER, b"\x00" * 4 + b"\x05"), 5),  # needless leading octets
        (ber.tlv(0x46, b"\x00" + b"\xff" * 8), 2**64 - 1),
        (ber.tlv(0x41, b"\x00" * 12 + b"\x07"), 7),
    ],
)
async def test_integer_values_up_to_64_bits_are_read_however_long(fake_agent, value, expected):
    row = (*PR_TABLE, 1, 1)

    def answer(request: Request, reply: Reply) -> None:
        reply(response(request, [(row, value)]), 0)

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        assert [vb.value for vb in await client.get([row])] == [expected]


async def test_an_error_status_of_thousands_of_digits_is_a_malformed_answer(fake_agent):
    """Not an internal error: naming the status took str() of a number past 4,300 digits."""

    def answer(request: Request, reply: Reply) -> None:
        pdu = ber.tlv(
            ber.RESPONSE,
            ber.encode_integer(request.request_id)
            + ber.tlv(ber.INTEGER, b"\x7f" * 2000)
            + ber.encode_integer(1)
            + ber.tlv(ber.SEQUENCE, b""),
        )
        reply(ber.encode_community_message(1, b"public", pdu), 0)

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        with pytest.raises(SnmpProtocolError, match="malformed response: error-status of 2000"):
            await client.get([SYS_NAME_OID])
        with pytest.raises(SnmpProtocolError, match="malformed response: error-status of 2000"):
            await client.bulk_walk([PR_TABLE], max_repetitions=5)


class EngineReporter(asyncio.DatagramProtocol):
    """An SNMPv3 agent that answers every message with a report of its engine."""

    def __init__(
        self, boots: int, engine_time: int, engine_id: bytes = b"\x80\x00\x1f\x88\x04scout"
    ) -> None:
        self.boots, self.engine_time, self.engine_id = boots, engine_time, engine_id

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        msg_id = ber.V3Message(data).msg_id
        report = ber.encode_pdu(
            ber.REPORT,
            msg_id,
            0,
            0,
            [(ber.encode_oid((1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0)), ber.tlv(0x41, b"\x01"))],
        )
        scoped = ber.encode_scoped_pdu(self.engine_id, b"", report)
        params, offset = ber.encode_usm_parameters(
            self.engine_id, self.boots, self.engine_time, b"", b"", b""
        )
        message, _ = ber.encode_v3_message(msg_id, 65507, 0, params, offset, scoped)
        self.transport.sendto(message, addr)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("boots", "engine_time"), [(2**40, 5), (-1, 5), (5, -7)], ids=["boots", "negative", "time"]
)
async def test_engine_boots_or_time_out_of_range_is_a_protocol_error(boots, engine_time):
    """RFC 3414 has both in 0..2^31-1; others made every AES request fail to build
    (an internal error, OverflowError, on each scrape) rather than say what is wrong."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: EngineReporter(boots, engine_time), local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        credentials = V3_USERS["authPriv SHA/AES"]
        async with SnmpSession("127.0.0.1", port, credentials, timeout=1, retries=0) as client:
            with pytest.raises(SnmpProtocolError, match="engine boots or time out of range"):
                await client.get([SYS_NAME_OID])
    finally:
        transport.close()


@pytest.mark.parametrize("pure_python", [False, True], ids=["compiled", "pure Python"])
@pytest.mark.parametrize(
    ("suffix", "why"),
    [
        (b"\x81", "ends in the middle of a sub-identifier"),
        (b"\x90\x80\x80\x80\x00", "arc past 32 bits"),  # 2^32, one past the largest
        (b"\x81\x80\x80\x80\x80\x00", "arc past 32 bits"),  # 2^35, refused mid-arc
        # A number of some 10,500 digits: refused by its length, before any decoding
        # (decoding one arc that long costs its length squared).
        (b"\xff" * 5000 + b"\x01", "5001 octets, more than 128 arcs hold"),
        # RFC 2578's limit: an agent making its OIDs as long as a datagram holds, each
        # one a tuple of 30,000 arcs (240 kB), took a gigabyte in seconds.
        (b"\x01" * 129, "more than 128 arcs"),
        (b"\x81\x01" * 129, "more than 128 arcs"),
    ],
    ids=["cut short", "2^32", "2^35", "5000 octets", "129 arcs", "129 two-octet arcs"],
)
async def test_a_malformed_oid_in_a_walk_is_the_agent_s_protocol_error(
    fake_agent, monkeypatch, suffix, why, pure_python
):
    """Not an internal error: a ValueError from decoding, or from str() of the arc."""
    if pure_python:
        monkeypatch.setattr(walk, "compiled", None)

    def answer(request: Request, reply: Reply) -> None:
        pdu = ber.encode_pdu(
            ber.RESPONSE,
            request.request_id,
            0,
            0,
            [(ber.encode_oid(PR_TABLE) + suffix, b"\x02\x01\x05")],
        )
        reply(ber.encode_community_message(1, b"public", pdu), 0)

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        with pytest.raises(SnmpProtocolError, match=f"returned a malformed OID .*{why}"):
            await client.bulk_walk([PR_TABLE], max_repetitions=5)


async def test_an_oid_value_with_an_arc_past_32_bits_is_a_malformed_value(fake_agent):
    def answer(request: Request, reply: Reply) -> None:
        value = ber.tlv(ber.OBJECT_IDENTIFIER, b"\x2b" + b"\xff" * 5000 + b"\x01")
        reply(response(request, [(request.oids[0], value)]), 0)

    _, port = await fake_agent(answer)
    async with SnmpSession("127.0.0.1", port, PUBLIC, timeout=1, retries=0) as client:
        with pytest.raises(SnmpProtocolError, match=r"malformed value .* more than 128 arcs hold"):
            await client.get([SYS_OBJECT_ID])


def test_an_oid_value_holds_128_arcs_at_most_its_first_octet_packing_two():
    assert len(ber.decode_oid(bytes([43]) + b"\x01" * 126)) == 128
    with pytest.raises(ValueError, match="more than 128 arcs"):
        ber.decode_oid(bytes([43]) + b"\x01" * 127)


class Echo(asyncio.DatagramProtocol):
    """A UDP echo service (port 7, say): every datagram comes back as it was sent."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "credentials", [PUBLIC, V3_USERS["authPriv SHA/AES"]], ids=["v2c", "v3 authPriv"]
)
async def test_a_request_sent_back_is_no_answer(credentials):
    """Our own GET, echoed, read as a Response with every value NULL: a scrape of an
    echo service succeeded with no data. (Signed and encrypted with our own keys, a v3
    request echoed even passes the digest check, once the engine is known.)"""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        async with SnmpSession("127.0.0.1", port, credentials, timeout=1, retries=0) as client:
            with pytest.raises(SnmpProtocolError, match="GetRequest PDU, not a Response"):
                await client.get([SYS_NAME_OID])
    finally:
        transport.close()


async def test_an_engine_id_longer_than_32_octets_is_a_protocol_error():
    """RFC 3411 has it 5 to 32 octets; each new one an agent reported (up to a datagram
    long) became a localized key kept for the session's life."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: EngineReporter(1, 1, b"\x80" * 33), local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        credentials = V3_USERS["authPriv SHA/AES"]
        async with SnmpSession("127.0.0.1", port, credentials, timeout=1, retries=0) as client:
            with pytest.raises(SnmpProtocolError, match="engine id of 33 octets"):
                await client.get([SYS_NAME_OID])
    finally:
        transport.close()


def test_the_key_cache_is_bounded_the_oldest_going_first():
    """An agent reporting a new engine id on every request added a key each time."""
    keys = KeyCache()
    auth = AUTH_PROTOCOLS["SHA"]
    first = keys.localized(auth, b"auth-password", b"engine-0")
    for n in range(1, 2 * MAX_LOCALIZED_KEYS):
        keys.localized(auth, b"auth-password", f"engine-{n}".encode())
    assert repr(keys) == f"KeyCache({MAX_LOCALIZED_KEYS} localized keys)"
    assert keys.localized(auth, b"auth-password", b"engine-0") == first  # made again
