"""The control plane's own schema: its tables, their version, and the upgrades between versions.

One control-plane database is shared by every runner of a pipeline, started together on a fresh
database and upgraded one runner at a time. So:

- creation and upgrades run in one transaction under a database-wide lock (a transaction-level
  advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite): a runner that arrives while
  another creates the tables waits, then finds them;
- ``polyshift_schema`` holds the version. A newer polyshift upgrades an older schema in place
  (each step adds what a version introduced and is safe to run again); an older polyshift that
  meets a newer schema refuses, naming both versions, rather than writing rows the newer one
  would misread. A database with the tables but no version table was written by a polyshift from
  before versioning: version 1.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from polyshift.framework import __version__
from polyshift.framework.control.keys import (
    AUDIT,
    BACKUPS,
    FLAGS,
    FLAGS_VERSION,
    JOURNAL,
    LOCK_CLASS,
    RUNS,
    SCHEMA,
    SCHEMA_VERSION,
    AdvisoryLock,
)
from polyshift.framework.core.errors import ControlPlaneVersionError

metadata = sa.MetaData()

runs = sa.Table(
    RUNS, metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("command", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
    sa.Column("runner", sa.String(300)),          # v2: host, pid and CI job of the process driving it
)

journal = sa.Table(
    JOURNAL, metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), sa.ForeignKey(f"{RUNS}.id"), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("store", sa.String(100)),
    sa.Column("version", sa.String(64)),
    sa.Column("step", sa.String(64), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),  # intent | done | failed
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
    sa.Column("runner", sa.String(300)),          # v2
)

audit = sa.Table(
    AUDIT, metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("runner", sa.String(300)),          # v2: covered by the hash when present
)

backups = sa.Table(
    BACKUPS, metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("store", sa.String(100), nullable=False, index=True),
    sa.Column("version", sa.String(64)),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("run_id", sa.String(36)),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("verified_at", sa.String(40)),
    # sha256 of the backup's manifest.json as sealed; NULL for backups recorded before it was kept.
    sa.Column("manifest_sha256", sa.String(64)),
)

# Flags kept in the control plane (``[flags] store = "state"``): one row per flag and one global
# change counter (see polyshift.feature_flags.sql_store).
flags = sa.Table(
    FLAGS, metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
)
flags_version = sa.Table(
    FLAGS_VERSION, metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

schema_version = sa.Table(
    SCHEMA, metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("written_by", sa.String(40), nullable=False),   # the polyshift that created or last upgraded it
    sa.Column("upgraded_at", sa.String(40), nullable=False),
)

def _add_columns(conn: sa.Connection, table: sa.Table, names: tuple[str, ...]) -> None:
    present = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    for name in names:
        if name not in present:
            column = table.c[name]
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {column.type.compile(conn.dialect)}")


def _to_v2(conn: sa.Connection) -> None:
    """Runner identity on runs, journal and audit; the manifest digest on every backup row (a
    polyshift from before versioning may have created the table without it); the flags' change
    counter row, so that the first two flag writes never race to create it."""
    for table, names in ((runs, ("runner",)), (journal, ("runner",)), (audit, ("runner",)), (backups, ("manifest_sha256",))):
        _add_columns(conn, table, names)
    _seed_flags_version(conn)


def _seed_flags_version(conn: sa.Connection) -> None:
    if conn.execute(sa.select(flags_version.c.id).where(flags_version.c.id == 1)).first() is None:
        conn.execute(flags_version.insert().values(id=1, version=0))


# UPGRADES[n] takes a schema at version n - 1 to version n.
UPGRADES: dict[int, Callable[[sa.Connection], None]] = {2: _to_v2}


def lock(conn: sa.Connection, which: AdvisoryLock) -> None:
    """Serialize with every other process on this database until ``conn``'s transaction ends.
    SQLite's connections here begin with BEGIN IMMEDIATE, which already holds the one write lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:c, :o)"), {"c": LOCK_CLASS, "o": int(which)})


def _version(conn: sa.Connection) -> int | None:
    """The schema's version; 1 for tables written before versioning; None for an empty database."""
    tables = set(sa.inspect(conn).get_table_names())
    if schema_version.name in tables:
        found = conn.execute(sa.select(schema_version.c.version, schema_version.c.written_by)
                             .where(schema_version.c.id == 1)).first()
        if found is not None:
            if found.version > SCHEMA_VERSION:
                raise ControlPlaneVersionError(
                    f"the control plane's schema is version {found.version} (written by polyshift {found.written_by}); "
                    f"this polyshift ({__version__}) knows versions up to {SCHEMA_VERSION} and will not write to it",
                    hint="upgrade polyshift on this runner to the version the rest of the pipeline uses")
            return int(found.version)
    return 1 if runs.name in tables else None


def ensure_schema(engine: sa.Engine) -> int:
    """Create or upgrade the control plane's tables; returns the version found before (0: none).
    Cheap when the schema is current: one read, no lock."""
    with engine.connect() as conn:
        found = _version(conn)
    if found == SCHEMA_VERSION:
        return found
    with engine.begin() as conn:
        lock(conn, AdvisoryLock.SCHEMA)
        found = _version(conn)  # again, under the lock: another runner may have done it meanwhile
        if found == SCHEMA_VERSION:
            return found
        metadata.create_all(conn)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if found is None:
            _seed_flags_version(conn)
            conn.execute(schema_version.insert().values(id=1, version=SCHEMA_VERSION, written_by=__version__, upgraded_at=now))
            return 0
        for target in range(found + 1, SCHEMA_VERSION + 1):
            UPGRADES[target](conn)
        values = {"version": SCHEMA_VERSION, "written_by": __version__, "upgraded_at": now}
        if conn.execute(schema_version.update().where(schema_version.c.id == 1).values(**values)).rowcount == 0:
            conn.execute(schema_version.insert().values(id=1, **values))
        return found
