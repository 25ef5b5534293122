"""`rollback` keeps the promises `up` keeps: no destructive step without a verified backup, every
script parsed before anything runs, user code that exits is a failed step, no rollback or restore
underneath an unfinished release, and an exit code that says whether the command as a whole
returned to where it started."""

from __future__ import annotations

import json
import signal
import textwrap
from typing import Any

from tests.conftest import GraphWorkspace, RedisWorkspace, Workspace
from tests.test_up_failures import ORDERS


def _orders(ws: Workspace) -> None:
    ws.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    assert ws.run("up").exit_code == 0


def _app_schema(ws: Workspace, rollback: str) -> None:
    ws.migration("0001_app", "CREATE SCHEMA app; CREATE TABLE app.users (id int PRIMARY KEY, name text);", rollback)
    assert ws.run("up").exit_code == 0
    ws.sql("INSERT INTO app.users SELECT i, 'user ' || i FROM generate_series(1, 1000) i")


# -- item 3: a destructive rollback step needs a backup -------------------------------------------
def _invoice_numbers(ws: Workspace) -> None:
    """A sequence the application has drawn numbers from: DROP SEQUENCE loses its position, and
    no table scope can be inferred from it."""
    ws.migration("0001_invoice_numbers", "CREATE SEQUENCE invoice_numbers START 1000;", "DROP SEQUENCE invoice_numbers;")
    assert ws.run("up").exit_code == 0
    ws.sql("SELECT nextval('invoice_numbers') FROM generate_series(1, 250)")


def test_rollback_refuses_a_destructive_step_whose_scope_cannot_be_inferred(ws: Workspace) -> None:
    _invoice_numbers(ws)
    result = ws.run("rollback")
    assert result.exit_code == 2, result.output
    assert "0001_invoice_numbers" in result.stderr and "-- polyshift: backup=" in result.stderr
    assert "0001_invoice_numbers.rollback.sql" in result.stderr
    assert ws.value("SELECT last_value FROM invoice_numbers") == 1249
    assert ws.ledger() == [("0001", "up")]
    assert ws.backups() == []


def test_rollback_dry_run_refuses_the_same_step(ws: Workspace) -> None:
    _invoice_numbers(ws)
    result = ws.run("rollback", "--dry-run")
    assert result.exit_code == 2, result.output
    assert "0001_invoice_numbers" in result.stderr


def test_rollback_backs_up_what_a_cypher_step_deletes_before_it_runs(gws: GraphWorkspace) -> None:
    gws.migration("0001_tags", "CREATE (:Tag {name: 'seed'});", "MATCH (t:Tag) DETACH DELETE t;")
    assert gws.run("up").exit_code == 0
    gws.q("UNWIND range(1, 40) AS i CREATE (:Tag {name: 'tag ' + toString(i)})")
    result = gws.run("rollback", "--json")
    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.stdout)
    assert outcome["scope"] == ["Tag"] and outcome["backup"]
    assert gws.q("MATCH (t:Tag) RETURN count(t)") == [[0]]


def test_up_refuses_a_release_whose_cypher_rollback_step_cannot_be_read_without_a_declared_scope(gws: GraphWorkspace) -> None:
    # No label: which nodes the rollback step would delete cannot be told from the statement, so
    # no backup could be sure to hold them; refused before anything changes.
    gws.q("UNWIND range(1, 40) AS i CREATE (:Tag {name: 'tag ' + toString(i)})")
    gws.migration("0001_tags", "CREATE (:Tag {name: 'seed'});", "MATCH (t) WHERE t.name IS NOT NULL DETACH DELETE t;")
    result = gws.run("up")
    assert result.exit_code == 2, result.output
    assert "0001_tags.rollback.cypher" in result.stderr and "// polyshift: backup=" in result.stderr
    assert gws.q("MATCH (t:Tag) RETURN count(t)") == [[40]]
    assert gws.backups() == []


