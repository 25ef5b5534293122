"""Risk categories and backup scope read from SQL by PostgreSQL's own parser (pglast)."""

from __future__ import annotations

import pytest

from adapters.sql_analysis import analyze_sql, inferred_scope
from framework.errors import MigrationLoadError
from framework.migration import Risk

CASES = [
    ("CREATE TABLE t (id int)", Risk.A, []),
    ("ALTER TABLE users ADD COLUMN nickname text", Risk.A, []),
    ("CREATE INDEX users_email_idx ON users (email)", Risk.A, []),
    ("ALTER TABLE users ADD COLUMN active bool NOT NULL DEFAULT true", Risk.B, ["users"]),
    ("ALTER TABLE users ALTER COLUMN id TYPE bigint", Risk.B, ["users"]),
    ("ALTER TABLE users ALTER COLUMN email SET NOT NULL", Risk.B, ["users"]),
    ("REINDEX TABLE users", Risk.B, []),
    ("ALTER TABLE users RENAME TO people", Risk.B, ["users"]),
    ("ALTER TABLE users DROP COLUMN email", Risk.C, ["users"]),
    ("DROP TABLE IF EXISTS app.legacy, other CASCADE", Risk.C, ["app.legacy", "other"]),
    ("TRUNCATE sessions, carts", Risk.C, ["sessions", "carts"]),
    ("UPDATE users SET email = lower(email)", Risk.C, ["users"]),
    ("DELETE FROM audit_log WHERE at < now() - interval '1 year'", Risk.C, ["audit_log"]),
    ('DELETE FROM "Mixed Case"', Risk.C, ["Mixed Case"]),
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
    assert "fails on a non-empty table" in statement.notes[0]


def test_statement_text_survives_non_ascii() -> None:
    statements = analyze_sql("INSERT INTO t VALUES ('ünïcödé ✓'); SELECT 2;")
    assert statements[0].sql == "INSERT INTO t VALUES ('ünïcödé ✓')"
    assert statements[1].sql == "SELECT 2"


def test_syntax_error_names_the_file() -> None:
    with pytest.raises(MigrationLoadError, match=r"0001_x\.forward\.sql: SQL syntax error"):
        analyze_sql("SELEC 1", origin="main/0001_x.forward.sql")
