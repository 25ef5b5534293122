"""Applied migrations are immutable: changing one is drift, and `up` refuses it like Flyway's validate."""

from __future__ import annotations

import json

from tests.conftest import Workspace


def test_drift_is_refused_with_exit_2_and_nothing_applied(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    assert ws.run("up").exit_code == 0
    ws.migration("0001_t", "CREATE TABLE t (id bigint);", "DROP TABLE t;")  # edited after apply
    ws.migration("0002_u", "CREATE TABLE u (id int);", "DROP TABLE u;")
    result = ws.run("up")
    assert result.exit_code == 2
    assert "0001" in result.stderr and "changed on disk" in result.stderr
    assert ws.value("SELECT to_regclass('u')") is None


def test_status_json_reports_current_pending_and_drift(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    ws.migration("0002_u", "CREATE TABLE u (id int);", "DROP TABLE u;")
    assert ws.run("up", "--to", "0001").exit_code == 0
    (ws.migrations / "main" / "0001_t.rollback.sql").write_text("DROP TABLE IF EXISTS t;")
    status = json.loads(ws.run("status", "--json").stdout)
    assert status == [{"store": "main", "kind": "postgres", "current": "0001", "applied": ["0001"], "pending": ["0002"],
                       "drift": ["0001"], "missing": [], "out_of_order": [], "interrupted": None, "locked_by": None}]


def test_applied_migration_missing_on_disk_is_refused(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    assert ws.run("up").exit_code == 0
    for p in (ws.migrations / "main").glob("0001_t.*"):
        p.unlink()
    ws.migration("0002_u", "CREATE TABLE u (id int);", "DROP TABLE u;")
    result = ws.run("up")
    assert result.exit_code == 2
    assert "no file on disk" in result.stderr


def test_pending_migration_older_than_current_is_refused(ws: Workspace) -> None:
    ws.migration("0002_u", "CREATE TABLE u (id int);", "DROP TABLE u;")
    assert ws.run("up").exit_code == 0
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    result = ws.run("up")
    assert result.exit_code == 2
    assert "older than the current version 0002" in result.stderr
    assert ws.value("SELECT to_regclass('t')") is None


def test_validate_command_reports_drift_and_failing_checks_with_exit_1(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);", "DROP TABLE t;", "SELECT count(*) = 1 FROM t;")
    assert ws.run("up").exit_code == 0
    assert ws.run("validate").exit_code == 0
    ws.sql("INSERT INTO t VALUES (2)")
    result = ws.run("validate")
    assert result.exit_code == 1
    assert "check 1" in result.stdout and "returned False" in result.stdout
