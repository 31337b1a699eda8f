"""Redaction: what is replaced, what survives, and that the answer reads in real names again."""

from __future__ import annotations

import pytest

from ai_sidecar.enrichment.llm.redact import (
    MAX_LEARNED_SECRETS,
    REDACTED,
    Redactor,
    host_of,
    is_host_label,
)

API_KEY = "AIzaSyD4x7Qk2mP9vL3nR8tW1yB6cF0hJ5sG2eK"


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("reached 10.20.30.40 twice", "ip", "10.20.30.40"),
        ("next hop fe80::1ff:fe23:4567:890a is gone", "ip", "fe80::1ff:fe23:4567:890a"),
        ("peer 2001:db8::8a2e:370:7334 flapped", "ip", "2001:db8::8a2e:370:7334"),
        ("resolve db-7.corp.example.com first", "host", "db-7.corp.example.com"),
        ("mail noc@corp.example.com now", "email", "noc@corp.example.com"),
        ("port learned aa:bb:cc:dd:ee:0f", "mac", "aa:bb:cc:dd:ee:0f"),
        ("port learned AA-BB-CC-DD-EE-0F", "mac", "AA-BB-CC-DD-EE-0F"),
        ("port learned 0011.22aa.bbcc", "mac", "0011.22aa.bbcc"),
        ("see https://admin:hunter2@grafana/d/1", "secret", "admin:hunter2"),
        ("dsn mysql://root:p@ss-w0rd@db/app", "secret", "root:p@ss-w0rd"),
        ("password=hunter2 was used", "secret", "hunter2"),
        ('{"api_key": "k-123-xyz"}', "secret", "k-123-xyz"),
        ("token: 9f8e7d6c", "secret", "9f8e7d6c"),
        ("Authorization: Bearer abc.def.123456", "secret", "abc.def.123456"),
        (f"key {API_KEY} leaked", "secret", API_KEY),
        ("key sk-proj-Ab3dEf6hIj9kLm2nOp5q leaked", "secret", "sk-proj-Ab3dEf6hIj9kLm2nOp5q"),
        (
            "blob aZ3xY7wV1uT5sR9qP2oN6mL4kJ8iH0gF in text",
            "secret",
            "aZ3xY7wV1uT5sR9qP2oN6mL4kJ8iH0gF",
        ),
    ],
)
def test_each_kind_is_replaced_and_restored(text: str, kind: str, value: str) -> None:
    redactor = Redactor()
    redacted = redactor.redact(text)
    assert value not in redacted
    assert f"{kind}-1" in redacted
    assert redactor.counts == {kind: 1}
    restored = redactor.restore(redacted)
    if kind == "secret":
        assert value not in restored
        assert restored == text.replace(value, REDACTED)
    else:
        assert restored == text


@pytest.mark.parametrize(
    "text",
    [
        "upgraded to 1.2.3 (was v1.2.3.4)",
        "availability 99.5% over 5m, 30s and 1h30m",
        "ifHCInOctets rate 1.5e+06 on Gi1/0/24",
        "rules in alerts.yml and scout.tmpl, e.g. rule 3",
        "started 09:00:00, ended 2026-11-02T09:15:00Z",
        "Basic authentication failed; tokens_per_minute=5",
        "node_network_receive_bytes_total{device=eth0} > 0.9",
        "fingerprint 3c359b5c154f7688",
    ],
)
def test_ordinary_monitoring_text_survives(text: str) -> None:
    redactor = Redactor()
    assert redactor.redact(text) == text
    assert redactor.counts == {}


def test_host_label_values_are_learned_and_redacted_wherever_they_appear() -> None:
    redactor = Redactor()
    redactor.learn({"instance": "core-1:9100", "exported_instance": "edge-2", "job": "node"})
    redactor.learn({"neighbor": "https://user@rr-3.lab.example.net:179/x", "ifName": "Gi0/1"})
    text = "core-1:9100 lost edge-2 and rr-3 (rr-3.lab.example.net); CORE-1 is up; job node"
    redacted = redactor.redact(text)
    assert redacted == "host-1:9100 lost host-2 and host-3 (host-4); host-1 is up; job node"
    assert redactor.restore(redacted) == text.replace("CORE-1", "core-1")


