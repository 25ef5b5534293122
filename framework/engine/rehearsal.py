"""``polyshift rehearse``: every pending release on rehearsal stores, forward, back and forward
again, each state compared with the one it must equal, before production sees the release.

Per release and per store it proves, in this order (``RehearsalCheck``): what ``up``'s preflight
checks would pass; a verified backup of the release scope; forward, validate, the store
invariants; the rollback step, leaving schema *and* data as they were before the release (the
first differing table, column, key, label or property named, with row counts); forward again,
ending where the first forward did (update-rollback-update); and the restore path: the release
backup restored onto the forwarded state verifies. It times every forward and rollback step and,
where the adapter times statements (PostgreSQL), each statement's locks and how long it held them.

Where it runs: never on a configured production store. Each store is a
``[rehearsal.stores.<name>]`` table (the loader refuses one at a production store's address) or
a fresh server from a ``RehearsalStores`` provider (the CLI's embedded servers), one set per
rehearsal. What data: the migrations' own history (default), a verified backup of the pending
releases' scopes read from production (``--from-production``), or an existing rollback point
(``--from-backup``). Production is only read: its PostgreSQL sessions are read-only at the
server, no lock is taken there and no ledger created.

A rehearsal keeps its own control plane and backups in a scratch directory: the project's control
plane never hears of it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from polyshift.adapters import adapter_for
from polyshift.framework.control.artifacts import Manifest
from polyshift.framework.control.localstore import LocalArtifactStore
from polyshift.framework.control.state import ControlPlane, actor
from polyshift.framework.core.config import StoreConfig
from polyshift.framework.core.errors import ChecksFailed, MigrationLoadError, PolyshiftError, RefusedError, UsageError
from polyshift.framework.core.kinds import Capability
from polyshift.framework.core.lifecycle import CheckStatus, DataSource, Direction, RehearsalCheck
from polyshift.framework.core.migration import Migration, version_key
from polyshift.framework.core.protocol import (
    Adapter,
    ChecksInvariants,
    Fingerprint,
    FollowsReferences,
    ReportsFigures,
    SamplesBackup,
    StatementTiming,
    TakesInventory,
    TimesStatements,
)
from polyshift.framework.core.status import applied_entries, is_applied, store_status
from polyshift.framework.engine import gates
from polyshift.framework.engine.project import Project
from polyshift.framework.engine.releases import Release, group, load_settings
from polyshift.framework.engine.runner import Runner

Emit = Callable[[str, dict[str, Any]], None]
RELEASE_WIDE = "*"  # the store column of a check that belongs to the whole release (its gates)


_DATA_WORDS = {
    DataSource.SCHEMA: "schema and rows from the migrations' own history alone (no production data)",
    DataSource.PRODUCTION: "a verified read-only backup of production's scope",
    DataSource.BACKUP: "an existing rollback point",
}


def _quiet(_kind: str, _data: dict[str, Any]) -> None:
    pass


# -- records ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckResult:
    release: str
    store: str
    check: RehearsalCheck
    status: CheckStatus
    detail: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "store": self.store, "check": self.check.value, "status": self.status.value,
                "detail": self.detail, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class StepTime:
    """One step in one store: its wall time and, where measured, each statement's locks; ``rows``
    are the scope's row counts just before the step (what a lock held on those tables stalls)."""

    release: str
    store: str
    step: RehearsalCheck
    seconds: float
    statements: tuple[StatementTiming, ...] = ()
    rows: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "store": self.store, "step": self.step.value, "seconds": round(self.seconds, 3),
                "rows": self.rows, "statements": [s.to_json() for s in self.statements]}


@dataclass
class RehearsalReport:
    source: DataSource
    data: str                                   # where the data came from, in plain words
    stores: dict[str, str]                      # store -> where it was rehearsed
    applied_first: list[str] = field(default_factory=list)   # releases applied plainly to build the history
    releases: list[str] = field(default_factory=list)        # releases rehearsed
    checks: list[CheckResult] = field(default_factory=list)
    steps: list[StepTime] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status is CheckStatus.FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "source": self.source.value, "data": self.data, "stores": self.stores,
                "applied_first": self.applied_first, "releases": self.releases, "checks": [c.to_json() for c in self.checks],
                "steps": [s.to_json() for s in self.steps], "notes": self.notes, "seconds": round(self.seconds, 3),
                "failed": [f"{c.release} {c.store} {c.check.value}" for c in self.failed]}


