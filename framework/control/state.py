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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from polyshift.framework.control import failpoints
from polyshift.framework.control.identity import this_runner
from polyshift.framework.control.localfiles import private_file
from polyshift.framework.control.schema import RUN_LOCK_CLASS, AdvisoryLock, audit, backups, ensure_schema, journal, lock, runs
from polyshift.framework.core.errors import AuditChainBroken, ConfigError, ControlPlaneVersionError, StoreError
from polyshift.framework.core.lifecycle import UNFINISHED, Phase, RunCommand, RunStatus, Step
from polyshift.framework.core.processes import pid_alive
from polyshift.framework.core.secrets import redact, redact_obj, url_without_password

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
    if not url.startswith("postgresql"):
        return {}
    # TCP keepalives: a runner whose machine vanished lets go of its run lock within a minute.
    return {"application_name": "polyshift control plane", "keepalives": 1, "keepalives_idle": 20,
            "keepalives_interval": 5, "keepalives_count": 4, "connect_timeout": 10}


class ControlPlane:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.shared = self.engine.dialect.name == "postgresql"
        # PostgreSQL: a connection per run this process drives, holding that run's advisory lock
        # for as long as the process lives; the server drops it when the process dies, on any host.
        self._run_locks: dict[str, sa.Connection] = {}
        self._lock_engine: sa.Engine | None = None

    def close(self) -> None:
        for run_id in list(self._run_locks):
            self._let_go(run_id)
        if self._lock_engine is not None:
            self._lock_engine.dispose()
        self.engine.dispose()

    # -- runs and journal -------------------------------------------------------------
    def start_run(self, command: RunCommand, detail: dict[str, Any] | None = None) -> str:
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
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(
                finished_at=_now(), status=status, detail=json.dumps(redact_obj(detail or {})),
            ))
        self._let_go(run_id)

    def unfinished_runs(self, commands: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Runs still 'running' (alive, or died without finishing) or left for 'polyshift recover'."""
        query = sa.select(runs).where(runs.c.status.in_(UNFINISHED)).order_by(runs.c.started_at)
        if commands is not None:
            query = query.where(runs.c.command.in_(commands))
        with self.engine.connect() as conn:
            return [dict(r._mapping) | {"detail": json.loads(r.detail)} for r in conn.execute(query)]

    def claim_run(self, run: dict[str, Any]) -> bool:
        """This process now drives ``run`` (recover). A compare-and-set on the owner we read: when
        two recovers race, exactly one claims it. On PostgreSQL the claimer first takes the run's
        lock, which a process that still drives it (on any host) holds."""
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
        with self.engine.connect() as conn:
            return bool(conn.execute(sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid::bigint = :c AND objid::bigint = :o)"), {"c": RUN_LOCK_CLASS, "o": _run_key(run["id"])}).scalar())

    def _hold(self, run_id: str, *, wait: bool) -> bool:
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
            try:
                conn.close()  # NullPool: the server connection ends, and the session lock with it
            except SQLAlchemyError:
                pass

    def journal(self, run_id: str, step: Step, phase: Phase, *, store: str | None = None,
                version: str | None = None, detail: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(journal.insert().values(
                run_id=run_id, at=_now(), store=store, version=version, step=step, phase=phase,
                detail=json.dumps(redact_obj(detail or {}), default=str), runner=this_runner().label(),
            ))
        failpoints.journal_written()

    def journal_entries(self, run_id: str | None = None, *, version: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(journal).order_by(journal.c.id)
        if run_id is not None:
            query = query.where(journal.c.run_id == run_id)
        if version is not None:
            query = query.where(journal.c.version == version)
        with self.engine.connect() as conn:
            return [dict(r._mapping) | {"detail": json.loads(r.detail)} for r in conn.execute(query)]

    # -- audit chain ------------------------------------------------------------------
    def audit(self, action: str, subject: str, detail: dict[str, Any] | None = None, *, who: str | None = None) -> AuditEntry:
        """Append one entry whose hash covers the previous entry's hash. Appends are serialized in
        the database (an advisory lock held to the end of the transaction on PostgreSQL, the write
        lock on SQLite), so runners on many machines extend one chain; the retry is only for
        writers that do not take that lock (a polyshift from before it did)."""
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
        query = sa.select(audit).order_by(audit.c.seq)
        if subject is not None:
            query = query.where(audit.c.subject == subject)
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                try:
                    detail = json.loads(r.detail)
                except ValueError:
                    detail = {"unparsable": r.detail}
                yield AuditEntry(r.seq, r.at, r.actor, r.action, r.subject, detail, r.prev_hash, r.hash, r.runner)

    def verify_audit(self) -> int:
        """Walk the chain; returns the number of entries or raises AuditChainBroken at the first bad one."""
        prev, expected_seq, count = GENESIS, 1, 0
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(audit).order_by(audit.c.seq)):
                entry = dict(r._mapping)
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
        with self.engine.begin() as conn:
            conn.execute(backups.insert().values(
                id=manifest.id, store=manifest.store, version=manifest.version, scope=json.dumps(list(manifest.scope)),
                created_at=manifest.created_at, run_id=run_id, reason=manifest.reason, bytes=manifest.size,
                verified_at=_now().isoformat(timespec="seconds"), manifest_sha256=manifest.digest or None,
            ))

    def manifest_digest(self, artifact_id: str) -> str | None:
        """The sha256 a backup's manifest had when it was sealed (None: not on record here)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(backups.c.manifest_sha256).where(backups.c.id == artifact_id)).scalar()

    def rollback_points(self, store: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(backups).order_by(backups.c.created_at)
        if store:
            query = query.where(backups.c.store == store)
        with self.engine.connect() as conn:
            return [dict(r._mapping) | {"scope": json.loads(r.scope)} for r in conn.execute(query)]


def _run_key(run_id: str) -> int:
    """A run's advisory lock key; a collision only makes a dead run look alive (recover waits)."""
    return zlib.crc32(run_id.encode()) & 0x7FFFFFFF
