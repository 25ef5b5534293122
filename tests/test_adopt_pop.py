"""``polyshift import --from pop``: gobuffalo/pop's one-directory-for-every-database layout (as Ory's
popx uses it), read for one dialect. Small directories written here in pop's documented file
naming; the real public history (Ory Kratos) is in test_adopt_kratos.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Workspace


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def imported(ws: Workspace, source: Path, *extra: str) -> dict[str, Any]:
    result = ws.run("--json", "import", "--from", "pop", str(source), "--store", "main", "--dialect", "postgres", *extra)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def refused(ws: Workspace, source: Path, *args: str) -> str:
    result = ws.run("import", "--from", "pop", str(source), "--store", "main", *args)
    assert result.exit_code == 2, result.output
    assert not (ws.migrations / "main").exists() or not any((ws.migrations / "main").iterdir())
    return result.output


@pytest.fixture
def accounts(tmp_path: Path) -> Path:
    """Two versions as pop projects write them: one with a file per dialect, one shared by all."""
    return write(tmp_path / "pop", {
        "20240101000000000000_accounts.postgres.up.sql": "CREATE TABLE accounts (id uuid PRIMARY KEY, email text NOT NULL);\n",
        "20240101000000000000_accounts.postgres.down.sql": "DROP TABLE accounts;\n",
        "20240101000000000000_accounts.mysql.up.sql": "CREATE TABLE accounts (id char(36) PRIMARY KEY, email varchar(255) NOT NULL);\n",
        "20240101000000000000_accounts.mysql.down.sql": "DROP TABLE accounts;\n",
        "20240101000000000000_accounts.sqlite3.up.sql": "CREATE TABLE accounts (id TEXT PRIMARY KEY, email TEXT NOT NULL);\n",
        "20240101000000000000_accounts.sqlite3.down.sql": "DROP TABLE accounts;\n",
        "20240101000000000001_accounts_email_idx.up.sql": "CREATE INDEX accounts_email_idx ON accounts (email);\n",
        "20240101000000000001_accounts_email_idx.down.sql": "DROP INDEX accounts_email_idx;\n",
    })


def test_each_version_takes_the_dialects_own_file_else_the_one_for_every_database(ws: Workspace, accounts: Path) -> None:
    plan = imported(ws, accounts)
    assert [(m["version"], m["source"], m["rollback"]) for m in plan["migrations"]] == [
        ("20240101000000000000", "20240101000000000000_accounts.postgres.up.sql", "20240101000000000000_accounts.postgres.down.sql"),
        ("20240101000000000001", "20240101000000000001_accounts_email_idx.up.sql", "20240101000000000001_accounts_email_idx.down.sql"),
    ]
    assert plan["ignored"] == ["2 file(s) for dialect mysql: not the --dialect postgres history",
                               "2 file(s) for dialect sqlite3: not the --dialect postgres history"]
    forward = (ws.migrations / "main" / "20240101000000000000_accounts.forward.sql").read_text()
    assert forward == ("-- imported-from: pop\n-- source: 20240101000000000000_accounts.postgres.up.sql\n"
                       "-- source-id: 20240101000000000000\n"
                       "CREATE TABLE accounts (id uuid PRIMARY KEY, email text NOT NULL);\n")
    assert ws.run("up").exit_code == 0
    assert ws.value("SELECT to_regclass('accounts_email_idx')::text") == "accounts_email_idx"
    assert ws.run("rollback", "--to", "0").exit_code == 0
    assert ws.value("SELECT to_regclass('accounts')") is None


def test_a_dialect_file_replaces_the_shared_one_of_its_version_and_the_shared_one_is_listed(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "pop", {
        "1_flags.up.sql": "CREATE TABLE flags (name text PRIMARY KEY, state int NOT NULL DEFAULT 0);\n",
        "1_flags.postgres.up.sql": "CREATE TABLE flags (name text PRIMARY KEY, state smallint NOT NULL DEFAULT 0);\n",
        "1_flags.down.sql": "DROP TABLE flags;\n",
    })
    plan = imported(ws, source)
    assert (plan["migrations"][0]["source"], plan["migrations"][0]["rollback"]) == ("1_flags.postgres.up.sql", "1_flags.down.sql")
    assert plan["ignored"] == ["1_flags.up.sql: 1_flags.postgres.up.sql replaces it for postgres"]


def test_dialect_aliases_pop_accepts_in_file_names_count_as_that_dialect(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "pop", {"1_t.pg.up.sql": "CREATE TABLE t (id int);\n", "1_t.postgresql.down.sql": "DROP TABLE t;\n"})
    plan = imported(ws, source)
    assert (plan["migrations"][0]["source"], plan["migrations"][0]["rollback"]) == ("1_t.pg.up.sql", "1_t.postgresql.down.sql")


def test_empty_files_are_written_as_explicit_noops_under_their_provenance(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "pop", {
        "1_t.postgres.up.sql": "CREATE TABLE t (id int);\n",
        "1_t.postgres.down.sql": "DROP TABLE t;\n",
        "2_mysql_charset.postgres.up.sql": "",
        "2_mysql_charset.postgres.down.sql": "-- nothing to undo on PostgreSQL\n",
        "2_mysql_charset.mysql.up.sql": "ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4;\n",
        "2_mysql_charset.mysql.down.sql": "",
    })
    plan = imported(ws, source)
    folder = ws.migrations / "main"
    assert (folder / "2_mysql_charset.forward.sql").read_text() == (
        "-- imported-from: pop\n-- source: 2_mysql_charset.postgres.up.sql\n-- source-id: 2\n-- polyshift: noop\n")
    assert (folder / "2_mysql_charset.rollback.sql").read_text() == (
        "-- imported-from: pop\n-- source: 2_mysql_charset.postgres.down.sql\n-- polyshift: noop\n"
        "-- nothing to undo on PostgreSQL\n")
    assert any("has no statements" in n for n in plan["migrations"][1]["notes"])
    assert ws.run("up").exit_code == 0
    assert ws.ledger() == [("1", "up"), ("2", "up")]


def test_an_empty_down_under_an_up_that_changes_something_is_kept_and_warned_about(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "pop", {
        "1_t.postgres.up.sql": "CREATE TABLE t (id int);\n",
        "1_t.postgres.down.sql": "DROP TABLE t;\n",
        "2_t_idx.postgres.up.sql": "CREATE INDEX t_idx ON t (id);\n",
        "2_t_idx.postgres.down.sql": "",
    })
    shown = ws.run("import", "--from", "pop", str(source), "--store", "main", "--dialect", "postgres", "--dry-run")
    assert shown.exit_code == 0, shown.output
    assert "warning: 2_t_idx.postgres.down.sql is empty" in shown.stderr
    plan = imported(ws, source)
    assert plan["migrations"][0]["warnings"] == []
    assert plan["migrations"][1]["warnings"] == [
        "2_t_idx.postgres.down.sql is empty but 2_t_idx.postgres.up.sql changes something: rolling back 2 undoes nothing "
        "of it (another version's down may undo it; if none does, write one)"]
    assert (ws.migrations / "main" / "2_t_idx.rollback.sql").read_text().endswith("-- polyshift: noop\n")


def test_a_fizz_file_a_version_would_run_is_refused_by_name(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "pop", {
        "1_t.postgres.up.sql": "CREATE TABLE t (id int);\n",
        "1_t.postgres.down.sql": "DROP TABLE t;\n",
        "2_widgets.up.fizz": 'create_table("widgets") {\n  t.Column("id", "uuid", {primary: true})\n}\n',
        "2_widgets.down.fizz": 'drop_table("widgets")\n',
    })
    output = refused(ws, source, "--dialect", "postgres")
    assert "2_widgets.up.fizz: a fizz migration" in output and "2_widgets.down.fizz: a fizz migration" in output
    assert "[unsupported]" in output


def test_a_fizz_up_under_a_sql_down_is_reported_once_by_name(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "pop", {
        "1_widgets.up.fizz": 'create_table("widgets") {\n  t.Column("id", "uuid", {primary: true})\n}\n',
        "1_widgets.postgres.down.sql": "DROP TABLE widgets;\n",
    })
    output = refused(ws, source, "--dialect", "postgres")
    assert "1_widgets.up.fizz: a fizz migration" in output and "without an up file" not in output


def test_a_fizz_file_the_dialects_sql_replaces_is_listed_as_ignored(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "pop", {
        "1_t.up.fizz": 'create_table("t") {\n  t.Column("id", "int", {})\n}\n',
        "1_t.postgres.up.sql": "CREATE TABLE t (id int);\n",
        "1_t.postgres.down.sql": "DROP TABLE t;\n",
    })
    plan = imported(ws, source)
    assert plan["ignored"] == ["1_t.up.fizz: 1_t.postgres.up.sql replaces it for postgres"]


def test_a_template_action_is_refused_as_templating(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "pop", {
        "1_t.postgres.up.sql": "CREATE TABLE t (id int);\nCREATE INDEX {{ .prefix }}_idx ON t (id);\n",
        "1_t.postgres.down.sql": "DROP TABLE t;\n",
    })
    output = refused(ws, source, "--dialect", "postgres")
    assert "1_t.postgres.up.sql: line 2: template action '{{ .prefix }}'" in output and "[templating]" in output


def test_an_up_without_a_down_for_the_dialect_is_refused(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "pop", {"1_t.postgres.up.sql": "CREATE TABLE t (id int);\n", "1_t.mysql.down.sql": "DROP TABLE t;\n"})
    output = refused(ws, source, "--dialect", "postgres")
    assert "1_t.postgres.up.sql: no down/undo script" in output


def test_two_files_for_one_version_and_dialect_are_refused(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "pop", {
        "1_t.postgres.up.sql": "CREATE TABLE t (id int);\n",
        "1_t.pg.up.sql": "CREATE TABLE t (id bigint);\n",
        "1_t.postgres.down.sql": "DROP TABLE t;\n",
    })
    output = refused(ws, source, "--dialect", "postgres")
    assert "version 1 has two up files for postgres" in output and "[duplicate-version]" in output


def test_without_dialect_the_import_is_refused_naming_the_option(ws: Workspace, accounts: Path) -> None:
    output = refused(ws, accounts)
    assert "--from pop needs --dialect" in output and "postgres, cockroach, mysql, sqlite3" in output


def test_an_unknown_dialect_is_refused(ws: Workspace, accounts: Path) -> None:
    assert "--dialect 'oracle': not a pop dialect" in refused(ws, accounts, "--dialect", "oracle")


def test_a_dialect_a_postgres_store_cannot_run_is_refused(ws: Workspace, accounts: Path) -> None:
    assert "--dialect mysql: a postgres store runs PostgreSQL SQL" in refused(ws, accounts, "--dialect", "mysql")


def test_dialect_is_refused_for_a_format_with_one_database_per_directory(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "gm", {"1_t.up.sql": "CREATE TABLE t (id int);\n", "1_t.down.sql": "DROP TABLE t;\n"})
    result = ws.run("import", "--from", "golang-migrate", str(source), "--store", "main", "--dialect", "postgres")
    assert result.exit_code == 2
    assert "--dialect applies to --from pop only" in result.output


# -- baseline from pop's schema_migration -------------------------------------------------------
# The table as Ory's popx creates it on PostgreSQL (pop's default name), one row per applied version.
POPX_DDL = """
CREATE TABLE schema_migration (version VARCHAR (48) NOT NULL, version_self INT NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX schema_migration_version_idx ON schema_migration (version);
CREATE INDEX schema_migration_version_self_idx ON schema_migration (version_self);
"""


def pop_up(ws: Workspace, source: Path, *files: str) -> None:
    """What popx does per version: the script and its schema_migration row, in one transaction."""
    ws.sql(POPX_DDL)
    for name in files:
        ws.sql((source / name).read_text() + f"; INSERT INTO schema_migration (version) VALUES ('{name.split('_')[0]}')")


def baseline(ws: Workspace, code: int = 0) -> dict[str, Any]:
    result = ws.run("--json", "baseline", "--store", "main")
    assert result.exit_code == code, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def status(ws: Workspace) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(ws.run("--json", "status").stdout)[0]
    return out


def test_a_database_pop_brought_to_the_end_is_baselined_and_nothing_is_pending(ws: Workspace, accounts: Path) -> None:
    pop_up(ws, accounts, "20240101000000000000_accounts.postgres.up.sql", "20240101000000000001_accounts_email_idx.up.sql")
    imported(ws, accounts)
    out = baseline(ws)
    assert out["versions"] == ["20240101000000000000", "20240101000000000001"]
    assert out["source"] == "pop history schema_migration (2 applied, newest 20240101000000000001)"
    st = status(ws)
    assert st["current"] == "20240101000000000001" and st["pending"] == [] and st["drift"] == []


def test_a_database_pop_left_part_way_is_baselined_to_there_and_up_applies_the_rest(ws: Workspace, accounts: Path) -> None:
    pop_up(ws, accounts, "20240101000000000000_accounts.postgres.up.sql")
    imported(ws, accounts)
    assert baseline(ws)["versions"] == ["20240101000000000000"]
    assert status(ws)["pending"] == ["20240101000000000001"]
    assert ws.run("up").exit_code == 0
    assert ws.value("SELECT to_regclass('accounts_email_idx')::text") == "accounts_email_idx"


def test_a_legacy_14_digit_row_counts_for_every_version_it_begins_as_in_popx(ws: Workspace, accounts: Path) -> None:
    pop_up(ws, accounts, "20240101000000000000_accounts.postgres.up.sql", "20240101000000000001_accounts_email_idx.up.sql")
    ws.sql("DELETE FROM schema_migration; INSERT INTO schema_migration (version) VALUES ('20240101000000')")
    imported(ws, accounts)
    assert baseline(ws)["versions"] == ["20240101000000000000", "20240101000000000001"]
    assert status(ws)["pending"] == []


def test_up_is_refused_on_a_database_pop_migrated_until_it_is_baselined(ws: Workspace, accounts: Path) -> None:
    pop_up(ws, accounts, "20240101000000000000_accounts.postgres.up.sql")
    imported(ws, accounts)
    up = ws.run("up")
    assert up.exit_code == 2
    assert "pop history schema_migration" in up.output and "polyshift baseline --store main" in up.output
    assert ws.value("SELECT to_regclass('accounts_email_idx')") is None


def test_a_pop_row_no_imported_migration_has_is_refused(ws: Workspace, accounts: Path) -> None:
    pop_up(ws, accounts, "20240101000000000000_accounts.postgres.up.sql")
    ws.sql("INSERT INTO schema_migration (version) VALUES ('20991231000000000000')")
    imported(ws, accounts)
    assert "records 20991231000000000000 as applied" in baseline(ws, code=2)["error"]


def test_versions_whose_text_and_number_order_disagree_are_refused(ws: Workspace, tmp_path: Path) -> None:
    source = write(tmp_path / "pop", {
        "20210101000000_t.postgres.up.sql": "CREATE TABLE t (id int);\n",
        "20210101000000_t.postgres.down.sql": "DROP TABLE t;\n",
        "20200101000000000001_u.postgres.up.sql": "CREATE TABLE u (id int);\n",
        "20200101000000000001_u.postgres.down.sql": "DROP TABLE u;\n",
    })
    output = refused(ws, source, "--dialect", "postgres")
    assert ("20200101000000000001_u.postgres.up.sql and 20210101000000_t.postgres.up.sql: pop runs 20200101000000000001 "
            "before 20210101000000 (it orders versions as text)") in output
