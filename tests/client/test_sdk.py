"""The agent SDK against a real stack: moto in auth mode behind jitgate, boto3 and aiobotocore as
the agent's AWS SDK."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError

from client.conftest import BUCKET_ARN, OBJECT_ARN, TABLE_ARN, Stack
from jitgate.client import (
    ApprovalTimeout,
    AsyncGate,
    AuthenticationFailed,
    Gate,
    GrantDenied,
    JitgateClientError,
    JitgateSession,
    JitgateUnavailable,
    RequestRefused,
)

pytestmark = pytest.mark.slow


def gate(stack: Stack, **kwargs: object) -> Gate:
    kwargs.setdefault("progress", None)
    return Gate(stack.url, stack.token, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def g(stack: Stack) -> Iterator[Gate]:
    """A Gate for the stack's agent, silent."""
    with gate(stack, poll_interval=0.05) as opened:
        yield opened


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def test_grant_yields_a_boto3_session_through_jitgate_and_revokes_on_exit(
    stack: Stack, g: Gate
) -> None:
    with g.grant(
        actions=["s3:GetObject"], resources=[OBJECT_ARN], minutes=5, reason="summarise Q3"
    ) as aws:
        assert isinstance(aws, boto3.Session)
        assert isinstance(aws, JitgateSession)
        assert aws.endpoint_url == stack.aws_url  # learnt from GET /v1/info
        s3 = aws.client("s3")
        assert s3.meta.endpoint_url == stack.aws_url
        body = s3.get_object(Bucket="reports", Key="2026/q3.csv")["Body"].read()
        assert body.startswith(b"region,revenue")
        with pytest.raises(ClientError) as denied:
            s3.get_object(Bucket="reports", Key="2026/payroll.csv")
        assert error_code(denied.value) in ("AccessDenied", "403")
        grant_id = aws.grant.id
        assert aws.grant.status == "active"
        assert "SecretAccessKey" not in repr(aws.grant) and "secret" not in repr(aws.grant)
    # On exit the grant is revoked: the same client no longer works.
    assert g.get(grant_id).status == "revoked"
    with pytest.raises(ClientError):
        s3.get_object(Bucket="reports", Key="2026/q3.csv")
    types = [e.type for e in stack.core.audit.events(grant_id=grant_id, limit=100)]
    assert types.count("call.allowed") == 1 and "call.denied" in types
    assert types.index("grant.revoked") < len(types) - 1  # the late call came after: denied
    assert types[-1] == "call.denied"


def test_pending_grant_waits_visibly_and_proceeds_once_approved(
    stack: Stack, messages: tuple[list[str], object]
) -> None:
    said, progress = messages
    key = f"sdk/{socket.gethostname()}-{id(said)}.txt"
    arn = f"arn:aws:s3:::reports/{key}"
    approving = stack.approve_next()
    with (
        Gate(stack.url, stack.token, progress=progress, poll_interval=0.1) as g,
        g.grant(  # type: ignore[arg-type]
            actions=["s3:PutObject"], resources=[arn], minutes=5, reason="write the summary"
        ) as aws,
    ):
        aws.client("s3").put_object(Bucket="reports", Key=key, Body=b"summary")
    approving.join(5)
    assert any("waiting for a human approver" in m and aws.grant.id in m for m in said)
    assert any(f"jitgate grants approve {aws.grant.id}" in m for m in said)
    assert any(m == f"grant {aws.grant.id} approved" for m in said)
    got = stack.moto.client("s3").get_object(Bucket="reports", Key=key)  # type: ignore[attr-defined]
    assert got["Body"].read() == b"summary"


def test_denial_by_an_approver_raises_with_the_comment(stack: Stack, g: Gate) -> None:
    stack.approve_next(deny=True, comment="not during the freeze")
    with pytest.raises(GrantDenied) as denied:  # noqa: SIM117
        with g.grant(
            actions=["s3:PutObject"], resources=["arn:aws:s3:::reports/x.txt"], reason="write"
        ):
            pytest.fail("the block must not run")
    assert "not during the freeze" in str(denied.value)
    assert denied.value.grant.status == "denied"
    assert g.get(denied.value.grant.id).status == "denied"


def test_policy_denial_raises_with_the_policy_reason(g: Gate) -> None:
    with pytest.raises(GrantDenied) as denied:  # noqa: SIM117
        with g.grant(
            actions=["s3:GetObject"], resources=["arn:aws:s3:::reports/2026/*"], reason="r"
        ):
            pytest.fail("the block must not run")
    assert "prefix grant" in str(denied.value)
    assert denied.value.reasons


