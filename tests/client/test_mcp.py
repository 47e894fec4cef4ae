"""``jitgate mcp`` driven by the mcp SDK's own client, over stdio and streamable HTTP, against a
real stack; and the rules for what a model may see of an AWS result."""

from __future__ import annotations

import base64
import datetime
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from client.conftest import OBJECT_ARN, SECRET_ARN, Stack
from jitgate.mcp.results import REDACTED, model_view
from jitgate.sandbox.moto import free_port

BIN = Path(sys.executable).parent
TOOLS = {
    "explain_scope",
    "request_grant",
    "get_grant",
    "wait_for_approval",
    "list_grants",
    "revoke_grant",
    "call_aws",
}


# --- what a model sees of a result ---------------------------------------------------------
def test_secret_values_are_marked_when_the_grant_covers_them() -> None:
    result = {"Name": "prod/db", "SecretString": '{"password":"hunter2"}', "ResponseMetadata": {}}
    view = model_view("secretsmanager", "GetSecretValue", result, ["secretsmanager:GetSecretValue"])
    assert view["SecretString"] == {
        "jitgate_secret": True,
        "value": '{"password":"hunter2"}',
        "covered_by": "secretsmanager:GetSecretValue",
    }
    assert view["_jitgate"]["secret_fields"] == ["SecretString"]
    assert "ResponseMetadata" not in view


def test_secret_values_are_withheld_when_the_grant_does_not_cover_them() -> None:
    result = {
        "Parameters": [
            {"Name": "a", "Type": "SecureString", "Value": "s3cr3t"},
            {"Name": "b", "Type": "String", "Value": "plain"},
        ]
    }
    view = model_view("ssm", "GetParameters", result, ["ssm:GetParameter"])
    assert "s3cr3t" not in json.dumps(view)
    assert view["Parameters"][0]["Value"].startswith("[withheld")
    assert view["Parameters"][1]["Value"] == "plain"  # not a secret


def test_credentials_never_pass_and_bodies_are_decoded() -> None:
    result = {
        "Credentials": {
            "AccessKeyId": "ASIA...",
            "SecretAccessKey": "wJalr",
            "SessionToken": "FwoG",
            "Expiration": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        },
        "Body": io.BytesIO(b"hello"),
        "Blob": b"\xff\x00",
    }
    view = model_view("sts", "AssumeRole", result, ["sts:AssumeRole"])
    assert view["Credentials"]["SecretAccessKey"] == REDACTED
    assert view["Credentials"]["SessionToken"] == REDACTED
    assert view["Credentials"]["Expiration"] == "2026-01-01T00:00:00+00:00"
    assert view["Body"] == "hello"
    assert view["Blob"] == {"base64": base64.b64encode(b"\xff\x00").decode()}
    big = model_view("s3", "GetObject", {"Body": io.BytesIO(b"x" * 50)}, [], max_bytes=10)
    assert big["Body"] == "x" * 10 and "cut at 10 bytes" in big["_jitgate"]["notes"][0]


