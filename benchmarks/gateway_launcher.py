"""Run jitgate in its own process for the gateway benchmark: what `jitgate serve` runs.

.venv/bin/python -m benchmarks.gateway_launcher --upstream http://127.0.0.1:PORT \
    --upstream-key AK --upstream-secret SK --aws-port PORT --info FILE [--durability os] [--asyncio-loop]

Builds a throwaway home (SQLite, the default policy), an agent, and the benchmark's grants
(approved by a throwaway approver where the policy wants one), then serves the control plane
and the AWS endpoint exactly as ``jitgate serve`` does (``jitgate.server.serve``, sweeper
included). Once both listeners are up it writes the grants' credentials to FILE as JSON. On
SIGTERM it stops cleanly and writes the audit writer's counters to FILE + ".stats".

``--durability os`` sets jitgate's ``[audit] durability`` setting to "os" (calls go upstream
once their event is committed to the operating system; the disk catches up within 50 ms)
instead of the default "fsync", to measure what waiting for the disk costs.
``--asyncio-loop`` runs the same server on asyncio's own event loop instead of uvloop, and
``--switch-interval`` changes how long a thread may hold the GIL while
another waits for it (CPython's default is 5 ms): two more labelled experiments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from botocore.credentials import Credentials as BotoCredentials

from benchmarks.gateway_load import PUT_KEYS
from jitgate.config import load_settings
from jitgate.core import Jitgate, build, init_home
from jitgate.sandbox.moto import free_port
from jitgate.server import (
    Listeners,
    build_aws_endpoint,
    run_event_loop,
    serve,
    settle_for_serving,
)

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
GRANT_SECONDS = 900  # the default policy's longest grant for reads; the run takes < 10 min

#: name -> (actions, resources): one grant per service, each covering what the benchmark calls.
GRANTS = {
    "s3": (
        ["s3:GetObject", "s3:PutObject"],
        [
            "arn:aws:s3:::bench/obj-1k",
            "arn:aws:s3:::bench/obj-1m",
            "arn:aws:s3:::bench/obj-1g",
            "arn:aws:s3:::bench/put-1g",
            *(f"arn:aws:s3:::bench/put-1m-{i:02d}" for i in range(PUT_KEYS)),
        ],
    ),
    "dynamodb": (
        ["dynamodb:GetItem"],
        [f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/orders"],
    ),
}


def issue_grants(core: Jitgate) -> dict[str, dict[str, str]]:
    """The agent's grants, active: {name: AccessKeyId/SecretAccessKey/SessionToken/...}."""
    _, token = core.identity.create_agent("bench-agent")
    agent = core.identity.authenticate(token)
    _, approver_token = core.identity.create_user("bench-approver", "approver")
    approver = core.identity.authenticate(approver_token)
    out: dict[str, dict[str, str]] = {}
    for name, (actions, resources) in GRANTS.items():
        grant, _ = core.grants.request(
            agent,
            actions=actions,
            resources=resources,
            duration_seconds=GRANT_SECONDS,
            reason="gateway benchmark",
        )
        if grant.status == "pending":
            grant = core.grants.approve(approver, grant.id, "benchmark")
        if grant.status != "active" or grant.access_key_id is None or grant.expires_at is None:
            raise RuntimeError(f"grant for {name} is {grant.status}, not active")
        credentials = core.master_key.credentials(grant.access_key_id, grant.id, grant.expires_at)
        out[name] = {**credentials.as_dict(), "GrantId": grant.id}
    return out


async def run(args: argparse.Namespace, home: Path) -> None:
    init_home(home)
    core = build(dataclasses.replace(load_settings(home), audit_durability=args.durability))
    grants = issue_grants(core)
    endpoint = build_aws_endpoint(
        core,
        upstream_endpoint=args.upstream,
        credentials=BotoCredentials(args.upstream_key, args.upstream_secret),
        account_id=ACCOUNT_ID,
    )
    listeners = Listeners(("127.0.0.1", free_port()), ("127.0.0.1", args.aws_port))
    settle_for_serving()  # as `jitgate serve` does
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready() -> None:
        info = {
            "grants": grants,
            "control_port": listeners.control[1],
            "durability": args.durability,
        }
        tmp = Path(args.info + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(args.info)

    try:
        await serve(core, listeners, endpoint=endpoint, ready=ready, stop=stop)
    finally:
        batcher = endpoint.batcher
        Path(args.info + ".stats").write_text(
            json.dumps(
                {
                    "batches": batcher.batches,
                    "written": batcher.written,
                    "failures": batcher.failures,
                }
            )
        )
        core.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT jitgate forwards to")
    parser.add_argument("--upstream-key", required=True, help="jitgate's own access key id")
    parser.add_argument("--upstream-secret", required=True, help="jitgate's own secret key")
    parser.add_argument("--aws-port", type=int, required=True, help="AWS endpoint port")
    parser.add_argument("--info", required=True, help="write grant credentials here (JSON)")
    parser.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    parser.add_argument(
        "--asyncio-loop",
        action="store_true",
        help="run on asyncio's own event loop instead of uvloop (experiment)",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval in seconds (experiment; CPython's default is 0.005)",
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    home = Path(tempfile.mkdtemp(prefix="jitgate-bench-gw-"))
    try:
        if args.asyncio_loop:
            asyncio.run(run(args, home))
        else:
            run_event_loop(run(args, home))  # as `jitgate serve` runs
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
