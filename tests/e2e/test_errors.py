"""Every refusal of issue 3 item 2, as the calling SDK parses it, in each protocol family.

For each family (rest-xml: S3; json: DynamoDB; query: SNS and STS; rest-json: Lambda) and each
failure, a real boto3 client makes the call through jitgate; the test checks the error code
botocore parsed, the HTTP status, the message, and the ``call.denied`` audit event the gateway
wrote for that very request (found by its request id), with the grant id when one was found.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import update

from jitgate.store.schema import grants as grants_table

from .conftest import (
    OBJECT_ARN,
    GrantInfo,
    Stack,
    function_arn,
    object_arn,
    queue_arn,
    table_arn,
    topic_arn,
)
from .wire import STREAMING_SIGNED, botocore_clock_shifted, credentials_of, sign, signed_chunks

pytestmark = pytest.mark.slow

Call = Callable[[Any], Any]
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/{}"


@dataclasses.dataclass(frozen=True)
class Family:
    name: str  # protocol family
    service: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    ok: Call  # a call the grant covers
    outside: Call | None  # a call it does not cover ...
    outside_access: tuple[str, str] | None  # ... and the (action, ARN) it lacks
    unsupported: Call  # an operation jitgate refuses to map ...
    unsupported_name: str  # ... named in the refusal


FAMILIES = [
    Family(
        "rest-xml",
        "s3",
        ("s3:GetObject",),
        (OBJECT_ARN,),
        ok=lambda c: c.get_object(Bucket="reports", Key="2026/q3.csv")["Body"].read(),
        outside=lambda c: c.get_object(Bucket="reports", Key="2026/payroll.csv"),
        outside_access=("s3:GetObject", object_arn("2026/payroll.csv")),
        unsupported=lambda c: c.create_session(Bucket="reports"),
        unsupported_name="CreateSession",
    ),
    Family(
        "json",
        "dynamodb",
        ("dynamodb:GetItem",),
        (table_arn("orders"),),
        ok=lambda c: c.get_item(TableName="orders", Key={"id": {"S": "o-1"}})["Item"],
        outside=lambda c: c.get_item(TableName="customers", Key={"id": {"S": "c-1"}}),
        outside_access=("dynamodb:GetItem", table_arn("customers")),
        unsupported=lambda c: c.execute_statement(Statement='SELECT * FROM "orders"'),
        unsupported_name="ExecuteStatement",
    ),
    Family(
        "json-sqs",  # json on the wire, query-compatible error codes (x-amzn-query-error)
        "sqs",
        ("sqs:SendMessage",),
        (queue_arn("jobs"),),
        ok=lambda c: c.send_message(QueueUrl=QUEUE_URL.format("jobs"), MessageBody="x"),
        outside=lambda c: c.send_message(QueueUrl=QUEUE_URL.format("other"), MessageBody="x"),
        outside_access=("sqs:SendMessage", queue_arn("other")),
        unsupported=lambda c: c.cancel_message_move_task(TaskHandle="handle"),
        unsupported_name="CancelMessageMoveTask",
    ),
    Family(
        "query",
        "sns",
        ("sns:GetTopicAttributes",),
        (topic_arn("alerts"),),
        ok=lambda c: c.get_topic_attributes(TopicArn=topic_arn("alerts"))["Attributes"],
        outside=lambda c: c.get_topic_attributes(TopicArn=topic_arn("payroll-alerts")),
        outside_access=("sns:GetTopicAttributes", topic_arn("payroll-alerts")),
        unsupported=lambda c: c.set_sms_attributes(attributes={"DefaultSMSType": "Promotional"}),
        unsupported_name="SetSMSAttributes",
    ),
    Family(
        "query-sts",
        "sts",
        (),
        (),
        ok=lambda c: c.get_caller_identity()["Arn"],
        outside=None,
        outside_access=None,
        unsupported=lambda c: c.get_session_token(),
        unsupported_name="GetSessionToken",
    ),
    Family(
        "rest-json",
        "lambda",
        ("lambda:TagResource",),
        (function_arn("report-fn"),),
        ok=lambda c: c.tag_resource(Resource=function_arn("report-fn"), Tags={"team": "e2e"}),
        outside=lambda c: c.tag_resource(Resource=function_arn("payroll-fn"), Tags={"a": "b"}),
        outside_access=("lambda:TagResource", function_arn("payroll-fn")),
        unsupported=lambda c: c.get_resource_policy(ResourceArn=function_arn("report-fn")),
        unsupported_name="GetResourcePolicy",
    ),
]
BY_NAME = {f.name: f for f in FAMILIES}
FAMILY_IDS = [f.name for f in FAMILIES]

STATUS = {
    "InvalidAccessKeyId": 403,
    "SignatureDoesNotMatch": 403,
    "RequestTimeTooSkewed": 403,
    "AccessDenied": 403,
    "ExpiredToken": 400,
    "InvalidToken": 400,
    "UnsupportedOperation": 400,
}


def all_scope() -> tuple[list[str], list[str]]:
    actions = [a for f in FAMILIES for a in f.actions]
    resources = [r for f in FAMILIES for r in f.resources]
    return actions, resources


@pytest.fixture(scope="module")
def live(stack: Stack) -> GrantInfo:
    """One grant covering every family's ``ok`` call."""
    return stack.grant(*all_scope())


