"""golang-migrate histories imported and run for real: a 44-migration history goes up, all the
way down to an empty schema, and up again to the same schema."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from polyshift.adapters.postgres import catalog
from tests.conftest import Workspace
from tests.gotools import go_tool

DATA = Path(__file__).parent / "data" / "adopt" / "golang-migrate"
SHOP = DATA / "shop"


def _import(ws: Workspace, source: Path, *extra: str) -> dict[str, Any]:
    result = ws.run("--json", "import", "--from", "golang-migrate", str(source), "--store", "main", *extra)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_a_44_migration_history_goes_up_down_to_nothing_and_up_again_to_the_same_schema(ws: Workspace) -> None:
    empty = ws.fingerprint().schema_hash
    _import(ws, SHOP)
    assert ws.run("up").exit_code == 0
    assert len(ws.ledger()) == 44
    first = ws.fingerprint().schema_hash
    assert ws.value("SELECT count(*) FROM categories") == 3

    down = ws.run("rollback", "--to", "0")
    assert down.exit_code == 0, down.output
    assert ws.fingerprint().schema_hash == empty

    again = ws.run("up")
    assert again.exit_code == 0, again.output
    assert ws.fingerprint().schema_hash == first


def test_every_file_keeps_its_content_under_a_header_naming_its_source(ws: Workspace) -> None:
    _import(ws, SHOP)
    forward = (ws.migrations / "main" / "000004_create_orders.forward.sql").read_text()
    original = (SHOP / "000004_create_orders.up.sql").read_text()
    assert forward.startswith("-- imported-from: golang-migrate\n-- source: 000004_create_orders.up.sql\n-- source-id: 4\n")
    assert forward.endswith(original)
    rollback = (ws.migrations / "main" / "000004_create_orders.rollback.sql").read_text()
    assert rollback.endswith((SHOP / "000004_create_orders.down.sql").read_text())


def test_empty_and_comment_only_files_are_imported_as_explicit_noops(ws: Workspace) -> None:
    plan = _import(ws, SHOP)
    forward = (ws.migrations / "main" / "000006_mysql_only_charset.forward.sql").read_text()
    assert "-- polyshift: noop\n-- MySQL only" in forward
    rollback = (ws.migrations / "main" / "000011_sqlite_placeholder.rollback.sql").read_text()
    assert rollback == "-- imported-from: golang-migrate\n-- source: 000011_sqlite_placeholder.down.sql\n-- polyshift: noop\n"
    noted = next(m for m in plan["migrations"] if m["version"] == "000011")
    assert any("has no statements" in n for n in noted["notes"])


def test_a_script_wrapped_in_begin_commit_loses_only_the_wrapper(ws: Workspace) -> None:
    plan = _import(ws, SHOP)
    forward = (ws.migrations / "main" / "000042_gift_messages.forward.sql").read_text()
    assert "BEGIN" not in forward and "COMMIT;" not in forward
    assert "ALTER TABLE orders ADD COLUMN gift_message text;" in forward
    assert any("wrapping 'BEGIN;'" in n for n in next(m for m in plan["migrations"] if m["version"] == "000042")["notes"])


def test_the_migrate_cli_accepts_the_fixture_and_polyshift_reaches_the_same_schema(ws: Workspace, second_database: str) -> None:
    migrate = go_tool("migrate")
    subprocess.run([str(migrate), "-path", str(SHOP), "-database", second_database + "?sslmode=disable", "up"],
                   check=True, capture_output=True, text=True, timeout=300)
    _import(ws, SHOP)
    assert ws.run("up").exit_code == 0
    with psycopg.connect(second_database, autocommit=True) as conn:
        conn.execute("DROP TABLE schema_migrations")  # golang-migrate's own history: the one table polyshift keeps elsewhere
        by_migrate = catalog.schema_hash(conn)
    assert ws.fingerprint().schema_hash == by_migrate
