"""``polyshift baseline``: record that a store already is at a version, without running anything.

The versions come from ``--to V`` (every migration on disk up to V), or from the other tool's
history table when one is there (the migrations imported from what it records as applied). The
ledger rows are written with the migrations' checksums, so drift after adoption is reported like
any other; the schema fingerprint at that moment and where the versions came from go to the
audit log. Only polyshift's own ledger is written: the application's tables and the other
tool's history stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from polyshift.framework.adopt import provenance
from polyshift.framework.adopt.history import ForeignHistory, read_histories
from polyshift.framework.adopt.model import Format, same_version
from polyshift.framework.control.runs import refuse_unfinished
from polyshift.framework.control.state import actor
from polyshift.framework.core.errors import RefusedError, UsageError
from polyshift.framework.core.lifecycle import RunCommand, RunStatus
from polyshift.framework.core.migration import Migration, version_key
from polyshift.framework.core.protocol import Adapter
from polyshift.framework.core.status import StoreStatus, applied_entries
from polyshift.framework.engine.runner import Runner


@runtime_checkable
class RecordsBaseline(Protocol):
    """An adapter that can write ledger rows saying migrations are applied without running them."""

    def record_baseline(self, migrations: list[Migration], *, run_id: str, actor: str) -> None:
        """One 'up' row per migration, with its checksum and no duration; all in one write where the store allows."""


@dataclass
class BaselinePlan:
    store: str
    migrations: list[Migration]
    source: str                       # "--to 0042" or the history it was read from
    history: ForeignHistory | None = None
    mismatched: list[str] = field(default_factory=list)   # checksums that differ from the other tool's record
    compared: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "versions": [m.version for m in self.migrations], "source": self.source,
                "checksums_compared": self.compared, "checksum_mismatches": self.mismatched, "notes": self.notes}


def _comment(m: Migration) -> str:
    return "//" if m.forward.path.suffix == ".cypher" else "--"


def _provenance(m: Migration) -> provenance.Provenance | None:
    return provenance.read(m.forward.script, _comment(m)) if m.forward.script is not None else None


def _same(fmt: Format, a: str, b: str) -> bool:
    if fmt in (Format.GOLANG_MIGRATE, Format.GOOSE):
        return int(a) == int(b)
    if fmt in (Format.FLYWAY, Format.NEO4J_MIGRATIONS):
        return same_version(a, b)
    return a == b


def from_history(store: str, migrations: list[Migration], history: ForeignHistory) -> BaselinePlan:
    """The migrations on disk the other tool's history says are applied, checked both ways."""
    if history.problems:
        raise RefusedError(f"store {store}: {history.describe()} is not in a clean state: " + "; ".join(history.problems))
    imported = [(m, p) for m in migrations if (p := _provenance(m)) is not None and p.format == history.format]
    if not imported:
        raise RefusedError(f"store {store}: {history.describe()} is there, but no migration in migrations/{store}/ was imported "
                           f"from {history.format.value}", hint=f"polyshift import --from {history.format.value} DIR --store {store}")
    plan = BaselinePlan(store, [], history.describe(), history, notes=list(history.notes))
    chosen: dict[str, Migration] = {}
    if history.upto is not None:
        # golang-migrate's one version, Alembic's head revision: it and every migration before it
        # (Alembic's down_revision chain is the imported version order) are applied.
        top = next((m for m, p in imported if _same(history.format, p.source_id, history.upto)), None)
        if top is None:
            raise RefusedError(f"store {store}: {history.format.value} is at {history.upto}, which no imported migration has",
                               hint="import the source directory the database was migrated from")
        for m, _ in imported:
            if m.version_key <= top.version_key:
                chosen[m.version] = m
    if history.baseline is not None:
        for m, p in imported:
            if _same(history.format, p.source_id, history.baseline) or \
                    version_key(p.source_id.replace("_", ".")) < version_key(history.baseline.replace("_", ".")):
                chosen[m.version] = m
        plan.notes.append(f"{history.format.value} was baselined at {history.baseline}: imported versions up to it count as applied")
    unknown = []
    taken: set[str] = set()
    for entry in history.applied:
        legacy = _pop_legacy(history.format, entry.source_id, imported)
        chosen.update((m.version, m) for m in legacy)  # not 'taken': popx also writes their full versions once it has seen them
        match = _match(history.format, entry.source_id, imported, taken)
        if match is None:
            if not legacy:
                unknown.append(entry.source_id)
            continue
        m, p = match
        taken.add(m.version)
        chosen[m.version] = m
        if entry.checksum is not None and p.source_checksum is not None:
            plan.compared += 1
            if entry.checksum != p.source_checksum:
                plan.mismatched.append(f"{m.id}: {history.format.value} recorded {entry.checksum}, the imported file "
                                       f"{p.source} has {p.source_checksum}")
    if unknown:
        raise RefusedError(f"store {store}: {history.describe()} records {', '.join(unknown)} as applied, but no migration "
                           f"in migrations/{store}/ was imported from it", hint="import the directory the database was migrated from")
    plan.migrations = sorted(chosen.values(), key=lambda m: m.version_key)
    return plan


def _pop_legacy(fmt: Format, source_id: str, imported: list[tuple[Migration, provenance.Provenance]]) -> list[Migration]:
    """pop once kept 14-digit versions; popx counts a longer version as applied when its first 14
    digits are recorded, so such a row stands for every imported version it begins."""
    if fmt is not Format.POP or len(source_id) != 14:
        return []
    return [m for m, p in imported if len(p.source_id) > 14 and p.source_id.startswith(source_id)]


