"""Restores on the shapes real schemas have: tables referenced by foreign keys, tables with
triggers, and names that need quoting (ORMs create PascalCase tables by default)."""

from __future__ import annotations

import json

from tests.conftest import Workspace

KEYED = """
CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, user_id int NOT NULL REFERENCES users (id));
CREATE TABLE audit (id bigserial PRIMARY KEY, what text);
CREATE FUNCTION users_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (what) VALUES (TG_OP || ' ' || coalesce(NEW.id, OLD.id)); RETURN NULL; END $$;
CREATE TRIGGER users_audit AFTER INSERT OR DELETE ON users FOR EACH ROW EXECUTE FUNCTION users_audit();
INSERT INTO users SELECT i, 'user ' || i FROM generate_series(1, 100) i;
INSERT INTO orders SELECT i, 1 + i % 100 FROM generate_series(1, 300) i;
"""

QUOTED = """
CREATE TABLE users (id int PRIMARY KEY, name text);
CREATE TABLE "Users" (id int PRIMARY KEY, "Name" text);
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."odd.name" (id int PRIMARY KEY, v text);
CREATE TABLE "my table" (id int PRIMARY KEY);
INSERT INTO users SELECT i, 'lower ' || i FROM generate_series(1, 10) i;
INSERT INTO "Users" SELECT i, 'Upper ' || i FROM generate_series(1, 20) i;
INSERT INTO "My Schema"."odd.name" SELECT i, 'v' || i FROM generate_series(1, 5) i;
INSERT INTO "my table" SELECT generate_series(1, 7);
"""


def _backup_id(result_stdout: str) -> str:
    return str(json.loads(result_stdout)["id"])


def test_a_table_referenced_by_a_foreign_key_is_restored(ws: Workspace) -> None:
    ws.sql(KEYED)
    before = ws.fingerprint("users").data_hash
    backup = ws.run("backup", "create", "main", "--scope", "users", "--json")
    assert backup.exit_code == 0, backup.output
    ws.sql("UPDATE users SET name = upper(name)")
    restore = ws.run("backup", "restore", _backup_id(backup.stdout), "--yes")
    assert restore.exit_code == 0, restore.output
    assert ws.fingerprint("users").data_hash == before
    assert ws.value("SELECT count(*) FROM pg_constraint WHERE conname = 'orders_user_id_fkey' AND convalidated") == 1


def test_a_restore_that_would_orphan_rows_written_since_is_refused_naming_the_key(ws: Workspace) -> None:
    ws.sql(KEYED)
    backup = ws.run("backup", "create", "main", "--scope", "users", "--json")
    ws.sql("INSERT INTO users VALUES (500, 'new'); INSERT INTO orders VALUES (500, 500);")
    after = ws.fingerprint("users", "orders").data_hash
    restore = ws.run("backup", "restore", _backup_id(backup.stdout), "--yes")
    assert restore.exit_code == 2, restore.output
    assert "orders_user_id_fkey" in restore.stderr and "public.orders" in restore.stderr
    assert "nothing was changed" in restore.stderr
    assert ws.fingerprint("users", "orders").data_hash == after


def test_a_restore_does_not_set_off_the_tables_own_triggers(ws: Workspace) -> None:
    ws.sql(KEYED)
    backup = ws.run("backup", "create", "main", "--scope", "users", "--json")
    ws.sql("UPDATE users SET name = 'changed'")
    audit_rows = ws.value("SELECT count(*) FROM audit")
    restore = ws.run("backup", "restore", _backup_id(backup.stdout), "--yes")
    assert restore.exit_code == 0, restore.output
    assert ws.value("SELECT count(*) FROM audit") == audit_rows
    assert ws.value("SELECT tgenabled FROM pg_trigger WHERE tgname = 'users_audit'") == "O"


def test_deleting_from_a_quoted_table_backs_up_that_table_not_its_lowercase_twin(ws: Workspace) -> None:
    ws.sql(QUOTED)
    ws.migration("0001_prune", 'DELETE FROM "Users" WHERE id > 10;', "SELECT 1;")
    result = ws.run("up", "--json")
    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.stdout)
    assert outcome["scope"] == ['public."Users"']
    manifest = json.loads(ws.run("backup", "show", outcome["backup"], "--json").stdout)
    [table] = manifest["meta"]["tables"]
    assert (table["name"], table["rows"]) == ("Users", 20)


def test_a_quoted_name_in_the_backup_directive_is_found(ws: Workspace) -> None:
    ws.sql(QUOTED)
    ws.migration("0001_shrink", '-- polyshift: backup="Users","my table"\nSELECT 1;', "SELECT 1;")
    result = ws.run("up", "--json")
    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.stdout)
    assert outcome["scope"] == ['public."Users"', 'public."my table"']


def test_backup_and_restore_of_a_dotted_name_in_a_quoted_schema(ws: Workspace) -> None:
    ws.sql(QUOTED)
    before = ws.fingerprint('"My Schema"."odd.name"').data_hash
    backup = ws.run("backup", "create", "main", "--scope", '"My Schema"."odd.name"', "--json")
    assert backup.exit_code == 0, backup.output
    ws.sql('DELETE FROM "My Schema"."odd.name"')
    restore = ws.run("backup", "restore", _backup_id(backup.stdout), "--yes")
    assert restore.exit_code == 0, restore.output
    assert ws.fingerprint('"My Schema"."odd.name"').data_hash == before
    assert ws.value("SELECT count(*) FROM users") == 10


def test_an_undo_whose_restore_is_refused_says_why_and_what_to_do(ws: Workspace) -> None:
    """The application writes during the cutover (here: the gate), orphaning rows the backup lacks."""
    ws.sql(KEYED)
    (ws.root / "orphan_gate.py").write_text(
        "import psycopg\n"
        "def gate(ctx):\n"
        f"    with psycopg.connect({ws.url!r}, autocommit=True) as c:\n"
        "        c.execute(\"INSERT INTO users VALUES (900, 'late'); INSERT INTO orders VALUES (900, 900)\")\n"
        "    return False, 'error budget spent'\n")
    (ws.migrations / "releases.toml").write_text(
        '[release."0001"]\nflag = "names_v2"\nstages = [100]\nbake_seconds = 0\n'
        'gates = [{ kind = "python", callable = "orphan_gate:gate" }]\n')
    ws.migration("0001_names", "UPDATE users SET name = upper(name);", "SELECT 1;")
    result = ws.run("up")
    assert result.exit_code == 4, result.output
    assert "orders_user_id_fkey" in result.stderr
    assert "answers again" not in result.stderr
    assert "back up and restore public.orders together with this scope" in result.stderr
