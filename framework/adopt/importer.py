"""``polyshift import``: read another tool's directory, check every migration, and write it into
``migrations/<store>/`` with a provenance header, or show why it cannot be.

Nothing is written while any problem stands: the plan lists each one with its file and reason,
and a write after it writes everything or nothing. What the conversion changed (a wrapping
BEGIN/COMMIT dropped, an empty step made an explicit noop) is listed as notes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from polyshift.framework.adopt import provenance
from polyshift.framework.adopt.alembic_revisions import AlembicRevisions
from polyshift.framework.adopt.dbmate import Dbmate
from polyshift.framework.adopt.flyway import Flyway
from polyshift.framework.adopt.golang_migrate import GolangMigrate
from polyshift.framework.adopt.goose import Goose
from polyshift.framework.adopt.liquibase import Liquibase
from polyshift.framework.adopt.model import Format, ImportedMigration, ImportPlan, Issue, Language, Problem, Script, SourceReader
from polyshift.framework.adopt.neo4j_migrations import Neo4jMigrations
from polyshift.framework.adopt.pop import POSTGRES_DIALECTS, Pop, dialect
from polyshift.framework.adopt.scripts import check_migration
from polyshift.framework.adopt.sources import migration_files
from polyshift.framework.adopt.sqitch import Sqitch
from polyshift.framework.core.errors import MigrationLoadError, RefusedError, UsageError
from polyshift.framework.core.kinds import store_kind
from polyshift.framework.core.loader import load_store_migrations
from polyshift.framework.core.migration import version_key

READERS: dict[Format, SourceReader] = {
    r.format: r for r in (GolangMigrate(), Goose(), Dbmate(), Flyway(), Sqitch(), Liquibase(), Neo4jMigrations(), Pop(),
                          AlembicRevisions())}
# Formats whose directory holds several databases' scripts: the reader needs --dialect.
_DIALECTED = {Format.POP}
# Formats whose tool has no undo at all: their migrations are irreversible unless a rollback is supplied.
_NO_UNDO = {Format.NEO4J_MIGRATIONS}


def reader_for(name: str, dialect_name: str | None = None) -> SourceReader:
    try:
        fmt = Format(name)
    except ValueError:
        raise UsageError(f"--from {name!r}: not a format polyshift imports (known: {', '.join(f.value for f in Format)})") from None
    if fmt not in _DIALECTED:
        if dialect_name is not None:
            raise UsageError(f"--dialect applies to --from {', '.join(f.value for f in sorted(_DIALECTED))} only; "
                             f"a {fmt.value} directory is one database's history")
        return READERS[fmt]
    return Pop(dialect(dialect_name))


@dataclass(frozen=True)
class ImportOptions:
    allow_irreversible: bool = False
    exclude: tuple[str, ...] = ()
    rollbacks: Path | None = None
    dialect: str | None = None     # which database's scripts of a pop directory


def plan_import(fmt: str, source: Path, store: str, kind: str, target: Path, options: ImportOptions) -> ImportPlan:
    """Everything ``import`` would write into ``target`` (``migrations/<store>/``), checked."""
    reader = reader_for(fmt, options.dialect)
    lang = store_kind(kind, where=f"--store {store}").script
    if lang is None or lang.extension != reader.language.value:
        takes = f"{lang.extension} scripts" if lang else "Python modules only"
        raise UsageError(f"--store {store}: a {kind} store takes {takes}; {reader.format.value} migrations are "
                         f"{reader.language.value}")
    if isinstance(reader, Pop) and reader.dialect not in POSTGRES_DIALECTS:
        raise UsageError(f"--dialect {reader.dialect.value}: a {kind} store runs PostgreSQL SQL; the {reader.dialect.value} "
                         f"scripts would not run there (PostgreSQL's: {', '.join(d.value for d in POSTGRES_DIALECTS)})")
    plan = reader.read(source)
    _exclude(plan, options.exclude)
    if options.rollbacks is not None:
        _supply_rollbacks(plan, options.rollbacks)
    for m in plan.migrations:
        if m.rollback is None and not m.irreversible:
            if plan.format in _NO_UNDO or options.allow_irreversible:
                m.irreversible = True
                m.notes.append(f"{m.forward.source}: no undo in the source; imported irreversible")
            else:
                m.problems.append(Problem(m.forward.source, Issue.NO_DOWN, "no down/undo script: write one, or import it "
                                          "irreversible with --allow-irreversible"))
        check_migration(m, plan.language)
    _check_versions(plan)
    _check_target(plan, target)
    return plan


def _matches(patterns: tuple[str, ...], *names: str) -> str | None:
    return next((p for p in patterns for n in names if fnmatch.fnmatchcase(n, p)), None)


def _exclude(plan: ImportPlan, patterns: tuple[str, ...]) -> None:
    if not patterns:
        return
    used: set[str] = set()
    kept = []
    for m in plan.migrations:
        file = m.forward.source.split(" (")[0]
        pattern = _matches(patterns, file, m.source_id, m.forward.source)
        if pattern is None:
            kept.append(m)
        else:
            used.add(pattern)
            plan.excluded.append(f"{m.forward.source} (--exclude '{pattern}')")
    plan.migrations = kept
    problems = []
    for p in plan.problems:
        pattern = _matches(patterns, p.source)
        if pattern is None:
            problems.append(p)
        else:
            used.add(pattern)
            plan.excluded.append(f"{p.source} (--exclude '{pattern}'; it was: {p.reason})")
    plan.problems = problems
    for pattern in patterns:
        if pattern not in used:
            raise UsageError(f"--exclude '{pattern}' matches nothing in {plan.source}")


def _supply_rollbacks(plan: ImportPlan, directory: Path) -> None:
    """``--rollbacks DIR``: a file there named like a migration's forward file is its rollback."""
    files = {p.name: p for p in migration_files(directory, recursive=True)}
    used = set()
    for m in plan.migrations:
        name = Path(m.forward.source.split(" (")[0]).name
        path = files.get(name)
        if path is None:
            continue
        if m.rollback is not None:
            m.problems.append(Problem(str(path), Issue.CONFLICT, f"supplies a rollback for {m.forward.source}, which has one already"))
            continue
        used.add(name)
        m.rollback = Script(path.read_text(encoding="utf-8").removeprefix("\ufeff"), f"{directory.name}/{name}")
    for name in sorted(set(files) - used):
        plan.problems.append(Problem(f"{directory.name}/{name}", Issue.MALFORMED, "a rollback for no imported migration"))


