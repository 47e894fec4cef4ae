"""Telling approvers that a request waits: a generic signed webhook and a Slack incoming webhook.

Configured in ``jitgate.toml``::

    [notifications]
    console_url = "https://jitgate.example.com/ui"   # links point here
    attempts = 5                                     # per delivery, with exponential backoff
    backoff_seconds = 1.0

    [[notifications.webhook]]
    name = "pager"
    url = "https://hooks.example.com/jitgate"
    secret_env = "JITGATE_WEBHOOK_SECRET"            # or secret = "..."

    [[notifications.slack]]
    name = "security-approvals"
    webhook_url_env = "JITGATE_SLACK_WEBHOOK"        # or webhook_url = "https://hooks.slack.com/..."

Deliveries run on a small thread pool after the request is committed, so a slow or failing
channel never blocks a request and can never change a decision. Each delivery's outcome is one
audit event: ``notify.delivered`` or ``notify.failed`` (with the attempts and the last error).

The webhook body is JSON; ``X-Jitgate-Signature: sha256=<hex>`` is HMAC-SHA256 with the shared
secret over ``<X-Jitgate-Timestamp>.<body>``, so a receiver can check both origin and freshness
(see ``verify_signature``). ``X-Jitgate-Delivery`` is the same across retries of one delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from jitgate import __version__
from jitgate.audit.log import AuditLog, NewEvent
from jitgate.clock import Clock, isoformat
from jitgate.errors import InvalidRequest
from jitgate.policy.durations import format_duration

if TYPE_CHECKING:
    from jitgate.grants.service import Grant

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Jitgate-Signature"
TIMESTAMP_HEADER = "X-Jitgate-Timestamp"
DELIVERY_HEADER = "X-Jitgate-Delivery"
EVENT_HEADER = "X-Jitgate-Event"


@dataclass(frozen=True)
class Channel:
    kind: str  # "webhook" | "slack"
    name: str
    url: str
    secret: bytes | None = None  # webhooks only


@dataclass(frozen=True)
class NotifySettings:
    channels: tuple[Channel, ...]
    console_url: str
    attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    timeout_seconds: float = 5.0


def _value(table: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = table.get(key)
    if value is None and table.get(f"{key}_env"):
        value = os.environ.get(str(table[f"{key}_env"]))
        if value is None and required:
            raise InvalidRequest(
                f"{where}: {key}_env names {table[f'{key}_env']!r}, which is unset"
            )
    if value is None and required:
        raise InvalidRequest(f"{where}: needs {key} (or {key}_env)")
    return None if value is None else str(value)


def notify_settings(raw: Mapping[str, Any], default_console_url: str) -> NotifySettings:
    """The ``[notifications]`` part of jitgate.toml (no channels when it is absent)."""
    table = raw.get("notifications", {}) or {}
    channels: list[Channel] = []
    for index, hook in enumerate(table.get("webhook", []) or []):
        where = f"[[notifications.webhook]] #{index + 1}"
        url = _value(hook, "url", where)
        secret = _value(hook, "secret", where)
        assert url is not None and secret is not None
        if len(secret) < 16:
            raise InvalidRequest(f"{where}: the secret must be at least 16 characters")
        channels.append(
            Channel("webhook", str(hook.get("name", f"webhook-{index + 1}")), url, secret.encode())
        )
    for index, hook in enumerate(table.get("slack", []) or []):
        where = f"[[notifications.slack]] #{index + 1}"
        url = _value(hook, "webhook_url", where)
        assert url is not None
        channels.append(Channel("slack", str(hook.get("name", f"slack-{index + 1}")), url))
    for channel in channels:
        if not channel.url.startswith(("https://", "http://")):
            raise InvalidRequest(f"notification channel {channel.name!r}: url must be http(s)")
    try:
        attempts = int(table.get("attempts", 5))
        backoff = float(table.get("backoff_seconds", 1.0))
    except (TypeError, ValueError):
        raise InvalidRequest(
            "[notifications] attempts and backoff_seconds must be numbers"
        ) from None
    if not 1 <= attempts <= 20 or not 0 <= backoff <= 300:
        raise InvalidRequest("[notifications] attempts must be 1-20 and backoff_seconds 0-300")
    console_url = str(table.get("console_url") or default_console_url).rstrip("/")
    return NotifySettings(tuple(channels), console_url, attempts, backoff)


# --- signatures ---------------------------------------------------------------------------------
def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance: float = 300,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# --- messages -----------------------------------------------------------------------------------
def grant_summary(grant: Grant, console_url: str) -> dict[str, Any]:
    decision = grant.decision
    return {
        "id": grant.id,
        "agent": grant.agent,
        "status": grant.status,
        "actions": list(grant.actions),
        "resources": list(grant.resources),
        "duration_seconds": grant.duration_seconds,
        "reason": grant.reason,
        "risk": grant.risk,
        "one_call": grant.one_call,
        "route": decision.get("route"),
        "policies": decision.get("policies", []),
        "approvals_required": grant.approvals_required,
        "approver_groups": decision.get("approver_groups", []),
        "requested_by": grant.requested_by,
        "requested_at": isoformat(grant.requested_at),
        "lapse_at": isoformat(grant.lapse_at) if grant.lapse_at else None,
        "fingerprint": grant.fingerprint,
        "url": f"{console_url}/grants/{grant.id}",
    }


def webhook_body(grant: Grant, console_url: str, delivery: str, now: datetime) -> bytes:
    payload = {
        "type": "grant.pending",
        "delivery": delivery,
        "sent_at": isoformat(now),
        "grant": grant_summary(grant, console_url),
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def _slack_escape(text: str) -> str:
    """Slack mrkdwn control characters; a reason written by an agent must not become a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(grant: Grant, console_url: str) -> bytes:
    summary = grant_summary(grant, console_url)
    e = _slack_escape
    scope = "\n".join(f"• `{e(a)}` on `{e(r)}`" for a in grant.actions for r in grant.resources)
    what = "one exact call" if grant.one_call else f"for {format_duration(grant.duration_seconds)}"
    if grant.one_call and grant.one_call.get("operation"):
        what += f" ({e(str(grant.one_call['operation']))})"
    needs = f"{grant.approvals_required} approval{'s' if grant.approvals_required != 1 else ''}"
    if summary["approver_groups"]:
        needs += f" from {', '.join(e(g) for g in summary['approver_groups'])}"
    text = (
        f"*{e(grant.agent)}* requests {what} — risk *{e(str(grant.risk or '?')).upper()}*\n"
        f"{scope}\n"
        f"> {e(grant.reason)}\n"
        f"Needs {needs} · policy {e(', '.join(summary['policies']) or '-')} · "
        f"lapses {e(summary['lapse_at'] or '-')}\n"
        f"<{summary['url']}|Review {grant.id} in jitgate>"
    )
    fallback = (
        f"jitgate: {grant.agent} requests {', '.join(grant.actions)} — review {summary['url']}"
    )
    payload = {
        "text": fallback,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }
    return json.dumps(payload).encode()