@dataclass(frozen=True)
class RehearsalOptions:
    source: DataSource = DataSource.SCHEMA
    backup_id: str | None = None        # with DataSource.BACKUP
    release: str | None = None          # only this release (every earlier one is applied plainly first)
    sample: int | None = None           # with DataSource.PRODUCTION: at most this many rows (keys) per table (pattern)
    gate_url: str | None = None         # run the gates, http ones against this URL; None: gates skipped


class RehearsalStores(Protocol):
    """Fresh stores for one rehearsal (the CLI's embedded servers)."""

    def provide(self, store: StoreConfig) -> tuple[StoreConfig, str]:
        """A new, empty store of ``store``'s kind, under its name, and words saying where it runs."""

    def close(self) -> None:
        """Stop and remove everything provided."""


# -- states and how they differ -----------------------------------------------------------------
@dataclass(frozen=True)
class State:
    """A store's scope at one moment: its fingerprint (what equality means) and, where the adapter
    takes one, an inventory (what names a difference)."""

    fingerprint: Fingerprint
    inventory: dict[str, str]

    @property
    def rows(self) -> dict[str, int]:
        return dict(self.fingerprint.counts)


def capture(adapter: Adapter, scope: tuple[str, ...]) -> State:
    inventory = adapter.inventory(scope) if isinstance(adapter, TakesInventory) else {}
    return State(adapter.fingerprint(scope), inventory)


def differences(before: State, after: State, *, then: str, now: str) -> list[str]:
    """What ``after`` changed, schema and data, each difference named; empty when equal. Inventory
    entries first (the shape: a table, a column, a key, a property), then each scoped item whose
    content differs, with its row counts."""
    if not before.fingerprint.differences(after.fingerprint, data=True, since=then):
        return []
    named = []
    for entry in dict.fromkeys([*before.inventory, *after.inventory]):
        was, is_now = before.inventory.get(entry), after.inventory.get(entry)
        if was != is_now:
            named.append(f"{entry}: {was or 'absent'} {then}, {is_now or 'absent'} {now}")
    for item, was_item in before.fingerprint.items.items():
        now_item = after.fingerprint.items.get(item)
        if now_item is None or now_item.get("missing"):
            if not was_item.get("missing"):
                named.append(f"{item}: {was_item.get('rows', 0)} rows {then}, gone {now}")
        elif now_item.get("data") != was_item.get("data") or now_item.get("schema") != was_item.get("schema"):
            rows_then, rows_now = was_item.get("rows", 0), now_item.get("rows", 0)
            same = " (same count, different content)" if rows_then == rows_now else ""
            named.append(f"{item}: {rows_then} rows {then}, {rows_now} {now}{same}")
    return named or before.fingerprint.differences(after.fingerprint, data=True, since=then)


def summary(problems: list[str], shown: int = 3) -> str:
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def read_only(store: StoreConfig) -> StoreConfig:
    """The store as a rehearsal reads production: PostgreSQL sessions the server keeps read-only,
    so a write by mistake fails there instead of landing."""
    if not store.spec.can(Capability.SQL):
        return store
    separator = "&" if "?" in store.url else "?"
    return replace(store, url=f"{store.url}{separator}options=-c%20default_transaction_read_only%3Don")


def _canonical(table: str, scope: tuple[str, ...]) -> str:
    """A table as a statement names it (``orders``) under its scope name (``public.orders``), so
    its lock reads beside its row count."""
    bare = table.rsplit(".", 1)[-1].strip('"')
    return next((name for name in scope if name == table or name.rsplit(".", 1)[-1].strip('"') == bare), table)


# -- one release ----------------------------------------------------------------------------------
@dataclass
class _Part:
    """One store's migration within the release under rehearsal."""

    migration: Migration
    adapter: Adapter
    scope: tuple[str, ...] = ()          # what existed before and the release may change: backed up
    wide: tuple[str, ...] = ()           # and what the forward created: compared after each forward
    before: State | None = None
    forwarded: State | None = None
    manifest: Manifest | None = None
    known_problems: list[str] = field(default_factory=list)
    applied: bool = False                # the release's forward is what the store holds now
    rolled_back: bool = False

    @property
    def store(self) -> str:
        return self.migration.store


