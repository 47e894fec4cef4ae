"""Bearer tokens: ``jg<kind>_<token id>_<secret>``; only sha256(secret) is stored.

The token id is public (it finds the row); the secret is 32 random bytes, so a plain SHA-256
is the right hash (no password stretching needed) and the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

AGENT, USER = "a", "u"
_TOKEN = re.compile(r"jg([au])_([A-Za-z0-9]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class IssuedToken:
    token: str
    token_id: str
    token_hash: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def issue(kind: str) -> IssuedToken:
    token_id = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(16))
    secret = secrets.token_urlsafe(32)
    return IssuedToken(f"jg{kind}_{token_id}_{secret}", token_id, hash_secret(secret))


@dataclass(frozen=True)
class ParsedToken:
    kind: str
    token_id: str
    secret: str


def parse(token: str) -> ParsedToken | None:
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    return ParsedToken(match.group(1), match.group(2), match.group(3))


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
