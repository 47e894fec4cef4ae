"""Driver-level statements for the gateway's hot path.

SQLAlchemy builds, compiles and processes every statement it runs; on the gateway, which runs a
handful of fixed statements per call, that machinery cost more than the statements themselves
(see benchmarks/gateway_pieces.py). Here the same statements go straight to the DBAPI cursor.

Statements are written once with SQLite's ``?`` placeholders and translated for PostgreSQL's
driver. Values are stored exactly as SQLAlchemy's column types store them, so rows written here
read back through the ordinary SQLAlchemy code unchanged (tests/unit/test_driver.py checks it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

SQLITE = "sqlite"

# SQLAlchemy's storage format for DateTime on SQLite (naive UTC, always with microseconds).
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def placeholders(dialect: str, sql: str) -> str:
    """``sql`` written with ``?`` placeholders, as ``dialect``'s driver wants it."""
    return sql if dialect == SQLITE else sql.replace("?", "%s")


def db_timestamp(dialect: str, when: datetime) -> object:
    """An aware datetime as the UTCDateTime column stores it."""
    if when.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if dialect == SQLITE:
        return when.astimezone(UTC).strftime(_SQLITE_DATETIME)
    return when.astimezone(UTC)


def utc_from_db(value: object) -> datetime | None:
    """A UTCDateTime column as the driver returns it (text on SQLite) -> aware UTC datetime."""
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(when, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def json_from_db(value: object) -> Any:
    """A JSON column as the driver returns it (text on SQLite, decoded on PostgreSQL)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


class DriverTxn:
    """One open transaction on a DBAPI connection, as the audit writers hand it to guards.

    ``memo`` lives for the transaction: a guard that many events in one batch share (the same
    grant's liveness, say) reads it once.
    """

    def __init__(
        self,
        cursor: Any,
        dialect: str,
        memo: dict[Any, Any] | None = None,
        connection: Any = None,
    ) -> None:
        self.cursor = cursor
        self.dialect = dialect
        self.connection = connection  # the DBAPI connection it began on (commit goes there)
        self.memo: dict[Any, Any] = {} if memo is None else memo
        self._sql: dict[str, str] = {}

    def _translated(self, sql: str) -> str:
        translated = self._sql.get(sql)
        if translated is None:
            translated = self._sql[sql] = placeholders(self.dialect, sql)
        return translated

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cursor.execute(self._translated(sql), params)
        return self.cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.cursor.executemany(self._translated(sql), rows)

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        row = self.execute(sql, params).fetchone()
        if row is None:
            raise LookupError(f"no row for {sql.split(' WHERE ')[0]}")
        return tuple(row)

    def timestamp(self, when: datetime) -> object:
        return db_timestamp(self.dialect, when)


class DedicatedConnection:
    """One DBAPI connection kept out of the pool for a single job (lookups, the audit writer).

    Checking a connection out of SQLAlchemy's pool per call costs more than the query (and a
    round trip on PostgreSQL, where the pool pings first). A connection that fails is dropped
    and replaced on next use. Callers serialise their use of it (one thread at a time).
    """

    def __init__(
        self,
        db: Any,
        *,
        autocommit: bool,
        setup: Sequence[str] = (),
        carry_memo: bool = False,
    ) -> None:
        self.db = db
        self.dialect: str = db.dialect
        self.autocommit = autocommit
        self.setup = tuple(setup)  # statements run once on each new connection
        # SQLite: a transaction's memo carries over to the next one on this connection as long
        # as no other connection has committed in between (PRAGMA data_version tells), so a
        # writer that is the only one writing need not re-read what it read or wrote itself.
        self.carry_memo = carry_memo and self.dialect == SQLITE
        self._memo: dict[Any, Any] = {}
        self._data_version: object = None
        self._raw: Any = None

    def raw(self) -> Any:
        if self._raw is None:
            raw = self.db.engine.raw_connection()
            if self.dialect != SQLITE:
                raw.driver_connection.autocommit = self.autocommit
            for statement in self.setup:
                raw.driver_connection.execute(statement)
            self._raw = raw
        return self._raw

    def drop(self) -> None:
        """Forget the connection (after a driver error): it is closed, not returned."""
        self._memo, self._data_version = {}, None
        raw, self._raw = self._raw, None
        if raw is not None:
            with suppress(Exception):  # already broken; nothing more to do
                raw.invalidate()

    def begin(self) -> DriverTxn:
        raw = self.raw()
        cursor = raw.cursor()
        if self.dialect == SQLITE:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                if self.carry_memo:
                    (version,) = cursor.execute("PRAGMA data_version").fetchone()
                    if version != self._data_version:
                        self._memo, self._data_version = {}, version
                    return DriverTxn(cursor, self.dialect, self._memo, connection=raw)
            except BaseException:
                # Closed now, not whenever the traceback holding it is freed: freeing a cursor
                # takes its connection's mutex, which may by then be held by another thread.
                cursor.close()
                raise
        return DriverTxn(cursor, self.dialect, connection=raw)

    def commit(self, txn: DriverTxn) -> None:
        if self.dialect == SQLITE:
            txn.cursor.execute("COMMIT")
        else:
            # The connection the transaction began on: never one opened since (by raw()).
            txn.connection.commit()
        txn.cursor.close()

    def rollback(self, txn: DriverTxn) -> None:
        self._memo, self._data_version = {}, None  # it may hold what was rolled back
        try:
            if self.dialect == SQLITE:
                if txn.connection.driver_connection.in_transaction:
                    txn.cursor.execute("ROLLBACK")
            else:
                txn.connection.rollback()
            txn.cursor.close()
        except Exception:  # noqa: BLE001 - a connection that cannot roll back is replaced
            self.drop()

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()


@contextmanager
def driver_transaction(db: Any) -> Iterator[DriverTxn]:
    """A one-off write transaction on the DBAPI cursor (tests, tools): committed on success."""
    connection = DedicatedConnection(db, autocommit=False)
    try:
        txn = connection.begin()
        try:
            yield txn
        except BaseException:
            connection.rollback(txn)
            raise
        connection.commit(txn)
    finally:
        connection.close()
