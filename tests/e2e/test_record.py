"""Record before act: a call is forwarded only once its "allowed" event is durable, its outcome
follows, and the grant's session record lists every call, through the API and the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Callable

import httpx
import pytest
from botocore.exceptions import ClientError

from .conftest import JITGATE_CLI, OBJECT_ARN, Q3_TEXT, Stack, object_arn

pytestmark = pytest.mark.slow


def test_every_call_is_recorded_allowed_then_completed(stack: Stack) -> None:
    key = f"record/{uuid.uuid4().hex}"
    grant = stack.grant(["s3:GetObject", "s3:PutObject"], [OBJECT_ARN, object_arn(key)])
    s3 = stack.client("s3", grant.creds)
    body = b"r" * 3000

    get = s3.get_object(Bucket="reports", Key="2026/q3.csv")
    assert get["Body"].read().decode() == Q3_TEXT
    s3.put_object(Bucket="reports", Key=key, Body=body)
    with pytest.raises(ClientError):
        s3.get_object(Bucket="reports", Key="2026/payroll.csv")

    events = stack.wait_events(
        grant.id, lambda es: sum(e.type == "call.completed" for e in es) == 2
    )
    assert [(e.type, e.data.get("operation")) for e in events] == [
        ("call.allowed", "GetObject"),
        ("call.completed", "GetObject"),
        ("call.allowed", "PutObject"),
        ("call.completed", "PutObject"),
        ("call.denied", "GetObject"),
    ]
    allowed_get, done_get, allowed_put, done_put, denied = events
    assert allowed_get.seq < done_get.seq < allowed_put.seq < done_put.seq < denied.seq
    for allowed, done in ((allowed_get, done_get), (allowed_put, done_put)):
        assert allowed.data["request_id"] == done.data["request_id"]
        assert allowed.agent == done.agent == grant.agent.name
        assert done.data["status"] == 200
        assert done.data["duration_ms"] > 0
        assert done.data["upstream_request_id"]  # moto's own id for the forwarded call
    assert allowed_get.data["access"] == [{"action": "s3:GetObject", "arn": OBJECT_ARN}]
    assert allowed_put.data["access"] == [{"action": "s3:PutObject", "arn": object_arn(key)}]
    assert done_get.data["bytes_out"] == len(Q3_TEXT)
    assert done_put.data["bytes_in"] == len(body)
    assert get["ResponseMetadata"]["RequestId"] == done_get.data["upstream_request_id"]
    assert denied.data["code"] == "AccessDenied"
    assert stack.core.audit.verify().as_dict()["ok"] is True

    # The session record, through the control-plane API with the agent's own token ...
    listed = httpx.get(
        f"{stack.control_url}/v1/grants/{grant.id}/calls",
        headers={"authorization": f"Bearer {grant.agent.token}"},
        timeout=10,
    )
    assert listed.status_code == 200, listed.text
    assert [c["seq"] for c in listed.json()["calls"]] == [e.seq for e in events]
    assert listed.json()["calls"][1]["data"]["status"] == 200
    # ... not to another agent ...
    stranger = stack.agent("stranger")
    hidden = httpx.get(
        f"{stack.control_url}/v1/grants/{grant.id}/calls",
        headers={"authorization": f"Bearer {stranger.token}"},
        timeout=10,
    )
    assert hidden.status_code == 404
    # ... and through `jitgate grants show ID --json`.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(stack.home),
        "JITGATE_URL": stack.control_url,
        "JITGATE_TOKEN": grant.agent.token,
    }
    shown = subprocess.run(
        [JITGATE_CLI, "grants", "show", grant.id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["id"] == grant.id
    assert [c["seq"] for c in document["calls"]] == [e.seq for e in events]
    assert [c["type"] for c in document["calls"]][-1] == "call.denied"


def test_unwritable_audit_log_means_503_and_nothing_forwarded(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    key = f"record/{uuid.uuid4().hex}"
    grant = stack.grant(["s3:PutObject", "s3:GetObject"], [object_arn(key), OBJECT_ARN])
    s3 = stack.client("s3", grant.creds)
    database = stack.home / "jitgate.db"

    with sqlite3.connect(database) as connection:  # another process's view of the file
        connection.execute("ALTER TABLE audit_events RENAME TO audit_events_away")
    try:
        with pytest.raises(ClientError) as excinfo:
            s3.put_object(Bucket="reports", Key=key, Body=b"must not land")
        response = excinfo.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert response["Error"]["Code"] == "ServiceUnavailable"
        assert "audit" in response["Error"]["Message"]
        with pytest.raises(ClientError) as excinfo:
            s3.get_object(Bucket="reports", Key="2026/q3.csv")
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    finally:
        with sqlite3.connect(database) as connection:
            connection.execute("ALTER TABLE audit_events_away RENAME TO audit_events")
    assert stack.direct("s3").list_objects_v2(Bucket="reports", Prefix=key)["KeyCount"] == 0

    # With the log back, the same call goes through: it was the log that stopped it.
    s3.put_object(Bucket="reports", Key=key, Body=b"now it lands")
    stored = stack.direct("s3").get_object(Bucket="reports", Key=key)["Body"].read()
    assert stored == b"now it lands"
    assert stack.core.audit.verify().as_dict()["ok"] is True