# --- the server, through the mcp SDK's client ----------------------------------------------
def agent_env(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JITGATE_"))}
    env.update(JITGATE_URL=stack.url, JITGATE_TOKEN=stack.token, AWS_EC2_METADATA_DISABLED="true")
    return env


def texts(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def grant_secrets(stack: Stack) -> list[str]:
    """Every credential jitgate ever issued in this stack (none may reach the model)."""
    out: list[str] = []
    for grant in stack.core.grants.list(stack.approver, limit=1000):
        if grant.access_key_id and grant.expires_at:
            creds = stack.core.master_key.credentials(
                grant.access_key_id, grant.id, grant.expires_at
            )
            out += [creds.secret_access_key, creds.session_token]
    return out


async def session_story(client: Any, stack: Stack) -> list[str]:
    """The worked example as a model would drive it; returns every result's JSON."""
    seen: list[str] = []

    async def call(name: str, args: dict[str, Any]) -> Any:
        result = await client.call_tool(name, args)
        seen.append(json.dumps(result.structured_content) + texts(result))
        return result

    tools = await client.list_tools()
    assert {t.name for t in tools.tools} == TOOLS

    planned = await call(
        "explain_scope",
        {
            "service": "s3",
            "operation": "GetObject",
            "params": {"Bucket": "reports", "Key": "2026/q3.csv"},
        },
    )
    plan = planned.structured_content
    assert plan["actions"] == ["s3:GetObject"] and plan["resources"] == [OBJECT_ARN]
    assert plan["policy_route"] == "auto"

    granted = await call(
        "request_grant",
        {
            "actions": plan["actions"],
            "resources": plan["resources"],
            "reason": "summarise Q3",
            "minutes": 5,
        },
    )
    grant = granted.structured_content
    assert grant["status"] == "active" and "credentials" not in grant
    read = await call(
        "call_aws",
        {
            "grant_id": grant["grant_id"],
            "service": "s3",
            "operation": "get_object",
            "params": {"Bucket": "reports", "Key": "2026/q3.csv"},
        },
    )
    assert not read.is_error
    assert read.structured_content["result"]["Body"].startswith("region,revenue")
    outside = await call(
        "call_aws",
        {
            "grant_id": grant["grant_id"],
            "service": "s3",
            "operation": "GetObject",
            "params": {"Bucket": "reports", "Key": "2026/payroll.csv"},
        },
    )
    assert outside.is_error
    assert f"grant {grant['grant_id']} does not allow s3:GetObject" in texts(outside)

    # A secret needs a person: pending, with the link; then approved; then read, marked.
    asked = await call(
        "request_grant",
        {
            "actions": ["secretsmanager:GetSecretValue"],
            "resources": [SECRET_ARN],
            "reason": "rotate the db password",
        },
    )
    pending = asked.structured_content
    assert pending["status"] == "pending"
    assert pending["approval"]["console_url"].endswith(f"/ui/grants/{pending['grant_id']}")
    assert pending["approval"]["cli"] == f"jitgate grants approve {pending['grant_id']}"
    early = await call(
        "call_aws",
        {
            "grant_id": pending["grant_id"],
            "service": "secretsmanager",
            "operation": "GetSecretValue",
            "params": {"SecretId": "prod/db"},
        },
    )
    assert early.is_error and "pending" in texts(early)
    still = await call(
        "wait_for_approval", {"grant_id": pending["grant_id"], "timeout_seconds": 0.2}
    )
    assert still.structured_content["status"] == "pending"
    stack.approve_next()
    approved = await call(
        "wait_for_approval", {"grant_id": pending["grant_id"], "timeout_seconds": 20}
    )
    assert approved.structured_content["status"] == "active"
    secret = await call(
        "call_aws",
        {
            "grant_id": pending["grant_id"],
            "service": "secretsmanager",
            "operation": "GetSecretValue",
            "params": {"SecretId": "prod/db"},
        },
    )
    assert not secret.is_error, texts(secret)
    value = secret.structured_content["result"]["SecretString"]
    assert value == {
        "jitgate_secret": True,
        "value": '{"password":"hunter2"}',
        "covered_by": "secretsmanager:GetSecretValue",
    }

    listed = await call("list_grants", {"status": "active"})
    assert {g["grant_id"] for g in listed.structured_content["grants"]} == {
        grant["grant_id"],
        pending["grant_id"],
    }
    revoked = await call("revoke_grant", {"grant_id": grant["grant_id"], "reason": "done"})
    assert revoked.structured_content["status"] == "revoked"
    shown = await call("get_grant", {"grant_id": grant["grant_id"]})
    assert shown.structured_content["status"] == "revoked"
    after = await call(
        "call_aws",
        {
            "grant_id": grant["grant_id"],
            "service": "s3",
            "operation": "GetObject",
            "params": {"Bucket": "reports", "Key": "2026/q3.csv"},
        },
    )
    assert after.is_error and "revoked" in texts(after)
    return seen


def assert_no_credentials(seen: list[str], stack: Stack) -> None:
    everything = "\n".join(seen)
    secrets = grant_secrets(stack)
    assert len(secrets) >= 4
    for value in secrets:
        assert value not in everything
    assert "SecretAccessKey" not in everything and "SessionToken" not in everything


@pytest.mark.slow
def test_mcp_over_stdio(stack: Stack) -> None:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=str(BIN / "jitgate"), args=["mcp"], env=agent_env(stack))

    async def main() -> list[str]:
        async with Client(params, read_timeout_seconds=60) as client:
            return await session_story(client, stack)

    seen = anyio.run(main)
    assert_no_credentials(seen, stack)


@pytest.fixture
def mcp_http(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """``jitgate mcp --http`` as a subprocess; yields its MCP URL."""
    port = free_port()
    log = tmp_path / "mcp.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(BIN / "jitgate"), "mcp", "--http", f"127.0.0.1:{port}"],
            env=agent_env(stack),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.slow
def test_mcp_over_streamable_http_requires_the_agents_token(stack: Stack, mcp_http: str) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    refused = httpx.post(mcp_http, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert refused.status_code == 401
    wrong = httpx.post(mcp_http, json={}, headers={"authorization": "Bearer jga_wrong"})
    assert wrong.status_code == 401

    async def main() -> list[str]:
        headers = {"authorization": f"Bearer {stack.token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(
                streamable_http_client(mcp_http, http_client=http), read_timeout_seconds=60
            ) as client,
        ):
            return await session_story(client, stack)

    seen = anyio.run(main)
    assert_no_credentials(seen, stack)
