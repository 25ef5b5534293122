"""`polyshift recover`.

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

from polyshift.framework.control.runs import describe_run
from polyshift.framework.control.state import actor
from polyshift.framework.core.errors import (
    ConfigError,
    LockHeldError,
    MigrationFailedRestored,
    MigrationFailedUnverified,
    RefusedError,
)
from polyshift.framework.core.lifecycle import (
    CHANGING_COMMANDS,
    RELEASE_ENDINGS,
    Action,
    Phase,
    Progress,
    ReleaseEvent,
    RunCommand,
    RunStatus,
    Step,
)
from polyshift.framework.core.migration import Migration
from polyshift.framework.core.protocol import Fingerprint
from polyshift.framework.core.status import applied_entries
from polyshift.framework.engine.bluegreen import ReleaseRun
from polyshift.framework.engine.releases import DEFAULT_STAGES, Release, ReleaseSettings
from polyshift.framework.engine.runner import RollbackSnapshot
from polyshift.framework.engine.saga import StoreStep
from polyshift.framework.engine.session import Session


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


class Recovery:
    """``polyshift recover`` within a session; also what emergency-rollback and the release
    listing read a run's journal with."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.project = session.project
        self.runner = session.runner
        self.events = session.events

    # -- reading the journal ------------------------------------------------------------
    def replay(self, run_id: str) -> Replay | None:
        entries = self.project.state.journal_entries(run_id)
        starts = [e for e in entries if (e["step"], e["phase"]) == (Step.RELEASE, Phase.INTENT)]
        if not starts:
            return None
        version = starts[-1]["version"]
        mine = [e for e in entries if e["version"] == version and e["id"] >= starts[-1]["id"]]
        if any((e["step"], e["phase"]) in RELEASE_ENDINGS for e in mine):
            return None
        head = starts[-1]["detail"]
        replay = Replay(version, list(head["stores"]), head.get("flag"), [float(p) for p in head.get("stages", [])])
        by_store: dict[str, StoreStep] = {}
        for detail in head.get("steps", []):  # an emergency rollback journals its whole plan in one entry
            by_store[detail["store"]] = self.journaled_step(detail["store"], version, detail)
            replay.steps.append(by_store[detail["store"]])
        for e in mine:
            step, phase, store, detail = Step(e["step"]), Phase(e["phase"]), e["store"], e["detail"]
            replay.last_entry = f"{step} {phase}" + (f" ({store})" if store else "")
            match step, phase:
                case Step.SNAPSHOT, _:
                    by_store[store] = self.journaled_step(store, version, detail)
                    replay.steps.append(by_store[store])
                case Step.BACKUP, Phase.DONE:
                    by_store[store].manifest = self.project.artifacts.manifest(detail["backup"])
                case Step.FORWARD, Phase.INTENT:
                    by_store[store].forward_begun = True
                case Step.FORWARD, Phase.DONE:
                    by_store[store].forwarded = True
                case Step.VALIDATE, Phase.DONE:
                    by_store[store].validated = True
                case Step.INVARIANTS, Phase.DONE:
                    replay.invariants_done = True
                case Step.CUTOVER, _:
                    replay.cutover_begun = True
                    replay.flag_version = detail.get("flag_version")
                case Step.STAGE, Phase.INTENT:
                    replay.stage_in_progress = float(detail["percent"])
                case Step.STAGE, Phase.DONE:
                    replay.last_stage_done = max(replay.last_stage_done, float(detail["percent"]))
                    replay.flag_version, replay.stage_in_progress = detail.get("flag_version"), None
                case (Step.UNDO, Phase.INTENT) | (Step.STAGE, Phase.FAILED):
                    # A failed stage is the runner's decision to undo, even if it died before saying so.
                    replay.undo_begun = True
                    for s in replay.steps:
                        s.undone = False  # a new undo attempt: only what it verifies counts
                case Step.VERIFY, Phase.DONE:
                    by_store[store].undone = True
                case Step.RESTORE, Phase.DONE if detail.get("verified"):
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

    def journaled_step(self, store: str, version: str, detail: dict[str, Any]) -> StoreStep:
        """A store's part of a release as a run journaled it (its snapshot entry, or the plan of an
        emergency rollback)."""
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
            current = next((r for r in self.session.releases() if r.version == replay.version), None)
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
            if self.project.state.run_is_alive(run):
                raise LockHeldError(f"{describe_run(run)} is still running; it will finish or undo its {run['command']} itself",
                                    hint="wait for it; recover only takes over runs whose process is gone")
            if run["command"] == RunCommand.ROLLBACK:
                results.append(self._recover_rollback(run))
            elif run["command"] == RunCommand.RESTORE:
                results.append(self._recover_restore(run))
            else:
                results.append(self.recover_run(run))
        return results

    def _claim(self, run: dict[str, Any]) -> None:
        if not self.project.state.claim_run(run):
            raise LockHeldError(f"{describe_run(run)} was taken over by another recover")

    def _close_untouched(self, run: dict[str, Any], note: str) -> RecoveryResult:
        """A run that died before changing anything: closed, nothing to do."""
        self._claim(run)
        self.project.state.finish_run(run["id"], RunStatus.RECOVERED, {"note": note})
        self.project.state.audit("run.recovered", f"run:{run['id']}", {"action": "nothing", "command": run["command"]})
        return RecoveryResult(run["id"], None, "nothing", f"{note}; nothing was changed")

    # -- an interrupted rollback ----------------------------------------------------------
    @staticmethod
    def _rollback_progress(entries: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[str], list[str]]:
        """The intent of the step that did not settle (or None), the migrations rolled back, and
        the ones the run had planned."""
        planned: list[str] = next((e["detail"]["migrations"] for e in entries if (e["step"], e["phase"]) == (Step.PLAN, Phase.DONE)), [])
        open_intent, done = None, []
        for e in entries:
            if (e["step"], e["phase"]) == (Step.ROLLBACK, Phase.INTENT):
                open_intent = e
            elif open_intent is not None and e["version"] == open_intent["version"] and e["store"] == open_intent["store"] \
                    and (e["step"], e["phase"]) in ((Step.ROLLBACK, Phase.DONE), (Step.VERIFY, Phase.DONE)):
                if e["step"] == Step.ROLLBACK:
                    done.append(f"{e['store']}/{open_intent['detail'].get('migration', e['version'])}")
                open_intent = None
        return open_intent, done, planned

    def _recover_rollback(self, run: dict[str, Any]) -> RecoveryResult:
        state = self.project.state
        intent, _, _ = self._rollback_progress(state.journal_entries(run["id"]))
        if intent is None:
            return self._close_untouched(run, f"{describe_run(run)} stopped between rollback steps")
        store = intent["store"]
        with self.runner.locked([store], run["id"], lock=True, outlive_dead=True) as (adapter,):
            self._claim(run)
            intent, done, planned = self._rollback_progress(state.journal_entries(run["id"]))
            if intent is None:
                state.finish_run(run["id"], RunStatus.RECOVERED, {"recovered_by": actor()})
                return RecoveryResult(run["id"], None, "nothing", "the rollback step had settled; nothing was changed")
            status = RunStatus.NEEDS_RECOVERY
            try:
                m = self._migration(store, intent["version"], intent["detail"], f"the rollback of {store}/{intent['version']}")
                died = f"{describe_run(run)} stopped during the rollback step of {store}/{m.id}"
                if "pre" not in intent["detail"]:
                    # Journaled by a polyshift that kept no fingerprint with the intent: nothing to
                    # verify against. Closed (so it blocks nothing), and said so.
                    status = RunStatus.RECOVERED_UNVERIFIED
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
                if settled.action is Action.ROLLED_BACK:
                    status = RunStatus.SUCCEEDED
                    return RecoveryResult(run["id"], m.version, "finished", settled.how + after)
                if settled.action is Action.FAILED_UNVERIFIED:
                    raise MigrationFailedUnverified(settled.how + after, hint=settled.hint)
                status = RunStatus.ROLLED_BACK
                raise MigrationFailedRestored(f"{settled.how}; {m.id} is still applied{after}")
            finally:
                state.finish_run(run["id"], status, {"recovered_by": actor()})

    # -- an interrupted restore -----------------------------------------------------------
    def _recover_restore(self, run: dict[str, Any]) -> RecoveryResult:
        state = self.project.state
        entries = state.journal_entries(run["id"])
        intent = next((e for e in reversed(entries) if (e["step"], e["phase"]) == (Step.RESTORE, Phase.INTENT)), None)
        if intent is None:
            return self._close_untouched(run, f"{describe_run(run)} stopped before its restore began")
        store, backup = intent["store"], intent["detail"]["backup"]
        with self.runner.locked([store], run["id"], lock=True, outlive_dead=True) as (adapter,):
            self._claim(run)
            status = RunStatus.NEEDS_RECOVERY
            try:
                manifest = self.project.artifacts.verify(backup, decompress=False)
                # The safety backup of what was there before the restore began is the one to keep.
                kept = [p["id"] for p in state.rollback_points(store)
                        if p["run_id"] == run["id"] and p["reason"] == f"before restore of {backup}"]
                self.runner.emit(Progress.RESTORE, {"store": store, "backup": backup, "why": f"{describe_run(run)} stopped mid-restore"})
                report = self.runner.journaled_restore(adapter, manifest, run["id"], safety=not kept)
                if not report.verified:
                    raise MigrationFailedUnverified(
                        f"restored {backup} again but it does not verify: {'; '.join(report.mismatches)}",
                        hint=f"inspect {store}; 'polyshift backup list --store {store}' shows the rollback points")
                status = RunStatus.SUCCEEDED
                keep = f" (the safety backup {kept[0]} holds what was there before)" if kept else ""
                return RecoveryResult(run["id"], None, "finished",
                                      f"{describe_run(run)} stopped mid-restore: restored backup {backup} again, verified{keep}")
            finally:
                state.finish_run(run["id"], status, {"recovered_by": actor()})

    def recover_run(self, run: dict[str, Any], *, force_undo: bool = False) -> RecoveryResult:
        """Finish or undo one unfinished release run (``force_undo``: undo even where it could finish)."""
        state = self.project.state
        replay = self.replay(run["id"])
        if replay is None:
            if not state.claim_run(run):
                raise LockHeldError(f"{describe_run(run)} was taken over by another recover")
            state.finish_run(run["id"], RunStatus.RECOVERED, {"note": "no release was in progress"})
            state.audit("run.recovered", f"run:{run['id']}", {"action": "nothing", "command": run["command"]})
            return RecoveryResult(run["id"], None, "nothing", "no release was in progress; nothing was changed")
        flags = self.session.flags() if replay.flag else None
        # Locks first: a runner that is alive after all (another host) keeps them, and we stop here
        # without having touched its run. Only then claim the run, and re-read what it journaled.
        with self.runner.locked(replay.stores, run["id"], lock=True, outlive_dead=True) as adapters:
            if not state.claim_run(run):
                raise LockHeldError(f"{describe_run(run)} was taken over by another recover")
            replay = self.replay(run["id"]) or replay
            status = RunStatus.NEEDS_RECOVERY
            try:
                release, unreadable = self._release(replay)
                rr = ReleaseRun(self.runner, self.events, flags, release, {a.name: a for a in adapters}, run["id"], replay.steps)
                rr.changing = True
                died = f"{describe_run(run)} stopped after '{replay.last_entry}'"
                blocker = None if force_undo or not replay.may_finish else unreadable or self._finish_blocker(rr, replay)
                if replay.may_finish and not force_undo and blocker is None:
                    self.events.release(ReleaseEvent.RECOVERED, replay.version,
                                        {"run": run["id"], "action": "finish", "stopped_after": replay.last_entry})
                    rr.cutover(after=replay.last_stage_done, flag_version=rr.current_flag_version())
                    status = RunStatus.SUCCEEDED
                    return RecoveryResult(run["id"], replay.version, "finished",
                                          f"{died}; every store had forwarded and validated and the cutover had begun: "
                                          f"finished the cutover of {replay.version}")
                self.events.release(ReleaseEvent.RECOVERED, replay.version,
                                    {"run": run["id"], "action": "undo", "stopped_after": replay.last_entry})
                reason = "emergency rollback" if force_undo else blocker or "it had not reached the cutover"
                rr.undo(f"{died}; undoing release {replay.version} ({reason})", strict_data=run["command"] != RunCommand.EMERGENCY_ROLLBACK)
            except MigrationFailedRestored:
                status = RunStatus.ROLLED_BACK
                raise
            finally:
                state.finish_run(run["id"], status, {"recovered_by": actor()})

    def _finish_blocker(self, rr: ReleaseRun, replay: Replay) -> str | None:
        """Why a release that could be finished must be undone instead (None: finish it)."""
        if replay.flag:
            current = self.session.flags().store.get(replay.flag)
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
