"""Notifications on pending requests: a signed generic webhook with retries and backoff, a Slack
incoming webhook, every outcome recorded, and a failing channel that changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import build_core
from jitgate.approvals import notify
from jitgate.clock import FakeClock
from jitgate.core import Jitgate
from jitgate.errors import InvalidRequest

from .conftest import READ, WRITE, request_grant

SECRET = "s3cret-webhook-key-0123456789"


@dataclass
class Receiver:
    """A real HTTP endpoint on loopback that records what it gets and answers as told."""

    statuses: list[int] = field(default_factory=list)  # answers in order; then 200
    delay: float = 0.0
    received: list[dict] = field(default_factory=list)
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), made.handler())
    made.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield made
    server.shutdown()
    server.server_close()


def configure(home: Path, receiver: Receiver, *, attempts: int = 4, slack: bool = True) -> None:
    config = home / "jitgate.toml"
    text = (
        config.read_text()
        + f"""
[console]
public_url = "https://jitgate.example.com/ui"

[notifications]
attempts = {attempts}
backoff_seconds = 0.01

[[notifications.webhook]]
name = "pager"
url = "{receiver.url}/hook"
secret = "{SECRET}"
"""
    )
    if slack:
        text += f"""
[[notifications.slack]]
name = "sec-approvals"
webhook_url = "{receiver.url}/slack"
"""
    config.write_text(text)


@pytest.fixture
def notified(
    home: Path, database_url: str, clock: FakeClock, receiver: Receiver
) -> Iterator[Jitgate]:
    configure(home, receiver)
    core = build_core(home, database_url, clock)
    yield core
    core.close()


def bot(core: Jitgate):
    _, token = core.identity.create_agent("bot")
    return core.identity.authenticate(token)


def outcomes(core: Jitgate, grant_id: str) -> list[dict]:
    return [
        {"type": e.type, **e.data}
        for e in core.audit.events(grant_id=grant_id, type_prefix="notify.")
    ]


def test_a_pending_request_notifies_every_channel(notified: Jitgate, receiver: Receiver) -> None:
    grant = request_grant(notified, bot(notified), reason="fix <the> typo & more")
    notified.notifier.wait()
    by_path = {r["path"]: r for r in receiver.received}
    assert set(by_path) == {"/hook", "/slack"}

    hook = by_path["/hook"]
    payload = json.loads(hook["body"])
    assert payload["type"] == "grant.pending"
    summary = payload["grant"]
    assert summary["id"] == grant.id and summary["agent"] == "bot"
    assert summary["actions"] == WRITE[0] and summary["resources"] == WRITE[1]
    assert summary["risk"] == "high" and summary["policies"] == ["writes-need-approval"]
    assert summary["fingerprint"] == grant.fingerprint
    assert summary["url"] == f"https://jitgate.example.com/ui/grants/{grant.id}"
    assert hook["headers"]["x-jitgate-event"] == "grant.pending"
    assert hook["headers"]["x-jitgate-delivery"] == payload["delivery"]

    slack = json.loads(by_path["/slack"]["body"])
    message = slack["blocks"][0]["text"]["text"]
    assert "*bot* requests for 5m" in message and "risk *HIGH*" in message
    assert "`s3:PutObject` on `arn:aws:s3:::reports/2026/q3.csv`" in message
    assert (
        f"<https://jitgate.example.com/ui/grants/{grant.id}|Review {grant.id} in jitgate>"
        in message
    )
    assert "fix &lt;the&gt; typo &amp; more" in message  # an agent's text cannot make links
    assert slack["text"].startswith("jitgate: bot requests s3:PutObject")

    recorded = sorted(outcomes(notified, grant.id), key=lambda o: o["channel"])
    assert [(o["type"], o["channel"], o["kind"], o["attempts"], o["status"]) for o in recorded] == [
        ("notify.delivered", "pager", "webhook", 1, 200),
        ("notify.delivered", "sec-approvals", "slack", 1, 200),
    ]
    assert notified.audit.verify().ok


def test_webhook_signature_is_hmac_sha256_over_timestamp_and_body(
    notified: Jitgate, receiver: Receiver, clock: FakeClock
) -> None:
    request_grant(notified, bot(notified))
    notified.notifier.wait()
    hook = next(r for r in receiver.received if r["path"] == "/hook")
    timestamp = hook["headers"]["x-jitgate-timestamp"]
    assert timestamp == str(int(clock.now().timestamp()))
    # Computed here independently, as a receiver in any language would.
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + hook["body"], hashlib.sha256)
    assert hook["headers"]["x-jitgate-signature"] == "sha256=" + expected.hexdigest()
    now = clock.now().timestamp()
    assert notify.verify_signature(
        SECRET.encode(), timestamp, hook["body"], hook["headers"]["x-jitgate-signature"], now=now
    )
    # Any change to the body, the timestamp or the key fails; so does a stale timestamp.
    signature = hook["headers"]["x-jitgate-signature"]
    assert not notify.verify_signature(
        SECRET.encode(), timestamp, hook["body"] + b" ", signature, now=now
    )
    assert not notify.verify_signature(
        SECRET.encode(), str(int(timestamp) + 1), hook["body"], signature, now=now
    )
    assert not notify.verify_signature(
        b"another-secret-0123456", timestamp, hook["body"], signature, now=now
    )
    assert not notify.verify_signature(
        SECRET.encode(), timestamp, hook["body"], signature, now=now + 301
    )


def test_retries_with_backoff_then_delivered(notified: Jitgate, receiver: Receiver) -> None:
    receiver.statuses.extend([503, 500])  # whichever channel comes first gets these
    slept: list[float] = []
    notified.notifier.sleep = slept.append
    grant = request_grant(notified, bot(notified))
    notified.notifier.wait()
    attempts = {o["channel"]: o["attempts"] for o in outcomes(notified, grant.id)}
    assert sum(attempts.values()) == 4 and all(
        o["type"] == "notify.delivered" for o in outcomes(notified, grant.id)
    )
    assert len(slept) == 2 and all(0 < s <= 0.04 for s in slept)
    hooks = [r for r in receiver.received if r["path"] == "/hook"]
    assert len({r["headers"]["x-jitgate-delivery"] for r in hooks}) == 1  # retries keep the id


def test_backoff_grows_exponentially(receiver: Receiver, core: Jitgate) -> None:
    settings = notify.NotifySettings(
        (notify.Channel("webhook", "pager", receiver.url, SECRET.encode()),),
        "https://jitgate.example.com/ui",
        attempts=5,
        backoff_seconds=1.0,
    )
    slept: list[float] = []
    notifier = notify.Notifier(settings, core.audit, core.clock, sleep=slept.append)
    receiver.statuses.extend([500] * 5)
    _, token = core.identity.create_agent("bot")
    grant = request_grant(core, core.identity.authenticate(token))
    notifier.pending(grant)
    notifier.wait()
    notifier.close()
    assert len(slept) == 4
    for index, delay in enumerate(slept):
        assert 0.5 * 2**index <= delay <= 2**index  # base * 2^n with jitter in [50%, 100%]
    [failed] = outcomes(core, grant.id)
    assert failed["type"] == "notify.failed" and failed["attempts"] == 5
    assert failed["error"].startswith("HTTP 500")


def test_a_failing_channel_never_blocks_or_changes_a_decision(
    home: Path, database_url: str, clock: FakeClock, receiver: Receiver
) -> None:
    configure(home, receiver, attempts=2, slack=False)
    config = home / "jitgate.toml"
    # The webhook points at a port where nothing listens, and the receiver (as Slack) is slow.
    config.write_text(
        config.read_text().replace(f"{receiver.url}/hook", "http://127.0.0.1:9/nothing")
        + f'\n[[notifications.slack]]\nname = "slow"\nwebhook_url = "{receiver.url}/slack"\n'
    )
    receiver.delay = 1.5
    core = build_core(home, database_url, clock)
    try:
        agent = bot(core)
        started = time.monotonic()
        grant = request_grant(core, agent)
        assert time.monotonic() - started < 1.0  # the request did not wait for any channel
        assert grant.status == "pending"
        core.notifier.wait()
        recorded = {o["channel"]: o for o in outcomes(core, grant.id)}
        assert recorded["pager"]["type"] == "notify.failed"
        assert recorded["pager"]["attempts"] == 2
        assert "ConnectError" in recorded["pager"]["error"]
        assert recorded["slow"]["type"] == "notify.delivered"
        approver = core.identity.create_user("ann", "approver")[0]
        assert approver
        assert core.grants.approve(core.identity.user_principal("ann"), grant.id).status == "active"
    finally:
        core.close()


def test_client_errors_are_not_retried(notified: Jitgate, receiver: Receiver) -> None:
    receiver.statuses.extend([404, 404])
    grant = request_grant(notified, bot(notified))
    notified.notifier.wait()
    assert {(o["type"], o["attempts"]) for o in outcomes(notified, grant.id)} == {
        ("notify.failed", 1)
    }


def test_auto_approved_requests_notify_nobody(notified: Jitgate, receiver: Receiver) -> None:
    request_grant(notified, bot(notified), READ)
    notified.notifier.wait()
    assert receiver.received == []


def test_bad_notification_settings_fail_at_start(
    home: Path, database_url: str, clock: FakeClock
) -> None:
    config = home / "jitgate.toml"
    config.write_text(
        config.read_text()
        + '\n[[notifications.webhook]]\nurl = "https://x.example"\nsecret = "short"\n'
    )
    with pytest.raises(InvalidRequest, match="secret must be at least 16 characters"):
        build_core(home, database_url, clock)
    config.write_text(
        config.read_text().replace('secret = "short"', 'secret_env = "JITGATE_TEST_UNSET_SECRET"')
    )
    with pytest.raises(InvalidRequest, match="JITGATE_TEST_UNSET_SECRET"):
        build_core(home, database_url, clock)


def test_no_channels_no_notifier(core: Jitgate) -> None:
    assert core.notifier is None
