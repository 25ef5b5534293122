"""The backup scope is what a step really changes: foreign-key actions, triggers and the objects a
``DROP … CASCADE`` takes with it, for forward steps, rollback steps and the undo alike."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Workspace

SHOP = """
CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users (id) ON DELETE CASCADE, total int);
CREATE TABLE order_items (id int PRIMARY KEY, order_id int REFERENCES orders (id) ON DELETE CASCADE, sku text);
INSERT INTO users SELECT i, 'user ' || i FROM generate_series(1, 20) i;
INSERT INTO orders SELECT i, 1 + i % 20, i * 10 FROM generate_series(1, 60) i;
INSERT INTO order_items SELECT i, 1 + i % 60, 'sku-' || i FROM generate_series(1, 180) i;
"""

REPORTING = """
CREATE TABLE docs (id int PRIMARY KEY, title text NOT NULL, body text);
INSERT INTO docs SELECT i, 'title ' || i, repeat('x', i) FROM generate_series(1, 50) i;
CREATE VIEW doc_titles AS SELECT id, title FROM docs WHERE id > 5;
CREATE VIEW doc_titles_upper AS SELECT id, upper(title) AS title FROM doc_titles;
CREATE MATERIALIZED VIEW doc_stats AS SELECT count(*) AS n, sum(length(body)) AS chars FROM docs;
CREATE UNIQUE INDEX doc_stats_n ON doc_stats (n);
"""


def _everything(ws: Workspace, *tables: str) -> Any:
    fp = ws.fingerprint(*tables)
    return fp.schema_hash, {k: v.get("data") for k, v in fp.items.items()}


def _tables_backed_up(ws: Workspace) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in ws.backups():
        manifest = json.loads(ws.run("backup", "show", row["id"], "--json").stdout)
        out.update({t["qualified"]: t["rows"] for t in manifest["meta"]["tables"]})
    return out


def test_plan_names_the_foreign_key_that_puts_a_table_in_the_scope(ws: Workspace) -> None:
    ws.sql(SHOP)
    ws.migration("0001_prune", "DELETE FROM users WHERE id > 15;", "SELECT 1;")
    plan = ws.run("plan", "--json")
    assert plan.exit_code == 0, plan.output
    [row] = json.loads(plan.stdout)
    assert row["scope"] == ["public.users", "public.orders", "public.order_items"]
    assert "via orders_user_id_fkey ON DELETE CASCADE from public.users" in row["reasons"]["public.orders"]
    assert "via order_items_order_id_fkey ON DELETE CASCADE from public.orders" in row["reasons"]["public.order_items"]
    table = ws.run("plan")
    assert "via orders_user_id_fkey ON DELETE CASCADE" in table.stdout


def test_a_rollback_step_whose_cascade_reaches_other_tables_backs_them_up_first(ws: Workspace) -> None:
    ws.sql(SHOP)
    ws.migration("0001_vip", "INSERT INTO users VALUES (100, 'vip');", "DELETE FROM users WHERE id >= 19;")
    assert ws.run("up").exit_code == 0
    orders_before = ws.value("SELECT count(*) FROM orders WHERE user_id >= 19")
    assert orders_before > 0
    result = ws.run("rollback", "--steps", "1")
    assert result.exit_code == 0, result.output
    backed_up = _tables_backed_up(ws)
    assert backed_up["public.orders"] == 60 and backed_up["public.order_items"] == 180


def test_a_rollback_step_that_deletes_more_than_the_forward_added_is_restored_by_the_undo(ws: Workspace) -> None:
    ws.sql(SHOP)
    before = _everything(ws, "users", "orders", "order_items")
    ws.migration("0001_vip", "INSERT INTO users VALUES (100, 'vip');", "DELETE FROM users WHERE id >= 10;",
                 validate="SELECT false;")
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert _everything(ws, "users", "orders", "order_items") == before


def test_views_and_a_materialized_view_dropped_by_cascade_come_back_with_the_undo(ws: Workspace) -> None:
    ws.sql(REPORTING)
    before = _everything(ws, "docs")
    titles = ws.sql("SELECT * FROM doc_titles_upper ORDER BY id")
    ws.migration("0001_drop_docs", "DROP TABLE docs CASCADE;", "SELECT 1;", validate="SELECT false;")
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert _everything(ws, "docs") == before
    assert ws.sql("SELECT * FROM doc_titles_upper ORDER BY id") == titles
    assert ws.sql("SELECT n, chars FROM doc_stats") == [(50, sum(range(1, 51)))]
    assert ws.value("SELECT count(*) FROM pg_indexes WHERE indexname = 'doc_stats_n'") == 1


def test_a_column_dropped_with_cascade_takes_its_view_and_both_come_back(ws: Workspace) -> None:
    ws.sql(REPORTING)
    before = _everything(ws, "docs")
    ws.migration("0001_drop_title", "ALTER TABLE docs DROP COLUMN title CASCADE;", "SELECT 1;", validate="SELECT false;")
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert _everything(ws, "docs") == before
    assert ws.value("SELECT count(*) FROM doc_titles_upper") == 45


def test_drop_type_cascade_backs_up_every_table_that_loses_a_column(ws: Workspace) -> None:
    ws.sql("""
        CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
        CREATE TABLE people (id int PRIMARY KEY, feeling mood NOT NULL, past mood[]);
        INSERT INTO people SELECT i, (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::mood, ARRAY['ok']::mood[] FROM generate_series(1, 30) i;
    """)
    before = _everything(ws, "people")
    ws.migration("0001_drop_mood", "DROP TYPE mood CASCADE;", "SELECT 1;", validate="SELECT false;")
    plan = json.loads(ws.run("plan", "--json").stdout)
    assert plan[0]["scope"] == ["public.people"]
    assert "column feeling (mood) dropped by" in plan[0]["reasons"]["public.people"]
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert _everything(ws, "people") == before


def test_drop_schema_cascade_is_backed_up_and_the_undo_brings_the_schema_back(ws: Workspace) -> None:
    ws.sql("""
        CREATE SCHEMA app;
        CREATE TYPE app.state AS ENUM ('new', 'done');
        CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.at := now(); RETURN NEW; END $$;
        CREATE TABLE app.jobs (id int PRIMARY KEY, state app.state NOT NULL DEFAULT 'new', at timestamptz);
        CREATE TRIGGER jobs_touch BEFORE UPDATE ON app.jobs FOR EACH ROW EXECUTE FUNCTION app.touch();
        CREATE TABLE app.runs (id int PRIMARY KEY, job_id int REFERENCES app.jobs (id));
        INSERT INTO app.jobs (id) SELECT generate_series(1, 1000);
        INSERT INTO app.runs SELECT i, i FROM generate_series(1, 100) i;
    """)
    before = _everything(ws, "app.jobs", "app.runs")
    ws.migration("0001_drop_app", "DROP SCHEMA app CASCADE;", "SELECT 1;", validate="SELECT false;")
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert _everything(ws, "app.jobs", "app.runs") == before
    # The trigger and its function are back too: an update still stamps the row.
    ws.sql("UPDATE app.jobs SET state = 'done' WHERE id = 1")
    assert ws.value("SELECT at IS NOT NULL FROM app.jobs WHERE id = 1") is True


def test_an_audit_trigger_writing_elsewhere_puts_its_table_in_the_scope(ws: Workspace) -> None:
    ws.sql("""
        CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
        CREATE TABLE ledger (id bigserial PRIMARY KEY, account int, delta int);
        CREATE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO ledger (account, delta) VALUES (NEW.id, NEW.balance - OLD.balance); RETURN NEW; END $$;
        CREATE TRIGGER accounts_log AFTER UPDATE OF balance ON accounts FOR EACH ROW EXECUTE FUNCTION log_change();
        INSERT INTO accounts SELECT i, 100 FROM generate_series(1, 10) i;
        INSERT INTO ledger (account, delta) SELECT i, 100 FROM generate_series(1, 10) i;
    """)
    before = _everything(ws, "accounts", "ledger")
    ws.migration("0001_interest", "UPDATE accounts SET balance = balance + 1;", "SELECT 1;", validate="SELECT false;")
    [row] = json.loads(ws.run("plan", "--json").stdout)
    assert row["reasons"]["public.ledger"].startswith("INSERT by trigger accounts_log on public.accounts")
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert _everything(ws, "accounts", "ledger") == before


def test_a_trigger_that_only_fires_for_other_columns_does_not_widen_the_scope(ws: Workspace) -> None:
    ws.sql("""
        CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL, note text);
        CREATE TABLE ledger (id bigserial PRIMARY KEY, account int);
        CREATE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO ledger (account) VALUES (NEW.id); RETURN NEW; END $$;
        CREATE TRIGGER accounts_log AFTER UPDATE OF balance ON accounts FOR EACH ROW EXECUTE FUNCTION log_change();
    """)
    ws.migration("0001_note", "UPDATE accounts SET note = 'x';", "SELECT 1;")
    [row] = json.loads(ws.run("plan", "--json").stdout)
    assert row["scope"] == ["public.accounts"]


def test_writes_through_an_updatable_view_back_up_its_base_table(ws: Workspace) -> None:
    ws.sql(SHOP + "CREATE VIEW active_users AS SELECT id, name FROM users WHERE id < 100;")
    ws.migration("0001_prune", "DELETE FROM active_users WHERE id = 3;", "SELECT 1;")
    [row] = json.loads(ws.run("plan", "--json").stdout)
    assert row["scope"][:2] == ["public.users", "public.orders"]
    assert "through view public.active_users" in row["reasons"]["public.users"]


def test_emergency_rollback_backs_up_and_reports_what_the_application_wrote_to_a_table_it_drops(ws: Workspace) -> None:
    ws.sql(SHOP)
    ws.migration("0001_coupons", "CREATE TABLE coupons (code text PRIMARY KEY, user_id int);", "DROP TABLE coupons;")
    assert ws.run("up").exit_code == 0
    ws.sql("INSERT INTO coupons SELECT 'c' || i, i FROM generate_series(1, 500) i")  # the application, after the cutover
    result = ws.run("emergency-rollback", "0001")
    assert result.exit_code == 0, result.output
    assert "public.coupons: 500 row(s) written since the release began will be dropped" in result.stderr
    safety = [b for b in ws.backups() if b["reason"] == "before 0001_coupons emergency rollback"]
    assert len(safety) == 1 and safety[0]["scope"] == ["public.coupons"]
    manifest = json.loads(ws.run("backup", "show", safety[0]["id"], "--json").stdout)
    assert manifest["meta"]["tables"][0]["rows"] == 500
    assert ws.value("SELECT to_regclass('coupons')") is None


def test_a_partition_and_its_parent_in_one_scope_are_backed_up_once_and_restored_once(ws: Workspace) -> None:
    ws.sql("""
        CREATE TABLE events (id int, at date NOT NULL) PARTITION BY RANGE (at);
        CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        INSERT INTO events SELECT i, date '2025-06-01' + i FROM generate_series(1, 400) i;
    """)
    before = _everything(ws, "events")
    ws.migration("0001_trim", "-- polyshift: backup=events\nDELETE FROM events_2026;", "SELECT 1;", validate="SELECT false;")
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert _everything(ws, "events") == before
    assert list(_tables_backed_up(ws)) == ["public.events"]


def test_policies_and_defaults_elsewhere_dropped_by_cascade_come_back_with_the_undo(ws: Workspace) -> None:
    ws.sql("""
        CREATE TABLE tenants (id serial PRIMARY KEY, name text);
        CREATE TABLE notes (id int PRIMARY KEY, tenant int, body text, ticket int DEFAULT nextval('tenants_id_seq'));
        ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
        CREATE POLICY notes_by_tenant ON notes USING (tenant IN (SELECT id FROM tenants));
        INSERT INTO tenants (name) SELECT 't' || i FROM generate_series(1, 5) i;
        INSERT INTO notes SELECT i, 1 + i % 5, 'n' || i FROM generate_series(1, 20) i;
    """)
    before = _everything(ws, "tenants", "notes")
    ws.migration("0001_drop_tenants", "DROP TABLE tenants CASCADE;", "SELECT 1;", validate="SELECT false;")
    result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert _everything(ws, "tenants", "notes") == before
    assert ws.value("SELECT count(*) FROM pg_policy WHERE polname = 'notes_by_tenant'") == 1
    assert ws.value("SELECT column_default FROM information_schema.columns WHERE table_name = 'notes' "
                    "AND column_name = 'ticket'") == "nextval('tenants_id_seq'::regclass)"
