"""Config validation: every error has an invalid-*.yml case checked against its exact message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, parse_config

CONFIGS = Path(__file__).parent / "configs"
SECRETS = (
    "public-community-secret",
    "auth-pass-secret",
    "priv-pass-secret",
    "fortigate-token-secret",
    "opnsense-password-secret",
    "pfsense-api-key-secret",
    "winrm-password-secret",
)

NEEDS_ALLOW_LIST = (
    "to whatever target a caller names: add allowed_targets, the networks and host names it "
    'may be used with (as in [10.0.0.0/8, "*.example.net"]), or allowed_targets: [any] to '
    "allow every target (dangerous: see docs/security.md)"
)

EXPECTED_ERRORS = {
    "invalid-unknown-key.yml": '4: auths.public_v2: unknown key "comunity"',
    "invalid-unknown-top-level-key.yml": '1: top level: unknown key "colectors"',
    "invalid-unknown-collector.yml": '3: collectors: unknown key "snmp"',
    "invalid-duplicate-key.yml": '5: duplicate key "public_v2"',
    "invalid-yaml-syntax.yml": (
        "4: invalid YAML: expected <block end>, but found '<block mapping start>'"
    ),
    "invalid-top-level-list.yml": "1: the top level must be a mapping",
    "invalid-regex.yml": (
        "4: collectors.host.mountpoints.exclude: invalid regular expression '/(dev|proc': "
        "missing ), unterminated subpattern at position 1"
    ),
    "invalid-filter-not-mapping.yml": "3: collectors.host.disks: should be a mapping, got 'sd.*'",
    "invalid-auth-type.yml": (
        "2: auths.ssh_box: unknown type (expected one of: 'snmp', 'http', 'winrm')"
    ),
    "invalid-auth-missing-type.yml": '2: auths.public_v2: missing required key "type"',
    "invalid-snmp-v2-no-community.yml": "2: auths.public_v2: SNMP v2 needs a community",
    "invalid-snmp-v1-with-v3-fields.yml": (
        "2: auths.old_switch: SNMP v1 takes only a community, not username"
    ),
    "invalid-snmp-v3-with-community.yml": (
        "2: auths.core_v3: SNMP v3 takes a username, not a community"
    ),
    "invalid-snmp-v3-no-username.yml": (
        "2: auths.core_v3: SNMP v3 needs username and security_level"
    ),
    "invalid-snmp-v3-auth-missing-password.yml": (
        "2: auths.core_v3: authNoPriv needs auth_protocol and auth_password"
    ),
    "invalid-snmp-v3-priv-missing.yml": (
        "2: auths.core_v3: authPriv needs priv_protocol and priv_password"
    ),
    "invalid-snmp-version.yml": "4: auths.public_v2.version: input should be 1, 2 or 3",
    "invalid-snmp-auth-protocol.yml": (
        "7: auths.core_v3.auth_protocol: input should be 'MD5', 'SHA', 'SHA224', 'SHA256', "
        "'SHA384' or 'SHA512'"
    ),
    "invalid-secret-not-a-string.yml": (
        "4: auths.public_v2.community: input should be a valid string"
    ),
    "invalid-http-both-schemes.yml": (
        "2: auths.fortigate: use either username/password or bearer_token, not both"
    ),
    "invalid-http-password-without-username.yml": "2: auths.opnsense: password needs a username",
    "invalid-http-no-credentials.yml": (
        "2: auths.opnsense: needs username/password, bearer_token or api_key"
    ),
    "invalid-winrm-missing-password.yml": '2: auths.windows: missing required key "password"',
    "invalid-winrm-transport.yml": (
        "6: auths.windows.transport: input should be 'ntlm', 'kerberos', 'credssp' or 'basic'"
    ),
    "invalid-winrm-basic-over-http.yml": (
        "2: auths.windows: transport basic sends the password in clear: it needs https: true"
    ),
    "invalid-winrm-ca-without-https.yml": (
        "2: auths.windows: ca_file and insecure_skip_verify need https: true"
    ),
    "invalid-winrm-no-allow-list.yml": (
        f"2: auths.windows: sends WinRM credentials {NEEDS_ALLOW_LIST}"
    ),
    "invalid-winrm-module-collector.yml": (
        "4: modules.windows_small.collectors.1: input should be 'cpu', 'memory', 'pagefile', "
        "'logical_disk', 'net', 'os', 'system', 'service', 'update', 'event_log' or 'process', "
        "got 'wmi_everything'"
    ),
    # Twice in the script, each family twice in one exposition: Prometheus
    # refuses the whole scrape.
    "invalid-winrm-module-collector-twice.yml": (
        "2: modules.windows_small: collectors lists cpu twice"
    ),
    "invalid-winrm-module-top-processes.yml": (
        "4: modules.windows_small.top_processes: input should be less than or equal to 50, got 500"
    ),
    "invalid-env-unset.yml": '4: environment variable "SCOUT_TEST_UNSET_VARIABLE" is not set',
    "invalid-auth-is-a-string.yml": "2: auths.public_v2: should be a mapping",
    "invalid-snmp-v2-with-auth-protocol.yml": (
        "2: auths.public_v2: SNMP v2 takes only a community, not auth_protocol"
    ),
    "invalid-snmp-empty-community.yml": "2: auths.public_v2: SNMP v2 needs a community",
    "invalid-snmp-noauth-with-priv.yml": (
        "2: auths.core_v3: noAuthNoPriv takes no priv_protocol, priv_password"
    ),
    "invalid-snmp-authnopriv-with-priv.yml": "2: auths.core_v3: authNoPriv takes no priv_protocol",
    "invalid-snmp-version-bool.yml": "4: auths.public_v2.version: input should be 1, 2 or 3",
    "invalid-http-empty-username.yml": (
        "2: auths.opnsense: needs username/password, bearer_token or api_key"
    ),
    "invalid-list-key.yml": "2: keys must be plain names, not lists or mappings",
    "invalid-recursive-alias.yml": "2: auths.loop: should be a mapping",
    "invalid-control-character.yml": (
        " invalid YAML: unacceptable character #x0007: special characters are not allowed\n"
        '  in "<unicode string>", position 16'
    ),
    "invalid-not-utf8.yml": " not a text file (invalid UTF-8 at byte 10)",
    "invalid-filter-regex-number.yml": (
        "4: collectors.host.disks.exclude: input should be a valid pattern, got 12"
    ),
    "invalid-snmp-short-password.yml": (
        "2: auths.core_v3: auth_password must be at least 8 characters (RFC 3414)"
    ),
    "invalid-module-oid.yml": (
        "6: modules.big_arc.metrics.0.oid: not a valid OID: "
        "'1.3.6.1.2.1.99999999999' (sub-identifiers stop at 4294967295)"
    ),
    "invalid-module-aggregate-without-indexes.yml": (
        "5: modules.fw_cpu.metrics.0: 'scout_firewall_cpu_ratio': "
        "aggregate needs a gauge or counter with indexes"
    ),
    "invalid-module-value-map-with-scale.yml": (
        "5: modules.fw_tunnels.metrics.0: 'scout_firewall_vpn_tunnel_up': "
        "value_map replaces the value; scale it in the map"
    ),
    "invalid-null-key.yml": (
        "3: auths.None: input should be a valid string\n"
        "{path}:3: auths.None: unknown type (expected one of: 'snmp', 'http', 'winrm')"
    ),
    # Canary secrets: an auth's type, an HTTP module's headers, a module given as a string.
    "invalid-auth-type-is-a-secret.yml": (
        "2: auths.fortigate: unknown type (expected one of: 'snmp', 'http', 'winrm')"
    ),
    "invalid-http-headers-not-mapping.yml": "4: modules.api_health.headers: should be a mapping",
    "invalid-http-header-value-not-string.yml": (
        "5: modules.api_health.headers.Authorization: input should be a valid string"
    ),
    "invalid-module-is-a-string.yml": "2: modules.api_health: should be a mapping",
    "invalid-module-prober-is-a-secret.yml": (
        "2: modules.api_health: unknown prober (expected one of: 'snmp', 'icmp', 'tcp', 'http', "
        "'fortigate', 'opnsense', 'pfsense', 'winrm')"
    ),
    # A secret a caller could send anywhere needs an allow-list.
    "invalid-http-token-without-allowed-targets.yml": (
        f"2: auths.fortigate: sends a bearer token {NEEDS_ALLOW_LIST}"
    ),
    "invalid-http-api-key-without-allowed-targets.yml": (
        f"2: auths.pfsense: sends an API key {NEEDS_ALLOW_LIST}"
    ),
    "invalid-http-password-without-allowed-targets.yml": (
        f"2: auths.opnsense: sends a password {NEEDS_ALLOW_LIST}"
    ),
    "invalid-http-three-schemes.yml": (
        "2: auths.mixed: use one of username/password, bearer_token or api_key, not several"
    ),
    "invalid-http-key-and-token.yml": (
        "2: auths.pfsense: use either bearer_token or api_key, not both"
    ),
    "invalid-firewall-module-vdom.yml": (
        "4: modules.fortigate_hq.vdom: string should match pattern '^[A-Za-z0-9_.-]+$', "
        "got 'root; rm'"
    ),
    "invalid-firewall-module-scheme.yml": (
        "4: modules.opnsense_lab.scheme: input should be 'https' or 'http', got 'ftp'"
    ),
    "invalid-firewall-module-vdom-on-opnsense.yml": ('4: modules.opnsense_lab: unknown key "vdom"'),
    "invalid-snmp-community-without-allowed-targets.yml": (
        f"2: auths.private_v2: sends an SNMP community {NEEDS_ALLOW_LIST}"
    ),
    "invalid-snmp-v3-without-allowed-targets.yml": (
        f"2: auths.core_v3: sends SNMPv3 authNoPriv credentials {NEEDS_ALLOW_LIST}"
    ),
    "invalid-http-headers-without-allowed-targets.yml": (
        f"3: modules.api_health: sends the header Authorization {NEEDS_ALLOW_LIST}"
    ),
    "invalid-allowed-targets-host-bits.yml": (
        "4: modules.api_health.allowed_targets: '10.0.0.1/8' has host bits set "
        "(did you mean 10.0.0.0/8?)"
    ),
    "invalid-allowed-targets-any-not-alone.yml": (
        "5: auths.core.allowed_targets: 'any' admits every target, so it must stand alone"
    ),
    "invalid-allowed-targets-empty.yml": (
        "4: modules.ping.allowed_targets: an empty list admits no target: "
        "list networks and host names, or leave allowed_targets out"
    ),
    "invalid-allowed-targets-not-a-list.yml": (
        "4: modules.ping.allowed_targets: should be a list of networks and host names, "
        'as in [10.0.0.0/8, "*.example.net"]'
    ),
    "invalid-allowed-targets-numeric-pattern.yml": (
        "5: modules.if_mib_core.allowed_targets: '*.0x7f' ends in a number: "
        "write an address or a network instead"
    ),
    # Sent as a header as they are: a line break would end the header (or add one).
    "invalid-http-token-with-newline.yml": (
        "2: auths.fortigate: bearer_token holds a control character (a line break from a "
        "file or a variable?), which cannot travel in an HTTP header"
    ),
    "invalid-http-api-key-with-control-character.yml": (
        "2: auths.pfsense: api_key holds a control character (a line break from a "
        "file or a variable?), which cannot travel in an HTTP header"
    ),
    "invalid-allowed-targets-wildcard-inside.yml": (
        "4: modules.api_health.allowed_targets: 'api.*.example.net': "
        "'*' may only be the whole first label, as in *.example.net"
    ),
}
# Every invalid-*.yml holding a canary: none may appear in the message or the dry run.
CANARIES = {
    "invalid-auth-type-is-a-secret.yml": ("canary-auth-type-secret", "fortigate-token-secret"),
    "invalid-http-headers-not-mapping.yml": ("canary-header-secret",),
    "invalid-http-header-value-not-string.yml": ("canary-header-list-secret",),
    "invalid-module-is-a-string.yml": ("canary-module-secret",),
    "invalid-module-prober-is-a-secret.yml": ("canary-prober-secret",),
    "invalid-snmp-community-without-allowed-targets.yml": ("canary-community-secret",),
    "invalid-snmp-v3-without-allowed-targets.yml": ("canary-v3-auth-secret",),
    "invalid-http-headers-without-allowed-targets.yml": ("canary-bearer-secret",),
    "invalid-allowed-targets-any-not-alone.yml": ("canary-any-secret",),
    "invalid-http-token-without-allowed-targets.yml": ("canary-fortigate-token-secret",),
    "invalid-http-api-key-without-allowed-targets.yml": ("canary-pfsense-key-secret",),
    "invalid-http-password-without-allowed-targets.yml": ("canary-opnsense-secret",),
    "invalid-http-token-with-newline.yml": ("canary-newline-token-secret",),
    "invalid-http-api-key-with-control-character.yml": ("canary-cr-key-secret",),
}


def test_every_invalid_file_has_an_expected_message():
    assert {p.name for p in CONFIGS.glob("invalid-*.yml")} == set(EXPECTED_ERRORS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_invalid_config_gives_exact_message(name, monkeypatch):
    monkeypatch.delenv("SCOUT_TEST_UNSET_VARIABLE", raising=False)
    path = CONFIGS / name
    with pytest.raises(ConfigError) as caught:
        load_config(path, expand_env=True)
    expected = EXPECTED_ERRORS[name].replace("{path}", str(path))
    assert str(caught.value) == f"{path}:{expected}"


@pytest.mark.parametrize("name", sorted(CANARIES))
def test_canary_secrets_are_never_echoed(name):
    path = CONFIGS / name
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    result = run_exporter("--dry-run", f"--config.file={path}")
    assert result.returncode == 1
    assert str(caught.value) in result.stderr
    for canary in CANARIES[name]:
        assert canary in path.read_text()  # the canary is really in the file
        assert canary not in str(caught.value)
        assert canary not in result.stdout + result.stderr


def test_module_errors_outside_headers_still_show_the_value():
    text = "modules:\n  api:\n    prober: http\n    count: many\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "x.yml")
    assert (
        str(caught.value)
        == "x.yml:4: modules.api.count: input should be a valid integer, got 'many'"
    )


def test_secret_given_as_wrong_type_is_not_echoed():
    with pytest.raises(ConfigError) as caught:
        load_config(CONFIGS / "invalid-secret-not-a-string.yml")
    assert "8675309" not in str(caught.value)


def test_all_errors_are_reported_at_once():
    text = "collectors: {hots: {}}\nauths: {a: {type: http}}\nextra: 1\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "many.yml")
    assert str(caught.value).splitlines() == [
        'many.yml:1: collectors: unknown key "hots"',
        "many.yml:2: auths.a: needs username/password, bearer_token or api_key",
        'many.yml:3: top level: unknown key "extra"',
    ]


def test_missing_file_is_a_config_error_naming_it(tmp_path):
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match=r"nope\.yml: cannot read config: No such file"):
        load_config(missing)


def test_empty_file_and_no_file_give_defaults(tmp_path):
    empty = tmp_path / "empty.yml"
    empty.write_text("# nothing yet\n")
    assert load_config(empty) == load_config(None)
    assert load_config(None).collectors.host.disks.keeps("sda")


def test_valid_config_masks_every_secret():
    config = load_config(CONFIGS / "valid-full.yml")
    shown = config.masked_yaml() + repr(config) + str(config)
    for secret in SECRETS:
        assert secret not in shown
    assert shown.count("<secret>") == 7
    core = config.auths["core_v3"]
    assert core.type == "snmp"
    assert core.auth_password is not None
    assert core.auth_password.get_secret_value() == "auth-pass-secret"


def test_env_expansion_is_opt_in(monkeypatch):
    monkeypatch.setenv("SCOUT_TEST_COMMUNITY", "from-env")
    path = CONFIGS / "valid-env.yml"
    literal = load_config(path).auths["public_v2"]
    expanded = load_config(path, expand_env=True).auths["public_v2"]
    assert literal.type == expanded.type == "snmp"
    assert literal.community is not None
    assert expanded.community is not None
    assert literal.community.get_secret_value() == "${SCOUT_TEST_COMMUNITY}"
    assert expanded.community.get_secret_value() == "from-env"
    http = load_config(path, expand_env=True).auths["literal"]
    assert http.type == "http"
    assert http.password is not None
    assert http.password.get_secret_value() == "cost$5"


def run_exporter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dry_run_valid_config_exits_0():
    result = run_exporter("--dry-run", f"--config.file={CONFIGS / 'valid-full.yml'}")
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
    assert "6 auths" in result.stdout


def test_dry_run_invalid_config_exits_1_with_the_message():
    path = CONFIGS / "invalid-unknown-key.yml"
    result = run_exporter("--dry-run", f"--config.file={path}")
    assert result.returncode == 1
    assert f'{path}:4: auths.public_v2: unknown key "comunity"' in result.stderr


def test_dry_run_never_prints_secrets():
    result = run_exporter("--dry-run", f"--config.file={CONFIGS / 'valid-full.yml'}")
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr


def test_unknown_flag_is_a_usage_error():
    result = run_exporter("--collector.nonexistent")
    assert result.returncode == 2
    assert "unrecognized arguments: --collector.nonexistent" in result.stderr


def test_collector_flags_come_from_the_registry_table():
    from exporter.collectors import COLLECTORS

    help_text = run_exporter("--help").stdout
    for spec in COLLECTORS:
        assert f"--collector.{spec.name}" in help_text
        assert f"--no-collector.{spec.name}" in help_text


def test_invalid_config_never_echoes_a_secret_even_misplaced():
    path = CONFIGS / "invalid-auth-is-a-string.yml"
    result = run_exporter("--dry-run", f"--config.file={path}")
    assert result.returncode == 1
    assert "auths.public_v2: should be a mapping" in result.stderr
    assert "auth-given-as-a-string-secret" not in result.stdout + result.stderr
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    # No chained pydantic error (which would carry the value) behind ours.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@pytest.mark.parametrize("name", ["invalid-not-utf8.yml", "invalid-control-character.yml"])
def test_unreadable_files_are_config_errors_not_tracebacks(name):
    result = run_exporter("--dry-run", f"--config.file={CONFIGS / name}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_env_expansion_types_plain_values_and_unescapes_once_through_aliases(monkeypatch):
    monkeypatch.setenv("SCOUT_TEST_VERSION", "2")
    monkeypatch.setenv("SCOUT_TEST_DOLLAR", "a$$b")
    config = parse_config(
        """
