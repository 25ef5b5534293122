"""The other tool's history, read where it left it, never written: golang-migrate's and dbmate's
``schema_migrations``, goose's ``goose_db_version``, ``flyway_schema_history``, Sqitch's
``sqitch.changes``, Liquibase's ``databasechangelog``, Alembic's ``alembic_version``, pop's
``schema_migration`` (PostgreSQL), neo4j-migrations' ``:__Neo4jMigration`` nodes (Neo4j).
PostgreSQL is read in a READ ONLY transaction, so adoption cannot change the store even by
mistake."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polyshift.framework.adopt.model import Format
from polyshift.framework.core.errors import RefusedError, StoreError
from polyshift.framework.core.protocol import Adapter
from polyshift.framework.core.secrets import redact
from polyshift.framework.core.status import StoreStatus

# psycopg loads when a PostgreSQL store's history is read, not for 'status' of a Redis or graph
# project (issue 19).
if TYPE_CHECKING:
    import psycopg

Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class Applied:
    """One migration the other tool records as applied: its own name for it and, where the tool
    keeps one, its checksum (``crc32:…`` for Flyway, ``sha1:…`` for Sqitch, as import writes them)."""

    source_id: str
    checksum: str | None = None


@dataclass
class ForeignHistory:
    format: Format
    table: str
    applied: list[Applied] = field(default_factory=list)
    upto: str | None = None          # golang-migrate, Alembic: one row, every version up to it is applied
    baseline: str | None = None      # a Flyway/neo4j-migrations baseline: every version up to it counts as applied
    problems: list[str] = field(default_factory=list)   # a dirty or failed state: baselining from it is refused
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.upto is not None:
            return f"{self.format.value} history {self.table} at version {self.upto}"
        newest = self.applied[-1].source_id if self.applied else self.baseline
        return f"{self.format.value} history {self.table} ({len(self.applied)} applied, newest {newest})"

    @property
    def empty(self) -> bool:
        return not self.applied and self.upto is None and self.baseline is None and not self.problems


def _pg_query(adapter: Adapter) -> Query:
    import psycopg

    conn: psycopg.Connection = adapter.conn  # type: ignore[attr-defined]

    def query(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION READ ONLY")
                return conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            diag = getattr(exc, "diag", None)
            primary = (diag.message_primary if diag is not None else None) or str(exc).splitlines()[0]
            raise StoreError(f"store {adapter.name}: reading the other tool's history failed: {redact(primary)}") from None
    return query


def _exists(query: Query, relation: str) -> str | None:
    row = query("SELECT to_regclass(%s)::text", (relation,))
    return row[0][0] if row and row[0][0] else None


def _columns(query: Query, relation: str) -> set[str]:
    return {r[0] for r in query("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                                "AND NOT attisdropped", (relation,))}


def _golang_or_dbmate(query: Query) -> ForeignHistory | None:
    table = _exists(query, "schema_migrations")
    if table is None:
        return None
    columns = _columns(query, "schema_migrations")
    if "dirty" in columns:
        history = ForeignHistory(Format.GOLANG_MIGRATE, table)
        rows = query("SELECT version, dirty FROM schema_migrations", ())
        if rows:
            version, dirty = rows[0]
            history.upto = str(version)
            if dirty:
                history.problems.append(f"golang-migrate left version {version} dirty: a migration failed part-way; "
                                        "repair the database and run 'migrate force' before adopting it")
        return history
    history = ForeignHistory(Format.DBMATE, table)
    history.applied = [Applied(str(r[0])) for r in query("SELECT version FROM schema_migrations ORDER BY version", ())]
    return history


def _goose(query: Query) -> ForeignHistory | None:
    table = _exists(query, "goose_db_version")
    if table is None:
        return None
    latest: dict[int, bool] = {}
    for version, applied in query("SELECT version_id, is_applied FROM goose_db_version ORDER BY id", ()):
        if version != 0:  # goose's own first row
            latest[int(version)] = bool(applied)
    history = ForeignHistory(Format.GOOSE, table)
    history.applied = [Applied(str(v)) for v in sorted(latest) if latest[v]]
    return history


def _flyway(query: Query) -> ForeignHistory | None:
    table = _exists(query, "flyway_schema_history")
    if table is None:
        return None
    history = ForeignHistory(Format.FLYWAY, table)
    applied: dict[str, Applied] = {}
    for rank, version, kind, checksum, success, script in query(
            "SELECT installed_rank, version, type, checksum, success, script FROM flyway_schema_history ORDER BY installed_rank", ()):
        if not success:
            history.problems.append(f"Flyway recorded {script} (rank {rank}) as failed; run 'flyway repair' after fixing the "
                                    "database, then adopt it")
        elif version is None:
            history.notes.append(f"repeatable {script} is not imported and not recorded")
        elif kind == "BASELINE":
            history.baseline = version
        elif kind == "UNDO_SQL" or kind == "DELETE":
            applied.pop(version, None)
        elif kind in ("SQL", "JDBC", "SCRIPT", "SQL_BASELINE", "CUSTOM"):
            applied[version] = Applied(version, f"crc32:{checksum}" if checksum is not None else None)
    history.applied = list(applied.values())
    return history


def _sqitch(query: Query) -> ForeignHistory | None:
    table = _exists(query, "sqitch.changes")
    if table is None:
        return None
    history = ForeignHistory(Format.SQITCH, table)
    for project, change, script_hash, change_id in query(
            "SELECT project, change, script_hash, change_id FROM sqitch.changes ORDER BY committed_at, change_id", ()):
        # Registries upgraded from before script hashes copied the change id into script_hash.
        checksum = f"sha1:{script_hash}" if script_hash and script_hash != change_id else None
        history.applied.append(Applied(f"{project}:{change}", checksum))
    return history


def _liquibase(query: Query) -> ForeignHistory | None:
    table = _exists(query, "databasechangelog")
    if table is None:
        return None
    history = ForeignHistory(Format.LIQUIBASE, table)
    lock = _exists(query, "databasechangeloglock")
    if lock is not None and query("SELECT 1 FROM databasechangeloglock WHERE locked", ()):
        history.problems.append("Liquibase holds its lock (databasechangeloglock): an update is running or died; "
                                "release it ('liquibase release-locks') once nothing runs")
    for ident, author, filename, exectype in query(
            "SELECT id, author, filename, exectype FROM databasechangelog ORDER BY orderexecuted, dateexecuted", ()):
        if exectype in ("EXECUTED", "RERAN", "MARK_RAN"):
            history.applied.append(Applied(f"{ident}::{author}"))
        elif exectype == "FAILED":
            history.problems.append(f"Liquibase recorded changeset {author}:{ident} ({filename}) as failed")
    if history.applied:
        history.notes.append("Liquibase MD5SUM values are not compared: they hash Liquibase's own normalised form of "
                             "the changeset, not the file")
    return history


def _alembic(query: Query) -> ForeignHistory | None:
    """Alembic keeps only its head: one row per head revision, the chain below it implied by the
    revisions' down_revision (which import turned into version order)."""
    table = _exists(query, "alembic_version")
    if table is None:
        return None
    history = ForeignHistory(Format.ALEMBIC, table)
    heads = sorted(r[0] for r in query("SELECT version_num FROM alembic_version", ()))
    if len(heads) > 1:
        history.problems.append(f"Alembic is at {len(heads)} heads ({', '.join(heads)}): a branched history; polyshift "
                                "applies one line of migrations (merge the heads, upgrade, then adopt)")
    elif heads:
        history.upto = heads[0]
    return history


