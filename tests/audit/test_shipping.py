"""Shipping to the sinks: in order, at least once, resuming after a crash or an outage, and an
alarm that is raised (but never stops recording) while a sink falls behind."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

import jitgate.cli as cli
from conftest import OBJECT_ARN, bearer
from jitgate.audit.copies import FileCopy
from jitgate.audit.integrity import AuditIntegrity
from jitgate.audit.sinks import FileSink, SinkError
from jitgate.clock import FakeClock
from jitgate.core import Jitgate

from . import attacker
from .conftest import history, record


class FlakySink(FileSink):
    """A file sink that can be made to fail: always (an outage), or after some puts (a crash
    in the middle of shipping), optionally after writing (a crash before the cursor moved)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, name="flaky")
        self.down = False
        self.puts_left: int | None = None
        self.fail_after_write = False

    def _write(self, data: bytes) -> None:
        if self.down:
            raise SinkError("flaky: connection refused")
        if self.puts_left is not None:
            if self.puts_left == 0:
                if self.fail_after_write:
                    super()._write(data)
                raise SinkError("flaky: crashed")
            self.puts_left -= 1
        super()._write(data)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_file_copy_holds_keys_events_and_checkpoints_in_order(
    integrity: AuditIntegrity, core: Jitgate, clock: FakeClock, file_copy_path: Path
) -> None:
    history(core, clock, checkpoints=2, per=3)
    kinds = [next(iter(line)) for line in lines(file_copy_path)]
    assert kinds == ["key"] + ["event"] * 3 + ["checkpoint"] + ["event"] * 3 + ["checkpoint"]
    events = [line["event"] for line in lines(file_copy_path) if "event" in line]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert file_copy_path.stat().st_mode & 0o777 == 0o640
    report = integrity.verify(FileCopy(file_copy_path))
    assert report.ok and report.matched_seq == 6


