"""Export for SIEMs and spreadsheets; retention that never deletes what is not safe elsewhere."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

import jitgate.cli as cli
from jitgate.audit.copies import FileCopy
from jitgate.audit.export import iter_events, parse_when, write_events
from jitgate.audit.integrity import AuditIntegrity
from jitgate.audit.sinks import FileSink
from jitgate.clock import FakeClock, parse_iso
from jitgate.core import Jitgate

from .conftest import history, record


# --- export --------------------------------------------------------------------------------------
def test_export_jsonl_and_csv_between_two_instants(core: Jitgate, clock: FakeClock) -> None:
    record(core, clock, 2)
    clock.advance(3600)
    record(core, clock, 3, start=2)
    clock.advance(3600)
    record(core, clock, 1, start=5)
    since, until = parse_iso("2026-11-28T13:00:00Z"), parse_iso("2026-11-28T14:00:00Z")

    out = io.StringIO()
    assert write_events(iter_events(core.db, since, until), out, "jsonl") == 3
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["seq"] for e in events] == [3, 4, 5]
    assert list(events[0]) == [
        "seq",
        "ts",
        "type",
        "actor",
        "agent",
        "grant_id",
        "data",
        "hash",
        "prev_hash",
    ]
    assert events[0]["data"]["n"] == 2 and events[0]["ts"] == "2026-11-28T13:00:00.000Z"

    out = io.StringIO()
    assert write_events(iter_events(core.db, None, None), out, "csv") == 6
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert json.loads(rows[0]["data"])["key"] == "2026/q1.csv"
    assert rows[0]["prev_hash"] == "0" * 64


def test_parse_when() -> None:
    now = parse_iso("2026-11-28T12:00:00Z")
    assert parse_when("7d", now) == parse_iso("2026-11-21T12:00:00Z")
    assert parse_when("2026-11-01", now) == parse_iso("2026-11-01T00:00:00Z")
    assert parse_when("2026-11-01T10:00:00+02:00", now) == parse_iso("2026-11-01T08:00:00Z")
    with pytest.raises(ValueError, match="neither an ISO 8601"):
        parse_when("yesterday", now)


def test_cli_export(core: Jitgate, clock: FakeClock, home: Path, tmp_path: Path) -> None:
    record(core, clock, 4)
    runner = CliRunner()
    try:
        out = runner.invoke(cli.app, ["audit", "export", "--format", "jsonl"])
        assert out.exit_code == 0, out.stderr
        assert [json.loads(x)["seq"] for x in out.stdout.splitlines()] == [1, 2, 3, 4]
        target = tmp_path / "events.csv"
        to_file = runner.invoke(
            cli.app,
            [
                "audit",
                "export",
                "--format",
                "csv",
                "--since",
                "2026-11-28T12:00:00Z",
                "-o",
                str(target),
            ],
        )
        assert to_file.exit_code == 0
        assert "exported 4 events" in to_file.stderr
        assert target.read_text().startswith(
            "seq,ts,type,actor,agent,grant_id,data,hash,prev_hash\n"
        )
        bad = runner.invoke(cli.app, ["audit", "export", "--format", "xml"])
        assert bad.exit_code == 1 and "--format must be one of jsonl, csv" in bad.stderr
        worse = runner.invoke(cli.app, ["audit", "export", "--since", "last tuesday"])
        assert worse.exit_code == 1 and "neither an ISO 8601" in worse.stderr
    finally:
        while cli._opened:
            cli._opened.pop().close()


# --- retention -----------------------------------------------------------------------------------
def retaining(core: Jitgate, clock: FakeClock, sinks: list[Any], days: int = 1) -> AuditIntegrity:
    settings = dataclasses.replace(core.integrity.settings, retention_seconds=days * 86400)
    return AuditIntegrity(core.db, clock, settings, audit=core.audit, sinks=sinks)


def first_seq(core: Jitgate) -> int:
    with core.db.read() as connection:
        return int(connection.execute(text("SELECT min(seq) FROM audit_events")).scalar_one())


def test_nothing_is_pruned_without_retention_or_without_a_sink(
    core: Jitgate, clock: FakeClock
) -> None:
    history(core, clock, checkpoints=2, per=3)
    clock.advance(3 * 86400)
    assert core.integrity.prune().message == "no retention configured ([audit] retention)"
    lonely = retaining(core, clock, sinks=[])
    result = lonely.prune()
    assert not result.pruned and "no sink is configured" in result.message
    assert first_seq(core) == 1


def test_nothing_is_pruned_before_every_sink_has_it(
    core: Jitgate, clock: FakeClock, tmp_path: Path
) -> None:
    shipped, lagging = (
        FileSink(tmp_path / "a.jsonl", name="a"),
        FileSink(tmp_path / "b.jsonl", name="b"),
    )
    integrity = retaining(core, clock, [shipped, lagging])
    history(core, clock, checkpoints=2, per=3)  # core.integrity has no sinks: nothing shipped
    integrity.shipper.ship(shipped)  # only one of the two sinks holds the events
    clock.advance(3 * 86400)
    result = integrity.prune()
    assert not result.pruned and "shipped to every sink (a, b)" in result.message
    assert first_seq(core) == 1


def test_old_shipped_events_are_pruned_and_the_rest_still_verifies(
    core: Jitgate, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "copy.jsonl"
    integrity = retaining(core, clock, [FileSink(path)])
    core.integrity.set_sinks(integrity.sinks)
    history(core, clock, checkpoints=3, per=4)  # events 1..12, checkpoints 1..3
    clock.advance(86400 - 60)  # checkpoints 1 and 2 are now older than a day; 3 is not
    dry = integrity.prune(dry_run=True)
    assert not dry.pruned and dry.message.startswith("would prune events 1..8 (8)")
    result = integrity.prune()
    assert result.pruned and result.through_seq == 8 and result.events == 8
    assert first_seq(core) == 9
    (pruned,) = core.audit.events(types=["audit.pruned"])
    assert pruned.seq == 13
    assert pruned.data["through_seq"] == 8 and pruned.data["checkpoint"] == 2
    assert pruned.data["sinks"] == [integrity.sinks[0].name]

    assert core.audit.verify().ok  # the plain chain check starts from the signed anchor
    alone = integrity.verify()
    assert alone.ok, alone.problems
    assert any("events 1..8 were pruned" in n for n in alone.notes)
    integrity.checkpoint()
    integrity.ship()
    against = integrity.verify(FileCopy(path))
    assert against.ok, against.problems
    assert against.copy_events == 13  # the copy keeps what the database let go


def test_a_deleted_prefix_posing_as_pruning_is_caught(
    core: Jitgate, clock: FakeClock, tmp_path: Path
) -> None:
    integrity = retaining(core, clock, [FileSink(tmp_path / "c.jsonl")])
    core.integrity.set_sinks(integrity.sinks)
    history(core, clock, checkpoints=2, per=4)
    with core.db.write() as connection:  # the attacker deletes old events without recording it
        connection.execute(text("DELETE FROM audit_events WHERE seq <= 4"))
    report = integrity.verify()
    assert [p.message for p in report.problems] == [
        "events 1..4 are missing from the database and no audit.pruned event records their "
        "pruning (deleted)"
    ]


def test_pruning_refuses_a_record_that_does_not_verify(
    core: Jitgate, clock: FakeClock, tmp_path: Path
) -> None:
    from . import attacker

    integrity = retaining(core, clock, [FileSink(tmp_path / "d.jsonl")])
    history(core, clock, checkpoints=2, per=3)
    integrity.ship()
    attacker.edit_event(core.db, 2, key="x")
    clock.advance(2 * 86400)
    result = integrity.prune()
    assert not result.pruned
    assert result.message.startswith("the record does not verify (checkpoint 1 signed head")
