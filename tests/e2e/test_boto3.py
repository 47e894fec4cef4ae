"""boto3, unmodified, reaches moto through jitgate, and only within its grant.

Every success is checked on moto itself (as jitgate's own identity), so "it worked" means the
upstream really did it; every refusal is checked to have left moto untouched.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from botocore.exceptions import ClientError

from jitgate.sandbox.moto import ACCOUNT_ID

from .conftest import (
    BUCKET_ARN,
    OBJECT_ARN,
    Q3_TEXT,
    Stack,
    object_arn,
    queue_arn,
    secret_arn,
    self_signed_certificate,
    table_arn,
)

pytestmark = pytest.mark.slow


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return error["Code"], error.get("Message", "")


def assert_denied(
    excinfo: pytest.ExceptionInfo[ClientError], grant_id: str, action: str, arn: str
) -> None:
    code, message = error_of(excinfo)
    assert code == "AccessDenied", (code, message)
    assert grant_id in message and action in message and arn in message, message


def exists(stack: Stack, key: str, bucket: str = "reports") -> bool:
    try:
        stack.direct("s3").head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in ("404", "NoSuchKey"), exc
        return False
    return True


def new_key(prefix: str = "e2e") -> str:
    return f"{prefix}/{uuid.uuid4().hex}.txt"


# --- S3 ------------------------------------------------------------------------------------
def test_read_list_and_head_within_the_grant(stack: Stack) -> None:
    grant = stack.grant(["s3:GetObject", "s3:ListBucket"], [OBJECT_ARN, BUCKET_ARN])
    s3 = stack.client("s3", grant.creds)

    assert s3.get_object(Bucket="reports", Key="2026/q3.csv")["Body"].read().decode() == Q3_TEXT
    assert s3.head_object(Bucket="reports", Key="2026/q3.csv")["ContentLength"] == len(Q3_TEXT)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="reports", Prefix="2026/")["Contents"]]
    assert {"2026/q3.csv", "2026/q2.csv", "2026/payroll.csv"} <= set(keys)
    # The record says what was asked, query included (here: which prefix was listed).
    listed = [e for e in stack.events(grant.id) if e.data.get("operation") == "ListObjectsV2"]
    assert "prefix=2026%2F" in listed[0].data["query"]

    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="reports", Key="2026/payroll.csv")
    assert_denied(excinfo, grant.id, "s3:GetObject", "arn:aws:s3:::reports/2026/payroll.csv")
    # HEAD has no body: the code comes from the status alone, but it is still refused.
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket="reports", Key="2026/payroll.csv")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_put_and_delete_object(stack: Stack) -> None:
    key, other = new_key(), new_key()
    grant = stack.grant(["s3:PutObject", "s3:DeleteObject"], [object_arn(key)])
    s3 = stack.client("s3", grant.creds)

    s3.put_object(Bucket="reports", Key=key, Body=b"written through jitgate")
    stored = stack.direct("s3").get_object(Bucket="reports", Key=key)["Body"].read()
    assert stored == b"written through jitgate"

    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket="reports", Key=other, Body=b"nope")
    assert_denied(excinfo, grant.id, "s3:PutObject", object_arn(other))
    assert not exists(stack, other)

    s3.delete_object(Bucket="reports", Key=key)
    assert not exists(stack, key)
    with pytest.raises(ClientError) as excinfo:
        s3.delete_object(Bucket="reports", Key="2026/q2.csv")
    assert_denied(excinfo, grant.id, "s3:DeleteObject", object_arn("2026/q2.csv"))
    assert exists(stack, "2026/q2.csv")


def test_copy_object_needs_read_on_source_and_write_on_destination(stack: Stack) -> None:
    source = {"Bucket": "reports", "Key": "2026/q3.csv"}
    dest = new_key("copies")

    only_write = stack.grant(["s3:PutObject"], [object_arn(dest)])
    with pytest.raises(ClientError) as excinfo:
        stack.client("s3", only_write.creds).copy_object(
            Bucket="reports", Key=dest, CopySource=source
        )
    assert_denied(excinfo, only_write.id, "s3:GetObject", OBJECT_ARN)
    assert not exists(stack, dest)

    elsewhere = new_key("copies")
    wrong_dest = stack.grant(["s3:GetObject", "s3:PutObject"], [OBJECT_ARN, object_arn(elsewhere)])
    with pytest.raises(ClientError) as excinfo:
        stack.client("s3", wrong_dest.creds).copy_object(
            Bucket="reports", Key=dest, CopySource=source
        )
    assert_denied(excinfo, wrong_dest.id, "s3:PutObject", object_arn(dest))
    assert not exists(stack, dest)

    both = stack.grant(["s3:GetObject", "s3:PutObject"], [OBJECT_ARN, object_arn(dest)])
    stack.client("s3", both.creds).copy_object(Bucket="reports", Key=dest, CopySource=source)
    copied = stack.direct("s3").get_object(Bucket="reports", Key=dest)["Body"].read()
    assert copied.decode() == Q3_TEXT


def test_copy_source_with_encoded_key_is_authorized_on_the_decoded_key(stack: Stack) -> None:
    """x-amz-copy-source is percent-decoded once by S3: a grant on 'a b' must not read 'a+b'."""
    stem = uuid.uuid4().hex
    spaced, plussed, dest = f"cs/{stem} x", f"cs/{stem}+x", new_key("copies")
    moto = stack.direct("s3")
    moto.put_object(Bucket="reports", Key=spaced, Body=b"spaced")
    moto.put_object(Bucket="reports", Key=plussed, Body=b"plussed")
    grant = stack.grant(["s3:GetObject", "s3:PutObject"], [object_arn(spaced), object_arn(dest)])
    s3 = stack.client("s3", grant.creds)

    # boto3 sends the copy source percent-encoded ("cs/<stem>%20x").
    s3.copy_object(Bucket="reports", Key=dest, CopySource={"Bucket": "reports", "Key": spaced})
    assert moto.get_object(Bucket="reports", Key=dest)["Body"].read() == b"spaced"
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket="reports", Key=dest, CopySource={"Bucket": "reports", "Key": plussed})
    assert_denied(excinfo, grant.id, "s3:GetObject", object_arn(plussed))


def test_multipart_upload_is_put_object(stack: Stack) -> None:
    key = new_key("multipart")
    grant = stack.grant(["s3:PutObject"], [object_arn(key)])
    s3 = stack.client("s3", grant.creds)
    first, second = b"a" * (5 * 1024 * 1024), b"tail"

    upload = s3.create_multipart_upload(Bucket="reports", Key=key)["UploadId"]
    parts = []
    for number, data in enumerate((first, second), start=1):
        etag = s3.upload_part(
            Bucket="reports", Key=key, UploadId=upload, PartNumber=number, Body=data
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    s3.complete_multipart_upload(
        Bucket="reports", Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    stored = stack.direct("s3").get_object(Bucket="reports", Key=key)["Body"].read()
    assert stored == first + second

    other = new_key("multipart")
    with pytest.raises(ClientError) as excinfo:
        s3.create_multipart_upload(Bucket="reports", Key=other)
    assert_denied(excinfo, grant.id, "s3:PutObject", object_arn(other))

    operations = [e.data["operation"] for e in stack.events(grant.id) if e.type == "call.allowed"]
    assert operations == [
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
        "CompleteMultipartUpload",
    ]


def test_delete_objects_needs_every_key_in_the_body(stack: Stack) -> None:
    inside_1, inside_2, outside = new_key("bulk"), new_key("bulk"), new_key("bulk")
    moto = stack.direct("s3")
    for key in (inside_1, inside_2, outside):
        moto.put_object(Bucket="reports", Key=key, Body=b"x")
    grant = stack.grant(["s3:DeleteObject"], [object_arn(inside_1), object_arn(inside_2)])
    s3 = stack.client("s3", grant.creds)

    with pytest.raises(ClientError) as excinfo:
        s3.delete_objects(
            Bucket="reports", Delete={"Objects": [{"Key": inside_1}, {"Key": outside}]}
        )
    assert_denied(excinfo, grant.id, "s3:DeleteObject", object_arn(outside))
    assert exists(stack, inside_1) and exists(stack, outside)

    result = s3.delete_objects(
        Bucket="reports", Delete={"Objects": [{"Key": inside_1}, {"Key": inside_2}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == sorted([inside_1, inside_2])
    assert not exists(stack, inside_1) and not exists(stack, inside_2)
    assert exists(stack, outside)


# Keys whose wire form differs from the key: each with a neighbour that a sloppy decoder would
# confuse it with. The grant names exactly the key; the neighbour exists and must stay out.
TRICKY_KEYS = [
    ("space", "k/a b.txt", "k/a+b.txt"),
    ("plus", "k/a+b.txt", "k/a b.txt"),
    ("encoded slash", "k/a%2Fb.txt", "k/a/b.txt"),
    ("double encoded", "k/a%252F.txt", "k/a%2F.txt"),
    ("dot segments", "k/../secret.txt", "secret.txt"),
    ("dot segment alone", "k/./x.txt", "k/x.txt"),
    ("double slash", "k//x.txt", "k/x.txt"),
    ("unicode", "k/ünïcödé €.txt", "k/unicode.txt"),
    ("trailing dot", "k/x.", "k/x"),
    ("hash", "k/a#b", "k/a"),
    ("percent", "k/100%", "k/100"),
]


@pytest.mark.parametrize(
    ("key", "neighbour"),
    [pytest.param(k, n, id=name) for name, k, n in TRICKY_KEYS],
)
def test_tricky_keys_are_authorized_on_the_key_moto_stores(
    stack: Stack, key: str, neighbour: str
) -> None:
    prefix = f"tricky-{uuid.uuid4().hex[:8]}/"
    key, neighbour = prefix + key, prefix + neighbour
    moto = stack.direct("s3")
    moto.put_object(Bucket="reports", Key=neighbour, Body=b"neighbour")
    grant = stack.grant(["s3:PutObject", "s3:GetObject"], [object_arn(key)])
    s3 = stack.client("s3", grant.creds)

    s3.put_object(Bucket="reports", Key=key, Body=b"mine")
    stored = [o["Key"] for o in moto.list_objects_v2(Bucket="reports", Prefix=prefix)["Contents"]]
    assert sorted(stored) == sorted([key, neighbour])  # moto acted on exactly the granted key
    assert moto.get_object(Bucket="reports", Key=neighbour)["Body"].read() == b"neighbour"
    assert s3.get_object(Bucket="reports", Key=key)["Body"].read() == b"mine"

    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="reports", Key=neighbour)
    assert_denied(excinfo, grant.id, "s3:GetObject", object_arn(neighbour))
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket="reports", Key=neighbour, Body=b"overwritten")
    assert_denied(excinfo, grant.id, "s3:PutObject", object_arn(neighbour))
    assert moto.get_object(Bucket="reports", Key=neighbour)["Body"].read() == b"neighbour"


def test_presigned_get_url(stack: Stack) -> None:
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])
    s3 = stack.client("s3", grant.creds, signature_version="s3v4")

    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "reports", "Key": "2026/q3.csv"}, ExpiresIn=60
    )
    assert "X-Amz-Signature=" in url
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.text == Q3_TEXT

    other = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "reports", "Key": "2026/payroll.csv"}, ExpiresIn=60
    )
    denied = httpx.get(other, timeout=10)
    assert denied.status_code == 403
    assert "<Code>AccessDenied</Code>" in denied.text and grant.id in denied.text

    # The signature covers the path: pointing a valid URL at another object fails.
    tampered = httpx.get(url.replace("q3.csv", "q2.csv"), timeout=10)
    assert tampered.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in tampered.text

    # The URL's signature and session token never reach the log, whatever the outcome.
    events = stack.wait_events(grant.id, lambda events: len(events) >= 4)
    assert {e.type for e in events} == {"call.allowed", "call.completed", "call.denied"}
    for event in events:
        written = json.dumps(event.data)
        assert grant.creds["SessionToken"] not in written
        assert "X-Amz-Signature" not in written and "X-Amz-Security-Token" not in written


# --- DynamoDB --------------------------------------------------------------------------------
def test_dynamodb_get_put_and_batch_get(stack: Stack) -> None:
    orders, customers = table_arn("orders"), table_arn("customers")
    grant = stack.grant(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:BatchGetItem"], [orders])
    ddb = stack.client("dynamodb", grant.creds)

    item = ddb.get_item(TableName="orders", Key={"id": {"S": "o-1"}})["Item"]
    assert item["total"] == {"N": "42"}
    order_id = f"o-{uuid.uuid4().hex}"
    ddb.put_item(TableName="orders", Item={"id": {"S": order_id}, "total": {"N": "7"}})
    stored = stack.direct("dynamodb").get_item(TableName="orders", Key={"id": {"S": order_id}})
    assert stored["Item"]["total"] == {"N": "7"}

    with pytest.raises(ClientError) as excinfo:
        ddb.get_item(TableName="customers", Key={"id": {"S": "c-1"}})
    assert_denied(excinfo, grant.id, "dynamodb:GetItem", customers)

    both_tables = {
        "orders": {"Keys": [{"id": {"S": "o-1"}}]},
        "customers": {"Keys": [{"id": {"S": "c-1"}}]},
    }
    with pytest.raises(ClientError) as excinfo:
        ddb.batch_get_item(RequestItems=both_tables)
    assert_denied(excinfo, grant.id, "dynamodb:BatchGetItem", customers)

    wider = stack.grant(["dynamodb:BatchGetItem"], [orders, customers])
    result = stack.client("dynamodb", wider.creds).batch_get_item(RequestItems=both_tables)
    assert result["Responses"]["customers"][0]["name"] == {"S": "ann"}
    assert result["Responses"]["orders"][0]["id"] == {"S": "o-1"}


# --- SQS -------------------------------------------------------------------------------------
def test_sqs_send_and_receive_by_queue_url(stack: Stack) -> None:
    queue = f"q-{uuid.uuid4().hex[:12]}"
    stack.direct("sqs").create_queue(QueueName=queue)
    grant = stack.grant(
        ["sqs:GetQueueUrl", "sqs:SendMessage", "sqs:ReceiveMessage"], [queue_arn(queue)]
    )
    sqs = stack.client("sqs", grant.creds)

    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    assert url.endswith(f"/{ACCOUNT_ID}/{queue}")
    sqs.send_message(QueueUrl=url, MessageBody="job 1")
    messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]
    assert [m["Body"] for m in messages] == ["job 1"]

    other_url = url.rsplit("/", 1)[0] + "/other"
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=other_url, MessageBody="job 2")
    assert_denied(excinfo, grant.id, "sqs:SendMessage", queue_arn("other"))
    direct = stack.direct("sqs")
    direct_url = direct.get_queue_url(QueueName="other")["QueueUrl"]
    assert "Messages" not in direct.receive_message(QueueUrl=direct_url, WaitTimeSeconds=0)


# --- Secrets Manager -------------------------------------------------------------------------
def test_secret_by_name_and_by_full_arn_after_human_approval(stack: Stack) -> None:
    full_arn = stack.direct("secretsmanager").describe_secret(SecretId="prod/db")["ARN"]
    assert full_arn.startswith(secret_arn("prod/db-"))  # moto adds the random suffix, like AWS
    requested = stack.request_grant(
        ["secretsmanager:GetSecretValue"], [secret_arn("prod/db"), full_arn]
    )
    assert requested.status == "pending"  # a secret read is sensitive: a human decides
    assert requested.credentials is None
    approved = httpx.post(
        f"{stack.control_url}/v1/grants/{requested.id}/approve",
        headers={"authorization": f"Bearer {stack.approver_token}"},
        json={"comment": "needed for the migration"},
        timeout=10,
    )
    assert approved.status_code == 200, approved.text
    grant = stack.fetch_grant(requested)
    assert grant.status == "active"
    secrets = stack.client("secretsmanager", grant.creds)

    by_name = secrets.get_secret_value(SecretId="prod/db")
    assert by_name["SecretString"] == '{"password":"hunter2"}'
    assert secrets.get_secret_value(SecretId=full_arn)["SecretString"] == by_name["SecretString"]

    with pytest.raises(ClientError) as excinfo:
        secrets.get_secret_value(SecretId="prod/api")
    assert_denied(excinfo, grant.id, "secretsmanager:GetSecretValue", secret_arn("prod/api"))


def test_secret_grant_does_not_reach_a_secret_whose_name_extends_it(stack: Stack) -> None:
    grant = stack.request_grant(["secretsmanager:GetSecretValue"], [secret_arn("prod/db")])
    stack.core.grants.approve(stack.approver, grant.id, "e2e")
    secrets = stack.client("secretsmanager", stack.fetch_grant(grant).creds)
    assert secrets.get_secret_value(SecretId="prod/db")["SecretString"]  # the grant works

    lookalike = secret_arn("prod/db-backup")  # a partial ARN of another secret
    with pytest.raises(ClientError) as excinfo:
        value = secrets.get_secret_value(SecretId=lookalike)["SecretString"]
        pytest.fail(f"read secret prod/db-backup ({value!r}) with a grant on prod/db")
    assert excinfo.value.response["Error"]["Code"] == "AccessDenied"


# --- STS -------------------------------------------------------------------------------------
def test_get_caller_identity_names_the_agent_not_jitgate(stack: Stack) -> None:
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])
    identity = stack.client("sts", grant.creds).get_caller_identity()
    assert identity["Account"] == ACCOUNT_ID
    assert identity["Arn"].endswith(f"/{grant.agent.name}")
    assert identity["UserId"] == f"{grant.creds['AccessKeyId']}:{grant.agent.name}"
    jitgate_arn = stack.direct("sts").get_caller_identity()["Arn"]
    assert identity["Arn"] != jitgate_arn and "jitgate" in jitgate_arn
    # Answered by jitgate, yet recorded like any call: with the bytes that came and went.
    events = stack.wait_events(grant.id, lambda es: any(e.type == "call.completed" for e in es))
    (completed,) = [e.data for e in events if e.type == "call.completed"]
    assert completed["bytes_in"] == len(b"Action=GetCallerIdentity&Version=2011-06-15")
    assert completed["bytes_out"] > 0 and completed["status"] == 200


def test_virtual_hosted_style_is_authorized_on_the_same_bucket_and_key(stack: Stack) -> None:
    """'reports.localhost:PORT' as Host names the bucket; the key is then the whole path."""
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])
    port = stack.aws_url.rsplit(":", 1)[1]
    s3 = stack.client(
        "s3",
        grant.creds,
        endpoint_url=f"http://localhost:{port}",
        s3={"addressing_style": "virtual"},
    )
    seen: list[str] = []

    def to_loopback(request: Any, **_: Any) -> None:
        # Signed for reports.localhost:PORT; sent to 127.0.0.1 with that Host header.
        url = urlsplit(request.url)
        seen.append(url.netloc)
        request.headers["Host"] = url.netloc
        request.url = urlunsplit(url._replace(netloc=f"127.0.0.1:{port}"))

    s3.meta.events.register("before-send.s3", to_loopback)
    body = s3.get_object(Bucket="reports", Key="2026/q3.csv")["Body"].read()
    assert body.decode() == Q3_TEXT
    assert seen == [f"reports.localhost:{port}"]
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="reports", Key="2026/payroll.csv")
    assert_denied(excinfo, grant.id, "s3:GetObject", object_arn("2026/payroll.csv"))


# --- over TLS: boto3's default upload encoding --------------------------------------------
def test_uploads_over_tls_use_aws_chunked_with_a_checksum_trailer(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """Over https boto3 sends PutObject and UploadPart as STREAMING-UNSIGNED-PAYLOAD-TRAILER
    (aws-chunked, CRC32 trailer); DeleteObjects carries a checksum header. All pass through."""
    stack = make_stack(tls=self_signed_certificate(tmp_path))
    assert stack.aws_url.startswith("https://")
    # The certificate really is the one given: a client trusting only the system CAs refuses it.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(stack.aws_url, timeout=5)
    small, large = new_key("tls"), new_key("tls")
    grant = stack.grant(["s3:PutObject", "s3:DeleteObject"], [object_arn(small), object_arn(large)])
    s3 = stack.client("s3", grant.creds)
    sent: list[tuple[str, str]] = []
    s3.meta.events.register(
        "before-send.s3",
        lambda request, **_: sent.append(
            (request.method, request.headers.get("X-Amz-Content-SHA256", b"").decode())
        ),
    )
    body = bytes(range(256)) * 400
    s3.put_object(Bucket="reports", Key=small, Body=body)
    assert ("PUT", "STREAMING-UNSIGNED-PAYLOAD-TRAILER") in sent
    s3.upload_fileobj(io.BytesIO(body * 100), "reports", large)  # 10 MiB: multipart
    moto = stack.direct("s3")
    assert moto.get_object(Bucket="reports", Key=small)["Body"].read() == body
    assert moto.get_object(Bucket="reports", Key=large)["Body"].read() == body * 100

    deleted = s3.delete_objects(
        Bucket="reports", Delete={"Objects": [{"Key": small}, {"Key": large}]}
    )
    assert sorted(d["Key"] for d in deleted["Deleted"]) == sorted([small, large])
    assert not exists(stack, small) and not exists(stack, large)
    s3.close()  # an open TLS connection would hold up the server's shutdown


def test_assume_role_cannot_hand_out_credentials_that_outlive_the_grant(stack: Stack) -> None:
    """When a grant expires the agent must hold nothing that works: an approved grant for
    sts:AssumeRole still cannot mint AWS credentials that last longer than the grant."""
    role = f"arn:aws:iam::{ACCOUNT_ID}:role/report-fn-role"
    grant = stack.grant(["sts:AssumeRole"], [role], duration=600)
    sts = stack.client("sts", grant.creds)
    for duration in (900, None):  # AWS's shortest, and its default of an hour
        extra = {} if duration is None else {"DurationSeconds": duration}
        with pytest.raises(ClientError) as info:
            sts.assume_role(RoleArn=role, RoleSessionName="agent", **extra)
        error = info.value.response["Error"]
        assert error["Code"] == "AccessDenied"
        assert "longer than the" in error["Message"] and grant.id in error["Message"]
    denied = stack.wait_events(grant.id, lambda events: len(events) >= 2)
    assert [e.type for e in denied] == ["call.denied", "call.denied"]


def test_a_presigned_link_to_lambda_code_is_handed_out_only_while_the_grant_outlasts_it(
    stack: Stack,
) -> None:
    """GetFunction answers with a presigned link to the function's code that works for ten
    minutes without jitgate: it is refused while the grant has less than that left."""
    function = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:report-fn"
    short = stack.grant(["lambda:GetFunction"], [function], duration=300)
    with pytest.raises(ClientError) as info:
        stack.client("lambda", short.creds).get_function(FunctionName="report-fn")
    error = info.value.response["Error"]
    assert error["Code"] == "AccessDenied"
    assert "presigned link valid for 600 seconds" in error["Message"]
    assert short.id in error["Message"]
    denied = stack.wait_events(short.id, lambda events: len(events) >= 1)
    assert [e.type for e in denied] == ["call.denied"]

    long = stack.grant(["lambda:GetFunction"], [function], duration=900)
    try:
        stack.client("lambda", long.creds).get_function(FunctionName="report-fn")
    except ClientError as exc:
        # moto's auth mode refuses Lambda's signatures, even direct ones: what matters here is
        # that jitgate let the call through and relayed moto's answer.
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert "presigned link" not in str(exc)
    events = stack.wait_events(long.id, lambda events: len(events) >= 2)
    assert [e.type for e in events] == ["call.allowed", "call.completed"]
    assert events[1].data["status"] == 403  # moto's answer, relayed
