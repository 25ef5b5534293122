"""``polyshift import`` per source format: what is converted, what is noted, what is refused.
SQL formats are applied for real on PostgreSQL after the import."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliProject, Workspace

DATA = Path(__file__).parent / "data" / "adopt"


def imported(ws: CliProject, fmt: str, source: Path | str, *extra: str, store: str = "main") -> dict[str, Any]:
    result = ws.run("--json", "import", "--from", fmt, str(source), "--store", store, *extra)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def refused(ws: CliProject, fmt: str, source: Path | str, *extra: str, code: int = 2) -> dict[str, Any]:
    result = ws.run("--json", "import", "--from", fmt, str(source), "--store", "main", *extra)
    assert result.exit_code == code, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def files(ws: Workspace) -> list[str]:
    return sorted(p.name for p in (ws.migrations / "main").iterdir())


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# -- goose -------------------------------------------------------------------------------------
def test_goose_sections_become_forward_and_rollback_and_the_history_runs(ws: Workspace) -> None:
    plan = imported(ws, "goose", DATA / "goose")
    assert [m["version"] for m in plan["migrations"]] == ["00001", "00002", "00003", "00004"]
    assert any("README.md" in i for i in plan["ignored"])
    body = (ws.migrations / "main" / "00002_account_search.forward.sql").read_text()
    assert "-- +goose" not in body and "RETURN NEW;" in body
    assert ws.run("up").exit_code == 0
    ws.sql("INSERT INTO accounts (handle, bio) VALUES ('Ada', 'Engines')")
    assert ws.value("SELECT search FROM accounts") == "ada engines"
    assert ws.value("SELECT indisvalid FROM pg_index WHERE indexrelid = 'accounts_search_idx'::regclass") is True
    assert ws.run("rollback", "--to", "0").exit_code == 0
    assert ws.value("SELECT to_regclass('accounts')") is None


def test_goose_empty_sections_are_written_as_noops(ws: Workspace) -> None:
    imported(ws, "goose", DATA / "goose")
    assert "-- polyshift: noop" in (ws.migrations / "main" / "00003_reserved.forward.sql").read_text()
    assert "-- polyshift: noop" in (ws.migrations / "main" / "00003_reserved.rollback.sql").read_text()


def test_goose_no_transaction_is_noted(ws: Workspace) -> None:
    plan = imported(ws, "goose", DATA / "goose", "--dry-run")
    assert any("NO TRANSACTION" in n for n in plan["migrations"][3]["notes"])
    assert not (ws.migrations / "main").exists() or files(ws) == []


def test_goose_envsub_is_templating_and_nothing_is_written(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "00001_a.sql", "-- +goose Up\n-- +goose ENVSUB ON\nCREATE TABLE ${TABLE} (id int);\n-- +goose Down\nDROP TABLE x;\n")
    out = refused(ws, "goose", src)
    assert "ENVSUB" in out["error"] and "00001_a.sql" in out["error"]
    assert files(ws) == []


def test_goose_go_migrations_are_named_unsupported(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "00001_a.sql", "-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE a;\n")
    write(src, "00002_backfill.go", "package migrations\n")
    out = refused(ws, "goose", src, "--dry-run", code=1)
    assert out["problems"] == [{"source": "00002_backfill.go", "issue": "unsupported",
                                "reason": out["problems"][0]["reason"]}]
    assert "Go migration" in out["problems"][0]["reason"]


def test_goose_file_without_up_annotation_is_malformed(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "00001_a.sql", "CREATE TABLE a (id int);\n")
    out = refused(ws, "goose", src, "--dry-run", code=1)
    assert out["problems"][0]["issue"] == "malformed" and "+goose Up" in out["problems"][0]["reason"]


# -- dbmate ------------------------------------------------------------------------------------
def test_dbmate_sections_run_and_transaction_false_is_noted(ws: Workspace) -> None:
    plan = imported(ws, "dbmate", DATA / "dbmate" / "db" / "migrations")
    assert [m["version"] for m in plan["migrations"]] == ["20240105101500", "20240106093000", "20240201120000", "20240201120100"]
    assert any("transaction:false" in n for n in plan["migrations"][3]["notes"])
    assert ws.run("up").exit_code == 0
    assert ws.value("SELECT count(*) FROM pg_indexes WHERE indexname = 'books_isbn_key'") == 1


def test_dbmate_without_down_section_is_refused_unless_irreversible_is_allowed(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "20240101000000_a.sql", "-- migrate:up\nCREATE TABLE a (id int);\n")
    out = refused(ws, "dbmate", src)
    assert "no-down" in out["error"]
    plan = imported(ws, "dbmate", src, "--allow-irreversible")
    assert plan["migrations"][0]["irreversible"] is True
    assert "-- polyshift: irreversible" in (ws.migrations / "main" / "20240101000000_a.forward.sql").read_text()


# -- Flyway ------------------------------------------------------------------------------------
def test_flyway_versions_with_underscores_and_undo_scripts_in_subfolders(ws: Workspace) -> None:
    plan = imported(ws, "flyway", DATA / "flyway" / "sql", "--exclude", "R__*")
    assert [(m["version"], m["slug"]) for m in plan["migrations"]] == [
        ("1", "create_customers"), ("1.1", "add_customer_email"), ("2", "orders"), ("2.1", "reserved")]
    assert plan["migrations"][2]["rollback"] == "orders/U2__orders.sql"
    assert plan["excluded"][0].startswith("R__customer_summary.sql (--exclude 'R__*'")
    assert ws.run("up").exit_code == 0
    assert ws.run("rollback", "--to", "1").exit_code == 0
    assert ws.value("SELECT to_regclass('orders')") is None
    assert ws.value("SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers'") == 2


def test_flyway_repeatable_scripts_are_reported_by_name(ws: Workspace) -> None:
    out = refused(ws, "flyway", DATA / "flyway" / "sql", "--dry-run", code=1)
    [problem] = out["problems"]
    assert problem["source"] == "R__customer_summary.sql" and problem["issue"] == "unsupported"
    assert "repeatable" in problem["reason"]


def test_flyway_checksum_is_recorded_in_the_header(ws: Workspace) -> None:
    imported(ws, "flyway", DATA / "flyway" / "sql", "--exclude", "R__*")
    header = (ws.migrations / "main" / "1_create_customers.forward.sql").read_text().splitlines()[:4]
    assert header[:3] == ["-- imported-from: flyway", "-- source: V1__create_customers.sql", "-- source-id: 1"]
    assert header[3].startswith("-- source-checksum: crc32:")


def test_flyway_checksum_matches_flyways_line_based_crc32() -> None:
    from polyshift.framework.adopt.flyway import flyway_checksum

    # The same lines with other line endings and a byte-order mark have Flyway's one checksum.
    assert flyway_checksum(b"SELECT 1;\nSELECT 2;\n") == flyway_checksum(b"\xef\xbb\xbfSELECT 1;\r\nSELECT 2;")
    # Values computed by java.util.zip.CRC32 over BufferedReader.readLine() lines, as Flyway reads them.
    assert flyway_checksum(b"SELECT 1;\n") == 78787420
    assert flyway_checksum(b"SELECT 1;\nSELECT 2;\n") == -1665099012


def test_flyway_placeholders_are_templating(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "sql"
    write(src, "V1__a.sql", "CREATE TABLE ${schema}.a (id int);\n")
    write(src, "U1__a.sql", "DROP TABLE ${schema}.a;\n")
    out = refused(ws, "flyway", src, "--dry-run", code=1)
    assert {(p["source"], p["issue"]) for p in out["problems"]} == {("V1__a.sql", "templating"), ("U1__a.sql", "templating")}


def test_flyway_two_scripts_for_one_version_are_a_duplicate(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "sql"
    write(src, "V1__a.sql", "CREATE TABLE a (id int);\n")
    write(src, "V1.0__b.sql", "CREATE TABLE b (id int);\n")
    out = refused(ws, "flyway", src, "--dry-run", "--allow-irreversible", code=1)
    assert [p["issue"] for p in out["problems"]] == ["duplicate-version"]


def test_flyway_undo_without_versioned_script_is_malformed(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "sql"
    write(src, "V1__a.sql", "CREATE TABLE a (id int);\n")
    write(src, "U1__a.sql", "DROP TABLE a;\n")
    write(src, "U7__gone.sql", "DROP TABLE gone;\n")
    out = refused(ws, "flyway", src, "--dry-run", code=1)
    assert [(p["source"], p["issue"]) for p in out["problems"]] == [("U7__gone.sql", "malformed")]


# -- Sqitch ------------------------------------------------------------------------------------
def test_sqitch_plan_order_with_verify_as_validate_and_a_reworked_change(ws: Workspace) -> None:
    plan = imported(ws, "sqitch", DATA / "sqitch")
    assert [(m["version"], m["source_id"]) for m in plan["migrations"]] == [
        ("0001", "flipr:appschema"), ("0002", "flipr:users"), ("0003", "flipr:insert_user@v1.0.0"),
        ("0004", "flipr:flips"), ("0005", "flipr:insert_user")]
    assert plan["migrations"][2]["source"] == "deploy/insert_user@v1.0.0.sql"
    assert plan["migrations"][1]["validate"] == "verify/users.sql"
    up = ws.run("up")
    assert up.exit_code == 0, up.output
    ws.sql("SELECT flipr.insert_user('Ada', 'secret')")
    assert ws.value("SELECT nickname FROM flipr.users") == "ada"
    assert ws.run("validate").exit_code == 0


def test_sqitch_wrapping_begin_commit_and_begin_rollback_are_removed(ws: Workspace) -> None:
    imported(ws, "sqitch", DATA / "sqitch")
    verify = (ws.migrations / "main" / "0002_users.validate.sql").read_text()
    assert "BEGIN" not in verify and "ROLLBACK" not in verify and "WHERE FALSE;" in verify


def test_sqitch_requires_moves_a_change_after_what_it_requires(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "proj"
    write(src, "sqitch.plan", """\
        %project=p
        b [a] 2024-01-01T00:00:00Z X <x@example.org> # needs a, planned first by hand
        a 2024-01-01T00:00:00Z X <x@example.org> # a
        """)
    for name in ("a", "b"):
        write(src, f"deploy/{name}.sql", f"CREATE TABLE {name} (id int);\n")
        write(src, f"revert/{name}.sql", f"DROP TABLE {name};\n")
    plan = imported(ws, "sqitch", src, "--dry-run")
    assert [m["source_id"] for m in plan["migrations"]] == ["p:a", "p:b"]


def test_sqitch_cycle_and_unknown_requirement_are_dependency_problems(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "proj"
    write(src, "sqitch.plan", """\
        %project=p
        a [b] 2024-01-01T00:00:00Z X <x@example.org>
        b [a] 2024-01-01T00:00:00Z X <x@example.org>
        c [nowhere] 2024-01-01T00:00:00Z X <x@example.org>
        """)
    for name in ("a", "b", "c"):
        write(src, f"deploy/{name}.sql", f"CREATE TABLE {name} (id int);\n")
        write(src, f"revert/{name}.sql", f"DROP TABLE {name};\n")
    out = refused(ws, "sqitch", src, "--dry-run", code=1)
    reasons = [p["reason"] for p in out["problems"] if p["issue"] == "dependency"]
    assert any("cycle among a, b" in r for r in reasons) and any("'nowhere'" in r for r in reasons)


def test_sqitch_psql_meta_commands_are_templating(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "proj"
    write(src, "sqitch.plan", "%project=p\na 2024-01-01T00:00:00Z X <x@example.org>\n")
    write(src, "deploy/a.sql", "\\set ON_ERROR_STOP 1\nCREATE TABLE :\"schema\".a (id int);\n")
    write(src, "revert/a.sql", "DROP TABLE a;\n")
    out = refused(ws, "sqitch", src, "--dry-run", code=1)
    assert [p["issue"] for p in out["problems"] if p["source"] == "deploy/a.sql"][:2] == ["templating", "templating"]


def test_sqitch_without_a_plan_is_a_usage_error(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = refused(ws, "sqitch", tmp_path / "empty")
    assert "sqitch.plan" in out["error"]


# -- Liquibase ---------------------------------------------------------------------------------
def test_liquibase_changesets_become_migrations_in_changelog_order(ws: Workspace) -> None:
    plan = imported(ws, "liquibase", DATA / "liquibase" / "changelog.sql")
    assert [(m["version"], m["source_id"]) for m in plan["migrations"]] == [
        ("0001", "1::nadia"), ("0002", "2::nadia"), ("0003", "add-warehouse-city::Omar Haddad"),
        ("0004", "seed-main-warehouse::nadia")]
    rollback = (ws.migrations / "main" / "0002_2.rollback.sql").read_text()
    assert rollback.endswith("DROP INDEX stock_levels_sku_idx;\nDROP TABLE stock_levels;\n")
    assert "ALTER TABLE warehouses DROP COLUMN city;" in (ws.migrations / "main" / "0003_add_warehouse_city.rollback.sql").read_text()
    assert ws.run("up").exit_code == 0
    assert ws.value("SELECT city FROM warehouses WHERE code = 'MAIN'") == "Lyon"
    assert ws.run("rollback", "--to", "0").exit_code == 0
    assert ws.value("SELECT to_regclass('warehouses')") is None


def test_liquibase_contexts_and_run_always_are_unsupported(ws: Workspace, tmp_path: Path) -> None:
    src = write(tmp_path, "log.sql", """\
        --liquibase formatted sql
        --changeset a:1 context:test
        INSERT INTO t VALUES (1);
        --rollback DELETE FROM t;
        --changeset a:2 runAlways:true
        SELECT 1;
        --rollback SELECT 1;
        """)
    out = refused(ws, "liquibase", src, "--dry-run", code=1)
    assert [p["issue"] for p in out["problems"]] == ["unsupported", "unsupported"]
    assert "context:test" in out["problems"][0]["reason"] and "runAlways:true" in out["problems"][1]["reason"]


def test_liquibase_changelog_without_its_header_is_malformed(ws: Workspace, tmp_path: Path) -> None:
    src = write(tmp_path, "log.sql", "--changeset a:1\nCREATE TABLE t (id int);\n")
    out = refused(ws, "liquibase", src, "--dry-run", code=1)
    assert out["problems"][0]["issue"] == "malformed" and "formatted sql" in out["problems"][0]["reason"]


def test_liquibase_changeset_without_rollback_is_no_down(ws: Workspace, tmp_path: Path) -> None:
    src = write(tmp_path, "log.sql", "--liquibase formatted sql\n--changeset a:1\nCREATE TABLE t (id int);\n")
    out = refused(ws, "liquibase", src, "--dry-run", code=1)
    assert out["problems"][0]["issue"] == "no-down" and out["problems"][0]["source"] == "log.sql (changeset a:1)"


# -- neo4j-migrations --------------------------------------------------------------------------
@pytest.fixture
def graph_project(tmp_path: Path) -> CliProject:
    project = CliProject()
    project.root, project.config, project.env = tmp_path, tmp_path / "polyshift.toml", {}
    project.config.write_text('[project]\nstate_url = "sqlite:///.polyshift/state.db"\n'
                              '[stores.graph]\nkind = "neo4j"\nurl = "bolt://neo4j@127.0.0.1:1"\n')
    return project


def test_neo4j_migrations_are_irreversible_unless_a_rollback_is_supplied(graph_project: CliProject) -> None:
    src = DATA / "neo4j-migrations"
    plan = imported(graph_project, "neo4j-migrations", src / "neo4j" / "migrations", "--rollbacks", str(src / "rollbacks"),
                    store="graph")
    assert [(m["version"], m["irreversible"]) for m in plan["migrations"]] == [("0001", False), ("0002", False), ("0003", True)]
    written = graph_project.root / "migrations" / "graph"
    assert (written / "0001_person_constraint.rollback.cypher").read_text().startswith(
        "// imported-from: neo4j-migrations\n// source: rollbacks/V0001__Person_constraint.cypher\n")
    assert "// polyshift: irreversible" in (written / "0003_link_directors.forward.cypher").read_text()


def test_neo4j_migrations_preconditions_are_named(graph_project: CliProject, tmp_path: Path) -> None:
    src = tmp_path / "m"
    write(src, "V1__a.cypher", "// assume that edition is enterprise\nCREATE (:A);\n")
    result = graph_project.run("--json", "import", "--from", "neo4j-migrations", str(src), "--store", "graph", "--dry-run")
    assert result.exit_code == 1
    assert "precondition" in json.loads(result.stdout)["problems"][0]["reason"]


def test_cypher_sources_are_refused_for_a_sql_store(ws: Workspace) -> None:
    out = refused(ws, "neo4j-migrations", DATA / "neo4j-migrations" / "neo4j" / "migrations")
    assert "takes sql scripts" in out["error"]


# -- across formats ----------------------------------------------------------------------------
def test_unknown_format_is_a_usage_error_listing_the_known_ones(ws: Workspace) -> None:
    out = refused(ws, "rails", DATA / "goose")
    assert "not a format" in out["error"] and "golang-migrate" in out["error"]


def test_missing_source_directory_is_a_usage_error(ws: Workspace, tmp_path: Path) -> None:
    out = refused(ws, "goose", tmp_path / "nowhere")
    assert "no such directory" in out["error"]


def test_a_version_already_in_the_store_directory_is_a_conflict_and_nothing_is_written(ws: Workspace) -> None:
    ws.migration("00002_mine", "CREATE TABLE mine (id int);", "DROP TABLE mine;")
    out = refused(ws, "goose", DATA / "goose")
    assert "conflict" in out["error"] and "00002_mine.forward.sql" in out["error"]
    assert files(ws) == ["00002_mine.forward.sql", "00002_mine.rollback.sql"]


def test_importing_twice_is_a_conflict(ws: Workspace) -> None:
    imported(ws, "goose", DATA / "goose")
    before = files(ws)
    refused(ws, "goose", DATA / "goose")
    assert files(ws) == before


def test_transaction_control_inside_a_script_is_named_with_its_line(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "1_a.up.sql", "CREATE TABLE a (id int);\nCOMMIT;\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n")
    write(src, "1_a.down.sql", "DROP TABLE a;\n")
    out = refused(ws, "golang-migrate", src, "--dry-run", code=1)
    assert out["problems"] == [{"source": "1_a.up.sql", "issue": "transaction-control",
                                "reason": out["problems"][0]["reason"]}]
    assert out["problems"][0]["reason"].startswith("line 2: 'COMMIT'")


def test_sql_that_postgresql_cannot_parse_is_named_with_its_line(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "1_a.up.sql", "CREATE TABLE a (id int);\nCREATE TABLE b (id int) ENGINE=InnoDB;\n")
    write(src, "1_a.down.sql", "DROP TABLE a;\n")
    out = refused(ws, "golang-migrate", src, "--dry-run", code=1)
    assert out["problems"][0]["issue"] == "not-parsed" and out["problems"][0]["reason"].startswith("line 2:")


def test_a_down_without_an_up_and_two_ups_for_one_version(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "1_a.up.sql", "CREATE TABLE a (id int);\n")
    write(src, "001_b.up.sql", "CREATE TABLE b (id int);\n")
    write(src, "1_a.down.sql", "DROP TABLE a;\n")
    write(src, "2_c.down.sql", "DROP TABLE c;\n")
    out = refused(ws, "golang-migrate", src, "--dry-run", code=1)
    assert sorted(p["issue"] for p in out["problems"]) == ["duplicate-version", "malformed"]


def test_exclude_that_matches_nothing_is_a_usage_error(ws: Workspace) -> None:
    out = refused(ws, "goose", DATA / "goose", "--exclude", "nothing*")
    assert "matches nothing" in out["error"]


def test_a_source_that_is_not_utf8_is_named(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "1_a.up.sql").write_bytes(b"INSERT INTO t VALUES ('caf\xe9');\n")
    (src / "1_a.down.sql").write_text("DELETE FROM t;\n")
    out = refused(ws, "golang-migrate", src, "--dry-run", code=1)
    assert out["problems"][0]["source"] == "1_a.up.sql" and "not UTF-8" in out["problems"][0]["reason"]


def test_dry_run_writes_nothing(ws: Workspace) -> None:
    shutil.rmtree(ws.migrations / "main")
    imported(ws, "goose", DATA / "goose", "--dry-run")
    assert not (ws.migrations / "main").exists()
