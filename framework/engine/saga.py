"""Compensation of one store's part of a release: the undo ladder, store by store.

1. The migration's rollback step, when the ledger says it was applied (or its forward ran
   outside a transaction and may have half-committed).
2. The scope's fingerprint compared with the one taken before the release.
3. Only where the rollback step failed or the fingerprint differs: restore of the release's
   verified backup (preceded by a safety backup of what is there now), verified again.

Every rung is journaled before and after, so ``polyshift recover`` can resume the ladder from
wherever a crash left it; each rung is safe to run twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polyshift.framework.control.journal import Journal
from polyshift.framework.control.state import actor
from polyshift.framework.core.errors import MigrationLoadError, PolyshiftError, StepFailed, StoreUnavailable
from polyshift.framework.core.lifecycle import Direction, Phase, Progress, Step
from polyshift.framework.core.migration import Migration, Risk
from polyshift.framework.core.protocol import Adapter, Fingerprint
from polyshift.framework.core.status import applied_entries

if TYPE_CHECKING:
    from polyshift.framework.control.artifacts import Manifest
    from polyshift.framework.engine.runner import Runner


@dataclass
class StoreStep:
    """One store's migration within a release, with what is needed to undo it."""

    migration: Migration
    scope: tuple[str, ...]
    pre: Fingerprint | None
    non_transactional: bool = False
    risk: str = ""
    manifest: Manifest | None = None
    forward_begun: bool = False
    forwarded: bool = False
    validated: bool = False
    figures: dict[str, float] = field(default_factory=dict)
    known_problems: list[str] = field(default_factory=list)   # invariant failures the store had before
    undone: bool = False                                        # verified back by an earlier (interrupted) undo

    @property
    def store(self) -> str:
        return self.migration.store

    def snapshot_detail(self) -> dict[str, Any]:
        return {"migration": self.migration.id, "checksum": self.migration.checksum, "scope": list(self.scope), "risk": self.risk,
                "known_problems": self.known_problems,
                "non_transactional": self.non_transactional, "pre": self.pre.to_json() if self.pre else None}


@dataclass
class StoreUndo:
    store: str
    verified: bool
    how: str
    hint: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "verified": self.verified, "how": self.how, "hint": self.hint, "warnings": self.warnings}


def _differences(pre: Fingerprint, post: Fingerprint, *, data: bool) -> list[str]:
    return pre.differences(post, data=data, since="the release")


