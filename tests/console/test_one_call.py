"""One exact call, through the real AWS endpoint (moto in auth mode): once approved, the grant
permits that call once and then closes; two racing calls can never both pass."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from jitgate.identity.service import LOCAL_ADMIN

from .conftest import Stack, start_stack

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(moto_server: Any, tmp_path: Path) -> Iterator[Stack]:
    with start_stack(moto_server, tmp_path / "home") as running:
        yield running


def one_call_grant(stack: Stack, action: str, arn: str, operation: str | None) -> dict[str, Any]:
    core = stack.core
    name = f"bot-{uuid.uuid4().hex[:8]}"
    _, token = core.identity.create_agent(name)
    body: dict[str, Any] = {
        "actions": [action],
        "resources": [arn],
        "reason": "one call",
        "one_call": True,
    }
    if operation:
        body["operation"] = operation
    created = httpx.post(
        f"{stack.control_url}/v1/grants",
        headers={"authorization": f"Bearer {token}"},
        json=body,
        timeout=10,
    ).json()
    assert created["status"] == "pending", created
    core.identity.create_user(f"ok-{name}", "approver")
    core.grants.approve(
        core.identity.user_principal(f"ok-{name}"),
        created["id"],
        fingerprint=created["fingerprint"],
    )
    active = httpx.get(
        f"{stack.control_url}/v1/grants/{created['id']}",
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert active["status"] == "active"
    return active


def test_the_one_call_passes_once_then_the_grant_is_closed(stack: Stack) -> None:
    key = f"one-call/{uuid.uuid4().hex}.csv"
    stack.moto.client("s3").put_object(Bucket="reports", Key=key, Body=b"stale")
    grant = one_call_grant(stack, "s3:DeleteObject", f"arn:aws:s3:::reports/{key}", "DeleteObject")
    s3 = stack.s3(grant["credentials"])
    # Asking who it is (answered by jitgate itself, no scope needed) does not use up the call.
    import boto3

    credentials = grant["credentials"]
    sts = boto3.session.Session().client(
        "sts",
        endpoint_url=stack.aws_url,
        region_name="us-east-1",
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    assert sts.get_caller_identity()["Arn"].endswith("/" + grant["agent"])
    assert stack.core.grants.get(LOCAL_ADMIN, grant["id"])[0].status == "active"
    s3.delete_object(Bucket="reports", Key=key)
    with pytest.raises(ClientError) as again:
        s3.delete_object(Bucket="reports", Key=key)
    assert again.value.response["Error"]["Code"] == "AccessDenied"
    assert "permitted one call and it has been made" in again.value.response["Error"]["Message"]
    closed = stack.core.grants.get(LOCAL_ADMIN, grant["id"])[0]
    assert (closed.status, closed.ended_by) == ("used", "jitgate")
    allowed = stack.core.audit.events(grant_id=grant["id"], types=["call.allowed"])
    assert [(e.data.get("operation"), e.data.get("one_call")) for e in allowed] == [
        ("GetCallerIdentity", None),
        ("DeleteObject", True),
    ]
    assert stack.core.audit.verify().ok


def test_another_operation_does_not_use_up_the_call(stack: Stack) -> None:
    key = f"one-call/{uuid.uuid4().hex}.csv"
    grant = one_call_grant(stack, "s3:PutObject", f"arn:aws:s3:::reports/{key}", "PutObject")
    s3 = stack.s3(grant["credentials"])
    with pytest.raises(ClientError) as wrong:
        s3.create_multipart_upload(Bucket="reports", Key=key)  # needs s3:PutObject too
    assert (
        "permits one PutObject call, not CreateMultipartUpload"
        in wrong.value.response["Error"]["Message"]
    )
    s3.put_object(Bucket="reports", Key=key, Body=b"the one")
    assert stack.core.grants.get(LOCAL_ADMIN, grant["id"])[0].status == "used"


def test_two_racing_calls_never_both_pass(stack: Stack) -> None:
    for _round in range(3):
        key = f"one-call/{uuid.uuid4().hex}.csv"
        grant = one_call_grant(stack, "s3:PutObject", f"arn:aws:s3:::reports/{key}", None)
        clients = [stack.s3(grant["credentials"]) for _ in range(4)]
        barrier = threading.Barrier(len(clients))
        results: list[str] = []

        def put(client: Any, body: bytes) -> None:
            barrier.wait()
            try:
                client.put_object(Bucket="reports", Key=key, Body=body)
                results.append("ok")
            except ClientError as exc:
                results.append(exc.response["Error"]["Code"])

        threads = [
            threading.Thread(target=put, args=(c, f"body {i}".encode()))
            for i, c in enumerate(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(results) == ["AccessDenied"] * 3 + ["ok"], results
        allowed = stack.core.audit.events(grant_id=grant["id"], types=["call.allowed"])
        assert len(allowed) == 1
