"""Graph stores (Neo4j over Bolt, FalkorDB natively): one adapter over a transport and a dialect.

- Lock: a single ``:__PolyshiftLock`` node (guarded by a uniqueness constraint where the server
  supports one) holding an owner token and an expiry kept alive by a renewal thread. A crashed
  runner's lock expires and can be taken over; a live one is never released by another, because
  every write to it is conditioned on the token.
- Ledger: ``:__PolyshiftMigration`` nodes, like neo4j-migrations' history.
- Migrations: ``.forward.cypher`` / ``.rollback.cypher`` / ``.validate.cypher`` (statements split on
  ``;``) or Python modules whose ``ctx.client`` runs statements. Where the server has transactions
  (Neo4j), consecutive data statements share one, with the ledger entry when nothing else runs:
  a failed forward leaves no trace. Schema statements and ``CALL { … } IN TRANSACTIONS`` commit on
  their own, and FalkorDB commits every statement on its own; there a failed forward is undone
  by the rollback step, then by restore, and verified by a content fingerprint either way.
- Backup scope: declared (``// polyshift: backup=Label,:TYPE``) and inferred from the Cypher
  (see ``adapters.cypher.analyze``); a statement whose effect cannot be read needs a declared scope.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from polyshift.adapters.boundary import python_checks, run_python_step, step_failed, translated
from polyshift.adapters.graph import backup as graph_backup
from polyshift.adapters.graph import cypher
from polyshift.adapters.graph import inventory as graph_inventory
from polyshift.adapters.graph.protocol import QUERY_ERRORS, Dialect, GraphQueryError, Runs, Transactional, Transport
from polyshift.adapters.locking import Claim, ExpiringTokenLock, lock_ttl_ms
from polyshift.framework.core.errors import BackupError, MigrationLoadError, StepFailed, StoreError
from polyshift.framework.core.kinds import Capability, StoreKind
from polyshift.framework.core.lifecycle import Direction
from polyshift.framework.core.migration import Migration, MigrationContext, Risk
from polyshift.framework.core.protocol import Analysis, Fingerprint, LedgerEntry, RestoreReport, ScopeSource, StepResult
from polyshift.framework.core.secrets import redact

if TYPE_CHECKING:
    from polyshift.framework.control.artifacts import ArtifactStore, ArtifactWriter, Manifest
    from polyshift.framework.core.config import StoreConfig
    from polyshift.framework.core.progress import Progress

__all__ = ["GraphAdapter", "GraphQueryError", "split_scope"]

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


def split_scope(scope: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Labels (``Document``) and relationship types (``:MENTIONS``) of a graph backup scope."""
    labels: list[str] = []
    types: list[str] = []
    for entry in scope:
        if not isinstance(entry, str) or not entry.strip(":"):
            raise MigrationLoadError(f"graph backup scope entries are labels or :TYPES, got {entry!r}")
        (types if entry.startswith(":") else labels).append(entry.lstrip(":"))
    if LEDGER in labels or LOCK in labels:
        raise MigrationLoadError("polyshift's own ledger and lock nodes cannot be in a backup scope")
    return labels, types


class _LockNode:
    """The graph's lock: one ``:__PolyshiftLock`` node holding the claim's token, holder and expiry."""

    def __init__(self, run: Runs) -> None:
        self._graph = run   # the adapter: a refusal comes back as StoreError

    def take(self, claim: Claim, ttl_ms: int) -> bool:
        return bool(self._graph.run(_ACQUIRE, {"token": claim.token, "holder": claim.holder, "ttl": ttl_ms}))

    def extend(self, claim: Claim, ttl_ms: int) -> bool:
        return bool(self._graph.run(_RENEW, {"token": claim.token, "ttl": ttl_ms})[0][0])

    def give_back(self, claim: Claim) -> None:
        self._graph.run(_RELEASE, {"token": claim.token})

    def describe_holder(self) -> str:
        rows = self._graph.run(_HOLDER)
        if not rows:
            return "holder unknown"
        holder, remaining = rows[0]
        return f"{holder}, expires in {max(remaining or 0, 0) / 1000:.0f} s unless renewed"