def test_a_crash_mid_shipping_resumes_from_the_cursor_without_gaps_or_duplicates(
    core: Jitgate, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "copy.jsonl"
    sink = FlakySink(path)
    core.integrity.set_sinks([sink])
    history(core, clock, checkpoints=1, per=4)  # checkpoint 1 ships whole
    record(core, clock, 4, start=4)
    clock.advance(60)
    core.integrity.checkpoint("interval")
    sink.puts_left, sink.fail_after_write = 0, True  # the batch is written, then the crash
    assert core.integrity.ship() == {"flaky": "flaky: crashed"}
    cursor = core.integrity.shipper.cursors()["flaky"]
    assert (cursor.checkpoint_number, cursor.shipped_seq) == (1, 4)
    assert cursor.last_error == "flaky: crashed"

    # a new process over the same database and file picks up where the cursor says
    restarted = AuditIntegrity(
        core.db, clock, core.integrity.settings, sinks=[FileSink(path, name="flaky")]
    )
    assert restarted.ship() == {"flaky": None}
    seqs = [line["event"]["seq"] for line in lines(path) if "event" in line]
    assert seqs == list(range(1, 9))  # resent batch was recognised at the file's end
    assert restarted.shipper.cursors()["flaky"].last_error is None
    assert restarted.verify(FileCopy(path)).ok


def test_a_failed_write_retried_in_the_same_process_is_not_duplicated(
    core: Jitgate, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "copy.jsonl"
    sink = FlakySink(path)
    core.integrity.set_sinks([sink])
    record(core, clock, 3)
    core.integrity.checkpoint()
    sink.puts_left, sink.fail_after_write = 1, True  # the key goes out; the batch lands, then fails
    assert core.integrity.ship() == {"flaky": "flaky: crashed"}
    sink.puts_left = None
    assert core.integrity.ship() == {"flaky": None}
    assert [next(iter(line)) for line in lines(path)] == [
        "key",
        "event",
        "event",
        "event",
        "checkpoint",
    ]


def test_identical_redelivery_is_tolerated_by_the_verifier(
    integrity: AuditIntegrity, core: Jitgate, clock: FakeClock, file_copy_path: Path
) -> None:
    record(core, clock, 3)
    integrity.checkpoint()
    text = file_copy_path.read_text() if file_copy_path.exists() else ""
    assert text == ""  # not shipped yet
    sink = integrity.sinks[0]
    with core.db.read() as connection:
        from jitgate.audit.checkpoint import load_checkpoints, read_rows
        from jitgate.audit.records import batch_bytes

        cp = load_checkpoints(connection)[0]
        data = batch_bytes(list(read_rows(connection, 0, 3)))
    sink.put_key(integrity.keyring().get(cp.key_fingerprint).as_dict())  # type: ignore[union-attr]
    sink.put_batch(1, 3, data[: data.index(b"\n") + 1])  # first event alone, then all of them
    sink.put_batch(1, 3, data)
    sink.put_checkpoint(1, cp.record().encode())
    sink.put_checkpoint(1, cp.record().encode())  # skipped: already at the end
    report = integrity.verify(FileCopy(file_copy_path))
    assert report.ok, report.problems
    assert report.copy_events == 3


def test_a_torn_last_line_is_cut_off_and_written_again(
    integrity: AuditIntegrity, core: Jitgate, clock: FakeClock, file_copy_path: Path
) -> None:
    history(core, clock, checkpoints=1, per=2)
    with file_copy_path.open("a") as handle:
        handle.write('{"event":{"actor":"agent:rep')  # the power went out mid-write
    broken = integrity.verify(FileCopy(file_copy_path), database=False)
    assert [p.kind for p in broken.problems] == ["copy_differs"]
    assert "incomplete (torn write)" in broken.problems[0].message
    integrity.close()
    history(core, clock, checkpoints=1, per=2)  # reopening the sink repairs the tail
    assert integrity.verify(FileCopy(file_copy_path)).ok


def test_an_outage_raises_the_alarm_but_recording_goes_on(
    core: Jitgate, clock: FakeClock, tmp_path: Path, api: TestClient, agent_token: Any
) -> None:
    path = tmp_path / "copy.jsonl"
    sink = FlakySink(path)
    core.integrity.set_sinks([sink])
    token = agent_token("reporter")
    history(core, clock, checkpoints=1, per=2)
    sink.down = True
    for minute in range(7):
        response = api.post(
            "/v1/grants",
            headers=bearer(token),
            json={"actions": ["s3:GetObject"], "resources": [OBJECT_ARN], "reason": f"m{minute}"},
        )
        assert response.status_code == 201  # the sink is down; jitgate records and decides
        clock.advance(60)
        core.integrity.tick()
    health = api.get("/healthz").json()
    assert health["status"] == "ok" and health["audit_alarm"] is True
    shipping = core.integrity.status()
    assert shipping["alarm"] is True
    (state,) = shipping["sinks"]
    assert state["state"] == "alarm" and state["last_error"] == "flaky: connection refused"
    assert state["pending_checkpoints"] == 7 and state["lag_events"] == 7 * 3
    assert state["lag_seconds"] > 300
    assert any(a.startswith("sink flaky is ") for a in shipping["alarms"])
    _, auditor_token = core.identity.create_user("metrics-reader", "auditor")
    metrics = api.get("/v1/audit/metrics", headers=bearer(auditor_token)).text
    assert 'jitgate_audit_sink_alarm{sink="flaky"} 1' in metrics

    sink.down = False
    clock.advance(60)  # past the back-off
    core.integrity.tick()
    status = core.integrity.status()
    assert status["alarm"] is False and status["sinks"][0]["state"] == "ok"
    report = core.integrity.verify(FileCopy(path))
    assert report.ok and report.matched_seq == core.audit.head()[0]


def test_a_held_lease_keeps_a_second_shipper_out(
    core: Jitgate, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "copy.jsonl"
    first = AuditIntegrity(
        core.db, clock, core.integrity.settings, sinks=[FileSink(path, name="s")]
    )
    second = AuditIntegrity(
        core.db, clock, core.integrity.settings, sinks=[FileSink(path, name="s")]
    )
    record(core, clock, 2)
    first.checkpoint()
    assert first.shipper._claim(first.sinks[0]) is not None  # first holds the lease
    assert second.shipper.ship(second.sinks[0]) == 0
    assert not path.exists()
    clock.advance(121)  # the lease runs out (its holder died)
    assert second.shipper.ship(second.sinks[0]) == 1
    assert second.verify(FileCopy(path)).ok


def test_events_changed_after_signing_are_not_shipped(
    integrity: AuditIntegrity, core: Jitgate, clock: FakeClock
) -> None:
    record(core, clock, 5)
    integrity.checkpoint()
    attacker.edit_event(core.db, 2, key="2026/payroll.csv")
    results = integrity.ship()
    (error,) = results.values()
    assert error is not None
    assert "events 1..5 in the database no longer match what checkpoint 1 signed" in error


def test_cli_status_and_ship(
    core: Jitgate, clock: FakeClock, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cli-copy.jsonl"
    config = home / "jitgate.toml"
    config.write_text(
        config.read_text() + f'\n[[audit.sinks]]\ntype = "file"\npath = "{path}"\nname = "local"\n'
    )
    monkeypatch.setattr(cli.console, "_width", 250)
    monkeypatch.setattr(cli.err, "_width", 250)
    runner = CliRunner()
    try:
        # the CLI runs on the wall clock; the first checkpoint (and the key) predate it
        clock.set(datetime.now(UTC) - timedelta(hours=2))
        record(core, clock, 3)
        core.integrity.checkpoint("startup")
        assert runner.invoke(cli.app, ["audit", "ship"]).exit_code == 0
        record(core, clock, 2, start=3)
        made = runner.invoke(cli.app, ["audit", "checkpoint", "--json"])
        assert made.exit_code == 0, made.stderr
        assert json.loads(made.stdout)["last_seq"] == 5
        status = runner.invoke(cli.app, ["audit", "status", "--json"])
        assert status.exit_code == 0  # behind, but within the alarm threshold
        assert json.loads(status.stdout)["sinks"][0]["state"] == "behind"
        shipped = runner.invoke(cli.app, ["audit", "ship"])
        assert shipped.exit_code == 0, shipped.stderr
        assert "local: up to date" in shipped.stdout
        table = runner.invoke(cli.app, ["audit", "status"])
        assert table.exit_code == 0 and "local" in table.stdout and "ok" in table.stdout
        verified = runner.invoke(cli.app, ["audit", "verify", "--from-file", str(path)])
        assert verified.exit_code == 0, verified.stderr
        path.unlink()
        path.mkdir()  # the sink is broken now
        record(core, clock, 1, start=5)
        clock.set(datetime.now(UTC) - timedelta(hours=1))
        core.integrity.checkpoint()  # it has waited an hour for the sink
        failed = runner.invoke(cli.app, ["audit", "ship"])
        assert failed.exit_code == 1
        alarm = runner.invoke(cli.app, ["audit", "status"])
        assert alarm.exit_code == 2
        assert "ALARM: " in alarm.stderr
    finally:
        while cli._opened:
            cli._opened.pop().close()
