"""`polyshift recover`, `polyshift emergency-rollback` and `polyshift releases`.

Recover reads the journal of a run that did not finish and drives it to one consistent end:
- a release: *finish* when every store had forwarded and validated and the cutover had begun,
  *undo* otherwise (or when an undo had already begun);
- a rollback: the step it was in is settled as a failed step would have been (done if its ledger
  row committed, else verified unchanged or restored from the backup taken just before it);
  the migrations after it are left as they are;
- a restore: *finish* it, restoring the same backup again.
Every step it takes is journaled into the same run, so a recover that is itself interrupted is
resumed by the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from polyshift.feature_flags.admin import Change
from polyshift.framework.control.runs import (
    CHANGING_COMMANDS,
    RELEASE_COMMANDS,
    STORE_COMMANDS,
    RunCommand,
    describe_run,
    midway,
    run_is_alive,
)
from polyshift.framework.control.state import actor
from polyshift.framework.core.errors import (
    ConfigError,
    LockHeldError,
    MigrationFailedRestored,
    MigrationFailedUnverified,
    PolyshiftError,
    RefusedError,
    UsageError,
)
from polyshift.framework.core.migration import Migration, version_key
from polyshift.framework.core.protocol import Adapter, Fingerprint
from polyshift.framework.core.status import applied_entries
from polyshift.framework.engine.bluegreen import ReleaseRun
from polyshift.framework.engine.pipeline import Pipeline
from polyshift.framework.engine.releases import DEFAULT_STAGES, Release, ReleaseSettings
from polyshift.framework.engine.runner import RollbackSnapshot
from polyshift.framework.engine.saga import StoreStep

_ENDINGS = {("complete", "done"), ("undo", "done"), ("release", "abandoned")}


@dataclass
class Replay:
    """What a run's journal says about its last release."""

    version: str
    stores: list[str]
    flag: str | None
    stages: list[float]
    steps: list[StoreStep] = field(default_factory=list)
    invariants_done: bool = False
    cutover_begun: bool = False
    undo_begun: bool = False
    last_stage_done: float = 0.0
    last_entry: str = ""
    flag_version: int | None = None      # the flag version the release itself last saw or wrote
    stage_in_progress: float | None = None

    @property
    def may_finish(self) -> bool:
        return (not self.undo_begun and self.cutover_begun and self.invariants_done
                and bool(self.steps) and all(s.validated for s in self.steps))


@dataclass
class RecoveryResult:
    run_id: str
    version: str | None
    action: str          # finished | undone | nothing
    detail: str


