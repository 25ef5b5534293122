"""Bad migration files, config and arguments: a clear message naming the problem, exit 2, nothing changed."""

from __future__ import annotations

from tests.conftest import Workspace


def test_migration_without_rollback_is_refused_at_load_time(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);")
    result = ws.run("up")
    assert result.exit_code == 2
    assert "0001_t.forward.sql: no rollback script" in result.stderr
    assert "irreversible" in result.stderr
    assert ws.value("SELECT to_regclass('t')") is None


def test_irreversible_migration_needs_the_flag_and_runs_after_a_verified_backup(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 5);", "DROP TABLE t;")
    ws.migration("0002_purge", "-- polyshift: irreversible\nDELETE FROM t WHERE id > 2;")
    refused = ws.run("up")
    assert refused.exit_code == 2
    assert "--allow-irreversible" in refused.stderr
    assert ws.value("SELECT to_regclass('t')") is None  # refused in preflight: 0001 did not run either
    applied = ws.run("up", "--allow-irreversible", "--json")
    assert applied.exit_code == 0, applied.output
    assert ws.value("SELECT count(*) FROM t") == 2
    backups = ws.backups()
    assert [b["version"] for b in backups] == ["0002"]
    assert ws.run("backup", "verify", backups[0]["id"]).exit_code == 0
    rollback = ws.run("rollback")
    assert rollback.exit_code == 2
    assert backups[0]["id"] in rollback.stderr  # points at the backup to restore instead


def test_destructive_migration_with_no_inferable_scope_is_refused(ws: Workspace) -> None:
    ws.migration("0001_s", "CREATE SCHEMA reporting;", "DROP SCHEMA reporting;")
    ws.migration("0002_drop", "DROP SCHEMA reporting CASCADE;", "CREATE SCHEMA reporting;")
    assert ws.run("up", "--to", "0001").exit_code == 0
    result = ws.run("up")
    assert result.exit_code == 2
    assert "risk C" in result.stderr and "backup=" in result.stderr
    assert ws.value("SELECT count(*) FROM pg_namespace WHERE nspname = 'reporting'") == 1


def test_sql_syntax_error_is_reported_before_anything_runs(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    ws.migration("0002_bad", "ALTER TABLE t ADD COLUMN;", "SELECT 1;")
    result = ws.run("up")
    assert result.exit_code == 2
    assert "0002_bad.forward.sql: SQL syntax error" in result.stderr
    assert ws.value("SELECT to_regclass('t')") is None  # 0001 did not run either


def test_explicit_transaction_control_in_a_script_is_refused(ws: Workspace) -> None:
    ws.migration("0001_t", "BEGIN; CREATE TABLE t (id int); COMMIT;", "DROP TABLE t;")
    result = ws.run("up")
    assert result.exit_code == 2
    assert "BEGIN/COMMIT" in result.stderr


def test_misnamed_file_duplicate_version_and_unknown_directive_are_named(ws: Workspace) -> None:
    (ws.migrations / "main" / "1-create.sql").write_text("SELECT 1;")
    result = ws.run("plan")
    assert result.exit_code == 2 and "1-create.sql" in result.stderr
    (ws.migrations / "main" / "1-create.sql").unlink()

    ws.migration("0001_a", "SELECT 1;", "SELECT 1;")
    ws.migration("0001_b", "SELECT 1;", "SELECT 1;")
    result = ws.run("plan")
    assert result.exit_code == 2 and "version 0001 is used twice" in result.stderr
    for p in (ws.migrations / "main").glob("0001_b.*"):
        p.unlink()

    ws.migration("0002_c", "-- polyshift: backpu=t\nSELECT 1;", "SELECT 1;")
    result = ws.run("plan")
    assert result.exit_code == 2 and "unknown directive 'backpu'" in result.stderr


def test_python_migration_must_declare_backup_and_import_cleanly(ws: Workspace) -> None:
    ws.python_migration("0001_py", "def forward(ctx): pass\ndef rollback(ctx): pass\n")
    result = ws.run("plan")
    assert result.exit_code == 2 and "must declare BACKUP" in result.stderr
    ws.python_migration("0001_py", "import no_such_module\n")
    result = ws.run("plan")
    assert result.exit_code == 2 and "import failed: ModuleNotFoundError" in result.stderr


def test_migrations_folder_for_an_unconfigured_store_is_named(ws: Workspace) -> None:
    (ws.migrations / "graph").mkdir()
    result = ws.run("status")
    assert result.exit_code == 2
    assert "migrations/graph/" in result.stderr and "[stores.graph]" in result.stderr


def test_config_errors_are_named(ws: Workspace) -> None:
    original = ws.config.read_text()
    cases = {
        'kind = "postgres"': ('kind = "oracle"', "kind must be one of"),
        "${TEST_PG_PASSWORD}": ("${NOT_SET_ANYWHERE_123}", "NOT_SET_ANYWHERE_123 is not set"),
        'lock_timeout = "2s"': ('lock_timeout = "soon"', "lock_timeout: expected a duration"),
        "[project]": ("[project\n", "invalid TOML"),
    }
    for needle, (replacement, message) in cases.items():
        ws.config.write_text(original.replace(needle, replacement))
        result = ws.run("status")
        assert result.exit_code == 2, needle
        assert message in result.stderr, (needle, result.stderr)
    ws.config.unlink()
    result = ws.run("status")
    assert result.exit_code == 2 and "not found" in result.stderr


def test_cli_argument_errors_exit_2(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    assert ws.run("up", "--to", "9999").exit_code == 2
    assert ws.run("rollback", "--to", "0001", "--steps", "1").exit_code == 2
    assert ws.run("rollback", "--steps", "0").exit_code == 2
    assert ws.run("status", "--store", "nope").exit_code == 2
    assert ws.run("new", "main", "Bad Slug").exit_code == 2
    assert ws.run("up", "--no-such-flag").exit_code == 2
    assert ws.value("SELECT to_regclass('t')") is None


def test_dry_run_changes_nothing(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    result = ws.run("up", "--dry-run")
    assert result.exit_code == 0
    assert "would apply main 0001_t" in result.stdout
    assert ws.value("SELECT to_regclass('t')") is None
    assert ws.backups() == []


def test_init_and_new_scaffold_a_project(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import Workspace as W

    ws = W.__new__(W)
    ws.root, ws.config = tmp_path, tmp_path / "polyshift.toml"
    assert ws.run("init").exit_code == 0
    assert ws.run("init").exit_code == 2  # never overwrites
    assert ws.run("new", "main", "add_users").exit_code == 0
    assert ws.run("new", "main", "add_orders", "--python").exit_code == 0
    names = sorted(p.name for p in (tmp_path / "migrations" / "main").iterdir())
    assert names == ["0001_add_users.forward.sql", "0001_add_users.rollback.sql", "0001_add_users.validate.sql", "0002_add_orders.py"]
