"""PostgreSQL adapter (psycopg 3): advisory lock, ledger table, transactional steps taken in short
lock attempts, lock-hazard findings sized from the catalog, COPY backups."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from polyshift.adapters.boundary import python_checks, step_failed, translate, translated
from polyshift.adapters.postgres import catalog as cat
from polyshift.adapters.postgres import inventory as pg_inventory
from polyshift.adapters.postgres import locking
from polyshift.adapters.postgres.errors import PSYCOPG_ERRORS
from polyshift.adapters.postgres.sizes import THRESHOLD, TableSize
from polyshift.adapters.postgres.timing import StatementClock
from polyshift.framework.core.errors import BackupError, LockHeldError, MigrationLoadError, StepFailed
from polyshift.framework.core.kinds import POSTGRES, StoreKind
from polyshift.framework.core.lifecycle import Direction
from polyshift.framework.core.migration import Migration, MigrationContext, Risk, Step
from polyshift.framework.core.protocol import (
    Analysis,
    AttemptObserver,
    Finding,
    Fingerprint,
    LedgerEntry,
    LockAttempt,
    RestoreReport,
    ScopeSource,
    StatementTiming,
    StepResult,
)
from polyshift.framework.core.secrets import redact

# The SQL analysis (pglast) and the backup code load when a migration is analyzed or a backup
# taken: status and history read the ledger only (issue 19).
if TYPE_CHECKING:
    from polyshift.adapters.postgres.analysis import Statement
    from polyshift.framework.control.artifacts import ArtifactStore, ArtifactWriter, Manifest
    from polyshift.framework.core.config import StoreConfig
    from polyshift.framework.core.progress import Progress

log = logging.getLogger("polyshift.postgres")

_LOCK_CLASS = 0x706F6C79  # "poly": first half of the two-int advisory lock key

_LEDGER_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {cat.LEDGER_SCHEMA};
CREATE TABLE IF NOT EXISTS {cat.LEDGER_SCHEMA}.schema_history (
    installed_rank bigserial PRIMARY KEY,
    store text NOT NULL,
    version text NOT NULL,
    slug text NOT NULL,
    checksum text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('up', 'down')),
    applied_by text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL,
    success boolean NOT NULL,
    non_transactional boolean NOT NULL DEFAULT false,
    run_id text
)"""


_describe = PSYCOPG_ERRORS.describe


def _translated(store: str, what: str) -> AbstractContextManager[None]:
    """Driver errors become StoreError (StoreUnavailable when the server did not answer) at the
    adapter boundary, naming the store and the action."""
    return translated(PSYCOPG_ERRORS, f"store {store}: {what} failed")


