"""Control-plane benchmark: grant request -> active, Cedar decisions, audit append and verify.

Run: .venv/bin/python -m benchmarks.control_plane [--quick]
Targets (issue 2): p50 <= 5 ms and >= 300 grants/s from one process on SQLite; <= 100 us per
Cedar decision; audit verify >= 200,000 events/s. Numbers on a shared 2-core machine are
noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from benchmarks.common import jitgate_core, postgres_available, summary, table
from jitgate.audit.chain import GENESIS, canonical_json, event_hash, verify_rows
from jitgate.audit.log import NewEvent
from jitgate.sandbox.moto import free_port
from jitgate.scope import build_scope
from jitgate.server import Listeners, ServerThread

GRANT = {
    "actions": ["s3:GetObject"],
    "resources": ["arn:aws:s3:::reports/2026/q3.csv"],
    "duration_seconds": 300,
    "reason": "benchmark",
}


def bench_service(backend: str, requests: int, concurrency: int) -> tuple[float, float, float]:
    """Grant requests through the service layer (no HTTP): p50 ms, p99 ms, grants/s."""
    with jitgate_core(backend) as core:
        core.identity.create_agent("bench")
        principal = core.identity.authenticate(core.identity.create_agent("bench2")[1])
        latencies: list[float] = []

        def one(_: int) -> None:
            start = time.perf_counter()
            grant, _ = core.grants.request(
                principal,
                **{k: GRANT[k] for k in ("actions", "resources", "duration_seconds", "reason")},
            )
            latencies.append(time.perf_counter() - start)
            assert grant.status == "active"

        for i in range(20):
            one(i)
        latencies.clear()
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - started
        p50, p99, _ = summary(latencies)
        return p50 * 1000, p99 * 1000, requests / elapsed


def bench_http(backend: str, requests: int, concurrency: int) -> tuple[float, float, float]:
    """Grant requests over the real HTTP API (uvicorn + httpx): p50 ms, p99 ms, grants/s."""
    with jitgate_core(backend) as core:
        _, token = core.identity.create_agent("bench")
        port = free_port()
        server = ServerThread(core, Listeners(("127.0.0.1", port))).start()
        try:
            return asyncio.run(_http_load(f"http://127.0.0.1:{port}", token, requests, concurrency))
        finally:
            server.stop()


async def _http_load(
    url: str, token: str, requests: int, concurrency: int
) -> tuple[float, float, float]:
    latencies: list[float] = []
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=httpx.Limits(max_connections=concurrency)
    ) as client:
        for _ in range(10):
            (await client.post("/v1/grants", json=GRANT)).raise_for_status()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                start = time.perf_counter()
                response = await client.post("/v1/grants", json=GRANT)
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 201 and response.json()["status"] == "active"

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    p50, p99, _ = summary(latencies)
    return p50 * 1000, p99 * 1000, requests / elapsed


def bench_decisions(count: int) -> tuple[float, float]:
    """Cedar decision time per (action, resource) pair, in microseconds: 1 pair and 10 pairs."""
    with jitgate_core("sqlite") as core:
        one = build_scope(["s3:GetObject"], ["arn:aws:s3:::reports/2026/q3.csv"])
        ten = build_scope(
            ["s3:GetObject", "s3:PutObject"],
            [f"arn:aws:s3:::reports/2026/{i}.csv" for i in range(5)],
        )
        results = []
        for scope in (one, ten):
            for _ in range(50):
                core.policy.decide("bench", ["g"], scope, 300, "r")
            started = time.perf_counter()
            for _ in range(count):
                core.policy.decide("bench", ["g"], scope, 300, "r")
            results.append((time.perf_counter() - started) / count / len(scope.pairs) * 1e6)
        return results[0], results[1]


def bench_audit(backend: str, events: int) -> tuple[float, float, float]:
    """Audit appends/s one event per transaction, appends/s in batches of 256, verify events/s."""
    with jitgate_core(backend) as core:
        now = core.clock.now()
        event = NewEvent(
            "bench.event", "bench", agent="a", grant_id="g", data={"n": 1, "path": "/x" * 20}
        )
        single = min(events // 10, 2000)
        started = time.perf_counter()
        for _ in range(single):
            core.audit.record(now, event)
        single_rate = single / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(events // 256):
            core.audit.record(now, *([event] * 256))
        batch_rate = (events // 256) * 256 / (time.perf_counter() - started)
        total = core.audit.count()
        started = time.perf_counter()
        result = core.audit.verify()
        verify_rate = total / (time.perf_counter() - started)
        assert result.ok, result
        return single_rate, batch_rate, verify_rate


def bench_verify_pure(events: int) -> float:
    """Chain verification without the database: events/s of the pure walk."""
    rows = []
    previous = GENESIS
    for seq in range(1, events + 1):
        body = canonical_json(
            {
                "seq": seq,
                "ts": "2026-11-28T00:00:00.000Z",
                "type": "call.allowed",
                "actor": "agent:a",
                "agent": "a",
                "grant_id": "gr-1",
                "data": {"operation": "GetObject", "path": "/reports/2026/q3.csv"},
            }
        )
        digest = event_hash(previous, body)
        rows.append((seq, previous, digest, body))
        previous = digest
    started = time.perf_counter()
    assert verify_rows(rows).ok
    return events / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer requests (for a smoke run)")
    args = parser.parse_args()
    n = 200 if args.quick else 1500
    backends = ["sqlite"] + (["postgresql"] if postgres_available() else [])

    rows = []
    for backend in backends:
        for concurrency in (1, 16):
            p50, p99, rate = bench_service(backend, n, concurrency)
            rows.append((backend, "service", concurrency, p50, p99, rate))
            p50, p99, rate = bench_http(backend, n, concurrency)
            rows.append((backend, "HTTP API", concurrency, p50, p99, rate))
    table(
        "grant request -> active (auto route)",
        ["store", "path", "clients", "p50 ms", "p99 ms", "grants/s"],
        rows,
    )

    one, ten = bench_decisions(2000 if not args.quick else 300)
    table(
        "Cedar decision",
        ["request", "us per pair"],
        [("1 pair", one), ("10 pairs (per pair)", ten)],
    )

    rows = []
    for backend in backends:
        single, batch, verify = bench_audit(backend, 20_000 if not args.quick else 3000)
        rows.append((backend, single, batch, verify))
    rows.append(
        ("(pure, no database)", "", "", bench_verify_pure(200_000 if not args.quick else 20_000))
    )
    table(
        "audit log",
        ["store", "appends/s (1 per txn)", "appends/s (256 per txn)", "verify events/s"],
        rows,
    )


if __name__ == "__main__":
    main()
