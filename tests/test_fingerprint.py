"""PostgreSQL fingerprints: content-exact, blind to row order and column order."""

from __future__ import annotations

import pytest

from tests.conftest import Workspace


def _table(ws: Workspace) -> None:
    ws.migration("0001_t", """
        CREATE TABLE t (id int PRIMARY KEY, a text, b numeric, v vector(3), j jsonb);
        INSERT INTO t SELECT i, 'x' || i, i / 7.0, ARRAY[i, 0.5, -1]::vector, jsonb_build_object('i', i) FROM generate_series(1, 200) i;
    """, "DROP TABLE t;")
    assert ws.run("up").exit_code == 0


def test_data_hash_sees_a_single_changed_value(ws: Workspace) -> None:
    _table(ws)
    base = ws.fingerprint("t")
    for change, undo in [("UPDATE t SET b = b + 0.0000001 WHERE id = 5", "UPDATE t SET b = 5 / 7.0 WHERE id = 5"),
                         ("UPDATE t SET v = '[5,0.5,-1.0000001]' WHERE id = 5", "UPDATE t SET v = '[5,0.5,-1]' WHERE id = 5"),
                         ("UPDATE t SET a = '' WHERE id = 5", "UPDATE t SET a = 'x5' WHERE id = 5")]:
        ws.sql(change)
        assert ws.fingerprint("t").data_hash != base.data_hash, change
        ws.sql(undo)
        assert ws.fingerprint("t").data_hash == base.data_hash, undo


def test_null_and_empty_string_hash_differently(ws: Workspace) -> None:
    _table(ws)
    ws.sql("UPDATE t SET a = NULL WHERE id = 1")
    with_null = ws.fingerprint("t").data_hash
    ws.sql("UPDATE t SET a = '' WHERE id = 1")
    assert ws.fingerprint("t").data_hash != with_null


def test_row_order_and_column_order_do_not_matter(ws: Workspace) -> None:
    _table(ws)
    base = ws.fingerprint("t")
    ws.sql("CREATE INDEX t_a ON t (a); CLUSTER t USING t_a; DROP INDEX t_a")  # physically reorders the rows
    assert ws.fingerprint("t").data_hash == base.data_hash
    ws.sql("ALTER TABLE t ADD COLUMN a2 text; UPDATE t SET a2 = a; ALTER TABLE t DROP COLUMN a; ALTER TABLE t RENAME a2 TO a")
    after = ws.fingerprint("t")
    assert after.items["public.t"]["data"] == base.items["public.t"]["data"]  # column a is now last
    assert after.schema_hash == base.schema_hash


def test_schema_hash_sees_triggers_policies_and_rules(ws: Workspace) -> None:
    _table(ws)
    ws.sql("CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$")
    base = ws.fingerprint("t").schema_hash
    for change, undo in [("CREATE TRIGGER t_noop BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION noop()", "DROP TRIGGER t_noop ON t"),
                         ("CREATE POLICY t_mine ON t USING (id > 0)", "DROP POLICY t_mine ON t"),
                         ("ALTER TABLE t ENABLE ROW LEVEL SECURITY", "ALTER TABLE t DISABLE ROW LEVEL SECURITY"),
                         ("CREATE RULE t_quiet AS ON DELETE TO t DO INSTEAD NOTHING", "DROP RULE t_quiet ON t")]:
        ws.sql(change)
        assert ws.fingerprint("t").schema_hash != base, change
        ws.sql(undo)
        assert ws.fingerprint("t").schema_hash == base, undo


def test_the_same_vectors_hash_the_same_in_another_database(database: str, second_database: str) -> None:
    # Each database has its own OID for pgvector's type; a backup restored into another database
    # (a rehearsal, a rebuilt replica) must verify when its rows are the same.
    import psycopg

    from polyshift.adapters.postgres.catalog import Table, table_data_hash

    hashes, oids = [], []
    for url in (database, second_database):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE chunks (id int PRIMARY KEY, embedding vector(3), tags vector(2)[])")
            conn.execute("INSERT INTO chunks SELECT i, ARRAY[i, i + 0.5, -i]::vector, ARRAY[ARRAY[i, 1]::vector] "
                         "FROM generate_series(1, 50) i")
            conn.execute("INSERT INTO chunks VALUES (51, NULL, NULL)")
            hashes.append(table_data_hash(conn, Table("public", "chunks")))
            oids.append(conn.execute("SELECT 'vector'::regtype::oid").fetchone())
    assert oids[0] != oids[1]
    assert hashes[0] == hashes[1]


def test_the_row_hash_is_the_same_value_on_postgresql_18_as_on_older_servers(database: str) -> None:
    # A backup taken on one server version is proven on another: the PostgreSQL 18 spelling of
    # the row hash (a bytea cast) must give every row the value the older spelling (bit(64)) gives.
    import psycopg
    from psycopg import sql

    from polyshift.adapters.postgres.catalog import row_hash

    row = sql.SQL("record_send(ROW(t.i, t.a, t.b, t.j))")
    with psycopg.connect(database, autocommit=True) as conn:
        assert conn.info.server_version >= 180000  # the suite's server, where both spellings run
        conn.execute("CREATE TABLE hashed (i int, a text, b numeric, j jsonb)")
        conn.execute("INSERT INTO hashed SELECT i, CASE WHEN i % 5 = 0 THEN NULL ELSE md5(i::text) END, i / 3.0, "
                     "jsonb_build_object('i', i) FROM generate_series(-500, 500) i")
        new, old = (row_hash(row, version) for version in (180000, 170000))
        rows = conn.execute(sql.SQL("SELECT {}, {} FROM hashed AS t").format(new, old)).fetchall()
    assert len(rows) == 1001
    assert all(a == b for a, b in rows)
    assert len({a for a, _ in rows}) == 1001  # the values do differ row by row: the test compares something


def test_a_fingerprint_describes_the_catalog_once_and_hashes_each_table_as_alone(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """One whole-schema read serves the scope's tables too (issue 19: a history fingerprints before
    every migration); each table's shape hashes exactly as when described on its own."""
    import psycopg

    from polyshift.adapters.postgres import catalog as cat

    ws.migration("0001_shapes", """
        CREATE SCHEMA s;
        CREATE TABLE t (id int PRIMARY KEY, a text DEFAULT 'x');
        CREATE TABLE s."Odd" (id int REFERENCES t, b int CHECK (b > 0));
        CREATE TABLE p (id int, at date) PARTITION BY RANGE (at);
        CREATE TABLE p_2025 PARTITION OF p FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE p_2026 PARTITION OF p FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        INSERT INTO t VALUES (1), (2);
    """, 'DROP TABLE p; DROP TABLE s."Odd"; DROP TABLE t; DROP SCHEMA s;')
    assert ws.run("up").exit_code == 0
    reads: list[object] = []
    real = cat.schema_descriptions

    def counted(conn: psycopg.Connection, only: list[cat.Table] | None = None) -> dict[str, object]:
        reads.append(only)
        return real(conn, only)

    monkeypatch.setattr(cat, "schema_descriptions", counted)
    fp = ws.fingerprint("t", 's."Odd"', "p", "p_2026", "gone")
    assert reads == [None]
    monkeypatch.undo()
    with psycopg.connect(ws.url) as conn:
        for table in (cat.Table("public", "t"), cat.Table("s", "Odd"), cat.Table("public", "p"), cat.Table("public", "p_2026")):
            assert fp.items[table.qualified]["schema"] == cat.table_schema_hash(conn, table), table
        assert fp.schema_hash == cat.schema_hash(conn)
    assert fp.items["gone"] == {"missing": True}