@pytest.fixture(scope="module")
def expired(stack: Stack) -> GrantInfo:
    """A one-second grant, one second later (the stack runs on the system clock)."""
    grant = stack.grant(*all_scope(), duration=1)
    time.sleep(1.2)
    return grant


@pytest.fixture(scope="module")
def revoked(stack: Stack) -> GrantInfo:
    grant = stack.grant(*all_scope())
    response = httpx.post(
        f"{stack.control_url}/v1/grants/{grant.id}/revoke",
        headers={"authorization": f"Bearer {grant.agent.token}"},
        json={"comment": "task done"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    return grant


@pytest.fixture(scope="module")
def disabled(stack: Stack) -> GrantInfo:
    grant = stack.grant(*all_scope())
    response = httpx.post(
        f"{stack.control_url}/v1/agents/{grant.agent.name}/disable",
        headers={"authorization": f"Bearer {stack.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return grant


def refused(stack: Stack, call: Call, client: Any, code: str) -> tuple[str, str]:
    """Make the call, expect ``code`` with its status; returns (message, request id)."""
    with pytest.raises(ClientError) as excinfo:
        call(client)
    response = excinfo.value.response
    assert response["Error"]["Code"] == code, response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == STATUS[code], response
    request_id = response["ResponseMetadata"]["RequestId"]
    assert request_id, response
    return response["Error"].get("Message", ""), request_id


def check_recorded(stack: Stack, request_id: str, code: str, grant_id: str | None) -> None:
    """The gateway wrote a call.denied event for this very request, naming the grant."""
    event = stack.denial(request_id)
    assert event.data["code"] == code
    assert event.grant_id == grant_id


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_the_grant_works(stack: Stack, live: GrantInfo, family: str) -> None:
    """The baseline: the same credentials and calls succeed when nothing is wrong."""
    f = BY_NAME[family]
    assert f.ok(stack.client(f.service, live.creds)) is not None


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_unknown_access_key(stack: Stack, live: GrantInfo, family: str) -> None:
    f = BY_NAME[family]
    creds = dict(live.creds, AccessKeyId="AKJG" + uuid.uuid4().hex[:16].upper())
    message, request_id = refused(stack, f.ok, stack.client(f.service, creds), "InvalidAccessKeyId")
    assert "does not exist" in message
    check_recorded(stack, request_id, "InvalidAccessKeyId", None)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_wrong_secret(stack: Stack, live: GrantInfo, family: str) -> None:
    f = BY_NAME[family]
    creds = dict(live.creds, SecretAccessKey=live.creds["SecretAccessKey"][::-1])
    _, request_id = refused(stack, f.ok, stack.client(f.service, creds), "SignatureDoesNotMatch")
    check_recorded(stack, request_id, "SignatureDoesNotMatch", live.id)
    # Whoever signed it did not hold the grant's secret: not recorded as the agent acting.
    event = stack.denial(request_id)
    assert (event.actor, event.agent) == ("anonymous", live.agent.name)
    assert event.data["source"] == "127.0.0.1"


@pytest.mark.parametrize("family", FAMILY_IDS)
@pytest.mark.parametrize(
    "offset", [timedelta(minutes=-6), timedelta(minutes=7)], ids=["behind", "ahead"]
)
def test_clock_skew(stack: Stack, live: GrantInfo, family: str, offset: timedelta) -> None:
    f = BY_NAME[family]
    client = stack.client(f.service, live.creds)
    with botocore_clock_shifted(offset):
        _, request_id = refused(stack, f.ok, client, "RequestTimeTooSkewed")
    check_recorded(stack, request_id, "RequestTimeTooSkewed", live.id)
    with botocore_clock_shifted(timedelta(minutes=4)):  # within the allowed 5 minutes
        assert f.ok(client) is not None


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_expired_grant(stack: Stack, expired: GrantInfo, family: str) -> None:
    f = BY_NAME[family]
    message, request_id = refused(
        stack, f.ok, stack.client(f.service, expired.creds), "ExpiredToken"
    )
    assert expired.id in message and "expired" in message
    check_recorded(stack, request_id, "ExpiredToken", expired.id)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_revoked_grant(stack: Stack, revoked: GrantInfo, family: str) -> None:
    f = BY_NAME[family]
    message, request_id = refused(
        stack, f.ok, stack.client(f.service, revoked.creds), "AccessDenied"
    )
    assert message == f"grant {revoked.id} was revoked"
    check_recorded(stack, request_id, "AccessDenied", revoked.id)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_a_grant_in_use_stops_at_the_next_call_once_revoked(stack: Stack, family: str) -> None:
    """The gateway remembers a live grant for a moment between calls (GrantLookup); the
    transaction that records each call reads the grant again, so a revocation between two
    calls stops the second one at once."""
    f = BY_NAME[family]
    grant = stack.grant(*all_scope())
    client = stack.client(f.service, grant.creds)
    assert f.ok(client) is not None  # the grant is now remembered
    response = httpx.post(
        f"{stack.control_url}/v1/grants/{grant.id}/revoke",
        headers={"authorization": f"Bearer {grant.agent.token}"},
        json={"comment": "stop now"},
        timeout=10,
    )
    assert response.status_code == 200
    message, request_id = refused(stack, f.ok, client, "AccessDenied")
    assert message == f"grant {grant.id} was revoked"
    check_recorded(stack, request_id, "AccessDenied", grant.id)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_disabled_agent(stack: Stack, disabled: GrantInfo, family: str) -> None:
    f = BY_NAME[family]
    message, request_id = refused(
        stack, f.ok, stack.client(f.service, disabled.creds), "AccessDenied"
    )
    assert disabled.agent.name in message and "disabled" in message and disabled.id in message
    check_recorded(stack, request_id, "AccessDenied", disabled.id)


@pytest.mark.parametrize("family", [f.name for f in FAMILIES if f.outside is not None])
def test_call_outside_the_grant(stack: Stack, live: GrantInfo, family: str) -> None:
    f = BY_NAME[family]
    assert f.outside is not None and f.outside_access is not None
    message, request_id = refused(
        stack, f.outside, stack.client(f.service, live.creds), "AccessDenied"
    )
    action, arn = f.outside_access
    assert message == f"grant {live.id} does not allow {action} on {arn}"
    check_recorded(stack, request_id, "AccessDenied", live.id)


@pytest.mark.parametrize("family", FAMILY_IDS)
@pytest.mark.parametrize("token", ["missing", "forged", "another grant's"])
def test_missing_or_forged_session_token(
    stack: Stack, live: GrantInfo, family: str, token: str
) -> None:
    f = BY_NAME[family]
    creds = dict(live.creds)
    if token == "missing":
        del creds["SessionToken"]
    elif token == "forged":
        creds["SessionToken"] = creds["SessionToken"][:-4] + "AAAA"
    else:
        creds["SessionToken"] = stack.grant(["s3:GetObject"], [OBJECT_ARN]).creds["SessionToken"]
    message, request_id = refused(stack, f.ok, stack.client(f.service, creds), "InvalidToken")
    assert "token" in message
    check_recorded(stack, request_id, "InvalidToken", live.id)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_unsupported_operation(stack: Stack, live: GrantInfo, family: str) -> None:
    f = BY_NAME[family]
    message, request_id = refused(
        stack, f.unsupported, stack.client(f.service, live.creds), "UnsupportedOperation"
    )
    assert f"{f.service}:{f.unsupported_name}" in message or (
        f"{f.service} {f.unsupported_name}:" in message
    ), message
    check_recorded(stack, request_id, "UnsupportedOperation", live.id)


@pytest.mark.parametrize(
    ("service", "call"),
    [("ec2", lambda c: c.describe_instances()), ("iam", lambda c: c.list_users())],
    ids=["ec2", "iam"],
)
def test_unsupported_service(stack: Stack, live: GrantInfo, service: str, call: Call) -> None:
    message, request_id = refused(
        stack, call, stack.client(service, live.creds), "UnsupportedOperation"
    )
    assert message == f"service '{service}' is not supported by jitgate"
    check_recorded(stack, request_id, "UnsupportedOperation", live.id)


# --- states a grant's credentials can never be used in -----------------------------------------
def test_pending_grant_has_no_credentials_and_its_key_is_refused(stack: Stack) -> None:
    """A grant waiting for a human hands out no credentials at all. Should a pending grant
    ever carry a key (forced here in the database), the gateway refuses it."""
    grant = stack.request_grant(["s3:PutObject"], [object_arn(f"pending/{uuid.uuid4().hex}")])
    assert grant.status == "pending" and grant.credentials is None
    assert stack.fetch_grant(grant).credentials is None

    live = stack.grant(["s3:GetObject"], [OBJECT_ARN])
    with stack.core.db.write() as connection:
        connection.execute(
            update(grants_table).where(grants_table.c.id == live.id).values(status="pending")
        )
    message, request_id = refused(
        stack, FAMILIES[0].ok, stack.client("s3", live.creds), "AccessDenied"
    )
    assert message == f"grant {live.id} is waiting for approval"
    check_recorded(stack, request_id, "AccessDenied", live.id)


# --- aws-chunked bodies with chunk signatures --------------------------------------------------
def chunked_put(
    stack: Stack, creds: dict[str, str], key: str, chunks: list[bytes]
) -> tuple[dict[str, str], list[bytes]]:
    url = f"{stack.aws_url}/reports/{key}"
    headers = sign(
        "PUT",
        url,
        credentials=credentials_of(creds),
        headers={
            "X-Amz-Content-SHA256": STREAMING_SIGNED,
            "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(sum(map(len, chunks))),
        },
        s3_style=False,  # keeps the declared STREAMING value as the payload hash
    )
    return headers, signed_chunks(chunks, secret=creds["SecretAccessKey"], headers=headers)


CHUNKS = [bytes([65 + i]) * 65536 for i in range(3)] + [b"tail"]


def test_signed_chunks_are_verified_and_decoded(stack: Stack) -> None:
    key = f"chunked/{uuid.uuid4().hex}"
    grant = stack.grant(["s3:PutObject"], [object_arn(key)])
    headers, frames = chunked_put(stack, grant.creds, key, CHUNKS)
    response = httpx.put(
        f"{stack.aws_url}/reports/{key}", headers=headers, content=b"".join(frames), timeout=10
    )
    assert response.status_code == 200, response.text
    stored = stack.direct("s3").get_object(Bucket="reports", Key=key)["Body"].read()
    assert stored == b"".join(CHUNKS)


@pytest.mark.parametrize(
    "where",
    ["first chunk data", "last data chunk", "final chunk signature", "dropped chunk"],
)
def test_tampered_chunk_is_refused_and_nothing_reaches_moto(stack: Stack, where: str) -> None:
    key = f"chunked/{uuid.uuid4().hex}"
    grant = stack.grant(["s3:PutObject"], [object_arn(key)])
    headers, frames = chunked_put(stack, grant.creds, key, CHUNKS)
    if where == "first chunk data":
        frames[0] = frames[0][:-10] + b"X" + frames[0][-9:]
    elif where == "last data chunk":
        frames[-2] = frames[-2].replace(b"tail", b"TAIL")
    elif where == "final chunk signature":
        frames[-1] = (
            frames[-1][:-6] + (b"0000" if frames[-1][-6:-4] != b"00" else b"1111") + b"\r\n"
        )
    else:
        del frames[1]

    def paced() -> Iterator[bytes]:
        # One frame at a time, so the gateway sees (and releases) each chunk on its own.
        for frame in frames:
            yield frame
            time.sleep(0.05)

    headers["Content-Length"] = str(sum(map(len, frames)))
    response = httpx.put(
        f"{stack.aws_url}/reports/{key}", headers=headers, content=paced(), timeout=10
    )
    assert response.status_code in (400, 403), response.text
    assert "<Code>SignatureDoesNotMatch</Code>" in response.text or (
        "<Code>IncompleteBody</Code>" in response.text
    ), response.text
    listed = stack.direct("s3").list_objects_v2(Bucket="reports", Prefix=key)
    assert listed["KeyCount"] == 0, f"moto stored {key} from a refused body"
    completed = stack.wait_events(grant.id, lambda es: any(e.type == "call.completed" for e in es))
    outcome = next(e for e in completed if e.type == "call.completed")
    # The status the client got (a chunk signature refused is 403, a short body 400).
    assert outcome.data["status"] == response.status_code and outcome.data["error"]


def test_refused_upload_does_not_break_the_clients_next_call(stack: Stack) -> None:
    """boto3 sends PutObject with 'Expect: 100-continue' and holds the body back; a refusal
    sent before the body is read must close the connection, or the next request on it would
    be read as that body."""
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])
    s3 = stack.client("s3", grant.creds)
    for _ in range(3):
        with pytest.raises(ClientError) as excinfo:
            s3.put_object(Bucket="reports", Key="2026/q3.csv", Body=b"overwrite" * 1000)
        assert excinfo.value.response["Error"]["Code"] == "AccessDenied"
        headers = excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]
        assert headers.get("connection") == "close"
        assert s3.get_object(Bucket="reports", Key="2026/q3.csv")["Body"].read()


@pytest.mark.parametrize(
    ("which", "code"), [("expired", "ExpiredToken"), ("revoked", "AccessDenied")]
)
def test_presigned_url_dies_with_its_grant(
    stack: Stack, request: pytest.FixtureRequest, which: str, code: str
) -> None:
    """A presigned URL valid for an hour is worth no more than the grant behind it."""
    grant: GrantInfo = request.getfixturevalue(which)
    s3 = stack.client("s3", grant.creds, signature_version="s3v4")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "reports", "Key": "2026/q3.csv"}, ExpiresIn=3600
    )
    response = httpx.get(url, timeout=10)
    assert response.status_code == STATUS[code]
    assert f"<Code>{code}</Code>" in response.text and grant.id in response.text
    check_recorded(stack, response.headers["x-amz-request-id"], code, grant.id)