auths:
  first: &shared
    type: snmp
    version: ${SCOUT_TEST_VERSION}
    community: "${SCOUT_TEST_DOLLAR}"
    allowed_targets: [any]
  second: *shared
""",
        "env.yml",
        expand_env=True,
    )
    for name in ("first", "second"):
        auth = config.auths[name]
        assert auth.type == "snmp"
        assert auth.version == 2
        assert auth.community is not None
        # The variable's own text is used as is: its $$ is not unescaped again.
        assert auth.community.get_secret_value() == "a$$b"


def test_document_marker_alone_gives_defaults():
    assert parse_config("---\n", "x.yml") == load_config(None)


@pytest.mark.parametrize(
    "text",
    [
        # The community everyone knows, v3 without authentication, harmless headers,
        # and modules with no secret at all: no list needed, as in snmp_exporter and blackbox.
        "auths: {lab: {type: snmp, community: public}}",
        "auths: {lab: {type: snmp, version: 1, community: public}}",
        "auths: {lab: {type: snmp, version: 3, username: u, security_level: noAuthNoPriv}}",
        "modules: {api: {prober: http, headers: {Accept: application/json, X-Probe: hi}}}",
        "modules: {ping: {prober: icmp}, web: {prober: http}, port: {prober: tcp}}",
    ],
)
def test_modules_and_auths_without_a_secret_need_no_allow_list(text):
    config = parse_config(text, "x.yml")
    carriers = [*config.auths.values(), *config.modules.values()]
    assert all(getattr(c, "allowed_targets", "missing") is None for c in carriers)


def test_allowed_targets_show_in_the_config_as_written_after_normalising():
    config = parse_config(
        "auths:\n"
        "  core: {type: snmp, community: c-secret,"
        ' allowed_targets: [10.0.0.0/8, "*.Core.Example.NET.", 2001:db8::1]}\n'
        "modules:\n"
        "  api: {prober: http, headers: {X-Api-Key: k-secret}, allowed_targets: [any]}\n",
        "x.yml",
    )
    shown = config.masked_yaml()
    assert "- 10.0.0.0/8\n    - 2001:db8::1/128\n    - '*.core.example.net'\n" in shown
    assert "allowed_targets:\n    - any\n" in shown
    assert "c-secret" not in shown
    assert "k-secret" not in shown
