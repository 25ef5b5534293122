"""Property: whatever shape a destructive statement takes, every row it changes is in a verified
backup before it runs, or the migration is refused with nothing changed.

The corpus holds the shapes a hostile review found rated "safe" or backed up wrongly: MERGE
actions, data-modifying CTEs, ON CONFLICT DO UPDATE, DO blocks and writable functions, quoted
names with a lowercase twin, foreign-key actions two levels deep, SET NULL, self-references, a
partitioned child, and triggers writing elsewhere.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Workspace

SCHEMA = """
CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE "Users" (id int PRIMARY KEY, "Name" text NOT NULL);
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."odd.name" (id int PRIMARY KEY, v text);
CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users (id) ON DELETE CASCADE ON UPDATE CASCADE, note text);
CREATE TABLE order_items (id int PRIMARY KEY, order_id int REFERENCES orders (id) ON DELETE CASCADE, qty int);
CREATE TABLE reviews (id int PRIMARY KEY, user_id int REFERENCES users (id) ON DELETE SET NULL ON UPDATE SET NULL, stars int);
CREATE TABLE staff (id int PRIMARY KEY, manager_id int REFERENCES staff (id) ON DELETE CASCADE);
CREATE TABLE visits (id int, user_id int REFERENCES users (id) ON DELETE CASCADE ON UPDATE CASCADE, at date NOT NULL)
    PARTITION BY RANGE (at);
CREATE TABLE visits_2025 PARTITION OF visits FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE visits_2026 PARTITION OF visits FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE audit (id bigserial PRIMARY KEY, what text NOT NULL);
CREATE FUNCTION staff_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit (what) VALUES ('staff ' || OLD.id || ' left');
  UPDATE reviews SET stars = 0 WHERE id = OLD.id;
  RETURN OLD;
