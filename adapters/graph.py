"""Graph stores (Neo4j over Bolt, FalkorDB natively): one adapter over a transport and a schema dialect.

- Lock: a single ``:__PolyshiftLock`` node (guarded by a uniqueness constraint where the server
  supports one) holding an owner token and an expiry kept alive by a renewal thread. A crashed
  runner's lock expires and can be taken over; a live one is never released by another, because
  every write to it is conditioned on the token.
- Ledger: ``:__PolyshiftMigration`` nodes, like neo4j-migrations' history.
- Migrations: ``.forward.cypher`` / ``.rollback.cypher`` / ``.validate.cypher`` (statements split on
  ``;``) or Python modules whose ``ctx.client`` runs statements. Statements commit one by one, so
  safety never rests on transaction rollback: a failed forward is undone by the rollback step,
  then by restore, and verified by a content fingerprint.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from adapters import cypher, graph_backup
from framework.concurrency import Renewer
from framework.errors import LockHeldError, MigrationLoadError, StepFailed, StoreError
from framework.migration import Migration, MigrationContext, Risk, describe_failure
from framework.protocol import Analysis, Direction, Fingerprint, LedgerEntry, RestoreReport, StepResult
from framework.secrets import redact

if TYPE_CHECKING:
    from framework.artifacts import ArtifactStore, ArtifactWriter, Manifest
    from framework.config import StoreConfig
    from framework.progress import Progress

log = logging.getLogger("polyshift.graph")
LEDGER = "__PolyshiftMigration"
LOCK = "__PolyshiftLock"

_ACQUIRE = (f"MERGE (l:{cypher.name(LOCK)} {{name: 'migrations'}}) "
            "ON CREATE SET l.token = $token, l.holder = $holder, l.expires = timestamp() + $ttl "
            "WITH l WHERE l.token = $token OR l.expires < timestamp() "
            "SET l.token = $token, l.holder = $holder, l.expires = timestamp() + $ttl RETURN l.token")
_RENEW = (f"MATCH (l:{cypher.name(LOCK)} {{name: 'migrations'}}) WHERE l.token = $token "
          "SET l.expires = timestamp() + $ttl RETURN count(l)")
_RELEASE = f"MATCH (l:{cypher.name(LOCK)} {{name: 'migrations'}}) WHERE l.token = $token DELETE l"
_HOLDER = f"MATCH (l:{cypher.name(LOCK)} {{name: 'migrations'}}) RETURN l.holder, l.expires - timestamp()"


class GraphQueryError(Exception):
    """The server refused a statement; the adapter turns it into a StepFailed or StoreError."""


class Transport(Protocol):
    description: str

    def run(self, statement: str, params: dict[str, Any] | None = None) -> list[list[Any]]: ...
    def run_schema(self, statement: str) -> None: ...
    def close(self) -> None: ...


class Dialect(Protocol):
    name: str

    def capture(self, labels: set[str], types: set[str]) -> list[dict[str, Any]]: ...
    def signature(self) -> list[Any]: ...
    def restore(self, items: list[dict[str, Any]]) -> None: ...
    def ensure_lock_constraint(self, label: str) -> bool: ...
    def problems(self) -> list[str]:
        """Indexes or constraints that are not serving: FAILED, or still being built after a wait."""
        ...


def split_scope(scope: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Labels (``Document``) and relationship types (``:MENTIONS``) of a graph backup scope."""
    labels, types = [], []
    for entry in scope:
        if not isinstance(entry, str) or not entry.strip(":"):
            raise MigrationLoadError(f"graph backup scope entries are labels or :TYPES, got {entry!r}")
        (types if entry.startswith(":") else labels).append(entry.lstrip(":"))
    if LEDGER in labels or LOCK in labels:
        raise MigrationLoadError("polyshift's own ledger and lock nodes cannot be in a backup scope")
    return labels, types


