"""Signing as a role per target account ([aws.roles]), against moto in its auth mode, which
checks each role's trust policy and then its permissions on every call signed as the role."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from jitgate.gateway.roles import SessionCredentials
from jitgate.gateway.upstream import sts_assume_role
from jitgate.sandbox.moto import ACCOUNT_ID, REGION, MotoServer

from .conftest import OBJECT_ARN, Q3_TEXT, Stack, object_arn
from .recording import Forwarded, RecordingUpstream
from .wire import credentials_of, sign

pytestmark = pytest.mark.slow

JITGATE_USER = f"arn:aws:iam::{ACCOUNT_ID}:user/jitgate"  # jitgate's own identity in moto


def make_role(moto: MotoServer, *, trusted: str = JITGATE_USER) -> str:
    """A role jitgate may assume that can only read the reports bucket."""
    iam: Any = moto.client("iam")
    name = f"jitgate-agents-{uuid.uuid4().hex[:8]}"
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": trusted},
                "Action": ["sts:AssumeRole", "sts:SetSourceIdentity"],
            }
        ],
    }
    arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"][
        "Arn"
    ]
    read_only = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::reports/*"}
        ],
    }
    iam.put_role_policy(RoleName=name, PolicyName="read", PolicyDocument=json.dumps(read_only))
    return arn


def recording_assume_role(stack: Stack) -> list[tuple[str, str, str, int]]:
    """Every AssumeRole jitgate makes from now on: (role, session name, source identity,
    seconds), each still made for real."""
    endpoint = stack.thread.endpoint
    assert endpoint is not None
    sessions = endpoint.upstream._role_sessions
    assert sessions is not None
    made: list[tuple[str, str, str, int]] = []
    real = sessions._assume

    def assume(role: str, name: str, source: str, seconds: int) -> SessionCredentials:
        made.append((role, name, source, seconds))
        return real(role, name, source, seconds)

    sessions._assume = assume
    return made


def test_calls_into_an_account_with_a_role_are_signed_as_that_role(
    moto_server: MotoServer, make_stack: Callable[..., Stack]
) -> None:
    role = make_role(moto_server)
    stack = make_stack(roles={ACCOUNT_ID: role})
    made = recording_assume_role(stack)
    key = f"roles/{uuid.uuid4().hex}"
    grant = stack.grant(["s3:GetObject", "s3:PutObject"], [OBJECT_ARN, object_arn(key)])
    s3 = stack.client("s3", grant.creds)

    body = s3.get_object(Bucket="reports", Key="2026/q3.csv")["Body"].read().decode()
    assert body == Q3_TEXT
    s3.get_object(Bucket="reports", Key="2026/q3.csv")
    # The grant covers this write, and jitgate's own identity could make it, but the role
    # cannot: AWS refuses it, which only happens if jitgate signed as the role.
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket="reports", Key=key, Body=b"x")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"

    agent = grant.agent.name
    assert made == [(role, f"jitgate.{agent}", agent, 3600)]  # one session, reused
    allowed = [e for e in stack.events(grant.id) if e.type == "call.allowed"]
    assert len(allowed) == 3
    assert all(event.data["role"] == role for event in allowed)


def test_each_agent_gets_a_session_of_its_own(
    moto_server: MotoServer, make_stack: Callable[..., Stack]
) -> None:
    role = make_role(moto_server)
    stack = make_stack(roles={ACCOUNT_ID: role})
    made = recording_assume_role(stack)
    agents = []
    for _ in range(2):
        grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])
        stack.client("s3", grant.creds).get_object(Bucket="reports", Key="2026/q3.csv")
        agents.append(grant.agent.name)
    assert [source for _, _, source, _ in made] == agents


def test_a_role_jitgate_cannot_assume_refuses_the_call_before_it_is_allowed(
    moto_server: MotoServer, make_stack: Callable[..., Stack]
) -> None:
    role = make_role(moto_server, trusted=f"arn:aws:iam::{ACCOUNT_ID}:user/someone-else")
    stack = make_stack(roles={ACCOUNT_ID: role})
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])
    response = httpx.get(
        f"{stack.aws_url}/reports/2026/q3.csv",
        headers=signed_headers(stack, grant.creds),
        timeout=10,
    )
    assert response.status_code == 503
    assert "could not assume its role for account" in response.text
    assert "user/jitgate" not in response.text  # STS's reason names jitgate: the log has it
    denied = stack.denial(response.headers["x-amz-request-id"])
    assert denied.grant_id == grant.id and denied.data["code"] == "ServiceUnavailable"
    assert not [e for e in stack.events(grant.id) if e.type == "call.allowed"]


def signed_headers(stack: Stack, creds: dict[str, str]) -> dict[str, str]:
    return sign("GET", f"{stack.aws_url}/reports/2026/q3.csv", credentials=credentials_of(creds))


ASSUMED = b"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleResult><Credentials><AccessKeyId>ASIAROLESESSION01</AccessKeyId>
<SecretAccessKey>role-secret</SecretAccessKey><SessionToken>role-token</SessionToken>
<Expiration>2026-11-29T18:00:00Z</Expiration></Credentials>
<AssumedRoleUser><AssumedRoleId>AROAEXAMPLE:jitgate.reporter</AssumedRoleId>
<Arn>arn:aws:sts::123456789012:assumed-role/jitgate-agents/jitgate.reporter</Arn>
</AssumedRoleUser><SourceIdentity>reporter</SourceIdentity></AssumeRoleResult>
<ResponseMetadata><RequestId>assumed</RequestId></ResponseMetadata></AssumeRoleResponse>"""