def _check_versions(plan: ImportPlan) -> None:
    seen: dict[tuple[int, ...], ImportedMigration] = {}
    for m in plan.migrations:
        other = seen.get(m.version_key)
        if other is not None:
            m.problems.append(Problem(m.forward.source, Issue.DUPLICATE_VERSION,
                                      f"version {m.version} is also {other.forward.source}"))
        seen[m.version_key] = m


def _check_target(plan: ImportPlan, target: Path) -> None:
    """Versions the target directory holds already conflict: one version, one migration."""
    if not target.is_dir():
        return
    existing: dict[tuple[int, ...], str] = {}
    for path in target.iterdir():
        head = path.name.split("_", 1)[0]
        if head and all(part.isdigit() for part in head.split(".")):
            existing.setdefault(version_key(head), path.name)
    for m in plan.migrations:
        clash = existing.get(m.version_key)
        if clash is not None:
            m.problems.append(Problem(m.forward.source, Issue.CONFLICT,
                                      f"version {m.version} is taken in {target.name}/ by {clash}"))


def files_for(plan: ImportPlan, m: ImportedMigration) -> dict[str, str]:
    """File name → content for one migration, each step with its provenance header."""
    ext, comment = plan.language.value, plan.language.comment
    out = {}
    for step, script in (("forward", m.forward), ("rollback", m.rollback), ("validate", m.validate)):
        if script is None:
            continue
        directives = []
        if script.noop:
            directives.append("noop")
        if step == "forward" and m.irreversible:
            directives.append("irreversible")
        header = provenance.render(comment, plan.format, script.source, m.source_id if step == "forward" else None,
                                   m.source_checksum if step == "forward" else None, directives)
        body = script.text if script.text.endswith("\n") or not script.text else script.text + "\n"
        out[f"{m.id}.{step}.{ext}"] = header + body
    return out


def write(plan: ImportPlan, target: Path, store: str, kind: str) -> list[Path]:
    """Write every migration of a plan without problems; all or nothing."""
    problems = plan.all_problems()
    if problems:
        raise RefusedError(f"{len(problems)} problem(s) in {plan.source}; nothing was written:\n"
                           + "\n".join(f"  {p.describe()}" for p in problems),
                           hint="fix the sources, or leave a file out with --exclude PATTERN (it is listed as excluded)")
    if not plan.migrations:
        raise UsageError(f"{plan.source}: no {plan.format.value} migrations found")
    written: list[Path] = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        for m in plan.migrations:
            for name, content in files_for(plan, m).items():
                path = target / name
                with path.open("x", encoding="utf-8") as f:  # never overwrite: a file there is a conflict
                    written.append(path)
                    f.write(content)
        load_store_migrations(target, store, kind)
    except (OSError, MigrationLoadError) as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, MigrationLoadError):
            raise MigrationLoadError(f"the imported files do not load, nothing was kept: {exc}") from None
        raise UsageError(f"cannot write in {target}: {exc}") from None
    return written


__all__ = ["READERS", "ImportOptions", "Language", "files_for", "plan_import", "reader_for", "write"]
