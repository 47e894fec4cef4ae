"""An attacker with full database access rewrites the record; verification catches each move.

Each attack is the careful kind: after changing events the attacker recomputes every later hash
and the chain head, so ``core.audit.verify()`` (the chain alone) passes. The signed checkpoints
catch it from the database alone; the external copy (a file, and S3 with Object Lock in
COMPLIANCE mode) names exactly what changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner

import jitgate.cli as cli
from jitgate.audit.integrity import AuditIntegrity
from jitgate.audit.sinks import FileSink
from jitgate.audit.verify import IntegrityReport
from jitgate.clock import FakeClock
from jitgate.core import Jitgate

from . import attacker
from .conftest import history


def kinds(report: IntegrityReport) -> set[str]:
    return {p.kind for p in report.problems}


def messages(report: IntegrityReport) -> list[str]:
    return [p.message for p in report.problems]


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.slow)])
def shipped(
    request: pytest.FixtureRequest, core: Jitgate, clock: FakeClock, tmp_path: Path
) -> tuple[AuditIntegrity, Any]:
    """30 events under 3 signed checkpoints, shipped to a file or to S3 with Object Lock;
    returns (integrity, the copy reader)."""
    from jitgate.audit.copies import FileCopy

    if request.param == "file":
        path = tmp_path / "copy.jsonl"
        core.integrity.set_sinks([FileSink(path)])
        make_copy: Any = lambda: FileCopy(path)  # noqa: E731
    else:
        place = request.getfixturevalue("s3")
        core.integrity.set_sinks([place.sink()])
        make_copy = place.copy
    history(core, clock, checkpoints=3, per=10)
    status = core.integrity.status()
    assert [s["checkpoint"] for s in status["sinks"]] == [3]
    report = core.integrity.verify(make_copy())
    assert report.ok, report.problems
    assert report.matched_seq == 30 and report.copy_events == 30
    return core.integrity, make_copy


def test_edit_an_event_and_recompute_every_later_hash(shipped: Any, core: Jitgate) -> None:
    integrity, copy = shipped
    attacker.edit_event(core.db, 5, key="2026/payroll.csv")
    assert core.audit.verify().ok  # the chain alone is fooled

    alone = integrity.verify()
    assert kinds(alone) == {"events_rewritten"}
    assert "checkpoint 1 signed head" in messages(alone)[0]
    assert "events 1..10" in messages(alone)[0]

    against = integrity.verify(copy())
    edited = [p for p in against.problems if p.kind == "event_edited"]
    assert len(edited) == 1 and edited[0].seq == 5
    assert edited[0].message.startswith("event 5 was edited (data.key changed)")
    assert "recomputed" in edited[0].message
    assert against.first_bad_seq == 5
    assert integrity.verify(copy(), database=False).ok  # the copy itself is intact


def test_delete_the_tail_with_its_checkpoints(shipped: Any, core: Jitgate) -> None:
    integrity, copy = shipped
    attacker.delete_tail(core.db, 24, checkpoints_too=True)
    assert core.audit.verify().ok
    assert integrity.verify().ok  # consistent: nothing in the database gives it away

    against = integrity.verify(copy())
    assert "tail_truncated" in kinds(against)
    assert (
        "the database ends at event 24 but the copy holds events 25..30: the tail was deleted"
        in messages(against)
    )
    assert "checkpoint 3 is in the copy but missing from the database (deleted)" in messages(
        against
    )


def test_delete_the_tail_but_keep_the_checkpoints(shipped: Any, core: Jitgate) -> None:
    integrity, copy = shipped
    attacker.delete_tail(core.db, 24, checkpoints_too=False)
    alone = integrity.verify()
    assert kinds(alone) == {"tail_truncated"}
    assert messages(alone) == [
        "checkpoint 3 seals events through 30 but the database ends at event 24: the tail "
        "was deleted"
    ]
    assert "tail_truncated" in kinds(integrity.verify(copy()))


def test_swap_two_events(shipped: Any, core: Jitgate) -> None:
    integrity, copy = shipped
    attacker.swap_events(core.db, 3, 7)
    assert core.audit.verify().ok
    assert kinds(integrity.verify()) == {"events_rewritten"}
    against = integrity.verify(copy())
    reordered = [p for p in against.problems if p.kind == "events_reordered"]
    assert [p.message.split(";")[0] for p in reordered] == [
        "events 3 and 7 were swapped (reordered)"
    ]


def test_delete_one_event_and_renumber(shipped: Any, core: Jitgate) -> None:
    integrity, copy = shipped
    attacker.delete_event(core.db, 12)
    assert core.audit.verify().ok
    assert "events_rewritten" in kinds(integrity.verify())
    against = integrity.verify(copy())
    deleted = [p for p in against.problems if p.kind == "event_deleted"]
    assert deleted and deleted[0].seq == 12
    assert deleted[0].message.startswith(
        "event 12 was deleted from the database and later events renumbered"
    )


def test_insert_an_event(shipped: Any, core: Jitgate) -> None:
    integrity, copy = shipped
    attacker.insert_event(core.db, 15, "grant.approved", comment="looks fine")
    assert core.audit.verify().ok
    against = integrity.verify(copy())
    inserted = [p for p in against.problems if p.kind == "event_inserted"]
    assert inserted and inserted[0].seq == 15
    assert inserted[0].message.startswith("an event not in the copy was inserted at 15")


def test_edit_without_recomputing_is_named_by_the_chain(shipped: Any, core: Jitgate) -> None:
    integrity, copy = shipped
    from sqlalchemy import text

    with core.db.write() as connection:
        connection.execute(
            text("UPDATE audit_events SET body = replace(body, 'q2.csv', 'qX.csv') WHERE seq = 2")
        )
    for report in (integrity.verify(), integrity.verify(copy())):
        assert report.first_bad_seq == 2
        assert "event 2 was altered (hash mismatch)" in messages(report)


def test_replace_a_checkpoint_keeping_its_signature(shipped: Any, core: Jitgate) -> None:
    integrity, copy = shipped
    attacker.edit_event(core.db, 5, key="2026/payroll.csv")
    # make checkpoint 1 agree with the rewritten chain; the signature no longer fits
    attacker.replace_checkpoint(core.db, 1, head_hash=attacker.head_hash_at(core.db, 10))
    alone = integrity.verify()
    assert "checkpoint 1's signature does not verify (forged or altered)" in messages(alone)
    against = integrity.verify(copy())
    assert "checkpoint 1 in the database differs from the copy (replaced)" in messages(against)
    assert any(p.kind == "event_edited" and p.seq == 5 for p in against.problems)


def test_rewrite_everything_and_sign_with_your_own_key(shipped: Any, core: Jitgate) -> None:
    integrity, copy = shipped
    attacker.edit_event(core.db, 5, key="2026/payroll.csv")
    mallory = ed25519.Ed25519PrivateKey.generate()
    attacker.forge_checkpoints(core.db, mallory)
    assert core.audit.verify().ok
    alone = integrity.verify()
    assert kinds(alone) == {"signature_forged"}
    assert all("which is not a trusted key (forged)" in m for m in messages(alone))
    assert len(alone.problems) == 3
    against = integrity.verify(copy())
    assert {"signature_forged", "checkpoint_replaced", "event_edited"} <= kinds(against)


def test_delete_a_checkpoint(shipped: Any, core: Jitgate) -> None:
    integrity, copy = shipped
    attacker.delete_checkpoint(core.db, 2)
    alone = integrity.verify()
    assert "checkpoint 2 is missing from the database" in messages(alone)
    against = integrity.verify(copy())
    assert "checkpoint 2 is in the copy but missing from the database (deleted)" in messages(
        against
    )


def test_the_cli_names_the_problem_from_the_file_copy(
    core: Jitgate, clock: FakeClock, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "copy.jsonl"
    core.integrity.set_sinks([FileSink(path)])
    history(core, clock, checkpoints=2, per=5)
    monkeypatch.setattr(cli.err, "_width", 250)
    monkeypatch.setattr(cli.console, "_width", 250)
    runner = CliRunner()
    ok = runner.invoke(cli.app, ["audit", "verify", "--from-file", str(path)])
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.startswith("audit chain intact: 10 events")
    assert f"copy file:{path} intact: 10 events, 2 signed checkpoints" in ok.stdout

    attacker.swap_events(core.db, 2, 4)
    broken = runner.invoke(cli.app, ["audit", "verify", "--from-file", str(path)])
    assert broken.exit_code == 1
    assert "audit chain BROKEN at event 2: events 2 and 4 were swapped (reordered)" in broken.stderr
    # the copy alone, with no database, is intact
    alone = runner.invoke(cli.app, ["audit", "verify", "--from-file", str(path), "--copy-only"])
    assert alone.exit_code == 0, alone.stderr
    while cli._opened:
        cli._opened.pop().close()


@pytest.mark.slow
def test_the_cli_verifies_from_s3_without_the_database(
    core: Jitgate,
    clock: FakeClock,
    s3: Any,
    moto_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core.integrity.set_sinks([s3.sink()])
    history(core, clock, checkpoints=2, per=5)
    keys = tmp_path / "keys.json"
    keys.write_text(__import__("json").dumps(core.integrity.public_keys()))
    attacker.edit_event(core.db, 3, key="2026/payroll.csv")
    monkeypatch.setenv("JITGATE_HOME", str(tmp_path / "nowhere"))  # no database at hand
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server.credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server.credentials.secret_key)
    monkeypatch.setattr(cli.console, "_width", 250)
    runner = CliRunner()
    args = ["audit", "verify", "--from-s3", s3.url, "--endpoint-url", moto_server.endpoint]
    result = runner.invoke(cli.app, [*args, "--public-key", str(keys)])
    assert result.exit_code == 0, result.stderr
    assert f"copy {s3.url} intact: 10 events, 2 signed checkpoints" in result.stdout

    # a key the copy was not signed with: every checkpoint is refused
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    from cryptography.hazmat.primitives import serialization

    pem = tmp_path / "other.pem"
    pem.write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    refused = runner.invoke(cli.app, [*args, "--public-key", str(pem)])
    assert refused.exit_code == 1
    assert "which is not a trusted key (forged)" in refused.stderr
