"""End to end against a real server (uvicorn and the sweeper in a thread, the system clock)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from typer.testing import CliRunner

import jitgate.cli as cli
from conftest import OBJECT_ARN, LiveServer, bearer, wait_for
from jitgate.api.app import MAX_BODY
from jitgate.clock import parse_iso

pytestmark = pytest.mark.slow


def test_a_one_second_grant_expires_and_is_recorded_within_two_seconds(
    live_server: LiveServer,
) -> None:
    core = live_server.core
    _, token = core.identity.create_agent("agent-1")
    with httpx.Client(base_url=live_server.url, headers=bearer(token), timeout=10) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        response = client.post(
            "/v1/grants",
            json={
                "actions": ["s3:GetObject"],
                "resources": [OBJECT_ARN],
                "duration_seconds": 1,
                "reason": "e2e",
            },
        )
        assert response.status_code == 201, response.text
        grant = response.json()
        assert grant["status"] == "active"
        assert grant["credentials"]["AccessKeyId"]
        expires_at = parse_iso(grant["expires_at"])

        def expired_event() -> object:
            events = core.audit.events(grant_id=grant["id"], types=["grant.expired"])
            return events and (events, datetime.now(UTC))

        found = wait_for(expired_event, timeout=5, interval=0.02)
        assert found, "no grant.expired event within 5 s"
        events, seen_at = found
        assert len(events) == 1
        assert seen_at - expires_at <= timedelta(seconds=2)
        assert parse_iso(events[0].data["at"]) == expires_at

        after = client.get(f"/v1/grants/{grant['id']}").json()
        assert after["status"] == "expired"
        assert "credentials" not in after
    assert core.audit.verify().ok


def test_oversized_chunked_body_over_real_http(live_server: LiveServer) -> None:
    core = live_server.core
    _, token = core.identity.create_agent("agent-1")

    def body() -> Iterator[bytes]:  # a generator: sent chunked, without Content-Length
        yield (
            b'{"actions": ["s3:GetObject"], "resources": ["'
            + OBJECT_ARN.encode()
            + b'"], "reason": "'
        )
        for _ in range(MAX_BODY // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    with httpx.Client(base_url=live_server.url, headers=bearer(token), timeout=10) as client:
        response = client.post("/v1/grants", content=body())
    assert response.status_code == 413
    assert response.json() == {
        "error": "body_too_large",
        "message": f"request body is larger than {MAX_BODY} bytes",
    }
    assert [e.type for e in core.audit.events()][-1] == "grant.refused"


def test_cli_against_a_running_server(live_server: LiveServer) -> None:
    core = live_server.core
    _, admin = core.identity.create_user("admin-1", "admin")
    runner = CliRunner(env={"JITGATE_URL": live_server.url})

    def jg(*args: str, token: str, code: int = 0) -> object:
        result = runner.invoke(cli.app, [*args, "--token", token])
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return json.loads(result.stdout) if "--json" in args and code == 0 else result

    created = jg("agents", "create", "bot", "--json", token=admin)
    agent = created["token"]  # type: ignore[index]
    grant = jg(
        "grants", "request", "-a", "s3:GetObject", "-r", OBJECT_ARN, "--reason", "remote", "--json",
        token=agent,
    )  # fmt: skip
    assert grant["status"] == "active"  # type: ignore[index]
    assert set(grant["credentials"]) == {
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    }  # type: ignore[index]
    listed = jg("grants", "list", "--json", token=admin)
    assert [g["id"] for g in listed] == [grant["id"]]  # type: ignore[index]
    pending = jg(
        "grants", "request", "-a", "s3:PutObject", "-r", OBJECT_ARN, "--reason", "remote", "--json",
        token=agent,
    )  # fmt: skip
    approved = jg("grants", "approve", pending["id"], "--json", token=admin)  # type: ignore[index]
    assert approved["status"] == "active"  # type: ignore[index]
    shown = jg("grants", "show", pending["id"], "--json", token=agent)  # type: ignore[index]
    assert shown["credentials"]["AccessKeyId"]  # type: ignore[index]

    assert "audit chain intact" in jg("audit", "verify", token=admin).stdout  # type: ignore[union-attr]
    refused = jg("audit", "tail", token=agent, code=1)
    assert refused.stderr.splitlines() == ["error: agent tokens cannot use this endpoint"]  # type: ignore[union-attr]
    denied = jg("grants", "approve", pending["id"], token=agent, code=1)
    assert denied.stderr.splitlines() == ["error: agents cannot approve or deny grants"]  # type: ignore[union-attr]

    unreachable = CliRunner().invoke(
        cli.app, ["agents", "list", "--server", "http://127.0.0.1:9", "--token", admin]
    )
    assert unreachable.exit_code == 1
    assert unreachable.stderr.startswith("error: cannot reach jitgate at http://127.0.0.1:9")
    assert len(unreachable.stderr.splitlines()) == 1