def test_a_scope_declared_in_the_rollback_header_is_backed_up_before_the_step(ws: Workspace) -> None:
    _app_schema(ws, "-- polyshift: backup=app.users\nDROP SCHEMA app CASCADE;")
    result = ws.run("rollback", "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)[0]
    assert outcome["action"] == "rolled-back" and outcome["scope"] == ["app.users"]
    shown = json.loads(ws.run("backup", "show", outcome["backup"], "--json").stdout)
    assert [(t["schema"], t["name"], t["rows"]) for t in shown["meta"]["tables"]] == [("app", "users", 1000)]
    assert ws.value("SELECT to_regnamespace('app')") is None


def test_a_rollback_header_naming_a_missing_table_refuses_before_any_change(ws: Workspace) -> None:
    _app_schema(ws, "-- polyshift: backup=app.userz\nDROP SCHEMA app CASCADE;")
    result = ws.run("rollback")
    assert result.exit_code == 2, result.output
    assert "app.userz" in result.stderr
    assert ws.value("SELECT count(*) FROM app.users") == 1000
    assert ws.ledger() == [("0001", "up")]


def test_a_rollback_header_with_a_forward_only_directive_is_refused_at_load(ws: Workspace) -> None:
    _app_schema(ws, "DROP SCHEMA app CASCADE;")
    (ws.migrations / "main" / "0001_app.rollback.sql").write_text("-- polyshift: flag=app_v2\nDROP SCHEMA app CASCADE;\n")
    result = ws.run("status")
    assert result.exit_code == 2, result.output
    assert "0001_app.rollback.sql" in result.stderr and "flag" in result.stderr


# -- item 6: every script is parsed before anything runs --------------------------------------------
def test_up_refuses_a_rollback_script_that_does_not_parse_before_anything_changes(ws: Workspace) -> None:
    _orders(ws)
    ws.migration("0002_trim", "DELETE FROM orders WHERE id > 100;", "SELEC 1;", "SELECT false;")
    result = ws.run("up")
    assert result.exit_code == 2, result.output
    assert "0002_trim.rollback.sql" in result.stderr and "syntax error" in result.stderr
    assert ws.value("SELECT count(*) FROM orders") == 500
    assert ws.ledger() == [("0001", "up")]
    assert ws.backups() == []


def test_up_refuses_a_validate_script_that_does_not_parse_before_anything_changes(ws: Workspace) -> None:
    _orders(ws)
    ws.migration("0002_trim", "DELETE FROM orders WHERE id > 100;", "SELECT 1;", "SELECT count(*) = 100 FROM orders WHERE;")
    result = ws.run("up")
    assert result.exit_code == 2, result.output
    assert "0002_trim.validate.sql" in result.stderr
    assert ws.value("SELECT count(*) FROM orders") == 500
    assert ws.ledger() == [("0001", "up")]


def test_up_refuses_a_cypher_rollback_that_does_not_parse_before_anything_changes(gws: GraphWorkspace) -> None:
    gws.q("UNWIND range(1, 50) AS i CREATE (:Doc {id: i})")
    gws.migration("0001_prune", "// polyshift: backup=Doc\nMATCH (d:Doc) WHERE d.id > 10 DETACH DELETE d;",
                  "MATCH (d:Doc) WHERE d.note = 'unterminated RETURN d;", "MATCH (d:Doc) RETURN count(d) = 0;")
    result = gws.run("up")
    assert result.exit_code == 2, result.output
    assert "0001_prune.rollback.cypher" in result.stderr
    assert gws.q("MATCH (d:Doc) RETURN count(d)") == [[50]]
    assert gws.backups() == []


def test_an_undo_whose_rollback_cannot_be_parsed_restores_the_backup(ws: Workspace, monkeypatch: Any) -> None:
    # A rollback that escaped the checks before the release (here by switching off the preflight
    # parse and the release's reading of its rollback scope) is a failed rollback step at undo
    # time: the ladder goes on to restore the verified backup.
    from polyshift.framework.engine.pipeline import Pipeline
    from polyshift.framework.engine.runner import Runner

    _orders(ws)
    before = ws.fingerprint("orders")
    ws.migration("0002_trim", "DELETE FROM orders WHERE id > 100;", "SELEC 1;", "SELECT false;")
    monkeypatch.setattr(Pipeline, "parse_scripts", lambda self, pending, adapters: None)
    monkeypatch.setattr(Runner, "release_scope", lambda self, adapter, m, analysis: self._resolve_scope(adapter, m, analysis))
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert "rollback step failed" in result.stderr and "restored backup" in result.stderr
    assert ws.fingerprint("orders") == before


# -- item 7: sys.exit() or KeyboardInterrupt in user code is a failed step ----------------------------
def test_sys_exit_in_a_python_forward_is_a_failed_step_not_a_clean_exit(ws: Workspace) -> None:
    _orders(ws)
    before = ws.fingerprint("orders")
    ws.python_migration("0002_zero", """
        import sys
        BACKUP = ["orders"]

        def forward(ctx):
            ctx.client.execute("UPDATE orders SET total = 0")
            sys.exit(0)

        def rollback(ctx):
            pass
    """)
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert "SystemExit" in result.stderr
    assert ws.fingerprint("orders") == before
    assert ws.ledger() == [("0001", "up")]


def test_keyboard_interrupt_in_a_python_rollback_is_a_failed_rollback_step(ws: Workspace) -> None:
    _orders(ws)
    ws.python_migration("0002_col", """
        BACKUP = ["orders"]

        def forward(ctx):
            ctx.client.execute("ALTER TABLE orders ADD COLUMN region text")

        def rollback(ctx):
            ctx.client.execute("ALTER TABLE orders DROP COLUMN region")
            raise KeyboardInterrupt
    """)
    assert ws.run("up").exit_code == 0
    result = ws.run("rollback")
    assert result.exit_code == 3, result.output
    assert "KeyboardInterrupt" in result.stderr
    assert ws.value("SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'region'") == 1
    assert ws.ledger() == [("0001", "up"), ("0002", "up")]


def test_sys_exit_in_a_python_validate_fails_the_validation(ws: Workspace) -> None:
    _orders(ws)
    before = ws.fingerprint("orders")
    ws.python_migration("0002_col", """
        import sys
        BACKUP = ["orders"]

        def forward(ctx):
            ctx.client.execute("ALTER TABLE orders ADD COLUMN region text")

        def rollback(ctx):
            ctx.client.execute("ALTER TABLE orders DROP COLUMN region")

        def validate(ctx):
            sys.exit("checks cannot run here")
    """)
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert "validation failed" in result.stderr and "SystemExit" in result.stderr
    assert ws.fingerprint("orders").schema_hash == before.schema_hash


def test_sys_exit_at_module_level_is_a_load_error_for_every_command(ws: Workspace) -> None:
    _orders(ws)
    ws.python_migration("0002_exits", "import sys\nsys.exit(0)\n")
    for command in (["status"], ["up"], ["rollback"]):
        result = ws.run(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "0002_exits.py" in result.stderr and "SystemExit" in result.stderr
    assert ws.value("SELECT count(*) FROM orders") == 500


def test_sys_exit_in_a_redis_forward_is_undone_by_its_rollback(rws: RedisWorkspace) -> None:
    rws.r.mset({f"session:{i}": str(i) for i in range(100)})
    before = rws.fingerprint("session:*")
    rws.python_migration("0001_rekey", """
        import sys
        BACKUP = ["session:*", "sess:*"]

        def forward(ctx):
            ctx.helpers.rename_prefix("session:", "sess:")
            sys.exit(1)

        def rollback(ctx):
            ctx.helpers.rename_prefix("sess:", "session:")
    """)
    result = rws.run("up")
    assert result.exit_code == 3, result.output
    assert "SystemExit" in result.stderr
    assert rws.fingerprint("session:*") == before


def test_sys_exit_in_a_graph_python_forward_is_a_failed_step(gws: GraphWorkspace) -> None:
    gws.q("UNWIND range(1, 20) AS i CREATE (:Doc {id: i})")
    before = gws.fingerprint("Doc")
    (gws.migrations / "graph" / "0001_tag.py").write_text(textwrap.dedent("""
        import sys
        BACKUP = ["Doc"]

        def forward(ctx):
            ctx.client.run("MATCH (d:Doc) SET d.tagged = true")
            sys.exit(2)

        def rollback(ctx):
            ctx.client.run("MATCH (d:Doc) REMOVE d.tagged")
    """))
    result = gws.run("up")
    assert result.exit_code == 3, result.output
    assert "SystemExit" in result.stderr
    assert gws.fingerprint("Doc") == before


def test_sys_exit_in_a_python_gate_fails_the_gate(app: Any) -> None:
    # Module names are unique per test: the suite runs the CLI in-process, where imports are cached.
    (app.root / "gate_that_exits.py").write_text("import sys\n\ndef check(ctx):\n    sys.exit(0)\n")
    app.write_release(gates='{ kind = "python", name = "exits", callable = "gate_that_exits:check" }')
    blue = app.state()
    result = app.run("up")
    assert result.exit_code == 3, result.output
    assert "exits" in result.stderr and "SystemExit" in result.stderr
    assert app.state() == blue


def test_a_python_gate_that_exits_when_imported_is_refused_before_anything_changes(app: Any) -> None:
    (app.root / "gate_that_exits_at_import.py").write_text("import sys\nsys.exit(0)\n\ndef check(ctx):\n    return True\n")
    app.write_release(gates='{ kind = "python", name = "exits", callable = "gate_that_exits_at_import:check" }')
    blue = app.state()
    result = app.run("up")
    assert result.exit_code == 2, result.output
    assert "exits" in result.stderr and "SystemExit" in result.stderr
    assert app.state() == blue
    assert app.backups() == []


# -- item 8: no rollback or restore underneath an unfinished release -------------------------------
def _killed_release(ws: Workspace) -> str:
    """0001 applied with a backup; 0002 killed (SIGKILL) after committing half of its change."""
    _orders(ws)
    backup: str = json.loads(ws.run("backup", "create", "main", "--scope", "orders", "--json").stdout)["id"]
    ws.python_migration("0002_purge", """
        import os, signal
        BACKUP = ["orders"]
        TRANSACTION = False

        def forward(ctx):
            ctx.client.execute("DELETE FROM orders WHERE id > 250")
            os.kill(os.getpid(), signal.SIGKILL)

        def rollback(ctx):
            pass
    """)
    runner = ws.spawn("up")
    runner.communicate(timeout=120)
    assert runner.returncode == -signal.SIGKILL
    assert ws.value("SELECT count(*) FROM orders") == 250
    return backup


def test_rollback_refuses_while_a_release_run_is_unfinished(ws: Workspace) -> None:
    _killed_release(ws)
    result = ws.run("rollback")
    assert result.exit_code == 2, result.output
    assert "did not finish" in result.stderr and "polyshift recover" in result.stderr
    assert ws.value("SELECT count(*) FROM orders") == 250
    assert ws.run("recover").exit_code == 3
    assert ws.value("SELECT count(*) FROM orders") == 500


def test_backup_restore_refuses_while_a_release_run_is_unfinished(ws: Workspace) -> None:
    backup = _killed_release(ws)
    result = ws.run("backup", "restore", backup, "--yes")
    assert result.exit_code == 2, result.output
    assert "did not finish" in result.stderr and "polyshift recover" in result.stderr
    assert ws.value("SELECT count(*) FROM orders") == 250
    assert ws.run("recover").exit_code == 3
    assert ws.value("SELECT count(*) FROM orders") == 500


# -- item 11: what a multi-step rollback did, migration by migration -----------------------------
def _three(ws: Workspace, failing_rollback: str) -> None:
    ws.migration("0001_a", "CREATE TABLE a (id int); INSERT INTO a VALUES (1);", "DROP TABLE a;")
    ws.migration("0002_b", "CREATE TABLE b (id int); INSERT INTO b VALUES (2);", failing_rollback)
    ws.migration("0003_c", "CREATE TABLE c (id int); INSERT INTO c VALUES (3);", "DROP TABLE c;")
    assert ws.run("up").exit_code == 0


def test_rollback_to_that_stops_part_way_reports_each_migration_and_exits_4(ws: Workspace) -> None:
    _three(ws, "DROP TABLE b; SELECT no_such_function();")
    result = ws.run("rollback", "--to", "0")
    assert result.exit_code == 4, result.output
    assert "0003_c rolled back" in result.stderr
    assert "0002_b failed" in result.stderr and "0001_a not attempted" in result.stderr
    assert ws.ledger() == [("0001", "up"), ("0002", "up"), ("0003", "up"), ("0003", "down")]
    assert ws.value("SELECT count(*) FROM b") == 1


def test_rollback_to_that_stops_part_way_lists_the_outcomes_in_json(ws: Workspace) -> None:
    _three(ws, "DROP TABLE b; SELECT no_such_function();")
    result = ws.run("rollback", "--to", "0", "--json")
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    assert report["exit_code"] == 4
    assert [(o["version"], o["action"]) for o in report["outcomes"]] == [
        ("0003", "rolled-back"), ("0002", "failed-unchanged"), ("0001", "not-attempted")]
    assert report["outcomes"][0]["backup"]


def test_rollback_whose_first_step_fails_and_is_verified_unchanged_exits_3(ws: Workspace) -> None:
    _three(ws, "DROP TABLE b; SELECT no_such_function();")
    assert ws.run("rollback").exit_code == 0  # 0003
    result = ws.run("rollback", "--to", "0", "--json")
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert [(o["version"], o["action"]) for o in report["outcomes"]] == [("0002", "failed-unchanged"), ("0001", "not-attempted")]
    assert ws.value("SELECT count(*) FROM b") == 1


def test_rollback_json_lists_every_migration_rolled_back(ws: Workspace) -> None:
    _three(ws, "DROP TABLE b;")
    result = ws.run("rollback", "--to", "0", "--json")
    assert result.exit_code == 0, result.output
    assert [(o["version"], o["action"]) for o in json.loads(result.stdout)] == [
        ("0003", "rolled-back"), ("0002", "rolled-back"), ("0001", "rolled-back")]
