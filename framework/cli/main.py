"""The ``polyshift`` command. Each command builds one object and calls one method; errors become
exit codes in ``main`` and nowhere else. Every line printed passes through redaction."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.text import Text

from polyshift.feature_flags.cli import flags_app
from polyshift.feature_flags.server.cli import server_app
from polyshift.framework.cli import adopt, output, templates
from polyshift.framework.cli.output import emit_json, say, table
from polyshift.framework.cli.rehearse import rehearse
from polyshift.framework.cli.sandbox import sandbox_app
from polyshift.framework.core import errors, progress, secrets
from polyshift.framework.core.config import DURATION_BOUNDS, parse_duration
from polyshift.framework.core.loader import next_version, split_names
from polyshift.framework.core.migration import check_version

# The engine, the control plane and through them the store drivers are imported
# inside the commands that use them, so --help, flags list and the like start quickly (issue 19).
if TYPE_CHECKING:
    from polyshift.framework.engine.project import Project

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Safe, reversible migrations across PostgreSQL, pgvector, Neo4j and Redis.")
backup_app = typer.Typer(no_args_is_help=True, help="Verified backups (rollback points): list, show, verify, restore, create, clean.")
app.add_typer(backup_app, name="backup")
app.add_typer(flags_app, name="flags")
app.add_typer(sandbox_app, name="sandbox")
adopt.register(app)
app.command()(rehearse)
app.add_typer(server_app)  # serve, users, apikeys

def _version(value: str | None, option: str) -> str | None:
    return None if value is None else check_version(value, option)


def project() -> Project:
    from polyshift.framework.engine.project import open_project

    return open_project(output.opts["config"], progress.for_output(output.opts["json"]))


def _stages(stages: list[float]) -> str:
    return " → ".join(f"{p:g}%" for p in stages)


def _event(kind: str, data: dict[str, Any]) -> None:
    if output.opts["json"]:
        return
    if kind == "migration":
        say("[bold]{store}[/] {version}_{slug}  risk {risk}  backup: {scope}", store=data["store"], version=data["version"],
            slug=data["slug"], risk=data["risk"], scope=", ".join(data["scope"]) or "nothing to back up")
    elif kind == "backup":
        say("  backup {backup} verified ({bytes:,} bytes)", backup=data["backup"], bytes=data["bytes"])
    elif kind == "applied":
        say("  [green]applied[/] in {ms} ms", ms=data["duration_ms"])
    elif kind == "notices":
        for notice in data["notices"]:
            say("  [yellow]{step} said[/] {notice}", step=data["step"], notice=notice)
    elif kind == "figures":
        say("  {figures}", figures=", ".join(f"{k} = {v:g}" for k, v in data["figures"].items()))
    elif kind == "data-at-risk":
        output.warn(f"{data['store']}: {data['warning']}")
    elif kind == "restore":
        say("  [yellow]restoring[/] {backup}: {why}", backup=data["backup"], why=data["why"])
    elif kind == "rolled-back":
        say("[bold]{store}[/] {version} [green]rolled back[/]", store=data["store"], version=data["version"])
        if data.get("hint"):
            say("  {hint}", hint=data["hint"])
    elif kind == "would-release":
        if data["flag"]:
            say("release {release}: {stores}; then flag {flag} through {stages}, baking {bake:g} s, gates: {gates}",
                release=data["release"], stores=", ".join(data["stores"]), flag=data["flag"], stages=_stages(data["stages"]),
                bake=data["bake_seconds"], gates=", ".join(data["gates"]) or "none")
        else:
            say("release {release}: {stores}; no cutover", release=data["release"], stores=", ".join(data["stores"]))
    elif kind == "bake":
        say("    baking {seconds:g} s at {percent:g}%", seconds=data["seconds"], percent=data["percent"])
    elif kind == "gates":
        for g in data["results"]:
            if g["ok"]:
                say("    gate {gate} [green]✓[/] {detail}", gate=g["gate"], detail=g["detail"])
            else:
                say("    gate {gate} [red]✗[/] {detail}", gate=g["gate"], detail=g["detail"])
    elif kind.startswith("release.") or kind == "hook-failed":
        _release_event(kind, data)


def _release_event(kind: str, data: dict[str, Any]) -> None:
    v = data.get("release", "")
    stores = ", ".join(data.get("stores", ()))
    if kind == "release.started":
        if data.get("flag"):
            say("[bold magenta]release {v}[/]: {stores}, flag {flag} through {stages}", v=v, stores=stores, flag=data["flag"],
                stages=_stages(data["stages"]))
        else:
            say("[bold magenta]release {v}[/]: {stores}", v=v, stores=stores)
    elif kind == "release.stage_advanced":
        say("  [cyan]cutover[/] flag {flag} at {percent:g}%", flag=data["flag"], percent=data["percent"])
    elif kind == "release.gate_failed":
        for g in data["gates"]:
            say("  [red]gate failed[/] {gate} at {percent:g}%: {detail}", gate=g["gate"], percent=data["percent"], detail=g["detail"])
    elif kind == "release.rollback_initiated":
        say("[bold yellow]release {v}: undoing[/] ({cause})", v=v, cause=data["cause"])
    elif kind == "release.flag_killed":
        say("  flag {flag} [yellow]killed[/]: traffic back on blue", flag=data["flag"])
    elif kind == "release.integrity_warning":
        output.warn(f"{data['store']}: {data['warning']}")
    elif kind == "release.completed":
        say("[bold green]release {v} completed[/]", v=v)
    elif kind == "release.rolled_back":
        say("[bold]release {v}[/] rolled back in {stores}: every store verified", v=v, stores=stores)
    elif kind == "release.rollback_failed":
        say("[bold red]release {v}: undo NOT verified[/] in {stores}", v=v, stores=stores)
    elif kind == "release.recovered":
        say("[bold]recovering release {v}[/]: {action} (the runner stopped after '{step}')", v=v, action=data["action"],
            step=data["stopped_after"])
    elif kind == "hook-failed":
        output.warn(f"on_event command failed for {data['event']}: {data['why']}")


@app.callback()
def _global(
    config: Path = typer.Option(Path("polyshift.toml"), "--config", "-c", help="Path of polyshift.toml."),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what each step does (stderr)."),
) -> None:
    output.opts["config"], output.opts["json"] = config, json_output
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(secrets.RedactingFilter())
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


# -- scaffolding ---------------------------------------------------------------------------
@app.command()
def init() -> None:
    """Create polyshift.toml and migrations/main/ here.  Example: polyshift init"""
    path: Path = output.opts["config"]
    if path.exists():
        raise errors.UsageError(f"{path} already exists; not overwriting it")
    if not path.parent.is_dir():
        raise errors.UsageError(f"directory {path.parent} does not exist; create it first")
    try:
        path.write_text(templates.CONFIG)
        (path.parent / "migrations" / "main").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.UsageError(f"cannot write in {path.parent}: {exc.strerror}") from None
    say("created {path} and migrations/main/; set DATABASE_URL or edit {table}", path=path, table="[stores.main]")
    if output.opts["json"]:
        emit_json({"config": str(path), "migrations": str(path.parent / "migrations")})


@app.command()
def new(store: str, slug: str, python: bool = typer.Option(False, "--python", help="A Python migration module.")) -> None:
    """Create the next migration's files.  Example: polyshift new main add_users_email"""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", slug):
        raise errors.UsageError(f"slug {slug!r}: use lowercase letters, digits and '_'")
    proj = project()
    cfg = proj.config.store(store)
    directory = proj.config.migrations_dir / store
    version = next_version(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ident = f"{version}_{slug}"
    lang = cfg.spec.script
    if python or lang is None:
        files = {directory / f"{ident}.py": templates.PYTHON}
    else:
        ext = lang.extension
        files = {directory / f"{ident}.forward.{ext}": templates.SQL_FORWARD, directory / f"{ident}.rollback.{ext}": templates.SQL_ROLLBACK,
                 directory / f"{ident}.validate.{ext}": templates.SQL_VALIDATE}
    for path, body in files.items():
        path.write_text(body.format(id=ident).replace("-- ", f"{lang.comment} ") if lang and lang.comment != "--" and not python
                        else body.format(id=ident))
    if output.opts["json"]:
        emit_json({"version": version, "files": [str(p) for p in files]})
    for path in files:
        say("created {path}", path=path)


# -- inspection ----------------------------------------------------------------------------
@app.command()
def status(store: str | None = typer.Option(None, "--store", "-s")) -> None:
    """Current version, pending and drifted migrations per store.  Example: polyshift status --json"""
    from polyshift.framework.engine.inspection import store_statuses

    result = store_statuses(project(), store)
    for st in result:
        if st.unadopted:
            output.warn(f"{st.store} has {st.unadopted} and an empty polyshift ledger: "
                        f"run 'polyshift baseline --store {st.store}' before 'up'")
    if output.opts["json"]:
        emit_json([st.to_json() for st in result])
        return
    table("status", ["store", "kind", "current", "pending", "drift", "missing"],
          [[st.store, st.kind, st.current or "-", " ".join(st.pending) or "-", " ".join(st.drift) or "-",
            " ".join(st.missing) or "-"] for st in result])
    for st in result:
        if st.locked_by:
            output.warn(f"{st.store} is locked by {st.locked_by}")
        if st.interrupted:
            output.warn(f"{st.store} is {st.interrupted}")


@app.command()
def plan(store: str | None = typer.Option(None, "--store", "-s"), to: str | None = typer.Option(None, "--to")) -> None:
    """What 'up' would do: risk, backup scope, non-transactional statements.  Example: polyshift plan"""
    from polyshift.framework.core.lifecycle import Direction
    from polyshift.framework.engine.runner import Runner

    to = _version(to, "--to")
    proj = project()
    runner = Runner(proj)
    rows: list[dict[str, Any]] = []
    for name in runner.stores(store):
        with runner.adapter(name) as adapter:
            st = runner.status(adapter)
            runner.check_status(st)
            for m in runner.targets(st, to):
                a = adapter.analyze(m, Direction.FORWARD)
                rows.append({"store": name, "version": m.version, "slug": m.slug, "risk": a.risk.value,
                             "scope": list(a.scope), "scope_source": a.scope_source, "reasons": a.reasons,
                             "unproven": list(a.unproven), "statements": a.statements,
                             "non_transactional": list(a.non_transactional), "irreversible": m.irreversible,
                             "flag": m.flag, "notes": list(a.notes), "findings": [f.to_json() for f in a.findings],
                             "refused": bool(a.refused), "threshold": a.threshold or None})
    if output.opts["json"]:
        emit_json(rows)
        return
    if not rows:
        say("nothing pending")
        return
    table("plan", ["store", "migration", "risk", "backup scope", "outside tx", "findings and notes"],
          [[r["store"], f"{r['version']}_{r['slug']}" + (" (irreversible)" if r["irreversible"] else ""), r["risk"],
            _scope_lines(r), "\n".join(r["non_transactional"]) or "-",
            "\n".join([*map(_finding_line, r["findings"]), *r["notes"], *(f"unproven: {u}" for u in r["unproven"])]) or ""]
           for r in rows])
    if any(r["refused"] for r in rows):
        output.warn("'up' refuses the findings marked REFUSED: a lock held on a large table (at least "
                    f"{next(r['threshold'] for r in rows if r['refused'])}) for the whole of its work; write the safe form, "
                    "or acknowledge them with '-- polyshift: allow=CODE' or 'up --allow-lock-hazard'")


def _finding_line(f: dict[str, Any]) -> str:
    """``PS130 lock [~1,000,000 rows, 42.0 MiB] REFUSED: … ; instead: …``"""
    size = f" [{f['size']}]" if f["size"] else ""
    verdict = " REFUSED" if f["refuses"] else (" acknowledged" if f["acknowledged"] else "")
    return f"{f['code']} {f['kind']}{size}{verdict}: {f['message']}; instead: {f['safe']}"


def _scope_lines(row: dict[str, Any]) -> str:
    """One line per scope entry, with why it is there ("via orders_user_id_fkey ON DELETE CASCADE …")."""
    if not row["scope"]:
        return f"- ({row['scope_source']})"
    lines = [f"{name} ({row['reasons'][name]})" if name in row["reasons"] else name for name in row["scope"]]
    return "\n".join(lines) + f"\n[{row['scope_source']}]"


@app.command()
def history(store: str | None = typer.Option(None, "--store", "-s")) -> None:
    """The stores' own ledgers, newest last.  Example: polyshift history --store main"""
    from polyshift.framework.engine.inspection import ledger_history

    rows = [r.to_json() for r in ledger_history(project(), store)]
    if output.opts["json"]:
        emit_json(rows)
        return
    table("history", ["store", "#", "version", "direction", "applied_by", "applied_at", "ms", "outside tx"],
          [[r["store"], r["rank"], f"{r['version']}_{r['slug']}", r["direction"], r["applied_by"], r["applied_at"][:19],
            r["duration_ms"], "yes" if r["non_transactional"] else ""] for r in rows])


# -- changing stores -----------------------------------------------------------------------
@app.command()
def up(
    to: str | None = typer.Option(None, "--to", help="Apply pending releases up to and including this version."),
    release: str | None = typer.Option(None, "--release", help="Apply this one release (every earlier one must be applied)."),
    store: str | None = typer.Option(None, "--store", "-s", help="Only this store's migrations."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and show what would run; change nothing."),
    allow_irreversible: bool = typer.Option(False, "--allow-irreversible", help="Also run migrations without a rollback."),
    allow_lock_hazard: bool = typer.Option(False, "--allow-lock-hazard",
                                           help="Also run migrations that hold a long lock on a large table."),
) -> None:
    """Apply pending releases: preflight, verified backups, forward, validate, staged flag cutover.  Example: polyshift up --to 0003"""
    from polyshift.framework.engine.pipeline import Pipeline
    from polyshift.framework.engine.session import Session

    to, release = _version(to, "--to"), _version(release, "--release")
    with Session(project(), _event) as session:
        outcomes = Pipeline(session).up(store=store, to=to, release=release, dry_run=dry_run, allow_irreversible=allow_irreversible,
                                          allow_lock_hazard=allow_lock_hazard)
    if output.opts["json"]:
        emit_json([o.to_json() for o in outcomes])
    elif not outcomes:
        say("nothing to apply")
    elif dry_run:
        for o in outcomes:
            say("would apply {store} {version}_{slug} (risk {risk}, backup: {scope})", store=o.store, version=o.version,
                slug=o.slug, risk=o.risk, scope=", ".join(o.scope) or "none")


@app.command()
def recover() -> None:
    """Finish or undo a release whose runner died (reads the journal).  Example: polyshift recover"""
    from polyshift.framework.engine.recovery import Recovery
    from polyshift.framework.engine.session import Session

    with Session(project(), _event) as session:
        results = Recovery(session).recover()
    if output.opts["json"]:
        emit_json([r.__dict__ for r in results])
    elif not results:
        say("nothing to recover: every run finished")
    for r in results:
        say("run {run}: {detail}", run=r.run_id[:8], detail=r.detail)


@app.command("emergency-rollback")
def emergency_rollback(
    version: str,
    wait: float = typer.Option(120.0, "--wait", help="Seconds to wait for a running release to let go of its locks."),
) -> None:
    """Kill the release's flag now, then undo the release in every store.  Example: polyshift emergency-rollback 0003"""
    from polyshift.framework.engine.emergency import EmergencyRollback
    from polyshift.framework.engine.session import Session

    check_version(version, "emergency-rollback")
    parse_duration(wait, what="--wait", bounds=DURATION_BOUNDS["wait"])
    with Session(project(), _event) as session:
        message = EmergencyRollback(session).run(version, wait=wait)
    if output.opts["json"]:
        emit_json({"release": version, "rolled_back": True, "detail": message})
    say("{message}", message=message)


@app.command()
def releases() -> None:
    """Every release (version) with its state per store, its flag and its last run.  Example: polyshift releases"""
    from polyshift.framework.engine.listing import release_listing
    from polyshift.framework.engine.session import Session

    with Session(project(), _event) as session:
        rows = release_listing(session)
    if output.opts["json"]:
        emit_json(rows)
        return
    table("releases", ["release", "stores", "flag", "stages", "last run"],
          [[r["version"], "\n".join(f"{s}: {state}" for s, state in r["stores"].items()),
            f"{r['flag']} ({r['flag_state']})" if r["flag"] else "-", " → ".join(f"{p:g}%" for p in r["stages"]) or "-",
            r["last"]] for r in rows])


@app.command()
def rollback(
    to: str | None = typer.Option(None, "--to", help="Roll back every migration above this version."),
    steps: int | None = typer.Option(None, "--steps", help="Roll back the last N migrations (default 1)."),
    store: str | None = typer.Option(None, "--store", "-s"),
    dry_run: bool = typer.Option(False, "--dry-run"),
) -> None:
    """Run rollback steps, newest first, each after a verified backup.  Example: polyshift rollback --steps 1 --store main"""
    from polyshift.framework.engine.runner import Runner

    to = _version(to, "--to")
    outcomes = Runner(project(), _event).rollback(store=store, to=to, steps=steps, dry_run=dry_run)
    if output.opts["json"]:
        emit_json([o.to_json() for o in outcomes])
    elif not outcomes:
        say("nothing to roll back")
    elif dry_run:
        for o in outcomes:
            say("would roll back {store} {version}_{slug} (risk {risk}, backup: {scope})", store=o.store, version=o.version,
                slug=o.slug, risk=o.risk, scope=", ".join(o.scope) or "none")


@app.command()
def validate(store: str | None = typer.Option(None, "--store", "-s")) -> None:
    """Re-run the checks of every applied migration and report drift.  Example: polyshift validate"""
    from polyshift.framework.engine.inspection import validation_report

    report = [r.to_json() for r in validation_report(project(), store)]
    failed = [r for r in report if r["failures"]]
    if output.opts["json"]:
        emit_json(report)
    else:
        for r in report:
            if r["failures"]:
                say("[red]FAIL[/] {store} {version}", store=r["store"], version=r["version"])
            else:
                say("[green]ok[/] {store} {version}", store=r["store"], version=r["version"])
            for failure in r["failures"]:
                say("     {failure}", failure=failure)
    if failed:
        raise errors.ChecksFailed(f"{len(failed)} migration(s) failed validation")


@app.command()
def audit(verify: bool = typer.Option(False, "--verify", help="Check the hash chain; names the first broken entry."),
          subject: str | None = typer.Option(None, "--subject")) -> None:
    """Show the audit log, or verify its hash chain.  Example: polyshift audit --verify"""
    proj = project()
    if verify:
        count = proj.state.verify_audit()
        if output.opts["json"]:
            emit_json({"verified": True, "entries": count})
        say("audit chain verified: {count} entries", count=count)
        return
    entries = list(proj.state.audit_entries(subject=subject))
    if output.opts["json"]:
        emit_json([e.__dict__ for e in entries])
        return
    table("audit", ["#", "at", "actor", "action", "subject", "detail"],
          [[e.seq, e.at[:19], e.actor, e.action, e.subject, json.dumps(e.detail, default=str)[:100]] for e in entries])


# -- backups -------------------------------------------------------------------------------
def _manifest_row(m: Any) -> dict[str, Any]:
    return {"id": m.id, "store": m.store, "kind": m.kind, "version": m.version, "scope": list(m.scope),
            "created_at": m.created_at, "bytes": m.size, "reason": m.reason}


@backup_app.command("list")
def backup_list(store: str | None = typer.Option(None, "--store", "-s")) -> None:
    """Every backup on disk, oldest first.  Example: polyshift backup list --json"""
    rows = [_manifest_row(m) for m in project().artifacts.list() if store is None or m.store == store]
    if output.opts["json"]:
        emit_json(rows)
        return
    table("backups", ["id", "store", "version", "scope", "bytes", "reason"],
          [[r["id"], r["store"], r["version"] or "-", ", ".join(r["scope"]), f"{r['bytes']:,}", r["reason"]] for r in rows])


@backup_app.command("show")
def backup_show(backup_id: str) -> None:
    """Manifest of one backup.  Example: polyshift backup show 20261123T060102Z-main-1a2b3c"""
    manifest = project().artifacts.manifest(backup_id)
    if output.opts["json"]:
        emit_json(manifest.to_json())
        return
    for key, value in _manifest_row(manifest).items():
        say("{key:>10}: {value}", key=key, value=value)
    for f in manifest.files:
        say("      file: {name}  {bytes:,} bytes  sha256 {sha}", name=f.name, bytes=f.bytes, sha=f.sha256)


def _warn_unrecorded(manifest: Any) -> None:
    if not manifest.on_record:
        output.warn(f"backup {manifest.id}: the sha256 of its manifest.json is not on record in this control plane "
                    "(a backup from before polyshift recorded it, or from another control plane): its files verify, "
                    "but what the manifest says they hold cannot be checked")


@backup_app.command("verify")
def backup_verify(backup_id: str) -> None:
    """Re-read every file and check its sha256.  Example: polyshift backup verify ID"""
    proj = project()
    try:
        manifest = proj.artifacts.verify(backup_id)
    except errors.BackupCorruptError as exc:
        proj.state.audit("backup.corrupt", backup_id, {"error": str(exc)})
        raise
    _warn_unrecorded(manifest)
    if output.opts["json"]:
        emit_json({"id": manifest.id, "verified": True, "files": len(manifest.files), "manifest_on_record": manifest.on_record})
    say("backup {id}: {files} files verified", id=manifest.id, files=len(manifest.files))


@backup_app.command("restore")
def backup_restore(backup_id: str, yes: bool = typer.Option(False, "--yes", help="Confirm overwriting the scope.")) -> None:
    """Put a backup's scope back (after a safety backup of what is there now).  Example: polyshift backup restore ID --yes"""
    from polyshift.framework.control.runs import refuse_unfinished
    from polyshift.framework.engine.runner import Runner

    proj = project()
    refuse_unfinished(proj.state, then="polyshift backup restore")  # before asking anything
    manifest = proj.artifacts.verify(backup_id, decompress=False)
    _warn_unrecorded(manifest)
    warning = (f"restoring {manifest.id} replaces {', '.join(manifest.scope)} in store {manifest.store}: writes made "
               f"between {manifest.created_at} (when the backup was taken) and now will be discarded")
    if not yes:
        if not sys.stdin.isatty():
            raise errors.RefusedError(warning + "; pass --yes to proceed")
        if not typer.confirm(warning + ". Continue?"):
            raise errors.RefusedError("restore cancelled")
    else:
        output.warn(warning)
    report = Runner(proj, _event).restore_verified(manifest)
    if output.opts["json"]:
        emit_json({"id": report.artifact_id, "verified": report.verified, "rows": report.items, "notes": list(report.notes),
                   "discarded_writes_since": manifest.created_at})
        return
    say("restored {id}: {items} — verified", id=report.artifact_id, items=", ".join(f"{k} ({v:,})" for k, v in report.items.items()))
    for note in report.notes:
        say("  note: {note}", note=note)


@backup_app.command("create")
def backup_create(store: str, scope: str = typer.Option(..., "--scope", help="Comma-separated tables (or keys/labels).")) -> None:
    """Take a verified backup by hand.  Example: polyshift backup create main --scope users,orders"""
    from polyshift.framework.engine.runner import Runner

    names = tuple(n for n in split_names(scope) if n)
    manifest = Runner(project(), _event).backup(store, names)
    if output.opts["json"]:
        emit_json(_manifest_row(manifest))
        return
    say("backup {id} of {scope}: {size:,} bytes, verified", id=manifest.id, scope=", ".join(manifest.scope), size=manifest.size)


@backup_app.command("clean")
def backup_clean(
    older_than: str = typer.Option("24h", "--older-than", help="Only what nothing was written to for this long."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List them; remove nothing."),
) -> None:
    """Remove what unsealed backups left (a runner killed mid-backup); never a sealed one.  Example: polyshift backup clean --dry-run"""
    quiet = parse_duration(older_than, what="--older-than", bounds=(0.0, 365 * 86400.0))
    proj = project()
    found = proj.artifacts.leftovers(quiet)
    removed = [] if dry_run else [leftover for leftover in found if proj.artifacts.remove_leftover(leftover)]
    for leftover in removed:
        proj.state.audit("backup.leftover_removed", leftover.id, leftover.to_json())
    if output.opts["json"]:
        emit_json({"location": proj.artifacts.location, "dry_run": dry_run, "found": [f.to_json() for f in found],
                   "removed": [r.id for r in removed]})
        return
    for leftover in found:
        verb = "would remove" if dry_run else ("removed" if leftover in removed else "left alone (written to or sealed since)")
        say("{verb} {id}: {files} files, {bytes:,} bytes, {uploads} unfinished uploads, last written {when}", verb=verb,
            id=leftover.id, files=leftover.files, bytes=leftover.bytes, uploads=leftover.uploads,
            when=leftover.last_written.isoformat(timespec="seconds") if leftover.last_written else "-")
    if not found:
        say("no leftovers of unsealed backups in {where}", where=proj.artifacts.location)


@app.command()
def demo() -> None:
    """The sample releases across PostgreSQL, pgvector, a Bolt graph and Redis, on embedded servers.  Example: polyshift demo"""
    from polyshift.framework.sandbox.demo import run

    raise SystemExit(run(main))


# -- the one error boundary ----------------------------------------------------------------
def _fail(exc: errors.PolyshiftError) -> NoReturn:
    message = secrets.redact(str(exc))
    hint = secrets.redact(exc.hint) if exc.hint else None
    if output.opts["json"] and not output.opts["emitted"]:
        emit_json({"error": message, "hint": hint, "exit_code": exc.exit_code, "type": type(exc).__name__} | exc.details)
    else:  # a command that already wrote its JSON document (validate) writes no second one
        output.err.print(output.render("[red]error:[/] {message}", message=message))
        if hint:
            output.err.print(output.render("hint: {hint}", hint=hint))
    raise SystemExit(exc.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Entry point. Typer reports usage errors itself (exit 2); polyshift's own errors are mapped here."""
    args = list(sys.argv[1:] if argv is None else argv)
    # --json is global but users write it after the command too ("polyshift status --json").
    if "--json" in args:
        args = ["--json"] + [a for a in args if a != "--json"]
    output.opts["emitted"] = False
    try:
        app(args=args, prog_name="polyshift")
    except errors.PolyshiftError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        # A bug, or an error no adapter translated: the state of the stores is not known to be
        # unchanged, so this is the "operator action needed" exit. -v shows the traceback.
        if logging.getLogger().isEnabledFor(logging.INFO):
            import traceback

            output.err.print(Text(secrets.redact(traceback.format_exc())))
        _fail(errors.MigrationFailedUnverified(
            f"unexpected {type(exc).__name__}: {exc}",
            hint="check 'polyshift status' and 'polyshift backup list'; run again with -v for the traceback"))


if __name__ == "__main__":
    main()