def _pop(query: Query) -> ForeignHistory | None:
    """pop (and Ory's popx) write one row per applied version into ``schema_migration``."""
    table = _exists(query, "schema_migration")
    if table is None:
        return None
    history = ForeignHistory(Format.POP, table)
    history.applied = [Applied(str(r[0])) for r in query("SELECT version FROM schema_migration ORDER BY version", ())]
    return history


_PG_READERS = (_golang_or_dbmate, _goose, _flyway, _sqitch, _liquibase, _alembic, _pop)


def _neo4j(adapter: Adapter) -> list[ForeignHistory]:
    run = adapter.run  # type: ignore[attr-defined]
    rows = run("MATCH (m:__Neo4jMigration) RETURN m.version, m.checksum ORDER BY m.version", {})
    if not rows:
        return []
    history = ForeignHistory(Format.NEO4J_MIGRATIONS, ":__Neo4jMigration")
    for version, _checksum in rows:
        if version == "BASELINE":
            continue
        history.applied.append(Applied(str(version)))
    history.notes.append("neo4j-migrations checksums are not compared: they are computed over its parsed statements")
    return [history]


def read_histories(adapter: Adapter) -> list[ForeignHistory]:
    """Every other tool's history found in the store (usually none or one)."""
    if adapter.kind in ("postgres", "pgvector"):
        query = _pg_query(adapter)
        return [h for reader in _PG_READERS if (h := reader(query)) is not None]
    if adapter.kind == "neo4j":
        return _neo4j(adapter)
    return []


def unadopted(adapter: Adapter, status: StoreStatus) -> ForeignHistory | None:
    """The other tool's history, when the store has one and polyshift's ledger is empty."""
    if status.applied:
        return None
    return next((h for h in read_histories(adapter) if not h.empty), None)


def refuse_unadopted(adapter: Adapter, status: StoreStatus) -> None:
    """``up`` on a store another tool migrated, before any baseline, would run every migration
    again against what exists: refused (exit 2) before anything changes."""
    history = unadopted(adapter, status)
    if history is not None:
        raise RefusedError(f"store {adapter.name} has {history.describe()} and nothing in polyshift's ledger: 'up' would apply "
                           "every migration again over what is there",
                           hint=f"record what is applied first: polyshift baseline --store {adapter.name}")
