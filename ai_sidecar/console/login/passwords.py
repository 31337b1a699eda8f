"""Console passwords: argon2id hashes for new ones, bcrypt ones still accepted.

argon2id with argon2-cffi's defaults (RFC 9106's second recommended profile:
64 MiB, 3 passes, 4 lanes; about 0.15 s here). A hash is only ever verified
off the event loop (:func:`verify`); the sign-in runs at most
:data:`CONCURRENT_CHECKS` at once, so a burst of attempts cannot take 64 MiB
each without bound.
bcrypt (``$2b$``, ``$2a$``, ``$2y$``) is accepted too, for hashes made with
``htpasswd -B`` or the exporter's web config tooling; a stored user's bcrypt
hash is replaced by an argon2id one at their next sign-in.

An unknown user name is checked against :func:`dummy_hash`, so the answer
takes as long as for a known user with a wrong password.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets

import bcrypt
from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
MAX_LENGTH = 1024
CONCURRENT_CHECKS = 2
# 18 random bytes: 24 URL-safe characters, 144 bits.
GENERATED_BYTES = 18

_HASHER = PasswordHasher()
_BCRYPT_PREFIXES = ("$2b$", "$2a$", "$2y$")
# $2b$, the cost, 22 characters of salt and 31 of hash, in bcrypt's base64.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
# Each step doubles a check's time (cost 12: about 0.3 s here, 15: 2.5 s);
# htpasswd -B uses 5 unless told. A check holds one of CONCURRENT_CHECKS slots.
MAX_BCRYPT_COST = 15
# argon2id's defaults are 64 MiB and 3 passes; libsodium's "sensitive" profile,
# the heaviest in common use, 1 GiB and 4.
MAX_ARGON2_MEMORY_KIB = 1024 * 1024
MAX_ARGON2_PASSES = 10


class PasswordError(ValueError):
    """A password (or hash) that cannot be used; the message never holds the password."""


def check_strength(password: str) -> None:
    """Refuse a password too short or too long to hash sensibly."""
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"the password must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"the password must be at most {MAX_LENGTH} characters long")


def hash_password(password: str) -> str:
    """An argon2id hash of a new ``password``, which must pass :func:`check_strength`."""
    check_strength(password)
    return rehash(password)


def rehash(password: str) -> str:
    """An argon2id hash of a password already in use (it may predate the length rule)."""
    return _HASHER.hash(password)


def generate_password() -> str:
    return secrets.token_urlsafe(GENERATED_BYTES)


def check_hash(password_hash: str) -> str:
    """``password_hash`` if it is an argon2id or bcrypt hash this module can verify."""
    if password_hash.startswith("$argon2id$"):
        try:
            parameters = extract_parameters(password_hash)
        except InvalidHashError:
            raise PasswordError("not a valid argon2id hash") from None
        # Anyone may make the console check a user's hash, by typing the name:
        # two checks at once at m=4 GiB are an out-of-memory kill.
        if parameters.memory_cost > MAX_ARGON2_MEMORY_KIB:
            raise PasswordError(
                f"an argon2id hash using {parameters.memory_cost // 1024} MiB makes each "
                f"sign-in take that much memory: at most {MAX_ARGON2_MEMORY_KIB // 1024} MiB"
            )
        if parameters.time_cost > MAX_ARGON2_PASSES:
            raise PasswordError(
                f"an argon2id hash of {parameters.time_cost} passes makes each sign-in "
                f"take too long: at most {MAX_ARGON2_PASSES}"
            )
        return password_hash
    if password_hash.startswith(_BCRYPT_PREFIXES):
        # Read, never run: running it costs what a sign-in does, for each user at
        # each change of the users file, and forever for a mistyped cost of 31.
        shape = _BCRYPT_HASH.fullmatch(password_hash)
        if shape is None or not 4 <= int(shape.group(1)) <= 31:
            raise PasswordError("not a valid bcrypt hash")
        if int(shape.group(1)) > MAX_BCRYPT_COST:
            raise PasswordError(
                f"a bcrypt cost of {shape.group(1)} makes each sign-in take too long: "
                f"at most {MAX_BCRYPT_COST}"
            )
        return password_hash
    raise PasswordError("expected an argon2id ($argon2id$...) or bcrypt ($2b$...) hash")


def needs_rehash(password_hash: str) -> bool:
    """Whether a hash that verified should be made again: bcrypt, or weaker argon2 settings."""
    if password_hash.startswith(_BCRYPT_PREFIXES):
        return True
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def verify_now(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; blocks for the hash's cost."""
    if len(password) > MAX_LENGTH:
        return False
    if password_hash.startswith(_BCRYPT_PREFIXES):
        # bcrypt reads 72 bytes at most; bcrypt 5 refuses longer input outright.
        try:
            return bcrypt.checkpw(password.encode()[:72], password_hash.encode())
        except ValueError:
            return False
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def verify(password_hash: str | None, password: str) -> bool:
    """:func:`verify_now` on a thread; against :func:`dummy_hash` (always False) when
    there is no hash, so an unknown user costs the same time."""
    if password_hash is None:
        await asyncio.to_thread(_verify_dummy, password)
        return False
    return await asyncio.to_thread(verify_now, password_hash, password)


@functools.cache
def dummy_hash() -> str:
    """A hash of a random password, made once (about 0.15 s): the console makes it at
    start, so the first unknown name costs no more than the next."""
    return _HASHER.hash(secrets.token_urlsafe(GENERATED_BYTES))


def _verify_dummy(password: str) -> None:
    # dummy_hash() here, on the thread: never hashed on the event loop.
    verify_now(dummy_hash(), password)