def test_the_exporter_a_scrape_went_through_is_a_host() -> None:
    redactor = Redactor()
    redactor.learn({"scout_exporter": "scout-a:8781", "exporter": "flow-b", "job": "snmp"})
    assert redactor.redact("via scout-a:8781 and flow-b") == "via host-1:8781 and host-2"


def test_what_names_a_host() -> None:
    assert is_host_label("instance")
    assert is_host_label("exported_instance")
    assert is_host_label("peer_host")
    assert is_host_label("neighbor")
    assert is_host_label("exporter")  # the flow series' label
    assert is_host_label("scout_exporter")  # the target label of every scrape
    assert not is_host_label("job")
    assert not is_host_label("ifName")
    assert host_of("http://core-1:9115/probe?x=1") == "core-1"
    assert host_of("10.0.0.1:9100") == ""  # the ip detector's
    assert host_of("[2001:db8::1]:9100") == ""
    assert host_of("a") == ""
    assert host_of("Gi0/1") == ""
    assert host_of("rack 3") == ""
    assert host_of("eth0") == "eth0"


def test_pseudonyms_follow_first_appearance_and_repeat_for_the_same_value() -> None:
    texts = ["10.0.0.9 then 10.0.0.1", "10.0.0.1 and 10.0.0.9 and db.example.com"]
    first, second = Redactor(), Redactor()
    shown = [first.redact(t) for t in texts]
    assert shown == ["ip-1 then ip-2", "ip-2 and ip-1 and host-1"]
    assert [second.redact(t) for t in texts] == shown
    assert first.counts == {"ip": 2, "host": 1}


def test_text_that_looks_like_a_pseudonym_is_kept_apart_from_real_ones() -> None:
    redactor = Redactor()
    redactor.learn({"instance": "core-1"})
    redacted = redactor.redact("core-1 and the box called host-1")
    assert redacted == "host-1 and the box called host-2"
    assert redactor.restore("host-2 then host-1") == "host-1 then core-1"


def test_credentials_never_come_back_and_unknown_pseudonyms_stay() -> None:
    redactor = Redactor()
    redactor.redact("https://ops:Secr3t@10.1.1.1/")
    assert (
        redactor.restore("secret-1 at ip-1, also host-7") == f"{REDACTED} at 10.1.1.1, also host-7"
    )
    assert redactor.restore("Secret-1 at IP-1.") == f"{REDACTED} at 10.1.1.1."


def test_a_label_named_like_a_credential_is_a_secret_whole() -> None:
    redactor = Redactor()
    assert redactor.redact_value("db_password", "correct horse battery") == "secret-1"
    assert redactor.redact_value("summary", "correct horse battery") == "correct horse battery"


def test_configured_patterns_are_replaced() -> None:
    redactor = Redactor([r"CUST-\d{4}"])
    assert (
        redactor.redact("ticket for CUST-0042 and CUST-0042")
        == "ticket for pattern-1 and pattern-1"
    )
    assert redactor.restore("pattern-1") == "CUST-0042"


def test_a_value_across_the_cut_is_redacted_whole() -> None:
    # The key starts just before the cut: scanning only the kept part would
    # miss its format and leak its first characters.
    text = "x " * 245 + API_KEY
    redacted = Redactor().redact(text, 500)
    assert len(redacted) <= 500
    assert "AIza" not in redacted
    assert "secret-1" in redacted


@pytest.mark.parametrize(
    ("tail", "part"), [(" 10.20.30.40 down", "10.20.3"), (" canary-core-router down", "canary-co")]
)
def test_a_value_cut_by_the_scan_window_is_not_sent_in_part(tail: str, part: str) -> None:
    # Three keys shrink to pseudonyms, so the kept text reaches the window's
    # end (160 characters for a limit of 80), where the tail is cut mid-value.
    key = "sk-" + "Ab1" * 13
    text = (key + " ") * 3
    text += "x" * (160 - len(text) - len(part) - 1) + tail
    redacted = Redactor(hosts=["canary-core-router"]).redact(text, 80)
    assert part not in redacted
    assert part[:5] not in redacted


def test_only_values_in_the_kept_part_take_a_number() -> None:
    redactor = Redactor()
    redactor.redact("10.0.0.1 " + "y" * 200 + " 10.0.0.2", 50)
    assert redactor.counts == {"ip": 1}
    assert redactor.redact("10.0.0.3") == "ip-2"