class GraphAdapter:
    """Subclasses set ``spec`` (their kind's record) and open the transport and dialect."""

    spec: StoreKind
    kind = "graph"

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.name = config.name
        self.lock_ttl_ms = lock_ttl_ms(config)
        self.lock = ExpiringTokenLock(config.name, _LockNode(self), self.lock_ttl_ms)
        self._t: Transport | None = None
        self._dialect: Dialect | None = None

    @property
    def transactional(self) -> bool:
        """Data statements can share one transaction (the transport is Transactional)."""
        return self.spec.can(Capability.ATOMIC_STEPS)

    # -- subclasses provide the transport and dialect --------------------------------------
    def open_transport(self) -> tuple[Transport, Dialect]:
        raise NotImplementedError

    def connect(self) -> None:
        if self._t is None:
            try:
                self._t, self._dialect = self.open_transport()
            except StoreError as exc:  # the transport names the server; the message names the store too
                raise type(exc)(f"store {self.name}: {exc.message}", hint=exc.hint) from None

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
        if not self.lock.held:
            self.dialect.ensure_lock_constraint(LOCK)
        self.lock.acquire(holder, wait)

    def release_lock(self) -> None:
        self.lock.release()

    # -- ledger -----------------------------------------------------------------------
    def ensure_ledger(self) -> None:
        """Ledger nodes are created by their first write: nothing to prepare."""

    def ledger(self) -> list[LedgerEntry]:
        rows = self.run(f"MATCH (m:{cypher.name(LEDGER)}) WHERE m.store = $store RETURN m.rank, m.version, m.slug, m.checksum, "
                        "m.direction, m.applied_by, m.applied_at, m.duration_ms, m.run_id ORDER BY m.rank", {"store": self.name})
        return [LedgerEntry(int(r[0]), r[1], r[2], r[3], r[4], r[5], datetime.fromisoformat(r[6]), int(r[7]), True, True, r[8])
                for r in rows]

    def _record(self, migration: Migration, direction: Direction, *, run_id: str, actor: str, started: float | None = None,
                client: Runs | None = None) -> None:
        duration_ms = int((time.monotonic() - started) * 1000) if started is not None else 0
        (client or self).run(f"MATCH (m:{cypher.name(LEDGER)}) WITH count(m) AS n CREATE (:{cypher.name(LEDGER)} {{rank: n + 1, "
                 "store: $store, version: $version, slug: $slug, checksum: $checksum, direction: $direction, "
                 "applied_by: $actor, applied_at: $at, duration_ms: $ms, run_id: $run})",
                 {"store": self.name, "version": migration.version, "slug": migration.slug, "checksum": migration.checksum,
                  "direction": direction.ledger_word, "actor": actor, "at": datetime.now(UTC).isoformat(), "ms": duration_ms,
                  "run": run_id})

    def record_reverted(self, migration: Migration, *, run_id: str, actor: str) -> None:
        self._record(migration, Direction.ROLLBACK, run_id=run_id, actor=actor)

    def record_baseline(self, migrations: list[Migration], *, run_id: str, actor: str) -> None:
        """Rows saying ``migrations`` are applied (``polyshift baseline``), one write each."""
        for migration in migrations:
            self._record(migration, Direction.FORWARD, run_id=run_id, actor=actor)

    # -- migrations -------------------------------------------------------------------
    def _statements(self, migration: Migration, which: Direction | None) -> list[str]:
        """The statements of the forward or rollback script, or of the validate script (None)."""
        step = {Direction.FORWARD: migration.forward, Direction.ROLLBACK: migration.rollback, None: migration.validate}[which]
        if step is None or step.script is None:
            return []
        return cypher.split(step.script, origin=f"{self.name}/{step.path.name}")

    def _plan(self, statements: list[str]) -> list[list[str]]:
        """Statements grouped into transactions: consecutive data statements share one where the
        server has transactions; schema statements and IN TRANSACTIONS batches stand alone."""
        groups: list[list[str]] = []
        for statement in statements:
            if self._alone(statement) or not groups or self._alone(groups[-1][-1]):
                groups.append([statement])
            else:
                groups[-1].append(statement)
        return groups

    def _alone(self, statement: str) -> bool:
        return not self.transactional or cypher.is_schema(statement) or cypher.in_transactions(statement)

    def _non_transactional(self, migration: Migration, statements: list[str]) -> tuple[str, ...]:
        """Why a failed forward may leave part of its work behind (empty: one transaction or one statement)."""
        if migration.is_python:
            if not self.transactional:
                return (f"{self.kind} commits each statement of a Python step on its own",)
            return ("Python step with TRANSACTION = False",) if migration.extra("TRANSACTION", True) is False else ()
        reasons = [f"CALL {{ … }} IN TRANSACTIONS commits batch by batch: {' '.join(s.split())[:80]}"
                   for s in statements if cypher.in_transactions(s)]
        groups = self._plan(statements)
        if len(groups) > 1:
            if self.transactional:
                reasons.append(f"{len(groups)} transactions: schema statements commit on their own")
            else:
                reasons.append(f"{self.kind} commits each of the {len(statements)} statements on its own")
        return tuple(reasons)

    def parse(self, migration: Migration) -> None:
        split_scope(tuple(migration.declared_scope or ()) + tuple(migration.rollback_scope or ()))
        for which in (Direction.FORWARD, Direction.ROLLBACK, None):
            self._statements(migration, which)

    def analyze(self, migration: Migration, direction: Direction = Direction.FORWARD) -> Analysis:
        # Declared: the forward's scope; for the rollback step also what its own header declares.
        own = tuple(migration.rollback_scope or ()) if direction is Direction.ROLLBACK else ()
        declared = tuple(dict.fromkeys(own + tuple(migration.declared_scope or ())))
        split_scope(declared)
        if migration.is_python:
            return Analysis(migration.declared_risk or Risk.C, declared, "declared" if declared else "none",
                            self._non_transactional(migration, []), 0)
        statements = self._statements(migration, direction)
        analysed = cypher.analyze(statements)
        risk = Risk.highest([a.risk for a in analysed] + ([migration.declared_risk] if migration.declared_risk else []))
        # What cannot be read is left to the runner's backup rule: refused unless a scope is declared.
        unproven = tuple(f"cannot tell which nodes or relationships `{' '.join(a.text.split())[:100]}` changes: {why}"
                         for a in analysed for why in a.unproven)
        inferred = tuple(cypher.inferred_scope(analysed))
        extra = tuple(e for e in inferred if e not in declared)
        scope = declared + extra
        source: ScopeSource = ("declared+inferred" if extra else "declared") if declared else ("inferred" if inferred else "none")
        split_scope(scope)
        return Analysis(risk, scope, source, self._non_transactional(migration, statements), len(statements),
                        unproven=unproven)

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

    def _context(self, migration: Migration, client: Runs | None = None) -> MigrationContext:
        """``ctx.client`` of a graph step is polyshift's statement runner, not the driver's session:
        ``run(statement, params)`` returns the rows as lists, inside the step's transaction where
        there is one (``client``), on the transport otherwise."""
        return MigrationContext(client=client or self.t, store=self.name, migration=migration,
                                log=logging.getLogger(f"polyshift.migration.{migration.id}"))

    def apply(self, migration: Migration, direction: Direction, *, run_id: str, actor: str) -> StepResult:
        step = migration.forward if direction is Direction.FORWARD else migration.rollback
        if step is None:
            raise StepFailed(f"{self.name} {migration.id} has no rollback step", step="rollback")
        started = time.monotonic()
        statements = [] if step.is_python else self._statements(migration, direction)
        groups = self._plan(statements)
        if step.is_python:
            atomic = self.transactional and not self._non_transactional(migration, [])
        else:
            atomic = self.transactional and len(groups) == 1 and not self._alone(groups[0][0])
        current = ""
        try:
            if step.function is not None:
                if atomic:
                    with self._transaction() as tx:
                        run_python_step(step, self._context(migration, tx), QUERY_ERRORS)
                        self._record(migration, direction, run_id=run_id, actor=actor, started=started, client=tx)
                else:
                    run_python_step(step, self._context(migration), QUERY_ERRORS)
            else:
                for number, group in enumerate(groups, 1):
                    if self._alone(group[0]):
                        current = group[0]
                        self.t.run(current)
                        continue
                    with self._transaction() as tx:
                        for current in group:
                            tx.run(current)
                        if atomic and number == len(groups):
                            # The ledger entry commits with the data: both or neither.
                            self._record(migration, direction, run_id=run_id, actor=actor, started=started, client=tx)
        except (StepFailed, StoreError):
            raise
        except Exception as exc:  # the server refused a statement (GraphQueryError), or the ledger write failed
            step_failed(self.name, migration, step, exc, QUERY_ERRORS, at=current)
        if not atomic:
            self._record(migration, direction, run_id=run_id, actor=actor, started=started)
        return StepResult(int((time.monotonic() - started) * 1000), len(statements) or 1, not atomic)

    def _transaction(self) -> AbstractContextManager[Runs]:
        if not isinstance(self.t, Transactional):
            raise StoreError(f"store {self.name}: {self.t.description} has no multi-statement transactions")
        return self.t.transaction()

    def validate(self, migration: Migration) -> list[str]:
        if migration.validate is None:
            return []
        if migration.validate.function is not None:
            return python_checks(migration.validate, self._context(migration))
        failures = []
        for number, statement in enumerate(self._statements(migration, None), 1):
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
        with translated(QUERY_ERRORS, f"store {self.name}: fingerprint failed"):
            return graph_backup.fingerprint(self.dialect, labels, types)

    def estimate_backup_bytes(self, scope: tuple[str, ...]) -> int:
        """The scope's size as a backup writes it before compression, from its counts and a sample."""
        labels, types = split_scope(scope)
        with translated(QUERY_ERRORS, f"store {self.name}: cannot estimate the backup size"):
            return graph_backup.estimate_bytes(self.dialect, self.t, labels, types)

    def inventory(self, scope: tuple[str, ...]) -> dict[str, str]:
        labels, types = split_scope(scope)
        with translated(QUERY_ERRORS, f"store {self.name}: inventory failed"):
            return graph_inventory.account(self.t, self.dialect.signature(), labels, types)

    def backup(self, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress) -> dict[str, Any]:
        labels, types = split_scope(scope)
        with translated(QUERY_ERRORS, f"store {self.name}: backup failed", BackupError):
            return graph_backup.backup(self.dialect, labels, types, writer, progress)

    def restore(self, manifest: Manifest, artifacts: ArtifactStore, progress: Progress) -> RestoreReport:
        with translated(QUERY_ERRORS, f"store {self.name}: restore of {manifest.id} failed part-way"):
            return graph_backup.restore(self.dialect, self, manifest, artifacts, progress)
