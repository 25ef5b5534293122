"""Contracts every store adapter implements, and the records they exchange with the runner.

The runner only ever talks to adapters through ``Adapter``; an adapter translates its
driver's exceptions into ``polyshift.framework.core.errors`` at this boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from polyshift.framework.core.lifecycle import Direction
from polyshift.framework.core.migration import Migration, Risk

if TYPE_CHECKING:
    from polyshift.framework.control.artifacts import ArtifactWriter, Manifest
    from polyshift.framework.core.progress import Progress


ScopeSource = Literal["declared", "inferred", "declared+inferred", "none"]


@dataclass(frozen=True)
class Fingerprint:
    """Schema hash of the whole store and an order-independent data hash of a scope.

    ``items`` maps each scoped object (table, key pattern, label) to its own
    ``{"schema": ..., "data": ..., "rows": n}`` so a mismatch can be named.
    """

    schema_hash: str
    data_hash: str
    counts: dict[str, int]
    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"schema_hash": self.schema_hash, "data_hash": self.data_hash, "counts": self.counts, "items": self.items}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Fingerprint:
        return Fingerprint(data["schema_hash"], data["data_hash"], dict(data["counts"]), dict(data.get("items", {})))

    def differences(self, now: Fingerprint, *, data: bool, since: str) -> list[str]:
        """What ``now`` changed since this fingerprint was taken (``since``: "the release"): the
        store's schema and, with ``data``, the content of each scoped item (empty when nothing did)."""
        problems = [f"schema differs from before {since}"] if now.schema_hash != self.schema_hash else []
        if data:
            for item, before in self.items.items():
                after = now.items.get(item)
                if after is None:
                    problems.append(f"{item} is gone")
                elif after.get("data") != before.get("data"):
                    problems.append(f"{item}: content differs ({before.get('rows')} before, {after.get('rows')} now)")
        return problems


@dataclass(frozen=True)
class LedgerEntry:
    """One row of a store's own history (like flyway_schema_history). ``direction`` is read from
    the ledger's stored word (``Direction.from_ledger``)."""

    rank: int
    version: str
    slug: str
    checksum: str
    direction: Direction
    applied_by: str
    applied_at: datetime
    duration_ms: int
    success: bool
    non_transactional: bool
    run_id: str | None

    def __post_init__(self) -> None:
        stored: object = self.direction  # adapters pass the word their ledger holds
        if isinstance(stored, str) and not isinstance(stored, Direction):
            object.__setattr__(self, "direction", Direction.from_ledger(stored))


class FindingKind(StrEnum):
    """What a finding says would go wrong if the statement ran as written."""

    LOCK = "lock"            # holds a lock that stops writes (or reads) while work grows with the table
    DATA_LOSS = "data-loss"  # rows or stored values go
    BREAKING = "breaking"    # works, but running code using the old name or shape breaks
    FAILS = "fails"          # errors on existing data


@dataclass(frozen=True)
class Finding:
    """One hazard an adapter reads in a statement before it runs, with the safe way to write it.

    ``size`` describes the table as the store estimates it now ("~1,200,000 rows, 96 MiB");
    ``large`` says it is above the store's stated threshold, where a lock held for the whole of
    the work stalls the application; ``acknowledged`` says the migration accepts the hazard
    (``-- polyshift: allow=<code>``).
    """

    code: str
    kind: FindingKind
    statement: str
    message: str
    safe: str
    table: str | None = None
    lock: str | None = None
    work: tuple[str, ...] = ()
    size: str | None = None
    large: bool = False
    acknowledged: bool = False

    @property
    def refuses(self) -> bool:
        """Whether ``up`` refuses to run it (unless told ``--allow-lock-hazard``)."""
        return self.kind is FindingKind.LOCK and self.large and not self.acknowledged

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "kind": self.kind.value, "statement": self.statement, "message": self.message,
                "safe": self.safe, "table": self.table, "lock": self.lock, "work": list(self.work), "size": self.size,
                "large": self.large, "acknowledged": self.acknowledged, "refuses": self.refuses}

    def describe(self) -> str:
        """One line: code, kind, what happens, the table's size, and the safe form."""
        size = f" [{self.size}]" if self.size else ""
        ack = " (acknowledged)" if self.acknowledged else ""
        return f"{self.code} {self.kind.value}{ack}: {self.message}{size}; instead: {self.safe}"