def test_approval_timeout_withdraws_the_request(g: Gate) -> None:
    with pytest.raises(ApprovalTimeout) as late:  # noqa: SIM117
        with g.grant(
            actions=["s3:PutObject"],
            resources=["arn:aws:s3:::reports/late.txt"],
            reason="write",
            timeout=0.3,
        ):
            pytest.fail("the block must not run")
    assert "withdrawn" in str(late.value)
    assert g.get(late.value.grant.id).status == "revoked"


def test_invalid_requests_and_bad_tokens_are_clear_exceptions(stack: Stack, g: Gate) -> None:
    with pytest.raises(RequestRefused, match=r"'s3:\*' is a wildcard"):
        g.request(["s3:*"], [OBJECT_ARN], reason="everything")
    with pytest.raises(RequestRefused, match="takes"):
        g.request(["s3:GetObject"], [BUCKET_ARN], reason="bucket is not an object")
    with pytest.raises(TypeError):
        g.request("s3:GetObject", [OBJECT_ARN], reason="a string, not a list")  # type: ignore[arg-type]
    with pytest.raises(AuthenticationFailed), Gate(stack.url, "jga_nope", progress=None) as bad:
        bad.request(["s3:GetObject"], [OBJECT_ARN], reason="x")
    with pytest.raises(JitgateUnavailable), Gate("http://127.0.0.1:9", "t", progress=None) as off:
        off.info()


def test_gate_reads_url_and_token_from_the_environment(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JITGATE_URL", raising=False)
    with pytest.raises(JitgateClientError, match="JITGATE_URL"):
        Gate()
    monkeypatch.setenv("JITGATE_URL", stack.url)
    monkeypatch.setenv("JITGATE_TOKEN", stack.token)
    with Gate(progress=None) as g:
        assert g.info()["aws_endpoint"] == stack.aws_url
        assert g.list_grants() == []


def test_scope_for_answers_what_a_grant_of_exactly_that_scope_allows(g: Gate) -> None:
    plan = g.scope_for("dynamodb", "get_item", {"TableName": "orders", "Key": {"id": {"S": "o-1"}}})
    assert plan.actions == ("dynamodb:GetItem",)
    assert plan.resources == (TABLE_ARN,)
    assert plan.raw["decision"]["route"] == "auto"
    with g.grant(scope=plan, reason="look up order o-1") as aws:
        item = aws.client("dynamodb").get_item(TableName="orders", Key={"id": {"S": "o-1"}})
        assert item["Item"]["total"] == {"N": "42"}
    usage = g.usage(aws.grant.id)
    assert usage["tight"] is True and usage["calls"]["allowed"] == 1


def test_async_gate_with_aiobotocore(stack: Stack) -> None:
    async def main() -> tuple[bytes, str]:
        async with AsyncGate(stack.url, stack.token, progress=None) as g:
            async with g.grant(
                actions=["s3:GetObject"], resources=[OBJECT_ARN], minutes=2, reason="async read"
            ) as aws:
                async with aws.create_client("s3") as s3:
                    response = await s3.get_object(Bucket="reports", Key="2026/q3.csv")
                    async with response["Body"] as stream:
                        body = await stream.read()
                    with pytest.raises(ClientError):
                        await s3.get_object(Bucket="reports", Key="2026/payroll.csv")
                grant_id = aws.grant.id
            return body, (await g.get(grant_id)).status

    body, status = asyncio.run(main())
    assert body.startswith(b"region,revenue")
    assert status == "revoked"


def test_async_gate_waits_for_approval(stack: Stack) -> None:
    stack.approve_next()

    async def main() -> str:
        async with (
            AsyncGate(stack.url, stack.token, progress=None, poll_interval=0.1) as g,
            g.grant(
                actions=["dynamodb:PutItem"], resources=[TABLE_ARN], reason="record a result"
            ) as aws,
            aws.create_client("dynamodb") as ddb,
        ):
            await ddb.put_item(TableName="orders", Item={"id": {"S": "o-async"}})
            return str(aws.grant.status)

    assert asyncio.run(main()) == "active"
    item = stack.moto.client("dynamodb").get_item(  # type: ignore[attr-defined]
        TableName="orders", Key={"id": {"S": "o-async"}}
    )
    assert "Item" in item
