"""The control plane: run journal, hash-chained audit log and rollback-point index (SQLAlchemy Core).

Default ``sqlite:///.polyshift/state.db``; a PostgreSQL URL shares it across a pipeline: many
runners on many machines, each naming itself (``identity``) in what it writes. The tables and
their version are ``schema``'s. Each store also keeps its own ledger, so losing this database
never loses a store's version.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyshift.framework.control import failpoints
from polyshift.framework.control.identity import this_runner
from polyshift.framework.control.keys import AUDIT, BACKUPS, JOURNAL, RUN_LOCK_CLASS, RUNS, SCHEMA_VERSION, AdvisoryLock
from polyshift.framework.control.localfiles import private_file
from polyshift.framework.control.reads import Dialect, DirectReads, StateUrl, pg_connect_args
from polyshift.framework.core.errors import AuditChainBroken, ConfigError, ControlPlaneVersionError, StoreError
from polyshift.framework.core.lifecycle import UNFINISHED, Phase, RunCommand, RunStatus, Step
from polyshift.framework.core.processes import pid_alive
from polyshift.framework.core.secrets import redact, redact_obj, url_without_password

# SQLAlchemy (and the table definitions in ``schema``) load on the first write: reads go through
# ``reads`` on the driver itself, so status and plan do not pay for SQLAlchemy's import (issue 19).
if TYPE_CHECKING:
    import sqlalchemy as sa

GENESIS = "0" * 64
_HASHED = ("seq", "at", "actor", "action", "subject", "detail", "prev_hash")


def actor() -> str:
    explicit = os.environ.get("POLYSHIFT_ACTOR")
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _now() -> datetime:
    return datetime.now(UTC)


def _entry_hash(entry: dict[str, Any]) -> str:
    """The runner is covered when the entry has one; entries written before it was kept hash as they did."""
    keys = (*_HASHED, "runner") if entry.get("runner") is not None else _HASHED
    body = json.dumps({k: entry[k] for k in keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str
    runner: str | None = None


def driver_url(url: str) -> str:
    """PostgreSQL URLs as users write them, on the psycopg 3 driver polyshift installs."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def make_engine(url: str) -> sa.Engine:
    """An engine for the control-plane database (sqlite file or PostgreSQL), its schema created or upgraded."""
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    from polyshift.framework.control.schema import ensure_schema

    url = driver_url(url)
    try:
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            # Created 0600 before SQLite opens it; SQLite gives its journal files the same mode.
            private_file(Path(url[len("sqlite:///"):]))
        if url.startswith("sqlite"):
            # BEGIN IMMEDIATE takes the write lock up front, so two processes appending to the
            # audit chain (or changing a flag) queue instead of failing on lock upgrade.
            engine = sa.create_engine(url, connect_args={"timeout": 60, "isolation_level": None})

            @sa.event.listens_for(engine, "begin")
            def _begin(conn: sa.Connection) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            engine = sa.create_engine(url, pool_pre_ping=True, connect_args=_pg_connect_args(url))
        ensure_schema(engine)
        return engine
    except ControlPlaneVersionError:
        raise
    except (SQLAlchemyError, ImportError) as exc:
        raise ConfigError(f"state database {url_without_password(url)} is unusable: {redact(str(exc).splitlines()[0])}") from None
    except OSError as exc:
        raise ConfigError(f"state database {url_without_password(url)} is unusable: {exc.strerror or exc}") from None


def _pg_connect_args(url: str) -> dict[str, Any]:
    return pg_connect_args() if url.startswith("postgresql") else {}


