"""Console sessions, CSRF tokens and the sign-in rate limit.

A session is a row keyed by sha256 of a random id; the browser holds the id in a signed,
HttpOnly, SameSite=Lax cookie scoped to /ui. Signing in always makes a new session (a session
id planted before sign-in never becomes signed in), signing out deletes it, and disabling a
person or changing their password deletes all of theirs. Each session has its own CSRF token,
which every form posts back. Before sign-in, a separate signed "pre-session" cookie carries the
sign-in form's CSRF secret and the state of an OIDC sign-in in flight.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from jitgate.clock import Clock
from jitgate.identity.service import Principal
from jitgate.store.db import Database
from jitgate.store.schema import console_sessions, signin_throttle, users

SESSION_COOKIE = "jitgate_session"
PRE_COOKIE = "jitgate_pre"
COOKIE_PATH = "/ui"


@dataclass(frozen=True)
class SessionSettings:
    lifetime: timedelta = timedelta(hours=12)  # absolute
    idle: timedelta = timedelta(hours=1)  # since the last request
    user_failures: int = 5  # failed sign-ins per account within the window, then locked
    address_failures: int = 30  # failed sign-ins per client address within the window
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)


def session_settings(raw: dict[str, Any]) -> SessionSettings:
    table = raw.get("console", {}) or {}
    return SessionSettings(
        lifetime=timedelta(hours=float(table.get("session_hours", 12))),
        idle=timedelta(minutes=float(table.get("idle_minutes", 60))),
        user_failures=int(table.get("signin_failures_per_account", 5)),
        address_failures=int(table.get("signin_failures_per_address", 30)),
    )


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf_token: str
    method: str
    created_at: datetime
    expires_at: datetime


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Sessions:
    def __init__(self, db: Database, clock: Clock, key: bytes, settings: SessionSettings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        sha256 = {"digest_method": hashlib.sha256}
        self._session_signer = URLSafeTimedSerializer(
            key, salt="jitgate.console.session", signer_kwargs=sha256
        )
        self._pre_signer = URLSafeTimedSerializer(
            key, salt="jitgate.console.pre", signer_kwargs=sha256
        )
        self._csrf_key = hmac.new(key, b"jitgate.console.login-csrf", hashlib.sha256).digest()

    # --- signed-in sessions ---------------------------------------------------------------
    def create(
        self, principal: Principal, method: str, replaces: str | None = None
    ) -> tuple[str, Session]:
        """A new session for ``principal``; returns the cookie value and the session. The
        session named by ``replaces`` (the cookie the browser sent, if any) is deleted."""
        now = self.clock.now()
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = now + self.settings.lifetime
        with self.db.write() as connection:
            old = self._session_id(replaces) if replaces else None
            if old is not None:
                connection.execute(
                    delete(console_sessions).where(console_sessions.c.id_hash == _digest(old))
                )
            connection.execute(
                insert(console_sessions).values(
                    id_hash=_digest(session_id),
                    user=principal.name,
                    csrf_token=csrf,
                    method=method,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires,
                )
            )
            # Expired sessions of anyone are cleaned up as a side effect of sign-ins.
            connection.execute(delete(console_sessions).where(console_sessions.c.expires_at <= now))
        return self._session_signer.dumps(session_id), Session(
            principal, csrf, method, now, expires
        )

    def _session_id(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            value = self._session_signer.loads(
                cookie, max_age=int(self.settings.lifetime.total_seconds()) + 60
            )
        except BadSignature:
            return None
        return value if isinstance(value, str) else None

    def load(self, cookie: str | None) -> Session | None:
        """The live session behind a cookie, with the person's role and groups as stored now."""
        session_id = self._session_id(cookie)
        if session_id is None:
            return None
        now = self.clock.now()
        digest = _digest(session_id)
        with self.db.read() as connection:
            row = connection.execute(
                select(
                    console_sessions,
                    users.c.role,
                    users.c.groups,
                    users.c.disabled,
                )
                .join(users, users.c.name == console_sessions.c.user)
                .where(console_sessions.c.id_hash == digest)
            ).first()
        if row is None or row.disabled:
            return None
        if now >= row.expires_at or now - row.last_seen_at >= self.settings.idle:
            self.end(cookie)
            return None
        if now - row.last_seen_at > timedelta(minutes=1):
            with self.db.write() as connection:
                connection.execute(
                    update(console_sessions)
                    .where(console_sessions.c.id_hash == digest)
                    .values(last_seen_at=now)
                )
        principal = Principal("user", row.user, row.role, tuple(row.groups or ()))
        return Session(principal, row.csrf_token, row.method, row.created_at, row.expires_at)

    def end(self, cookie: str | None) -> None:
        session_id = self._session_id(cookie)
        if session_id is None:
            return
        with self.db.write() as connection:
            connection.execute(
                delete(console_sessions).where(console_sessions.c.id_hash == _digest(session_id))
            )

    # --- before sign-in -------------------------------------------------------------------
    def new_pre(self, oidc: dict[str, str] | None = None) -> str:
        return self._pre_signer.dumps({"n": secrets.token_urlsafe(24), "oidc": oidc})

    def read_pre(self, cookie: str | None, max_age: int = 3600) -> dict[str, Any] | None:
        if not cookie:
            return None
        try:
            value = self._pre_signer.loads(cookie, max_age=max_age)
        except BadSignature:
            return None
        return value if isinstance(value, dict) and isinstance(value.get("n"), str) else None

    def login_csrf(self, pre: dict[str, Any]) -> str:
        return hmac.new(self._csrf_key, pre["n"].encode(), hashlib.sha256).hexdigest()

    def with_oidc(self, pre: dict[str, Any], oidc: dict[str, str] | None) -> str:
        return self._pre_signer.dumps({"n": pre["n"], "oidc": oidc})


