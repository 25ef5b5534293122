"""``polyshift import`` and ``polyshift baseline``: adoption of an existing project. Registered on
the main app by ``register``; errors go to the one boundary in ``main``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from polyshift.framework.cli import output
from polyshift.framework.cli.output import emit_json, say, table
from polyshift.framework.core import errors
from polyshift.framework.core.config import load_config

# The parsers of the other tools' formats (pglast among them) load only when 'import' runs.
if TYPE_CHECKING:
    from polyshift.framework.adopt.model import ImportPlan


def _plan_json(plan: ImportPlan) -> dict[str, Any]:
    return {
        "format": plan.format.value, "source": str(plan.source),
        "migrations": [{"version": m.version, "slug": m.slug, "source": m.forward.source, "source_id": m.source_id,
                        "rollback": m.rollback.source if m.rollback else None,
                        "validate": m.validate.source if m.validate else None, "irreversible": m.irreversible,
                        "notes": m.notes, "warnings": m.warnings, "problems": [p.describe() for p in m.problems]} for m in plan.migrations],
        "problems": [{"source": p.source, "issue": p.issue.value, "reason": p.reason} for p in plan.all_problems()],
        "excluded": plan.excluded, "ignored": plan.ignored,
    }


def _show(plan: ImportPlan, store: str) -> None:
    table(f"import {plan.format.value} → migrations/{store}/", ["version", "migration", "from", "rollback", "validate", "notes"],
          [[m.version, m.slug + (" (irreversible)" if m.irreversible else ""), m.forward.source,
            (m.rollback.source + (" (noop)" if m.rollback.noop else "")) if m.rollback else "-",
            m.validate.source if m.validate else "-", "\n".join(m.notes)] for m in plan.migrations])
    for m in plan.migrations:
        for warning in m.warnings:
            output.warn(warning)
    for item in plan.excluded:
        say("excluded: {item}", item=item)
    for item in plan.ignored:
        say("ignored: {item}", item=item)
    for p in plan.all_problems():
        say("[red]cannot import[/] {problem}", problem=p.describe())


def import_command(
    source: Path = typer.Argument(..., help="The other tool's migration directory (a Liquibase changelog or an "
                                            "alembic.ini file also works)."),
    from_format: str = typer.Option(..., "--from", help="golang-migrate, goose, dbmate, flyway, sqitch, liquibase, "
                                                        "neo4j-migrations, pop, alembic."),
    store: str = typer.Option(..., "--store", "-s", help="The store whose migrations/<store>/ receives them."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan, with every problem; write nothing."),
    allow_irreversible: bool = typer.Option(False, "--allow-irreversible", help="Import migrations without a down as irreversible."),
    exclude: list[str] = typer.Option([], "--exclude", help="Leave out source files (or ids) matching this glob; listed as excluded."),
    rollbacks: Path | None = typer.Option(None, "--rollbacks", help="A directory of undo scripts named like the forward files."),
    dialect: str | None = typer.Option(None, "--dialect", help="pop only (required there): whose scripts to take, e.g. postgres."),
) -> None:
    """Convert another tool's migrations into polyshift's layout, with a provenance header in every file.
    Example: polyshift import --from goose db/migrations --store main --dry-run"""
    from polyshift.framework.adopt.importer import ImportOptions, plan_import, write

    config = load_config(output.opts["config"])
    cfg = config.store(store)
    target = config.migrations_dir / store
    plan = plan_import(from_format, source, store, cfg.kind, target,
                       ImportOptions(allow_irreversible, tuple(exclude), rollbacks, dialect))
    problems = plan.all_problems()
    if dry_run:
        if output.opts["json"]:
            emit_json(_plan_json(plan) | {"written": []})
        else:
            _show(plan, store)
        if problems:
            raise errors.ChecksFailed(f"{len(problems)} problem(s): nothing can be imported until each is resolved")
        say("{n} migration(s) would be written to {target}", n=len(plan.migrations), target=target)
        return
    if not output.opts["json"] and problems:
        _show(plan, store)
    written = write(plan, target, store, cfg.kind)
    if output.opts["json"]:
        emit_json(_plan_json(plan) | {"written": [str(p) for p in written]})
        return
    _show(plan, store)
    say("wrote {files} file(s) for {n} migration(s) in {target}", files=len(written), n=len(plan.migrations), target=target)


def baseline_command(
    store: str = typer.Option(..., "--store", "-s", help="The store that is already at a version."),
    to: str | None = typer.Option(None, "--to", help="Every migration up to this version is applied "
                                                     "(default: read the other tool's history)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be recorded; change nothing."),
    force: bool = typer.Option(False, "--force", help="Also when polyshift's ledger has entries already."),
    ignore_checksums: bool = typer.Option(False, "--ignore-checksums",
                                          help="Accept imported files whose checksum differs from the other tool's record."),
) -> None:
    """Record that a store is already at a version, without running anything (Flyway's baseline).
    Example: polyshift baseline --store main"""
    from polyshift.framework.adopt.baseline import Baseline
    from polyshift.framework.cli.main import project
    from polyshift.framework.core.migration import check_version
    from polyshift.framework.engine.runner import Runner

    if to is not None:
        check_version(to, "--to")
    plan = Baseline(Runner(project())).run(store, to, force=force, dry_run=dry_run, ignore_checksums=ignore_checksums)
    if output.opts["json"]:
        emit_json(plan.to_json() | {"dry_run": dry_run})
        return
    verb = "would record" if dry_run else "recorded"
    say("{store}: {verb} {n} migration(s) as applied, {first} … {last}, from {source}", store=store, verb=verb,
        n=len(plan.migrations), first=plan.migrations[0].id, last=plan.migrations[-1].id, source=plan.source)
    if plan.compared:
        say("  {n} checksum(s) compared with the other tool's record", n=plan.compared)
    for mismatch in plan.mismatched:
        output.warn(f"checksum differs (accepted with --ignore-checksums): {mismatch}")
    for note in plan.notes:
        say("  {note}", note=note)


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
    app.command("baseline")(baseline_command)
