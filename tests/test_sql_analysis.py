"""Risk categories and backup scope read from SQL by PostgreSQL's own parser (pglast)."""

from __future__ import annotations

import pytest

from polyshift.adapters.postgres.analysis import analyze_sql, inferred_scope
from polyshift.framework.core.errors import MigrationLoadError
from polyshift.framework.core.migration import Risk

CASES = [
    ("CREATE TABLE t (id int)", Risk.A, []),
    ("ALTER TABLE users ADD COLUMN nickname text", Risk.A, []),
    # Without the catalog, a table is assumed to exist and hold rows: an index build blocks its writes.
    ("CREATE INDEX users_email_idx ON users (email)", Risk.B, []),
    ("CREATE INDEX CONCURRENTLY users_email_idx ON users (email)", Risk.A, []),
    # A constant default is stored once in the catalog (PostgreSQL 11+): nothing to rewrite, nothing to lose.
    ("ALTER TABLE users ADD COLUMN active bool NOT NULL DEFAULT true", Risk.A, []),
    ("ALTER TABLE users ADD COLUMN seen_at timestamptz DEFAULT clock_timestamp()", Risk.B, []),
    ("ALTER TABLE users ALTER COLUMN id TYPE bigint", Risk.B, ["users"]),
    ("ALTER TABLE users ALTER COLUMN email SET NOT NULL", Risk.B, []),
    ("ALTER TABLE users ADD CONSTRAINT u_fk FOREIGN KEY (a) REFERENCES t (id) NOT VALID", Risk.A, []),
    ("ALTER TABLE users ADD CONSTRAINT u_fk FOREIGN KEY (a) REFERENCES t (id)", Risk.B, []),
    ("ALTER TABLE users VALIDATE CONSTRAINT u_fk", Risk.A, []),
    ("REINDEX TABLE users", Risk.B, []),
    ("ALTER TABLE users RENAME TO people", Risk.B, ["users"]),
    ("ALTER TABLE users DROP COLUMN email", Risk.C, ["users"]),
    ("DROP TABLE IF EXISTS app.legacy, other CASCADE", Risk.C, ["app.legacy", "other"]),
    ("TRUNCATE sessions, carts", Risk.C, ["sessions", "carts"]),
    ("UPDATE users SET email = lower(email)", Risk.C, ["users"]),
    ("DELETE FROM audit_log WHERE at < now() - interval '1 year'", Risk.C, ["audit_log"]),
    # Scope entries are SQL names: a quoted name stays quoted, so it never resolves to its lowercase twin.
    ('DELETE FROM "Mixed Case"', Risk.C, ['"Mixed Case"']),
    ('DELETE FROM "My Schema"."odd.name"', Risk.C, ['"My Schema"."odd.name"']),
    # Statements that change rows from inside another construct are read to the bottom of their tree.
    ("MERGE INTO users u USING s ON u.id = s.id WHEN MATCHED THEN DELETE", Risk.C, ["users"]),
    ("MERGE INTO users u USING s ON u.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id)", Risk.A, ["users"]),
    ("WITH gone AS (DELETE FROM users RETURNING id) SELECT count(*) FROM gone", Risk.C, ["users"]),
    ("INSERT INTO users VALUES (1) ON CONFLICT (id) DO UPDATE SET name = excluded.name", Risk.C, ["users"]),
    ("INSERT INTO users VALUES (1) ON CONFLICT DO NOTHING", Risk.A, ["users"]),
    ("DO $$ BEGIN DELETE FROM users WHERE id = 1; END $$", Risk.C, ["users"]),
    ("DROP SCHEMA app", Risk.B, []),
    ("DROP TYPE mood", Risk.B, []),
    ("DROP MATERIALIZED VIEW stats", Risk.B, []),
]


@pytest.mark.parametrize(("sql", "risk", "scope"), CASES, ids=[c[0][:40] for c in CASES])
def test_statement_risk_and_scope(sql: str, risk: Risk, scope: list[str]) -> None:
    statements = analyze_sql(sql)
    assert Risk.highest([s.risk for s in statements]) == risk
    assert inferred_scope(statements) == scope


def test_tables_created_in_the_same_script_are_not_in_scope() -> None:
    statements = analyze_sql("CREATE TABLE staging (id int); UPDATE staging SET id = 1; UPDATE users SET a = 1;")
    assert inferred_scope(statements) == ["users"]