def answer_assumed(connection: socket.socket, forwarded: Forwarded) -> None:
    connection.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(ASSUMED), ASSUMED)
    )


def test_the_source_identity_and_session_name_reach_sts() -> None:
    """What AWS records (CloudTrail) comes from the AssumeRole request itself: checked on the
    wire, since moto accepts but does not keep SourceIdentity."""
    sts = RecordingUpstream(answer_assumed)
    try:
        assume = sts_assume_role(Credentials("AKIAJITGATE", "secret"), REGION, sts.url)
        session = assume("arn:aws:iam::123456789012:role/jitgate-agents", "jitgate.reporter", "reporter", 3600)  # fmt: skip
        (request,) = sts.wait(1)
    finally:
        sts.close()
    sent = dict(part.split("=", 1) for part in request.body.decode().split("&"))
    assert sent["Action"] == "AssumeRole"
    assert sent["SourceIdentity"] == "reporter"
    assert sent["RoleSessionName"] == "jitgate.reporter"
    assert sent["DurationSeconds"] == "3600"
    assert "Credential=AKIAJITGATE/" in request.headers["authorization"]
    assert (session.access_key, session.token) == ("ASIAROLESESSION01", "role-token")
    assert session.expires_at.isoformat() == "2026-11-29T18:00:00+00:00"


def test_an_s3_write_naming_another_accounts_key_is_not_signed_around_the_role(
    moto_server: MotoServer, make_stack: Callable[..., Stack]
) -> None:
    """Found in review: S3 ARNs name no account, so an S3 write naming a KMS key of another
    account took that account as its target; with no role there it was signed by jitgate's
    own identity, and the write the bucket account's role forbids was made."""
    role = make_role(moto_server)  # may only read the reports bucket
    stack = make_stack(roles={ACCOUNT_ID: role})
    key = f"roles/{uuid.uuid4().hex}"
    foreign_key = f"arn:aws:kms:{REGION}:999999999999:key/{uuid.uuid4()}"
    grant = stack.grant(["s3:PutObject", "kms:GenerateDataKey"], [object_arn(key), foreign_key])
    s3 = stack.client("s3", grant.creds)

    with pytest.raises(ClientError) as refused:
        s3.put_object(
            Bucket="reports",
            Key=key,
            Body=b"around the role",
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=foreign_key,
        )

    assert refused.value.response["Error"]["Code"] == "InvalidRequest"
    assert "several AWS accounts" in refused.value.response["Error"]["Message"]
    listed: Any = stack.direct("s3").list_objects_v2(Bucket="reports", Prefix=key)
    assert listed["KeyCount"] == 0