def _match(fmt: Format, source_id: str, imported: list[tuple[Migration, provenance.Provenance]],
           taken: set[str]) -> tuple[Migration, provenance.Provenance] | None:
    for m, p in imported:
        if m.version in taken:
            continue
        ident = p.source_id.split("@")[0] if fmt is Format.SQITCH else p.source_id  # a reworked change: one name, several rows
        if _same(fmt, ident, source_id):
            return m, p
    return None


def up_to(store: str, migrations: list[Migration], to: str) -> BaselinePlan:
    if not any(m.version_key == version_key(to) for m in migrations):
        raise UsageError(f"--to {to}: no migration in migrations/{store}/ has that version")
    return BaselinePlan(store, [m for m in migrations if m.version_key <= version_key(to)], f"--to {to}")


def check_gaps(plan: BaselinePlan, migrations: list[Migration], status: StoreStatus) -> None:
    """Migrations on disk below the newest baselined one that would stay pending: up refuses to
    run them out of order, so a baseline that leaves them is refused here, naming them."""
    if not plan.migrations:
        return
    top = plan.migrations[-1].version_key
    chosen = {m.version for m in plan.migrations} | set(status.applied)
    gaps = [m.id for m in migrations if m.version_key < top and m.version not in chosen]
    if gaps:
        raise RefusedError(f"store {plan.store}: {', '.join(gaps)} would stay pending below {plan.migrations[-1].id}, "
                           f"which {plan.source} puts the store at",
                           hint="the other tool never applied them: apply them by hand first, or leave them out of the import")


class Baseline:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.project = runner.project

    def plan(self, adapter: Adapter, to: str | None, *, force: bool) -> BaselinePlan:
        migrations = self.project.migrations[adapter.name]
        status = self.runner.status(adapter)
        if status.applied and not force:
            raise RefusedError(f"store {adapter.name}: the ledger already records {len(status.applied)} applied migration(s) "
                               f"(current {status.current}); baseline is for a store polyshift has not run on",
                               hint="pass --force to record more versions as applied anyway")
        histories = [h for h in read_histories(adapter) if not h.empty]
        if to is not None:
            plan = up_to(adapter.name, migrations, to)
            for history in histories:
                expected = from_history(adapter.name, migrations, history)
                if [m.version for m in expected.migrations] != [m.version for m in plan.migrations]:
                    raise RefusedError(f"store {adapter.name}: --to {to} disagrees with {history.describe()}, which puts it at "
                                       f"{expected.migrations[-1].id if expected.migrations else 'nothing'}",
                                       hint="leave out --to to follow the history the database keeps")
                plan.history, plan.notes, plan.compared, plan.mismatched = history, expected.notes, expected.compared, expected.mismatched
        elif len(histories) > 1:
            raise RefusedError(f"store {adapter.name}: several histories are present ({'; '.join(h.describe() for h in histories)}); "
                               "say which version the store is at with --to")
        elif histories:
            plan = from_history(adapter.name, migrations, histories[0])
        else:
            raise UsageError(f"store {adapter.name}: no --to given and no other tool's history found (looked for "
                             "schema_migrations, goose_db_version, flyway_schema_history, sqitch.changes, databasechangelog, "
                             "alembic_version, schema_migration, "
                             ":__Neo4jMigration)", hint=f"polyshift baseline --store {adapter.name} --to VERSION")
        already = applied_entries(adapter.ledger())
        plan.migrations = [m for m in plan.migrations if m.version not in already]
        check_gaps(plan, migrations, status)
        return plan

    def run(self, store: str, to: str | None, *, force: bool = False, dry_run: bool = False,
            ignore_checksums: bool = False) -> BaselinePlan:
        if not dry_run:
            refuse_unfinished(self.project.state, then="polyshift baseline")
        self.project.config.store(store)
        run_id = self.project.state.start_run(RunCommand.BASELINE, {"stores": [store], "to": to, "dry_run": dry_run})
        status = RunStatus.FAILED
        try:
            with self.runner.adapter(store) as adapter:
                if not isinstance(adapter, RecordsBaseline):
                    raise UsageError(f"store {store}: a {adapter.kind} store cannot be baselined")
                if not dry_run:
                    adapter.acquire_lock(self.runner.holder(run_id), self.project.config.store(store).lock_wait)
                plan = self.plan(adapter, to, force=force)
                if plan.mismatched and not ignore_checksums:
                    raise RefusedError(f"store {store}: {len(plan.mismatched)} imported file(s) differ from what "
                                       f"{plan.history.format.value if plan.history else 'the other tool'} applied:\n  "
                                       + "\n  ".join(plan.mismatched),
                                       hint="restore the files as they were applied, or pass --ignore-checksums to accept them")
                if not plan.migrations:
                    raise UsageError(f"store {store}: nothing to baseline; every version is recorded already")
                if dry_run:
                    status = RunStatus.SUCCEEDED
                    return plan
                adapter.ensure_ledger()
                schema = adapter.fingerprint(()).schema_hash
                adapter.record_baseline(plan.migrations, run_id=run_id, actor=actor())
                self.project.state.audit("migration.baselined", store, {
                    "versions": [m.version for m in plan.migrations], "checksums": {m.version: m.checksum for m in plan.migrations},
                    "source": plan.source, "schema_hash": schema, "checksums_compared": plan.compared,
                    "checksum_mismatches_accepted": plan.mismatched, "run": run_id,
                })
                plan.notes.append(f"schema fingerprint at baseline: {schema[:16]}")
            status = RunStatus.SUCCEEDED
            return plan
        finally:
            self.project.state.finish_run(run_id, status)


__all__ = ["Baseline", "BaselinePlan", "RecordsBaseline"]