class ReleaseRehearsal:
    def __init__(self, runner: Runner, release: Release, adapters: dict[str, Adapter], report: RehearsalReport,
                 options: RehearsalOptions, run_id: str, *, more_follow: bool, emit: Emit) -> None:
        self.runner = runner
        self.release = release
        self.report = report
        self.options = options
        self.run_id = run_id
        self.more_follow = more_follow
        self.emit = emit
        self.parts = [_Part(m, adapters[m.store]) for m in release.ordered()]

    @property
    def version(self) -> str:
        return self.release.version

    def _record(self, store: str, check: RehearsalCheck, status: CheckStatus, detail: str = "", seconds: float = 0.0) -> None:
        result = CheckResult(self.version, store, check, status, detail, seconds)
        self.report.checks.append(result)
        self.emit("rehearsal.check", result.to_json())

    def _skip_rest(self, after: RehearsalCheck, why: str, parts: list[_Part] | None = None) -> None:
        """Every check after ``after`` that has no result yet, skipped with the reason."""
        order = list(RehearsalCheck)
        for part in parts if parts is not None else self.parts:
            done = {c.check for c in self.report.checks if c.release == self.version and c.store == part.store}
            for check in order[order.index(after):]:
                if check not in done and self._applies(check):
                    self._record(part.store, check, CheckStatus.SKIPPED, why)

    def _applies(self, check: RehearsalCheck) -> bool:
        if check is RehearsalCheck.GATES:
            return False  # release-wide: recorded once, by gates()
        return check is not RehearsalCheck.FORWARD_AFTER_RESTORE or self.more_follow

    @contextmanager
    def _timed(self, part: _Part, step: RehearsalCheck, rows: dict[str, int]) -> Iterator[None]:
        measuring: AbstractContextManager[list[StatementTiming]] = (
            part.adapter.timing() if isinstance(part.adapter, TimesStatements) else nullcontext([]))
        started = time.monotonic()
        with measuring as statements:
            yield
        named = tuple(replace(t, locks={_canonical(table, part.scope): lock for table, lock in t.locks.items()}) for t in statements)
        self.report.steps.append(StepTime(self.version, part.store, step, time.monotonic() - started, named, rows))

    def _apply(self, part: _Part, direction: Direction, step: RehearsalCheck) -> str | None:
        """Runs one step, timed; returns why it failed, or None."""
        rows = part.before.rows if part.before else {}
        try:
            with self._timed(part, step, rows):
                part.adapter.apply(part.migration, direction, run_id=self.run_id, actor=actor())
        except PolyshiftError as exc:
            return str(exc)
        return None

    # -- the whole sequence ---------------------------------------------------------------------
    def run(self) -> bool:
        """True when every check held; the stores end with the release applied when ``more_follow``."""
        self.emit("rehearsal.release", {"release": self.version, "stores": [p.store for p in self.parts]})
        if not self.preflight():
            self._skip_rest(RehearsalCheck.PREFLIGHT, "preflight failed")
            return False
        self.snapshot()
        self.backup()
        if not self.forward(RehearsalCheck.FORWARD):
            return False
        self.validate()
        self.gates()
        for part in self.parts:
            part.wide = self._wide_scope(part)
            part.forwarded = capture(part.adapter, part.wide)
        self.rollback()
        self.forward_again()
        self.restore()
        if self.more_follow and not self._failed():
            self.forward_after_restore()
        return not self._failed()

    def _failed(self) -> bool:
        return any(c.release == self.version and c.status is CheckStatus.FAILED for c in self.report.checks)

    # -- preflight, snapshot, backup --------------------------------------------------------------
    def preflight(self) -> bool:
        """What ``up`` refuses before changing anything (an unproven or uninferable scope), per store."""
        ok = True
        for part in self.parts:
            m = part.migration
            try:
                analysis = part.adapter.analyze(m, Direction.FORWARD)
                part.scope = self.runner.release_scope(part.adapter, m, analysis)
            except (RefusedError, MigrationLoadError) as exc:
                self._record(part.store, RehearsalCheck.PREFLIGHT, CheckStatus.FAILED, str(exc))
                ok = False
                continue
            detail = f"scope: {', '.join(part.scope) or 'nothing existing'}; risk {analysis.risk.value}"
            if m.irreversible:
                detail += "; irreversible: up needs --allow-irreversible"
            self._record(part.store, RehearsalCheck.PREFLIGHT, CheckStatus.PASSED, detail)
        return ok

    def snapshot(self) -> None:
        for part in self.parts:
            part.before = capture(part.adapter, part.scope)
            part.known_problems = part.adapter.invariants() if isinstance(part.adapter, ChecksInvariants) else []

    def backup(self) -> None:
        for part in self.parts:
            if not part.scope:
                self._record(part.store, RehearsalCheck.BACKUP, CheckStatus.SKIPPED,
                             "nothing existing to back up: the release only adds")
                continue
            started = time.monotonic()
            try:
                with self._timed(part, RehearsalCheck.BACKUP, part.before.rows if part.before else {}):
                    part.manifest = self.runner.take_backup(part.adapter, part.scope, version=self.version,
                                                            reason=f"before {part.migration.id} up", run_id=None)
            except PolyshiftError as exc:
                self._record(part.store, RehearsalCheck.BACKUP, CheckStatus.FAILED, str(exc), time.monotonic() - started)
                continue
            self._record(part.store, RehearsalCheck.BACKUP, CheckStatus.PASSED,
                         f"{part.manifest.id}: {', '.join(part.manifest.scope)}, {part.manifest.size:,} bytes",
                         time.monotonic() - started)

    # -- forward, validate, invariants, gates --------------------------------------------------
    def forward(self, check: RehearsalCheck, parts: list[_Part] | None = None) -> bool:
        """Forward in release order; a failure stops the release's rehearsal (what follows would
        rehearse a state production never reaches)."""
        for part in parts if parts is not None else self.parts:
            started = time.monotonic()
            error = self._apply(part, Direction.FORWARD, check)
            if error is not None:
                self._record(part.store, check, CheckStatus.FAILED, error, time.monotonic() - started)
                self._skip_rest(check, f"{part.store} {check.value} failed")
                return False
            part.applied = True
            self._record(part.store, check, CheckStatus.PASSED, "", time.monotonic() - started)
        return True

    def validate(self) -> None:
        for part in self.parts:
            started = time.monotonic()
            try:
                failures = part.adapter.validate(part.migration)
            except PolyshiftError as exc:
                failures = [f"could not run: {exc}"]
            figures = part.adapter.figures() if isinstance(part.adapter, ReportsFigures) else {}
            detail = "; ".join(failures) if failures else ", ".join(f"{k} = {v:g}" for k, v in figures.items())
            status = CheckStatus.FAILED if failures else CheckStatus.PASSED
            if part.migration.validate is None and not failures:
                detail = "the migration has no validate step"
            self._record(part.store, RehearsalCheck.VALIDATE, status, detail, time.monotonic() - started)
        for part in self.parts:
            problems = []
            try:
                if not is_applied(part.adapter, part.migration.version):
                    problems.append(f"the ledger does not record {part.migration.id} as applied")
                now = part.adapter.invariants() if isinstance(part.adapter, ChecksInvariants) else []
                problems += [p for p in now if p not in part.known_problems]
            except PolyshiftError as exc:
                problems.append(str(exc))
            self._record(part.store, RehearsalCheck.INVARIANTS, CheckStatus.FAILED if problems else CheckStatus.PASSED,
                         "; ".join(problems))

    def gates(self) -> None:
        s = self.release.settings
        if not s.gates:
            return
        if self.options.gate_url is None:
            self._record(RELEASE_WIDE, RehearsalCheck.GATES, CheckStatus.SKIPPED,
                         f"{len(s.gates)} gate(s) not run (pass --gate-url to run them against a rehearsal endpoint)")
            return
        pointed = tuple(replace(g, spec={**g.spec, "url": self.options.gate_url}) if g.kind == "http" else g for g in s.gates)
        started = time.monotonic()
        results = gates.evaluate_all(pointed, gates.GateContext(self.version, s.flag, 100.0, self.runner.project.config))
        failed = [r for r in results if not r.ok]
        detail = "; ".join(f"{r.gate}: {r.detail}" for r in (failed or results))
        self._record(RELEASE_WIDE, RehearsalCheck.GATES, CheckStatus.FAILED if failed else CheckStatus.PASSED, detail,
                     time.monotonic() - started)

    def _wide_scope(self, part: _Part) -> tuple[str, ...]:
        """The release scope and what the forward created that either step names (a table the
        forward made and filled is part of what the second forward must reproduce)."""
        names: list[str] = list(part.scope)
        for direction in (Direction.FORWARD, Direction.ROLLBACK):
            if direction is Direction.ROLLBACK and part.migration.rollback is None:
                continue
            try:
                names += part.adapter.analyze(part.migration, direction).scope
            except PolyshiftError:
                continue  # preflight read these already; a second reading is a refinement only
            names += part.migration.declared_scope or ()
        return tuple(dict.fromkeys(part.scope + part.adapter.resolve_scope(tuple(names), missing_ok=True)))

    # -- rollback, forward again ---------------------------------------------------------------
    def rollback(self) -> None:
        for part in reversed(self.parts):
            if part.migration.rollback is None:
                why = "irreversible (no rollback step): the backup is its only undo"
                self._record(part.store, RehearsalCheck.ROLLBACK, CheckStatus.SKIPPED, why)
                self._record(part.store, RehearsalCheck.ROLLBACK_RESTORES, CheckStatus.SKIPPED, why)
                continue
            started = time.monotonic()
            error = self._apply(part, Direction.ROLLBACK, RehearsalCheck.ROLLBACK)
            if error is not None:
                self._record(part.store, RehearsalCheck.ROLLBACK, CheckStatus.FAILED, error, time.monotonic() - started)
                self._record(part.store, RehearsalCheck.ROLLBACK_RESTORES, CheckStatus.SKIPPED, "the rollback step failed")
                continue
            part.applied, part.rolled_back = False, True
            self._record(part.store, RehearsalCheck.ROLLBACK, CheckStatus.PASSED, "", time.monotonic() - started)
        for part in self.parts:
            if not part.rolled_back or part.before is None:
                continue
            after = capture(part.adapter, part.scope)
            problems = differences(part.before, after, then="before the release", now="after the rollback")
            self._record(part.store, RehearsalCheck.ROLLBACK_RESTORES, CheckStatus.FAILED if problems else CheckStatus.PASSED,
                         summary(problems) if problems else "schema and data as before the release")

    def forward_again(self) -> None:
        ready = [p for p in self.parts if p.rolled_back]
        for part in self.parts:
            if not part.rolled_back:
                why = "the rollback step did not run" if part.migration.rollback is None else "the rollback step failed"
                self._record(part.store, RehearsalCheck.FORWARD_AGAIN, CheckStatus.SKIPPED, why)
                self._record(part.store, RehearsalCheck.IDEMPOTENT, CheckStatus.SKIPPED, why)
        for part in ready:
            started = time.monotonic()
            error = self._apply(part, Direction.FORWARD, RehearsalCheck.FORWARD_AGAIN)
            if error is not None:
                self._record(part.store, RehearsalCheck.FORWARD_AGAIN, CheckStatus.FAILED, error, time.monotonic() - started)
                self._record(part.store, RehearsalCheck.IDEMPOTENT, CheckStatus.SKIPPED, "forward again failed")
                continue
            part.applied = True
            self._record(part.store, RehearsalCheck.FORWARD_AGAIN, CheckStatus.PASSED, "", time.monotonic() - started)
            assert part.forwarded is not None
            problems = differences(part.forwarded, capture(part.adapter, part.wide), then="after the first forward",
                                   now="after forward, rollback, forward")
            self._record(part.store, RehearsalCheck.IDEMPOTENT, CheckStatus.FAILED if problems else CheckStatus.PASSED,
                         summary(problems) if problems else "the same schema and data as the first forward")

    # -- the restore path ----------------------------------------------------------------------
    def restore(self) -> None:
        """What the undo falls back on when a rollback step fails: the release backup, restored onto
        the forwarded state, must verify and bring back what the store was before the release."""
        for part in reversed(self.parts):
            if part.manifest is None or part.before is None:
                why = ("no backup: nothing existed before the release for it to change" if not part.scope
                       else "the backup failed")
                self._record(part.store, RehearsalCheck.RESTORE, CheckStatus.SKIPPED, why)
                continue
            started = time.monotonic()
            try:
                with self._timed(part, RehearsalCheck.RESTORE, {}):
                    report = self.runner.restore_into(part.adapter, part.manifest, None, safety=False)
                if part.applied:
                    part.adapter.record_reverted(part.migration, run_id=self.run_id, actor=actor())
                    part.applied = False
                after = capture(part.adapter, part.scope)
            except PolyshiftError as exc:
                self._record(part.store, RehearsalCheck.RESTORE, CheckStatus.FAILED, str(exc), time.monotonic() - started)
                continue
            problems = list(report.mismatches) + differences(part.before, after, then="before the release",
                                                             now="after the restore")
            detail = summary(problems) if problems else f"backup {part.manifest.id} verified, schema and data as before the release"
            self._record(part.store, RehearsalCheck.RESTORE, CheckStatus.FAILED if problems or not report.verified
                         else CheckStatus.PASSED, detail, time.monotonic() - started)

    def forward_after_restore(self) -> None:
        """The release again where the restore took it back, so the next release builds on it."""
        restored = [p for p in self.parts if not p.applied]
        for part in self.parts:
            if part.applied:
                self._record(part.store, RehearsalCheck.FORWARD_AFTER_RESTORE, CheckStatus.SKIPPED,
                             "not restored: the release is still applied")
        self.forward(RehearsalCheck.FORWARD_AFTER_RESTORE, restored)


