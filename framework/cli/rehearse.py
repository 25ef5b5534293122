"""``polyshift rehearse``: the command a CI job runs on every change to migrations/. It builds one
``Rehearsal`` (framework/engine/rehearsal.py) and renders its report: a table on the terminal,
``--json``, and ``--junit FILE`` (one test case per release, store and check). Exit 0 when every
check holds, 1 when one failed (named), 2 for bad input (nothing changed anywhere)."""

from __future__ import annotations

import shutil
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from polyshift.framework.cli import output
from polyshift.framework.cli.output import emit_json, say, table
from polyshift.framework.core import errors, progress, secrets
from polyshift.framework.core.lifecycle import CheckStatus, DataSource, RehearsalCheck
from polyshift.framework.core.migration import check_version

# The engine (and through it the control plane and the drivers) loads when 'rehearse' runs.
if TYPE_CHECKING:
    from polyshift.framework.engine.rehearsal import RehearsalReport


def _event(kind: str, data: dict[str, Any]) -> None:
    if output.json_mode():
        return
    if kind == "rehearsal.release":
        say("[bold magenta]release {v}[/]: rehearsing in {stores}", v=data["release"], stores=", ".join(data["stores"]))
    elif kind == "rehearsal.check":
        status = CheckStatus(data["status"])
        if status is CheckStatus.PASSED:
            say("  {store} {check} [green]held[/] {detail}", store=data["store"], check=data["check"], detail=data["detail"])
        elif status is CheckStatus.FAILED:
            say("  {store} {check} [bold red]FAILED[/]: {detail}", store=data["store"], check=data["check"], detail=data["detail"])
        else:
            say("  {store} {check} [dim]skipped: {detail}[/]", store=data["store"], check=data["check"], detail=data["detail"])


def _writable(path: Path) -> Path:
    """Bad input is refused before any server starts: the report must have somewhere to go."""
    if path.is_dir():
        raise errors.UsageError(f"--junit {path}: is a directory; name a file")
    if not path.parent.is_dir():
        raise errors.UsageError(f"--junit {path}: directory {path.parent} does not exist")
    return path


def rehearse(
    release: str | None = typer.Option(None, "--release", help="Rehearse this release only (every earlier one is applied first)."),
    from_production: bool = typer.Option(False, "--from-production",
                                         help="Rehearse on a verified read-only backup of the pending releases' scopes in production."),
    from_backup: str | None = typer.Option(None, "--from-backup", help="Rehearse on the data of this backup (a rollback point)."),
    sample: int | None = typer.Option(None, "--sample", help="With --from-production: copy at most N rows (keys) per table "
                                                             "(pattern) of the scope; graphs are copied whole."),
    gate_url: str | None = typer.Option(None, "--gate-url", help="Run the release gates, http ones against this rehearsal endpoint."),
    junit: Path | None = typer.Option(None, "--junit", help="Write a JUnit XML report here (one test case per release, store, check)."),
) -> None:
    """Prove each pending release on rehearsal stores: forward, back to exactly where it was, forward again, restore.

    Example: polyshift rehearse --junit rehearsal.xml"""
    from polyshift.framework.engine.project import open_project
    from polyshift.framework.engine.rehearsal import Rehearsal, RehearsalOptions

    if release is not None:
        check_version(release, "--release")
    if from_production and from_backup is not None:
        raise errors.UsageError("use either --from-production or --from-backup, not both")
    if junit is not None:
        _writable(junit)
    source = DataSource.PRODUCTION if from_production else DataSource.BACKUP if from_backup is not None else DataSource.SCHEMA
    options = RehearsalOptions(source=source, backup_id=from_backup, release=release, gate_url=gate_url, sample=sample)
    project = open_project(output.opts["config"], progress.for_output(output.json_mode()))
    from polyshift.framework.sandbox.rehearsal_stores import EmbeddedStores  # the servers, only for this command

    scratch = Path(tempfile.mkdtemp(prefix="polyshift-rehearsal-"))
    try:
        report = Rehearsal(project, EmbeddedStores(), options, scratch, _event).run()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        project.close()
    if junit is not None:
        junit.write_bytes(junit_xml(report))
    if output.json_mode():
        emit_json(report.to_json())
    else:
        render(report)
    if not report.ok:
        named = ", ".join(f"{c.release} {c.store} {c.check.value}" for c in report.failed)
        raise errors.ChecksFailed(f"rehearsal: {len(report.failed)} check(s) failed: {named}")


