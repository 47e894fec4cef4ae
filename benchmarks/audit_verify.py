"""Audit integrity benchmark: signing, shipping and verifying the record.

Builds a log of N events (distinct call.allowed events, as the gateway writes them) sealed by a
signed checkpoint every 10,000 events, ships it to a JSON Lines file and to S3 (a local moto
server with Object Lock), then times `verify_record` on: the database alone (chain + every
checkpoint signature), each copy alone (no database), and the database against each copy.
Target: >= 200,000 events/s. Rates are events in the record / wall time.

    python -m benchmarks.audit_verify [--events N] [--quick] [--no-s3] [--postgresql]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import jitgate_core, postgres_available, table
from jitgate.audit.copies import FileCopy, S3Copy
from jitgate.audit.log import NewEvent, append
from jitgate.audit.sinks import FileSink, S3Sink
from jitgate.audit.verify import verify_record
from jitgate.clock import FakeClock

PER_CHECKPOINT = 10_000
PER_TRANSACTION = 5_000


def fill(core, clock: FakeClock, events: int) -> float:  # type: ignore[no-untyped-def]
    """Append ``events`` events, a checkpoint every PER_CHECKPOINT; returns ms per checkpoint."""
    signing = 0.0
    made = 0
    written = 0
    while written < events:
        count = min(PER_TRANSACTION, events - written)
        batch = [
            NewEvent(
                "call.allowed",
                "agent:reporter",
                agent="reporter",
                grant_id=f"gr-{(written + i) // 50}",
                data={
                    "request_id": uuid.uuid4().hex,
                    "service": "s3",
                    "operation": "GetObject",
                    "method": "GET",
                    "path": f"/reports/2026/q{(written + i) % 4 + 1}.csv",
                    "access": [["s3:GetObject", "arn:aws:s3:::reports/2026/q3.csv"]],
                },
            )
            for i in range(count)
        ]
        with core.db.write() as connection:
            append(connection, clock.now(), batch)
        written += count
        if written % PER_CHECKPOINT == 0 or written == events:
            clock.advance(60)
            started = time.perf_counter()
            core.integrity.checkpoint("interval")
            signing += time.perf_counter() - started
            made += 1
    return signing / made * 1000


def timed(label: str, events: int, **kwargs: object) -> tuple[str, int, float, float, str]:
    started = time.perf_counter()
    report = verify_record(**kwargs)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    assert report.ok, report.problems
    return (label, events, seconds, events / seconds, "ok")


def run(backend: str, events: int, s3: bool) -> None:
    clock = FakeClock()
    with jitgate_core(backend, clock) as core:
        started = time.perf_counter()
        per_checkpoint_ms = fill(core, clock, events)
        fill_seconds = time.perf_counter() - started
        keyring = core.integrity.keyring()
        path = Path(tempfile.mkdtemp(prefix="jitgate-bench-copy-")) / "audit.jsonl"
        sinks: list[object] = [FileSink(path)]
        moto = None
        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        if s3:
            from jitgate.sandbox.moto import start_moto

            moto = start_moto()
            client = moto.client("s3")
            client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)  # type: ignore[attr-defined]
            sinks.append(S3Sink(client, bucket, "bench", retain_days=1))
        try:
            core.integrity.set_sinks(sinks)  # type: ignore[arg-type]
            ship_rows = []
            for sink in sinks:
                started = time.perf_counter()
                core.integrity.shipper.ship(sink)  # type: ignore[arg-type]
                seconds = time.perf_counter() - started
                label = "S3 (moto, Object Lock)" if sink.kind == "s3" else "a JSON Lines file"  # type: ignore[attr-defined]
                ship_rows.append((label, events, seconds, events / seconds))
            rows = [
                timed("database alone (chain + signatures)", events, db=core.db, keyring=keyring),
                timed(
                    "file copy alone (no database)", events, copy=FileCopy(path), keyring=keyring
                ),
                timed(
                    "database against the file copy",
                    events,
                    db=core.db,
                    copy=FileCopy(path),
                    keyring=keyring,
                ),
            ]
            if moto is not None:
                client = moto.client("s3")
                rows += [
                    timed(
                        "S3 copy alone (moto, no database)",
                        events,
                        copy=S3Copy(client, bucket, "bench"),
                        keyring=keyring,
                    ),
                    timed(
                        "database against the S3 copy (moto)",
                        events,
                        db=core.db,
                        copy=S3Copy(client, bucket, "bench"),
                        keyring=keyring,
                    ),
                ]
        finally:
            if moto is not None:
                moto.stop()
        checkpoints = (events + PER_CHECKPOINT - 1) // PER_CHECKPOINT
        table(
            f"audit verify on {backend}: {events:,} events, {checkpoints} signed checkpoints",
            ["what", "events", "seconds", "events/s", "result"],
            [(label, f"{n:,}", s, rate, ok) for label, n, s, rate, ok in rows],
        )
        table(
            f"signing and shipping on {backend}",
            ["what", "events", "seconds", "events/s"],
            [
                (
                    "append (5,000 per transaction)",
                    f"{events:,}",
                    fill_seconds,
                    events / fill_seconds,
                ),
                *[(f"ship to {name}", f"{n:,}", s, r) for name, n, s, r in ship_rows],
            ],
        )
        table(
            "checkpoint",
            ["what", "ms"],
            [(f"seal {PER_CHECKPOINT:,} events and sign (Ed25519)", per_checkpoint_ms)],
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--quick", action="store_true", help="30,000 events (a smoke run)")
    parser.add_argument("--no-s3", action="store_true", help="skip the moto S3 copy")
    parser.add_argument("--postgresql", action="store_true", help="also on PostgreSQL")
    args = parser.parse_args()
    events = 30_000 if args.quick else args.events
    run("sqlite", events, not args.no_s3)
    if args.postgresql and postgres_available():
        run("postgresql", events, False)


if __name__ == "__main__":
    main()
