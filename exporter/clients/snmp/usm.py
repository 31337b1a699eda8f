"""SNMPv3 User-based Security Model cryptography: keys, digests, privacy.

The pieces of RFC 3414 (USM, HMAC-MD5-96, HMAC-SHA-96, DES-CBC), RFC 7860
(HMAC-SHA-2) and RFC 3826 (AES-128-CFB) that a read-only manager needs, plus
AES-192/256-CFB with the key extension of draft-blumenthal-aes-usm-04, which is
what net-snmp's ``AES-192``/``AES-256`` and snmp_exporter's ``AES192``/``AES256``
use (Cisco's ``AES192C`` "Reeder" extension is a different, incompatible one).

The crypto is pure functions plus ``KeyCache``; decryption failures raise
``ValueError``. ``Usm`` is one session's security state: the agent's engine id,
boots and time as last learnt (RFC 3414 2.3), the keys localized to that
engine, and the signing, encryption and verification of each message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from exporter.clients.snmp import ber
from exporter.clients.snmp.errors import SnmpAuthError, SnmpError, SnmpProtocolError
from exporter.clients.snmp.pdu import Reply
from exporter.clients.snmp.transport import ID_LIMIT
from exporter.clients.snmp.values import format_oid

if TYPE_CHECKING:
    from exporter.clients.snmp.credentials import Credentials

log = logging.getLogger(__name__)

# What we tell v3 agents we can receive: the largest UDP payload over IPv4.
MSG_MAX_SIZE = 65507


@dataclass(frozen=True, slots=True)
class AuthProtocol:
    name: str
    hash_name: str  # for hashlib and hmac
    digest_length: int  # the truncated HMAC sent in msgAuthenticationParameters


AUTH_PROTOCOLS = MappingProxyType(
    {
        p.name: p
        for p in (
            AuthProtocol("MD5", "md5", 12),
            AuthProtocol("SHA", "sha1", 12),
            AuthProtocol("SHA224", "sha224", 16),
            AuthProtocol("SHA256", "sha256", 24),
            AuthProtocol("SHA384", "sha384", 32),
            AuthProtocol("SHA512", "sha512", 48),
        )
    }
)

# Key sizes in bytes. DES takes 16 localized bytes: the key, then the pre-IV.
PRIV_KEY_SIZES = MappingProxyType({"DES": 16, "AES": 16, "AES192": 24, "AES256": 32})

_ONE_MEGABYTE = 1_048_576


def password_to_key(auth: AuthProtocol, password: bytes) -> bytes:
    """RFC 3414 A.2: hash one megabyte of the password repeated (``Ku``)."""
    if not password:
        raise ValueError("an SNMPv3 password cannot be empty")
    repeated = password * (_ONE_MEGABYTE // len(password) + 1)
    return hashlib.new(auth.hash_name, repeated[:_ONE_MEGABYTE]).digest()


def localize_key(auth: AuthProtocol, ku: bytes, engine_id: bytes) -> bytes:
    """RFC 3414 A.2: ``Kul = H(Ku || engineID || Ku)``, bound to one agent."""
    return hashlib.new(auth.hash_name, ku + engine_id + ku).digest()


def extend_key(auth: AuthProtocol, kul: bytes, size: int) -> bytes:
    """Blumenthal key extension: append ``H(key so far)`` until ``size`` bytes."""
    key = kul
    while len(key) < size:
        key += hashlib.new(auth.hash_name, key).digest()
    return key[:size]


# Localized keys a cache keeps, the oldest going first: an agent may report a new engine
# id on every request, and each would otherwise stay for good.
MAX_LOCALIZED_KEYS = 1024
# RFC 3411's SnmpEngineID is 5 to 32 octets; a longer one is refused.
MAX_ENGINE_ID_OCTETS = 32


class KeyCache:
    """Localized keys by (hash, password, engine id), shared between sessions.

    Turning a password into a key hashes a megabyte, about 2 ms of CPU; a
    scrape of hundreds of devices with one set of credentials pays it once per
    agent instead of once per request. The cache holds secrets, so its repr
    shows only how many keys it holds. It keeps ``MAX_LOCALIZED_KEYS`` at most.
    """

    def __init__(self) -> None:
        self._ku: dict[tuple[str, bytes], bytes] = {}
        self._kul: dict[tuple[str, bytes, bytes], bytes] = {}

    def __repr__(self) -> str:
        return f"KeyCache({len(self._kul)} localized keys)"

    def localized(self, auth: AuthProtocol, password: bytes, engine_id: bytes) -> bytes:
        kul = self._kul.get((auth.hash_name, password, engine_id))
        if kul is None:
            ku = self._ku.get((auth.hash_name, password))
            if ku is None:
                ku = self._ku[(auth.hash_name, password)] = password_to_key(auth, password)
            kul = self._kul[(auth.hash_name, password, engine_id)] = localize_key(
                auth, ku, engine_id
            )
            if len(self._kul) > MAX_LOCALIZED_KEYS:
                del self._kul[next(iter(self._kul))]
        return kul


def sign(auth: AuthProtocol, key: bytes, message: bytes) -> bytes:
    """The truncated HMAC of ``message`` (whose own digest field holds zeros)."""
    return hmac.new(key, message, auth.hash_name).digest()[: auth.digest_length]


def _cfb(iv: bytes) -> Any:
    """CFB128 mode: newer cryptography moved it to ``decrepit`` and warns on the old name."""
    try:
        from cryptography.hazmat.decrepit.ciphers.modes import CFB
    except ImportError:  # cryptography < 47
        return modes.CFB(iv)
    return CFB(iv)


def _des_algorithm(key: bytes) -> Any:
    """Single DES as three-key TripleDES with the key three times (EDE = E)."""
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # cryptography < 43 kept it among the primitives
        try:
            from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[attr-defined,no-redef,unused-ignore]
                TripleDES,
            )
        except ImportError:
            raise ValueError(
                "DES privacy needs TripleDES, which this version of 'cryptography' lacks"
            ) from None
    return TripleDES(key * 3)


def des_available() -> bool:
    try:
        _des_algorithm(bytes(8))
    except ValueError:
        return False
    return True


class Privacy:
    """Encrypts and decrypts ScopedPDUs for one localized privacy key."""

    __slots__ = ("_iv_key", "_key", "protocol")

    def __init__(self, protocol: str, auth: AuthProtocol, kul: bytes) -> None:
        self.protocol = protocol
        key = extend_key(auth, kul, PRIV_KEY_SIZES[protocol])
        if protocol == "DES":
            self._key, self._iv_key = key[:8], key[8:16]
            _des_algorithm(self._key)  # fail now, not on the first request
        else:
            self._key, self._iv_key = key, b""

    def encrypt(self, plaintext: bytes, boots: int, time: int, salt: int) -> tuple[bytes, bytes]:
        """``(ciphertext, msgPrivacyParameters)``; ``salt`` must not repeat for this key."""
        if self.protocol == "DES":
            # RFC 3414 8.1.1.1: salt = boots || 32-bit counter; IV = pre-IV XOR salt.
            params = boots.to_bytes(4, "big") + (salt & 0xFFFFFFFF).to_bytes(4, "big")
            iv = bytes(a ^ b for a, b in zip(self._iv_key, params, strict=True))
            padded = plaintext + bytes(-len(plaintext) % 8)
            encryptor = Cipher(_des_algorithm(self._key), modes.CBC(iv)).encryptor()
            return encryptor.update(padded) + encryptor.finalize(), params
        # RFC 3826 3.1.2.1: IV = boots || time || 64-bit salt; CFB needs no padding.
        params = (salt & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
        iv = boots.to_bytes(4, "big") + time.to_bytes(4, "big") + params
        encryptor = Cipher(algorithms.AES(self._key), _cfb(iv)).encryptor()
        return encryptor.update(plaintext) + encryptor.finalize(), params

    def decrypt(self, ciphertext: bytes, params: bytes, boots: int, time: int) -> bytes:
        if len(params) != 8:
            raise ValueError(f"msgPrivacyParameters is {len(params)} bytes, expected 8")
        if self.protocol == "DES":
            if len(ciphertext) % 8:
                raise ValueError("DES ciphertext is not a multiple of 8 bytes")
            iv = bytes(a ^ b for a, b in zip(self._iv_key, params, strict=True))
            decryptor = Cipher(_des_algorithm(self._key), modes.CBC(iv)).decryptor()
        else:
            iv = boots.to_bytes(4, "big") + time.to_bytes(4, "big") + params
            decryptor = Cipher(algorithms.AES(self._key), _cfb(iv)).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()


# Counters an SNMPv3 agent reports instead of answering (RFC 3414 and 3411-3413).
_REPORT_NAMES = MappingProxyType(
    {
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 1, 0): "usmStatsUnsupportedSecLevels",
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0): "usmStatsNotInTimeWindows",
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 3, 0): "usmStatsUnknownUserNames",
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0): "usmStatsUnknownEngineIDs",
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0): "usmStatsWrongDigests",
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 6, 0): "usmStatsDecryptionErrors",
        (1, 3, 6, 1, 6, 3, 11, 2, 1, 1, 0): "snmpUnknownSecurityModels",
        (1, 3, 6, 1, 6, 3, 11, 2, 1, 2, 0): "snmpInvalidMsgs",
        (1, 3, 6, 1, 6, 3, 11, 2, 1, 3, 0): "snmpUnknownPDUHandlers",
        (1, 3, 6, 1, 6, 3, 12, 1, 4, 0): "snmpUnavailableContexts",
        (1, 3, 6, 1, 6, 3, 12, 1, 5, 0): "snmpUnknownContexts",
    }
)
# Reports that mean "these credentials or this context are not accepted".
_AUTH_REPORTS = frozenset(
    {
        "usmStatsUnsupportedSecLevels",
        "usmStatsNotInTimeWindows",
        "usmStatsUnknownUserNames",
        "usmStatsUnknownEngineIDs",
        "usmStatsWrongDigests",
        "usmStatsDecryptionErrors",
        "snmpUnavailableContexts",
        "snmpUnknownContexts",
    }
)


@dataclass(slots=True)
class Engine:
    """The authoritative engine (the agent), as last learnt."""

    engine_id: bytes
    boots: int
    time: int
    synced_at: float  # loop.time() when ``time`` was learnt

    def now(self, loop_time: float) -> tuple[int, int]:
        elapsed = int(loop_time - self.synced_at)
        return self.boots, min(self.time + elapsed, ID_LIMIT)


def discovery_message(request_id: int) -> bytes:
    """An empty GET with no user: the agent reports its engine id, boots and time."""
    pdu = ber.encode_request_pdu(ber.GET_REQUEST, request_id, 0, 0, ())
    scoped = ber.encode_scoped_pdu(b"", b"", pdu)
    params, offset = ber.encode_usm_parameters(b"", 0, 0, b"", b"", b"")
    message, _ = ber.encode_v3_message(
        request_id, MSG_MAX_SIZE, ber.MSG_FLAG_REPORTABLE, params, offset, scoped
    )
    return message


class Usm:
    """One session's SNMPv3 security: engine, localized keys, signing and privacy.

    ``where`` names the agent in errors; secrets never appear in one.
    """

    def __init__(self, credentials: Credentials, keys: KeyCache, where: str) -> None:
        self.credentials = credentials
        self.where = where
        self.engine: Engine | None = None
        # Whether the agent answered discovery: then silence means it dropped our request.
        self.discovered = False
        self.wants_priv = credentials.security_level == "authPriv"
        self._keys = keys
        self._salt = secrets.randbits(64)
        self._auth = AUTH_PROTOCOLS.get(credentials.auth_protocol or "")
        if credentials.security_level == "noAuthNoPriv":
            self._auth = None
        self._auth_key = b""
        self._privacy: Privacy | None = None
        if self.wants_priv and credentials.priv_protocol == "DES" and not des_available():
            raise SnmpError("DES privacy is not available: this 'cryptography' lacks TripleDES")

    def learn(self, reply: Reply) -> None:
        """Take the engine from the agent's answer to discovery."""
        if reply.tag != ber.REPORT or not reply.engine_id:
            raise SnmpProtocolError(
                f"{self.where} did not report its engine id to SNMPv3 discovery"
            )
        self.discovered = True
        self.set_engine(reply.engine_id, reply.boots, reply.engine_time)

    def set_engine(self, engine_id: bytes, boots: int, engine_time: int) -> None:
        loop_time = asyncio.get_running_loop().time()
        if self.engine is None or self.engine.engine_id != engine_id:
            self._localize(engine_id)
        self.engine = Engine(engine_id, boots, engine_time, loop_time)

    def _localize(self, engine_id: bytes) -> None:
        auth = self._auth
        if auth is None:
            return
        creds = self.credentials
        self._auth_key = self._keys.localized(auth, creds.auth_password.encode(), engine_id)
        if self.wants_priv and creds.priv_protocol is not None:
            kul = self._keys.localized(auth, creds.priv_password.encode(), engine_id)
            self._privacy = Privacy(creds.priv_protocol, auth, kul)

    def message(self, msg_id: int, pdu: bytes) -> bytes:
        """``pdu`` in a v3 message to the engine: scoped, encrypted and signed as configured."""
        engine = self.engine
        assert engine is not None, "discovery runs before any v3 request"
        boots, engine_time = engine.now(asyncio.get_running_loop().time())
        scoped = ber.encode_scoped_pdu(
            engine.engine_id, self.credentials.context_name.encode(), pdu
        )
        flags = ber.MSG_FLAG_REPORTABLE
        priv_params = b""
        if self._privacy is not None:
            flags |= ber.MSG_FLAG_PRIV
            self._salt = (self._salt + 1) & 0xFFFFFFFFFFFFFFFF
            encrypted, priv_params = self._privacy.encrypt(scoped, boots, engine_time, self._salt)
            data = ber.encode_octets(encrypted)
        else:
            data = scoped
        auth = self._auth
        digest_length = 0
        if auth is not None:
            flags |= ber.MSG_FLAG_AUTH
            digest_length = auth.digest_length
        params, offset = ber.encode_usm_parameters(
            engine.engine_id,
            boots,
            engine_time,
            self.credentials.username.encode(),
            bytes(digest_length),
            priv_params,
        )
        message, offset = ber.encode_v3_message(msg_id, MSG_MAX_SIZE, flags, params, offset, data)
        if auth is not None:
            digest = sign(auth, self._auth_key, message)
            message = message[:offset] + digest + message[offset + digest_length :]
        return message

    def decode(self, data: bytes, message: ber.V3Message) -> Reply | None:
        """Verify, decrypt and decode a v3 reply; ``None`` drops a forged one."""
        if message.security_model != ber.SECURITY_MODEL_USM:
            raise SnmpProtocolError(
                f"{self.where} answered with security model {message.security_model}"
            )
        # RFC 3414 2.2.1: both in 0..2^31-1. Others, taken as the engine's, would make
        # every request fail to build (an AES IV holds each in 32 bits).
        if not (0 <= message.boots <= ID_LIMIT and 0 <= message.engine_time <= ID_LIMIT):
            raise SnmpProtocolError(
                f"{self.where} reported engine boots or time out of range"
                f" ({message.boots}, {message.engine_time})"
            )
        if len(message.engine_id) > MAX_ENGINE_ID_OCTETS:
            raise SnmpProtocolError(
                f"{self.where} reported an engine id of {len(message.engine_id)} octets"
                f" (at most {MAX_ENGINE_ID_OCTETS})"
            )
        authenticated = False
        if message.flags & ber.MSG_FLAG_AUTH:
            auth = self._auth
            engine = self.engine
            if auth is None or engine is None or message.engine_id != engine.engine_id:
                log.debug("%s: dropped a signed message we cannot verify", self.where)
                return None
            zeroed = (
                data[: message.auth_start]
                + bytes(message.auth_end - message.auth_start)
                + data[message.auth_end :]
            )
            expected = sign(auth, self._auth_key, zeroed)
            if not secrets.compare_digest(expected, message.auth_params):
                log.debug("%s: dropped a message with a wrong digest", self.where)
                return None
            authenticated = True
        if message.flags & ber.MSG_FLAG_PRIV:
            if not authenticated or self._privacy is None:
                raise SnmpProtocolError(f"{self.where} sent an encrypted message we cannot read")
            encrypted, _ = ber.read_octets(data, message.data_pos, "encryptedPDU")
            try:
                plain = self._privacy.decrypt(
                    encrypted, message.priv_params, message.boots, message.engine_time
                )
                _, _, pdu_pos = ber.decode_scoped_pdu(plain, 0)
                decoded = ber.decode_pdu(plain, pdu_pos)
            except (ValueError, IndexError) as exc:
                raise SnmpAuthError(
                    f"cannot decrypt the response from {self.where} ({exc});"
                    " is the priv_protocol right?"
                ) from None
        else:
            _, _, pdu_pos = ber.decode_scoped_pdu(data, message.data_pos)
            decoded = ber.decode_pdu(data, pdu_pos)
        if authenticated and self.engine is not None:
            engine = self.engine
            # RFC 3414 3.2.7: follow the agent's clock forward, never back.
            if message.boots > engine.boots or (
                message.boots == engine.boots and message.engine_time > engine.time
            ):
                engine.boots, engine.time = message.boots, message.engine_time
                engine.synced_at = asyncio.get_running_loop().time()
        return Reply(
            *decoded,
            authenticated=authenticated,
            engine_id=message.engine_id,
            boots=message.boots,
            engine_time=message.engine_time,
        )

    def report_name(self, reply: Reply) -> str:
        """What a v3 report is about, by the counter it carries."""
        if not reply.varbinds:
            return "an empty report"
        raw = reply.varbinds[0][0]
        try:
            oid = ber.decode_oid(raw)
        except (ValueError, IndexError):
            return "a malformed report"
        return _REPORT_NAMES.get(oid, f"report {format_oid(oid)}")

    def report_error(self, report: str) -> SnmpError:
        user = self.credentials.username
        if report in _AUTH_REPORTS:
            return SnmpAuthError(f"{self.where} rejected SNMPv3 user {user!r} ({report})")
        return SnmpProtocolError(f"{self.where} answered with {report}")