@pytest.mark.parametrize("sql", [
    "CREATE INDEX CONCURRENTLY i ON t (a)",
    "DROP INDEX CONCURRENTLY IF EXISTS i",
    "REINDEX (CONCURRENTLY) TABLE t",
    "VACUUM t",
    "ALTER SYSTEM SET work_mem = '64MB'",
])
def test_statements_that_cannot_run_in_a_transaction_are_detected(sql: str) -> None:
    assert analyze_sql(sql)[0].non_transactional


def test_analyze_inside_a_transaction_is_not_mistaken_for_vacuum() -> None:
    assert analyze_sql("ANALYZE t")[0].non_transactional is None


def test_not_null_without_default_is_flagged() -> None:
    [statement] = analyze_sql("ALTER TABLE users ADD COLUMN tenant int NOT NULL")
    assert [f.code for f in statement.findings] == ["PS106"]
    assert "fails on a non-empty table" in statement.findings[0].message


def test_a_serial_primary_key_has_a_default_and_is_flagged_for_its_rewrite_and_index() -> None:
    [statement] = analyze_sql("ALTER TABLE account ADD COLUMN b SERIAL PRIMARY KEY")
    assert sorted(f.code for f in statement.findings) == ["PS103", "PS104"]


@pytest.mark.parametrize("sql", ["REINDEX SCHEMA app", "REINDEX DATABASE", "CLUSTER"])
def test_utility_statements_postgresql_refuses_in_a_transaction_run_outside_one(sql: str) -> None:
    assert analyze_sql(sql)[0].non_transactional


def test_reindex_with_concurrently_false_runs_in_the_transaction_and_is_a_lock_hazard() -> None:
    [statement] = analyze_sql("REINDEX (CONCURRENTLY false) TABLE users")
    assert statement.non_transactional is None
    assert [f.code for f in statement.findings] == ["PS132"]


def test_drop_schema_without_cascade_loses_nothing_and_is_not_refused_for_a_scope() -> None:
    [statement] = analyze_sql("DROP SCHEMA scratch")
    assert statement.risk == Risk.B  # fails while the schema holds objects (unknown without the catalog)
    assert inferred_scope([statement]) == []


def test_statement_text_survives_non_ascii() -> None:
    statements = analyze_sql("INSERT INTO t VALUES ('ünïcödé ✓'); SELECT 2;")
    assert statements[0].sql == "INSERT INTO t VALUES ('ünïcödé ✓')"
    assert statements[1].sql == "SELECT 2"


def test_syntax_error_names_the_file() -> None:
    with pytest.raises(MigrationLoadError, match=r"0001_x\.forward\.sql: SQL syntax error"):
        analyze_sql("SELEC 1", origin="main/0001_x.forward.sql")


def test_dynamic_sql_in_a_do_block_is_opaque() -> None:
    [statement] = analyze_sql("DO $$ BEGIN EXECUTE 'TRUNCATE ' || 'users'; END $$")
    assert statement.risk == Risk.C
    assert statement.effects.opaque == ["the DO block runs dynamic SQL (EXECUTE)"]


def test_a_do_block_in_another_language_is_opaque() -> None:
    [statement] = analyze_sql("DO LANGUAGE plpython3u $$ plpy.execute('DELETE FROM users') $$")
    assert statement.effects.opaque == ["a DO block in language plpython3u"]


def test_function_calls_are_collected_for_the_catalog_to_judge() -> None:
    [statement] = analyze_sql("SELECT purge(1), app.clean() FROM t")
    assert [c.display for c in statement.effects.calls] == ["purge", "app.clean"]


def test_a_function_created_by_the_script_is_read_for_what_it_writes() -> None:
    statements = analyze_sql(
        "CREATE FUNCTION purge() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DELETE FROM users; END $$; SELECT purge();")
    [effects] = statements[0].defines.values()
    assert [(r.op.value, r.relation.sql) for r in effects.rows] == [("DELETE", "users")]


def test_drop_type_cascade_is_left_for_the_catalog() -> None:
    [statement] = analyze_sql("DROP TYPE app.mood CASCADE")
    assert statement.risk == Risk.C
    assert statement.drops[0].names == (("app", "mood"),)
