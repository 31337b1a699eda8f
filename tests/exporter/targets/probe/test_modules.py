"""Probe modules as the config file gives them: defaults, limits, and clear refusals."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from exporter.targets.probe.http import HttpModule
from exporter.targets.probe.icmp import IcmpModule
from exporter.targets.probe.registry import DEFAULT_MODULES, PROBERS, ProbeModule
from exporter.targets.probe.tcp import TcpModule

MODULE = TypeAdapter(ProbeModule)


def errors(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str, str]]:
    with pytest.raises(ValidationError) as caught:
        MODULE.validate_python(data)
    return [(e["loc"], e["type"], e["msg"]) for e in caught.value.errors()]


def test_prober_field_picks_the_module_kind():
    assert isinstance(MODULE.validate_python({"prober": "icmp"}), IcmpModule)
    assert isinstance(MODULE.validate_python({"prober": "tcp", "tls": True}), TcpModule)
    assert isinstance(MODULE.validate_python({"prober": "http"}), HttpModule)


def test_defaults_match_the_documented_ones():
    icmp, tcp, http = IcmpModule(), TcpModule(), HttpModule()
    assert (icmp.count, icmp.interval_seconds, icmp.timeout_seconds) == (5, 0.2, 1.0)
    assert (icmp.payload_size, icmp.dont_fragment, icmp.preferred_ip_protocol) == (56, False, "ip4")
    assert icmp.ip_protocol_fallback is True
    assert (tcp.count, tcp.tls, tcp.tls_insecure_skip_verify, tcp.tls_server_name) == (
        3,
        False,
        False,
        None,
    )
    assert (http.count, http.timeout_seconds, http.method, http.follow_redirects) == (
        1,
        5.0,
        "GET",
        True,
    )
    assert http.valid_status_codes == []
    assert http.headers == {}
    assert http.fail_if_body_not_matches_regexp == []


def test_every_built_in_module_has_its_prober():
    assert set(DEFAULT_MODULES) == {"icmp", "tcp", "http"}
    for name, module in DEFAULT_MODULES.items():
        assert module.prober == name
        assert module.prober in PROBERS


def test_huge_count_is_refused_with_the_limit():
    assert errors({"prober": "icmp", "count": 1000}) == [
        (("icmp", "count"), "less_than_equal", "Input should be less than or equal to 100")
    ]
    assert errors({"prober": "tcp", "count": 0}) == [
        (("tcp", "count"), "greater_than_equal", "Input should be greater than or equal to 1")
    ]


def test_unknown_key_is_an_error_not_ignored():
    assert errors({"prober": "icmp", "cuont": 3}) == [
        (("icmp", "cuont"), "extra_forbidden", "Extra inputs are not permitted")
    ]


def test_a_key_of_another_prober_is_an_error():
    # payload_size belongs to icmp: on an http module it is a typo or a mix-up.
    assert errors({"prober": "http", "payload_size": 100})[0][1] == "extra_forbidden"


def test_unknown_prober_lists_the_known_ones():
    ((_loc, kind, message),) = errors({"prober": "dns"})
    assert kind == "union_tag_invalid"
    assert "'icmp', 'tcp', 'http'" in message


def test_bad_values_are_refused():
    assert errors({"prober": "http", "method": "POST"})[0][1] == "literal_error"
    assert errors({"prober": "icmp", "preferred_ip_protocol": "ip5"})[0][1] == "literal_error"
    assert errors({"prober": "http", "valid_status_codes": [200, 999]})[0][1] == ("less_than_equal")
    assert errors({"prober": "icmp", "timeout_seconds": 0})[0][1] == "greater_than"
    assert errors({"prober": "icmp", "fail_if_loss_ratio_above": 1.5})[0][1] == ("less_than_equal")
    assert errors({"prober": "http", "fail_if_body_not_matches_regexp": ["("]})[0][1] == (
        "pattern_regex"
    )


def test_missing_ca_file_is_refused_at_load(tmp_path):
    ((_loc, kind, message),) = errors({"prober": "tcp", "tls_ca_file": str(tmp_path / "no.pem")})
    assert kind == "value_error"
    assert message == f"Value error, tls_ca_file '{tmp_path / 'no.pem'}' is not a file"


def test_credential_headers_are_masked_when_shown():
    module = MODULE.validate_python(
        {
            "prober": "http",
            "headers": {"Authorization": "Bearer s3cret", "X-Api-Key": "k3y", "Accept": "*/*"},
            "allowed_targets": ["192.0.2.0/24"],
        }
    )
    shown = module.model_dump(mode="json")
    assert shown["headers"] == {
        "Authorization": "<secret>",
        "X-Api-Key": "<secret>",
        "Accept": "*/*",
    }
    # The probe itself still sends the real value.
    assert module.headers["Authorization"] == "Bearer s3cret"


def test_regexps_show_as_their_text():
    module = MODULE.validate_python(
        {"prober": "http", "fail_if_body_not_matches_regexp": ["ok|healthy"]}
    )
    assert module.model_dump(mode="json")["fail_if_body_not_matches_regexp"] == ["ok|healthy"]