@dataclass(frozen=True)
class Analysis:
    """What an adapter reads out of a migration before running it.

    ``scope`` is every object the step may change (inferred, declared, or both); ``reasons`` says
    why an inferred object is in it ("via orders_user_id_fkey ON DELETE CASCADE from public.users").
    ``unproven`` lists effects that could not be read (dynamic SQL, a function in C): such a step
    needs a declared scope before it may run.
    """

    risk: Risk
    scope: tuple[str, ...]
    scope_source: ScopeSource
    non_transactional: tuple[str, ...] = ()
    statements: int = 0
    notes: tuple[str, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)
    unproven: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    threshold: str = ""  # the size above which a lock finding is refused, in the store's own terms

    @property
    def refused(self) -> tuple[Finding, ...]:
        """Lock findings on large existing tables that the migration does not acknowledge."""
        return tuple(f for f in self.findings if f.refuses)


class AttemptOutcome(StrEnum):
    ACQUIRED = "acquired"            # the transaction got its locks and committed
    LOCK_TIMEOUT = "lock-timeout"    # a lock was not granted within the attempt's lock timeout
    DEADLOCK = "deadlock"
    SERIALIZATION = "serialization"


@dataclass(frozen=True)
class LockAttempt:
    """One try at a step's transaction by an adapter that waits for locks in short attempts.
    ``blockers`` describes the sessions seen holding what the attempt waited for."""

    number: int
    lock_timeout_ms: int
    elapsed_ms: int
    outcome: AttemptOutcome
    sleep_ms: int = 0
    blockers: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"attempt": self.number, "lock_timeout_ms": self.lock_timeout_ms, "elapsed_ms": self.elapsed_ms,
                "outcome": self.outcome.value, "sleep_ms": self.sleep_ms, "blockers": list(self.blockers)}


AttemptObserver = Callable[[Migration, LockAttempt], None]


@dataclass(frozen=True)
class StepResult:
    duration_ms: int
    statements: int
    non_transactional: bool
    attempts: int = 1
    notices: tuple[str, ...] = ()   # what the store said while the step ran (PostgreSQL NOTICE/WARNING)


@dataclass(frozen=True)
class RestoreReport:
    artifact_id: str
    items: dict[str, int]
    verified: bool
    mismatches: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@runtime_checkable
class Adapter(Protocol):
    """One store. Every method is safe to call again after a failure (idempotent where the store allows)."""

    name: str
    kind: str

    def connect(self) -> None:
        """Open the connection(s). Raises StoreError naming the store when unreachable."""

    def close(self) -> None:
        """Release the lock if held and close connections. Never raises."""

    def acquire_lock(self, holder: str, wait: float) -> None:
        """Exclusive lock across processes and hosts. Raises LockHeldError naming the holder."""

    def release_lock(self) -> None:
        """Release the lock only if this adapter holds it."""

    def ensure_ledger(self) -> None:
        """Create the store's ledger if missing (idempotent)."""

    def ledger(self) -> list[LedgerEntry]:
        """Every ledger row in application order."""

    def analyze(self, migration: Migration, direction: Direction = Direction.FORWARD) -> Analysis:
        """Risk, backup scope and statements that must run outside a transaction."""

    def parse(self, migration: Migration) -> None:
        """Parse every script of the migration (forward, rollback, validate) and its declarations.
        Raises MigrationLoadError naming the file; reads nothing from the store."""

    def resolve_scope(self, scope: tuple[str, ...], *, missing_ok: bool) -> tuple[str, ...]:
        """Canonical names of the scope's objects; raises BackupError for unknown ones unless missing_ok."""

    def backup(self, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress) -> dict[str, Any]:
        """Stream the scope into the writer's files; returns adapter metadata for the manifest."""

    def restore(self, manifest: Manifest, artifacts: Any, progress: Progress) -> RestoreReport:
        """Put the scope back exactly as backed up; the caller has already verified every sha256."""

    def fingerprint(self, scope: tuple[str, ...]) -> Fingerprint:
        """Schema hash of the store and an order-independent data hash with counts for the scope."""

    def apply(self, migration: Migration, direction: Direction, *, run_id: str, actor: str) -> StepResult:
        """Run the forward or rollback script and record it in the ledger, atomically where possible."""

    def record_reverted(self, migration: Migration, *, run_id: str, actor: str) -> None:
        """Ledger row saying the migration was undone by a restore rather than its rollback step."""

    def validate(self, migration: Migration) -> list[str]:
        """Run the migration's checks; returns a description of each failure (empty when valid)."""


