"""One release through its phases: preflight → backup → forward → validate → cutover, and the undo.

Each step is journaled as ``intent`` before it happens and ``done``/``failed`` after, in the
control plane, so a runner that dies at any point leaves enough for ``polyshift recover`` to
finish the release or undo it (see ``polyshift.framework.engine.recovery``).

Expand/contract: forward steps only add the green shape while blue keeps serving; traffic moves
with the release flag, stage by stage, and only after every store validated. Any failure kills
the flag first (instant switch back to blue), then compensates the stores in reverse order.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NoReturn

from polyshift.feature_flags.admin import FlagAdmin, FlagChanged
from polyshift.feature_flags.settings import flag_settings, open_store
from polyshift.framework.control.journal import Journal
from polyshift.framework.control.state import actor
from polyshift.framework.core.errors import MigrationFailedRestored, MigrationFailedUnverified, PolyshiftError, StepFailed
from polyshift.framework.core.lifecycle import Action, Direction, Phase, Progress, ReleaseEvent, Step
from polyshift.framework.core.protocol import Adapter, ChecksInvariants, ReportsFigures
from polyshift.framework.core.status import is_applied
from polyshift.framework.engine.events import Events
from polyshift.framework.engine.gates import GateContext, evaluate_all
from polyshift.framework.engine.releases import Release
from polyshift.framework.engine.runner import Outcome
from polyshift.framework.engine.saga import StoreCompensation, StoreStep, StoreUndo

if TYPE_CHECKING:
    from polyshift.framework.engine.runner import Runner

FLAG_POLL_SECONDS = 0.25


class ReleaseAborted(Exception):
    """Internal: a phase failed; carries the cause (and the event to announce once the flag is
    killed) into the undo."""

    def __init__(self, cause: str, event: tuple[ReleaseEvent, dict[str, Any]] | None = None) -> None:
        super().__init__(cause)
        self.event = event


class ReleaseRun:
    """Drives one release while every store's lock is held. ``steps`` is given when resuming."""

    def __init__(self, runner: Runner, events: Events, flags: FlagAdmin | None, release: Release,
                 adapters: dict[str, Adapter], run_id: str, steps: list[StoreStep] | None = None) -> None:
        self.runner = runner
        self.events = events
        self.flags = flags
        self.release = release
        self.adapters = adapters
        self.run_id = run_id
        self.steps = steps or []
        self.changing = False        # True from the first backup until complete or undone
        self.flag_at_start: int | None = None  # the flag's version when the release began
        self.outcomes: list[Outcome] = []
        self.journal = Journal(runner.state, run_id, release.version)

    @property
    def version(self) -> str:
        return self.release.version

    # -- the whole run ----------------------------------------------------------------
    def run(self) -> list[Outcome]:
        s = self.release.settings
        self.events.release(ReleaseEvent.STARTED, self.version, {"stores": [m.store for m in self.release.ordered()], "flag": s.flag,
                                                      "stages": list(s.stages) if s.flag else [], "run": self.run_id})
        self.journal.write(Step.RELEASE, Phase.INTENT, stores=[m.store for m in self.release.ordered()], flag=s.flag,
                     stages=list(s.stages) if s.flag else [])
        self.snapshot()
        self.changing = True
        self.backup()
        try:
            self.forward()
            self.validate()
        except ReleaseAborted as exc:
            self.undo(str(exc), event=exc.event)
        self.cutover()
        return self.outcomes

    # -- phase 1b: what each store looks like now (preflight already locked and parsed) --
    def snapshot(self) -> None:
        flag = self.release.settings.flag
        if flag is not None and self.flags is not None:
            current = self.flags.store.get(flag)  # unreachable: StoreError, and nothing has changed yet
            self.flag_at_start = current.version if current else None
        for m in self.release.ordered():
            adapter = self.adapters[m.store]
            analysis = adapter.analyze(m, Direction.FORWARD)
            scope = self.runner.release_scope(adapter, m, analysis)
            step = StoreStep(m, scope, adapter.fingerprint(scope), bool(analysis.non_transactional), analysis.risk.value)
            step.known_problems = self.store_invariants(adapter)
            self.steps.append(step)
            self.journal.write(Step.SNAPSHOT, Phase.DONE, store=m.store, **step.snapshot_detail())

    # -- phase 2 ----------------------------------------------------------------------
    def backup(self) -> None:
        """Nothing has changed yet: a failure here is a clean refusal (exit 2), not an undo."""
        for step in self.steps:
            if not step.scope:
                continue
            m = step.migration
            try:
                with self.journal.step(Step.BACKUP, store=m.store, scope=list(step.scope)) as entry:
                    step.manifest = self.runner.take_backup(self.adapters[m.store], step.scope, version=m.version,
                                                            reason=f"before {m.id} up", run_id=self.run_id)
                    entry.done(backup=step.manifest.id)
            except PolyshiftError:
                self.journal.write(Step.RELEASE, Phase.ABANDONED, reason=f"backup of {m.store} failed; nothing was changed")
                self.changing = False
                raise

    # -- phase 3 ----------------------------------------------------------------------
    def forward(self) -> None:
        for step in self.steps:
            m = step.migration
            self.runner.emit(Progress.MIGRATION, {"store": m.store, "version": m.version, "slug": m.slug, "risk": step.risk,
                                           "scope": list(step.scope)})
            try:
                with self.journal.step(Step.FORWARD, store=m.store) as entry:
                    step.forward_begun = True
                    result = self.adapters[m.store].apply(m, Direction.FORWARD, run_id=self.run_id, actor=actor())
                    entry.done(duration_ms=result.duration_ms, non_transactional=result.non_transactional,
                               notices=list(result.notices))
            except PolyshiftError as exc:
                self.runner.state.audit("migration.failed", m.store, {"version": m.version, "step": "forward", "error": str(exc)})
                raise ReleaseAborted(str(exc) if isinstance(exc, StepFailed) else f"{m.store}/{m.id} forward failed: {exc}") from None
            step.forwarded = True
            self.runner.emit(Progress.APPLIED, {"store": m.store, "version": m.version, "duration_ms": result.duration_ms})
            self.runner.emit_notices(m, Direction.FORWARD, result.notices)
            self.outcomes.append(Outcome(m.store, m.version, m.slug, Action.APPLIED, step.risk, list(step.scope),
                                         step.manifest.id if step.manifest else None, result.duration_ms, result.non_transactional,
                                         notices=list(result.notices)))

    # -- phase 4 ----------------------------------------------------------------------
    def validate(self) -> None:
        for step in self.steps:
            m = step.migration
            adapter = self.adapters[m.store]
            with self.journal.step(Step.VALIDATE, store=m.store) as entry:
                try:
                    failures = adapter.validate(m)
                except PolyshiftError as exc:
                    failures = [f"could not run: {exc}"]
                figures = adapter.figures() if isinstance(adapter, ReportsFigures) else {}
                if figures:
                    self.runner.emit(Progress.FIGURES, {"store": m.store, "version": m.version, "figures": figures})
                if failures:
                    entry.fail(failures=failures, figures=figures)
                else:
                    entry.done(figures=figures)
            if failures:
                self.runner.state.audit("migration.failed", m.store, {"version": m.version, "step": "validate", "failures": failures})
                raise ReleaseAborted(f"{m.store}/{m.id} validation failed: " + "; ".join(failures))
            step.validated, step.figures = True, figures
        with self.journal.step(Step.INVARIANTS) as entry:
            problems = self.invariants()
            if problems:
                entry.fail(problems=problems)
        if problems:
            raise ReleaseAborted("store invariants failed: " + "; ".join(problems))
        for step in self.steps:
            m = step.migration
            self.runner.state.audit("migration.applied", m.store, {
                "version": m.version, "slug": m.slug, "checksum": m.checksum, "risk": step.risk,
                "backup": step.manifest.id if step.manifest else None, "run": self.run_id, "release": self.version,
                "figures": step.figures,
            })

    @staticmethod
    def store_invariants(adapter: Adapter) -> list[str]:
        return adapter.invariants() if isinstance(adapter, ChecksInvariants) else []

    def invariants(self) -> list[str]:
        """What must hold in every store after forward, whatever the migrations' own checks say;
        a problem the store already had before the release is not this release's to fail on."""
        problems = []
        for step in self.steps:
            adapter = self.adapters[step.store]
            try:
                if not is_applied(adapter, step.migration.version):
                    problems.append(f"{step.store}: the ledger does not record {step.migration.id} as applied")
                problems.extend(f"{step.store}: {p}" for p in self.store_invariants(adapter) if p not in step.known_problems)
            except PolyshiftError as exc:
                problems.append(f"{step.store}: {exc}")
        return problems

    # -- phase 5 ----------------------------------------------------------------------
    def cutover(self, *, after: float | None = None, flag_version: int | None = None) -> None:
        """Every stage is a compare-and-set on the flag version the release itself last wrote."""
        s = self.release.settings
        try:
            if after is None:
                flag_version = self.current_flag_version(refuse_new_kill=True)
                self.journal.write(Step.CUTOVER, Phase.INTENT, flag=s.flag, stages=list(s.stages) if s.flag else [],
                                   flag_version=flag_version)
            if s.flag:
                for percent in s.stages:
                    if after is None or percent > after:
                        flag_version = self.stage(percent, flag_version)
        except ReleaseAborted as exc:
            self.undo(str(exc), event=exc.event)
        self.journal.write(Step.COMPLETE, Phase.DONE)
        self.changing = False
        self.events.release(ReleaseEvent.COMPLETED, self.version, {"flag": s.flag, "run": self.run_id})

    def current_flag_version(self, *, refuse_new_kill: bool = False) -> int | None:
        """The flag version the cutover starts from. A kill made after this release began (an
        emergency rollback while stores were still moving forward) stops it; an older kill, from
        an earlier failed attempt of the release, is what the first stage replaces."""
        flag = self.release.settings.flag
        if flag is None or self.flags is None:
            return None
        try:
            current = self.flags.store.get(flag)
        except PolyshiftError as exc:
            raise ReleaseAborted(f"flag store unreachable before the cutover: {exc}") from None
        version = current.version if current else None
        if refuse_new_kill and current is not None and current.killed and version != self.flag_at_start:
            raise ReleaseAborted(f"flag {flag} was killed by {current.updated_by} during the release")
        return version

    def stage(self, percent: float, expected: int | None) -> int:
        """One stage: move the flag, bake, read the gates, check nobody changed the flag meanwhile.
        A failure is journaled as 'stage failed' before anything else, so recover undoes it."""
        s = self.release.settings
        assert s.flag is not None and self.flags is not None
        with self.journal.step(Step.STAGE, failing_on=ReleaseAborted, error_key="cause", percent=percent,
                               flag_version=expected) as entry:
            entry.end_with(percent=percent)
            try:
                flag = self.flags.stage(s.flag, percent, release=self.version, expected_version=expected)
            except FlagChanged as exc:
                raise ReleaseAborted(str(exc)) from None
            except PolyshiftError as exc:
                raise ReleaseAborted(f"could not move flag {s.flag} to {percent:g}%: {exc}") from None
            self.events.release(ReleaseEvent.STAGE_ADVANCED, self.version, {"flag": s.flag, "percent": percent})
            if s.bake_seconds:
                self.runner.emit(Progress.BAKE, {"percent": percent, "seconds": s.bake_seconds})
            self.watch(s.flag, flag.version, s.bake_seconds)
            results = evaluate_all(s.gates, GateContext(self.version, s.flag, percent, self.runner.project.config))
            self.runner.emit(Progress.GATES, {"percent": percent, "results": [r.to_json() for r in results]})
            self.watch(s.flag, flag.version, 0)  # a kill while the gates ran counts too
            failed = [r for r in results if not r.ok]
            if failed:
                detail = "; ".join(f"{r.gate}: {r.detail}" for r in failed)
                raise ReleaseAborted(f"health gate failed at {percent:g}%: {detail}",
                                     (ReleaseEvent.GATE_FAILED,
                                      {"flag": s.flag, "percent": percent, "gates": [r.to_json() for r in failed]}))
            entry.done(gates=[r.to_json() for r in results], flag_version=flag.version)
        return flag.version

    def watch(self, flag: str, version: int, seconds: float) -> None:
        """Wait at a stage; anyone else changing the flag meanwhile (a kill) aborts the release."""
        assert self.flags is not None
        deadline = time.monotonic() + seconds
        while True:
            try:
                current = self.flags.store.get(flag)
            except PolyshiftError as exc:
                raise ReleaseAborted(f"flag store unreachable during the bake: {exc}") from None
            if current is None or current.version != version:
                who = current.updated_by if current else "someone"
                what = "killed" if current and current.killed else "changed"
                raise ReleaseAborted(f"flag {flag} was {what} by {who} during the bake")
            if time.monotonic() >= deadline:
                return
            time.sleep(min(FLAG_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    # -- phase 6 ----------------------------------------------------------------------
    def kill_flag(self, reason: str) -> str | None:
        """Returns why the flag could not be killed, or None."""
        flag = self.release.settings.flag
        if flag is None or self.flags is None:
            return None
        try:
            with self.journal.step(Step.KILL, flag=flag) as entry:
                entry.end_with(flag=flag)
                current = self.flags.store.get(flag)
                if current is not None and not current.killed:
                    self.flags.kill(flag, release=self.version, reason=f"release {self.version}: {reason}"[:500])
                    self.events.release(ReleaseEvent.FLAG_KILLED, self.version, {"flag": flag})
        except PolyshiftError as exc:
            return f"flag {flag} could not be killed ({exc}); run: polyshift flags kill {flag} --reason undo"
        return None

    def undo(self, cause: str, *, strict_data: bool = True, event: tuple[ReleaseEvent, dict[str, Any]] | None = None) -> NoReturn:
        """Flag off, then every forwarded store compensated in reverse order. Always raises.

        The intent is journaled and the flag killed before any announcement: audit entries and the
        on_event hook take time that green traffic must not get."""
        self.journal.write(Step.UNDO, Phase.INTENT, cause=cause)
        flag_problem = self.kill_flag("undo")
        if event is not None:
            self.events.release(event[0], self.version, event[1])
        self.events.release(ReleaseEvent.ROLLBACK_INITIATED, self.version, {"cause": cause, "run": self.run_id})
        results: list[StoreUndo] = []
        for step in reversed(self.steps):
            if step.undone:
                results.append(StoreUndo(step.store, True, "verified back by the earlier undo (journal)"))
            elif step.forward_begun:
                results.append(StoreCompensation(self.runner, self.adapters[step.store], step, self.run_id,
                                                 strict_data=strict_data).run())
        for r in results:
            for warning in r.warnings:
                self.events.release(ReleaseEvent.INTEGRITY_WARNING, self.version, {"store": r.store, "warning": warning})
        verified = flag_problem is None and all(r.verified for r in results)
        self.journal.write(Step.UNDO, Phase.DONE if verified else Phase.FAILED, stores=[r.to_json() for r in results], flag=flag_problem)
        message = self.undo_message(cause, results, flag_problem)
        if verified:
            self.changing = False
            self.events.release(ReleaseEvent.ROLLED_BACK, self.version, {"stores": [r.store for r in results], "run": self.run_id})
            raise MigrationFailedRestored(message)
        failed = [r for r in results if not r.verified]
        self.events.release(ReleaseEvent.ROLLBACK_FAILED, self.version, {"stores": [r.store for r in failed], "flag": flag_problem})
        hints = [f"{r.store}: {r.hint}" for r in failed if r.hint] + ([flag_problem] if flag_problem else [])
        raise MigrationFailedUnverified(message, hint="; ".join(hints) or "run: polyshift recover")

    def undo_message(self, cause: str, results: list[StoreUndo], flag_problem: str | None) -> str:
        if len(self.release.migrations) == 1 and len(results) == 1 and not self.release.settings.flag:
            return f"{cause}; {results[0].how}"
        flag = self.release.settings.flag
        parts = [f"flag {flag} killed" if flag and not flag_problem else flag_problem or "no flag"]
        parts += [f"{r.store}: {r.how}" if r.verified else f"{r.store}: NOT VERIFIED: {r.how}" for r in results]
        return f"release {self.version}: {cause}; undone in reverse order: " + "; ".join(p for p in parts if p)


def open_flags(runner: Runner) -> FlagAdmin:
    return FlagAdmin(open_store(flag_settings(runner.project.config)), runner.state)
