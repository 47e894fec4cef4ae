"""Local console passwords: argon2id hashes (argon2-cffi), checked in constant work.

Only people have passwords; agents authenticate with bearer tokens and never sign in to the
console. A sign-in for a name that does not exist still runs one argon2 verification, so the
time taken does not tell which names exist.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from jitgate.errors import InvalidRequest

MIN_LENGTH = 12
MAX_LENGTH = 1024

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 "low memory" profile


def check_password_strength(password: object) -> str:
    if not isinstance(password, str):
        raise InvalidRequest("password must be text")
    if len(password) < MIN_LENGTH:
        raise InvalidRequest(f"password is too short: use at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InvalidRequest(f"password is too long (at most {MAX_LENGTH} characters)")
    if password != password.strip():
        raise InvalidRequest("password must not start or end with whitespace")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password_strength(password))


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash("jitgate-dummy-password-for-timing")


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; a missing hash costs the same work."""
    if not isinstance(password, str) or len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
