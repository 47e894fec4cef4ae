"""Scope for a planned call: ``jitgate.scope_for``, ``POST /v1/scope``, ``Gate.scope_for`` and
``jitgate scope-for -- aws ...``, checked against what the AWS endpoint then allows."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import jitgate.cli as cli
from client.conftest import OBJECT_ARN, SECRET_ARN, TABLE_ARN, Stack
from conftest import bearer
from jitgate.api.app import create_control_app
from jitgate.client import Gate, ScopeUnavailable
from jitgate.client.awscli import AwsCliNotUnderstood, plan_aws_command
from jitgate.core import Jitgate
from jitgate.errors import InvalidRequest
from jitgate.scope_for import PlannedCall, UnsupportedCall, plan

ACCOUNT = "123456789012"

CASES: list[tuple[str, str, dict[str, Any], list[tuple[str, str]]]] = [
    (
        "s3",
        "GetObject",
        {"Bucket": "reports", "Key": "a b/ü/../x+y.csv"},
        [("s3:GetObject", "arn:aws:s3:::reports/a b/ü/../x+y.csv")],
    ),
    (
        "s3",
        "get_object",
        {"Bucket": "reports", "Key": "k"},
        [("s3:GetObject", "arn:aws:s3:::reports/k")],
    ),
    ("s3", "ListObjectsV2", {"Bucket": "reports"}, [("s3:ListBucket", "arn:aws:s3:::reports")]),
    (
        "s3",
        "HeadObject",
        {"Bucket": "reports", "Key": "k", "VersionId": "v1"},
        [("s3:GetObjectVersion", "arn:aws:s3:::reports/k")],
    ),
    (
        "s3",
        "CopyObject",
        {"Bucket": "dst-b", "Key": "k", "CopySource": "src-b/s"},
        [("s3:GetObject", "arn:aws:s3:::src-b/s"), ("s3:PutObject", "arn:aws:s3:::dst-b/k")],
    ),
    (
        "s3",
        "DeleteObjects",
        {"Bucket": "reports", "Delete": {"Objects": [{"Key": "a"}, {"Key": "b/c"}]}},
        [
            ("s3:DeleteObject", "arn:aws:s3:::reports/a"),
            ("s3:DeleteObject", "arn:aws:s3:::reports/b/c"),
        ],
    ),
    (
        "dynamodb",
        "BatchGetItem",
        {
            "RequestItems": {
                "orders": {"Keys": [{"id": {"S": "1"}}]},
                "users": {"Keys": [{"id": {"S": "1"}}]},
            }
        },
        [
            ("dynamodb:BatchGetItem", TABLE_ARN),
            ("dynamodb:BatchGetItem", f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/users"),
        ],
    ),
    (
        "sqs",
        "SendMessage",
        {"QueueUrl": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/jobs", "MessageBody": "x"},
        [("sqs:SendMessage", f"arn:aws:sqs:us-east-1:{ACCOUNT}:jobs")],
    ),
    (
        "secretsmanager",
        "GetSecretValue",
        {"SecretId": "prod/db"},
        [("secretsmanager:GetSecretValue", SECRET_ARN)],
    ),
    (
        "ssm",
        "GetParameter",
        {"Name": "/app/db/url"},
        [("ssm:GetParameter", f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/app/db/url")],
    ),
    (
        "lambda",
        "Invoke",
        {"FunctionName": "resize"},
        [("lambda:InvokeFunction", f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:resize")],
    ),
    (
        "logs",
        "FilterLogEvents",
        {"logGroupName": "/aws/lambda/resize"},
        [
            (
                "logs:FilterLogEvents",
                f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/resize",
            )
        ],
    ),
    (
        "sns",
        "Publish",
        {"TopicArn": f"arn:aws:sns:us-east-1:{ACCOUNT}:alerts", "Message": "m"},
        [("sns:Publish", f"arn:aws:sns:us-east-1:{ACCOUNT}:alerts")],
    ),
    ("sts", "GetCallerIdentity", {}, []),
]


@pytest.mark.parametrize(("service", "operation", "params", "expected"), CASES)
def test_plan_maps_like_the_gateway(
    service: str, operation: str, params: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    answer = plan([PlannedCall(service, operation, params)], ACCOUNT).as_dict()
    assert [(a["action"], a["arn"]) for a in answer["access"]] == expected
    if expected:
        assert answer["grant_request"]["actions"] == list(dict.fromkeys(a for a, _ in expected))
        assert "problem" not in answer["grant_request"]
    else:
        assert answer["grant_request"] is None
        assert "needs no grant scope" in answer["notes"][0]


def test_secret_by_name_is_marked_and_explained() -> None:
    answer = plan(
        [PlannedCall("secretsmanager", "GetSecretValue", {"SecretId": "prod/db"})], ACCOUNT
    )
    assert answer.as_dict()["access"][0]["match"] == "secret-name"
    assert any("name-only ARN" in n for n in answer.notes())


def test_prefix_and_cross_product_notes() -> None:
    answer = plan(
        [
            PlannedCall("s3", "GetObject", {"Bucket": "reports", "Key": "in.csv"}),
            PlannedCall(
                "s3", "PutObject", {"Bucket": "reports", "Key": "out/"}, each_key_under_prefix=True
            ),
        ],
        ACCOUNT,
    ).as_dict()
    assert answer["resources"] == ["arn:aws:s3:::reports/in.csv", "arn:aws:s3:::reports/out/*"]
    notes = " ".join(answer["notes"])
    assert "prefix grant" in notes
    assert "would also cover s3:GetObject on arn:aws:s3:::reports/out/*" in notes


def test_refusals_name_the_problem() -> None:
    with pytest.raises(UnsupportedCall, match="service 'ec2' is not supported"):
        plan([PlannedCall("ec2", "DescribeInstances")], ACCOUNT)
    with pytest.raises(InvalidRequest, match="no operation 'GetObjekt'"):
        plan([PlannedCall("s3", "GetObjekt", {})], ACCOUNT)
    with pytest.raises(InvalidRequest, match='Missing required parameter.*"Key"'):
        plan([PlannedCall("s3", "GetObject", {"Bucket": "reports"})], ACCOUNT)
    with pytest.raises(InvalidRequest, match="unknown AWS service"):
        plan([PlannedCall("nosuchservice", "Get", {})], ACCOUNT)
    with pytest.raises(InvalidRequest, match="S3 object operations"):
        plan(
            [
                PlannedCall(
                    "dynamodb", "GetItem", {"TableName": "t", "Key": {}}, each_key_under_prefix=True
                )
            ],
            ACCOUNT,
        )
    with pytest.raises(InvalidRequest, match="at least one"):
        plan([], ACCOUNT)


# --- the AWS CLI translation ---------------------------------------------------------------
S3_COMMANDS = [
    (
        "aws s3 cp s3://reports/q3.csv -",
        [("GetObject", {"Bucket": "reports", "Key": "q3.csv"}, False)],
    ),
    (
        "s3 cp ./q3.csv s3://reports/in/",
        [("PutObject", {"Bucket": "reports", "Key": "in/q3.csv"}, False)],
    ),
    (
        "aws s3 mv s3://reports/a.csv s3://archive/a.csv",
        [
            (
                "CopyObject",
                {"Bucket": "archive", "Key": "a.csv", "CopySource": "reports/a.csv"},
                False,
            ),
            ("DeleteObject", {"Bucket": "reports", "Key": "a.csv"}, False),
        ],
    ),
    ("aws s3 ls", [("ListBuckets", {}, False)]),
    (
        "aws s3 ls s3://reports/2026/",
        [("ListObjectsV2", {"Bucket": "reports", "Prefix": "2026/"}, False)],
    ),
    (
        "aws s3 cp s3://reports/2026/ ./local --recursive --exclude '*.tmp'",
        [
            ("ListObjectsV2", {"Bucket": "reports", "Prefix": "2026/"}, False),
            ("GetObject", {"Bucket": "reports", "Key": "2026/"}, True),
        ],
    ),
    (
        "aws s3 sync ./out s3://reports/out/ --delete",
        [
            ("ListObjectsV2", {"Bucket": "reports", "Prefix": "out/"}, False),
            ("PutObject", {"Bucket": "reports", "Key": "out/"}, True),
            ("DeleteObject", {"Bucket": "reports", "Key": "out/"}, True),
        ],
    ),
    (
        "aws s3 rm s3://reports/tmp.csv",
        [("DeleteObject", {"Bucket": "reports", "Key": "tmp.csv"}, False)],
    ),
    (
        "aws --region eu-west-1 s3 presign s3://reports/q3.csv",
        [("GetObject", {"Bucket": "reports", "Key": "q3.csv"}, False)],
    ),
    (
        "aws s3 cp f.txt s3://reports/f.txt --acl public-read",
        [("PutObject", {"Bucket": "reports", "Key": "f.txt", "ACL": "public-read"}, False)],
    ),
]


@pytest.mark.parametrize(("line", "expected"), S3_COMMANDS)
def test_high_level_s3_commands(
    line: str, expected: list[tuple[str, dict[str, Any], bool]]
) -> None:
    import shlex

    calls = plan_aws_command(shlex.split(line), default_region="us-east-1")
    got = [(c["operation"], c["params"], c.get("each_key_under_prefix", False)) for c in calls]
    assert got == expected
    assert all(c["service"] == "s3" for c in calls)
    region = "eu-west-1" if "eu-west-1" in line else "us-east-1"
    assert all(c["region"] == region for c in calls)


@pytest.mark.parametrize(
    "line",
    ["aws s3 cp a b", "aws s3 website s3://b", "aws s3", "aws", "aws s3 cp s3://reports/ -"],
)
def test_s3_commands_not_understood(line: str) -> None:
    with pytest.raises(AwsCliNotUnderstood):
        plan_aws_command(line.split(), default_region="us-east-1")


def test_low_level_commands_use_the_aws_cli_parser() -> None:
    (call,) = plan_aws_command(
        [
            "aws",
            "dynamodb",
            "get-item",
            "--table-name",
            "orders",
            "--key",
            "id={S=o-1}",
            "--profile",
            "nope",
        ],
        default_region="eu-west-1",
    )
    assert call == {
        "service": "dynamodb",
        "operation": "GetItem",
        "params": {"TableName": "orders", "Key": {"id": {"S": "o-1"}}},
        "region": "eu-west-1",
    }
    (call,) = plan_aws_command(
        ["aws", "s3api", "get-object", "--bucket", "reports", "--key", "2026/q3.csv", "out.csv"],
        default_region="us-east-1",
    )
    assert (call["operation"], call["params"]["Key"]) == ("GetObject", "2026/q3.csv")
    with pytest.raises(AwsCliNotUnderstood, match="get-item"):
        plan_aws_command(["aws", "dynamodb", "get-itme"], default_region="us-east-1")


# --- POST /v1/scope ------------------------------------------------------------------------
@pytest.fixture
def scope_api(core: Jitgate) -> Iterator[TestClient]:
    with TestClient(create_control_app(core, account_id=ACCOUNT)) as client:
        yield client


def test_scope_api(scope_api: TestClient, agent_token: Any, auditor_token: Any) -> None:
    agent = bearer(agent_token())
    body = {
        "service": "s3",
        "operation": "GetObject",
        "params": {"Bucket": "reports", "Key": "2026/q3.csv"},
    }
    response = scope_api.post("/v1/scope", json=body, headers=agent)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["actions"] == ["s3:GetObject"] and answer["resources"] == [OBJECT_ARN]
    assert answer["account"] == ACCOUNT
    assert answer["decision"]["route"] == "auto"  # the asking agent's policy preview

    many = {
        "calls": [
            body,
            {"service": "s3", "operation": "ListObjectsV2", "params": {"Bucket": "reports"}},
        ]
    }
    answer = scope_api.post("/v1/scope", json=many, headers=bearer(auditor_token())).json()
    assert answer["actions"] == ["s3:GetObject", "s3:ListBucket"]
    assert "decision" not in answer  # people get the mapping, not a preview for themselves

    assert scope_api.post("/v1/scope", json=body).status_code == 401
    refused = scope_api.post(
        "/v1/scope", json={"service": "ec2", "operation": "DescribeInstances"}, headers=agent
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "unsupported_operation"
    bad = scope_api.post(
        "/v1/scope", json={"service": "s3", "operation": "GetObject", "extra": 1}, headers=agent
    )
    assert bad.status_code == 400 and "extra" in bad.json()["message"]
    bad = scope_api.post("/v1/scope", content=b"{", headers=agent)
    assert bad.status_code == 400


def test_scope_api_without_an_account(api: TestClient, agent_token: Any) -> None:
    body = {"service": "s3", "operation": "GetObject", "params": {"Bucket": "reports", "Key": "k"}}
    response = api.post("/v1/scope", json=body, headers=bearer(agent_token()))
    assert response.status_code == 503
    assert "account_id" in response.json()["message"]


# --- the CLI -------------------------------------------------------------------------------
@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setattr(cli.console, "_width", 250)
    monkeypatch.setattr(cli.err, "_width", 250)
    yield CliRunner()
    while cli._opened:
        cli._opened.pop().close()


def test_scope_for_cli_local(home: Any, runner: CliRunner) -> None:
    result = runner.invoke(
        cli.app,
        ["scope-for", "--account", ACCOUNT, "--", "aws", "s3", "cp", "s3://reports/q3.csv", "-"],
    )
    assert result.exit_code == 0, result.output
    assert "arn:aws:s3:::reports/q3.csv" in result.stdout
    assert (
        "jitgate credentials --action s3:GetObject --resource 'arn:aws:s3:::reports/q3.csv'"
        in result.stdout
    )
    result = runner.invoke(
        cli.app,
        [
            "scope-for",
            "--json",
            "--account",
            ACCOUNT,
            "--service",
            "dynamodb",
            "--operation",
            "GetItem",
            "--params",
            '{"TableName": "orders", "Key": {"id": {"S": "o-1"}}}',
        ],
    )
    assert result.exit_code == 0, result.output
    import json

    assert json.loads(result.stdout)["resources"] == [TABLE_ARN]
    result = runner.invoke(
        cli.app, ["scope-for", "--", "aws", "s3", "cp", "s3://reports/q3.csv", "-"]
    )
    assert result.exit_code == 1 and "--account" in result.stderr
    result = runner.invoke(
        cli.app, ["scope-for", "--account", ACCOUNT, "--", "aws", "ec2", "describe-instances"]
    )
    assert result.exit_code == 1 and "not supported" in result.stderr


# --- end to end: what scope-for says is what the gateway allows ---------------------------
@pytest.mark.slow
def test_a_grant_of_the_planned_scope_allows_exactly_the_planned_call(stack: Stack) -> None:
    queue_url = stack.moto.client("sqs").get_queue_url(QueueName="jobs")["QueueUrl"]  # type: ignore[attr-defined]
    planned = [
        ("s3", "GetObject", {"Bucket": "reports", "Key": "2026/q3.csv"}),
        ("dynamodb", "GetItem", {"TableName": "orders", "Key": {"id": {"S": "o-1"}}}),
        ("sqs", "SendMessage", {"QueueUrl": queue_url, "MessageBody": "hello"}),
        ("secretsmanager", "GetSecretValue", {"SecretId": "prod/db"}),
    ]
    with Gate(stack.url, stack.token, progress=None, poll_interval=0.05) as gate:
        for service, operation, params in planned:
            scope = gate.scope_for(service, operation, params)
            if scope.raw["decision"]["route"] == "required":
                stack.approve_next()
            with gate.grant(scope=scope, reason=f"planned {operation}") as aws:
                client = aws.client(service)
                method = getattr(client, __import__("botocore").xform_name(operation))
                method(**params)  # the planned call: allowed
                assert aws.grant.actions == scope.actions
            usage = gate.usage(aws.grant.id)
            assert usage["tight"] and usage["calls"] == {"allowed": 1, "denied": 0}
        # A neighbouring call is outside the planned scope and refused by the gateway.
        scope = gate.scope_for("s3", "GetObject", {"Bucket": "reports", "Key": "2026/q3.csv"})
        with gate.grant(scope=scope, reason="q3 only") as aws:
            with pytest.raises(ClientError) as denied:
                aws.client("s3").get_object(Bucket="reports", Key="2026/q2.csv")
            assert "AccessDenied" in str(denied.value)
        with pytest.raises(ScopeUnavailable, match="not supported"):
            gate.scope_for("ec2", "DescribeInstances")


@pytest.mark.slow
def test_scope_for_cli_against_a_server(stack: Stack, runner: CliRunner) -> None:
    result = runner.invoke(
        cli.app,
        [
            "scope-for",
            "--json",
            "--server",
            stack.url,
            "--token",
            stack.token,
            "--",
            "aws",
            "s3",
            "sync",
            "s3://reports/2026/",
            "./local",
        ],
    )
    assert result.exit_code == 0, result.output
    import json

    answer = json.loads(result.stdout)
    assert answer["actions"] == ["s3:ListBucket", "s3:GetObject"]
    assert answer["resources"] == ["arn:aws:s3:::reports", "arn:aws:s3:::reports/2026/*"]
    assert answer["decision"]["route"] == "denied"  # the default policy allows no prefix grant