def test_disabled_redaction_passes_text_unchanged_but_still_caps() -> None:
    redactor = Redactor(enabled=False)
    redactor.learn({"instance": "core-1"})
    assert redactor.redact("core-1 at 10.0.0.1 password=x") == "core-1 at 10.0.0.1 password=x"
    assert redactor.redact_value("password", "x") == "x"
    assert len(redactor.redact("z" * 1000, 100)) == 100
    assert redactor.restore("host-1") == "host-1"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # Full-width and ideographic full stops read as dots to a model and a resolver.
        ("resolve db1\uff0ecorp\uff0eexample\uff0ecom first", "corp"),
        ("peer 10\uff0e66\uff0e77\uff0e88 is gone", "77"),
        ("peer 10\u300266\u300277\u300288 is gone", "77"),
        # Zero-width characters inside a name, an address or a keyword.
        ("ssh canary\u200b-core-1 now", "canary"),
        ("peer 10.66.\u200b77.88 is gone", "77"),
        ("pass\u200bword=hunter2", "hunter2"),
        ("full-width digits \uff11\uff10.66.77.88", "77"),
    ],
)
def test_unicode_disguises_do_not_carry_a_value_past_the_detectors(text: str, value: str) -> None:
    redactor = Redactor(hosts=["canary-core-1"])
    redacted = redactor.redact(text)
    assert value not in redacted
    assert "\u200b" not in redacted


def test_a_learned_host_name_with_a_zero_width_character_is_learned_whole() -> None:
    redactor = Redactor()
    redactor.learn({"instance": "canary\u200b-core-1:9100"})
    assert "canary" not in redactor.redact("canary-core-1 lost its uplink")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("auth with ya29.a0AfH6SMBx3kQ9zL2pW7vN5tR1", "a0AfH6SMBx3kQ9zL2pW7vN5tR1"),
        ("snmp community: s3cr3tcomm", "s3cr3tcomm"),
        ("login user=admin&pass=hunter2", "hunter2"),
        ("login pw=hunter2", "hunter2"),
        ("fetch https://b.example/k?sig=Zm9vYmFyYmF6", "Zm9vYmFyYmF6"),
        ("secret: 'correct horse battery'", "horse"),
        ('{"password": "correct horse battery", "user": "bob"}', "horse"),
    ],
)
def test_more_credential_and_address_forms_are_redacted(text: str, value: str) -> None:
    redactor = Redactor()
    redacted = redactor.redact(text)
    assert value not in redacted
    # A secret must never come back, even as a host or an address would.
    assert value not in redactor.restore(redacted)


def test_a_zero_padded_address_is_an_address() -> None:
    redactor = Redactor()
    assert redactor.redact("peer 010.066.077.088 is gone") == "peer ip-1 is gone"


def test_a_secret_learned_from_its_label_is_redacted_in_free_text_too() -> None:
    redactor = Redactor()
    redactor.learn({"snmp_community": "s3cr3tcomm", "db_password": "Tr0ub4dor"})
    # Seen under its own name first or last, in no recognisable form elsewhere.
    assert "s3cr3tcomm" not in redactor.redact("polling failed with community s3cr3tcomm")
    assert redactor.redact_value("snmp_community", "s3cr3tcomm") == "secret-1"
    assert redactor.redact("login as admin with Tr0ub4dor failed") == (
        "login as admin with secret-2 failed"
    )
    assert REDACTED in redactor.restore("try secret-2")
    assert "Tr0ub4dor" in redactor.secrets


def test_a_short_learned_secret_is_not_hunted_in_text() -> None:
    redactor = Redactor()
    redactor.learn({"token": "true"})
    assert redactor.redact("the check is true") == "the check is true"


def test_learned_secrets_are_capped_so_a_storm_of_tokens_stays_fast() -> None:
    redactor = Redactor()
    for n in range(MAX_LEARNED_SECRETS + 500):
        redactor.learn({"auth_token": f"tok{n:08d}"})
    assert len(redactor.secrets) == MAX_LEARNED_SECRETS
    # The first learned (the root cause's, in the prompt's order) are kept.
    assert redactor.redact("sent tok00000000") == "sent secret-1"
