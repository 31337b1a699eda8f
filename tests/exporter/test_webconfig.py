"""--web.config.file: parsing (each error's exact message), basic auth, headers, reload rules."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import socket
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
from cryptography import x509

from exporter.app import create_app
from exporter.common import webconfig
from exporter.common.serving import listening_sockets, serving
from exporter.common.webconfig import WEB_SECURITY, WebConfigError, WebSecurity
from exporter.live import Settings
from tests.exporter.certs import CertificateAuthority
from tests.exporter.common.raw_http import exchange, send_malformed_requests, served
from tests.exporter.test_config import run_exporter

# Cost 4, bcrypt's lowest: the tests check behaviour, not bcrypt's speed.
PASSWORD = "correct horse battery staple"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"

WEBCONFIGS = Path(__file__).parent / "webconfigs"
# Each invalid-*.yml under webconfigs/ and the exact error after "<path>:".
EXPECTED_ERRORS = {
    "invalid-unknown-key.yml": '4: tls_server_config: unknown key "cert_fiel"',
    "invalid-unknown-top-level-key.yml": '1: top level: unknown key "basic_auth"',
    "invalid-duplicate-key.yml": '3: duplicate key "a"',
    "invalid-no-cert.yml": "1: tls_server_config: missing cert_file (or cert)",
    "invalid-no-key.yml": "1: tls_server_config: missing key_file (or key)",
    "invalid-cert-twice.yml": "1: tls_server_config: give cert or cert_file, not both",
    "invalid-client-auth-unknown.yml": (
        "4: tls_server_config.client_auth_type: input should be 'NoClientCert', "
        "'RequestClientCert', 'RequireAnyClientCert', 'VerifyClientCertIfGiven' or "
        "'RequireAndVerifyClientCert', got 'Maybe'"
    ),
    "invalid-client-auth-request.yml": (
        "4: tls_server_config.client_auth_type: RequestClientCert is not supported: "
        "Python's ssl module cannot ask for a client certificate without verifying it; "
        "use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"
    ),
    "invalid-client-auth-require-any.yml": (
        "4: tls_server_config.client_auth_type: RequireAnyClientCert is not supported: "
        "Python's ssl module cannot ask for a client certificate without verifying it; "
        "use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"
    ),
    "invalid-verify-without-ca.yml": (
        "1: tls_server_config: client_auth_type RequireAndVerifyClientCert needs client_ca_file"
    ),
    "invalid-verify-if-given-without-ca.yml": (
        "1: tls_server_config: client_auth_type VerifyClientCertIfGiven needs client_ca_file"
    ),
    "invalid-ca-without-client-auth.yml": (
        "1: tls_server_config: client_ca_file is set but client_auth_type is NoClientCert"
    ),
    "invalid-sans-without-verification.yml": (
        "1: tls_server_config: client_allowed_sans needs client_auth_type "
        "RequireAndVerifyClientCert"
    ),
    "invalid-versions-crossed.yml": "1: tls_server_config: min_version TLS13 is above max_version",
    "invalid-version-unknown.yml": (
        "4: tls_server_config.min_version: input should be 'TLS10', 'TLS11', 'TLS12' or "
        "'TLS13', got 'TLS14'"
    ),
    "invalid-version-tls10.yml": (
        "4: tls_server_config.min_version: TLS10 is not supported: OpenSSL 3 allows TLS 1.0 and"
        " 1.1 only at security level 0, which Scout does not lower, so no client could connect"
        " with it; use TLS12 or TLS13"
    ),
    "invalid-version-tls11.yml": (
        "4: tls_server_config.max_version: TLS11 is not supported: OpenSSL 3 allows TLS 1.0 and"
        " 1.1 only at security level 0, which Scout does not lower, so no client could connect"
        " with it; use TLS12 or TLS13"
    ),
    "invalid-cipher-unknown.yml": (
        "4: tls_server_config.cipher_suites: unknown cipher suite "
        "'TLS_RSA_WITH_RC4_128_SHA' (Go's crypto/tls names)"
    ),
    "invalid-curve-unknown.yml": (
        "4: tls_server_config.curve_preferences: unknown curve 'Curve25519' (expected "
        "one of: CurveP256, CurveP384, CurveP521, X25519)"
    ),
    "invalid-two-curves.yml": (
        "4: tls_server_config.curve_preferences: Python's ssl module sets one curve; "
        "list one (or none for OpenSSL's defaults)"
    ),
    "invalid-header-unknown.yml": (
        "3: http_server_config.headers.X-Powered-By: input should be "
        "'Content-Security-Policy', 'X-Frame-Options', 'X-Content-Type-Options', "
        "'X-XSS-Protection' or 'Strict-Transport-Security', got 'X-Powered-By'"
    ),
    "invalid-header-value.yml": (
        "1: http_server_config: X-Frame-Options must be one of: deny, sameorigin"
    ),
    "invalid-header-newline.yml": (
        "1: http_server_config: Content-Security-Policy: a header value cannot hold control"
        " characters"
    ),
    "invalid-http2-not-bool.yml": (
        "2: http_server_config.http2: input should be a valid boolean, got 'yes'"
    ),
    "invalid-rate-limit.yml": (
        "1: rate_limit: not supported by Scout; limit requests in a reverse proxy"
    ),
    "invalid-password-not-hashed.yml": (
        "2: basic_auth_users.alice: not a bcrypt hash (make one with `htpasswd -nBC 10 "
        "'' | tr -d ':\\n'`)"
    ),
    "invalid-password-a-number.yml": "2: basic_auth_users.alice: input should be a valid string",
    "invalid-users-a-string.yml": "1: basic_auth_users: should be a mapping",
    "invalid-inline-key-a-list.yml": "3: tls_server_config.key: input should be a valid string",
}
CANARIES = ("canary-plain-password", "86753090", "canary-users-string", "canary-inline-key")


@pytest.fixture
def pki(tmp_path: Path) -> CertificateAuthority:
    ca = CertificateAuthority(tmp_path, "ca")
    ca.server("server")
    ca.client("client")
    return ca


def write(tmp_path: Path, text: str, name: str = "web.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_invalid_file_has_an_expected_message():
    assert {p.name for p in WEBCONFIGS.glob("invalid-*.yml")} == set(EXPECTED_ERRORS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_invalid_web_config_gives_exact_message(name):
    path = WEBCONFIGS / name
    with pytest.raises(WebConfigError) as caught:
        WebSecurity(path)
    assert str(caught.value) == f"{path}:{EXPECTED_ERRORS[name]}"
    assert caught.value.__cause__ is None
    for canary in CANARIES:
        assert canary not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
            "tls_server_config.cert_file: cannot read {dir}/missing.crt: No such file or directory",
        ),
        (
            TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: nope.crt\n",
            "tls_server_config.client_ca_file: cannot read {dir}/nope.crt: No such file or"
            " directory",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
            "tls_server_config: cert_file, key_file: [X509: KEY_VALUES_MISMATCH] key values"
            " mismatch",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key: not a pem key\n",
            "tls_server_config: cert_file, key_file: [SSL] PEM lib",
        ),
    ],
)
def test_unusable_certificate_files_name_the_setting(text, expected, tmp_path, pki):
    path = write(tmp_path, text)
    with pytest.raises(WebConfigError) as caught:
        WebSecurity(path)
    assert str(caught.value).startswith(f"{path}: " + expected.format(dir=tmp_path))
    assert "not a pem key" not in str(caught.value)


def test_full_file_loads_and_paths_are_relative_to_it(tmp_path, pki):
    (tmp_path / "elsewhere").mkdir()
    path = write(
        tmp_path / "elsewhere",
        "tls_server_config:\n"
        "  cert_file: ../server.crt\n"
        "  key_file: ../server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: ../ca.crt\n"
        "  client_allowed_sans: [prometheus]\n"
        "  min_version: TLS13\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
        "  prefer_server_cipher_suites: false\n"
        "  curve_preferences: [X25519]\n"
        "http_server_config:\n"
        "  http2: false\n"
        "  headers: {X-Frame-Options: DENY}\n"
        f"basic_auth_users:\n  alice: '{HASH}'\n",
    )
    security = WebSecurity(path)
    context = security.ssl_context()
    assert context is not None
    assert context.verify_mode.name == "CERT_REQUIRED"
    assert context.minimum_version.name == "TLSv1_3"
    names = {c["name"] for c in context.get_ciphers()}
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in names
    assert "ECDHE-RSA-AES256-GCM-SHA384" not in names
    assert security.config.basic_auth_users["alice"].get_secret_value() == HASH


def test_inline_cert_and_key_load(tmp_path, pki):
    cert = (tmp_path / "server.crt").read_text()
    key = (tmp_path / "server.key").read_text()
    indent = "\n    ".join
    path = write(
        tmp_path,
        "tls_server_config:\n"
        f"  cert: |\n    {indent(cert.splitlines())}\n"
        f"  key: |\n    {indent(key.splitlines())}\n",
    )
    assert WebSecurity(path).ssl_context() is not None


def test_tls_versions_python_can_serve_are_the_ones_accepted():
    # Guards the refusal above: were OpenSSL's default to allow TLS 1.1 again, the
    # refusal would turn away configs that could work.
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert server.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert set(webconfig.TLS_VERSIONS) == {"TLS12", "TLS13"}


@pytest.mark.parametrize(
    ("text", "tls_on"),
    [
        ("tls_server_config: {}\n", False),  # exporter-toolkit: nothing set, plain HTTP
        ("tls_server_config:\n", False),
        (TLS + '  client_auth_type: ""\n', True),  # exporter-toolkit: NoClientCert
    ],
)
def test_what_exporter_toolkit_reads_as_unset_is_unset(text, tls_on, tmp_path, pki):
    security = WebSecurity(write(tmp_path, text))
    context = security.ssl_context()
    assert (context is not None) is tls_on
    if context is not None:
        assert context.verify_mode == ssl.CERT_NONE
        tls = security.config.tls_server_config
        assert tls is not None
        assert tls.client_auth_type == "NoClientCert"


def test_no_file_means_plain_http_and_no_auth():
    security = WebSecurity(None)
    assert security.ssl_context() is None
    assert security.config.basic_auth_users == {}


def test_dry_run_validates_the_web_config(tmp_path, pki):
    good = write(tmp_path, TLS + f"basic_auth_users:\n  alice: '{HASH}'\n")
    result = run_exporter("--dry-run", f"--web.config.file={good}")
    assert result.returncode == 0, result.stderr
    assert f"web config OK: {good} (TLS on, client certificates: NoClientCert, 1 basic" in (
        result.stdout
    )
    assert HASH not in result.stdout + result.stderr
    bad = WEBCONFIGS / "invalid-password-not-hashed.yml"
    result = run_exporter("--dry-run", f"--web.config.file={bad}")
    assert result.returncode == 1
    assert f"invalid web config:\n{bad}:2: basic_auth_users.alice: not a bcrypt" in result.stderr
    assert "canary-plain-password" not in result.stdout + result.stderr


# --- basic auth, headers and reload, on the real app -------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def web_file(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        f"basic_auth_users:\n  alice: '{HASH}'\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        "    Content-Security-Policy: default-src 'none'\n",
    )


@pytest.fixture
async def client(aiohttp_client, web_file):
    settings = Settings(
        enabled_collectors=frozenset(), web_config_file=web_file, enable_lifecycle=True
    )
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def bcrypt_calls(monkeypatch) -> list[bytes]:
    """The hashes bcrypt was asked to check against, in order."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting)
    return calls


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("alice", "wrong"),
        basic("mallory", PASSWORD),
        basic("alice", "x" * 100),  # longer than bcrypt's 72 bytes
        {"Authorization": "Bearer " + PASSWORD},
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    ],
)
async def test_requests_without_valid_credentials_get_401(client, headers):
    for path in ("/metrics", "/", "/config", "/-/healthy", "/nope"):
        response = await client.get(path, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="scout", charset="UTF-8"'
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    response = await client.post("/-/reload", headers=headers)
    assert response.status == 401


async def test_valid_credentials_pass_and_headers_are_added(client):
    response = await client.get("/metrics", headers=basic("alice", PASSWORD))
    assert response.status == 200
    assert "scout_exporter_build_info" in await response.text()
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "default-src 'none'"
    missing = await client.get("/nope", headers=basic("alice", PASSWORD))
    assert missing.status == 404
    assert missing.headers["X-Content-Type-Options"] == "nosniff"


async def test_unknown_user_still_pays_for_a_bcrypt_check(client, bcrypt_calls):
    response = await client.get("/metrics", headers=basic("mallory", PASSWORD))
    assert response.status == 401
    assert len(bcrypt_calls) == 1
    decoy = bcrypt_calls[0]
    assert decoy != HASH.encode()
    # The decoy has the real user's cost, so both take as long.
    assert cost(decoy) == cost(HASH)
    assert not bcrypt.checkpw(PASSWORD.encode(), decoy)


def cost(hashed: bytes | str) -> bytes:
    return (hashed.encode() if isinstance(hashed, str) else hashed).split(b"$")[2]


async def test_unknown_names_are_checked_at_the_users_own_costs(tmp_path, bcrypt_calls):
    cheap = bcrypt.hashpw(b"bob's password", bcrypt.gensalt(rounds=5)).decode()
    path = write(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\n  bob: '{cheap}'\n")
    app = create_app(Settings(enabled_collectors=frozenset(), web_config_file=path))
    names = [f"user{i}" for i in range(40)]
    async with served(app) as port:
        for name in names * 2:
            await asyncio.to_thread(fetch_status, port, basic(name, PASSWORD))
    assert len(bcrypt_calls) == 80
    checked = dict(zip(names, bcrypt_calls, strict=False))
    # Each name has one cost, the same on every try, as a real user has ...
    assert [cost(h) for h in bcrypt_calls[40:]] == [cost(checked[n]) for n in names]
    # ... and the names spread over both users' costs, as real names would:
    # a cost seen tells nothing of whether a name exists.
    assert {cost(h) for h in bcrypt_calls} == {b"04", b"05"}
    assert not {HASH.encode(), cheap.encode()} & set(bcrypt_calls)
    # A restart (the same file read again) keeps each name's cost.
    again = WebSecurity(path)._active
    assert all(cost(again.decoy_for(n)) == cost(checked[n]) for n in names)


def fetch_status(port: int, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/-/healthy", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_only_a_passwords_first_72_bytes_count(tmp_path):
    # As in Go's bcrypt (exporter-toolkit): bytes past the 72nd are never read.
    password = "p" * 72 + "-the rest is ignored"
    hashed = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    path = write(tmp_path, f"basic_auth_users:\n  alice: '{hashed}'\n")
    app = create_app(Settings(enabled_collectors=frozenset(), web_config_file=path))
    async with served(app) as port:
        for sent, status in [
            (password, 200),
            ("p" * 72 + "-something else", 200),
            ("p" * 72, 200),
            ("p" * 71, 401),
            ("q" + password[1:], 401),
        ]:
            assert await asyncio.to_thread(fetch_status, port, basic("alice", sent)) == status


async def test_verified_credentials_are_cached_by_a_keyed_hash(client, bcrypt_calls):
    for _ in range(5):
        response = await client.get("/metrics", headers=basic("alice", PASSWORD))
        assert response.status == 200
    assert bcrypt_calls == [HASH.encode()]
    # Wrong passwords are never cached: each one is checked.
    for _ in range(2):
        assert (await client.get("/", headers=basic("alice", "guess"))).status == 401
    assert len(bcrypt_calls) == 3
    cache = client.app[WEB_SECURITY]._verified
    assert len(cache) == 1
    assert all(PASSWORD.encode() not in key and len(key) == 32 for key in cache)


async def test_reload_replaces_users_and_forgets_cached_ones(client, web_file, bcrypt_calls):
    assert (await client.get("/", headers=basic("alice", PASSWORD))).status == 200
    new_hash = bcrypt.hashpw(b"new-password", bcrypt.gensalt(rounds=4)).decode()
    web_file.write_text(f"basic_auth_users:\n  alice: '{new_hash}'\n")
    reload = await client.post("/-/reload", headers=basic("alice", PASSWORD))
    assert reload.status == 200, await reload.text()
    assert (await client.get("/", headers=basic("alice", PASSWORD))).status == 401
    response = await client.get("/", headers=basic("alice", "new-password"))
    assert response.status == 200
    assert "X-Content-Type-Options" not in response.headers  # the headers went too


async def test_invalid_web_config_on_reload_keeps_the_old_one(client, web_file):
    web_file.write_text("basic_auth_users:\n  alice: canary-plain-password\n")
    response = await client.post("/-/reload", headers=basic("alice", PASSWORD))
    assert response.status == 500
    text = await response.text()
    assert f"{web_file}:2: basic_auth_users.alice: not a bcrypt hash" in text
    assert "canary-plain-password" not in text
    metrics = await client.get("/metrics", headers=basic("alice", PASSWORD))
    assert metrics.status == 200
    assert "scout_config_last_reload_successful 0.0" in await metrics.text()


async def test_reload_refuses_tls_settings_the_listener_cannot_change(tmp_path, pki):
    path = write(tmp_path, TLS)
    security = WebSecurity(path)
    listener = security.ssl_context()
    path.write_text(TLS + "  min_version: TLS13\n  curve_preferences: [CurveP384]\n")
    with pytest.raises(WebConfigError) as caught:
        security.prepare()
    assert str(caught.value) == (
        f"{path}: tls_server_config: min_version, curve_preferences changed; restart"
        " scout-exporter to apply it (a reload takes new certificates, keys, client CAs,"
        " users and headers only)"
    )
    path.write_text("")
    with pytest.raises(WebConfigError, match="TLS cannot be turned on or off by a reload"):
        security.prepare()
    assert security.ssl_context() is listener
    assert security.config.tls_server_config is not None


async def test_failed_main_config_reload_keeps_the_old_web_config(aiohttp_client, tmp_path):
    config = write(tmp_path, "auths: {}\n", name="scout.yml")
    web_config = write(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\n")
    settings = Settings(
        config_file=config,
        web_config_file=web_config,
        enabled_collectors=frozenset(),
        enable_lifecycle=True,
    )
    client = await aiohttp_client(create_app(settings))
    web_config.write_text(f"basic_auth_users:\n  mallory: '{HASH}'\n")  # valid
    config.write_text("auths: [broken\n")  # invalid
    response = await client.post("/-/reload", headers=basic("alice", PASSWORD))
    assert response.status == 500, await response.text()
    # Neither config took: the old users still pass, the new one is refused.
    assert (await client.get("/", headers=basic("alice", PASSWORD))).status == 200
    assert (await client.get("/", headers=basic("mallory", PASSWORD))).status == 401
    config.write_text("auths: {}\n")
    response = await client.post("/-/reload", headers=basic("alice", PASSWORD))
    assert response.status == 200, await response.text()
    assert (await client.get("/", headers=basic("mallory", PASSWORD))).status == 200
    assert (await client.get("/", headers=basic("alice", PASSWORD))).status == 401


async def test_reload_makes_the_decoys_cheaply_off_the_event_loop(client, web_file, monkeypatch):
    calls: list[tuple[threading.Thread, bytes]] = []
    real = bcrypt.hashpw

    def recording(password: bytes, salt: bytes) -> bytes:
        calls.append((threading.current_thread(), salt))
        assert cost(salt) == b"04", "hashing at the users' cost could take days"
        return real(password, salt)

    monkeypatch.setattr(webconfig.bcrypt, "hashpw", recording)
    # Cost 31 would take days to hash; the decoy is made at cost 4 and relabelled.
    dearest = real(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$04$", "$31$")
    web_file.write_text(f"basic_auth_users:\n  alice: '{dearest}'\n")
    assert (await client.post("/-/reload", headers=basic("alice", PASSWORD))).status == 200
    assert len(calls) == 1
    assert calls[0][0] is not threading.main_thread()
    assert cost(calls[0][1]) == b"04"
    assert cost(client.app[WEB_SECURITY]._active.decoy_for("mallory")) == b"31"


# --- TLS session resumption across a change of client CAs -------------------------------


def fetch_healthy(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[int, bool, ssl.SSLSession | None]:
    """GET /-/healthy on a new connection: the status, whether the session was resumed, it."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
    ):
        tls.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
        return int(answer.split()[1]), tls.session_reused, tls.session


def mutual_tls(ca: CertificateAuthority, server_dir: Path) -> str:
    return (
        "tls_server_config:\n"
        f"  cert_file: {server_dir / 'server.crt'}\n"
        f"  key_file: {server_dir / 'server.key'}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {ca.pair.cert}\n"
    )


@pytest.fixture
async def mutual_tls_server(aiohttp_server, tmp_path):
    """A server verifying clients against the "first" CA, and a client certificate from it."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = CertificateAuthority(tmp_path / "first", "first")
    second = CertificateAuthority(tmp_path / "second", "second")
    first.server()
    client = first.client()
    path = write(tmp_path, mutual_tls(first, tmp_path / "first"))
    security = WebSecurity(path)
    app = create_app(Settings(enabled_collectors=frozenset()), security=security)
    server = await aiohttp_server(app, ssl=security.ssl_context())
    context = ssl.create_default_context(cafile=first.pair.cert)
    context.load_cert_chain(client.cert, client.key)
    return server, security, path, mutual_tls(second, tmp_path / "first"), context


async def test_no_session_tickets_so_tls13_never_resumes(mutual_tls_server):
    server, _security, _path, _second, context = mutual_tls_server
    status, resumed, session = await asyncio.to_thread(fetch_healthy, server.port, context)
    assert (status, resumed) == (200, False)
    status, resumed, _ = await asyncio.to_thread(fetch_healthy, server.port, context, session)
    assert (status, resumed) == (200, False)


async def test_tls12_session_from_before_a_client_ca_change_is_refused(mutual_tls_server):
    server, security, path, second_ca_config, context = mutual_tls_server
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # session IDs: OpenSSL's server cache
    status, resumed, session = await asyncio.to_thread(fetch_healthy, server.port, context)
    assert (status, resumed) == (200, False)
    # Resuming works while the client CAs stay the same, across a reload too.
    security.commit(security.prepare())
    status, resumed, _ = await asyncio.to_thread(fetch_healthy, server.port, context, session)
    assert (status, resumed) == (200, True)
    path.write_text(second_ca_config)
    security.commit(security.prepare())
    # A new handshake fails: the client's certificate is not from the second CA ...
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.to_thread(fetch_healthy, server.port, context)
    # ... and resuming the session it was verified in gets no further.
    status, resumed, _ = await asyncio.to_thread(fetch_healthy, server.port, context, session)
    assert (status, resumed) == (403, True)


async def test_plain_http_to_the_tls_port_gets_gos_400(tmp_path, pki):
    security = WebSecurity(write(tmp_path, TLS))
    app = create_app(Settings(enabled_collectors=frozenset()), security=security)
    sockets = listening_sockets("127.0.0.1", 0, 16)
    async with serving(app, sockets, ssl_context=security.ssl_context()):
        port = sockets[0].getsockname()[1]
        answer = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer == (
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
        )
        # TLS clients on the same port are served as before.
        context = ssl.create_default_context(cafile=pki.pair.cert)
        status, _, _ = await asyncio.to_thread(fetch_healthy, port, context)
        assert status == 200


# --- client_allowed_sans ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "status"),
    [
        ("2001:db8::1", 200),  # as exporter-toolkit compares it (Go's ip.String())
        ("2001:DB8:0:0:0:0:0:1", 200),  # as Python's ssl spells it
        ("2001:0db8:0::0001", 200),
        ("10.0.0.1", 200),
        ("::ffff:10.0.0.1", 200),  # Go prints an IPv4-mapped SAN as IPv4
        ("spiffe://scout/prometheus", 200),
        ("2001:db8::2", 403),
        ("10.0.0.2", 403),
        ("<unsupported>", 403),  # what ssl shows for an otherName SAN, which Go never compares
    ],
)
async def test_client_allowed_sans_compare_addresses_as_addresses(
    aiohttp_server, tmp_path, allowed, status
):
    ca = CertificateAuthority(tmp_path, "ca")
    ca.server()
    client = ca.issue(
        "client",
        server=False,
        sans=[
            x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
            x509.IPAddress(ipaddress.ip_address("::ffff:10.0.0.1")),
            x509.UniformResourceIdentifier("spiffe://scout/prometheus"),
            x509.OtherName(x509.ObjectIdentifier("1.2.3.4"), b"\x0c\x01x"),
        ],
    )
    path = write(tmp_path, mutual_tls(ca, tmp_path) + f"  client_allowed_sans: ['{allowed}']\n")
    security = WebSecurity(path)
    app = create_app(Settings(enabled_collectors=frozenset()), security=security)
    server = await aiohttp_server(app, ssl=security.ssl_context())
    context = ssl.create_default_context(cafile=ca.pair.cert)
    context.load_cert_chain(client.cert, client.key)
    status_seen, _, _ = await asyncio.to_thread(fetch_healthy, server.port, context)
    assert status_seen == status


# --- POST /-/reload: --web.enable-lifecycle and browsers ----------------------------------


async def test_reload_over_http_needs_the_lifecycle_flag(aiohttp_client, tmp_path):
    app = create_app(Settings(enabled_collectors=frozenset()))
    client = await aiohttp_client(app)
    response = await client.post("/-/reload")
    assert response.status == 403
    assert "--web.enable-lifecycle" in await response.text()
    assert "SIGHUP" in await response.text()


@pytest.mark.parametrize(
    ("enable_lifecycle", "expected"),
    [
        (True, "POST /-/reload or send SIGHUP to reload the config."),
        (False, "Send SIGHUP (POST /-/reload needs --web.enable-lifecycle) to reload the config."),
    ],
)
async def test_landing_page_names_the_reload_that_works(aiohttp_client, enable_lifecycle, expected):
    settings = Settings(enabled_collectors=frozenset(), enable_lifecycle=enable_lifecycle)
    client = await aiohttp_client(create_app(settings))
    text = await (await client.get("/")).text()
    assert expected in text
    assert ("POST /-/reload or send SIGHUP" in text) is enable_lifecycle


@pytest.fixture
async def open_client(aiohttp_client):
    settings = Settings(enabled_collectors=frozenset(), enable_lifecycle=True)
    return await aiohttp_client(create_app(settings))


# The headers a browser sends with a cross-site form POST or fetch.
CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:3000"},  # another port
    {"Origin": "https://evil.example"},  # a browser without Sec-Fetch-*
    {"Origin": "null"},  # a sandboxed frame or a data: page
    {"Origin": "http://127.0.0.1", "Content-Type": "application/x-www-form-urlencoded"},
    {"Sec-Fetch-Site": "cross-site", "Content-Type": "multipart/form-data; boundary=x"},
    {"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain;charset=UTF-8"},
]


@pytest.mark.parametrize("headers", CROSS_SITE)
async def test_cross_site_browser_posts_cannot_reload(open_client, headers, caplog):
    caplog.set_level(logging.INFO)  # "config reloaded" is logged at INFO
    response = await open_client.post("/-/reload", headers=headers, data=b"a=1")
    assert response.status == 403
    assert (await response.text()).startswith("refused: ")
    assert "config reloaded" not in caplog.text


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl -X POST
        {"Content-Type": "application/x-www-form-urlencoded"},  # urllib, curl -d ''
        {"Content-Type": "application/json"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
    ],
)
async def test_non_browser_and_same_origin_posts_reload(open_client, headers):
    response = await open_client.post("/-/reload", headers=headers)
    assert response.status == 200, await response.text()
    assert await response.text() == "config reloaded\n"


async def test_same_origin_browser_post_reloads(open_client):
    origin = f"http://{open_client.host}:{open_client.port}"
    headers = {"Origin": origin, "Sec-Fetch-Site": "same-origin"}
    response = await open_client.post("/-/reload", headers=headers)
    assert response.status == 200


async def test_malformed_requests_never_log_the_password(web_file, caplog):
    caplog.set_level(logging.DEBUG)
    password = "canary-password-5c1e07aa"
    credentials = basic("alice", password)["Authorization"]
    settings = Settings(enabled_collectors=frozenset(), web_config_file=web_file)
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    async with served(create_app(settings)) as port:
        logged = await send_malformed_requests(port, head, credentials, caplog.records)
    assert "Invalid header token" in logged
    assert credentials.split()[1] not in logged
    assert password not in logged
    assert "Traceback" not in logged
