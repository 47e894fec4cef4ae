"""One side of benchmarks/ab_inprocess.py: jitgate's ASGI app in-process, driven in bursts.

Run as a file (``python benchmarks/ab_worker.py ...``) with the revision under test first on
PYTHONPATH (its ``src`` and its root), so jitgate and the in-process helpers are that
revision's own. It builds the endpoint once, prints ``ready``, then for each line on stdin
runs ``--calls`` calls ``--concurrency`` at a time and prints one JSON line: CPU and wall
time per call, and (at concurrency 1) the median call's wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from botocore.credentials import Credentials as BotoCredentials

from benchmarks.gateway_inprocess import _call, _scopes, drive
from benchmarks.gateway_launcher import ACCOUNT_ID, issue_grants
from benchmarks.gateway_load import FAST_CREDS, OPS, Creds
from jitgate.config import load_settings
from jitgate.core import build, init_home
from jitgate.server import build_aws_endpoint, settle_for_serving


async def burst(app: Any, scopes: list[dict[str, Any]], concurrency: int) -> dict[str, float]:
    calls = len(scopes)
    if concurrency > 1:
        cpu, wall = await drive(app, scopes, concurrency)
        return {"cpu_us": cpu / calls * 1e6, "wall_us": wall / calls * 1e6, "p50_us": 0.0}
    statuses: list[int] = []
    walls: list[float] = []
    cpu = time.process_time()
    for scope in scopes:
        started = time.perf_counter()
        await _call(app, scope, statuses)
        walls.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    if any(status != 200 for status in statuses):
        raise RuntimeError(f"answers that were not 200: {sorted(set(statuses))}")
    return {
        "cpu_us": cpu / calls * 1e6,
        "wall_us": sum(walls) / calls * 1e6,
        "p50_us": statistics.median(walls) * 1e6,
    }


async def serve(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="jitgate-ab-worker-"))
    try:
        init_home(home)
        settings = dataclasses.replace(load_settings(home), audit_durability=args.durability)
        core = build(settings)
        grants = issue_grants(core)
        endpoint = build_aws_endpoint(
            core,
            upstream_endpoint=f"http://127.0.0.1:{args.upstream_port}",
            credentials=BotoCredentials(FAST_CREDS.access_key, FAST_CREDS.secret_key),
            account_id=ACCOUNT_ID,
        )
        await endpoint.upstream.start()
        endpoint.batcher.start()
        op = next(op for op in OPS if op.name == args.op)
        grant = grants[op.service]
        creds = Creds(grant["AccessKeyId"], grant["SecretAccessKey"], grant["SessionToken"])
        settle_for_serving()
        loop = asyncio.get_running_loop()
        print("ready", flush=True)
        while await loop.run_in_executor(None, sys.stdin.readline):
            scopes = _scopes(op, creds, args.calls)  # signed now: within SigV4's window
            print(json.dumps(await burst(endpoint, scopes, args.concurrency)), flush=True)
        await endpoint.batcher.drain()
        endpoint.batcher.stop()
        await endpoint.upstream.close()
        core.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--op", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--durability", default="fsync")
    uvloop.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
