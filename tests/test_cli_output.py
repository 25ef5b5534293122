"""What the CLI prints: user-provided text exactly as written (never read as markup or emoji codes),
one JSON document per command, a dry run that says what it would do and changes nothing, and
version arguments checked before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import RedisWorkspace, Workspace

MARKUP = "[/] [bold]x[/bold] :thumbs_up: \\"


def _failing_check(ws: Workspace) -> None:
    """Migration 0001 applied, whose check (text full of markup) fails once a row is added."""
    ws.migration("0001_t", "CREATE TABLE t (id int, note text);", "DROP TABLE t;",
                 f"SELECT count(*) = 0 FROM t WHERE note <> '{MARKUP}';")
    assert ws.run("up").exit_code == 0
    ws.sql("INSERT INTO t VALUES (1, 'x')")


def test_a_check_full_of_markup_is_printed_as_written_and_validate_exits_1(ws: Workspace) -> None:
    _failing_check(ws)
    result = ws.run("validate")
    assert result.exit_code == 1, result.output
    assert MARKUP in result.stdout
    assert "FAIL" in result.stdout and "1 migration(s) failed validation" in result.stderr


def test_json_validate_writes_one_document(ws: Workspace) -> None:
    _failing_check(ws)
    result = ws.run("--json", "validate")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)  # one document: a second one would not parse
    assert [r["version"] for r in report] == ["0001"] and MARKUP in report[0]["failures"][0]
    assert "failed validation" in result.stderr


def test_a_key_pattern_with_a_character_class_is_shown_as_written(rws: RedisWorkspace) -> None:
    rws.r.set("user:a1", "1")
    rws.r.set("user:c1", "1")
    result = rws.run("backup", "create", "cache", "--scope", "user:[ab]*")
    assert result.exit_code == 0, result.output
    assert "of user:[ab]*:" in result.stdout
    rws.python_migration("0001_users", 'BACKUP = ["user:[ab]*"]\ndef forward(ctx): pass\ndef rollback(ctx): pass\n')
    dry = rws.run("up", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "backup: user:[ab]*" in dry.stdout
    up = rws.run("up")
    assert up.exit_code == 0, up.output
    assert "backup: user:[ab]*" in up.stdout


def test_rollback_dry_run_says_what_it_would_roll_back_and_changes_nothing(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    ws.migration("0002_u", "CREATE TABLE u (id int);", "DROP TABLE u;")
    assert ws.run("up").exit_code == 0
    result = ws.run("rollback", "--dry-run", "--to", "0000")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["would roll back main 0002_u (risk C, backup: public.u)",
                                          "would roll back main 0001_t (risk C, backup: public.t)"]
    assert ws.ledger() == [("0001", "up"), ("0002", "up")]
    assert ws.value("SELECT to_regclass('u')") == "u"


def test_up_dry_run_creates_nothing_in_the_store(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    result = ws.run("up", "--dry-run")
    assert result.exit_code == 0, result.output
    assert ws.value("SELECT count(*) FROM pg_namespace WHERE nspname = '_polyshift'") == 0
    assert ws.value("SELECT to_regclass('t')") is None


@pytest.mark.parametrize("args", [
    ("plan", "--to", "abc"),
    ("rollback", "--to", "abc"),
    ("rollback", "--to", "1.x"),
    ("up", "--to", "abc"),
    ("up", "--release", "abc"),
    ("up", "--dry-run", "--to", "abc"),
    ("emergency-rollback", "abc"),
])
def test_a_version_argument_that_is_not_a_version_is_named(ws: Workspace, args: tuple[str, ...]) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    result = ws.run(*args)
    assert result.exit_code == 2, result.output
    assert "is not a version" in result.stderr and "unexpected" not in result.stderr
    assert ws.value("SELECT to_regclass('t')") is None


def test_init_into_a_missing_directory_is_named(tmp_path: Path) -> None:
    from tests.conftest import Workspace as W

    ws = W.__new__(W)
    ws.root, ws.config = tmp_path, tmp_path / "nowhere" / "polyshift.toml"
    result = ws.run("init")
    assert result.exit_code == 2, result.output
    assert str(tmp_path / "nowhere") in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_a_progress_bar_shows_the_scope_as_written() -> None:
    import io

    from rich.console import Console

    from polyshift.framework.core.progress import TerminalProgress

    screen = io.StringIO()
    bar = TerminalProgress(delay=0, console=Console(file=screen, force_terminal=True, width=200))
    bar.start("backup user:[ab]* [/]", total=10)
    bar.advance(5)
    bar.finish()
    assert "backup user:[ab]* [/]" in screen.getvalue()
