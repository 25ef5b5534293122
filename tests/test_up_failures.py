"""What `up` does when a step fails: nothing is left half-done, and the exit code says so."""

from __future__ import annotations

import pytest

from tests.conftest import Workspace

ORDERS = """
    CREATE TABLE orders (id serial PRIMARY KEY, total numeric(10,2) NOT NULL, note text);
    INSERT INTO orders (total, note) SELECT i * 1.5, 'order ' || i FROM generate_series(1, 500) i;
"""


def _base(ws: Workspace) -> None:
    ws.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    assert ws.run("up").exit_code == 0


def test_forward_failing_midway_leaves_no_trace(ws: Workspace) -> None:
    _base(ws)
    before = ws.fingerprint("orders")
    ws.migration(
        "0002_broken",
        """
        ALTER TABLE orders ADD COLUMN region text;
        CREATE TABLE shipments (id int);
        UPDATE orders SET total = total * 2;
        SELECT 1 / 0;
        """,
        "ALTER TABLE orders DROP COLUMN region; DROP TABLE shipments;",
    )
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert "division by zero" in result.stderr
    assert "verified unchanged" in result.stderr
    assert ws.value("SELECT to_regclass('shipments')") is None
    assert ws.value("SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'region'") == 0
    assert ws.fingerprint("orders") == before
    assert ws.ledger() == [("0001", "up")]


def test_validate_failure_runs_rollback_and_schema_is_as_before_exit_3(ws: Workspace) -> None:
    _base(ws)
    before = ws.fingerprint("orders")
    ws.migration(
        "0002_region",
        "ALTER TABLE orders ADD COLUMN region text;",
        "ALTER TABLE orders DROP COLUMN region;",
        "SELECT count(*) = 0 FROM orders WHERE region IS NULL;",  # false: every region is NULL
    )
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert "validation failed" in result.stderr
    assert "rolled back with its rollback step" in result.stderr
    after = ws.fingerprint("orders")
    assert after.schema_hash == before.schema_hash
    assert after.items == before.items
    assert ws.ledger() == [("0001", "up"), ("0002", "up"), ("0002", "down")]
    assert "0002" in ws.run("status", "--json").stdout  # pending again


def test_broken_rollback_step_triggers_restore_and_data_is_identical_exit_3(ws: Workspace) -> None:
    _base(ws)
    before = ws.fingerprint("orders")
    ws.migration(
        "0002_drop_note",
        "ALTER TABLE orders DROP COLUMN note; UPDATE orders SET total = 0;",
        "ALTER TABLE orders ADD COLUMN note text; SELECT no_such_function();",
        "SELECT count(*) = 0 FROM orders WHERE total = 0;",
    )
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert "rollback step failed" in result.stderr
    assert "restored backup" in result.stderr and "verified" in result.stderr
    after = ws.fingerprint("orders")
    assert after.data_hash == before.data_hash
    assert after.counts == {"public.orders": 500}
    assert after.schema_hash == before.schema_hash
    assert ws.value("SELECT note FROM orders WHERE id = 7") == "order 7"
    # The ledger knows the migration was undone by a restore, so it is pending again.
    assert ws.ledger()[-1] == ("0002", "down")


def test_unverifiable_undo_exits_4_and_says_what_to_run(ws: Workspace) -> None:
    _base(ws)
    # Additive forward: nothing to back up. A rollback that fails leaves the new table behind.
    ws.migration(
        "0002_audit_table",
        "CREATE TABLE order_audit (id int);",
        "SELECT no_such_function();",
        "SELECT false;",
    )
    result = ws.run("up")
    assert result.exit_code == 4, result.output
    assert "no backup to restore" in result.stderr
    assert "hint:" in result.stderr


def test_failed_migration_is_journaled_and_audited(ws: Workspace) -> None:
    _base(ws)
    ws.migration("0002_bad", "SELECT 1/0;", "SELECT 1;")
    assert ws.run("up").exit_code == 3
    audit = ws.run("audit", "--json").stdout
    assert '"migration.failed"' in audit
    assert ws.run("audit", "--verify").exit_code == 0


def test_rerun_after_fixing_a_failed_migration_applies_it_once(ws: Workspace) -> None:
    _base(ws)
    ws.migration("0002_region", "ALTER TABLE orders ADD COLUMN region text; SELECT 1/0;", "ALTER TABLE orders DROP COLUMN region;")
    assert ws.run("up").exit_code == 3
    ws.migration("0002_region", "ALTER TABLE orders ADD COLUMN region text;", "ALTER TABLE orders DROP COLUMN region;")
    assert ws.run("up").exit_code == 0
    assert ws.ledger() == [("0001", "up"), ("0002", "up")]
    assert ws.run("up").exit_code == 0
    assert ws.ledger() == [("0001", "up"), ("0002", "up")]


def test_after_each_forward_the_ledger_is_read_for_that_version_only(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole ledger is read once, to plan; the check after each forward reads the rows of its
    own version (issue 19: a long history read the growing ledger after every migration)."""
    from polyshift.adapters.postgres.adapter import PostgresAdapter

    for n in range(1, 4):
        ws.migration(f"000{n}_t{n}", f"CREATE TABLE t{n} (id int);", f"DROP TABLE t{n};")
    whole: list[int] = []
    real = PostgresAdapter.ledger

    def counted(self: PostgresAdapter) -> list[object]:
        whole.append(1)
        return list(real(self))

    monkeypatch.setattr(PostgresAdapter, "ledger", counted)
    result = ws.run("up")
    assert result.exit_code == 0, result.output
    assert len(whole) == 1
    assert ws.ledger() == [("0001", "up"), ("0002", "up"), ("0003", "up")]


def test_a_forward_whose_ledger_row_never_landed_is_undone(ws: Workspace) -> None:
    """The check after forward still catches a ledger that does not record the migration (here a
    trigger swallows the row the step's own transaction writes)."""
    _base(ws)
    ws.migration("0002_forget", """
        CREATE FUNCTION forget() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
        CREATE TRIGGER forget BEFORE INSERT ON _polyshift.schema_history FOR EACH ROW
          WHEN (NEW.version = '0002') EXECUTE FUNCTION forget();
    """, "DROP TRIGGER IF EXISTS forget ON _polyshift.schema_history; DROP FUNCTION IF EXISTS forget();")
    result = ws.run("up")
    assert result.exit_code != 0, result.output
    assert "the ledger does not record 0002_forget as applied" in result.output
    assert ws.ledger() == [("0001", "up")]