@runtime_checkable
class ReportsFigures(Protocol):
    """Optional: an adapter whose validation measures something (recall@k) worth reporting."""

    def figures(self) -> dict[str, float]:
        """Measurements of the last validate() call."""


@runtime_checkable
class ReadsLedgerVersion(Protocol):
    """Optional: one version's ledger rows without reading the whole ledger, which grows with the
    history and is checked after every migration a release applies."""

    def ledger_rows(self, version: str) -> list[LedgerEntry]:
        """The ledger rows of ``version``, in application order (as ``ledger()`` lists them)."""


@runtime_checkable
class ChecksInvariants(Protocol):
    """Optional: store-wide facts a release must not break (an INVALID index in PostgreSQL)."""

    def invariants(self) -> list[str]:
        """A description of each fact that does not hold now (empty when all hold)."""


@runtime_checkable
class EstimatesBackup(Protocol):
    """Optional: an upper bound of a backup's size, for the preflight disk check."""

    def estimate_backup_bytes(self, scope: tuple[str, ...]) -> int:
        """Bytes the scope's backup could take at most."""


@runtime_checkable
class ReportsAttempts(Protocol):
    """Optional: an adapter that takes a step's locks in several short attempts reports each one
    (the runner journals them)."""

    def observe_attempts(self, observer: AttemptObserver | None) -> None:
        """Call ``observer`` after every attempt of every step from now on (None: stop)."""


@runtime_checkable
class ExpiringLock(Protocol):
    """Optional: a lock that expires when its holder stops renewing it (Redis, graphs)."""

    lock_ttl_ms: int


@runtime_checkable
class TakesInventory(Protocol):
    """Optional: a readable account of the store's shape and of a scope's content, so that when two
    fingerprints differ the difference can be named (the column, the key, the relationship property)."""

    def inventory(self, scope: tuple[str, ...]) -> dict[str, str]:
        """Entry → what it is now (``{"column public.documents.status": "text NOT NULL"}``), each
        object's entry before its parts', so the first entry that differs names the change."""


@runtime_checkable
class SamplesBackup(Protocol):
    """Optional: a backup of part of a scope (the first ``limit`` rows of each table, keys of each
    pattern), for rehearsing on a huge production scope. Such a backup is never a rollback point."""

    def backup_sample(self, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress, *, limit: int) -> dict[str, Any]:
        """Like ``backup``, of at most ``limit`` rows (keys) per table (pattern)."""


@runtime_checkable
class FollowsReferences(Protocol):
    """Optional: what a scope's content refers to outside it (the tables its foreign keys point
    at), which a copy of the scope into an empty store needs too."""

    def referenced(self, scope: tuple[str, ...]) -> tuple[str, ...]:
        """Canonical names of the objects outside ``scope`` it refers to, directly or not."""


@dataclass(frozen=True)
class StatementTiming:
    """One statement of a step as it ran: the lock it took on each table that existed before
    (``{"public.orders": "ACCESS EXCLUSIVE"}``), how long it ran, and how long those locks were
    held: until its transaction ended, or as long as it ran outside one."""

    sql: str
    locks: dict[str, str]
    ran_ms: float
    held_ms: float
    transactional: bool

    def to_json(self) -> dict[str, Any]:
        return {"sql": self.sql, "locks": self.locks, "ran_ms": round(self.ran_ms, 1), "held_ms": round(self.held_ms, 1),
                "transactional": self.transactional}


@runtime_checkable
class TimesStatements(Protocol):
    """Optional: the statements ``apply`` runs while ``timing()`` is open, each with its locks and times."""

    def timing(self) -> AbstractContextManager[list[StatementTiming]]:
        """A list that fills as statements run (a transaction's statements once it commits)."""
