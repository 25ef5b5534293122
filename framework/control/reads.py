"""Reading the control plane on its database's own driver (``sqlite3``, psycopg), without SQLAlchemy.

Every read goes through here: importing SQLAlchemy costs about 130 ms, half of the budget of a
quick command such as ``status`` or ``plan`` (issue 19). Writes keep SQLAlchemy (schema creation
and upgrades, the audit chain's locks, run locks), which ``ControlPlane`` loads on its first
write. A database whose schema is missing or not this polyshift's version is never read here
before the writing path has created, upgraded or refused it.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from polyshift.framework.control.keys import SCHEMA
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


def pg_connect_args() -> dict[str, Any]:
    # TCP keepalives: a runner whose machine vanished lets go of its run lock within a minute.
    return {"application_name": "polyshift control plane", "keepalives": 1, "keepalives_idle": 20,
            "keepalives_interval": 5, "keepalives_count": 4, "connect_timeout": 10}


READS_APPLICATION = "polyshift control plane reads"

_NAMED = re.compile(r"%\((\w+)\)s")


class DirectReads:
    """One connection of the driver itself, shared by the threads of a process under a lock; each
    query is its own statement in autocommit, so a read never holds a lock past its last row."""

    def __init__(self, url: StateUrl) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[dict[str, Any]] | None = None
        self._connect()

    @classmethod
    def open(cls, url: StateUrl) -> DirectReads | None:
        """None when the SQLite file does not exist yet (the writing path creates it, private)."""
        if url.dialect is Dialect.SQLITE and not Path(url.target).exists():
            return None
        return cls(url)

    def _connect(self) -> None:
        if self.url.dialect is Dialect.SQLITE:
            try:
                # mode=rw: never create the file here; it is created 0600 by the writing path.
                self._sqlite = sqlite3.connect(f"file:{quote(self.url.target)}?mode=rw", uri=True, timeout=60,
                                               isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise self._unusable(str(exc)) from None
            self._sqlite.row_factory = sqlite3.Row
            return
        import psycopg
        from psycopg.rows import dict_row

        try:
            # Named apart from the writing path's connections, for whoever reads pg_stat_activity.
            self._pg = psycopg.connect(self.url.target, autocommit=True, row_factory=dict_row,
                                       **(pg_connect_args() | {"application_name": READS_APPLICATION}))
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
        or tables from before versioning: the writing path tells which)."""
        if self.url.dialect is Dialect.SQLITE:
            present = self.rows("SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = %(t)s", {"t": SCHEMA})
        else:
            present = self.rows("SELECT 1 AS found WHERE to_regclass(%(t)s) IS NOT NULL", {"t": SCHEMA})
        if not present:
            return None
        found = self.rows(f"SELECT version, written_by FROM {SCHEMA} WHERE id = 1", {})
        return (int(found[0]["version"]), str(found[0]["written_by"])) if found else None

    def rows(self, sql: str, params: dict[str, Any], *, datetimes: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Every row of one query, as dicts. ``datetimes`` names the timestamp columns, which
        SQLite keeps as text (in SQLAlchemy's format) and PostgreSQL returns as datetimes."""
        with self._lock:
            if self._sqlite is not None:
                try:
                    found = [dict(r) for r in self._sqlite.execute(_NAMED.sub(r":\1", sql), params)]
                except sqlite3.Error as exc:
                    raise StoreError(f"state database: cannot read it: {redact(str(exc))}") from None
                for row in found:
                    for column in datetimes:
                        if isinstance(row.get(column), str):
                            row[column] = datetime.fromisoformat(row[column])
                return found
            return self._pg_rows(sql, params)

    def _pg_rows(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        import psycopg

        for attempt in (1, 2):
            if self._pg is None or self._pg.closed or self._pg.broken:
                self._connect()
            assert self._pg is not None
            try:
                return self._pg.execute(sql, params).fetchall()
            except psycopg.OperationalError as exc:
                # A connection the server or the network dropped (a restart, an idle timeout) is
                # opened again once; a read is safe to repeat.
                if attempt == 1 and self._pg.broken:
                    continue
                raise StoreError(f"state database: cannot read it: {redact(str(exc).splitlines()[0])}") from None
            except psycopg.Error as exc:
                raise StoreError(f"state database: cannot read it: {redact(str(exc).splitlines()[0])}") from None
        raise AssertionError("unreachable")

