"""Alembic migrations create exactly the tables the code uses, and re-running them is a no-op."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, inspect, text

from jitgate.audit.chain import GENESIS
from jitgate.store.db import Database
from jitgate.store.schema import metadata


def _head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from jitgate.store.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


HEAD = _head_revision()


def test_migrated_schema_equals_the_metadata(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
            tables = set(inspect(connection).get_table_names())
            # The comparison is live: a column the migrations lack shows up.
            changed = MetaData()
            for table in metadata.sorted_tables:
                table.to_metadata(changed)
            changed.tables["agents"].append_column(Column("nickname", String(20)))
            extra = compare_metadata(context, changed)
        assert differences == []
        assert [(d[0], d[3].name) for d in extra] == [("add_column", "nickname")]
        assert tables == {*metadata.tables, "alembic_version"}
    finally:
        db.dispose()


def test_migrate_twice_is_a_no_op(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        assert db.schema_revision() == HEAD
        with db.write() as connection:
            connection.execute(
                text(
                    "INSERT INTO audit_events (seq, ts, type, actor, body, prev_hash, hash) "
                    "VALUES (1, CURRENT_TIMESTAMP, 't', 'a', '{}', :g, :g)"
                ),
                {"g": GENESIS},
            )
        db.migrate()
        assert db.schema_revision() == HEAD
        with db.read() as connection:
            assert connection.execute(text("SELECT seq, hash FROM audit_head")).all() == [
                (0, GENESIS)
            ]
            assert connection.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 1
            assert (
                connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
            )
    finally:
        db.dispose()


def test_a_second_database_object_sees_the_migrated_schema(database_url: str) -> None:
    first, second = Database(database_url), Database(database_url)
    try:
        first.migrate()
        second.migrate()
        assert second.schema_revision() == HEAD
    finally:
        first.dispose()
        second.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = Database(f"sqlite+pysqlite:///{tmp_path / 'wal.db'}")
    try:
        db.migrate()
        with db.read() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    finally:
        db.dispose()