END $$;
CREATE TRIGGER staff_audit AFTER DELETE ON staff FOR EACH ROW EXECUTE FUNCTION staff_audit();
CREATE FUNCTION purge_users(below int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE n int;
BEGIN
  DELETE FROM users WHERE id < below;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
CREATE PROCEDURE clear_audit() LANGUAGE sql AS $$ DELETE FROM audit $$;
CREATE FUNCTION wipe(tbl text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DELETE FROM %I', tbl);
END $$;
CREATE TABLE notes (id int PRIMARY KEY, body text);
CREATE FUNCTION notes_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE 'UPDATE audit SET what = what || ''!''';
  RETURN OLD;
END $$;
CREATE TRIGGER notes_touch BEFORE DELETE ON notes FOR EACH ROW EXECUTE FUNCTION notes_touch();
INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 10) i;
INSERT INTO users SELECT i, 'user ' || i FROM generate_series(1, 40) i;
INSERT INTO "Users" SELECT i, 'User ' || i FROM generate_series(1, 40) i;
INSERT INTO "My Schema"."odd.name" SELECT i, 'v' || i FROM generate_series(1, 10) i;
INSERT INTO orders SELECT i, 1 + i % 40, 'order ' || i FROM generate_series(1, 120) i;
INSERT INTO order_items SELECT i, 1 + i % 120, i FROM generate_series(1, 360) i;
INSERT INTO reviews SELECT i, 1 + i % 40, i % 5 FROM generate_series(1, 80) i;
INSERT INTO staff VALUES (1, NULL);
INSERT INTO staff SELECT i, 1 + (i - 2) / 3 FROM generate_series(2, 30) i;
INSERT INTO visits SELECT i, 1 + i % 40, date '2025-06-01' + (i % 400) FROM generate_series(1, 400) i;
INSERT INTO audit (what) SELECT 'seed ' || i FROM generate_series(1, 5) i;
"""

# Every user table, by the SQL name that reaches it (quoted where its name needs it).
TABLES = ['users', '"Users"', '"My Schema"."odd.name"', "orders", "order_items", "reviews", "staff", "visits",
          "visits_2025", "visits_2026", "audit", "notes"]

PARTITIONED = {"public.visits"}

# (id, forward SQL). Each changes rows of existing tables, directly or through what it sets off.
BACKED_UP = [
    ("merge-delete", "MERGE INTO users u USING (VALUES (1), (2)) s(id) ON u.id = s.id WHEN MATCHED THEN DELETE;"),
    ("merge-update", "MERGE INTO users u USING (VALUES (3)) s(id) ON u.id = s.id WHEN MATCHED THEN UPDATE SET name = 'x';"),
    ("cte-delete", "WITH gone AS (DELETE FROM users WHERE id <= 10 RETURNING id) SELECT count(*) FROM gone;"),
    ("cte-update-into-insert",
     "WITH x AS (UPDATE orders SET note = 'n' WHERE id < 5 RETURNING id) INSERT INTO audit (what) SELECT 'o' || id FROM x;"),
    ("on-conflict-update", "INSERT INTO users VALUES (1, 'again') ON CONFLICT (id) DO UPDATE SET name = excluded.name;"),
    ("do-delete", "DO $$ BEGIN DELETE FROM users WHERE id = 2; END $$;"),
    ("do-truncate", "DO $$ BEGIN TRUNCATE audit; END $$;"),
    ("writable-function", "SELECT purge_users(6);"),
    ("procedure", "CALL clear_audit();"),
    ("quoted-twin", 'DELETE FROM "Users" WHERE id < 5;'),
    ("quoted-schema-and-dot", 'DELETE FROM "My Schema"."odd.name" WHERE id > 3;'),
    ("cascade-two-levels", "DELETE FROM users WHERE id = 4;"),
    ("update-cascade", "UPDATE users SET id = id + 1000 WHERE id = 3;"),
    ("set-null", "DELETE FROM users WHERE id IN (7, 8);"),
    ("self-reference", "DELETE FROM staff WHERE id = 2;"),
    ("trigger-writes-elsewhere", "DELETE FROM staff WHERE id = 30;"),
    ("truncate-cascade", "TRUNCATE users CASCADE;"),
    ("partition-direct", "DELETE FROM visits_2026;"),
]
# Shapes whose effect cannot be proven from the statement and the catalog: refused unless declared.
# The third value is what the refusal must name.
REFUSED = [
    ("dynamic-sql-in-do", "DO $$ BEGIN EXECUTE 'DELETE FROM users'; END $$;", "dynamic SQL"),
    ("dynamic-sql-in-function", "SELECT wipe('orders');", "wipe"),
    ("trigger-with-dynamic-sql", "DELETE FROM notes WHERE id = 1;", "notes_touch"),
]


def _data(ws: Workspace) -> dict[str, Any]:
    fp = ws.fingerprint(*TABLES)
    return {name: item.get("data") for name, item in fp.items.items()}


def _setup(ws: Workspace) -> dict[str, Any]:
    ws.sql(SCHEMA)
    return _data(ws)


def _manifests(ws: Workspace) -> list[dict[str, Any]]:
    out = []
    for row in ws.backups():
        shown = ws.run("backup", "show", row["id"], "--json")
        assert shown.exit_code == 0, shown.output
        out.append(json.loads(shown.stdout))
    return out


@pytest.mark.parametrize(("case", "forward"), BACKED_UP, ids=[c[0] for c in BACKED_UP])
def test_every_changed_row_is_in_a_verified_backup_taken_before_the_change(ws: Workspace, case: str, forward: str) -> None:
    before = _setup(ws)
    ws.migration("0001_shape", forward, "SELECT 1;")
    up = ws.run("up")
    assert up.exit_code == 0, up.output
    after = _data(ws)
    changed = {name for name in before if after.get(name) != before[name]}
    assert changed, f"{case}: the statement was expected to change rows"
    covered: dict[str, str] = {}
    parent_of: dict[str, str] = {}
    for manifest in _manifests(ws):
        for t in manifest["meta"]["tables"]:
            name = t.get("qualified") or f"{t['schema']}.{t['name']}"
            covered[name] = t["data_hash"]
            parent_of.update({p: name for p in t.get("partitions", [])})
    # A partition is covered by its partitioned parent's backup, which holds the rows of the tree;
    # a partitioned parent's rows are its partitions', each checked on its own.
    missing = sorted(n for n in changed if n not in PARTITIONED
                     if covered.get(n) != before[n] and covered.get(parent_of.get(n, ""), "?") != before.get(parent_of.get(n, "")))
    assert not missing, f"{case}: rows changed in {missing} with no backup of them (backed up: {sorted(covered)})"


@pytest.mark.parametrize(("case", "forward"), BACKED_UP, ids=[c[0] for c in BACKED_UP])
def test_a_failed_release_puts_every_changed_row_back_and_says_so(ws: Workspace, case: str, forward: str) -> None:
    before = _setup(ws)
    # The rollback step does nothing, so only the verified backup can bring the rows back.
    ws.migration("0001_shape", forward, "SELECT 1;", validate="SELECT false;")
    up = ws.run("up")
    assert up.exit_code == 3, up.output
    assert _data(ws) == before


@pytest.mark.parametrize(("case", "forward", "named"), REFUSED, ids=[c[0] for c in REFUSED])
def test_an_effect_that_cannot_be_proven_is_refused_until_a_scope_is_declared(ws: Workspace, case: str, forward: str,
                                                                              named: str) -> None:
    before = _setup(ws)
    ws.migration("0001_shape", forward, "SELECT 1;")
    up = ws.run("up")
    assert up.exit_code == 2, up.output
    assert "declare" in up.stderr and "backup=" in up.stderr and named in up.stderr
    assert _data(ws) == before
    assert ws.backups() == []


def test_a_declared_scope_lets_an_unprovable_effect_run_after_a_backup_of_it(ws: Workspace) -> None:
    before = _setup(ws)
    ws.migration("0001_shape", "-- polyshift: backup=orders\nSELECT wipe('orders');", "SELECT 1;")
    up = ws.run("up")
    assert up.exit_code == 0, up.output
    [manifest] = _manifests(ws)
    backed_up = {f"{t['schema']}.{t['name']}": t["data_hash"] for t in manifest["meta"]["tables"]}
    assert backed_up["public.orders"] == before["public.orders"]
