"""`polyshift emergency-rollback`: the release's flag killed at once, then the release undone in
every store, long after its cutover if need be.

The kill comes first and takes no lock: a live runner sees it and undoes its own release; a dead
one is recovered as an undo. Data written since the release is never overwritten by an old
backup: a safety backup precedes each rollback step and differences become integrity warnings.
"""

from __future__ import annotations

from polyshift.feature_flags.admin import Change
from polyshift.framework.control.runs import describe_run, midway
from polyshift.framework.control.state import actor
from polyshift.framework.core.errors import MigrationFailedRestored, RefusedError, UsageError
from polyshift.framework.core.lifecycle import RELEASE_COMMANDS, STORE_COMMANDS, Phase, ReleaseEvent, RunCommand, RunStatus, Step
from polyshift.framework.core.migration import version_key
from polyshift.framework.core.protocol import Adapter
from polyshift.framework.core.status import applied_entries
from polyshift.framework.engine.bluegreen import ReleaseRun
from polyshift.framework.engine.recovery import Recovery
from polyshift.framework.engine.releases import Release
from polyshift.framework.engine.saga import StoreStep
from polyshift.framework.engine.session import Session


class EmergencyRollback:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.project = session.project
        self.runner = session.runner
        self.events = session.events
        self.recovery = Recovery(session)

    def run(self, version: str, *, wait: float) -> str:
        every = self.session.releases()
        rel = next((r for r in every if r.version == version), None)
        if rel is None:
            raise UsageError(f"emergency-rollback {version}: no migration has that version")
        killed = self._kill_now(rel)
        for run in self.project.state.unfinished_runs(STORE_COMMANDS):
            if not self.project.state.run_is_alive(run):
                raise RefusedError(f"{describe_run(run)} did not finish: its store may be {midway(run)}",
                                   hint="run 'polyshift recover' first; the flag is killed already")
        for run in self.project.state.unfinished_runs(RELEASE_COMMANDS):
            if self.project.state.run_is_alive(run):
                continue  # a live runner sees the kill and undoes its release; its locks make us wait below
            replay = self.recovery.replay(run["id"])
            if replay is not None and replay.version != version:
                raise RefusedError(f"{describe_run(run)} left release {replay.version} unfinished",
                                   hint="run 'polyshift recover' first; emergency-rollback only undoes its own release")
            try:
                self.recovery.recover_run(run, force_undo=True)
            except MigrationFailedRestored:
                pass  # undone and verified: what we came to do; the ledgers below confirm it
        stores = [s for s in rel.order if s in rel.migrations]
        run_id = self.project.state.start_run(RunCommand.EMERGENCY_ROLLBACK, {"release": version, "stores": stores})
        status = RunStatus.FAILED  # until the plan is journaled nothing has changed
        try:
            with self.runner.locked(stores, run_id, lock=True, wait=wait) as adapters:
                by_name = {a.name: a for a in adapters}
                self._refuse_unless_newest(rel, by_name)
                steps = self._applied_steps(rel, by_name)
                if not steps:
                    status = RunStatus.SUCCEEDED
                    return f"release {version} is not applied in any store" + (f"; flag {rel.settings.flag} killed" if killed else "")
                rr = ReleaseRun(self.runner, self.events, self.session.flags() if rel.settings.flag else None,
                                Release(version, rel.settings, {s.store: s.migration for s in steps}, rel.order), by_name, run_id, steps)
                rr.journal.write(Step.RELEASE, Phase.INTENT, stores=[s.store for s in steps], flag=rel.settings.flag,
                           stages=list(rel.settings.stages) if rel.settings.flag else [],
                           steps=[s.snapshot_detail() | {"store": s.store, "applied": True} for s in steps])
                status = RunStatus.NEEDS_RECOVERY
                rr.changing = True
                try:
                    rr.undo(f"emergency rollback of release {version} by {actor()}", strict_data=False)
                except MigrationFailedRestored as done:
                    status = RunStatus.SUCCEEDED
                    return str(done)
        finally:
            self.project.state.finish_run(run_id, status)
        raise AssertionError("undo always raises")

    def _refuse_unless_newest(self, rel: Release, adapters: dict[str, Adapter]) -> None:
        """Undoing a release underneath a newer one would run its rollback against a shape it never saw."""
        for m in rel.ordered():
            adapters[m.store].ensure_ledger()
            later = sorted((v for v in applied_entries(adapters[m.store].ledger()) if version_key(v) > m.version_key), key=version_key)
            if later:
                raise RefusedError(f"emergency-rollback {rel.version}: {m.store} has newer release(s) {', '.join(later)} applied",
                                   hint=f"roll back the newest first: polyshift emergency-rollback {later[-1]}")

    def _kill_now(self, rel: Release) -> bool:
        """Traffic back to blue before anything else, without waiting for any lock."""
        flag = rel.settings.flag
        if flag is None:
            return False
        current = self.session.flags().store.get(flag)
        if current is not None and current.killed:
            return False
        # Created killed if the release has not reached its cutover: a runner still moving stores
        # forward then finds the kill and undoes instead of staging.
        self.session.flags().change(flag, Change(killed=True, release=rel.version), reason=f"emergency rollback of release {rel.version}",
                            create=True)
        self.events.release(ReleaseEvent.FLAG_KILLED, rel.version, {"flag": flag, "emergency": True})
        return True

    def _applied_steps(self, rel: Release, adapters: dict[str, Adapter]) -> list[StoreStep]:
        """Stores where the release is applied, with the pre-release fingerprints and backups it completed with."""
        journal = self.project.state.journal_entries(version=rel.version)
        completed = [e["run_id"] for e in journal if (e["step"], e["phase"]) == (Step.COMPLETE, Phase.DONE)]
        snapshots = {e["store"]: e for e in journal if e["step"] == Step.SNAPSHOT and completed and e["run_id"] == completed[-1]}
        backups = {e["store"]: e["detail"]["backup"] for e in journal
                   if (e["step"], e["phase"]) == (Step.BACKUP, Phase.DONE) and completed and e["run_id"] == completed[-1]}
        steps = []
        for m in rel.ordered():
            adapters[m.store].ensure_ledger()
            if m.version not in applied_entries(adapters[m.store].ledger()):
                continue
            snap = snapshots.get(m.store)
            if snap is not None:
                step = self.recovery.journaled_step(m.store, m.version, snap["detail"])
            else:
                step = StoreStep(m, (), None)
            if m.store in backups:
                step.manifest = self.project.artifacts.manifest(backups[m.store])
            step.forward_begun = True
            steps.append(step)
        return steps
