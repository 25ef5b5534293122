"""The control plane's database on its own driver (``sqlite3``, psycopg), without SQLAlchemy.

Every read and write of runs, journal, audit chain, backups and flags goes through here: importing
SQLAlchemy costs about 130 ms, half the budget of a quick command such as ``status`` and a quarter
of a no-op release (issue 19). SQLAlchemy stays for what is rare: creating the tables and upgrading
them between versions (``schema``), and the flag server's accounts. A database whose schema is
missing or not this polyshift's version is never used here before that path has created,
upgraded or refused it (``state.open_database``).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from polyshift.framework.control.keys import LOCK_CLASS, SCHEMA, AdvisoryLock
from polyshift.framework.core.errors import ConfigError, StoreError
from polyshift.framework.core.secrets import redact, url_without_password

if TYPE_CHECKING:
    import psycopg


class Dialect(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


_PG_SCHEMES = ("postgresql+psycopg://", "postgresql://", "postgres://")


@dataclass(frozen=True)
class StateUrl:
    """A control-plane URL as the project gives it: a SQLite file or a PostgreSQL database."""

    url: str
    dialect: Dialect
    target: str  # the SQLite file's path, or a libpq URL

    @classmethod
    def parse(cls, url: str) -> StateUrl:
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            return cls(url, Dialect.SQLITE, url[len("sqlite:///"):])
        for scheme in _PG_SCHEMES:
            if url.startswith(scheme):
                return cls(url, Dialect.POSTGRESQL, "postgresql://" + url[len(scheme):])
        # An in-memory database would be a different, empty one on each connection: a journal
        # nobody can read back is no journal.
        raise ConfigError(f"state database {url_without_password(url)} is not supported: "
                          "use sqlite:///PATH or postgresql://USER@HOST/DATABASE")


APPLICATION = "polyshift control plane"
RUN_LOCK_APPLICATION = "polyshift run lock"


def pg_connect_args() -> dict[str, Any]:
    # TCP keepalives: a runner whose machine vanished lets go of its run lock within a minute.
    return {"application_name": APPLICATION, "keepalives": 1, "keepalives_idle": 20,
            "keepalives_interval": 5, "keepalives_count": 4, "connect_timeout": 10}


_Command = Literal["BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"]
_NAMED = re.compile(r"%\((\w+)\)s")


class DuplicateKey(StoreError):
    """A write met a row another writer inserted first (a unique key); the caller may re-read and retry."""


def sqlite_timestamp(at: datetime) -> str:
    """A timestamp as SQLAlchemy's SQLite dialect keeps it (UTC, no offset), so rows written by
    either path read back the same and sort as text."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class Transaction:
    """Statements of one write transaction, on the connection ``StateDatabase.transaction`` holds."""

    def __init__(self, db: StateDatabase) -> None:
        self._db = db

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        """One statement; the rows it changed."""
        return self._db._execute(sql, params or {})[1]

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._db._execute(sql, params or {})[0]

    def lock(self, which: AdvisoryLock) -> None:
        """Serialize with every other process on this database until the transaction ends. On
        SQLite the transaction began with BEGIN IMMEDIATE, which already holds the one write lock."""
        if self._db.url.dialect is Dialect.POSTGRESQL:
            self.execute("SELECT pg_advisory_xact_lock(%(c)s, %(o)s)", {"c": LOCK_CLASS, "o": int(which)})


