"""What PostgreSQL says while a step runs (NOTICE, WARNING) is shown with the step and kept in
the journal and the outcome: a `DROP … IF EXISTS` that did nothing must not look like success."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Workspace


def journal_details(ws: Workspace, step: str) -> list[dict[str, Any]]:
    rows = ws.state_sql("SELECT detail FROM polyshift_journal WHERE step = :step AND phase = 'done'", step=step)
    return [r[0] if isinstance(r[0], dict) else json.loads(r[0]) for r in rows]


def test_a_notice_from_a_forward_step_is_shown_with_the_step(ws: Workspace) -> None:
    ws.sql("CREATE TABLE users (id int)")
    ws.migration("0001_users", "CREATE TABLE IF NOT EXISTS users (id bigint, email text);", "SELECT 1;")
    result = ws.run("up")
    assert result.exit_code == 0, result.output
    assert 'forward said NOTICE: relation "users" already exists, skipping' in result.stdout


def test_notices_are_recorded_in_the_journal_and_the_outcome(ws: Workspace) -> None:
    ws.migration("0001_reports", "CREATE SCHEMA IF NOT EXISTS public;", "SELECT 1;")
    result = ws.run("--json", "up")
    assert json.loads(result.stdout)[0]["notices"] == ['NOTICE: schema "public" already exists, skipping']
    assert journal_details(ws, "forward")[0]["notices"] == ['NOTICE: schema "public" already exists, skipping']


def test_a_warning_raised_by_the_script_itself_is_shown(ws: Workspace) -> None:
    ws.migration("0001_warn", "DO $$ BEGIN RAISE WARNING 'orders without customer: %', 3; END $$;", "SELECT 1;")
    result = ws.run("up")
    assert "WARNING: orders without customer: 3" in result.stdout


def test_a_notice_from_a_rollback_step_is_shown_and_journaled(ws: Workspace) -> None:
    ws.migration("0001_a", "CREATE TABLE a (id int);", "DROP TABLE a; DROP INDEX IF EXISTS a_id_idx;")
    assert ws.run("up").exit_code == 0
    result = ws.run("rollback")
    assert result.exit_code == 0, result.output
    assert 'rollback said NOTICE: index "a_id_idx" does not exist, skipping' in result.stdout
    assert journal_details(ws, "rollback")[0]["notices"] == ['NOTICE: index "a_id_idx" does not exist, skipping']


def test_a_step_without_notices_records_none(ws: Workspace) -> None:
    ws.migration("0001_a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    result = ws.run("--json", "up")
    assert json.loads(result.stdout)[0]["notices"] == []
    assert journal_details(ws, "forward")[0]["notices"] == []
