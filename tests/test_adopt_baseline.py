"""``polyshift baseline``: a database another tool brought to a version is recorded as being
there, from that tool's own history table, without a change to anything but polyshift's ledger;
``up`` then applies only what comes after."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.adopt_histories import DBMATE_DDL, LIQUIBASE_DDL, flyway_history, run_scripts, sqitch_history
from tests.conftest import Workspace
from tests.gotools import go_tool

DATA = Path(__file__).parent / "data" / "adopt"
SHOP = DATA / "golang-migrate" / "shop"


def run_json(ws: Workspace, *args: str, code: int = 0) -> Any:
    result = ws.run("--json", *args)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def no_ledger(ws: Workspace) -> bool:
    return ws.value("SELECT to_regclass('_polyshift.schema_history')") is None


def status(ws: Workspace) -> dict[str, Any]:
    first: dict[str, Any] = run_json(ws, "status")[0]
    return first


def import_dir(ws: Workspace, fmt: str, source: Path, *extra: str) -> None:
    run_json(ws, "import", "--from", fmt, str(source), "--store", "main", *extra)


def migrate(ws: Workspace, *args: str) -> None:
    subprocess.run([str(go_tool("migrate")), "-path", str(SHOP), "-database", ws.url + "?sslmode=disable", *args],
                   check=True, capture_output=True, text=True, timeout=300)


# -- golang-migrate, applied by the real migrate CLI ------------------------------------------
def test_a_database_migrate_brought_to_the_end_is_baselined_from_schema_migrations_and_nothing_is_pending(ws: Workspace) -> None:
    migrate(ws, "up")
    import_dir(ws, "golang-migrate", SHOP)
    out = run_json(ws, "baseline", "--store", "main")
    assert len(out["versions"]) == 44 and out["source"].startswith("golang-migrate history schema_migrations at version 44")
    st = status(ws)
    assert st["current"] == "000044" and st["pending"] == [] and st["drift"] == []


def test_up_after_a_baseline_applies_only_what_comes_after(ws: Workspace) -> None:
    migrate(ws, "goto", "30")
    import_dir(ws, "golang-migrate", SHOP)
    run_json(ws, "baseline", "--store", "main")
    assert status(ws)["pending"] == [f"{v:06d}" for v in range(31, 45)]
    up = ws.run("up")
    assert up.exit_code == 0, up.output
    assert [v for v, d in ws.ledger()][30:] == [f"{v:06d}" for v in range(31, 45)]
    assert ws.value("SELECT to_regclass('sessions')") == "sessions"


def test_baseline_changes_nothing_but_polyshifts_ledger(ws: Workspace) -> None:
    migrate(ws, "goto", "20")
    ws.sql("INSERT INTO users (email) VALUES ('ada@example.org')")
    import_dir(ws, "golang-migrate", SHOP)
    tables = ("public.users", "public.categories", "public.schema_migrations")
    before = ws.fingerprint(*tables)
    run_json(ws, "baseline", "--store", "main")
    after = ws.fingerprint(*tables)
    assert after.schema_hash == before.schema_hash and after.items == before.items


def test_a_dirty_golang_migrate_version_is_refused(ws: Workspace) -> None:
    migrate(ws, "goto", "5")
    ws.sql("UPDATE schema_migrations SET dirty = true")
    import_dir(ws, "golang-migrate", SHOP)
    out = run_json(ws, "baseline", "--store", "main", code=2)
    assert "dirty" in out["error"]
    assert no_ledger(ws)


def test_up_is_refused_on_a_store_another_tool_migrated_until_it_is_baselined(ws: Workspace) -> None:
    migrate(ws, "goto", "3")
    import_dir(ws, "golang-migrate", SHOP)
    out = run_json(ws, "up", code=2)
    assert "golang-migrate history" in out["error"] and "polyshift baseline --store main" in out["hint"]
    assert no_ledger(ws)


def test_status_warns_about_a_history_that_was_not_baselined(ws: Workspace) -> None:
    migrate(ws, "goto", "3")
    import_dir(ws, "golang-migrate", SHOP)
    result = ws.run("status")
    assert result.exit_code == 0 and "polyshift baseline --store main" in result.stderr


# -- goose, applied by the real goose CLI ------------------------------------------------------
def test_a_database_goose_migrated_is_baselined_from_goose_db_version(ws: Workspace) -> None:
    subprocess.run([str(go_tool("goose")), "-dir", str(DATA / "goose"), "postgres", ws.url, "up-to", "3"],
                   check=True, capture_output=True, text=True, timeout=300)
    import_dir(ws, "goose", DATA / "goose")
    out = run_json(ws, "baseline", "--store", "main")
    assert out["versions"] == ["00001", "00002", "00003"]
    assert status(ws)["pending"] == ["00004"]
    assert ws.run("up").exit_code == 0
    assert ws.value("SELECT to_regclass('accounts_search_idx')") == "accounts_search_idx"


# -- Flyway, Sqitch, Liquibase, dbmate: their history tables as they write them ---------------
FLYWAY = DATA / "flyway" / "sql"


def test_flyway_history_with_matching_checksums_is_baselined(ws: Workspace) -> None:
    import_dir(ws, "flyway", FLYWAY, "--exclude", "R__*")
    run_scripts(ws, FLYWAY / "V1__create_customers.sql", FLYWAY / "V1_1__add_customer_email.sql")
    flyway_history(ws, FLYWAY, ["V1__create_customers.sql", "V1_1__add_customer_email.sql"])
    out = run_json(ws, "baseline", "--store", "main")
    assert out["versions"] == ["1", "1.1"] and out["checksums_compared"] == 2 and out["checksum_mismatches"] == []
    assert status(ws)["pending"] == ["2", "2.1"]


def test_a_file_changed_after_flyway_applied_it_is_refused_by_checksum(ws: Workspace) -> None:
    import_dir(ws, "flyway", FLYWAY, "--exclude", "R__*")
    run_scripts(ws, FLYWAY / "V1__create_customers.sql")
    flyway_history(ws, FLYWAY, ["V1__create_customers.sql"])
    ws.sql("UPDATE flyway_schema_history SET checksum = checksum + 1")
    out = run_json(ws, "baseline", "--store", "main", code=2)
    assert "differ from what flyway applied" in out["error"] and "1_create_customers" in out["error"]
    assert no_ledger(ws)
    accepted = run_json(ws, "baseline", "--store", "main", "--ignore-checksums")
    assert accepted["versions"] == ["1"] and len(accepted["checksum_mismatches"]) == 1


def test_a_failed_flyway_migration_is_refused(ws: Workspace) -> None:
    import_dir(ws, "flyway", FLYWAY, "--exclude", "R__*")
    flyway_history(ws, FLYWAY, ["V1__create_customers.sql"], failed="V1__create_customers.sql")
    out = run_json(ws, "baseline", "--store", "main", code=2)
    assert "failed" in out["error"] and "flyway repair" in out["error"]


def test_a_history_row_with_no_imported_migration_is_refused(ws: Workspace) -> None:
    import_dir(ws, "flyway", FLYWAY, "--exclude", "R__*")
    flyway_history(ws, FLYWAY, ["V1__create_customers.sql"])
    ws.sql("INSERT INTO flyway_schema_history VALUES (2, '7', 'gone', 'SQL', 'V7__gone.sql', 1, 'flyway', now(), 1, true)")
    out = run_json(ws, "baseline", "--store", "main", code=2)
    assert "records 7 as applied" in out["error"]


def test_sqitch_registry_is_baselined_with_script_hashes_and_the_reworked_change(ws: Workspace) -> None:
    src = DATA / "sqitch"
    import_dir(ws, "sqitch", src)
    run_scripts(ws, *(src / "deploy" / f"{c}.sql" for c in ("appschema", "users", "insert_user@v1.0.0")))
    sqitch_history(ws, src, "flipr", ["appschema", "users", "insert_user@v1.0.0"])
    out = run_json(ws, "baseline", "--store", "main")
    assert out["versions"] == ["0001", "0002", "0003"] and out["checksums_compared"] == 3
    up = ws.run("up")
    assert up.exit_code == 0, up.output
    assert [v for v, _ in ws.ledger()] == ["0001", "0002", "0003", "0004", "0005"]


def test_liquibase_databasechangelog_is_baselined_by_id_and_author(ws: Workspace) -> None:
    src = DATA / "liquibase" / "changelog.sql"
    import_dir(ws, "liquibase", src)
    ws.sql("CREATE TABLE warehouses (id serial PRIMARY KEY, code text NOT NULL UNIQUE)")
    ws.sql(LIQUIBASE_DDL)
    ws.sql("INSERT INTO databasechangelog (id, author, filename, dateexecuted, orderexecuted, exectype, md5sum) "
           "VALUES ('1', 'nadia', 'changelog.sql', now(), 1, 'EXECUTED', '9:0b7c2a')")
    out = run_json(ws, "baseline", "--store", "main")
    assert out["versions"] == ["0001"] and any("MD5SUM" in n for n in out["notes"])
    assert status(ws)["pending"] == ["0002", "0003", "0004"]


def test_a_liquibase_lock_that_is_held_is_refused(ws: Workspace) -> None:
    import_dir(ws, "liquibase", DATA / "liquibase" / "changelog.sql")
    ws.sql(LIQUIBASE_DDL)
    ws.sql("UPDATE databasechangeloglock SET locked = true")
    out = run_json(ws, "baseline", "--store", "main", code=2)
    assert "release-locks" in out["error"]


def test_dbmate_schema_migrations_is_told_from_golang_migrates_and_baselined(ws: Workspace) -> None:
    src = DATA / "dbmate" / "db" / "migrations"
    import_dir(ws, "dbmate", src)
    ws.sql("CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL)")
    ws.sql(DBMATE_DDL)
    ws.sql("INSERT INTO schema_migrations (version) VALUES ('20240105101500')")
    out = run_json(ws, "baseline", "--store", "main")
    assert out["versions"] == ["20240105101500"] and out["source"].startswith("dbmate history")


def test_a_version_the_history_skipped_below_its_newest_is_refused_by_name(ws: Workspace) -> None:
    src = DATA / "dbmate" / "db" / "migrations"
    import_dir(ws, "dbmate", src)
    ws.sql(DBMATE_DDL)
    ws.sql("INSERT INTO schema_migrations (version) VALUES ('20240105101500'), ('20240201120000')")
    out = run_json(ws, "baseline", "--store", "main", code=2)
    assert "20240106093000_create_books would stay pending" in out["error"]


# -- baseline --to, without any other tool -----------------------------------------------------
def test_baseline_to_a_version_records_every_migration_up_to_it_and_audits_the_schema_fingerprint(ws: Workspace) -> None:
    ws.migration("0001_a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    ws.migration("0002_b", "CREATE TABLE b (id int);", "DROP TABLE b;")
    ws.migration("0003_c", "CREATE TABLE c (id int);", "DROP TABLE c;")
    ws.sql("CREATE TABLE a (id int); CREATE TABLE b (id int)")
    out = run_json(ws, "baseline", "--store", "main", "--to", "0002")
    assert out["versions"] == ["0001", "0002"]
    [entry] = [e for e in run_json(ws, "audit") if e["action"] == "migration.baselined"]
    assert entry["detail"]["versions"] == ["0001", "0002"] and entry["detail"]["schema_hash"] == ws.fingerprint().schema_hash
    assert ws.run("up").exit_code == 0
    assert ws.ledger() == [("0001", "up"), ("0002", "up"), ("0003", "up")]


def test_baseline_is_refused_when_the_ledger_has_entries_unless_forced(ws: Workspace) -> None:
    ws.migration("0001_a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    ws.migration("0002_b", "CREATE TABLE b (id int);", "DROP TABLE b;")
    assert ws.run("up", "--to", "0001").exit_code == 0
    out = run_json(ws, "baseline", "--store", "main", "--to", "0002", code=2)
    assert "already records 1 applied" in out["error"] and "--force" in out["hint"]
    ws.sql("CREATE TABLE b (id int)")
    forced = run_json(ws, "baseline", "--store", "main", "--to", "0002", "--force")
    assert forced["versions"] == ["0002"]


def test_baseline_without_to_and_without_a_history_is_a_usage_error(ws: Workspace) -> None:
    ws.migration("0001_a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    out = run_json(ws, "baseline", "--store", "main", code=2)
    assert "no --to given" in out["error"]


def test_baseline_to_a_version_that_is_not_on_disk_is_a_usage_error(ws: Workspace) -> None:
    ws.migration("0001_a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    out = run_json(ws, "baseline", "--store", "main", "--to", "0007", code=2)
    assert "no migration" in out["error"] and "0007" in out["error"]


def test_baseline_dry_run_records_nothing(ws: Workspace) -> None:
    ws.migration("0001_a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    out = run_json(ws, "baseline", "--store", "main", "--to", "0001", "--dry-run")
    assert out["versions"] == ["0001"] and out["dry_run"] is True
    assert no_ledger(ws)


def test_baseline_to_that_disagrees_with_the_history_is_refused(ws: Workspace) -> None:
    migrate(ws, "goto", "3")
    import_dir(ws, "golang-migrate", SHOP)
    out = run_json(ws, "baseline", "--store", "main", "--to", "000005", code=2)
    assert "disagrees" in out["error"]
