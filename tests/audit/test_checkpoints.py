"""Signed checkpoints: on an interval of the injected clock, when idle too, on start and stop."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from jitgate.audit.checkpoint import ChainBroken, Checkpoint
from jitgate.audit.integrity import AuditIntegrity
from jitgate.clock import FakeClock
from jitgate.core import Jitgate

from .conftest import record


def stored(core: Jitgate) -> list[Checkpoint]:
    from jitgate.audit.checkpoint import load_checkpoints

    with core.db.read() as connection:
        return load_checkpoints(connection)


def test_a_checkpoint_every_interval_even_when_nothing_happened(
    core: Jitgate, clock: FakeClock
) -> None:
    integrity = core.integrity
    assert integrity.settings.checkpoint_interval_seconds == 60
    record(core, clock, 3)
    integrity.tick()  # none yet: the first is due at once
    assert [c.number for c in stored(core)] == [1]
    clock.advance(59)
    integrity.tick()
    assert len(stored(core)) == 1  # not due before the interval
    clock.advance(1)
    integrity.tick()
    clock.advance(60)
    integrity.tick()
    checkpoints = stored(core)
    assert [(c.number, c.first_seq, c.last_seq, c.events) for c in checkpoints] == [
        (1, 1, 3, 3),
        (2, 4, 3, 0),  # idle: an empty checkpoint proves nothing happened
        (3, 4, 3, 0),
    ]
    assert [c.ts for c in checkpoints] == [
        "2026-11-28T12:00:00.000Z",
        "2026-11-28T12:01:00.000Z",
        "2026-11-28T12:02:00.000Z",
    ]
    assert checkpoints[1].head_hash == checkpoints[0].head_hash == core.audit.head()[1]
    assert checkpoints[1].prev_checkpoint_hash == checkpoints[0].hash
    assert checkpoints[2].prev_checkpoint_hash == checkpoints[1].hash


def test_the_checkpoint_body_names_everything_the_issue_asks_for(
    core: Jitgate, clock: FakeClock
) -> None:
    record(core, clock, 2)
    made = core.integrity.checkpoint("manual")
    assert made is not None
    body = json.loads(made.body)
    assert set(body) == {
        "type",
        "v",
        "number",
        "ts",
        "reason",
        "interval_seconds",
        "first_seq",
        "last_seq",
        "head_hash",
        "prev_checkpoint_hash",
        "batches",
        "key_fingerprint",
        "algorithm",
    }
    assert body["last_seq"] == 2 and body["head_hash"] == core.audit.head()[1]
    assert body["prev_checkpoint_hash"] == "0" * 64
    assert body["algorithm"] == "ed25519"
    keyring = core.integrity.keyring()
    entry = keyring.get(body["key_fingerprint"])
    assert entry is not None
    from jitgate.audit.signing import unb64

    assert keyring.verify(entry, made.body.encode(), unb64(made.signature))
    assert not keyring.verify(
        entry, made.body.replace('"v":1', '"v":2').encode(), unb64(made.signature)
    )


def test_batches_are_cut_at_max_batch_events(core: Jitgate, clock: FakeClock) -> None:
    import dataclasses

    integrity = AuditIntegrity(
        core.db,
        clock,
        dataclasses.replace(core.integrity.settings, max_batch_events=4),
        audit=core.audit,
    )
    record(core, clock, 10)
    made = integrity.checkpoint()
    assert made is not None
    assert [(b.first_seq, b.last_seq) for b in made.batches] == [(1, 4), (5, 8), (9, 10)]


def test_refuses_to_sign_a_broken_chain(core: Jitgate, clock: FakeClock) -> None:
    record(core, clock, 5)
    with core.db.write() as connection:
        connection.execute(
            text("UPDATE audit_events SET body = replace(body, 'q1', 'qq') WHERE seq = 1")
        )
    with pytest.raises(ChainBroken, match="refusing to sign a broken chain: event 1 was altered"):
        core.integrity.checkpoint()
    status = core.integrity.status()
    assert status["alarm"] is True
    assert any("refusing to sign" in alarm for alarm in status["alarms"])


def test_two_processes_sharing_a_database_make_each_checkpoint_once(
    home: Path, database_url: str, clock: FakeClock, core: Jitgate
) -> None:
    from conftest import build_core  # tests/conftest.py

    others = [build_core(home, database_url, clock) for _ in range(3)]
    try:
        record(core, clock, 5)
        barrier = threading.Barrier(len(others))
        made: list[object] = []

        def race(other: Jitgate) -> None:
            barrier.wait()
            made.append(other.integrity.checkpoint("interval", only_if_due=True))

        threads = [threading.Thread(target=race, args=(o,)) for o in others]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(1 for m in made if m is not None) == 1
        assert [c.number for c in stored(core)] == [1]
        assert core.integrity.verify().ok
    finally:
        for other in others:
            other.close()


def test_startup_and_shutdown_checkpoints(core: Jitgate, clock: FakeClock) -> None:
    record(core, clock, 2)
    core.integrity.startup()
    clock.advance(5)
    record(core, clock, 1, start=2)
    core.integrity.shutdown()
    assert [(c.reason, c.last_seq) for c in stored(core)] == [("startup", 2), ("shutdown", 3)]
    # a long silence after a recorded shutdown is explained; no warning
    clock.advance(3600)
    core.integrity.startup()
    report = core.integrity.verify()
    assert report.ok and not [w for w in report.warnings if "no checkpoint for" in w]


def test_a_silence_without_a_shutdown_is_reported(core: Jitgate, clock: FakeClock) -> None:
    core.integrity.checkpoint("startup")
    clock.advance(3600)  # the server died, or someone suppressed checkpoints
    core.integrity.checkpoint("startup")
    report = core.integrity.verify()
    assert report.ok
    assert any("no checkpoint for 1.0h between checkpoint 1" in w for w in report.warnings)


def test_the_newest_checkpoint_going_stale_raises_the_alarm(
    core: Jitgate, clock: FakeClock
) -> None:
    core.integrity.checkpoint("interval")
    assert core.integrity.status()["alarm"] is False
    clock.advance(200)
    status = core.integrity.status()
    assert status["alarm"] is True
    assert "checkpoints have stalled" in status["alarms"][0]
    assert any("is 3m20s old" in w for w in core.integrity.verify().warnings)


def test_a_long_backlog_is_sealed_in_several_checkpoints(core: Jitgate, clock: FakeClock) -> None:
    import dataclasses

    integrity = AuditIntegrity(
        core.db,
        clock,
        dataclasses.replace(core.integrity.settings, max_batch_events=2),
        audit=core.audit,
    )
    record(core, clock, 45)  # e.g. the CLI wrote while no server ran
    sealed = []
    while (made := integrity.checkpoint("interval", only_if_due=True)) is not None:
        sealed.append((made.first_seq, made.last_seq, len(made.batches)))
    assert sealed == [(1, 20, 10), (21, 40, 10)]  # at most 10 batches each; the rest waits
    clock.advance(60)
    assert integrity.checkpoint("interval", only_if_due=True).last_seq == 45  # type: ignore[union-attr]
    assert integrity.verify().ok
