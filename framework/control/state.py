"""The control plane: run journal, hash-chained audit log and rollback-point index (SQLAlchemy Core).

Default ``sqlite:///.polyshift/state.db``; a PostgreSQL URL shares it across a pipeline.
Each store also keeps its own ledger, so losing this database never loses a store's version.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from polyshift.framework.control import failpoints
from polyshift.framework.control.localfiles import private_file
from polyshift.framework.core.errors import AuditChainBroken, ConfigError, StoreError
from polyshift.framework.core.lifecycle import UNFINISHED, Phase, RunCommand, RunStatus, Step
from polyshift.framework.core.secrets import redact, redact_obj, url_without_password
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

metadata = sa.MetaData()

runs = sa.Table(
    "polyshift_runs", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("command", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
)

journal = sa.Table(
    "polyshift_journal", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), sa.ForeignKey("polyshift_runs.id"), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("store", sa.String(100)),
    sa.Column("version", sa.String(64)),
    sa.Column("step", sa.String(64), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),  # intent | done | failed
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
)

audit = sa.Table(
    "polyshift_audit", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

backups = sa.Table(
    "polyshift_backups", metadata,
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

GENESIS = "0" * 64
# A run in one of these states has not reached a consistent end: 'up' refuses until 'recover' ran.


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
    body = json.dumps({k: entry[k] for k in ("seq", "at", "actor", "action", "subject", "detail", "prev_hash")},
                      sort_keys=True, separators=(",", ":"))
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


def make_engine(url: str) -> sa.Engine:
    """An engine for the control-plane database (sqlite file or PostgreSQL), tables created."""
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
            engine = sa.create_engine(url, pool_pre_ping=True)
        metadata.create_all(engine)
        _add_missing_columns(engine)
        return engine
    except (SQLAlchemyError, ImportError) as exc:
        raise ConfigError(f"state database {url_without_password(url)} is unusable: {redact(str(exc).splitlines()[0])}") from None
    except OSError as exc:
        raise ConfigError(f"state database {url_without_password(url)} is unusable: {exc.strerror or exc}") from None


def _add_missing_columns(engine: sa.Engine) -> None:
    """Columns added to a table after control-plane databases with that table exist: create_all
    leaves existing tables alone, so they are added here (nullable: old rows have no value)."""
    for table in (backups,):
        present = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            ddl = f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.type.compile(engine.dialect)}"
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(ddl)
            except SQLAlchemyError:
                # Another process may have added it first; anything else is still missing below.
                if column.name not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
                    raise


class ControlPlane:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    # -- runs and journal -------------------------------------------------------------
    def start_run(self, command: RunCommand, detail: dict[str, Any] | None = None) -> str:
        run_id = str(uuid.uuid4())
        with self.engine.begin() as conn:
            conn.execute(runs.insert().values(
                id=run_id, command=str(command), actor=actor(), pid=os.getpid(), host=socket.gethostname(),
                started_at=_now(), status=RunStatus.RUNNING, detail=json.dumps(redact_obj(detail or {})),
            ))
        return run_id

    def finish_run(self, run_id: str, status: RunStatus, detail: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(
                finished_at=_now(), status=status, detail=json.dumps(redact_obj(detail or {})),
            ))

    def unfinished_runs(self, commands: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Runs still 'running' (alive, or died without finishing) or left for 'polyshift recover'."""
        query = sa.select(runs).where(runs.c.status.in_(UNFINISHED)).order_by(runs.c.started_at)
        if commands is not None:
            query = query.where(runs.c.command.in_(commands))
        with self.engine.connect() as conn:
            return [dict(r._mapping) | {"detail": json.loads(r.detail)} for r in conn.execute(query)]

    def claim_run(self, run: dict[str, Any]) -> bool:
        """This process now drives ``run`` (recover). A compare-and-set on the owner we read: when
        two recovers race, exactly one claims it."""
        with self.engine.begin() as conn:
            done = conn.execute(runs.update().where(
                (runs.c.id == run["id"]) & (runs.c.pid == run["pid"]) & (runs.c.host == run["host"])
                & runs.c.status.in_(UNFINISHED),
            ).values(pid=os.getpid(), host=socket.gethostname(), status=RunStatus.RUNNING))
            return done.rowcount == 1

    def journal(self, run_id: str, step: Step, phase: Phase, *, store: str | None = None,
                version: str | None = None, detail: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(journal.insert().values(
                run_id=run_id, at=_now(), store=store, version=version, step=step, phase=phase,
                detail=json.dumps(redact_obj(detail or {}), default=str),
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
        """Append one entry whose hash covers the previous entry's hash."""
        payload = json.dumps(redact_obj(detail or {}), sort_keys=True, default=str)
        for _attempt in range(50):
            try:
                with self.engine.begin() as conn:
                    last = conn.execute(sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
                    entry: dict[str, Any] = {
                        "seq": (last.seq + 1) if last else 1,
                        "at": _now().isoformat(timespec="microseconds"),
                        "actor": redact(who or actor()),
                        "action": action,
                        "subject": redact(subject),
                        "detail": payload,
                        "prev_hash": last.hash if last else GENESIS,
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
                yield AuditEntry(r.seq, r.at, r.actor, r.action, r.subject, detail, r.prev_hash, r.hash)

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
