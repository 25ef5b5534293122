"""The control plane: run journal, hash-chained audit log and rollback-point index.

Default ``sqlite:///.polyshift/state.db``; a PostgreSQL URL shares it across a pipeline: many
runners on many machines, each naming itself (``identity``) in what it writes. The tables and
their version are ``schema``'s (SQLAlchemy Core, used only to create and upgrade them); rows are
read and written on the database's own driver (``database``). Each store also keeps its own
ledger, so losing this database never loses a store's version.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
import sqlite3
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyshift.framework.control import failpoints
from polyshift.framework.control.database import Dialect, DuplicateKey, StateDatabase, StateUrl, pg_connect_args, run_lock_connection
from polyshift.framework.control.identity import this_runner
from polyshift.framework.control.keys import AUDIT, BACKUPS, JOURNAL, RUN_LOCK_CLASS, RUNS, SCHEMA_VERSION, AdvisoryLock
from polyshift.framework.control.localfiles import private_file
from polyshift.framework.core.errors import AuditChainBroken, ConfigError, ControlPlaneVersionError, StoreError
from polyshift.framework.core.lifecycle import UNFINISHED, Phase, RunCommand, RunStatus, Step
from polyshift.framework.core.processes import pid_alive
from polyshift.framework.core.secrets import redact, redact_obj, url_without_password

# SQLAlchemy (and the table definitions in ``schema``) load only to create or upgrade the schema
# (and for the flag server's accounts): rows go through ``database`` on the driver itself, so no
# command that finds the schema current pays for SQLAlchemy's import (issue 19).
if TYPE_CHECKING:
    import psycopg
    import sqlalchemy as sa

log = logging.getLogger("polyshift.control")

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


def make_engine(where: StateUrl) -> sa.Engine:
    """An engine for the control-plane database (sqlite file or PostgreSQL), its schema created or
    upgraded. A SQLite file is already there, 0600 (``open_database`` made it)."""
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    from polyshift.framework.control.schema import ensure_schema

    url = driver_url(where.url)
    try:
        if where.dialect is Dialect.SQLITE:
            _write_ahead_log(Path(where.target))
            # BEGIN IMMEDIATE takes the write lock up front, so two processes appending to the
            # audit chain (or changing a flag) queue instead of failing on lock upgrade.
            engine = sa.create_engine(url, connect_args={"timeout": 60, "isolation_level": None})

            @sa.event.listens_for(engine, "begin")
            def _begin(conn: sa.Connection) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            engine = sa.create_engine(url, pool_pre_ping=True, connect_args=pg_connect_args())
        ensure_schema(engine)
        return engine
    except ControlPlaneVersionError:
        raise
    except (SQLAlchemyError, ImportError) as exc:
        raise ConfigError(f"state database {url_without_password(url)} is unusable: {redact(str(exc).splitlines()[0])}") from None
    except OSError as exc:
        raise ConfigError(f"state database {url_without_password(url)} is unusable: {exc.strerror or exc}") from None


def _write_ahead_log(path: Path) -> None:
    """A new SQLite control plane keeps its journal in write-ahead-log mode: a commit syncs one
    file instead of two, and readers never wait for a writer (issue 19: a long history writes
    thousands of journal rows). The mode is kept in the file, so it is set once, by whoever finds
    the file empty; the other processes never issue the pragma, which takes its lock without the
    busy timeout and failed their opens when every connection set it. A process that loses that
    race leaves the file as it is: rollback-journal mode is as safe, only slower. Databases that
    already hold tables keep their mode."""
    if path.stat().st_size != 0:
        return
    try:
        with closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        log.debug("%s stays in rollback-journal mode: %s", path, exc)


def open_database(url: str) -> StateDatabase:
    """The control plane's database on its driver, its schema current: when it is missing, older
    or newer, SQLAlchemy's schema path first creates or upgrades it under its lock, or refuses a
    newer one, before anything else reads or writes it."""
    where = StateUrl.parse(url)
    if where.dialect is Dialect.SQLITE:
        try:
            private_file(Path(where.target))  # made 0600 again if something loosened it; created 0600 if missing
        except OSError as exc:
            raise ConfigError(f"state database {url_without_password(url)} is unusable: {exc.strerror or exc}") from None
    db = StateDatabase.open(where)
    if db is None or (found := db.schema_version()) is None or found[0] != SCHEMA_VERSION:
        try:
            make_engine(where).dispose()
        except BaseException:
            if db is not None:
                db.close()
            raise
        db = db or StateDatabase(where)
    return db


class ControlPlane:
    def __init__(self, url: str) -> None:
        self.url = url
        self.db = open_database(url)
        self.shared = self.db.url.dialect is Dialect.POSTGRESQL
        # PostgreSQL: a connection per run this process drives, holding that run's advisory lock
        # for as long as the process lives; the server drops it when the process dies, on any host.
        self._run_locks: dict[str, psycopg.Connection[Any]] = {}
        self._engine: sa.Engine | None = None

    @property
    def engine(self) -> sa.Engine:
        """A SQLAlchemy engine on the same database, for the flag server's accounts; created (with
        SQLAlchemy's import) on first use."""
        if self._engine is None:
            self._engine = make_engine(self.db.url)
        return self._engine

    def close(self) -> None:
        for run_id in list(self._run_locks):
            self._let_go(run_id)
        if self._engine is not None:
            self._engine.dispose()
        self.db.close()

    # -- runs and journal -------------------------------------------------------------
    def start_run(self, command: RunCommand, detail: dict[str, Any] | None = None) -> str:
        run_id = str(uuid.uuid4())
        me = this_runner()
        if self.shared:
            self._hold(run_id, wait=True)
        with self.db.transaction() as tx:
            tx.execute(f"INSERT INTO {RUNS} (id, command, actor, pid, host, runner, started_at, status, detail) "
                       "VALUES (%(id)s, %(command)s, %(actor)s, %(pid)s, %(host)s, %(runner)s, %(at)s, %(status)s, %(detail)s)",
                       {"id": run_id, "command": command, "actor": actor(), "pid": me.pid, "host": me.host,
                        "runner": me.label(), "at": _now(), "status": RunStatus.RUNNING,
                        "detail": json.dumps(redact_obj(detail or {}))})
        return run_id

    def finish_run(self, run_id: str, status: RunStatus, detail: dict[str, Any] | None = None) -> None:
        with self.db.transaction() as tx:
            tx.execute(f"UPDATE {RUNS} SET finished_at = %(at)s, status = %(status)s, detail = %(detail)s WHERE id = %(id)s",
                       {"at": _now(), "status": status, "detail": json.dumps(redact_obj(detail or {})), "id": run_id})
        self._let_go(run_id)

    def unfinished_runs(self, commands: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Runs still 'running' (alive, or died without finishing) or left for 'polyshift recover'."""
        where, params = _in("status", UNFINISHED)
        if commands is not None:
            among, more = _in("command", commands)
            where, params = f"{where} AND {among}", params | more
        found = self.db.rows(f"SELECT * FROM {RUNS} WHERE {where} ORDER BY started_at", params,
                             datetimes=("started_at", "finished_at"))
        return [r | {"detail": json.loads(r["detail"])} for r in found]

    def claim_run(self, run: dict[str, Any]) -> bool:
        """This process now drives ``run`` (recover). A compare-and-set on the owner we read: when
        two recovers race, exactly one claims it. On PostgreSQL the claimer first takes the run's
        lock, which a process that still drives it (on any host) holds."""
        if self.shared and not self._hold(run["id"], wait=False):
            return False
        me = this_runner()
        unfinished, params = _in("status", UNFINISHED)
        with self.db.transaction() as tx:
            claimed = tx.execute(
                f"UPDATE {RUNS} SET pid = %(pid)s, host = %(host)s, runner = %(runner)s, status = %(running)s "
                f"WHERE id = %(id)s AND pid = %(old_pid)s AND host = %(old_host)s AND {unfinished}",
                params | {"pid": me.pid, "host": me.host, "runner": me.label(), "running": RunStatus.RUNNING,
                          "id": run["id"], "old_pid": run["pid"], "old_host": run["host"]}) == 1
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
        return bool(self.db.rows(
            "SELECT 1 AS held FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid::bigint = %(c)s AND objid::bigint = %(o)s", {"c": RUN_LOCK_CLASS, "o": _run_key(run["id"])}))

    def _hold(self, run_id: str, *, wait: bool) -> bool:
        if run_id in self._run_locks:
            return True
        import psycopg

        conn = run_lock_connection(self.db.url)
        function = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
        try:
            row = conn.execute(f"SELECT {function}(%s, %s)", (RUN_LOCK_CLASS, _run_key(run_id))).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"state database: cannot take the lock of run {run_id[:8]}: {redact(str(exc).splitlines()[0])}") from None
        if wait or (row is not None and row[0]):
            self._run_locks[run_id] = conn
            return True
        conn.close()
        return False

    def _let_go(self, run_id: str) -> None:
        conn = self._run_locks.pop(run_id, None)
        if conn is not None:
            conn.close()  # the server connection ends, and the session lock with it

    def journal(self, run_id: str, step: Step, phase: Phase, *, store: str | None = None,
                version: str | None = None, detail: dict[str, Any] | None = None) -> None:
        with self.db.transaction() as tx:
            tx.execute(f"INSERT INTO {JOURNAL} (run_id, at, store, version, step, phase, detail, runner) "
                       "VALUES (%(run_id)s, %(at)s, %(store)s, %(version)s, %(step)s, %(phase)s, %(detail)s, %(runner)s)",
                       {"run_id": run_id, "at": _now(), "store": store, "version": version, "step": step, "phase": phase,
                        "detail": json.dumps(redact_obj(detail or {}), default=str), "runner": this_runner().label()})
        failpoints.journal_written()

    def journal_entries(self, run_id: str | None = None, *, version: str | None = None) -> list[dict[str, Any]]:
        where = " AND ".join(f"{column} = %({column})s" for column, value in (("run_id", run_id), ("version", version))
                             if value is not None)
        found = self.db.rows(f"SELECT * FROM {JOURNAL}{' WHERE ' + where if where else ''} ORDER BY id",
                             {"run_id": run_id, "version": version}, datetimes=("at",))
        return [r | {"detail": json.loads(r["detail"])} for r in found]

    # -- audit chain ------------------------------------------------------------------
    def audit(self, action: str, subject: str, detail: dict[str, Any] | None = None, *, who: str | None = None) -> AuditEntry:
        """Append one entry whose hash covers the previous entry's hash. Appends are serialized in
        the database (an advisory lock held to the end of the transaction on PostgreSQL, the write
        lock on SQLite), so runners on many machines extend one chain; the retry is only for
        writers that do not take that lock (a polyshift from before it did)."""
        payload = json.dumps(redact_obj(detail or {}), sort_keys=True, default=str)
        for _attempt in range(50):
            try:
                with self.db.transaction() as tx:
                    tx.lock(AdvisoryLock.AUDIT)
                    last = tx.rows(f"SELECT seq, hash FROM {AUDIT} ORDER BY seq DESC LIMIT 1")
                    entry: dict[str, Any] = {
                        "seq": (last[0]["seq"] + 1) if last else 1,
                        "at": _now().isoformat(timespec="microseconds"),
                        "actor": redact(who or actor()),
                        "action": action,
                        "subject": redact(subject),
                        "detail": payload,
                        "prev_hash": last[0]["hash"] if last else GENESIS,
                        "runner": this_runner().label(),
                    }
                    entry["hash"] = _entry_hash(entry)
                    tx.execute(f"INSERT INTO {AUDIT} ({', '.join(entry)}) VALUES ({', '.join(f'%({k})s' for k in entry)})",
                               entry)
                    return AuditEntry(**(entry | {"detail": json.loads(payload)}))
            except DuplicateKey:
                continue  # another writer took this seq: re-read the tip and chain onto it
            except StoreError as exc:
                raise StoreError(f"state database: cannot append to the audit log: {exc}") from None
        raise StoreError("state database: audit log is contended; gave up after 50 attempts")

    def audit_entries(self, *, subject: str | None = None) -> Iterator[AuditEntry]:
        where = " WHERE subject = %(subject)s" if subject is not None else ""
        for r in self.db.rows(f"SELECT * FROM {AUDIT}{where} ORDER BY seq", {"subject": subject}):
            try:
                detail = json.loads(r["detail"])
            except ValueError:
                detail = {"unparsable": r["detail"]}
            yield AuditEntry(r["seq"], r["at"], r["actor"], r["action"], r["subject"], detail, r["prev_hash"], r["hash"],
                             r["runner"])

    def verify_audit(self) -> int:
        """Walk the chain; returns the number of entries or raises AuditChainBroken at the first bad one."""
        prev, expected_seq, count = GENESIS, 1, 0
        for entry in self.db.rows(f"SELECT * FROM {AUDIT} ORDER BY seq"):
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
        with self.db.transaction() as tx:
            tx.execute(f"INSERT INTO {BACKUPS} (id, store, version, scope, created_at, run_id, reason, bytes, verified_at, "
                       "manifest_sha256) VALUES (%(id)s, %(store)s, %(version)s, %(scope)s, %(created_at)s, %(run_id)s, "
                       "%(reason)s, %(bytes)s, %(verified_at)s, %(digest)s)",
                       {"id": manifest.id, "store": manifest.store, "version": manifest.version,
                        "scope": json.dumps(list(manifest.scope)), "created_at": manifest.created_at, "run_id": run_id,
                        "reason": manifest.reason, "bytes": manifest.size,
                        "verified_at": _now().isoformat(timespec="seconds"), "digest": manifest.digest or None})

    def manifest_digest(self, artifact_id: str) -> str | None:
        """The sha256 a backup's manifest had when it was sealed (None: not on record here)."""
        found = self.db.rows(f"SELECT manifest_sha256 FROM {BACKUPS} WHERE id = %(id)s", {"id": artifact_id})
        return found[0]["manifest_sha256"] if found else None

    def rollback_points(self, store: str | None = None) -> list[dict[str, Any]]:
        where = " WHERE store = %(store)s" if store else ""
        found = self.db.rows(f"SELECT * FROM {BACKUPS}{where} ORDER BY created_at", {"store": store})
        return [r | {"scope": json.loads(r["scope"])} for r in found]


def _in(column: str, values: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """``column IN (...)`` with one named parameter per value (never true for no values)."""
    params = {f"{column}{i}": str(value) for i, value in enumerate(values)}
    if not params:
        return "1 = 0", {}
    return f"{column} IN ({', '.join(f'%({name})s' for name in params)})", params


def _run_key(run_id: str) -> int:
    """A run's advisory lock key; a collision only makes a dead run look alive (recover waits)."""
    return zlib.crc32(run_id.encode()) & 0x7FFFFFFF
