"""How steps run on PostgreSQL: transactions, statements outside them, Python migrations, validation."""

from __future__ import annotations

import json

from tests.conftest import Workspace


def _table(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int, status text); INSERT INTO t SELECT i, 'x' FROM generate_series(1, 100) i;",
                 "DROP TABLE t;")


def test_create_index_concurrently_runs_outside_a_transaction_and_the_ledger_says_so(ws: Workspace) -> None:
    _table(ws)
    ws.migration("0002_idx", "ALTER TABLE t ADD COLUMN flag bool; CREATE INDEX CONCURRENTLY t_status_idx ON t (status);",
                 "DROP INDEX CONCURRENTLY IF EXISTS t_status_idx; ALTER TABLE t DROP COLUMN flag;",
                 "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('t_status_idx');")
    plan = json.loads(ws.run("plan", "--json").stdout)
    assert plan[1]["non_transactional"] == ["CREATE INDEX CONCURRENTLY: CREATE INDEX CONCURRENTLY t_status_idx ON t (status)"]
    assert ws.run("up").exit_code == 0
    assert ws.sql("SELECT non_transactional FROM _polyshift.schema_history ORDER BY installed_rank") == [(False,), (True,)]
    assert ws.value("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('t_status_idx')") is True
    assert ws.run("rollback").exit_code == 0
    assert ws.value("SELECT to_regclass('t_status_idx')") is None


def test_failed_concurrent_index_is_undone_by_the_rollback_step(ws: Workspace) -> None:
    _table(ws)
    assert ws.run("up").exit_code == 0
    ws.sql("INSERT INTO t VALUES (1, 'dup')")
    before = ws.fingerprint("t")
    # A unique index over duplicate ids fails after the catalog entry exists: an INVALID index is left.
    ws.migration("0002_uniq", "CREATE UNIQUE INDEX CONCURRENTLY t_id_key ON t (id);", "DROP INDEX CONCURRENTLY IF EXISTS t_id_key;")
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert ws.value("SELECT to_regclass('t_id_key')") is None
    assert ws.fingerprint("t").schema_hash == before.schema_hash


def test_python_migration_runs_in_the_step_transaction_with_the_native_client(ws: Workspace) -> None:
    _table(ws)
    ws.python_migration("0002_backfill", '''
        BACKUP = ["t"]
        RISK = "B"

        def forward(ctx):
            assert ctx.store == "main"
            ctx.log.info("backfilling")
            ctx.client.execute("UPDATE t SET status = 'y' WHERE id <= 50")
            ctx.client.execute("SELECT 1/0")  # fails: the UPDATE above must not survive

        def rollback(ctx):
            ctx.client.execute("UPDATE t SET status = 'x'")
    ''')
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert "ZeroDivision" in result.stderr or "division by zero" in result.stderr
    assert ws.value("SELECT count(*) FROM t WHERE status = 'y'") == 0


def test_python_validate_returning_messages_fails_and_rolls_back(ws: Workspace) -> None:
    _table(ws)
    ws.python_migration("0002_py", '''
        BACKUP = ["t"]

        def forward(ctx):
            ctx.client.execute("UPDATE t SET status = NULL WHERE id = 3")

        def rollback(ctx):
            ctx.client.execute("UPDATE t SET status = 'x' WHERE id = 3")

        def validate(ctx):
            n = ctx.client.execute("SELECT count(*) FROM t WHERE status IS NULL").fetchone()[0]
            return [f"{n} rows without status"] if n else []
    ''')
    result = ws.run("up")
    assert result.exit_code == 3
    assert "1 rows without status" in result.stderr
    assert ws.value("SELECT count(*) FROM t WHERE status IS NULL") == 0


def test_validation_never_changes_the_store(ws: Workspace) -> None:
    _table(ws)
    (ws.migrations / "main" / "0001_t.validate.sql").write_text("DELETE FROM t; SELECT count(*) = 0 FROM t;")
    assert ws.run("up").exit_code == 0
    assert ws.value("SELECT count(*) FROM t") == 100


def test_rollback_to_version_undoes_newest_first(ws: Workspace) -> None:
    _table(ws)
    ws.migration("0002_a", "ALTER TABLE t ADD COLUMN a int;", "ALTER TABLE t DROP COLUMN a;")
    ws.migration("0003_b", "ALTER TABLE t ADD COLUMN b int REFERENCES t (id);", "ALTER TABLE t DROP COLUMN b;")
    ws.sql("SELECT 1")
    assert ws.run("up", "--to", "0002").exit_code == 0
    ws.sql("ALTER TABLE t ADD PRIMARY KEY (id)")  # 0003's FK needs it
    assert ws.run("up").exit_code == 0
    result = ws.run("rollback", "--to", "0001", "--json")
    assert result.exit_code == 0, result.output
    assert [o["version"] for o in json.loads(result.stdout)] == ["0003", "0002"]
    assert [v for v, _ in ws.ledger()] == ["0001", "0002", "0003", "0003", "0002"]


def test_history_lists_the_store_ledger_with_who_and_how_long(ws: Workspace, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("POLYSHIFT_ACTOR", "ci@pipeline")
    _table(ws)
    assert ws.run("up").exit_code == 0
    [row] = json.loads(ws.run("history", "--json").stdout)
    assert row["version"] == "0001" and row["direction"] == "up" and row["applied_by"] == "ci@pipeline"
    assert row["duration_ms"] >= 0 and len(row["checksum"]) == 64