@pytest.mark.parametrize("pieces", [1, 4], ids=["at once", "in pieces"])
def test_body_not_matching_its_signed_hash_is_refused_and_nothing_reaches_moto(
    stack: Stack, pieces: int
) -> None:
    key = f"hashed/{uuid.uuid4().hex}"
    grant = stack.grant(["s3:PutObject"], [object_arn(key)])
    url = f"{stack.aws_url}/reports/{key}"
    signed_body, sent_body = b"a" * 200_000, b"a" * 199_999 + b"b"
    headers = sign("PUT", url, credentials=credentials_of(grant.creds), body=signed_body)
    headers["Content-Length"] = str(len(sent_body))
    size = len(sent_body) // pieces + 1

    def paced() -> Iterator[bytes]:
        for start in range(0, len(sent_body), size):
            yield sent_body[start : start + size]
            time.sleep(0.05)

    response = httpx.put(url, headers=headers, content=paced(), timeout=10)
    assert response.status_code == 400, response.text
    assert "<Code>XAmzContentSHA256Mismatch</Code>" in response.text
    assert stack.direct("s3").list_objects_v2(Bucket="reports", Prefix=key)["KeyCount"] == 0

    ok = httpx.put(url, headers=headers, content=signed_body, timeout=10)
    assert ok.status_code == 200, ok.text
    assert stack.direct("s3").get_object(Bucket="reports", Key=key)["Body"].read() == signed_body
