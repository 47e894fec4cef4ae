"""``jitgate credentials`` as an AWS credential_process, run by the real AWS CLI against a real
stack, with the profile exactly as docs/aws-cli.md shows it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from client.conftest import OBJECT_ARN, Stack
from jitgate.identity.service import LOCAL_ADMIN

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DOC = Path(__file__).resolve().parents[2] / "docs" / "aws-cli.md"


def documented_profile() -> str:
    """The ```ini block of docs/aws-cli.md that the test runs."""
    text = DOC.read_text(encoding="utf-8")
    marker = text.index("tests/client/test_credential_process.py")
    match = re.search(r"```ini\n(.*?)```", text[marker:], re.S)
    assert match, "docs/aws-cli.md lost its profile example"
    return match.group(1)


def env_for(stack: Stack, tmp_path: Path, config: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JITGATE_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        JITGATE_URL=stack.url,
        JITGATE_TOKEN=stack.token,
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        HOME=str(tmp_path),
    )
    if config is not None:
        path = tmp_path / "aws-config"
        path.write_text(config, encoding="utf-8")
        env["AWS_CONFIG_FILE"] = str(path)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)


def grants_of(stack: Stack) -> list[str]:
    return [g.id for g in stack.core.grants.list(stack.approver, agent=stack.agent)]


def test_credentials_prints_credential_process_json(stack: Stack, tmp_path: Path) -> None:
    result = run(
        [
            str(BIN / "jitgate"),
            "credentials",
            "--action",
            "s3:GetObject",
            "--resource",
            OBJECT_ARN,
            "--minutes",
            "3",
            "--reason",
            "summarise Q3",
        ],
        env_for(stack, tmp_path),
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert set(output) == {
        "Version",
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    }
    assert output["Version"] == 1
    assert output["AccessKeyId"].startswith("ASIAJG")
    expires = datetime.strptime(output["Expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert 150 < (expires - datetime.now(UTC)).total_seconds() <= 180
    (grant,) = stack.core.grants.list(stack.approver, agent=stack.agent)
    assert grant.reason == "summarise Q3" and grant.status == "active"


def test_the_documented_profile_works_with_the_real_aws_cli(stack: Stack, tmp_path: Path) -> None:
    config = documented_profile().replace("http://127.0.0.1:8750", stack.aws_url)
    assert stack.aws_url in config
    env = env_for(stack, tmp_path, config)
    aws = str(BIN / "aws")

    read = run([aws, "--profile", "jitgate-q3", "s3", "cp", "s3://reports/2026/q3.csv", "-"], env)
    assert read.returncode == 0, read.stderr
    assert read.stdout.startswith("region,revenue")

    listing = run([aws, "--profile", "jitgate-q3", "s3", "ls", "s3://reports/2026/"], env)
    assert listing.returncode == 0, listing.stderr
    assert "q3.csv" in listing.stdout

    outside = run(
        [aws, "--profile", "jitgate-q3", "s3", "cp", "s3://reports/2026/payroll.csv", "-"], env
    )
    assert outside.returncode != 0
    assert "403" in outside.stderr or "AccessDenied" in outside.stderr

    who = run([aws, "--profile", "jitgate-q3", "sts", "get-caller-identity"], env)
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["Arn"].endswith("/reporter")

    # Four AWS CLI runs, several API calls each, one grant: the command reused it.
    assert len(grants_of(stack)) == 1
    grant_id = grants_of(stack)[0]
    calls = stack.core.audit.events(grant_id=grant_id, type_prefix="call.", limit=100)
    denied = [e for e in calls if e.type == "call.denied"]
    assert denied and "payroll.csv" in json.dumps(denied[0].data)


def test_a_revoked_grant_is_not_reused(stack: Stack, tmp_path: Path) -> None:
    args = [
        str(BIN / "jitgate"),
        "credentials",
        "-a",
        "s3:GetObject",
        "-r",
        OBJECT_ARN,
        "--reason",
        "read",
    ]
    env = env_for(stack, tmp_path)
    first = json.loads(run(args, env).stdout)
    again = json.loads(run(args, env).stdout)
    assert again["AccessKeyId"] == first["AccessKeyId"]
    (grant_id,) = grants_of(stack)
    stack.core.grants.revoke(LOCAL_ADMIN, grant_id, "test")
    fresh = json.loads(run(args, env).stdout)
    assert fresh["AccessKeyId"] != first["AccessKeyId"]
    no_reuse = json.loads(run([*args, "--no-reuse"], env).stdout)
    assert no_reuse["AccessKeyId"] not in (first["AccessKeyId"], fresh["AccessKeyId"])
    assert len(grants_of(stack)) == 3


def test_pending_then_approved_and_denied_exit_codes(stack: Stack, tmp_path: Path) -> None:
    args = [
        str(BIN / "jitgate"),
        "credentials",
        "-a",
        "s3:PutObject",
        "-r",
        "arn:aws:s3:::reports/out/summary.txt",
        "--reason",
        "write the summary",
    ]
    env = env_for(stack, tmp_path)
    stack.approve_next()
    approved = run(args, env)
    assert approved.returncode == 0, approved.stderr
    assert "waiting for a human approver" in approved.stderr
    assert json.loads(approved.stdout)["Version"] == 1

    stack.approve_next(deny=True, comment="use the staging bucket")
    denied = run([*args, "--no-reuse"], env)
    assert denied.returncode == 1
    assert denied.stdout == ""
    assert "denied" in denied.stderr and "use the staging bucket" in denied.stderr


def test_credentials_refuses_without_an_agent_token(stack: Stack, tmp_path: Path) -> None:
    env = env_for(stack, tmp_path)
    del env["JITGATE_TOKEN"]
    result = run([str(BIN / "jitgate"), "credentials", "-a", "s3:GetObject", "-r", OBJECT_ARN], env)
    assert result.returncode == 1
    assert "JITGATE_TOKEN" in result.stderr
    env["JITGATE_TOKEN"] = stack.approver_token  # a person's token gets no credentials
    result = run([str(BIN / "jitgate"), "credentials", "-a", "s3:GetObject", "-r", OBJECT_ARN], env)
    assert result.returncode == 1
    assert result.stdout == ""