# --- delivery -----------------------------------------------------------------------------------
class DeliveryFailed(Exception):
    def __init__(self, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


class Notifier:
    """Sends pending-request notifications in the background and records each outcome."""

    def __init__(
        self,
        settings: NotifySettings,
        audit: AuditLog,
        clock: Clock,
        *,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        workers: int = 4,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.clock = clock
        self.sleep = sleep
        self._client = httpx.Client(
            timeout=settings.timeout_seconds,
            transport=transport,
            headers={"user-agent": f"jitgate/{__version__}"},
            follow_redirects=False,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jitgate-notify")
        self._lock = threading.Lock()
        self._closed = False
        self._pending: set[Any] = set()

    @property
    def channels(self) -> Sequence[Channel]:
        return self.settings.channels

    def pending(self, grant: Grant) -> None:
        """Queue one delivery per channel for a new pending grant; returns at once."""
        with self._lock:
            if self._closed:
                return
            for channel in self.settings.channels:
                future = self._pool.submit(self._deliver, channel, grant)
                self._pending.add(future)
                future.add_done_callback(self._pending.discard)

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for queued deliveries (tests, and the CLI before it exits)."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
        self.wait(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _deliver(self, channel: Channel, grant: Grant) -> None:
        delivery = uuid.uuid4().hex
        attempts = 0
        error = ""
        status: int | None = None
        try:
            while attempts < self.settings.attempts:
                attempts += 1
                try:
                    status = self._send(channel, grant, delivery)
                    self._record(
                        channel, grant, "notify.delivered", delivery, attempts, status=status
                    )
                    return
                except DeliveryFailed as exc:
                    error = str(exc)
                    if not exc.retryable or attempts >= self.settings.attempts:
                        break
                    delay = min(
                        self.settings.max_backoff_seconds,
                        self.settings.backoff_seconds * (2 ** (attempts - 1)),
                    )
                    delay = delay * (0.5 + random.random() / 2)  # jitter: retries do not align
                    if exc.retry_after is not None:
                        delay = min(self.settings.max_backoff_seconds, max(delay, exc.retry_after))
                    self.sleep(delay)
            self._record(channel, grant, "notify.failed", delivery, attempts, error=error)
        except Exception:  # never let a notification failure escape the worker
            log.exception("notification %s on channel %s failed", delivery, channel.name)

    def _send(self, channel: Channel, grant: Grant, delivery: str) -> int:
        now = self.clock.now()
        headers = {"content-type": "application/json"}
        if channel.kind == "slack":
            body = slack_body(grant, self.settings.console_url)
        else:
            body = webhook_body(grant, self.settings.console_url, delivery, now)
            timestamp = str(int(now.timestamp()))
            assert channel.secret is not None
            headers.update(
                {
                    TIMESTAMP_HEADER: timestamp,
                    SIGNATURE_HEADER: sign(channel.secret, timestamp, body),
                    DELIVERY_HEADER: delivery,
                    EVENT_HEADER: "grant.pending",
                }
            )
        try:
            response = self._client.post(channel.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            # A webhook URL is a secret (Slack's carries its token): never in the message.
            message = f"{type(exc).__name__}: {exc}".replace(channel.url, "<webhook url>")
            raise DeliveryFailed(message[:300], retryable=True) from None
        if 200 <= response.status_code < 300:
            return response.status_code
        retryable = response.status_code in (408, 425, 429) or response.status_code >= 500
        raise DeliveryFailed(
            f"HTTP {response.status_code}: {response.text[:200]}",
            retryable=retryable,
            retry_after=_retry_after(response),
        )

    def _record(
        self,
        channel: Channel,
        grant: Grant,
        event_type: str,
        delivery: str,
        attempts: int,
        *,
        status: int | None = None,
        error: str | None = None,
    ) -> None:
        data: dict[str, Any] = {
            "channel": channel.name,
            "kind": channel.kind,
            "delivery": delivery,
            "attempts": attempts,
        }
        if status is not None:
            data["status"] = status
        if error is not None:
            data["error"] = error
        self.audit.record(
            self.clock.now(),
            NewEvent(event_type, "jitgate", agent=grant.agent, grant_id=grant.id, data=data),
        )


def console_base_url(settings: Any) -> str:
    """Where people reach the console: ``[console] public_url``, else the control listener."""
    public = (settings.raw.get("console", {}) or {}).get("public_url")
    if public:
        return str(public).rstrip("/")
    host, port = settings.control_listen
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/ui"


def notifier_for(core: Any) -> Notifier | None:
    """The notifier for a composed jitgate, or None when no channel is configured."""
    settings = notify_settings(core.settings.raw, console_base_url(core.settings))
    if not settings.channels:
        return None
    return Notifier(settings, core.audit, core.clock)
