"""``/firewall`` when things go wrong: credentials, deadlines, bad answers, TLS, allow-lists.

Every case runs through the real app against a fake API on 127.0.0.1. A
scrape that cannot read the firewall answers 200 with ``scout_firewall_up 0``
(so Prometheus keeps ``up`` for the exporter); one that read part of it keeps
that part and names what failed in the log; no secret ever shows in an
answer, a log line or ``/config``.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import time

import pytest
from cryptography import x509

from exporter.clients import probe_net
from exporter.targets import allowlist
from tests.exporter.certs import CertificateAuthority, Pair
from tests.exporter.targets.firewall.exposition import families, scrape, value
from tests.peers.firewall_api import CANARIES, FORTIGATE_TOKEN, Misbehaviour

ONLY_UP = {"scout_firewall_up", "scout_firewall_scrape_duration_seconds"}
POLICY = "/api/v2/monitor/firewall/policy"
IPSEC = "/api/v2/monitor/vpn/ipsec"
STATUS = "/api/v2/monitor/system/status"


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for canary in CANARIES:
            assert canary not in text


@pytest.mark.parametrize(
    ("module", "vendor", "auth"),
    [
        ("fortigate_http", "fortigate", "wrong"),
        ("opnsense_http", "opnsense", "opn_wrong"),
        ("pfsense_http", "pfsense", "pf_wrong"),
    ],
)
async def test_refused_credentials_fail_the_scrape_cleanly(
    start_fake, scout, caplog, module, vendor, auth
):
    fake = await start_fake(vendor)
    client = await scout()
    status, text = await scrape(client, module, f"127.0.0.1:{fake.port}", auth)
    assert status == 200
    assert families(text) == ONLY_UP
    assert value(text, "scout_firewall_up") == 0
    assert "HTTP 401: the firewall refused the credentials" in logged(caplog)
    config = await (await client.get("/config")).text()
    assert_no_secret(text, logged(caplog), config)
    assert "<secret>" in config


async def test_a_403_on_every_endpoint_fails_the_scrape(start_fake, scout, caplog):
    fake = await start_fake("pfsense")
    for path in fake.table:
        fake.misbehaviours[path] = Misbehaviour(status=403)
    client = await scout()
    _, text = await scrape(client, "pfsense_http", f"127.0.0.1:{fake.port}", "pf")
    assert families(text) == ONLY_UP
    assert value(text, "scout_firewall_up") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no endpoint answered" in m and "HTTP 403" in m for m in warnings)
    assert_no_secret(logged(caplog))


async def test_one_failed_endpoint_keeps_the_rest_and_is_named(start_fake, scout, caplog):
    fake = await start_fake("fortigate")
    fake.misbehaviours["/api/v2/cmdb/system/ha"] = Misbehaviour(status=403)
    fake.misbehaviours[IPSEC] = Misbehaviour(status=404)
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert value(text, "scout_firewall_up") == 1
    assert value(text, "scout_firewall_sessions") == 51200
    assert "scout_firewall_vpn_tunnel_up" not in families(text)
    notes = [r for r in caplog.records if "partial" in r.getMessage()]
    assert len(notes) == 1
    assert notes[0].levelno == logging.INFO
    message = notes[0].getMessage()
    assert "2 of 12 endpoints failed" in message
    assert "/api/v2/cmdb/system/ha: HTTP 403" in message
    assert f"{IPSEC}: HTTP 404" in message
    # Without the HA mode there is no ha_info to give; the role the peers tell stays.
    assert "scout_firewall_ha_info" not in families(text)
    assert value(text, "scout_firewall_ha_primary") == 1
    assert value(text, "scout_firewall_ha_members") == 2


async def test_a_slow_endpoint_is_cut_at_the_deadline_and_the_rest_kept(start_fake, scout, caplog):
    fake = await start_fake("fortigate")
    fake.misbehaviours[IPSEC] = Misbehaviour(delay=30)
    # A large offset, so a scrape that ignored it (4.5 s) or the deadline (30 s)
    # is told from the right one by more than a loaded machine's stalls.
    client = await scout(offset=3.0)
    started = time.monotonic()
    # 4.5 s from Prometheus, minus the 3 s offset: a 1.5 s deadline.
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt", "4.5")
    elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 3.0
    assert value(text, "scout_firewall_up") == 1
    assert value(text, "scout_firewall_cpu_ratio") is not None
    assert "scout_firewall_vpn_tunnel_up" not in families(text)
    assert f"{IPSEC}: no answer before the scrape deadline" in logged(caplog)


async def test_a_firewall_that_answers_nothing_in_time_is_down(start_fake, scout):
    fake = await start_fake("opnsense")
    for path in fake.table:
        fake.misbehaviours[path] = Misbehaviour(delay=30)
    client = await scout(offset=3.0)
    started = time.monotonic()
    # 4 s minus the 3 s offset: a 1 s deadline; ignoring the offset would take 4 s.
    _, text = await scrape(client, "opnsense_http", f"127.0.0.1:{fake.port}", "opn", "4")
    assert time.monotonic() - started < 2.5
    assert families(text) == ONLY_UP
    assert value(text, "scout_firewall_up") == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"results": {"model": "FGT', "malformed JSON: Unterminated string"),
        (b"<html><body>Login</body></html>", "malformed JSON: Expecting value"),
        (b'{"status": "success"}', "not a FortiOS API answer (no 'results')"),
        (b'{"status": "error", "http_status": 424}', "FortiOS answered status error"),
        (b"\xff\xfe not text", "malformed JSON"),
    ],
)
async def test_a_malformed_answer_fails_that_endpoint_only(start_fake, scout, caplog, body, reason):
    fake = await start_fake("fortigate")
    fake.misbehaviours[STATUS] = Misbehaviour(body=body)
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert value(text, "scout_firewall_up") == 1
    # Without the status endpoint the firewall is still known by its vendor.
    assert value(text, "scout_firewall_info", vendor="fortinet", model="", firmware="") == 1
    assert value(text, "scout_firewall_sessions") == 51200
    assert f"{STATUS}: {reason}" in logged(caplog)


async def test_answers_of_the_wrong_shape_leave_their_families_out(start_fake, scout):
    fake = await start_fake("opnsense")
    fake.table["/api/interfaces/overview/interfaces_info"] = {"rows": "not a list"}
    fake.table["/api/diagnostics/firewall/pf_states"] = {"current": [1, 2], "limit": True}
    fake.table["/api/routes/gateway/status"] = {"items": [None, 7, {"name": ["x"]}]}
    fake.table["/api/diagnostics/activity/get_activity"] = {"headers": "CPU: 100% idle"}
    client = await scout()
    _, text = await scrape(client, "opnsense_http", f"127.0.0.1:{fake.port}", "opn")
    assert value(text, "scout_firewall_up") == 1
    assert not {
        "scout_firewall_interface_up",
        "scout_firewall_sessions",
        "scout_firewall_sessions_limit",
        "scout_firewall_gateway_up",
        "scout_firewall_cpu_ratio",
    } & families(text)
    assert value(text, "scout_firewall_memory_ratio") == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("odd", "reason"),
    [
        (Misbehaviour(stream_bytes=20 << 20), "answer is larger than max_response_bytes 65536"),
        (
            Misbehaviour(announced_bytes=1 << 30),
            "answer of 1073741824 bytes is larger than max_response_bytes 65536",
        ),
    ],
)
async def test_a_huge_answer_is_not_read_past_the_bound(start_fake, scout, caplog, odd, reason):
    fake = await start_fake("fortigate")
    fake.misbehaviours[POLICY] = odd
    client = await scout()
    _, text = await scrape(client, "fortigate_small", f"127.0.0.1:{fake.port}", "fgt")
    # Told by the peer, not the clock: a client that read on to the end let the
    # fake write its whole answer (far more than the sockets' buffers hold).
    assert fake.streamed_in_full == []
    assert value(text, "scout_firewall_up") == 1
    assert "scout_firewall_rule_packets" not in families(text)
    for version in ("ipv4", "ipv6"):
        assert f"{POLICY}?ip_version={version}: {reason}" in logged(caplog)


async def test_a_redirect_is_not_followed_with_the_credentials(start_fake, scout, caplog):
    fake = await start_fake("fortigate")
    elsewhere = await start_fake("fortigate")
    location = f"http://127.0.0.1:{elsewhere.port}/api/v2/monitor/system/status"
    fake.misbehaviours[STATUS] = Misbehaviour(status=302, headers={"Location": location})
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert value(text, "scout_firewall_up") == 1
    assert elsewhere.requests == []
    assert f"{STATUS}: HTTP 302: redirected, not followed" in logged(caplog)


async def test_an_auth_the_vendor_does_not_take_sends_nothing(start_fake, scout, caplog):
    fake = await start_fake("fortigate")
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "pf")
    assert families(text) == ONLY_UP
    assert fake.requests == []
    assert (
        "the fortigate API takes bearer (a REST API administrator's token); auth 'pf' is api_key"
        in logged(caplog)
    )


async def test_a_target_outside_the_auths_list_gets_nothing(start_fake, scout):
    fake = await start_fake("fortigate")
    client = await scout()
    status, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt_elsewhere")
    assert status == 403
    assert "is not allowed by auths.fgt_elsewhere.allowed_targets" in text
    assert fake.requests == []
    metrics = await (await client.get("/metrics")).text()
    assert (
        value(
            metrics,
            "scout_exporter_target_refused_total",
            endpoint="firewall",
            allow_list="auths.fgt_elsewhere",
        )
        == 1
    )
    assert_no_secret(text)


def fake_lookup(answers: dict[str, str]):
    async def lookup(host: str, deadline: float | None = None):
        if host not in answers:
            raise probe_net.ResolveError(f"cannot resolve {host!r}")
        return [ipaddress.ip_address(answers[host])]

    return lookup


async def test_a_name_is_pinned_to_the_address_the_allow_list_checked(
    start_fake, scout, monkeypatch
):
    # Only the allow-list's lookup knows the name: the scrape must not look it up again.
    monkeypatch.setattr(allowlist, "lookup", fake_lookup({"fw-hq.test": "127.0.0.1"}))
    fake = await start_fake("fortigate")
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"fw-hq.test:{fake.port}", "fgt_by_name")
    assert value(text, "scout_firewall_up") == 1
    assert {seen.headers["Host"] for seen in fake.requests} == {f"fw-hq.test:{fake.port}"}


async def test_a_name_that_does_not_resolve_is_a_failed_scrape(scout, monkeypatch):
    monkeypatch.setattr(allowlist, "lookup", fake_lookup({}))
    client = await scout()
    status, text = await scrape(client, "fortigate_http", "nowhere.test:8443", "fgt")
    assert status == 200
    assert families(text) == ONLY_UP
    assert value(text, "scout_firewall_up") == 0


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("https://127.0.0.1", "give host or host:port"),
        ("127.0.0.1/api", "give host or host:port"),
        ("admin@127.0.0.1", "give host or host:port"),
        ("127.0.0.1:99999", "port 99999 is out of range"),
        ("[127.0.0.1]:443", "is not an IPv6 address"),
    ],
)
async def test_a_target_that_is_no_host_is_a_400(scout, target, message):
    client = await scout()
    status, text = await scrape(client, "fortigate_http", target, "fgt")
    assert status == 400
    assert message in text


async def test_the_auth_parameter_is_required(scout):
    client = await scout()
    response = await client.get("/firewall", params={"module": "fortigate", "target": "192.0.2.1"})
    assert response.status == 400
    assert await response.text() == "'auth' parameter must be specified\n"


@pytest.fixture
def firewall_ca(tmp_path) -> tuple[CertificateAuthority, Pair]:
    ca = CertificateAuthority(tmp_path, "firewall-test-ca")
    leaf = ca.issue(
        "fortigate",
        server=True,
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("fw-hq.test")],
    )
    return ca, leaf


def server_context(leaf: Pair) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf.cert, leaf.key)
    return context


async def test_tls_is_verified_by_default_and_a_ca_file_makes_it_pass(
    start_fake, scout, caplog, firewall_ca
):
    ca, leaf = firewall_ca
    fake = await start_fake("fortigate", server_context(leaf))
    client = await scout(
        f"""
  fortigate_tls: {{prober: fortigate}}
  fortigate_ca: {{prober: fortigate, tls_ca_file: "{ca.pair.cert}"}}
  fortigate_ca_wrong_name: {{prober: fortigate, tls_ca_file: "{ca.pair.cert}",
                             tls_server_name: other.test}}
  fortigate_insecure: {{prober: fortigate, tls_insecure_skip_verify: true}}
"""
    )
    target = f"127.0.0.1:{fake.port}"
    _, untrusted = await scrape(client, "fortigate_tls", target, "fgt")
    assert value(untrusted, "scout_firewall_up") == 0
    assert "TLS certificate not trusted" in logged(caplog)
    # The handshake failed before a request was written: the token never left.
    assert fake.requests == []
    _, wrong_name = await scrape(client, "fortigate_ca_wrong_name", target, "fgt")
    assert value(wrong_name, "scout_firewall_up") == 0
    assert fake.requests == []
    _, trusted = await scrape(client, "fortigate_ca", target, "fgt")
    assert value(trusted, "scout_firewall_up") == 1
    assert value(trusted, "scout_firewall_sessions") == 51200
    assert {seen.headers["Authorization"] for seen in fake.requests} == {
        f"Bearer {FORTIGATE_TOKEN}"
    }
    _, insecure = await scrape(client, "fortigate_insecure", target, "fgt")
    assert value(insecure, "scout_firewall_up") == 1
