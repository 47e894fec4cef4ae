"""A whole call in-process: jitgate's ASGI app against the bare hop's, no server, no load generator.

The same signed requests (as ASGI scopes) go straight into each app on one uvloop, with the
fast nginx upstream behind both, ``concurrency`` calls at a time. What is measured is the CPU
time of this process per call (every thread: the audit writer's sync thread too), so it holds
only the apps, their upstream client and the audit log: not uvicorn's parsing, not wrk, not
the load those put on a shared 2-core machine. The difference between the two apps is what
jitgate's checks, record and re-signing cost, measured far more steadily than through wrk.

Run: .venv/bin/python -m benchmarks.gateway_inprocess --upstream-port PORT [--calls N] [--json]
(benchmarks/gateway.py runs it against its own fast upstream and prints the table).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from botocore.credentials import Credentials as BotoCredentials

from benchmarks.gateway_launcher import ACCOUNT_ID, issue_grants
from benchmarks.gateway_load import FAST_CREDS, OPS, Creds, Op, build_pool
from benchmarks.passthrough import LeanPassthrough
from jitgate.config import load_settings
from jitgate.core import build, init_home
from jitgate.server import build_aws_endpoint, settle_for_serving

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
MEASURED_OPS = ("S3 GetObject 1 KiB", "DynamoDB GetItem")


def scope_of(request: bytes, body: bytes) -> dict[str, Any]:
    """The ASGI scope uvicorn would build for a raw request head."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    method, target, _ = head[0].split(b" ")
    path, _, query = target.partition(b"?")
    headers = []
    for line in head[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method.decode(),
        "scheme": "http",
        "path": path.decode(),
        "raw_path": path,
        "query_string": query,
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8750),
        "_body": body,
    }


async def _call(app: App, scope: dict[str, Any], statuses: list[int]) -> None:
    body = scope["_body"]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)


async def drive(app: App, scopes: list[dict[str, Any]], concurrency: int) -> tuple[float, float]:
    """Run every scope through ``app``, ``concurrency`` at a time: (CPU s, wall s)."""
    pending = iter(scopes)
    statuses: list[int] = []

    async def worker() -> None:
        for scope in pending:
            await _call(app, scope, statuses)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    bad = [status for status in statuses if status != 200]
    if bad or len(statuses) != len(scopes):
        raise RuntimeError(f"{len(bad)} answers were not 200 (first: {bad[:3]})")
    return cpu, wall


async def measure(
    upstream_port: int, calls: int, reps: int, concurrencies: tuple[int, ...]
) -> list[dict[str, Any]]:
    upstream = f"http://127.0.0.1:{upstream_port}"
    home = Path(tempfile.mkdtemp(prefix="jitgate-bench-inprocess-"))
    rows: list[dict[str, Any]] = []
    try:
        init_home(home)
        apps: list[tuple[str, App, dict[str, Creds]]] = []
        hop = LeanPassthrough(upstream)
        apps.append(("python hop", hop, {op.service: FAST_CREDS for op in OPS}))
        endpoints = []
        for durability in ("fsync", "os"):
            core = build(dataclasses.replace(load_settings(home), audit_durability=durability))
            grants = issue_grants(core) if not endpoints else endpoints[0][2]
            endpoint = build_aws_endpoint(
                core,
                upstream_endpoint=upstream,
                credentials=BotoCredentials(FAST_CREDS.access_key, FAST_CREDS.secret_key),
                account_id=ACCOUNT_ID,
            )
            await endpoint.upstream.start()
            endpoint.batcher.start()
            endpoints.append((core, endpoint, grants))
            creds = {
                name: Creds(g["AccessKeyId"], g["SecretAccessKey"], g["SessionToken"])
                for name, g in grants.items()
            }
            apps.append((f"jitgate, audit {durability}", endpoint, creds))
        settle_for_serving()
        for op in (op for op in OPS if op.name in MEASURED_OPS):
            for concurrency in concurrencies:
                best: dict[str, tuple[float, float]] = {}
                for _ in range(reps):  # the apps interleaved, rep by rep
                    for label, app, creds in apps:
                        scopes = _scopes(op, creds[op.service], calls)
                        cpu, wall = await drive(app, scopes, concurrency)
                        if label not in best or cpu < best[label][0]:
                            best[label] = (cpu, wall)
                for label, (cpu, wall) in best.items():
                    rows.append(
                        {
                            "op": op.name,
                            "concurrency": concurrency,
                            "app": label,
                            "cpu_us": cpu / calls * 1e6,
                            "wall_us": wall / calls * 1e6,
                        }
                    )
        for core, endpoint, _ in endpoints:
            await endpoint.batcher.drain()
            endpoint.batcher.stop()
            await endpoint.upstream.close()
            core.close()
        await hop.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return rows


def _scopes(op: Op, creds: Creds, count: int) -> list[dict[str, Any]]:
    return [
        scope_of(request, op.body) for request in build_pool(op, "127.0.0.1:8750", creds, count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream-port", type=int, required=True, help="the fast nginx upstream")
    parser.add_argument("--calls", type=int, default=3000, help="calls per app, per run")
    parser.add_argument("--reps", type=int, default=3, help="runs per cell (the cheapest is kept)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    rows = uvloop.run(measure(args.upstream_port, args.calls, args.reps, (1, 32)))
    if args.json:
        print(json.dumps(rows))
        return
    for row in rows:
        print(
            f"{row['op']:20} c={row['concurrency']:<3} {row['app']:22} "
            f"CPU {row['cpu_us']:7.1f} µs  wall {row['wall_us']:7.1f} µs a call"
        )


if __name__ == "__main__":
    main()
