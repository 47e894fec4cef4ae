"""Clients we did not write: the AWS CLI (a subprocess) and s3fs under pandas."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas
import pytest

from .conftest import (
    BUCKET_ARN,
    OBJECT_ARN,
    Q3_TEXT,
    Stack,
    object_arn,
    queue_arn,
    secret_arn,
    table_arn,
)

pytestmark = pytest.mark.slow

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_aws_cli_s3_cp_both_ways_ls_and_sync(stack: Stack, aws_cli: Cli, tmp_path: Path) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:12]}"
    upload_key = f"{prefix}/uploaded.csv"
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    (sync_dir / "a.txt").write_text("alpha")
    (sync_dir / "b c.txt").write_text("bravo charlie")
    sync_keys = [f"{prefix}/sync/a.txt", f"{prefix}/sync/b c.txt"]
    grant = stack.grant(
        ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
        [OBJECT_ARN, BUCKET_ARN, object_arn(upload_key), *map(object_arn, sync_keys)],
    )
    creds = grant.creds

    downloaded = tmp_path / "q3.csv"
    aws_cli(creds, "s3", "cp", "s3://reports/2026/q3.csv", str(downloaded))
    assert downloaded.read_text() == Q3_TEXT

    source = tmp_path / "upload.csv"
    source.write_text("a,b\n1,2\n")
    aws_cli(creds, "s3", "cp", str(source), f"s3://reports/{upload_key}")
    stored = stack.direct("s3").get_object(Bucket="reports", Key=upload_key)["Body"].read()
    assert stored == b"a,b\n1,2\n"

    listing = aws_cli(creds, "s3", "ls", "s3://reports/2026/").stdout
    assert {"q3.csv", "q2.csv", "payroll.csv"} <= {
        line.split()[-1] for line in listing.splitlines()
    }

    aws_cli(creds, "s3", "sync", str(sync_dir), f"s3://reports/{prefix}/sync/")
    moto = stack.direct("s3")
    got = moto.list_objects_v2(Bucket="reports", Prefix=f"{prefix}/sync/")["Contents"]
    assert sorted(o["Key"] for o in got) == sorted(sync_keys)
    assert moto.get_object(Bucket="reports", Key=sync_keys[1])["Body"].read() == b"bravo charlie"

    # The CLI's own story, as recorded: every call it made was allowed, and each completed.
    events = stack.wait_events(
        grant.id,
        lambda es: (
            sum(e.type == "call.completed" for e in es) == sum(e.type == "call.allowed" for e in es)
        ),
    )
    assert not [e for e in events if e.type == "call.denied"]
    operations = {e.data["operation"] for e in events if e.type == "call.allowed"}
    assert {"GetObject", "PutObject", "ListObjectsV2"} <= operations


def test_aws_cli_denial_names_the_action_and_arn(
    stack: Stack, aws_cli: Cli, tmp_path: Path
) -> None:
    allowed_key = f"cli-{uuid.uuid4().hex[:12]}/ok.txt"
    grant = stack.grant(["s3:PutObject"], [object_arn(allowed_key)])
    source = tmp_path / "x.txt"
    source.write_text("x")
    other = f"cli-{uuid.uuid4().hex[:12]}/not-granted.txt"

    result = aws_cli(grant.creds, "s3", "cp", str(source), f"s3://reports/{other}", check=False)
    assert result.returncode != 0
    assert "AccessDenied" in result.stderr, result.stderr
    assert grant.id in result.stderr and f"s3:PutObject on {object_arn(other)}" in result.stderr
    listed = stack.direct("s3").list_objects_v2(Bucket="reports", Prefix=other)
    assert listed["KeyCount"] == 0

    denied = aws_cli(
        grant.creds,
        "dynamodb",
        "get-item",
        "--table-name",
        "orders",
        "--key",
        '{"id": {"S": "o-1"}}',
        check=False,
    )
    assert denied.returncode != 0
    assert "AccessDeniedException" not in denied.stderr  # jitgate's code, not DynamoDB's
    assert "AccessDenied" in denied.stderr
    assert f"dynamodb:GetItem on {table_arn('orders')}" in denied.stderr, denied.stderr


def test_aws_cli_dynamodb_sqs_and_secrets(stack: Stack, aws_cli: Cli) -> None:
    queue = f"cli-{uuid.uuid4().hex[:12]}"
    queue_url = stack.direct("sqs").create_queue(QueueName=queue)["QueueUrl"]
    grant = stack.grant(
        ["dynamodb:GetItem", "sqs:SendMessage", "secretsmanager:GetSecretValue"],
        [table_arn("orders"), queue_arn(queue), secret_arn("prod/db")],
    )
    creds = grant.creds

    item = json.loads(
        aws_cli(
            creds, "dynamodb", "get-item", "--table-name", "orders", "--key", '{"id":{"S":"o-1"}}'
        ).stdout
    )
    assert item["Item"]["total"] == {"N": "42"}

    sent = json.loads(
        aws_cli(
            creds, "sqs", "send-message", "--queue-url", queue_url, "--message-body", "from cli"
        ).stdout
    )
    assert sent["MessageId"]
    received = stack.direct("sqs").receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)
    assert [m["Body"] for m in received["Messages"]] == ["from cli"]

    secret = json.loads(
        aws_cli(creds, "secretsmanager", "get-secret-value", "--secret-id", "prod/db").stdout
    )
    assert secret["SecretString"] == '{"password":"hunter2"}'


# --- s3fs ------------------------------------------------------------------------------------
def storage_options(stack: Stack, creds: dict[str, str]) -> dict[str, object]:
    return {
        "key": creds["AccessKeyId"],
        "secret": creds["SecretAccessKey"],
        "token": creds["SessionToken"],
        "client_kwargs": {"endpoint_url": stack.aws_url, "region_name": "us-east-1"},
        "skip_instance_cache": True,
    }


def test_pandas_reads_csv_from_s3_with_exactly_get_object(stack: Stack) -> None:
    """s3fs needs nothing but s3:GetObject on the object: a HEAD for its size (HeadObject is
    s3:GetObject) and a ranged GET."""
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])
    frame = pandas.read_csv(
        "s3://reports/2026/q3.csv", storage_options=storage_options(stack, grant.creds)
    )
    assert list(frame.columns) == ["region", "revenue"]
    assert frame["revenue"].sum() == 1200 + 950 + 1310 + 870

    events = stack.wait_events(grant.id, lambda es: len(es) >= 4)
    assert [(e.type, e.data.get("operation")) for e in events if e.type != "call.completed"] == [
        ("call.allowed", "HeadObject"),
        ("call.allowed", "GetObject"),
    ]
    statuses = [e.data["status"] for e in events if e.type == "call.completed"]
    assert statuses == [200, 206]  # s3fs reads with a Range header

    with pytest.raises(PermissionError):
        pandas.read_csv(
            "s3://reports/2026/payroll.csv", storage_options=storage_options(stack, grant.creds)
        )