class StateDatabase:
    """One connection of the driver itself, shared by the threads of a process under a lock. Reads
    run in autocommit, so a read never holds a lock past its last row; writes run in
    ``transaction()``, which on SQLite takes the write lock up front (BEGIN IMMEDIATE) so that two
    processes appending to the audit chain queue instead of failing on lock upgrade."""

    def __init__(self, url: StateUrl) -> None:
        self.url = url
        self._lock = threading.RLock()
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[dict[str, Any]] | None = None
        self._connect()

    @classmethod
    def open(cls, url: StateUrl) -> StateDatabase | None:
        """None when the SQLite file does not exist yet or is empty: the schema path creates it and
        sets its journal mode with no connection of this process open on it."""
        if url.dialect is Dialect.SQLITE and (not Path(url.target).exists() or Path(url.target).stat().st_size == 0):
            return None
        return cls(url)

    def _connect(self) -> None:
        if self.url.dialect is Dialect.SQLITE:
            try:
                # mode=rw: never create the file here; it is created 0600 by the schema path.
                self._sqlite = sqlite3.connect(f"file:{quote(self.url.target)}?mode=rw", uri=True, timeout=60,
                                               isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise self._unusable(str(exc)) from None
            self._sqlite.row_factory = sqlite3.Row
            return
        import psycopg
        from psycopg.rows import dict_row

        try:
            self._pg = psycopg.connect(self.url.target, autocommit=True, row_factory=dict_row, **pg_connect_args())
        except psycopg.Error as exc:
            raise self._unusable(str(exc)) from None

    def _unusable(self, why: str) -> ConfigError:
        first = why.splitlines()[0] if why else "unknown error"
        return ConfigError(f"state database {url_without_password(self.url.url)} is unusable: {redact(first)}")

    def close(self) -> None:
        with self._lock:
            if self._sqlite is not None:
                self._sqlite.close()
            if self._pg is not None:
                self._pg.close()

    def schema_version(self) -> tuple[int, str] | None:
        """The version row of the schema table, or None where there is none (an empty database,
        or tables from before versioning: the schema path tells which)."""
        if self.url.dialect is Dialect.SQLITE:
            present = self.rows("SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = %(t)s", {"t": SCHEMA})
        else:
            present = self.rows("SELECT 1 AS found WHERE to_regclass(%(t)s) IS NOT NULL", {"t": SCHEMA})
        if not present:
            return None
        found = self.rows(f"SELECT version, written_by FROM {SCHEMA} WHERE id = 1", {})
        return (int(found[0]["version"]), str(found[0]["written_by"])) if found else None

    def rows(self, sql: str, params: dict[str, Any] | None = None, *,
             datetimes: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Every row of one query, as dicts. ``datetimes`` names the timestamp columns, which
        SQLite keeps as text and PostgreSQL returns as datetimes."""
        with self._lock:
            if self._pg is not None and (self._pg.closed or self._pg.broken):
                self._connect()
            try:
                found = self._execute(sql, params or {})[0]
            except StoreError:
                # A connection the server or the network dropped (a restart, an idle timeout) is
                # opened again once; a read is safe to repeat.
                if self._pg is None or not self._pg.broken:
                    raise
                self._connect()
                found = self._execute(sql, params or {})[0]
        if self._sqlite is not None:
            for row in found:
                for column in datetimes:
                    if isinstance(row.get(column), str):
                        row[column] = datetime.fromisoformat(row[column])
        return found

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction, committed when the block ends, rolled back if it raises."""
        with self._lock:
            self._begin()
            try:
                yield Transaction(self)
            except BaseException:
                self._rollback()
                raise
            try:
                with self._translated():
                    self._command("COMMIT")
            except StoreError:
                # SQLite keeps the transaction open when COMMIT fails (busy past the timeout): end
                # it, or this connection's next BEGIN would fail too.
                self._rollback()
                raise

    def _begin(self) -> None:
        # SQLite: the write lock up front (waiting up to the busy timeout). PostgreSQL: a
        # connection the server or the network dropped while idle (a restart, an idle timeout)
        # is opened again once when BEGIN finds it gone: nothing was sent yet, so nothing is
        # repeated. A COMMIT that fails is never retried: whether it landed is unknown.
        begin: _Command = "BEGIN IMMEDIATE" if self._sqlite is not None else "BEGIN"
        if self._pg is not None and (self._pg.closed or self._pg.broken):
            self._connect()
        try:
            with self._translated():
                self._command(begin)
        except StoreError:
            if self._pg is None or not self._pg.broken:
                raise
            self._connect()
            with self._translated():
                self._command(begin)

    def _rollback(self) -> None:
        try:
            with self._translated():
                self._command("ROLLBACK")
        except StoreError:
            pass  # a broken connection: the server ended the transaction with it

    def _command(self, sql: _Command) -> None:
        if self._sqlite is not None:
            self._sqlite.execute(sql)
        else:
            assert self._pg is not None
            self._pg.execute(sql)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        integrity_error: type[Exception] = sqlite3.IntegrityError
        driver_error: type[Exception] = sqlite3.Error
        if self._pg is not None:
            import psycopg

            integrity_error, driver_error = psycopg.IntegrityError, psycopg.Error
        try:
            yield
        except integrity_error as exc:
            raise DuplicateKey(f"state database: {redact(str(exc).splitlines()[0])}") from None
        except driver_error as exc:
            raise StoreError(f"state database {url_without_password(self.url.url)}: "
                             f"{redact((str(exc).splitlines() or ['unknown error'])[0])}") from None

    def _execute(self, sql: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        values = {k: self._value(v) for k, v in params.items()}
        with self._translated():
            if self._sqlite is not None:
                cursor = self._sqlite.execute(_NAMED.sub(r":\1", sql), values)
                return ([dict(r) for r in cursor] if cursor.description else []), cursor.rowcount
            assert self._pg is not None
            pg_cursor = self._pg.execute(sql, values)
            return (pg_cursor.fetchall() if pg_cursor.description else []), pg_cursor.rowcount

    def _value(self, value: Any) -> Any:
        # Enums as their value (psycopg would write an Enum's name); SQLite's timestamps as text.
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, datetime) and self._sqlite is not None:
            return sqlite_timestamp(value)
        return value


def run_lock_connection(url: StateUrl) -> psycopg.Connection[Any]:
    """A connection of its own for one run's session-level advisory lock (PostgreSQL): the server
    ends the lock with the connection, when the process that drives the run dies, on any host."""
    import psycopg

    try:
        # Named apart, for whoever reads pg_stat_activity to see which runs hold their locks.
        return psycopg.connect(url.target, autocommit=True, **(pg_connect_args() | {"application_name": RUN_LOCK_APPLICATION}))
    except psycopg.Error as exc:
        raise StoreError(f"state database {url_without_password(url.url)}: cannot take a run lock: "
                         f"{redact(str(exc).splitlines()[0])}") from None
