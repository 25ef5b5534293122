"""Store-level operations shared by every command: connect and lock, verified backups and
restores, explicit rollbacks. Releases (``up``) are driven by ``polyshift.framework.engine.pipeline`` and
``polyshift.framework.engine.bluegreen`` on top of these; their undo ladder is ``polyshift.framework.engine.saga``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from polyshift.adapters import adapter_for
from polyshift.framework.control.artifacts import ArtifactStore, Manifest
from polyshift.framework.control.identity import this_runner
from polyshift.framework.control.journal import Journal
from polyshift.framework.control.runs import lock_holders, refuse_unfinished
from polyshift.framework.control.state import actor
from polyshift.framework.core.errors import (
    DriftError,
    LockHeldError,
    MigrationFailedRestored,
    MigrationFailedUnverified,
    PolyshiftError,
    RefusedError,
    UsageError,
)
from polyshift.framework.core.lifecycle import Action, Direction, Phase, Progress, RunCommand, RunStatus, Step
from polyshift.framework.core.migration import Migration, Risk, version_key
from polyshift.framework.core.protocol import (
    Adapter,
    Analysis,
    AttemptObserver,
    AttemptOutcome,
    ExpiringLock,
    Fingerprint,
    LockAttempt,
    ReportsAttempts,
    RestoreReport,
    SamplesBackup,
)
from polyshift.framework.core.status import StoreStatus, applied_entries, store_status
from polyshift.framework.engine.project import Project

Emit = Callable[[str, dict[str, Any]], None]



@dataclass
class Outcome:
    store: str
    version: str
    slug: str
    action: Action
    risk: str = ""
    scope: list[str] = field(default_factory=list)
    backup: str | None = None
    duration_ms: int = 0
    non_transactional: bool = False
    error: str | None = None
    hint: str | None = None
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        what = {Action.ROLLED_BACK: "rolled back", Action.NOT_ATTEMPTED: "not attempted"}.get(self.action, f"failed: {self.error}")
        return f"{self.store} {self.version}_{self.slug} {what}"


@dataclass(frozen=True)
class RollbackSnapshot:
    """What a rollback step is checked and undone against; journaled with its intent."""

    scope: tuple[str, ...]
    pre: Fingerprint
    backup: Manifest | None
    transactional: bool

    def to_json(self) -> dict[str, Any]:
        return {"scope": list(self.scope), "pre": self.pre.to_json(), "backup": self.backup.id if self.backup else None,
                "transactional": self.transactional}

    @staticmethod
    def from_json(detail: dict[str, Any], artifacts: ArtifactStore) -> RollbackSnapshot:
        backup = artifacts.manifest(detail["backup"]) if detail.get("backup") else None
        return RollbackSnapshot(tuple(detail["scope"]), Fingerprint.from_json(detail["pre"]), backup, bool(detail["transactional"]))


@dataclass(frozen=True)
class Settled:
    """How a failed or interrupted rollback step ended (``action``), in words (``how``)."""

    action: Action
    how: str
    hint: str | None = None


def _quiet(_event: str, _data: dict[str, Any]) -> None:
    pass


class Runner:
    def __init__(self, project: Project, emit: Emit | None = None) -> None:
        self.project = project
        self.state = project.state
        self.emit = emit or _quiet
        self._step_open = False  # a rollback step began and has not settled: only recover may go on

    # -- plumbing ---------------------------------------------------------------------
    @contextmanager
    def adapter(self, store: str) -> Iterator[Adapter]:
        adapter = adapter_for(self.project.config.store(store))
        try:
            adapter.connect()
            yield adapter
        finally:
            adapter.close()

    def holder(self, run_id: str) -> str:
        """How a lock names its holder in the store itself: who, the process, the CI job, the run and the
        host, most telling first (PostgreSQL keeps the first 63 characters)."""
        me = this_runner()
        job = f" [{me.ci_job}]" if me.ci_job else ""
        return f"{actor()} pid={me.pid}{job} run={run_id[:8]} host={me.host}"

    def stores(self, only: str | None) -> list[str]:
        if only is not None:
            self.project.config.store(only)
            return [only]
        return list(self.project.config.stores)

    def status(self, adapter: Adapter) -> StoreStatus:
        return store_status(adapter.name, adapter.kind, self.project.migrations[adapter.name], adapter.ledger())

    def take_backup(self, adapter: Adapter, scope: tuple[str, ...], *, version: str | None, reason: str,
                    run_id: str | None, sample: int | None = None) -> Manifest:
        """Stream, seal and read back a backup; nothing destructive may run until this returns.
        ``sample``: of at most that many rows per table (a rehearsal's copy, from a ``SamplesBackup``)."""
        artifacts = self.project.artifacts
        writer = artifacts.new_writer(store=adapter.name, kind=adapter.kind, version=version, scope=scope, reason=reason)
        try:
            if sample is not None and isinstance(adapter, SamplesBackup):
                meta = adapter.backup_sample(scope, writer, self.project.progress, limit=sample)
            else:
                meta = adapter.backup(scope, writer, self.project.progress)
            manifest = artifacts.seal(writer, meta)
        except BaseException:
            artifacts.discard(writer)
            raise
        self.state.add_backup(manifest, run_id)
        self.state.audit("backup.created", adapter.name, {"backup": manifest.id, "version": version, "scope": list(scope),
                                                          "bytes": manifest.size, "reason": reason, "run": run_id})
        self.emit(Progress.BACKUP, {"store": adapter.name, "backup": manifest.id, "scope": list(scope), "bytes": manifest.size})
        return manifest

    def emit_notices(self, m: Migration, direction: Direction, notices: tuple[str, ...]) -> None:
        """What the store said while a step ran: a statement that did nothing says so only there."""
        if notices:
            self.emit(Progress.NOTICES, {"store": m.store, "version": m.version, "step": direction, "notices": list(notices)})

    def _journal(self, run_id: str, step: Step, phase: Phase, m: Migration | None = None, **detail: Any) -> None:
        Journal(self.state, run_id).write(step, phase, store=m.store if m else None, version=m.version if m else None, **detail)

    # -- preflight --------------------------------------------------------------------
    def check_status(self, status: StoreStatus) -> None:
        if status.drift:
            raise DriftError(
                f"store {status.store}: applied migration(s) {', '.join(status.drift)} changed on disk after being applied",
                hint="restore the original files; to change an applied migration, write a new one",
            )
        if status.missing:
            raise DriftError(f"store {status.store}: applied migration(s) {', '.join(status.missing)} have no file on disk",
                             hint="restore the missing files from version control")

    def targets(self, status: StoreStatus, to: str | None) -> list[Migration]:
        migrations = {m.version: m for m in self.project.migrations[status.store]}
        if status.out_of_order:
            raise RefusedError(
                f"store {status.store}: pending migration(s) {', '.join(status.out_of_order)} are older than the "
                f"current version {status.current}; renumber them above it",
            )
        pending = [migrations[v] for v in status.pending]
        if to is not None:
            pending = [m for m in pending if m.version_key <= version_key(to)]
        return pending

    def _resolve_scope(self, adapter: Adapter, m: Migration, analysis: Analysis,
                       direction: Direction = Direction.FORWARD) -> tuple[str, ...]:
        """The scope's existing objects. Names a script's header declares must exist (a typo would
        leave what the step destroys without a backup); inferred ones may be gone already."""
        if direction is Direction.FORWARD:
            declared = set(m.declared_scope or ()) if analysis.scope_source.startswith("declared") else set()
            names = analysis.scope
        else:
            # The forward's declared scope too: what the forward changed is what its rollback reverts.
            declared, names = set(m.rollback_scope or ()), analysis.scope + tuple(m.declared_scope or ())
        strict = tuple(s for s in names if s in declared)
        lenient = tuple(s for s in names if s not in declared)
        resolved = adapter.resolve_scope(strict, missing_ok=False) + adapter.resolve_scope(lenient, missing_ok=True)
        return tuple(dict.fromkeys(resolved))

    def release_scope(self, adapter: Adapter, m: Migration, analysis: Analysis) -> tuple[str, ...]:
        """What a release backs up and fingerprints in one store before it changes anything:
        everything the forward step may change, and every existing object its rollback step may
        change, since the undo may run that step too (a rollback that deletes more than the forward
        inserted must find those rows in the backup)."""
        scope = self._resolve_scope(adapter, m, analysis)
        self._require_backup(m, analysis, scope)
        if m.rollback is None:
            return scope
        undo = adapter.analyze(m, Direction.ROLLBACK)
        self._refuse_unproven_rollback(m, undo)
        return tuple(dict.fromkeys(scope + adapter.resolve_scope(undo.scope, missing_ok=True)))

    @staticmethod
    def refuse_irreversible(m: Migration, allow_irreversible: bool) -> None:
        if m.irreversible and not allow_irreversible:
            raise RefusedError(f"{m.store}/{m.id} is irreversible; run 'up --allow-irreversible' to apply it after a verified backup")

    @staticmethod
    def refuse_lock_hazards(m: Migration, analysis: Analysis, allow_lock_hazard: bool) -> None:
        """A lock held while a large existing table is rewritten, scanned or indexed stalls the
        application for as long as the work takes: refused unless the migration or the command
        says it is meant."""
        refused = analysis.refused
        if not refused or allow_lock_hazard:
            return
        codes = ",".join(dict.fromkeys(f.code for f in refused))
        raise RefusedError(
            f"{m.store}/{m.id} would stall the application on a large table (at least {analysis.threshold}): "
            + "; ".join(f.describe() for f in refused),
            hint=f"write the safe form; or, to take the lock anyway, acknowledge it in the header of "
                 f"{m.forward.path.name} with '{m.directive_hint('allow')}={codes}', or run 'up --allow-lock-hazard'")

    @staticmethod
    def _require_backup(m: Migration, analysis: Analysis, scope: tuple[str, ...]) -> None:
        """A destructive step runs only behind a backup of everything it may change: refuse when
        nothing can be backed up, or when some effect could not be read and no scope was declared."""
        how = m.directive_hint("backup")
        if m.irreversible and not scope:
            raise RefusedError(f"{m.store}/{m.id} is irreversible but has nothing to back up; declare its scope "
                               f"({how}) so a verified backup exists before it runs")
        if m.is_python:
            return
        if analysis.unproven and not m.declared_scope:
            raise RefusedError(
                f"{m.store}/{m.id} may change data that cannot be read from its statements: "
                + "; ".join(analysis.unproven),
                hint=f"declare what it changes with '{how}' so a verified backup covers it",
            )
        if analysis.risk == Risk.C and not scope:
            raise RefusedError(f"{m.store}/{m.id} is destructive (risk C) but no backup scope could be inferred; "
                               f"declare one with '{how}'")

    def _require_rollback_backup(self, m: Migration, analysis: Analysis) -> None:
        """The rule of ``_require_backup`` for a rollback step, on the names it would back up (an
        earlier rollback of the same command may be what creates them)."""
        assert m.rollback is not None
        self._refuse_unproven_rollback(m, analysis)
        if analysis.risk != Risk.C or m.rollback.is_python or analysis.scope or m.declared_scope:
            return
        raise RefusedError(f"{m.store}/{m.id}: its rollback step is destructive (risk C) but no backup scope could be inferred",
                           hint=f"declare what it destroys in the header of {m.rollback.path.name}: '{m.directive_hint('backup')}'")

    @staticmethod
    def _refuse_unproven_rollback(m: Migration, analysis: Analysis) -> None:
        """A rollback step whose effect cannot be read (dynamic SQL, a C function) runs only behind a
        declared scope, like a forward step."""
        assert m.rollback is not None
        if analysis.unproven and not (m.rollback_scope or m.declared_scope or m.rollback.is_python):
            raise RefusedError(f"{m.store}/{m.id}: its rollback step may change data that cannot be read from its statements: "
                               + "; ".join(analysis.unproven),
                               hint=f"declare what it changes in the header of {m.rollback.path.name}: "
                                    f"'{m.directive_hint('backup')}'")

    def _attempt_journal(self, run_id: str) -> AttemptObserver:
        """Each lock attempt of a step, journaled (done: it got its locks and committed)."""
        def journal(m: Migration, attempt: LockAttempt) -> None:
            phase = Phase.DONE if attempt.outcome is AttemptOutcome.ACQUIRED else Phase.FAILED
            self._journal(run_id, Step.LOCK_ATTEMPT, phase, m, **attempt.to_json())
        return journal

    @contextmanager
    def locked(self, names: list[str], run_id: str, *, lock: bool, wait: float | None = None,
                outlive_dead: bool = False) -> Iterator[list[Adapter]]:
        """Connect to every store and take every lock, all or none, before anything changes.

        ``outlive_dead``: the previous holder is known dead (recover), so wait out its lock's
        expiry instead of failing at once; a live holder still keeps it."""
        adapters: list[Adapter] = []
        try:
            for name in names:
                cfg = self.project.config.store(name)
                adapter = adapter_for(cfg)
                adapters.append(adapter)
                adapter.connect()
                if isinstance(adapter, ReportsAttempts):
                    adapter.observe_attempts(self._attempt_journal(run_id))
                if lock:
                    patience = max(cfg.lock_wait, wait or 0.0)
                    if outlive_dead:
                        ttl = adapter.lock_ttl_ms / 1000 if isinstance(adapter, ExpiringLock) else 0.0
                        patience = max(patience, ttl + 5)
                    try:
                        adapter.acquire_lock(self.holder(run_id), patience)
                    except LockHeldError as exc:
                        # The store's own record of the holder may be cut short (PostgreSQL keeps 63
                        # characters); the control plane knows the whole runner.
                        known = lock_holders(self.state, [name]).get(name)
                        if known:
                            exc.message = f"{exc.message}; the control plane says: {known}"
                        raise
                    self.state.journal(run_id, Step.LOCK, Phase.DONE, store=name)
            yield adapters
        finally:
            for adapter in reversed(adapters):
                adapter.close()

    # -- restore ----------------------------------------------------------------------
    def restore_into(self, adapter: Adapter, manifest: Manifest, run_id: str | None, *, verified: bool = False,
                     safety: bool = True) -> RestoreReport:
        """Verify every sha256 (unless the caller just did), take a safety backup of what is there now
        (unless one was taken for this run already), restore, verify the result against the backup's
        fingerprints, audit the overwritten window."""
        if not verified:
            self.project.artifacts.verify(manifest.id, decompress=False)
        present = adapter.resolve_scope(manifest.scope, missing_ok=True) if safety else ()
        kept = None
        if present:
            kept = self.take_backup(adapter, present, version=manifest.version,
                                    reason=f"before restore of {manifest.id}", run_id=run_id)
        window_end = datetime.now(UTC).isoformat(timespec="seconds")
        report = adapter.restore(manifest, self.project.artifacts, self.project.progress)
        self.state.audit("backup.restored", adapter.name, {
            "backup": manifest.id, "scope": list(manifest.scope), "verified": report.verified,
            "mismatches": list(report.mismatches), "rows": report.items, "safety_backup": kept.id if kept else None,
            "overwrote_writes_between": [manifest.created_at, window_end], "run": run_id,
        })
        return report

    def journaled_restore(self, adapter: Adapter, manifest: Manifest, run_id: str, *, safety: bool = True) -> RestoreReport:
        """A restore as the step of a ``restore`` run: a run killed between intent and done is
        finished by recover, which restores again (a restore puts the scope back whole, so twice is
        the same as once)."""
        self.state.journal(run_id, Step.RESTORE, Phase.INTENT, store=adapter.name, version=manifest.version,
                           detail={"backup": manifest.id})
        report = self.restore_into(adapter, manifest, run_id, verified=True, safety=safety)
        self.state.journal(run_id, Step.RESTORE, Phase.DONE, store=adapter.name, version=manifest.version,
                           detail={"backup": manifest.id, "verified": report.verified})
        return report

    # -- rollback ---------------------------------------------------------------------
    def rollback(self, *, store: str | None = None, to: str | None = None, steps: int | None = None,
                 dry_run: bool = False) -> list[Outcome]:
        """Roll back newest first, each step after a verified backup of what it destroys. Stops at
        the first step that fails; the error says, per migration, what happened (``details``)."""
        if to is not None and steps is not None:
            raise UsageError("use either --to or --steps, not both")
        if steps is not None and steps < 1:
            raise UsageError("--steps must be at least 1")
        names = self.stores(store)
        if len(names) > 1 and to is None:
            raise UsageError("rollback across several stores needs --to VERSION (or pick one with --store)")
        if not dry_run:
            refuse_unfinished(self.state, then="polyshift rollback")
        self._step_open = False
        run_id = self.state.start_run(RunCommand.ROLLBACK, {"stores": names, "to": to, "steps": steps, "dry_run": dry_run})
        outcomes: list[Outcome] = []
        status = RunStatus.FAILED
        try:
            with self.locked(names, run_id, lock=not dry_run) as adapters:
                if not dry_run:
                    refuse_unfinished(self.state, then="polyshift rollback")  # again, holding the locks
                plan = self._plan_rollback(adapters, to, steps, dry_run=dry_run)
                if dry_run:
                    status = RunStatus.SUCCEEDED
                    return [Outcome(m.store, m.version, m.slug, Action.WOULD_ROLL_BACK, a.risk.value, list(a.scope)) for _, m, a in plan]
                self.state.journal(run_id, Step.PLAN, Phase.DONE, detail={"migrations": [f"{m.store}/{m.id}" for _, m, _ in plan]})
                outcomes = [Outcome(m.store, m.version, m.slug, Action.NOT_ATTEMPTED, a.risk.value) for _, m, a in plan]
                before_step: PolyshiftError | None = None
                for i, (adapter, m, analysis) in enumerate(plan):
                    try:
                        outcomes[i] = self._rollback_one(adapter, m, analysis, run_id)
                    except PolyshiftError as exc:  # raised before its step ran: nothing changed for it
                        outcomes[i] = replace(outcomes[i], action=Action.FAILED_UNCHANGED, error=str(exc), hint=exc.hint)
                        before_step = exc
                    if outcomes[i].action is not Action.ROLLED_BACK:
                        break
            failed = next((o for o in outcomes if o.action not in (Action.ROLLED_BACK, Action.NOT_ATTEMPTED)), None)
            if failed is None:
                status = RunStatus.SUCCEEDED
                return outcomes
            if failed.action is Action.FAILED_UNVERIFIED:
                status = RunStatus.NEEDS_RECOVERY
            elif failed is outcomes[0]:
                status = RunStatus.FAILED if before_step is not None else RunStatus.ROLLED_BACK
            else:
                status = RunStatus.STOPPED_PART_WAY
            raise self._rollback_failure(outcomes, failed, before_step)
        except BaseException:
            if self._step_open:
                status = RunStatus.NEEDS_RECOVERY  # a step began and did not settle: only recover may go on
            raise
        finally:
            self.state.finish_run(run_id, status, {"outcomes": [o.to_json() for o in outcomes]})

    def _plan_rollback(self, adapters: list[Adapter], to: str | None, steps: int | None,
                       *, dry_run: bool) -> list[tuple[Adapter, Migration, Analysis]]:
        """Every step to run, newest first and stores in reverse order, each refused here (nothing
        changed yet) if it is irreversible, does not parse, or destroys what could not be backed up."""
        per_store: dict[str, list[tuple[Adapter, Migration, Analysis]]] = {}
        for adapter in adapters:
            if not dry_run:  # a dry run changes nothing, not even an empty ledger
                adapter.ensure_ledger()
            self.check_status(self.status(adapter))
            applied = sorted(applied_entries(adapter.ledger()), key=version_key, reverse=True)
            targets = [v for v in applied if version_key(v) > version_key(to)] if to is not None else applied[: steps or 1]
            per_store[adapter.name] = []
            for version in targets:
                m = self.project.migration(adapter.name, version)
                if m.rollback is None:
                    raise RefusedError(f"{m.store}/{m.id} is irreversible and has no rollback step",
                                       hint=self._backup_hint(m) or "restore a backup taken before it")
                adapter.parse(m)
                analysis = adapter.analyze(m, Direction.ROLLBACK)
                self._require_rollback_backup(m, analysis)
                adapter.resolve_scope(tuple(m.rollback_scope or ()), missing_ok=False)
                per_store[adapter.name].append((adapter, m, analysis))
        return [item for adapter in reversed(adapters) for item in per_store[adapter.name]]

    def _rollback_failure(self, outcomes: list[Outcome], failed: Outcome, before_step: PolyshiftError | None) -> PolyshiftError:
        """Exit 3 only when the command as a whole is back where it started, verified."""
        details = {"outcomes": [o.to_json() for o in outcomes]}
        listing = "\n".join(f"  {o.describe()}" for o in outcomes)
        if failed.action is Action.FAILED_UNVERIFIED:
            return MigrationFailedUnverified(f"rollback stopped at {failed.store} {failed.version}_{failed.slug}, NOT VERIFIED:\n{listing}",
                                             hint=failed.hint or "run: polyshift recover", details=details)
        if failed is outcomes[0]:
            if before_step is not None:
                before_step.details |= details
                return before_step
            return MigrationFailedRestored(failed.error or "rollback failed", details=details)
        return MigrationFailedUnverified(
            f"rollback stopped part-way and did not return to where it started:\n{listing}",
            hint="the migrations rolled back stay rolled back ('polyshift up' applies them again); "
                 f"fix the rollback step of {failed.version}_{failed.slug} and run the rollback again", details=details)

    def _backup_hint(self, m: Migration) -> str | None:
        points = [p for p in self.state.rollback_points(m.store) if p["version"] == m.version and p["reason"] == f"before {m.id} up"]
        if points:
            return f"data as it was before {m.id} is in backup {points[-1]['id']}: polyshift backup restore {points[-1]['id']} --yes"
        return None

    def _rollback_one(self, adapter: Adapter, m: Migration, analysis: Analysis, run_id: str) -> Outcome:
        scope = self._resolve_scope(adapter, m, analysis, Direction.ROLLBACK)
        pre = adapter.fingerprint(scope)
        manifest = None
        if scope:
            manifest = self.take_backup(adapter, scope, version=m.version, reason=f"before {m.id} rollback", run_id=run_id)
        snap = RollbackSnapshot(scope, pre, manifest, transactional=not analysis.non_transactional)
        self._step_open = True
        try:
            with Journal(self.state, run_id, m.version).step(Step.ROLLBACK, store=m.store, migration=m.id,
                                                            checksum=m.checksum, **snap.to_json()) as entry:
                result = adapter.apply(m, Direction.ROLLBACK, run_id=run_id, actor=actor())
                entry.done(notices=list(result.notices))
        except PolyshiftError as exc:  # the step failed, did not parse, or its store stopped answering
            self.state.audit("rollback.failed", m.store, {"version": m.version, "error": str(exc), "run": run_id})
            settled = self.settle_rollback(adapter, m, snap, run_id, cause=str(exc))
            self._step_open = settled.action is Action.FAILED_UNVERIFIED
            return Outcome(m.store, m.version, m.slug, settled.action, analysis.risk.value, list(scope),
                           manifest.id if manifest else None, error=settled.how, hint=settled.hint)
        self.emit_notices(m, Direction.ROLLBACK, result.notices)
        self._step_open = False
        self.state.audit("migration.rolled_back", m.store, {"version": m.version, "slug": m.slug, "run": run_id,
                                                             "backup": manifest.id if manifest else None})
        self.emit(Progress.ROLLED_BACK, {"store": m.store, "version": m.version, "hint": self._backup_hint(m)})
        return Outcome(m.store, m.version, m.slug, Action.ROLLED_BACK, analysis.risk.value, list(scope),
                       manifest.id if manifest else None, result.duration_ms, result.non_transactional,
                       notices=list(result.notices))

    def settle_rollback(self, adapter: Adapter, m: Migration, snap: RollbackSnapshot, run_id: str, *, cause: str) -> Settled:
        """A rollback step failed or its run was killed: end with the store where the step began, verified.

        A step whose ledger row committed is done (a killed run that got that far). Otherwise the
        scope is compared with its fingerprint from before the step (the schema only when the step
        ran in one transaction, which left nothing behind), and where it differs the backup taken
        just before the step is restored and verified. Safe to run again."""
        try:
            if m.version not in applied_entries(adapter.ledger()):
                self._journal(run_id, Step.ROLLBACK, Phase.DONE, m, note="the step had completed")
                return Settled(Action.ROLLED_BACK, f"{cause}; its rollback step had completed (the ledger records it)")
            problems = snap.pre.differences(adapter.fingerprint(snap.scope), data=not snap.transactional,
                                            since="the rollback step")
            if not problems:
                self._journal(run_id, Step.VERIFY, Phase.DONE, m)
                how = "the transaction was rolled back and " if snap.transactional else ""
                return Settled(Action.FAILED_UNCHANGED, f"{cause}; {how}{m.store} is verified unchanged")
            why = "; ".join(problems)
            if snap.backup is None:
                self._journal(run_id, Step.VERIFY, Phase.FAILED, m, why=why)
                return Settled(Action.FAILED_UNVERIFIED, f"{cause}; {why}, and there is no backup to restore",
                               f"inspect {m.store}; 'polyshift backup list --store {m.store}' shows the rollback points")
            self.emit(Progress.RESTORE, {"store": m.store, "backup": snap.backup.id, "why": why})
            self._journal(run_id, Step.RESTORE, Phase.INTENT, m, backup=snap.backup.id)
            report = self.restore_into(adapter, snap.backup, run_id)
            post = adapter.fingerprint(snap.scope)
            self._journal(run_id, Step.RESTORE, Phase.DONE, m, backup=snap.backup.id, verified=report.verified)
        except PolyshiftError as exc:
            self._journal(run_id, Step.VERIFY, Phase.FAILED, m, why=str(exc))
            keep = f" (backup {snap.backup.id} holds the scope as it was before the step)" if snap.backup else ""
            return Settled(Action.FAILED_UNVERIFIED, f"{cause}; and {m.store} could not be checked or restored: {exc}",
                           f"when {m.store} answers again, run: polyshift recover{keep}")
        if report.verified and post.schema_hash == snap.pre.schema_hash:
            self._journal(run_id, Step.VERIFY, Phase.DONE, m)
            return Settled(Action.FAILED_RESTORED, f"{cause}; {why}; restored backup {snap.backup.id}, data and schema verified")
        detail = "; ".join(report.mismatches) or "schema differs from before the rollback step"
        self._journal(run_id, Step.VERIFY, Phase.FAILED, m, why=detail)
        return Settled(Action.FAILED_UNVERIFIED, f"{cause}; restored backup {snap.backup.id} but it does not verify: {detail}",
                       f"inspect {m.store}, then run: polyshift backup restore {snap.backup.id} --yes")

    # -- backups ----------------------------------------------------------------------
    def backup(self, store: str, scope: tuple[str, ...]) -> Manifest:
        if not scope:
            raise UsageError("--scope needs at least one name")
        with self.adapter(store) as adapter:
            resolved = adapter.resolve_scope(scope, missing_ok=False)
            return self.take_backup(adapter, resolved, version=None, reason="manual", run_id=None)

    def restore(self, artifact_id: str) -> RestoreReport:
        manifest = self.project.artifacts.verify(artifact_id, decompress=False)
        return self.restore_verified(manifest)

    def restore_verified(self, manifest: Manifest) -> RestoreReport:
        """Restore a backup whose files were verified by the caller just now."""
        refuse_unfinished(self.state, then="polyshift backup restore")
        artifact_id = manifest.id
        run_id = self.state.start_run(RunCommand.RESTORE, {"backup": artifact_id, "stores": [manifest.store]})
        status = RunStatus.FAILED
        try:
            with self.locked([manifest.store], run_id, lock=True) as (adapter,):
                refuse_unfinished(self.state, then="polyshift backup restore")  # again, holding the lock
                report = self.journaled_restore(adapter, manifest, run_id)
            status = RunStatus.SUCCEEDED if report.verified else RunStatus.UNVERIFIED
        finally:
            self.state.finish_run(run_id, status)
        if not report.verified:
            raise MigrationFailedUnverified(f"restored {artifact_id} but it does not verify: {'; '.join(report.mismatches)}",
                                            hint="inspect the store; the safety backup taken before the restore is listed by 'backup list'")
        return report
