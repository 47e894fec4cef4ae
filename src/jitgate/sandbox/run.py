"""``jitgate sandbox``: jitgate in front of an embedded moto "AWS", ready for an agent."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from rich.console import Console

from jitgate.config import CONFIG_NAME, load_settings
from jitgate.core import build, init_home
from jitgate.sandbox.moto import ACCOUNT_ID, seed_demo_data, start_moto
from jitgate.server import Listeners, ServerThread, build_aws_endpoint


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so the finally blocks stop the servers and the moto process


def run_sandbox(
    home: Path, control: tuple[str, int], aws: tuple[str, int], console: Console
) -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if not (home / CONFIG_NAME).exists():
        init_home(home)
    moto = start_moto()
    try:
        seed_demo_data(moto)
        core = build(load_settings(home))
        endpoint = build_aws_endpoint(
            core,
            upstream_endpoint=moto.endpoint,
            credentials=moto.credentials,
            account_id=ACCOUNT_ID,
        )
        server = ServerThread(core, Listeners(control, aws), endpoint).start()
        control_url = f"http://{control[0]}:{control[1]}"
        console.print(
            f"[bold]jitgate sandbox[/bold] (home {home}); moto plays AWS at {moto.endpoint}"
        )
        console.print(f"  control plane   {control_url}")
        console.print(
            f"  endpoint_url    http://{aws[0]}:{aws[1]}   (point boto3 / the AWS CLI here)"
        )
        console.print(
            "  seeded          s3://reports/2026/{q2,q3,payroll}.csv, dynamodb table orders,"
        )
        console.print("                  sqs queue jobs, secret prod/db")
        console.print("  an agent token  jitgate agents create my-agent --json")
        console.print(
            f"  a grant         curl -s {control_url}/v1/grants -H 'authorization: Bearer $TOKEN' "
            """-d '{"actions":["s3:GetObject"],"resources":["arn:aws:s3:::reports/2026/q3.csv"],"reason":"try it"}'"""
        )
        console.print("Ctrl-C stops it.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            core.close()
    finally:
        moto.stop()