class StoreCompensation:
    """Runs the ladder for one store. ``strict_data``: content differences in the scope trigger a
    restore (inside a release's own window); otherwise they are reported as integrity warnings
    (an emergency rollback long after cutover must not overwrite what the application wrote since)."""

    def __init__(self, runner: Runner, adapter: Adapter, step: StoreStep, run_id: str, *, strict_data: bool) -> None:
        self.runner = runner
        self.adapter = adapter
        self.step = step
        self.run_id = run_id
        self.strict_data = strict_data
        self.journal = Journal(runner.state, run_id, step.migration.version)
        self.store = step.migration.store

    def run(self) -> StoreUndo:
        m = self.step.migration
        try:
            outcome = self._ladder()
            self.runner.state.audit("migration.rolled_back" if outcome.verified else "rollback.unverified", m.store,
                                    {"version": m.version, "how": outcome.how, "run": self.run_id})
            return outcome
        except PolyshiftError as exc:
            self.journal.write(Step.UNDO_STORE, Phase.FAILED, store=self.store, error=str(exc))
            backup = self.step.manifest
            held = f" (backup {backup.id} holds the scope as it was)" if backup else ""
            if isinstance(exc, StoreUnavailable):
                hint = f"when {m.store} answers again, run: polyshift recover{held}"
            else:
                hint = f"{exc.hint + '; then ' if exc.hint else 'fix the cause, then '}run: polyshift recover{held}"
            return StoreUndo(m.store, False, f"undo could not complete: {exc}", hint)

    def _rollback_step(self) -> str | None:
        """Runs the rollback step; returns why it failed, or None."""
        m = self.step.migration
        if m.rollback is None:
            return "no rollback step (irreversible)"
        try:
            # A script that does not parse is a failed step too: the ladder restores.
            with self.journal.step(Step.ROLLBACK, store=self.store, failing_on=(StepFailed, MigrationLoadError)):
                self.adapter.apply(m, Direction.ROLLBACK, run_id=self.run_id, actor=actor())
        except (StepFailed, MigrationLoadError) as exc:
            self.runner.state.audit("rollback.failed", m.store, {"version": m.version, "error": str(exc), "run": self.run_id})
            return str(exc)
        return None

    def _guard_rollback(self) -> tuple[Manifest | None, list[str]]:
        """Before a rollback step runs: a verified safety backup of what it may destroy, and a word
        about data it would drop that the release did not bring.

        Inside a release's own window (strict) the release backup already holds every table that
        existed before; what else the step destroys (tables the forward created, which green traffic
        may have written) is backed up here. Long after the release (emergency rollback) the whole
        scope holds what the application wrote since, so all of it is backed up."""
        m, step = self.step.migration, self.step
        try:
            undo = self.adapter.analyze(m, Direction.ROLLBACK)
            destroys = self.adapter.resolve_scope(undo.scope, missing_ok=True) if undo.risk == Risk.C else ()
        except MigrationLoadError:
            destroys = ()  # a rollback that does not load fails as a step, and the ladder restores
        wanted = destroys if self.strict_data else tuple(dict.fromkeys(step.scope + destroys))
        if self.strict_data:
            wanted = tuple(t for t in wanted if t not in step.scope)
        present = self.adapter.resolve_scope(wanted, missing_ok=True)
        if not present:
            return None, []
        now = self.adapter.fingerprint(present)
        before = step.pre.items if step.pre is not None else {}
        notes = []
        for name in present:
            rows = now.counts.get(name, 0)
            if name in destroys and name not in before and rows:
                notes.append(f"{name}: {rows} row(s) written since the release began will be dropped by the rollback step")
            elif name in destroys and name in before and now.items.get(name, {}).get("data") != before[name].get("data"):
                notes.append(f"{name}: changed since the release began ({before[name].get('rows')} rows then, {rows} now); "
                             "the rollback step may drop what was written since")
        why = "emergency rollback" if not self.strict_data else "rollback"
        safety = self.runner.take_backup(self.adapter, present, version=m.version, reason=f"before {m.id} {why}",
                                         run_id=self.run_id)
        return safety, [f"{n} (kept in backup {safety.id})" for n in notes]

    def _ladder(self) -> StoreUndo:
        m, step = self.step.migration, self.step
        applied = m.version in applied_entries(self.adapter.ledger())
        ran_rollback = applied or (step.forward_begun and step.non_transactional)
        safety, at_risk = self._guard_rollback() if ran_rollback and m.rollback is not None else (None, [])
        for note in at_risk:
            self.runner.emit(Progress.DATA_AT_RISK, {"store": m.store, "warning": note})
        if at_risk:
            self.runner.state.audit("rollback.data_at_risk", m.store, {"version": m.version, "run": self.run_id, "notes": at_risk})
        rollback_error = self._rollback_step() if ran_rollback else None
        post = self.adapter.fingerprint(step.scope)
        if step.pre is None:
            # Applied before polyshift kept release journals: the rollback step is all there is.
            if rollback_error is None:
                self.journal.write(Step.VERIFY, Phase.DONE, store=self.store, note="no pre-release fingerprint on record")
                return StoreUndo(m.store, True, "rolled back with its rollback step (no pre-release fingerprint on record)")
            return StoreUndo(m.store, False, f"rollback step failed ({rollback_error})",
                             f"inspect {m.store}; 'polyshift backup list --store {m.store}' shows the rollback points")
        problems = _differences(step.pre, post, data=self.strict_data)
        warnings = [] if self.strict_data else _differences(step.pre, post, data=True)[len(problems):]
        if rollback_error is None and not problems:
            self.journal.write(Step.VERIFY, Phase.DONE, store=self.store, schema=post.schema_hash, warnings=warnings)
            if ran_rollback:
                return StoreUndo(m.store, True, f"rolled back with its rollback step, {m.store} schema verified as before", None, warnings)
            return StoreUndo(m.store, True, f"the transaction was rolled back and {m.store} is verified unchanged", None, warnings)
        why = f"rollback step failed ({rollback_error})" if rollback_error else "; ".join(problems)
        self.journal.write(Step.VERIFY, Phase.FAILED, store=self.store, why=why)
        if not self.strict_data:
            # The release's backup predates everything written since: a person decides.
            keep = f" (backup {safety.id} holds the scope as it was just before this rollback)" if safety else ""
            hint = (f"compare, then restore the release's backup: polyshift backup restore {step.manifest.id} --yes{keep}"
                    if step.manifest else f"inspect {m.store} by hand{keep}")
            return StoreUndo(m.store, False, f"{why}; not restored automatically", hint)
        if step.manifest is None:
            return StoreUndo(m.store, False, f"{why}, and there is no backup to restore",
                             f"inspect {m.store} by hand; 'polyshift history --store {m.store}' shows the ledger")
        return self._restore(applied and rollback_error is not None, why)

    def _restore(self, record_reverted: bool, why: str) -> StoreUndo:
        m, manifest = self.step.migration, self.step.manifest
        assert manifest is not None and self.step.pre is not None
        self.runner.emit(Progress.RESTORE, {"store": m.store, "backup": manifest.id, "why": why})
        self.journal.write(Step.RESTORE, Phase.INTENT, store=self.store, backup=manifest.id)
        report = self.runner.restore_into(self.adapter, manifest, self.run_id)
        if record_reverted:
            self.adapter.record_reverted(m, run_id=self.run_id, actor=actor())
        post = self.adapter.fingerprint(self.step.scope)
        self.journal.write(Step.RESTORE, Phase.DONE, store=self.store, backup=manifest.id, verified=report.verified)
        if report.verified and post.schema_hash == self.step.pre.schema_hash:
            return StoreUndo(m.store, True, f"{why}; restored backup {manifest.id}, data and schema verified")
        detail = "; ".join(report.mismatches) or "schema differs from before the release"
        return StoreUndo(m.store, False, f"{why}; restored backup {manifest.id} but it does not verify: {detail}",
                         f"inspect {m.store}, then run: polyshift backup restore {manifest.id} --yes")
