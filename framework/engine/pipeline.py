"""`polyshift up`: every pending release in version order, under one set of locks.

Preflight (nothing changes if any of it fails, exit 2): no unfinished run left behind, every
migration loaded and free of drift, every target store connected and locked (all or none),
every script parsed, the release flags reachable, and free disk for the backups.
"""

from __future__ import annotations

import shutil

from polyshift.framework.adopt.history import refuse_unadopted
from polyshift.framework.control.runs import refuse_unfinished
from polyshift.framework.core.errors import (
    BackupError,
    MigrationFailedRestored,
    MigrationFailedUnverified,
    PolyshiftError,
    RefusedError,
    UsageError,
)
from polyshift.framework.core.lifecycle import Action, Direction, Phase, Progress, RunCommand, RunStatus, Step
from polyshift.framework.core.migration import version_key
from polyshift.framework.core.protocol import Adapter, Analysis, EstimatesBackup
from polyshift.framework.engine import gates
from polyshift.framework.engine.bluegreen import ReleaseRun
from polyshift.framework.engine.releases import Release
from polyshift.framework.engine.runner import Outcome
from polyshift.framework.engine.session import Session

DISK_HEADROOM = 64 * 1024 * 1024


class Pipeline:
    """``polyshift up`` within a session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.project = session.project
        self.runner = session.runner
        self.events = session.events

    # -- up ---------------------------------------------------------------------------
    def up(self, *, store: str | None = None, to: str | None = None, release: str | None = None,
           dry_run: bool = False, allow_irreversible: bool = False, allow_lock_hazard: bool = False) -> list[Outcome]:
        names = self.runner.stores(store)
        if to is not None and release is not None:
            raise UsageError("use either --to or --release, not both")
        every = self.session.releases()
        for option, value in (("--to", to), ("--release", release)):
            if value is not None and not any(r.version == value for r in every):
                raise UsageError(f"{option} {value}: no migration has that version")
        if not dry_run:
            refuse_unfinished(self.project.state, then="polyshift up")
        run_id = self.project.state.start_run(RunCommand.UP, {"stores": names, "to": to, "release": release, "dry_run": dry_run})
        outcomes: list[Outcome] = []
        current: ReleaseRun | None = None
        status = RunStatus.FAILED
        try:
            with self.runner.locked(names, run_id, lock=not dry_run) as adapters:
                by_name = {a.name: a for a in adapters}
                pending = self.pending(every, by_name, to, release)
                analyses = self.preflight(pending, by_name, allow_irreversible, dry_run=dry_run,
                                          allow_lock_hazard=allow_lock_hazard)
                if dry_run:
                    return self.would_apply(pending, analyses)
                self.check_disk(pending, by_name, analyses)
                # The first change to any store, and only once every check above has passed.
                for name in dict.fromkeys(m.store for rel in pending for m in rel.ordered()):
                    by_name[name].ensure_ledger()
                self.project.state.journal(run_id, Step.PREFLIGHT, Phase.DONE, detail={"releases": [r.version for r in pending]})
                flags = self.session.flags() if any(r.settings.flag for r in pending) else None
                for rel in pending:
                    current = ReleaseRun(self.runner, self.events, flags, rel, by_name, run_id)
                    outcomes += current.run()
            status = RunStatus.SUCCEEDED
            return outcomes
        except MigrationFailedRestored:
            status = RunStatus.ROLLED_BACK
            raise
        except MigrationFailedUnverified:
            status = RunStatus.NEEDS_RECOVERY
            raise
        except PolyshiftError as exc:
            done = [o.version for o in outcomes if current is None or o.version != current.version]
            if current is not None and current.changing:
                # Not the "nothing changed" exit 2: a release is part-way and only recover may go on.
                status = RunStatus.NEEDS_RECOVERY
                raise MigrationFailedUnverified(f"release {current.version} stopped part-way: {exc}",
                                                hint="run: polyshift recover") from None
            if done:
                exc.message = f"{exc.message} (release(s) {', '.join(dict.fromkeys(done))} completed before this)"
            raise
        except BaseException:
            # Anything unforeseen after a release began changing stores: only recover may continue.
            status = RunStatus.NEEDS_RECOVERY if current is not None and current.changing else RunStatus.FAILED
            raise
        finally:
            self.project.state.finish_run(run_id, status, {"outcomes": [o.to_json() for o in outcomes]})

    def pending(self, every: list[Release], adapters: dict[str, Adapter], to: str | None, only: str | None) -> list[Release]:
        """Releases with at least one unapplied migration among the locked stores, oldest first.
        Reads the ledgers without creating them: nothing changes before preflight has passed."""
        todo: dict[str, set[str]] = {}
        for name, adapter in adapters.items():
            status = self.runner.status(adapter)
            self.runner.check_status(status)
            refuse_unadopted(adapter, status)
            for m in self.runner.targets(status, to):
                todo.setdefault(m.version, set()).add(name)
        releases = []
        for rel in every:
            stores = todo.get(rel.version)
            if not stores:
                continue
            outside = sorted(set(rel.migrations) - set(adapters))
            if outside:
                # A release lands everywhere or nowhere: never half of it behind a flag.
                raise RefusedError(f"release {rel.version} also changes {', '.join(outside)}; it runs whole",
                                   hint=f"polyshift up --release {rel.version}")
            releases.append(Release(rel.version, rel.settings, {s: m for s, m in rel.migrations.items() if s in stores}, rel.order))
        if only is not None:
            earlier = [r.version for r in releases if version_key(r.version) < version_key(only)]
            if earlier:
                raise RefusedError(f"--release {only}: release(s) {', '.join(earlier)} are still pending before it",
                                   hint=f"apply them first, or all at once: polyshift up --to {only}")
            releases = [r for r in releases if r.version == only]
        return releases

    def preflight(self, pending: list[Release], adapters: dict[str, Adapter], allow_irreversible: bool,
                  *, dry_run: bool, allow_lock_hazard: bool = False) -> dict[tuple[str, str], Analysis]:
        """Every script parsed (a syntax error stops us here) and every flag checked; returns the
        analyses by (store, version) for the dry run and the disk check."""
        self.parse_scripts(pending, adapters)
        analyses = {}
        for rel in pending:
            for m in rel.ordered():
                analyses[m.store, m.version] = adapters[m.store].analyze(m, Direction.FORWARD)
                self.runner.refuse_irreversible(m, allow_irreversible)
                self.runner.refuse_lock_hazards(m, analyses[m.store, m.version], allow_lock_hazard)
            for gate in rel.settings.gates:
                gates.check(gate, rel.version, self.project.config)
            flag = rel.settings.flag
            if flag is None or dry_run:
                continue
            current = self.session.flags().store.get(flag)  # unreachable flag store: StoreError, exit 2
            if current is not None and current.enabled and not current.killed and current.percent > 0 \
                    and current.release not in (None, rel.version):
                raise RefusedError(f"release {rel.version}: flag {flag} already serves {current.percent:g}% for release "
                                   f"{current.release}; each release needs a flag of its own")
        return analyses

    def parse_scripts(self, pending: list[Release], adapters: dict[str, Adapter]) -> None:
        """Forward, rollback and validate scripts alike: a rollback that does not parse would
        otherwise be found only by the undo that needs it, after the forward ran."""
        for rel in pending:
            for m in rel.ordered():
                adapters[m.store].parse(m)

    def would_apply(self, pending: list[Release], analyses: dict[tuple[str, str], Analysis]) -> list[Outcome]:
        outcomes = []
        for rel in pending:
            s = rel.settings
            self.runner.emit(Progress.WOULD_RELEASE, {"release": rel.version, "stores": [m.store for m in rel.ordered()], "flag": s.flag,
                                               "stages": list(s.stages) if s.flag else [], "bake_seconds": s.bake_seconds,
                                               "gates": [g.describe() for g in s.gates]})
            for m in rel.ordered():
                a = analyses[m.store, m.version]
                outcomes.append(Outcome(m.store, m.version, m.slug, Action.WOULD_APPLY, a.risk.value, list(a.scope)))
        return outcomes

    def check_disk(self, pending: list[Release], adapters: dict[str, Adapter], analyses: dict[tuple[str, str], Analysis]) -> None:
        """Refuse before anything changes when the backups could not fit (estimates are the stores' own sizes)."""
        needed = DISK_HEADROOM
        for rel in pending:
            for m in rel.ordered():
                adapter = adapters[m.store]
                if isinstance(adapter, EstimatesBackup):
                    scope = adapter.resolve_scope(analyses[m.store, m.version].scope, missing_ok=True)
                    needed += adapter.estimate_backup_bytes(scope)
        directory = self.project.config.backups_dir
        self.project.artifacts.check_usable()  # a file in its place, or no write permission: exit 2 here
        free = shutil.disk_usage(directory).free
        if free < needed:
            raise BackupError(f"backups need about {needed / 2**20:,.0f} MiB but {directory} has {free / 2**20:,.0f} MiB free",
                              hint="free space, or point [project] backups at a larger volume")
