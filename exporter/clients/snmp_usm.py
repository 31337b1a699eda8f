"""SNMPv3 User-based Security Model cryptography: keys, digests, privacy.

The pieces of RFC 3414 (USM, HMAC-MD5-96, HMAC-SHA-96, DES-CBC), RFC 7860
(HMAC-SHA-2) and RFC 3826 (AES-128-CFB) that a read-only manager needs, plus
AES-192/256-CFB with the key extension of draft-blumenthal-aes-usm-04, which is
what net-snmp's ``AES-192``/``AES-256`` and snmp_exporter's ``AES192``/``AES256``
use (Cisco's ``AES192C`` "Reeder" extension is a different, incompatible one).

The message handling lives in ``exporter.clients.snmp``; this module is pure
functions plus ``KeyCache``. Decryption failures raise ``ValueError``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


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


class KeyCache:
    """Localized keys by (hash, password, engine id), shared between sessions.

    Turning a password into a key hashes a megabyte, about 2 ms of CPU; a
    scrape of hundreds of devices with one set of credentials pays it once per
    agent instead of once per request. The cache holds secrets, so its repr
    shows only how many keys it holds.
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