# -- the whole rehearsal --------------------------------------------------------------------------
class Rehearsal:
    """One rehearsal of the project's pending releases; ``fresh`` starts the stores that have no
    ``[rehearsal.stores.<name>]`` table (None: every store needs one)."""

    def __init__(self, project: Project, fresh: RehearsalStores | None, options: RehearsalOptions, scratch: Path,
                 emit: Emit | None = None) -> None:
        self.project = project
        self.config = project.config
        self.fresh = fresh
        self.options = options
        self.scratch = scratch
        self.emit = emit or _quiet
        self.run_id = f"rehearsal-{uuid.uuid4().hex[:12]}"
        self._scratch_plane: ControlPlane | None = None

    # -- input: everything knowable before any store is touched (exit 2, nothing changed) -------
    def check_input(self, every: list[Release]) -> Manifest | None:
        o = self.options
        if o.release is not None and not any(r.version == o.release for r in every):
            known = ", ".join(r.version for r in every) or "none"
            raise UsageError(f"--release {o.release}: no migration has that version (releases: {known})")
        if (o.source is DataSource.BACKUP) != (o.backup_id is not None):
            raise UsageError("--from-backup needs a backup id")
        if o.sample is not None and (o.source is not DataSource.PRODUCTION or o.sample < 1):
            raise UsageError("--sample N (N at least 1) samples the copy --from-production makes; use it with --from-production")
        missing = [name for name in self.config.stores if name not in self.config.rehearsal_stores]
        if missing and self.fresh is None:
            raise UsageError(f"no rehearsal store for {', '.join(missing)}: add [rehearsal.stores.<name>] tables")
        for rel in every:
            for m in rel.ordered():
                adapter_for(self.config.store(m.store)).parse(m)  # reads nothing from the store
            if o.gate_url is not None:
                for gate in rel.settings.gates:
                    gates.check(gate, rel.version, self.config)
        if o.gate_url is not None and not o.gate_url.startswith(("http://", "https://")):
            raise UsageError(f"--gate-url {o.gate_url}: must start with http:// or https://")
        if o.backup_id is None:
            return None
        manifest = self.project.artifacts.verify(o.backup_id)  # unknown id or corrupted files: exit 2 here
        self.config.store(manifest.store)
        return manifest

    def backup_precedes(self, manifest: Manifest, every: list[Release]) -> str:
        """The release whose data the backup holds: the one it was taken before (``before X up``),
        or the one --release names for any other backup."""
        taken_before = next((rel.version for rel in every for m in rel.ordered()
                             if m.store == manifest.store and manifest.reason == f"before {m.id} up"), None)
        given = self.options.release
        if taken_before is not None and given is not None and given != taken_before:
            raise UsageError(f"backup {manifest.id} holds {manifest.store} as it was before release {taken_before}; "
                             f"--release {given} does not follow it")
        if taken_before is None and given is None:
            raise UsageError(f"backup {manifest.id} was not taken before a release ({manifest.reason or 'no reason recorded'}); "
                             "name the release its data precedes with --release VERSION")
        return taken_before or str(given)

    # -- production, read only --------------------------------------------------------------
    def production_pending(self, every: list[Release]) -> tuple[set[str], dict[str, Adapter]]:
        """Versions not yet applied in production, from its ledgers; the connected read-only adapters."""
        adapters: dict[str, Adapter] = {}
        pending: set[str] = set()
        try:
            for name in self.config.stores:
                adapter = adapter_for(read_only(self.config.store(name)))
                adapters[name] = adapter
                adapter.connect()
                status = store_status(name, adapter.kind, self.project.migrations[name], adapter.ledger())
                Runner(self.project).check_status(status)
                pending |= set(status.pending)
        except BaseException:
            for adapter in adapters.values():
                adapter.close()
            raise
        return pending, adapters

    def copy_production(self, adapters: dict[str, Adapter], rehearse: list[Release], runner: Runner) -> dict[str, list[Manifest]]:
        """A verified backup, into the scratch directory, of what the rehearsed releases may change in
        each production store, and of what its foreign keys lead to; with ``sample``, of the first
        rows (keys) of each table (pattern) of the scope, the tables it refers to whole, so that
        the sampled rows find what they reference."""
        copies: dict[str, list[Manifest]] = {}
        sample = self.options.sample
        for name, adapter in adapters.items():
            names: list[str] = []
            for rel in rehearse:
                m = rel.migrations.get(name)
                if m is None:
                    continue
                for direction in (Direction.FORWARD, Direction.ROLLBACK):
                    if direction is Direction.ROLLBACK and m.rollback is None:
                        continue
                    names += adapter.analyze(m, direction).scope
                names += [*(m.declared_scope or ()), *(m.rollback_scope or ())]
            scope = adapter.resolve_scope(tuple(dict.fromkeys(names)), missing_ok=True)
            referenced = adapter.referenced(scope) if scope and isinstance(adapter, FollowsReferences) else ()
            if sample is not None and isinstance(adapter, SamplesBackup):
                parts = [(referenced, None), (scope, sample)]
            else:
                parts = [(scope + referenced, None)]
            copies[name] = [runner.take_backup(adapter, part, version=None, reason="rehearsal copy of production",
                                               run_id=None, sample=limit) for part, limit in parts if part]
        return copies

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> RehearsalReport:
        started = time.monotonic()
        every = group(self.config, self.project.migrations, load_settings(self.config))
        backup = self.check_input(every)
        self.scratch.mkdir(parents=True, exist_ok=True)
        plane = self._scratch_plane = ControlPlane(f"sqlite:///{self.scratch / 'state.db'}")
        artifacts = LocalArtifactStore(self.scratch / "backups", plane)
        provisional = Runner(Project(self.config, plane, artifacts, self.project.progress))
        copies: dict[str, list[Manifest]] = {}
        precedes = self.backup_precedes(backup, every) if backup is not None else None
        production_pending: set[str] | None = None
        if self.options.source is DataSource.PRODUCTION:
            production_pending, production = self.production_pending(every)
            try:
                rehearse = self._choose(every, production_pending, None)
                copies = self.copy_production(production, rehearse, provisional)
            finally:
                for adapter in production.values():
                    adapter.close()
        stores, where = self._open_stores()
        try:
            config = replace(self.config, stores=stores, rehearsal_stores={}, raw={},
                             state_url=f"sqlite:///{self.scratch / 'state.db'}", backups_dir=self.scratch / "backups",
                             on_event=None, events_log=self.scratch / "events.jsonl")
            project = Project(config, plane, artifacts, self.project.progress, self.project.migrations)
            report = RehearsalReport(self.options.source, _DATA_WORDS[self.options.source], where)
            self._rehearse(project, every, report, production_pending, precedes, copies, backup)
        finally:
            if self.fresh is not None:
                self.fresh.close()
            plane.close()
        report.seconds = time.monotonic() - started
        return report

    def _open_stores(self) -> tuple[dict[str, StoreConfig], dict[str, str]]:
        stores, where = {}, {}
        try:
            for name, production in self.config.stores.items():
                configured = self.config.rehearsal_stores.get(name)
                if configured is not None:
                    stores[name], where[name] = configured, f"{configured.kind} at {configured.display_url} ([rehearsal.stores.{name}])"
                else:
                    assert self.fresh is not None  # check_input refused otherwise
                    stores[name], where[name] = self.fresh.provide(production)
        except BaseException:
            if self.fresh is not None:
                self.fresh.close()
            raise
        return stores, where

    def _choose(self, every: list[Release], pending: set[str] | None, applied: dict[str, set[str]] | None) -> list[Release]:
        """The releases to rehearse, oldest first."""
        o = self.options
        if o.release is not None:
            chosen = [r for r in every if r.version == o.release]
            if pending is not None and o.release not in pending:
                raise UsageError(f"--release {o.release}: production has it applied already; nothing to rehearse",
                                 hint="rehearse a pending release, or leave out --from-production")
            return chosen
        if pending is not None:
            return [r for r in every if r.version in pending]
        if applied is not None:
            return [r for r in every if any(r.version not in applied[s] for s in r.migrations)]
        return every

    def _rehearse(self, project: Project, every: list[Release], report: RehearsalReport, production_pending: set[str] | None,
                  precedes: str | None, copies: dict[str, list[Manifest]], backup: Manifest | None) -> None:
        runner = Runner(project)
        names = list(project.config.stores)
        with runner.locked(names, self.run_id, lock=True) as connected:
            adapters = {a.name: a for a in connected}
            applied = {name: set(applied_entries(a.ledger())) for name, a in adapters.items()}
            if precedes is not None:
                rehearse = [r for r in every if version_key(r.version) >= version_key(precedes)]
                if self.options.release is not None:
                    rehearse = [r for r in rehearse if r.version == self.options.release]
            else:
                rehearse = self._choose(every, production_pending, applied)
            first = version_key(rehearse[0].version) if rehearse else None
            history = [r for r in every if first is not None and version_key(r.version) < first]
            self._refuse_applied(rehearse, applied)
            report.applied_first = [r.version for r in history]
            report.releases = [r.version for r in rehearse]
            if not self._apply_history(history, adapters, applied, report):
                return
            report.data = self._load_data(runner, adapters, copies, backup, report)
            for index, rel in enumerate(rehearse):
                more = index < len(rehearse) - 1
                ok = ReleaseRehearsal(runner, rel, adapters, report, self.options, self.run_id, more_follow=more,
                                      emit=self.emit).run()
                if not ok:
                    for later in rehearse[index + 1:]:
                        for m in later.ordered():
                            for check in RehearsalCheck:
                                if check is not RehearsalCheck.GATES:
                                    report.checks.append(CheckResult(later.version, m.store, check, CheckStatus.SKIPPED,
                                                                     f"not rehearsed: release {rel.version} failed before it"))
                    break

    @staticmethod
    def _refuse_applied(rehearse: list[Release], applied: dict[str, set[str]]) -> None:
        for rel in rehearse:
            there = [m.store for m in rel.ordered() if rel.version in applied[m.store]]
            if there:
                raise RefusedError(f"release {rel.version} is applied in the rehearsal store(s) {', '.join(there)} already",
                                   hint="roll it back there, or rehearse on fresh stores (remove the [rehearsal.stores] table)")

    def _apply_history(self, history: list[Release], adapters: dict[str, Adapter], applied: dict[str, set[str]],
                       report: RehearsalReport) -> bool:
        """The releases before the rehearsed ones, applied plainly (forward, ledger) where missing."""
        for rel in history:
            for m in rel.ordered():
                if m.version in applied[m.store]:
                    continue
                adapter = adapters[m.store]
                try:
                    adapter.ensure_ledger()
                    adapter.apply(m, Direction.FORWARD, run_id=self.run_id, actor=actor())
                except PolyshiftError as exc:
                    report.checks.append(CheckResult(rel.version, m.store, RehearsalCheck.FORWARD, CheckStatus.FAILED,
                                                     f"applying the history before the rehearsed releases failed: {exc}"))
                    return False
        for adapter in adapters.values():
            adapter.ensure_ledger()
        return True

    def _load_data(self, runner: Runner, adapters: dict[str, Adapter], copies: dict[str, list[Manifest]], backup: Manifest | None,
                   report: RehearsalReport) -> str:
        """Restores the production copies or the chosen backup into the rehearsal stores; returns
        what data the rehearsal runs on, in plain words."""
        source = self.options.source
        if source is DataSource.SCHEMA:
            return _DATA_WORDS[source]
        loaded = copies if source is DataSource.PRODUCTION else {backup.store: [backup]} if backup is not None else {}
        if source is DataSource.BACKUP:
            # The rollback point lives in the project's backups (verified when the input was read);
            # restoring it there records nothing in the project's control plane.
            runner = Runner(replace(runner.project, artifacts=self.project.artifacts))
        parts = []
        for name, manifests in loaded.items():
            for manifest in manifests:
                restored = runner.restore_into(adapters[name], manifest, None, verified=source is DataSource.BACKUP, safety=False)
                if not restored.verified and self.project.config.store(name).spec.can(Capability.WHOLE_SCOPE_COPY):
                    # A rehearsal on data other than what it claims proves nothing about production.
                    raise ChecksFailed(f"{name}: the copy of {manifest.id} does not verify on the rehearsal store: "
                                       + "; ".join(restored.mismatches))
                if not restored.verified:
                    # A graph scope is copied without the nodes outside it, so relationships that
                    # leave the scope cannot be recreated on a fresh store: said, not hidden.
                    report.notes.append(f"{name}: the copy of {manifest.id} is partial on the rehearsal store: "
                                        + "; ".join(restored.mismatches))
                rows = sum(restored.items.values())
                sampled = f", a sample of at most {manifest.meta['sample']:,} per table" if manifest.meta.get("sample") else ""
                parts.append(f"{name}: {', '.join(manifest.scope)} ({rows:,} rows/keys/nodes{sampled}, backup {manifest.id})")
        others = [n for n in adapters if n not in loaded]
        what = _DATA_WORDS[source] + ": "
        rest = f"; {', '.join(others)}: the migrations' own history alone" if others else ""
        return what + ("; ".join(parts) or "the rehearsed releases change nothing existing") + rest