class Recovery(Pipeline):
    # -- reading the journal ------------------------------------------------------------
    def replay(self, run_id: str) -> Replay | None:
        entries = self.project.state.journal_entries(run_id)
        starts = [e for e in entries if e["step"] == "release" and e["phase"] == "intent"]
        if not starts:
            return None
        version = starts[-1]["version"]
        mine = [e for e in entries if e["version"] == version and e["id"] >= starts[-1]["id"]]
        if any((e["step"], e["phase"]) in _ENDINGS for e in mine):
            return None
        head = starts[-1]["detail"]
        replay = Replay(version, list(head["stores"]), head.get("flag"), [float(p) for p in head.get("stages", [])])
        by_store: dict[str, StoreStep] = {}
        for detail in head.get("steps", []):  # an emergency rollback journals its whole plan in one entry
            by_store[detail["store"]] = self._step(detail["store"], version, detail)
            replay.steps.append(by_store[detail["store"]])
        for e in mine:
            step, phase, store, detail = e["step"], e["phase"], e["store"], e["detail"]
            replay.last_entry = f"{step} {phase}" + (f" ({store})" if store else "")
            if step == "snapshot":
                by_store[store] = self._step(store, version, detail)
                replay.steps.append(by_store[store])
            elif step == "backup" and phase == "done":
                by_store[store].manifest = self.project.artifacts.manifest(detail["backup"])
            elif step == "forward" and phase == "intent":
                by_store[store].forward_begun = True
            elif step == "forward" and phase == "done":
                by_store[store].forwarded = True
            elif step == "validate" and phase == "done":
                by_store[store].validated = True
            elif step == "invariants" and phase == "done":
                replay.invariants_done = True
            elif step == "cutover":
                replay.cutover_begun = True
                replay.flag_version = detail.get("flag_version")
            elif step == "stage" and phase == "intent":
                replay.stage_in_progress = float(detail["percent"])
            elif step == "stage" and phase == "done":
                replay.last_stage_done = max(replay.last_stage_done, float(detail["percent"]))
                replay.flag_version, replay.stage_in_progress = detail.get("flag_version"), None
            elif (step, phase) in (("undo", "intent"), ("stage", "failed")):
                # A failed stage is the runner's decision to undo, even if it died before saying so.
                replay.undo_begun = True
                for s in replay.steps:
                    s.undone = False  # a new undo attempt: only what it verifies counts
            elif (step, phase) == ("verify", "done") or ((step, phase) == ("restore", "done") and detail.get("verified")):
                by_store[store].undone = True
        return replay

    def _migration(self, store: str, version: str, detail: dict[str, Any], what: str) -> Migration:
        """The migration a run journaled, as it was then: recover never runs a file changed since."""
        try:
            m: Migration = self.project.migration(store, version)
        except KeyError:
            raise RefusedError(f"cannot recover {what}: migration {store}/{detail.get('migration', version)} is no longer on disk",
                               hint="restore the file from version control, then run 'polyshift recover' again") from None
        if detail.get("checksum") and detail["checksum"] != m.checksum:
            raise RefusedError(f"cannot recover {what}: {store}/{m.id} changed on disk since the run started",
                               hint="restore the file as it was (version control), then run 'polyshift recover' again")
        return m

    def _step(self, store: str, version: str, detail: dict[str, Any]) -> StoreStep:
        m = self._migration(store, version, detail, f"release {version}")
        pre = Fingerprint.from_json(detail["pre"]) if detail.get("pre") else None
        step = StoreStep(m, tuple(detail["scope"]), pre, bool(detail.get("non_transactional")), detail.get("risk", ""))
        step.forward_begun = bool(detail.get("applied"))
        step.known_problems = list(detail.get("known_problems", []))
        return step

    def _release(self, replay: Replay) -> tuple[Release, str | None]:
        """The release as the run started it (flag, stages), with bake time and gates as configured
        now. A releases.toml broken since then cannot say what the gates are: the release is then
        rebuilt from the journal alone, and the second value says why it may only be undone."""
        try:
            current = next((r for r in self.releases(list(self.project.config.stores)) if r.version == replay.version), None)
        except ConfigError as exc:
            settings = ReleaseSettings(replay.version, flag=replay.flag, stages=tuple(replay.stages) or DEFAULT_STAGES)
            return (Release(replay.version, settings, {s.store: s.migration for s in replay.steps}, replay.stores),
                    f"its gates cannot be read ({exc})")
        if current is None:
            raise RefusedError(f"cannot recover release {replay.version}: it has no migrations on disk any more")
        settings = current.settings
        if replay.flag != settings.flag or tuple(replay.stages) != (settings.stages if settings.flag else ()):
            settings = replace(settings, flag=replay.flag, stages=tuple(replay.stages) or settings.stages)
        return Release(replay.version, settings, {s.store: s.migration for s in replay.steps}, replay.stores), None

    # -- recover ------------------------------------------------------------------------
    def recover(self) -> list[RecoveryResult]:
        results = []
        for run in self.project.state.unfinished_runs(CHANGING_COMMANDS):
            if run_is_alive(run):
                raise LockHeldError(f"{describe_run(run)} is still running; it will finish or undo its {run['command']} itself",
                                    hint="wait for it; recover only takes over runs whose process is gone")
            if run["command"] == RunCommand.ROLLBACK:
                results.append(self._recover_rollback(run))
            elif run["command"] == RunCommand.RESTORE:
                results.append(self._recover_restore(run))
            else:
                results.append(self._recover_run(run))
        return results

    def _claim(self, run: dict[str, Any]) -> None:
        if not self.project.state.claim_run(run):
            raise LockHeldError(f"{describe_run(run)} was taken over by another recover")

    def _close_untouched(self, run: dict[str, Any], note: str) -> RecoveryResult:
        """A run that died before changing anything: closed, nothing to do."""
        self._claim(run)
        self.project.state.finish_run(run["id"], "recovered", {"note": note})
        self.project.state.audit("run.recovered", f"run:{run['id']}", {"action": "nothing", "command": run["command"]})
        return RecoveryResult(run["id"], None, "nothing", f"{note}; nothing was changed")

    # -- an interrupted rollback ----------------------------------------------------------
    @staticmethod
    def _rollback_progress(entries: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[str], list[str]]:
        """The intent of the step that did not settle (or None), the migrations rolled back, and
        the ones the run had planned."""
        planned = next((e["detail"]["migrations"] for e in entries if (e["step"], e["phase"]) == ("plan", "done")), [])
        open_intent, done = None, []
        for e in entries:
            if (e["step"], e["phase"]) == ("rollback", "intent"):
                open_intent = e
            elif open_intent is not None and e["version"] == open_intent["version"] and e["store"] == open_intent["store"] \
                    and (e["step"], e["phase"]) in (("rollback", "done"), ("verify", "done")):
                if e["step"] == "rollback":
                    done.append(f"{e['store']}/{open_intent['detail'].get('migration', e['version'])}")
                open_intent = None
        return open_intent, done, planned

    def _recover_rollback(self, run: dict[str, Any]) -> RecoveryResult:
        state = self.project.state
        intent, _, _ = self._rollback_progress(state.journal_entries(run["id"]))
        if intent is None:
            return self._close_untouched(run, f"{describe_run(run)} stopped between rollback steps")
        store = intent["store"]
        with self.runner._locked([store], run["id"], lock=True, outlive_dead=True) as (adapter,):
            self._claim(run)
            intent, done, planned = self._rollback_progress(state.journal_entries(run["id"]))
            if intent is None:
                state.finish_run(run["id"], "recovered", {"recovered_by": actor()})
                return RecoveryResult(run["id"], None, "nothing", "the rollback step had settled; nothing was changed")
            status = "needs-recovery"
            try:
                m = self._migration(store, intent["version"], intent["detail"], f"the rollback of {store}/{intent['version']}")
                died = f"{describe_run(run)} stopped during the rollback step of {store}/{m.id}"
                if "pre" not in intent["detail"]:
                    # Journaled by a polyshift that kept no fingerprint with the intent: nothing to
                    # verify against. Closed (so it blocks nothing), and said so.
                    status = "recovered-unverified"
                    where = "still applied" if m.version in applied_entries(adapter.ledger()) else "rolled back"
                    raise MigrationFailedUnverified(
                        f"{died}; the step was journaled without a fingerprint (an older polyshift): the ledger says "
                        f"{m.id} is {where}, which cannot be verified",
                        hint=f"inspect {store}; 'polyshift backup list --store {store}' shows the rollback points")
                snap = RollbackSnapshot.from_json(intent["detail"], self.project.artifacts)
                settled = self.runner.settle_rollback(adapter, m, snap, run["id"], cause=died)
                rest = [p for p in planned if p not in done and p != f"{store}/{m.id}"]
                after = (f"; rolled back before it: {', '.join(done)}" if done else "") + \
                        (f"; not attempted: {', '.join(rest)}" if rest else "")
                if settled.action == "rolled-back":
                    status = "succeeded"
                    return RecoveryResult(run["id"], m.version, "finished", settled.how + after)
                if settled.action == "failed-unverified":
                    raise MigrationFailedUnverified(settled.how + after, hint=settled.hint)
                status = "rolled-back"
                raise MigrationFailedRestored(f"{settled.how}; {m.id} is still applied{after}")
            finally:
                state.finish_run(run["id"], status, {"recovered_by": actor()})

    # -- an interrupted restore -----------------------------------------------------------
    def _recover_restore(self, run: dict[str, Any]) -> RecoveryResult:
        state = self.project.state
        entries = state.journal_entries(run["id"])
        intent = next((e for e in reversed(entries) if (e["step"], e["phase"]) == ("restore", "intent")), None)
        if intent is None:
            return self._close_untouched(run, f"{describe_run(run)} stopped before its restore began")
        store, backup = intent["store"], intent["detail"]["backup"]
        with self.runner._locked([store], run["id"], lock=True, outlive_dead=True) as (adapter,):
            self._claim(run)
            status = "needs-recovery"
            try:
                manifest = self.project.artifacts.verify(backup, decompress=False)
                # The safety backup of what was there before the restore began is the one to keep.
                kept = [p["id"] for p in state.rollback_points(store)
                        if p["run_id"] == run["id"] and p["reason"] == f"before restore of {backup}"]
                self.runner.emit("restore", {"store": store, "backup": backup, "why": f"{describe_run(run)} stopped mid-restore"})
                report = self.runner.journaled_restore(adapter, manifest, run["id"], safety=not kept)
                if not report.verified:
                    raise MigrationFailedUnverified(
                        f"restored {backup} again but it does not verify: {'; '.join(report.mismatches)}",
                        hint=f"inspect {store}; 'polyshift backup list --store {store}' shows the rollback points")
                status = "succeeded"
                keep = f" (the safety backup {kept[0]} holds what was there before)" if kept else ""
                return RecoveryResult(run["id"], None, "finished",
                                      f"{describe_run(run)} stopped mid-restore: restored backup {backup} again, verified{keep}")
            finally:
                state.finish_run(run["id"], status, {"recovered_by": actor()})

    def _recover_run(self, run: dict[str, Any], *, force_undo: bool = False) -> RecoveryResult:
        state = self.project.state
        replay = self.replay(run["id"])
        if replay is None:
            if not state.claim_run(run):
                raise LockHeldError(f"{describe_run(run)} was taken over by another recover")
            state.finish_run(run["id"], "recovered", {"note": "no release was in progress"})
            state.audit("run.recovered", f"run:{run['id']}", {"action": "nothing", "command": run["command"]})
            return RecoveryResult(run["id"], None, "nothing", "no release was in progress; nothing was changed")
        flags = self.flags() if replay.flag else None
        # Locks first: a runner that is alive after all (another host) keeps them, and we stop here
        # without having touched its run. Only then claim the run, and re-read what it journaled.
        with self.runner._locked(replay.stores, run["id"], lock=True, outlive_dead=True) as adapters:
            if not state.claim_run(run):
                raise LockHeldError(f"{describe_run(run)} was taken over by another recover")
            replay = self.replay(run["id"]) or replay
            status = "needs-recovery"
            try:
                release, unreadable = self._release(replay)
                rr = ReleaseRun(self.runner, self.events, flags, release, {a.name: a for a in adapters}, run["id"], replay.steps)
                rr.changing = True
                died = f"{describe_run(run)} stopped after '{replay.last_entry}'"
                blocker = None if force_undo or not replay.may_finish else unreadable or self._finish_blocker(rr, replay)
                if replay.may_finish and not force_undo and blocker is None:
                    self.events.release("recovered", replay.version,
                                        {"run": run["id"], "action": "finish", "stopped_after": replay.last_entry})
                    rr.cutover(after=replay.last_stage_done, flag_version=rr.current_flag_version())
                    status = "succeeded"
                    return RecoveryResult(run["id"], replay.version, "finished",
                                          f"{died}; every store had forwarded and validated and the cutover had begun: "
                                          f"finished the cutover of {replay.version}")
                self.events.release("recovered", replay.version, {"run": run["id"], "action": "undo", "stopped_after": replay.last_entry})
                reason = "emergency rollback" if force_undo else blocker or "it had not reached the cutover"
                rr.undo(f"{died}; undoing release {replay.version} ({reason})", strict_data=run["command"] != "emergency-rollback")
            except MigrationFailedRestored:
                status = "rolled-back"
                raise
            finally:
                state.finish_run(run["id"], status, {"recovered_by": actor()})

    def _finish_blocker(self, rr: ReleaseRun, replay: Replay) -> str | None:
        """Why a release that could be finished must be undone instead (None: finish it)."""
        if replay.flag:
            current = self.flags().store.get(replay.flag)
            version = current.version if current else None
            ours = version == replay.flag_version or (
                # the runner may have moved the flag for the stage it was in, then died
                current is not None and replay.stage_in_progress is not None and current.release == replay.version
                and current.percent == replay.stage_in_progress and version == (replay.flag_version or 0) + 1)
            if not ours or (current is not None and current.killed):
                return f"flag {replay.flag} was killed or changed by {current.updated_by if current else 'someone'} since"
        problems = rr.invariants()
        if problems:
            return "store invariants fail now: " + "; ".join(problems)
        return None

    # -- emergency rollback ---------------------------------------------------------------
    def emergency_rollback(self, version: str, *, wait: float) -> str:
        every = self.releases(list(self.project.config.stores))
        rel = next((r for r in every if r.version == version), None)
        if rel is None:
            raise UsageError(f"emergency-rollback {version}: no migration has that version")
        killed = self._kill_now(rel)
        for run in self.project.state.unfinished_runs(STORE_COMMANDS):
            if not run_is_alive(run):
                raise RefusedError(f"{describe_run(run)} did not finish: its store may be {midway(run)}",
                                   hint="run 'polyshift recover' first; the flag is killed already")
        for run in self.project.state.unfinished_runs(RELEASE_COMMANDS):
            if run_is_alive(run):
                continue  # a live runner sees the kill and undoes its release; its locks make us wait below
            replay = self.replay(run["id"])
            if replay is not None and replay.version != version:
                raise RefusedError(f"{describe_run(run)} left release {replay.version} unfinished",
                                   hint="run 'polyshift recover' first; emergency-rollback only undoes its own release")
            try:
                self._recover_run(run, force_undo=True)
            except MigrationFailedRestored:
                pass  # undone and verified: what we came to do; the ledgers below confirm it
        stores = [s for s in rel.order if s in rel.migrations]
        run_id = self.project.state.start_run(RunCommand.EMERGENCY_ROLLBACK, {"release": version, "stores": stores})
        status = "failed"  # until the plan is journaled nothing has changed
        try:
            with self.runner._locked(stores, run_id, lock=True, wait=wait) as adapters:
                by_name = {a.name: a for a in adapters}
                self._refuse_unless_newest(rel, by_name)
                steps = self._applied_steps(rel, by_name)
                if not steps:
                    status = "succeeded"
                    return f"release {version} is not applied in any store" + (f"; flag {rel.settings.flag} killed" if killed else "")
                rr = ReleaseRun(self.runner, self.events, self.flags() if rel.settings.flag else None,
                                Release(version, rel.settings, {s.store: s.migration for s in steps}, rel.order), by_name, run_id, steps)
                rr.journal("release", "intent", stores=[s.store for s in steps], flag=rel.settings.flag,
                           stages=list(rel.settings.stages) if rel.settings.flag else [],
                           steps=[s.snapshot_detail() | {"store": s.store, "applied": True} for s in steps])
                status = "needs-recovery"
                rr.changing = True
                try:
                    rr.undo(f"emergency rollback of release {version} by {actor()}", strict_data=False)
                except MigrationFailedRestored as done:
                    status = "succeeded"
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
        current = self.flags().store.get(flag)
        if current is not None and current.killed:
            return False
        # Created killed if the release has not reached its cutover: a runner still moving stores
        # forward then finds the kill and undoes instead of staging.
        self.flags().change(flag, Change(killed=True, release=rel.version), reason=f"emergency rollback of release {rel.version}",
                            create=True)
        self.events.release("flag_killed", rel.version, {"flag": flag, "emergency": True})
        return True

    def _applied_steps(self, rel: Release, adapters: dict[str, Adapter]) -> list[StoreStep]:
        """Stores where the release is applied, with the pre-release fingerprints and backups it completed with."""
        journal = self.project.state.journal_entries(version=rel.version)
        completed = [e["run_id"] for e in journal if e["step"] == "complete" and e["phase"] == "done"]
        snapshots = {e["store"]: e for e in journal if e["step"] == "snapshot" and completed and e["run_id"] == completed[-1]}
        backups = {e["store"]: e["detail"]["backup"] for e in journal
                   if e["step"] == "backup" and e["phase"] == "done" and completed and e["run_id"] == completed[-1]}
        steps = []
        for m in rel.ordered():
            adapters[m.store].ensure_ledger()
            if m.version not in applied_entries(adapters[m.store].ledger()):
                continue
            snap = snapshots.get(m.store)
            if snap is not None:
                step = self._step(m.store, m.version, snap["detail"])
            else:
                step = StoreStep(m, (), None)
            if m.store in backups:
                step.manifest = self.project.artifacts.manifest(backups[m.store])
            step.forward_begun = True
            steps.append(step)
        return steps

    # -- listing ----------------------------------------------------------------------------
    def listing(self) -> list[dict[str, Any]]:
        names = list(self.project.config.stores)
        applied: dict[str, set[str] | None] = {}
        for name in names:
            try:
                with self.runner.adapter(name) as adapter:
                    applied[name] = set(applied_entries(adapter.ledger()))
            except PolyshiftError:
                applied[name] = None
        journal = self.project.state.journal_entries()
        interrupted = {}
        for run in self.project.state.unfinished_runs(RELEASE_COMMANDS):
            replay = self.replay(run["id"])
            if replay is not None:
                interrupted[replay.version] = ("in progress: " if run_is_alive(run) else "interrupted, run 'polyshift recover': ") \
                    + describe_run(run)
        rows = []
        for rel in self.releases(names):
            ends = [e for e in journal if e["version"] == rel.version and e["step"] in ("release", "complete", "undo", "stage")]
            stores = {}
            for store in rel.order:
                if store in rel.migrations:
                    done = applied[store]
                    stores[store] = "unreachable" if done is None else ("applied" if rel.version in done else "pending")
            flag = rel.settings.flag
            flag_state = None
            if flag:
                try:
                    f = self.flags().store.get(flag)
                    flag_state = "absent" if f is None else ("killed" if f.killed else f"{f.percent:g}%" if f.enabled else "off")
                except PolyshiftError:
                    flag_state = "unreachable"
            rows.append({"version": rel.version, "stores": stores, "flag": flag, "flag_state": flag_state,
                         "stages": list(rel.settings.stages) if flag else [],
                         "last": interrupted.get(rel.version) or _last_state(ends)})
        return rows


def _last_state(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "never run"
    e = entries[-1]
    return {
        ("complete", "done"): "completed",
        ("undo", "done"): "rolled back",
        ("undo", "failed"): "undo unverified: run recover",
        ("release", "abandoned"): "abandoned (nothing changed)",
        ("undo", "intent"): "undoing",
    }.get((e["step"], e["phase"]), f"in progress ({e['step']} {e['phase']})")