def tokens_match(expected: str, given: object) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(expected, given)


class Throttle:
    """Failed sign-ins counted per key ("user:NAME", "addr:IP") in the database, so the limit
    holds across every process sharing it."""

    def __init__(self, db: Database, clock: Clock, settings: SessionSettings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings

    def locked_for(self, *keys: str) -> int:
        """Seconds until every given key may try again (0 when none is locked)."""
        now = self.clock.now()
        with self.db.read() as connection:
            rows = connection.execute(
                select(signin_throttle.c.locked_until).where(signin_throttle.c.key.in_(keys))
            ).all()
        waits = [(r.locked_until - now).total_seconds() for r in rows if r.locked_until]
        return max([0, *[int(w) + 1 for w in waits if w > 0]])

    def failed(self, key: str, limit: int) -> bool:
        """Count a failure; True when the key is now locked."""
        for _attempt in range(3):
            try:
                return self._failed(key, limit)
            except IntegrityError:
                continue  # a concurrent first failure inserted the row: count again
        return True

    def _failed(self, key: str, limit: int) -> bool:
        now = self.clock.now()
        with self.db.write() as connection:
            row = connection.execute(
                select(signin_throttle).where(signin_throttle.c.key == key).with_for_update()
            ).first()
            if row is None:
                failures = 1
                connection.execute(
                    insert(signin_throttle).values(
                        key=key, failures=1, window_start=now, locked_until=None
                    )
                )
            elif now - row.window_start >= self.settings.window:
                failures = 1
                connection.execute(
                    update(signin_throttle)
                    .where(signin_throttle.c.key == key)
                    .values(failures=1, window_start=now, locked_until=None)
                )
            else:
                failures = row.failures + 1
                connection.execute(
                    update(signin_throttle)
                    .where(signin_throttle.c.key == key)
                    .values(failures=failures)
                )
            if failures >= limit:
                connection.execute(
                    update(signin_throttle)
                    .where(signin_throttle.c.key == key)
                    .values(locked_until=now + self.settings.lockout)
                )
                return True
        return False

    def succeeded(self, key: str) -> None:
        with self.db.write() as connection:
            connection.execute(delete(signin_throttle).where(signin_throttle.c.key == key))
