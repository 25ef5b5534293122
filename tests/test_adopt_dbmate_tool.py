"""dbmate histories written by the real dbmate CLI (2.36.0, its npm binary installed by
``make install`` into tests/adopt_node): its ``schema_migrations`` is what ``baseline`` reads, and
the schema polyshift builds from the imported files is the one dbmate built.

The first run of the real tool corrected the suite's own dbmate history: with
``transaction:false`` dbmate sends a file's statements in one simple query, which PostgreSQL runs
as one implicit transaction, so ``CREATE INDEX CONCURRENTLY`` must be alone in its file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from polyshift.adapters.postgres import catalog
from tests.conftest import Workspace
from tests.test_adopt_baseline import DATA, import_dir, run_json, status

MIGRATIONS = DATA / "dbmate" / "db" / "migrations"
DBMATE = Path(__file__).parent / "adopt_node" / "node_modules" / "@dbmate" / "linux-x64" / "bin" / "dbmate"


def dbmate(url: str, *args: str) -> None:
    if not DBMATE.is_file():
        pytest.skip("the dbmate binary is not installed (make install fetches it with npm on linux-x64)")
    done = subprocess.run([str(DBMATE), "--url", url + "?sslmode=disable", "--migrations-dir", str(MIGRATIONS),
                           "--no-dump-schema", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_a_database_dbmate_brought_to_its_newest_version_is_baselined_and_nothing_is_pending(ws: Workspace) -> None:
    dbmate(ws.url, "up")
    import_dir(ws, "dbmate", MIGRATIONS)
    out = run_json(ws, "baseline", "--store", "main")
    assert out["versions"] == ["20240105101500", "20240106093000", "20240201120000", "20240201120100"]
    assert out["source"].startswith("dbmate history")
    st = status(ws)
    assert st["current"] == "20240201120100" and st["pending"] == [] and st["drift"] == []


def test_after_dbmate_rolled_back_one_migration_up_applies_just_that_one(ws: Workspace) -> None:
    dbmate(ws.url, "up")
    dbmate(ws.url, "rollback")
    import_dir(ws, "dbmate", MIGRATIONS)
    run_json(ws, "baseline", "--store", "main")
    assert status(ws)["pending"] == ["20240201120100"]
    up = ws.run("up")
    assert up.exit_code == 0, up.output
    assert ws.value("SELECT count(*) FROM pg_indexes WHERE indexname = 'books_isbn_key'") == 1


def test_polyshift_builds_from_the_imported_files_the_schema_dbmate_built(ws: Workspace, second_database: str) -> None:
    dbmate(second_database, "up")
    import_dir(ws, "dbmate", MIGRATIONS)
    up = ws.run("up")
    assert up.exit_code == 0, up.output
    with psycopg.connect(second_database, autocommit=True) as conn:
        conn.execute("DROP TABLE schema_migrations")  # dbmate's own history: polyshift keeps its ledger elsewhere
        by_dbmate = catalog.schema_hash(conn)
    assert ws.fingerprint().schema_hash == by_dbmate
