"""Verifying a copy on its own: what at-least-once shipping may produce is accepted, and every
way of altering a copy is named. S3 tests run against moto with Object Lock."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from jitgate.audit.chain import canonical_json, event_hash
from jitgate.audit.copies import FileCopy
from jitgate.audit.integrity import AuditIntegrity
from jitgate.audit.records import (
    batch_bytes,
    body_seq,
    event_line,
    parse_batch,
    parse_checkpoint_line,
    parse_event_line,
)
from jitgate.audit.sinks import S3Sink, SinkError
from jitgate.audit.verify import verify_record
from jitgate.clock import FakeClock
from jitgate.core import Jitgate

from .conftest import history


def messages(report: Any) -> list[str]:
    return [p.message for p in report.problems]


# --- the line format -----------------------------------------------------------------------------
def test_event_lines_carry_the_hashed_bytes_verbatim() -> None:
    body = canonical_json(
        {
            "seq": 7,
            "ts": "2026-11-28T12:00:00.000Z",
            "type": "call.denied",
            "actor": "agent:ö",
            "agent": "ö",
            "grant_id": None,
            "data": {"nested": {"seq": 99}, "text": 'quote " and ,"seq":1 inside'},
        }
    )
    digest = event_hash("0" * 64, body)
    line = event_line("0" * 64, digest, body)
    assert json.loads(line)["event"] == json.loads(body)  # ordinary JSON for a SIEM
    assert parse_event_line(line.rstrip("\n")) == (7, "0" * 64, digest, body)
    assert body_seq(body) == 7
    rows = [(7, "0" * 64, digest, body)]
    assert parse_batch(batch_bytes(rows)) == rows


def test_a_checkpoint_line_keeps_the_signed_body() -> None:
    body, signature = parse_checkpoint_line('{"checkpoint":{"a":1,"b":"x"},"signature":"c2ln"}')
    assert (body, signature) == ('{"a":1,"b":"x"}', "c2ln")


# --- a file copy -----------------------------------------------------------------------------------
@pytest.fixture
def shipped_file(
    integrity: AuditIntegrity, core: Jitgate, clock: FakeClock, file_copy_path: Path
) -> Path:
    history(core, clock, checkpoints=3, per=4)
    assert integrity.verify(FileCopy(file_copy_path)).ok
    return file_copy_path


def rewrite(path: Path, change: Any) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(change(lines)))


def test_editing_an_event_in_the_file_is_caught(
    integrity: AuditIntegrity, shipped_file: Path
) -> None:
    rewrite(
        shipped_file,
        lambda ls: [
            line_.replace("2026/q2.csv", "2026/qX.csv", 1) if '"seq":6,' in line_ else line_
            for line_ in ls
        ],
    )
    report = integrity.verify(FileCopy(shipped_file), database=False)
    assert messages(report) == [
        "copy: the batch of events 5..8 of checkpoint 2 differs from what the checkpoint signed"
    ]


def test_a_checkpoint_missing_from_the_file_is_named(
    integrity: AuditIntegrity, shipped_file: Path
) -> None:
    rewrite(shipped_file, lambda ls: [line_ for line_ in ls if '"number":2,' not in line_])
    report = integrity.verify(FileCopy(shipped_file), database=False)
    assert "copy: checkpoint 2 is missing from the copy" in messages(report)
    with_db = integrity.verify(FileCopy(shipped_file))
    assert "copy: checkpoint 2 is missing from the copy" in messages(with_db)


def test_a_forged_checkpoint_in_the_file_is_caught(
    integrity: AuditIntegrity, shipped_file: Path
) -> None:
    rewrite(
        shipped_file,
        lambda ls: [
            line_.replace('"reason":"interval"', '"reason":"manual"', 1)
            if '"number":3,' in line_
            else line_
            for line_ in ls
        ],
    )
    report = integrity.verify(FileCopy(shipped_file), database=False)
    assert messages(report) == [
        "copy: checkpoint 3's signature does not verify (forged or altered)"
    ]
    assert "checkpoint 3 in the database differs from the copy (replaced)" in messages(
        integrity.verify(FileCopy(shipped_file))
    )


def test_conflicting_redelivery_and_stray_lines(
    integrity: AuditIntegrity, shipped_file: Path
) -> None:
    lines = shipped_file.read_text().splitlines(keepends=True)
    first_event = next(line_ for line_ in lines if line_.startswith('{"event"'))
    with shipped_file.open("a") as handle:
        handle.write(first_event)  # an old event appears again after being sealed
        handle.write("hello\n")
    report = integrity.verify(FileCopy(shipped_file), database=False)
    assert "copy: event 1 appears again at line 17, after checkpoint 3 sealed it" in messages(
        report
    )
    assert f"copy: line 18 of {shipped_file}: not a jitgate record" in messages(report)


def test_keys_found_in_the_copy_are_used_with_a_warning(
    integrity: AuditIntegrity, shipped_file: Path
) -> None:
    report = verify_record(copy=FileCopy(shipped_file))  # no keyring at all: another machine
    assert report.ok
    assert report.copy_events == 12 and report.copy_checkpoints == 3
    assert any("pin the keys with --public-key" in w for w in report.warnings)


def test_unsealed_events_at_the_end_of_the_file_are_a_warning(
    integrity: AuditIntegrity, shipped_file: Path, core: Jitgate
) -> None:
    from jitgate.audit.checkpoint import read_rows

    with core.db.read() as connection:
        data = batch_bytes(list(read_rows(connection, 0, 2)))
    with shipped_file.open("ab") as handle:
        handle.write(data.replace(b'"seq":1,', b'"seq":13,').replace(b'"seq":2,', b'"seq":14,'))
    report = integrity.verify(FileCopy(shipped_file), database=False)
    assert report.ok
    assert any("await their checkpoint" in w for w in report.warnings)


# --- an S3 copy ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_s3_objects_are_locked_and_an_overwrite_is_noticed(
    core: Jitgate, clock: FakeClock, s3: Any
) -> None:
    core.integrity.set_sinks([s3.sink()])
    history(core, clock, checkpoints=2, per=3)
    listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=s3.prefix + "/")["Contents"]
    names = [o["Key"][len(s3.prefix) + 1 :] for o in listed]
    assert names == [
        "checkpoints/00000000000000000001.json",
        "checkpoints/00000000000000000002.json",
        "events/00000000000000000001-00000000000000000003.jsonl",
        "events/00000000000000000004-00000000000000000006.jsonl",
        f"keys/{core.integrity.keyring().current().fingerprint}.json",  # type: ignore[union-attr]
    ]
    key = f"{s3.prefix}/events/00000000000000000001-00000000000000000003.jsonl"
    head = s3.client.head_object(Bucket=s3.bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    version = head["VersionId"]
    with pytest.raises(Exception, match="AccessDenied"):
        s3.client.delete_object(Bucket=s3.bucket, Key=key, VersionId=version)
    # jitgate's own identity can still put a new version on top; the verifier notices
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"{}\n")
    s3.client.delete_object(
        Bucket=s3.bucket, Key=f"{s3.prefix}/checkpoints/00000000000000000002.json"
    )
    report = core.integrity.verify(s3.copy())
    assert [p.kind for p in report.problems] == ["copy_overwritten"]
    assert "was overwritten after jitgate wrote it" in report.problems[0].message
    assert report.copy_events == 6  # the locked originals were verified
    assert any("carries a delete marker" in w for w in report.warnings)


@pytest.mark.slow
def test_a_bucket_without_object_lock_is_refused(
    core: Jitgate, clock: FakeClock, moto_server: Any
) -> None:
    client = moto_server.client("s3")
    bucket = f"plain-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    sink = S3Sink(client, bucket, "x")
    with pytest.raises(SinkError, match="does not have Object Lock enabled"):
        sink.open()
    core.integrity.set_sinks([sink])
    core.integrity.checkpoint()
    assert "does not have Object Lock enabled" in (core.integrity.ship()[sink.name] or "")


@pytest.mark.slow
def test_a_deleted_object_in_an_unlocked_bucket_is_missing(
    core: Jitgate, clock: FakeClock, moto_server: Any
) -> None:
    client = moto_server.client("s3")
    bucket = f"unlocked-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    core.integrity.set_sinks([S3Sink(client, bucket, "p", object_lock=False)])
    history(core, clock, checkpoints=2, per=3)
    client.delete_object(
        Bucket=bucket, Key="p/events/00000000000000000004-00000000000000000006.jsonl"
    )
    from jitgate.audit.copies import S3Copy

    report = core.integrity.verify(S3Copy(client, bucket, "p"), database=False)
    assert [p.kind for p in report.problems] == ["copy_missing"]
    assert report.problems[0].message.startswith(
        "copy: the batch of events 4..6 of checkpoint 2 is missing"
    )


@pytest.mark.parametrize(
    "damage",
    ["none", "alter", "relink", "skip", "repeat"],
)
def test_the_line_walker_agrees_with_the_row_walker(damage: str) -> None:
    from jitgate.audit.chain import GENESIS
    from jitgate.audit.verify import walk, walk_lines

    rows = []
    previous = GENESIS
    for seq in range(1, 6):
        body = canonical_json(
            {
                "seq": seq,
                "ts": "t",
                "type": "x",
                "actor": "a",
                "agent": None,
                "grant_id": None,
                "data": {"n": seq},
            }
        )
        digest = event_hash(previous, body)
        rows.append((seq, previous, digest, body))
        previous = digest
    if damage == "alter":
        rows[2] = (3, rows[2][1], rows[2][2], rows[2][3].replace('"n":3', '"n":9'))
    elif damage == "relink":
        rows[2] = (3, "1" * 64, rows[2][2], rows[2][3])
    elif damage == "skip":
        del rows[2]
    elif damage == "repeat":
        rows.insert(3, rows[2])
    lines = [event_line(r[1], r[2], r[3]).rstrip("\n") for r in rows]
    assert walk_lines(lines, 1, GENESIS) == walk(rows, 1, GENESIS)
