"""`jitgate serve` itself, as an operator runs it: a process of its own on uvloop, settled for
serving (models loaded, the heap frozen out of the collector's way), stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from jitgate.config import load_settings
from jitgate.core import build, init_home
from jitgate.sandbox.moto import free_port, start_moto

pytestmark = pytest.mark.slow

ACCOUNT = "123456789012"


def test_jitgate_serve_forwards_records_and_stops_cleanly(tmp_path: Path) -> None:
    moto = start_moto(auth=False)
    try:
        direct = boto3.client(
            "s3",
            endpoint_url=moto.endpoint,
            region_name="us-east-1",
            aws_access_key_id="jitgate-own",
            aws_secret_access_key="jitgate-own-secret",
        )
        direct.create_bucket(Bucket="served")
        direct.put_object(Bucket="served", Key="a.txt", Body=b"hello")

        home = tmp_path / "home"
        init_home(home)
        config = home / "jitgate.toml"
        config.write_text(
            config.read_text()
            .replace('# account_id = "123456789012"', f'account_id = "{ACCOUNT}"')
            .replace(
                '# upstream_endpoint = "https://..."', f'upstream_endpoint = "{moto.endpoint}"'
            )
        )
        core = build(load_settings(home))
        _, token = core.identity.create_agent("served-bot")
        agent = core.identity.authenticate(token)
        grant, credentials = core.grants.request(
            agent,
            actions=["s3:GetObject"],
            resources=["arn:aws:s3:::served/a.txt"],
            reason="read one object",
        )
        assert grant.status == "active" and credentials is not None
        core.close()

        control, aws = free_port(), free_port()
        env = dict(
            os.environ,
            JITGATE_HOME=str(home),
            AWS_ACCESS_KEY_ID="jitgate-own",
            AWS_SECRET_ACCESS_KEY="jitgate-own-secret",
        )
        env.pop("JITGATE_DATABASE_URL", None)
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("jitgate")),  # the installed console script
                "serve",
                "--control-listen",
                f"127.0.0.1:{control}",
                "--aws-listen",
                f"127.0.0.1:{aws}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{control}/healthz", timeout=1).is_success:
                        break
                except httpx.HTTPError:
                    pass
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "jitgate serve did not come up"
                time.sleep(0.2)
            agent_s3 = boto3.client(
                "s3",
                endpoint_url=f"http://127.0.0.1:{aws}",
                region_name="us-east-1",
                aws_access_key_id=credentials.access_key_id,
                aws_secret_access_key=credentials.secret_access_key,
                aws_session_token=credentials.session_token,
                config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
            )
            body = agent_s3.get_object(Bucket="served", Key="a.txt")["Body"].read()
            assert body == b"hello"
        finally:
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
    finally:
        moto.stop()

    core = build(load_settings(home))
    try:
        calls = core.audit.events(grant_id=grant.id, types=["call.allowed", "call.completed"])
        assert [e.type for e in calls] == ["call.allowed", "call.completed"]
        assert calls[1].data["status"] == 200
        assert core.audit.verify().ok
    finally:
        core.close()
