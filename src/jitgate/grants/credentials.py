"""Grant credentials, shaped like STS's, meaningful only at jitgate's AWS endpoint.

Nothing secret is stored: the secret access key and session token are derived with
HMAC-SHA256 from a master key that lives in a 0600 file outside the database. The access key
id is the only stored part, and it is public by design (it appears in every signed request).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jitgate.clock import isoformat

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
ACCESS_KEY_PREFIX = "ASIAJG"


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime

    def as_dict(self) -> dict[str, str]:
        return {
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "SessionToken": self.session_token,
            "Expiration": isoformat(self.expiration),
        }


def new_access_key_id() -> str:
    return ACCESS_KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(14))


class MasterKey:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("master key must be at least 32 bytes")
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path) -> MasterKey:
        """Read the key file, creating it (0600, 32 random bytes) when absent."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        return cls(path.read_bytes())

    def _mac(self, purpose: bytes, *parts: str) -> bytes:
        message = purpose + b"\0" + b"\0".join(p.encode() for p in parts)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for another use (e.g. the console's cookie signing), independent of
        every grant secret because the purpose is part of the MAC input."""
        return self._mac(b"derived-key", purpose)

    def secret_access_key(self, access_key_id: str, grant_id: str) -> str:
        return base64.b64encode(self._mac(b"grant-secret", access_key_id, grant_id)).decode()[:40]

    def session_token(self, access_key_id: str, grant_id: str) -> str:
        mac = base64.urlsafe_b64encode(self._mac(b"grant-session", access_key_id, grant_id))
        return f"jitgate/{grant_id}/{mac.decode().rstrip('=')}"

    def credentials(self, access_key_id: str, grant_id: str, expires_at: datetime) -> Credentials:
        return Credentials(
            access_key_id,
            self.secret_access_key(access_key_id, grant_id),
            self.session_token(access_key_id, grant_id),
            expires_at,
        )

    def session_token_matches(self, token: str, access_key_id: str, grant_id: str) -> bool:
        return hmac.compare_digest(
            token.encode(), self.session_token(access_key_id, grant_id).encode()
        )