class GraphAdapter:
    kind = "graph"

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.name = config.name
        self.lock_ttl_ms = 30_000
        # Upper bound on one statement's parameters, in JSON bytes (None: no bound). Set where a
        # server cannot take large parameters (FalkorDB's Bolt endpoint crashes past about 4 KB).
        self.max_param_bytes: int | None = None
        self._t: Transport | None = None
        self._dialect: Dialect | None = None
        self._token: str | None = None
        self._renewer: Renewer | None = None

    # -- subclasses provide the transport and dialect --------------------------------------
    def open_transport(self) -> tuple[Transport, Dialect]:
        raise NotImplementedError

    def connect(self) -> None:
        if self._t is None:
            self._t, self._dialect = self.open_transport()

    @property
    def t(self) -> Transport:
        self.connect()
        assert self._t is not None
        return self._t

    @property
    def dialect(self) -> Dialect:
        self.connect()
        assert self._dialect is not None
        return self._dialect

    def run(self, statement: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        try:
            return self.t.run(statement, params)
        except GraphQueryError as exc:
            raise StoreError(f"store {self.name}: {redact(str(exc))} (in `{' '.join(statement.split())[:120]}`)") from None

    def close(self) -> None:
        try:
            self.release_lock()
        except StoreError:
            pass
        if self._t is not None:
            self._t.close()
        self._t = self._dialect = None

    # -- lock -------------------------------------------------------------------------
    def acquire_lock(self, holder: str, wait: float) -> None:
        if self._token is not None:
            return
        self.dialect.ensure_lock_constraint(LOCK)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while not self.run(_ACQUIRE, {"token": token, "holder": holder, "ttl": self.lock_ttl_ms}):
            if time.monotonic() >= deadline:
                raise LockHeldError(f"store {self.name} is locked by another polyshift run ({self.lock_holder()})",
                                    hint=f"wait for it; a crashed runner's lock expires within {self.lock_ttl_ms / 1000:g} s")
            time.sleep(0.2)
        self._token = token
        self._renewer = Renewer(self._renew, self.lock_ttl_ms / 3000, "polyshift-graph-lock")

    def _renew(self) -> bool:
        try:
            if not self.run(_RENEW, {"token": self._token, "ttl": self.lock_ttl_ms})[0][0]:
                log.error("store %s: lost the lock (expired and taken over); stopping renewal", self.name)
                return False
        except StoreError as exc:
            log.warning("store %s: lock renewal failed: %s", self.name, exc)
        return True

    def lock_holder(self) -> str:
        rows = self.run(_HOLDER)
        if not rows:
            return "holder unknown"
        holder, remaining = rows[0]
        return f"{holder}, expires in {max(remaining or 0, 0) / 1000:.0f} s unless renewed"

    def release_lock(self) -> None:
        if self._token is None:
            return
        if self._renewer is not None:
            self._renewer.stop()
        try:
            self.run(_RELEASE, {"token": self._token})
        finally:
            self._token = None

    # -- ledger -----------------------------------------------------------------------
    def ensure_ledger(self) -> None:
        """Ledger nodes are created by their first write: nothing to prepare."""

    def ledger(self) -> list[LedgerEntry]:
        rows = self.run(f"MATCH (m:{cypher.name(LEDGER)}) WHERE m.store = $store RETURN m.rank, m.version, m.slug, m.checksum, "
                        "m.direction, m.applied_by, m.applied_at, m.duration_ms, m.run_id ORDER BY m.rank", {"store": self.name})
        return [LedgerEntry(int(r[0]), r[1], r[2], r[3], r[4], r[5], datetime.fromisoformat(r[6]), int(r[7]), True, True, r[8])
                for r in rows]

    def _record(self, migration: Migration, direction: Direction, *, run_id: str, actor: str, duration_ms: int) -> None:
        self.run(f"MATCH (m:{cypher.name(LEDGER)}) WITH count(m) AS n CREATE (:{cypher.name(LEDGER)} {{rank: n + 1, "
                 "store: $store, version: $version, slug: $slug, checksum: $checksum, direction: $direction, "
                 "applied_by: $actor, applied_at: $at, duration_ms: $ms, run_id: $run})",
                 {"store": self.name, "version": migration.version, "slug": migration.slug, "checksum": migration.checksum,
                  "direction": direction, "actor": actor, "at": datetime.now(UTC).isoformat(), "ms": duration_ms,
                  "run": run_id})

    def record_reverted(self, migration: Migration, *, run_id: str, actor: str) -> None:
        self._record(migration, "down", run_id=run_id, actor=actor, duration_ms=0)

    # -- migrations -------------------------------------------------------------------
    def _statements(self, migration: Migration, direction: str) -> list[str]:
        step = {"up": migration.forward, "down": migration.rollback, "validate": migration.validate}[direction]
        if step is None or step.script is None:
            return []
        return cypher.split(step.script, origin=f"{self.name}/{step.path.name}")

    def parse(self, migration: Migration) -> None:
        split_scope(tuple(migration.declared_scope or ()) + tuple(migration.rollback_scope or ()))
        for direction in ("up", "down", "validate"):
            self._statements(migration, direction)

    def analyze(self, migration: Migration, direction: Direction = "up") -> Analysis:
        # Nothing is inferred from Cypher: the forward's declared scope, and for the rollback step
        # also what its own header declares.
        own = tuple(migration.rollback_scope or ()) if direction == "down" else ()
        scope = tuple(dict.fromkeys(own + tuple(migration.declared_scope or ())))
        split_scope(scope)
        if migration.is_python:
            risk = migration.declared_risk or Risk.C
            count = 0
        else:
            statements = self._statements(migration, direction)
            risk = Risk.highest([cypher.risk(statements)] + ([migration.declared_risk] if migration.declared_risk else []))
            count = len(statements)
        return Analysis(risk, scope, "declared" if scope else "none", ("graph statements commit one by one",), count)

    def resolve_scope(self, scope: tuple[str, ...], *, missing_ok: bool) -> tuple[str, ...]:
        labels, types = split_scope(scope)
        known_labels = {r[0] for r in self.run("CALL db.labels()")}
        known_types = {r[0] for r in self.run("CALL db.relationshipTypes()")}
        for label in labels:
            if label not in known_labels:
                log.warning("store %s: label %r in the backup scope has no nodes", self.name, label)
        for rel in types:
            if rel not in known_types:
                log.warning("store %s: relationship type %r in the backup scope has no relationships", self.name, rel)
        return tuple(scope)

    def _context(self, migration: Migration) -> MigrationContext:
        return MigrationContext(client=self.t, store=self.name, migration=migration,
                                log=logging.getLogger(f"polyshift.migration.{migration.id}"))

    def apply(self, migration: Migration, direction: Direction, *, run_id: str, actor: str) -> StepResult:
        step = migration.forward if direction == "up" else migration.rollback
        if step is None:
            raise StepFailed(f"{self.name} {migration.id} has no rollback step", step="rollback")
        started = time.monotonic()
        statements = [] if step.is_python else self._statements(migration, direction)
        current = ""
        try:
            if step.function is not None:
                step.call(self._context(migration))
            for current in statements:
                # Schema statements run on their own (Neo4j refuses them beside data writes).
                if cypher.is_schema(current):
                    self.t.run_schema(current)
                else:
                    self.t.run(current)
        except GraphQueryError as exc:
            where = f" at `{' '.join(current.split())[:120]}`" if current else ""
            raise StepFailed(f"{self.name} {migration.id} {step.name} failed{where}: {redact(str(exc))}", step=step.name) from None
        except StepFailed:
            raise
        except Exception as exc:  # a Python step's own bug is a failed step, not a crash
            raise StepFailed(f"{self.name} {migration.id} {step.name} raised {redact(describe_failure(exc))}",
                             step=step.name) from exc
        duration = int((time.monotonic() - started) * 1000)
        self._record(migration, direction, run_id=run_id, actor=actor, duration_ms=duration)
        return StepResult(duration, len(statements) or 1, True)

    def validate(self, migration: Migration) -> list[str]:
        if migration.validate is None:
            return []
        if migration.validate.function is not None:
            try:
                result = migration.validate.call(self._context(migration))
            except Exception as exc:
                return [f"validate raised {redact(describe_failure(exc))}"]
            if result is False:
                return ["validate returned False"]
            return [str(r) for r in result] if isinstance(result, (list, tuple)) else []
        failures = []
        for number, statement in enumerate(self._statements(migration, "validate"), 1):
            label = f"check {number} `{' '.join(statement.split())[:100]}`"
            try:
                rows = self.t.run(statement)
            except GraphQueryError as exc:
                failures.append(f"{label}: {redact(str(exc))}")
                continue
            bad = next((i for i, row in enumerate(rows, 1) if row and (row[0] is None or row[0] is False)), None)
            if bad is not None:
                failures.append(f"{label}: row {bad} returned {rows[bad - 1][0]!r}")
        return failures

    # -- backup, restore, fingerprint ---------------------------------------------------
    def invariants(self) -> list[str]:
        """A release must not leave an index or constraint that is not serving (a uniqueness
        constraint that existing data violates fails only after it was accepted)."""
        try:
            return self.dialect.problems()
        except GraphQueryError as exc:
            raise StoreError(f"store {self.name}: cannot read the schema's state: {exc}") from None

    def fingerprint(self, scope: tuple[str, ...]) -> Fingerprint:
        labels, types = split_scope(scope)
        return graph_backup.fingerprint(self, labels, types)

    def backup(self, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress) -> dict[str, Any]:
        labels, types = split_scope(scope)
        return graph_backup.backup(self, labels, types, writer, progress)

    def restore(self, manifest: Manifest, artifacts: ArtifactStore, progress: Progress) -> RestoreReport:
        return graph_backup.restore(self, manifest, artifacts, progress)