def render(report: RehearsalReport) -> None:
    say("")
    say("[bold]data[/]: {data}", data=report.data)
    for store, where in report.stores.items():
        say("[bold]{store}[/] rehearsed on {where}", store=store, where=where)
    if report.applied_first:
        say("applied first (history): {versions}", versions=", ".join(report.applied_first))
    if not report.releases:
        say("nothing to rehearse: no pending release")
        return
    table("rehearsal", ["release", "store", "check", "result", "detail"],
          [[c.release, c.store, c.check.value, c.status.value.upper() if c.status is CheckStatus.FAILED else c.status.value,
            c.detail] for c in report.checks])
    table("step times", ["release", "store", "step", "seconds", "rows before"],
          [[s.release, s.store, s.step.value, f"{s.seconds:.3f}", ", ".join(f"{k} {v:,}" for k, v in s.rows.items()) or "-"]
           for s in report.steps])
    locks = [[s.release, s.store, s.step.value, " ".join(t.sql.split())[:70],
              ", ".join(f"{lock} on {name}" for name, lock in t.locks.items()), f"{t.held_ms:,.1f}",
              ", ".join(f"{s.rows[n]:,}" for n in t.locks if n in s.rows) or "-"]
             for s in report.steps if s.step in (RehearsalCheck.FORWARD, RehearsalCheck.ROLLBACK) for t in s.statements if t.locks]
    if locks:
        table("locks held (PostgreSQL)", ["release", "store", "step", "statement", "lock", "held ms", "rows"], locks)
    for note in report.notes:
        output.warn(note)
    counts = {status: sum(1 for c in report.checks if c.status is status) for status in CheckStatus}
    say("rehearsal of {n} release(s) in {s:.1f} s: {held} checks held, {failed} failed, {skipped} skipped",
        n=len(report.releases), s=report.seconds, held=counts[CheckStatus.PASSED], failed=counts[CheckStatus.FAILED],
        skipped=counts[CheckStatus.SKIPPED])


def junit_xml(report: RehearsalReport) -> bytes:
    """JUnit XML as CI systems read it (the Jenkins xUnit plugin's junit-10.xsd): a test suite per
    release, a test case per store and check, ``failure`` or ``skipped`` with the detail."""
    import xml.etree.ElementTree as ET  # only for --junit: every command's start imports this module

    now = datetime.now(UTC).isoformat(timespec="seconds")
    failed = len(report.failed)
    root = ET.Element("testsuites", name="polyshift rehearse", tests=str(len(report.checks)), failures=str(failed),
                      errors="0", time=f"{report.seconds:.3f}")
    for release in dict.fromkeys(c.release for c in report.checks):
        cases = [c for c in report.checks if c.release == release]
        suite = ET.SubElement(root, "testsuite", name=f"release {release}", tests=str(len(cases)),
                              failures=str(sum(c.status is CheckStatus.FAILED for c in cases)), errors="0",
                              skipped=str(sum(c.status is CheckStatus.SKIPPED for c in cases)),
                              time=f"{sum(c.seconds for c in cases):.3f}", timestamp=now, hostname=socket.gethostname())
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="data", value=secrets.redact(report.data))
        for store, where in report.stores.items():
            ET.SubElement(properties, "property", name=f"store.{store}", value=secrets.redact(where))
        for c in cases:
            case = ET.SubElement(suite, "testcase", classname=f"release {release}.{c.store}", name=c.check.value,
                                 time=f"{c.seconds:.3f}")
            detail = secrets.redact(c.detail)
            if c.status is CheckStatus.FAILED:
                ET.SubElement(case, "failure", message=detail[:500], type=f"rehearsal.{c.check.value}").text = detail
            elif c.status is CheckStatus.SKIPPED:
                ET.SubElement(case, "skipped", message=detail)
            elif detail:
                ET.SubElement(case, "system-out").text = detail
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"