class ControlPlane:
    def __init__(self, url: str) -> None:
        self.url = url
        where = StateUrl.parse(url)
        self.shared = where.dialect is Dialect.POSTGRESQL
        self._engine: sa.Engine | None = None
        reads = DirectReads.open(where)
        if reads is None or (found := reads.schema_version()) is None or found[0] != SCHEMA_VERSION:
            # Missing, older or newer: the writing path creates or upgrades it under its lock, or
            # refuses a newer one (closing what it opened), before anything reads it.
            try:
                self._engine = make_engine(url)
            except BaseException:
                if reads is not None:
                    reads.close()
                raise
            reads = reads or DirectReads(where)
        self._reads = reads
        # PostgreSQL: a connection per run this process drives, holding that run's advisory lock
        # for as long as the process lives; the server drops it when the process dies, on any host.
        self._run_locks: dict[str, sa.Connection] = {}
        self._lock_engine: sa.Engine | None = None

    @property
    def engine(self) -> sa.Engine:
        """SQLAlchemy's engine, for writes; created (with SQLAlchemy's import) on first use."""
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def close(self) -> None:
        for run_id in list(self._run_locks):
            self._let_go(run_id)
        if self._lock_engine is not None:
            self._lock_engine.dispose()
        if self._engine is not None:
            self._engine.dispose()
        self._reads.close()

    # -- runs and journal -------------------------------------------------------------
    def start_run(self, command: RunCommand, detail: dict[str, Any] | None = None) -> str:
        from polyshift.framework.control.schema import runs

        run_id = str(uuid.uuid4())
        me = this_runner()
        if self.shared:
            self._hold(run_id, wait=True)
        with self.engine.begin() as conn:
            conn.execute(runs.insert().values(
                id=run_id, command=str(command), actor=actor(), pid=me.pid, host=me.host, runner=me.label(),
                started_at=_now(), status=RunStatus.RUNNING, detail=json.dumps(redact_obj(detail or {})),
            ))
        return run_id

    def finish_run(self, run_id: str, status: RunStatus, detail: dict[str, Any] | None = None) -> None:
        from polyshift.framework.control.schema import runs

        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(
                finished_at=_now(), status=status, detail=json.dumps(redact_obj(detail or {})),
            ))
        self._let_go(run_id)

    def unfinished_runs(self, commands: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Runs still 'running' (alive, or died without finishing) or left for 'polyshift recover'."""
        params = {f"s{i}": str(status) for i, status in enumerate(UNFINISHED)}
        where = f"status IN ({', '.join(f'%({name})s' for name in params)})"
        if commands is not None:
            params |= {f"c{i}": str(command) for i, command in enumerate(commands)}
            where += f" AND command IN ({', '.join(f'%(c{i})s' for i in range(len(commands)))})" if commands else " AND 1 = 0"
        found = self._reads.rows(f"SELECT * FROM {RUNS} WHERE {where} ORDER BY started_at", params,
                                 datetimes=("started_at", "finished_at"))
        return [r | {"detail": json.loads(r["detail"])} for r in found]

    def claim_run(self, run: dict[str, Any]) -> bool:
        """This process now drives ``run`` (recover). A compare-and-set on the owner we read: when
        two recovers race, exactly one claims it. On PostgreSQL the claimer first takes the run's
        lock, which a process that still drives it (on any host) holds."""
        from polyshift.framework.control.schema import runs

        if self.shared and not self._hold(run["id"], wait=False):
            return False
        me = this_runner()
        with self.engine.begin() as conn:
            done = conn.execute(runs.update().where(
                (runs.c.id == run["id"]) & (runs.c.pid == run["pid"]) & (runs.c.host == run["host"])
                & runs.c.status.in_(UNFINISHED),
            ).values(pid=me.pid, host=me.host, runner=me.label(), status=RunStatus.RUNNING))
            claimed = done.rowcount == 1
        if not claimed:
            self._let_go(run["id"])
        return claimed

    def run_is_alive(self, run: dict[str, Any]) -> bool:
        """Whether a process still drives ``run``: this one, a live process of this host with its
        pid, or (PostgreSQL) a process anywhere that holds its run lock."""
        if run["id"] in self._run_locks:
            return True
        if run["host"] == socket.gethostname() and pid_alive(run["pid"]):
            return True
        if not self.shared:
            return False
        return bool(self._reads.rows(
            "SELECT 1 AS held FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid::bigint = %(c)s AND objid::bigint = %(o)s", {"c": RUN_LOCK_CLASS, "o": _run_key(run["id"])}))

    def _hold(self, run_id: str, *, wait: bool) -> bool:
        import sqlalchemy as sa

        if run_id in self._run_locks:
            return True
        if self._lock_engine is None:
            self._lock_engine = sa.create_engine(self.engine.url, poolclass=sa.pool.NullPool,
                                                 connect_args=_pg_connect_args(self.engine.url.drivername))
        conn = self._lock_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        function = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
        got = conn.execute(sa.text(f"SELECT {function}(:c, :o)"), {"c": RUN_LOCK_CLASS, "o": _run_key(run_id)}).scalar()
        if wait or got:
            self._run_locks[run_id] = conn
            return True
        conn.close()
        return False

    def _let_go(self, run_id: str) -> None:
        conn = self._run_locks.pop(run_id, None)
        if conn is not None:
            from sqlalchemy.exc import SQLAlchemyError

            try:
                conn.close()  # NullPool: the server connection ends, and the session lock with it
            except SQLAlchemyError:
                pass

    def journal(self, run_id: str, step: Step, phase: Phase, *, store: str | None = None,
                version: str | None = None, detail: dict[str, Any] | None = None) -> None:
        from polyshift.framework.control.schema import journal

        with self.engine.begin() as conn:
            conn.execute(journal.insert().values(
                run_id=run_id, at=_now(), store=store, version=version, step=step, phase=phase,
                detail=json.dumps(redact_obj(detail or {}), default=str), runner=this_runner().label(),
            ))
        failpoints.journal_written()

    def journal_entries(self, run_id: str | None = None, *, version: str | None = None) -> list[dict[str, Any]]:
        where = " AND ".join(f"{column} = %({column})s" for column, value in (("run_id", run_id), ("version", version))
                             if value is not None)
        found = self._reads.rows(f"SELECT * FROM {JOURNAL}{' WHERE ' + where if where else ''} ORDER BY id",
                                 {"run_id": run_id, "version": version}, datetimes=("at",))
        return [r | {"detail": json.loads(r["detail"])} for r in found]

    # -- audit chain ------------------------------------------------------------------
    def audit(self, action: str, subject: str, detail: dict[str, Any] | None = None, *, who: str | None = None) -> AuditEntry:
        """Append one entry whose hash covers the previous entry's hash. Appends are serialized in
        the database (an advisory lock held to the end of the transaction on PostgreSQL, the write
        lock on SQLite), so runners on many machines extend one chain; the retry is only for
        writers that do not take that lock (a polyshift from before it did)."""
        import sqlalchemy as sa
        from sqlalchemy.exc import IntegrityError, OperationalError

        from polyshift.framework.control.schema import audit, lock

        payload = json.dumps(redact_obj(detail or {}), sort_keys=True, default=str)
        for _attempt in range(50):
            try:
                with self.engine.begin() as conn:
                    lock(conn, AdvisoryLock.AUDIT)
                    last = conn.execute(sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
                    entry: dict[str, Any] = {
                        "seq": (last.seq + 1) if last else 1,
                        "at": _now().isoformat(timespec="microseconds"),
                        "actor": redact(who or actor()),
                        "action": action,
                        "subject": redact(subject),
                        "detail": payload,
                        "prev_hash": last.hash if last else GENESIS,
                        "runner": this_runner().label(),
                    }
                    entry["hash"] = _entry_hash(entry)
                    conn.execute(audit.insert().values(**entry))
                    return AuditEntry(**(entry | {"detail": json.loads(payload)}))
            except IntegrityError:
                continue  # another writer took this seq: re-read the tip and chain onto it
            except OperationalError as exc:
                raise StoreError(f"state database: cannot append to the audit log: {redact(str(exc).splitlines()[0])}") from None
        raise StoreError("state database: audit log is contended; gave up after 50 attempts")

    def audit_entries(self, *, subject: str | None = None) -> Iterator[AuditEntry]:
        where = " WHERE subject = %(subject)s" if subject is not None else ""
        for r in self._reads.rows(f"SELECT * FROM {AUDIT}{where} ORDER BY seq", {"subject": subject}):
            try:
                detail = json.loads(r["detail"])
            except ValueError:
                detail = {"unparsable": r["detail"]}
            yield AuditEntry(r["seq"], r["at"], r["actor"], r["action"], r["subject"], detail, r["prev_hash"], r["hash"],
                             r["runner"])

    def verify_audit(self) -> int:
        """Walk the chain; returns the number of entries or raises AuditChainBroken at the first bad one."""
        prev, expected_seq, count = GENESIS, 1, 0
        for entry in self._reads.rows(f"SELECT * FROM {AUDIT} ORDER BY seq", {}):
            if entry["seq"] != expected_seq:
                raise AuditChainBroken(f"audit entry {expected_seq} is missing (next present is {entry['seq']})", seq=expected_seq)
            if entry["prev_hash"] != prev:
                seq = entry["seq"]
                raise AuditChainBroken(f"audit entry {seq} does not chain to entry {seq - 1}", seq=seq)
            if _entry_hash(entry) != entry["hash"]:
                seq = entry["seq"]
                raise AuditChainBroken(f"audit entry {seq} was altered (its hash does not match its content)", seq=seq)
            prev, expected_seq, count = entry["hash"], expected_seq + 1, count + 1
        return count

    # -- rollback points --------------------------------------------------------------
    def add_backup(self, manifest: Any, run_id: str | None) -> None:
        from polyshift.framework.control.schema import backups

        with self.engine.begin() as conn:
            conn.execute(backups.insert().values(
                id=manifest.id, store=manifest.store, version=manifest.version, scope=json.dumps(list(manifest.scope)),
                created_at=manifest.created_at, run_id=run_id, reason=manifest.reason, bytes=manifest.size,
                verified_at=_now().isoformat(timespec="seconds"), manifest_sha256=manifest.digest or None,
            ))

    def manifest_digest(self, artifact_id: str) -> str | None:
        """The sha256 a backup's manifest had when it was sealed (None: not on record here)."""
        found = self._reads.rows(f"SELECT manifest_sha256 FROM {BACKUPS} WHERE id = %(id)s", {"id": artifact_id})
        return found[0]["manifest_sha256"] if found else None

    def rollback_points(self, store: str | None = None) -> list[dict[str, Any]]:
        where = " WHERE store = %(store)s" if store else ""
        found = self._reads.rows(f"SELECT * FROM {BACKUPS}{where} ORDER BY created_at", {"store": store})
        return [r | {"scope": json.loads(r["scope"])} for r in found]


def _run_key(run_id: str) -> int:
    """A run's advisory lock key; a collision only makes a dead run look alive (recover waits)."""
    return zlib.crc32(run_id.encode()) & 0x7FFFFFFF