class PostgresAdapter:
    spec: StoreKind = POSTGRES
    kind = POSTGRES.name

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.name = config.name
        self._conn: psycopg.Connection | None = None
        self._lock_conn: psycopg.Connection | None = None
        self._lock_key = (_LOCK_CLASS, zlib.crc32(config.name.encode()) & 0x7FFFFFFF)
        self._notices: list[str] = []
        self._clock: StatementClock | None = None
        self._observer: AttemptObserver | None = None
        self._watch = locking.BlockerWatch(lambda: self._open(f"watch {self.name}"))
        self._schedule = locking.schedule_for(config.options.get("lock_retry"), config.lock_timeout)
        # The last fingerprint's per-table hashes, keyed by the snapshot it read them in: a backup
        # that finds the very same snapshot sees the very same rows and catalog rows (issue 19).
        self._fingerprinted: cat.Hashed | None = None

    # -- connection -------------------------------------------------------------------
    def _open(self, purpose: str) -> psycopg.Connection:
        try:
            return psycopg.connect(self.config.url, autocommit=True, connect_timeout=10,
                                   application_name=f"polyshift {purpose}"[:63])
        except psycopg.Error as exc:
            raise translate(PSYCOPG_ERRORS, exc, f"store {self.name}: cannot connect to {self.config.display_url}") from None

    def connect(self) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = self._open(f"{self.name} pid={os.getpid()}")
            self._conn.add_notice_handler(self._notice)

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        """NOTICE and WARNING messages: a `DROP … IF EXISTS` that did nothing says so only here."""
        self._notices.append(redact(f"{diag.severity_nonlocalized or diag.severity}: {diag.message_primary}"))

    @property
    def conn(self) -> psycopg.Connection:
        self.connect()
        assert self._conn is not None
        return self._conn

    def close(self) -> None:
        self._watch.close()
        for c in (self._lock_conn, self._conn):
            try:
                if c is not None:
                    c.close()
            except Exception:  # closing must never mask the error that got us here
                pass
        self._conn = self._lock_conn = None

    # -- lock -------------------------------------------------------------------------
    def acquire_lock(self, holder: str, wait: float) -> None:
        """Session advisory lock on its own connection: released by the server if we die."""
        if self._lock_conn is not None:
            return
        conn = self._open(f"lock {holder}")
        deadline = time.monotonic() + wait
        while True:
            with _translated(self.name, "taking the lock"):
                got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self._lock_key).fetchone()[0]  # type: ignore[index]
            if got:
                self._lock_conn = conn
                return
            if time.monotonic() >= deadline:
                who = self.lock_holder(conn)
                conn.close()
                raise LockHeldError(f"store {self.name} is locked by another polyshift run ({who})",
                                    hint="wait for it to finish, or raise lock_wait in the store's config")
            time.sleep(0.2)

    def lock_holder(self, conn: psycopg.Connection | None = None) -> str:
        with _translated(self.name, "reading the lock holder"):
            return self._lock_holder(conn)

    def _lock_holder(self, conn: psycopg.Connection | None) -> str:
        row = (conn or self.conn).execute(
            "SELECT a.application_name, a.pid, coalesce(a.client_addr::text, 'local'), a.backend_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.granted", self._lock_key,
        ).fetchone()
        if row is None:
            return "holder unknown"
        app, pid, addr, since = row
        return f"{app.removeprefix('polyshift lock ')}, backend pid {pid} from {addr} since {since:%Y-%m-%d %H:%M:%S %Z}"

    def release_lock(self) -> None:
        if self._lock_conn is not None:
            try:
                self._lock_conn.execute("SELECT pg_advisory_unlock(%s, %s)", self._lock_key)
            finally:
                self._lock_conn.close()
                self._lock_conn = None

    # -- ledger -----------------------------------------------------------------------
    def ensure_ledger(self) -> None:
        try:
            with self.conn.transaction():
                self.conn.execute(_LEDGER_DDL)
        except psycopg.Error as exc:
            raise translate(PSYCOPG_ERRORS, exc,
                            f"store {self.name}: cannot create the ledger {cat.LEDGER_SCHEMA}.schema_history") from None

    def ledger(self) -> list[LedgerEntry]:
        with _translated(self.name, "reading the ledger"):
            return self._ledger()

    def ledger_rows(self, version: str) -> list[LedgerEntry]:
        with _translated(self.name, "reading the ledger"):
            return self._ledger(version)

    def _ledger(self, version: str | None = None) -> list[LedgerEntry]:
        exists = self.conn.execute("SELECT to_regclass(%s)", (f"{cat.LEDGER_SCHEMA}.schema_history",)).fetchone()
        if exists is None or exists[0] is None:
            return []
        rows = self.conn.execute(
            f"SELECT installed_rank, version, slug, checksum, direction, applied_by, applied_at, duration_ms, success, "
            f"non_transactional, run_id FROM {cat.LEDGER_SCHEMA}.schema_history WHERE store = %s "
            f"AND (%s::text IS NULL OR version = %s) ORDER BY installed_rank",
            (self.name, version, version),
        ).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def _record(self, migration: Migration, direction: Direction, *, run_id: str, actor: str, duration_ms: int,
                non_transactional: bool) -> None:
        self.conn.execute(
            f"INSERT INTO {cat.LEDGER_SCHEMA}.schema_history (store, version, slug, checksum, direction, applied_by, "
            "duration_ms, success, non_transactional, run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, true, %s, %s)",
            (self.name, migration.version, migration.slug, migration.checksum, direction.ledger_word, actor, duration_ms,
             non_transactional, run_id),
        )

    def record_baseline(self, migrations: list[Migration], *, run_id: str, actor: str) -> None:
        """Rows saying ``migrations`` are applied (``polyshift baseline``), all in one transaction."""
        try:
            with self.conn.transaction():
                for migration in migrations:
                    self._record(migration, Direction.FORWARD, run_id=run_id, actor=actor, duration_ms=0, non_transactional=False)
        except psycopg.Error as exc:
            raise translate(PSYCOPG_ERRORS, exc, f"store {self.name}: cannot write the ledger") from None

    def record_reverted(self, migration: Migration, *, run_id: str, actor: str) -> None:
        try:
            with self.conn.transaction():
                self._record(migration, Direction.ROLLBACK, run_id=run_id, actor=actor, duration_ms=0, non_transactional=False)
        except psycopg.Error as exc:
            raise translate(PSYCOPG_ERRORS, exc, f"store {self.name}: cannot write the ledger") from None

    # -- analysis ---------------------------------------------------------------------
    def _statements(self, step: Step) -> list[Statement]:
        from polyshift.adapters.postgres.analysis import analyze_sql

        assert step.script is not None
        return analyze_sql(step.script, origin=f"{self.name}/{step.path.name}")

    def parse(self, migration: Migration) -> None:
        self._check_allowed(migration)
        for step in (migration.forward, migration.rollback, migration.validate):
            if step is not None and not step.is_python:
                self._statements(step)

    def _check_allowed(self, migration: Migration) -> None:
        """``allow=`` names lock findings this adapter reports; anything else is a mistake to stop at."""
        from polyshift.adapters.postgres.hazards import CODES, Kind

        where = f"{self.name}/{migration.forward.path.name}"
        for code in migration.allowed:
            if code not in CODES:
                raise MigrationLoadError(f"{where}: allow={code}: no such finding code (PostgreSQL's lock findings: "
                                         f"{', '.join(c for c, (k, _) in CODES.items() if k is Kind.LOCK)})")
            kind = CODES[code][0]
            if kind is not Kind.LOCK:
                raise MigrationLoadError(f"{where}: allow={code}: {code} is a {kind.value} finding, and allow= acknowledges "
                                         "lock findings only ('up' never refuses the others: data at risk is backed up first)")

    def analyze(self, migration: Migration, direction: Direction = Direction.FORWARD) -> Analysis:
        step = migration.forward if direction is Direction.FORWARD else migration.rollback
        if step is None:
            return Analysis(Risk.C, (), "none", notes=("no rollback step: irreversible",))
        if step.is_python:
            scope = migration.declared_scope or ()
            outside = ("Python step with TRANSACTION = False",) if self._python_outside_tx(migration) else ()
            return Analysis(migration.declared_risk or Risk.C, scope, "declared" if scope else "none", non_transactional=outside)
        from polyshift.adapters.postgres.analysis import analyze_sql
        from polyshift.adapters.postgres.scope import ScopeExpander

        assert step.script is not None
        self._check_allowed(migration)
        with _translated(self.name, "reading the catalog for the lock hazards"):
            facts = cat.CatalogFacts(self.conn)
            statements = analyze_sql(step.script, origin=f"{self.name}/{step.path.name}", facts=facts)
            findings = self._findings(statements, facts, migration.allowed if direction is Direction.FORWARD else ())
        with _translated(self.name, "reading the catalog for the backup scope"):
            coverage = ScopeExpander(self.conn).expand(statements)
        risk = Risk.highest([s.risk for s in statements] + [coverage.risk] +
                            ([migration.declared_risk] if migration.declared_risk else []))
        inferred = tuple(t.qualified for t in coverage.tables)
        reasons = {t.qualified: "; ".join(why) for t, why in coverage.tables.items()}
        declared = migration.declared_scope if direction is Direction.FORWARD else migration.rollback_scope
        source: ScopeSource
        if declared is not None:
            extra = tuple(t for t in inferred if t not in declared)
            scope, source = declared + extra, ("declared+inferred" if extra else "declared")
        else:
            scope, source = inferred, ("inferred" if inferred else "none")
        notes = tuple(n for s in statements for n in s.notes)
        non_tx = tuple(f"{s.non_transactional}: {s.sql[:80]}" for s in statements if s.non_transactional)
        return Analysis(risk, scope, source, non_tx, len(statements), notes, reasons, tuple(coverage.unproven),
                        findings, THRESHOLD)

    @staticmethod
    def _findings(statements: list[Statement], facts: cat.CatalogFacts, allowed: tuple[str, ...]) -> tuple[Finding, ...]:
        """Every statement's findings, each with the size of the table it works on as the catalog
        estimates it now. A finding that names no one table (``CLUSTER`` of every clustered table,
        a domain's columns) is sized by the largest table the statement works on, or unknown."""
        sizes: dict[str, TableSize | None] = {}

        def size(table: str) -> TableSize | None:
            if table not in sizes:
                sizes[table] = facts.size(table)
            return sizes[table]

        out = []
        for st in statements:
            for f in st.findings:
                if f.table is not None:
                    measured = size(f.table)
                else:
                    worked = [size(t) for t, work in (st.locks.work.items() if st.locks else ()) if work]
                    known = [s for s in worked if s is not None]
                    measured = max(known, key=lambda s: (s.large, s.bytes)) if known else TableSize(None, 0)
                out.append(f.reported(measured, acknowledged=f.code in allowed))
        return tuple(out)

    def resolve_scope(self, scope: tuple[str, ...], *, missing_ok: bool) -> tuple[str, ...]:
        with _translated(self.name, "resolving the backup scope"):
            tables, missing = cat.resolve(self.conn, list(scope), missing_ok=missing_ok)
            tables = cat.without_covered_partitions(self.conn, tables)
        if missing and not missing_ok:
            raise BackupError(f"store {self.name}: backup scope names tables that do not exist: {', '.join(missing)}")
        return tuple(t.qualified for t in tables)

    # -- steps ------------------------------------------------------------------------
    def observe_attempts(self, observer: AttemptObserver | None) -> None:
        self._observer = observer

    def _set_timeouts(self, *, local: bool, lock_timeout: float | None = None) -> None:
        for name, seconds in (("lock_timeout", self.config.lock_timeout if lock_timeout is None else lock_timeout),
                              ("statement_timeout", self.config.statement_timeout)):
            self.conn.execute("SELECT set_config(%s, %s, %s)", (name, f"{max(1, round(seconds * 1000))}ms", local))

    @staticmethod
    def _python_outside_tx(migration: Migration) -> bool:
        """``TRANSACTION = False`` in a Python migration: batches that commit as they go, CONCURRENTLY."""
        return migration.is_python and migration.extra("TRANSACTION", True) is False

    def helpers(self, migration: Migration) -> object:
        """What ``ctx.helpers`` holds for this store's Python migrations (subclasses add their own)."""
        return None

    def _context(self, migration: Migration) -> MigrationContext:
        return MigrationContext(client=self.conn, store=self.name, log=logging.getLogger(f"polyshift.migration.{migration.id}"),
                                migration=migration, helpers=self.helpers(migration))

    def _run_python(self, migration: Migration, step: Step) -> None:
        step.call(self._context(migration))

    def apply(self, migration: Migration, direction: Direction, *, run_id: str, actor: str) -> StepResult:
        """Run forward or rollback; the ledger row commits in the same transaction as the step.

        Transactional work waits for its locks in short attempts (``lock_retry``), the whole
        transaction rolled back and tried again after a lock timeout, deadlock or serialization
        failure until ``retry_deadline``: a Python step may therefore run more than once. Each
        attempt is reported to the observer. Statements that PostgreSQL refuses inside a
        transaction run on their own, in order, waiting up to ``lock_timeout`` once.
        """
        step = migration.forward if direction is Direction.FORWARD else migration.rollback
        if step is None:
            raise StepFailed(f"{migration.id} has no rollback step (irreversible)", step="rollback")
        started = time.monotonic()
        self._notices.clear()
        if step.is_python:
            segments: list[tuple[bool, list[Statement]]] = [(not self._python_outside_tx(migration), [])]
        else:
            segments = []
            for st in self._statements(step):
                transactional = st.non_transactional is None
                if segments and segments[-1][0] and transactional:
                    segments[-1][1].append(st)
                else:
                    segments.append((transactional, [st]))
        non_tx = any(not tx for tx, _ in segments)
        attempts = 0
        for index, (transactional, statements) in enumerate(segments):
            last = index == len(segments) - 1
            if transactional:
                def attempt(lock_timeout: float, step: Step = step, statements: list[Statement] = statements,
                            last: bool = last) -> None:
                    self._run_transaction(migration, step, statements, direction, run_id, actor, started,
                                          record=last, non_tx=non_tx, lock_timeout=lock_timeout)

                try:
                    attempts += locking.run_in_attempts(
                        attempt, schedule=self._schedule, deadline=self.config.retry_deadline,
                        backend_pid=lambda: self.conn.info.backend_pid, watch=self._watch,
                        report=lambda a: self._report(migration, a))
                except locking.LocksNotAcquired as exc:
                    kept = "nothing it does was committed" if index == 0 else \
                        "its transaction was rolled back (the statements outside a transaction before it had run)"
                    raise StepFailed(f"{self.name} {migration.id} {step.name} {exc.describe()}; {kept}",
                                     step=step.name) from None
            elif step.is_python:
                self._run_python_outside_transaction(migration, step)
            else:
                self._run_outside_transaction(migration, step, statements[0])
        if not segments or not segments[-1][0]:
            with self.conn.transaction():
                self._record(migration, direction, run_id=run_id, actor=actor,
                             duration_ms=int((time.monotonic() - started) * 1000), non_transactional=non_tx)
        return StepResult(int((time.monotonic() - started) * 1000), sum(len(s) for _, s in segments), non_tx, attempts,
                          tuple(self._notices))

    def _report(self, migration: Migration, attempt: LockAttempt) -> None:
        log.info("%s %s attempt %d (lock_timeout %d ms): %s", self.name, migration.id, attempt.number,
                 attempt.lock_timeout_ms, attempt.outcome.value)
        if self._observer is not None:
            self._observer(migration, attempt)

    def _run_transaction(self, migration: Migration, step: Step, statements: list[Statement], direction: Direction,
                         run_id: str, actor: str, started: float, *, record: bool, non_tx: bool, lock_timeout: float) -> None:
        current = None
        try:
            with self.conn.transaction():
                self._set_timeouts(local=True, lock_timeout=lock_timeout)
                if step.is_python:
                    self._run_python(migration, step)
                for current in statements:
                    began = time.monotonic()
                    self.conn.execute(current.sql)
                    if self._clock is not None:
                        self._clock.ran(current, began, transactional=True)
                if record:
                    self._record(migration, direction, run_id=run_id, actor=actor,
                                 duration_ms=int((time.monotonic() - started) * 1000), non_transactional=non_tx)
            if self._clock is not None:
                self._clock.committed()
        except locking.RETRYABLE_ERRORS:
            if self._clock is not None:
                self._clock.abandoned()
            raise
        except Exception as exc:  # refused by the server, or a Python step's own bug: a failed step, not a crash
            step_failed(self.name, migration, step, exc, PSYCOPG_ERRORS, at=current.sql if current is not None else "")

    def _run_python_outside_transaction(self, migration: Migration, step: Step) -> None:
        try:
            self._set_timeouts(local=False)
            self._run_python(migration, step)
        except Exception as exc:  # refused by the server, or a Python step's own bug: a failed step, not a crash
            step_failed(self.name, migration, step, exc, PSYCOPG_ERRORS)
        finally:
            if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.rollback()  # a step that left a transaction open must not leak it into the ledger write
            self.conn.execute("RESET lock_timeout; RESET statement_timeout")

    def _run_outside_transaction(self, migration: Migration, step: Step, statement: Statement) -> None:
        try:
            self._set_timeouts(local=False)
            began = time.monotonic()
            self.conn.execute(statement.sql)
            if self._clock is not None:
                self._clock.ran(statement, began, transactional=False)
        except psycopg.Error as exc:
            raise StepFailed(f"{self.name} {migration.id} {step.name} failed outside a transaction at "
                             f"`{statement.sql[:120]}`: {_describe(exc)}", step=step.name) from None
        finally:
            self.conn.execute("RESET lock_timeout; RESET statement_timeout")

    # -- release hooks (optional parts of the protocol) ------------------------------------------
    def invariants(self) -> list[str]:
        """Store-wide facts a release must not break, whatever its own checks say: an INVALID index
        (what a failed CREATE INDEX CONCURRENTLY leaves behind) serves no query and slows every write."""
        with _translated(self.name, "checking invariants"):
            rows = self.conn.execute(
                "SELECT 'index ' || i.indexrelid::regclass || ' is INVALID' FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            ).fetchall()
        return [r[0] for r in rows]

    def estimate_backup_bytes(self, scope: tuple[str, ...]) -> int:
        """On-disk size of the scope's tables: an upper bound for a compressed COPY backup."""
        if not scope:
            return 0
        with _translated(self.name, "estimating the backup size"):
            row = self.conn.execute("SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0) FROM unnest(%s::text[]) t",
                                    (list(scope),)).fetchone()
        return int(row[0]) if row else 0

    def validate(self, migration: Migration) -> list[str]:
        """Checks run in a transaction that is always rolled back: validation never changes the store."""
        step = migration.validate
        if step is None:
            return []
        failures: list[str] = []
        tx = self.conn.transaction(force_rollback=True)
        try:
            with tx:
                self._set_timeouts(local=True)
                if step.is_python:
                    failures.extend(self._validate_python(migration, step))
                else:
                    for number, st in enumerate(self._statements(step), 1):
                        failures.extend(self._validate_statement(number, st))
        except psycopg.Error as exc:
            failures.append(f"validation could not run: {_describe(exc)}")
        return failures

    def _validate_statement(self, number: int, st: Statement) -> list[str]:
        label = f"check {number} `{' '.join(st.sql.split())[:100]}`"
        try:
            with self.conn.transaction():  # savepoint: one failing check does not hide the others
                cur = self.conn.execute(st.sql)
                if cur.description is None:
                    return []
                for row_number, row in enumerate(cur, 1):
                    if row[0] is None or row[0] is False:
                        return [f"{label}: row {row_number} returned {row[0]!r}"]
        except psycopg.Error as exc:
            return [f"{label}: {_describe(exc)}"]
        return []

    def _validate_python(self, migration: Migration, step: Step) -> list[str]:
        assert step.function is not None
        return python_checks(step, self._context(migration), inside=self.conn.transaction)  # a savepoint

    # -- backup, restore, fingerprint ---------------------------------------------------
    def _tables(self, scope: tuple[str, ...]) -> list[cat.Table]:
        tables, missing = cat.resolve(self.conn, list(scope), missing_ok=True)
        if missing:
            raise BackupError(f"store {self.name}: tables not found: {', '.join(missing)}")
        # A partition listed beside its partitioned parent is in the parent's backup already;
        # backed up twice, a restore would put its rows back twice.
        return cat.without_covered_partitions(self.conn, tables)

    def backup(self, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress) -> dict[str, Any]:
        return self._backup(scope, writer, progress, None)

    def backup_sample(self, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress, *, limit: int) -> dict[str, Any]:
        return self._backup(scope, writer, progress, limit)

    def _backup(self, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress, limit: int | None) -> dict[str, Any]:
        from polyshift.adapters.postgres import backup as pg_backup

        try:
            return pg_backup.backup(self.conn, self.config.url, self._tables(scope), writer, progress, limit=limit,
                                    hashed=self._fingerprinted)
        except psycopg.Error as exc:
            raise translate(PSYCOPG_ERRORS, exc, f"store {self.name}: backup failed", BackupError) from None

    def restore(self, manifest: Manifest, artifacts: ArtifactStore, progress: Progress) -> RestoreReport:
        from polyshift.adapters.postgres import backup as pg_backup

        try:
            return pg_backup.restore(self.conn, manifest, artifacts, progress, lock_timeout=self.config.lock_timeout)
        except psycopg.Error as exc:
            raise translate(PSYCOPG_ERRORS, exc, f"store {self.name}: restore of {manifest.id} failed, nothing was changed") from None

    def fingerprint(self, scope: tuple[str, ...]) -> Fingerprint:
        self._fingerprinted = None
        try:
            with self.conn.transaction():
                self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                snapshot = cat.snapshot_key(self.conn)
                items: dict[str, dict[str, Any]] = {}
                hashed: dict[cat.Table, tuple[int, str, str | None]] = {}
                # The whole schema is described once, in this snapshot; the scope's tables' shapes
                # are read from it rather than described again, one query each.
                described = cat.schema_descriptions(self.conn)
                tables, missing = cat.resolve(self.conn, list(scope), missing_ok=True)
                for table in tables:
                    rows, data = cat.table_data_hash(self.conn, table)
                    shape = cat.table_schema_hash(self.conn, table, described)
                    items[table.qualified] = {"schema": shape, "data": data, "rows": rows}
                    hashed[table] = (rows, data, shape)
                for name in missing:
                    items[name] = {"missing": True}
                schema = cat.schema_hash(self.conn, described)
        except psycopg.Error as exc:
            raise translate(PSYCOPG_ERRORS, exc, f"store {self.name}: fingerprint failed") from None
        self._fingerprinted = cat.Hashed(snapshot, hashed)
        data_hash = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
        return Fingerprint(schema, data_hash, {k: int(v.get("rows", 0)) for k, v in items.items()}, items)

    # -- rehearsals (optional parts of the protocol) -------------------------------------------
    def inventory(self, scope: tuple[str, ...]) -> dict[str, str]:
        """The whole database's shape (the scope's rows are in the fingerprint)."""
        with _translated(self.name, "reading the catalog"):
            return pg_inventory.inventory(self.conn)

    def referenced(self, scope: tuple[str, ...]) -> tuple[str, ...]:
        with _translated(self.name, "reading the foreign keys"):
            tables, _missing = cat.resolve(self.conn, list(scope), missing_ok=True)
            return tuple(t.qualified for t in pg_inventory.referenced(self.conn, tables))

    @contextmanager
    def timing(self) -> Iterator[list[StatementTiming]]:
        """Per-statement locks and times of what ``apply`` runs meanwhile (Python steps: as a whole only)."""
        self._clock = StatementClock()
        try:
            yield self._clock.timings
        finally:
            self._clock = None

    def query_value(self, query: str, params: Any = None) -> Any:
        row = self.conn.execute(sql.SQL(query), params).fetchone()
        return None if row is None else row[0]
