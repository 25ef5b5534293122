"""Catalog queries shared by the PostgreSQL adapter and its backup/restore code."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from polyshift.adapters.postgres.names import RelName, quote_ident
from polyshift.adapters.postgres.sizes import LARGE_ROWS, TableSize

LEDGER_SCHEMA = "_polyshift"  # leading underscore: never a role name, so never on "$user" search paths

# One row per user relation: a description of its shape and behaviour (triggers, row security
# policies, rules) that survives a drop/recreate from our own DDL (names and definitions, never
# OIDs). Columns are sorted by name so a column dropped and re-added by a rollback (now last) is
# not reported as a schema change.
_SCHEMA_SQL = """
SELECT n.nspname, c.relname, c.relkind::text AS kind,
  coalesce((SELECT json_agg(json_build_array(a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text) ORDER BY a.attname)
            FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'::json) AS columns,
  coalesce((SELECT json_agg(json_build_array(co.conname, pg_get_constraintdef(co.oid)) ORDER BY co.conname)
            FROM pg_constraint co WHERE co.conrelid = c.oid), '[]'::json) AS constraints,
  coalesce((SELECT json_agg(pg_get_indexdef(i.indexrelid) ORDER BY pg_get_indexdef(i.indexrelid))
            FROM pg_index i WHERE i.indrelid = c.oid), '[]'::json) AS indexes,
  CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END AS viewdef,
  json_build_array(c.relrowsecurity, c.relforcerowsecurity,
    (SELECT json_agg(json_build_array(pg_get_triggerdef(t.oid), t.tgenabled::text) ORDER BY t.tgname)
     FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal),
    (SELECT json_agg(json_build_array(p.polname, p.polpermissive, p.polcmd::text, p.polroles::text,
                                      pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)) ORDER BY p.polname)
     FROM pg_policy p WHERE p.polrelid = c.oid),
    (SELECT json_agg(pg_get_ruledef(r.oid) ORDER BY r.rulename) FROM pg_rewrite r
     WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN')) AS behaviour
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', %(ledger)s)
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = c.oid AND e.deptype = 'e')
  {only}
ORDER BY 1, 2
"""
_TYPES_SQL = """
SELECT format('%%I.%%I', n.nspname, t.typname), t.typtype::text,
       (SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd') AND n.nspname NOT IN ('pg_catalog', 'information_schema', %(ledger)s)
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = t.oid AND e.deptype = 'e')
ORDER BY 1
"""


@dataclass(frozen=True)
class Table:
    """A table by identity. ``qualified`` is its SQL spelling (``public."Users"``): every scope entry,
    fingerprint key and message uses it, and ``to_regclass`` reads it back to this very table."""

    schema: str
    name: str

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def schema_descriptions(conn: psycopg.Connection, only: list[Table] | None = None) -> dict[str, object]:
    """Shape of every user relation (or only the given tables), keyed by qualified name."""
    params: dict[str, object] = {"ledger": LEDGER_SCHEMA}
    clause = ""
    if only is not None:
        clause = "AND (n.nspname, c.relname) IN (SELECT * FROM unnest(%(schemas)s::text[], %(names)s::text[]))"
        params |= {"schemas": [t.schema for t in only], "names": [t.name for t in only]}
    rows = conn.execute(_SCHEMA_SQL.format(only=clause), params).fetchall()
    out: dict[str, object] = {}
    for schema, name, kind, columns, constraints, indexes, viewdef, behaviour in rows:
        out[Table(schema, name).qualified] = [kind, columns, constraints, indexes, viewdef, behaviour]
    return out


def user_types(conn: psycopg.Connection) -> list[tuple[str, str, list[str] | None]]:
    """Every user enum and domain: its qualified name, ``e`` or ``d``, an enum's labels in order."""
    return [(str(name), str(kind), labels) for name, kind, labels in conn.execute(_TYPES_SQL, {"ledger": LEDGER_SCHEMA}).fetchall()]


def schema_hash(conn: psycopg.Connection, described: dict[str, object] | None = None) -> str:
    """Shape of every user relation and type. ``described``: ``schema_descriptions(conn)`` read
    by the caller in this same snapshot (the fingerprint reads it once for the whole schema and
    its scope's tables)."""
    relations = schema_descriptions(conn) if described is None else described
    return _digest([relations, [list(t) for t in user_types(conn)]])


def snapshot_key(conn: psycopg.Connection) -> str:
    """What a REPEATABLE READ transaction sees, as a value (call it inside one): its database, its
    snapshot and the search path the catalog functions name objects by. Two transactions with the
    same key see the same rows of every table and catalog: each transaction below the snapshot's
    xmax and not in progress had ended before both began, and every other one is invisible to both."""
    row = conn.execute("SELECT concat_ws(' ', current_database(), pg_current_snapshot(), current_setting('search_path'))").fetchone()
    return str(row[0]) if row else ""


@dataclass(frozen=True)
class Hashed:
    """Per-table row counts, data hashes and shapes read in the snapshot ``key`` names."""

    key: str
    tables: dict[Table, tuple[int, str, str | None]]

    def reusable(self, conn: psycopg.Connection) -> dict[Table, tuple[int, str, str | None]]:
        """The hashes, when this transaction sees exactly what they were read from; else none."""
        return self.tables if snapshot_key(conn) == self.key else {}


def partitions(conn: psycopg.Connection, table: Table) -> list[Table]:
    """Every partition below a partitioned table (empty for a plain table), parents before children."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_partition_tree(to_regclass(%s)) p JOIN pg_class c ON c.oid = p.relid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.level > 0 ORDER BY p.level, c.relname",
        (table.ident.as_string(conn),),
    ).fetchall()
    return [Table(s, n) for s, n in rows]


def is_ancestor(conn: psycopg.Connection, ancestor: Table, table: Table) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IN (SELECT relid FROM pg_partition_ancestors(to_regclass(%s)))",
                       (ancestor.qualified, table.qualified)).fetchone()
    return bool(row and row[0])


def without_covered_partitions(conn: psycopg.Connection, tables: list[Table]) -> list[Table]:
    """The tables, less each partition whose partitioned ancestor is among them: the ancestor's
    backup holds its rows, and restoring both would put them back twice."""
    return [t for t in tables if not any(o != t and is_ancestor(conn, o, t) for o in tables)]


def is_partitioned(conn: psycopg.Connection, table: Table) -> bool:
    row = conn.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)", (table.ident.as_string(conn),)).fetchone()
    return bool(row and row[0])


def table_schema_hash(conn: psycopg.Connection, table: Table, described: dict[str, object] | None = None) -> str | None:
    """Shape of a table; for a partitioned table, of the whole tree (its partitions are part of it).

    ``described``: every relation's description, ``schema_descriptions(conn)``, read by the caller
    in this same snapshot. A description read for some tables only is the same row as in the
    whole-schema read (the filter only narrows it), so the hash is the same either way and the
    catalog is not described a second time."""
    found = schema_descriptions(conn, [table]) if described is None else described
    if table.qualified not in found:
        return None
    family = partitions(conn, table)
    if not family:
        return _digest(found[table.qualified])
    if described is None:
        found = schema_descriptions(conn, [table, *family])
    return _digest([found[t.qualified] for t in [table, *family] if t.qualified in found])


def sampled(table: Table, limit: int | None) -> sql.Composable:
    """The table, or its first ``limit`` rows in physical order: within one snapshot, the same rows
    for every reader (a COPY and the hash of what it copies)."""
    if limit is None:
        return table.ident
    return sql.SQL("(SELECT * FROM {} ORDER BY tableoid, ctid LIMIT {})").format(table.ident, sql.Literal(limit))


def table_data_hash(conn: psycopg.Connection, table: Table, limit: int | None = None) -> tuple[int, str]:
    """Row count and an order-independent hash of a table's rows, computed in the server.

    Each row is hashed as ``record_send(ROW(columns in name order))``: one binary encoding per
    row that carries every column's length and marks NULL apart, with no float or number
    formatting (measured against the row's text form: 4.7x faster on vector(384) rows, 1.1x on
    mixed columns). Name order means a column re-added at the end by a rollback hashes the same.
    Columns of types whose OID differs between databases are encoded without it (below), so
    hashes compare across databases too. The 64-bit md5 prefixes are summed (sum(bigint) is exact: a
    128-bit accumulator, returned as numeric): a multiset hash that ignores row order, never leaves
    the server, and that PostgreSQL runs as a parallel aggregate on a big table.
    """
    # record_send writes each field's type OID, and only built-in types have the same OID in
    # every database. A user type (enum, domain, composite) gets a new OID when a restore
    # re-creates it: hashed as text. An extension's type (pgvector's vector) has another OID in
    # every database: hashed through its own binary send function, which writes no OID, so a
    # backup restored into another database verifies. Arrays of either carry the element OID:
    # hashed as text.
    columns = conn.execute(
        """
        SELECT a.attname,
               CASE WHEN t.oid < 16384 THEN 'builtin'
                    WHEN a.atttypid <> t.oid THEN 'text'
                    WHEN EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = t.oid AND e.deptype = 'e')
                         AND t.typsend <> 0 THEN 'send'
                    ELSE 'text' END,
               t.typsend::regproc::text
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = CASE WHEN (SELECT typelem FROM pg_type WHERE oid = a.atttypid AND typcategory = 'A') <> 0
                                       THEN (SELECT typelem FROM pg_type WHERE oid = a.atttypid) ELSE a.atttypid END
        WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attname
        """,
        (table.ident.as_string(conn),),
    ).fetchall()
    fields = [sql.Identifier("t", c) if how == "builtin"
              else sql.SQL("{}::text").format(sql.Identifier("t", c)) if how == "text"
              else sql.SQL("{}({})").format(sql.SQL(send), sql.Identifier("t", c))
              for c, how, send in columns]
    row = sql.SQL("record_send(ROW({}))").format(sql.SQL(", ").join(fields))
    query = sql.SQL("SELECT count(*), coalesce(sum({}), 0)::text FROM {} AS t").format(
        row_hash(row, conn.info.server_version), sampled(table, limit))
    count, total = conn.execute(query).fetchone()  # type: ignore[misc]
    return int(count), str(total)


def row_hash(row: sql.Composable, server_version: int) -> sql.Composable:
    """The first 64 bits of a row's md5 as a signed bigint, big-endian. PostgreSQL 18 casts bytea
    to bigint, which spares the text concatenation and the bit(64) parse of older servers: the
    same value (tests/test_fingerprint.py holds the two to it), about 15% less time for the
    fingerprint that proves a 1M-row restore (issue 19)."""
    if server_version >= 180000:
        return sql.SQL("substr(decode(md5({}), 'hex'), 1, 8)::bigint").format(row)
    return sql.SQL("('x' || left(md5({}), 16))::bit(64)::bigint").format(row)


def resolve(conn: psycopg.Connection, names: list[str], *, missing_ok: bool) -> tuple[list[Table], list[str]]:
    """Tables for scope entries written as SQL names (``users``, ``public.users``, ``"Odd"``)."""
    found: list[Table] = []
    missing: list[str] = []
    for name in names:
        row = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(%s)", (name,),
        ).fetchone()
        if row is None or row[2] not in ("r", "p"):
            missing.append(name)
            continue
        table = Table(row[0], row[1])
        if table not in found:
            found.append(table)
    return found, missing


def copy_columns(conn: psycopg.Connection, table: Table) -> list[str]:
    """Columns COPY can write back: generated columns are recomputed by the server instead."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 "
        "AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
        (sql.Identifier(table.schema, table.name).as_string(conn),),
    ).fetchall()
    return [r[0] for r in rows]


def owned_sequences(conn: psycopg.Connection, table: Table) -> list[dict[str, object]]:
    """Sequences owned by the table's columns (serial / identity) with their current position."""
    rows = conn.execute(
        "SELECT sn.nspname, s.relname FROM pg_depend d "
        "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace "
        "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
        "AND d.refobjid = to_regclass(%s) AND d.deptype IN ('a', 'i')",
        (sql.Identifier(table.schema, table.name).as_string(conn),),
    ).fetchall()
    out = []
    for schema, name in rows:
        last_value, is_called = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name)),
        ).fetchone()  # type: ignore[misc]
        out.append({"schema": schema, "name": name, "last_value": int(last_value), "is_called": bool(is_called)})
    return out


def inbound_foreign_keys(conn: psycopg.Connection, table: Table) -> list[dict[str, str]]:
    """FKs on other tables that reference this one: DROP TABLE ... CASCADE removes them silently."""
    rows = conn.execute(
        "SELECT rn.nspname, r.relname, co.conname, pg_get_constraintdef(co.oid) FROM pg_constraint co "
        "JOIN pg_class r ON r.oid = co.conrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace "
        "WHERE co.contype = 'f' AND co.confrelid = to_regclass(%s) AND co.conrelid <> co.confrelid AND co.conparentid = 0",
        (sql.Identifier(table.schema, table.name).as_string(conn),),
    ).fetchall()
    return [{"schema": s, "table": t, "name": n, "definition": d} for s, t, n, d in rows]


# -- objects a table's restore needs around it -----------------------------------------------------
# Captured with search_path = pg_catalog (see ``qualified_names``), so every definition names its
# objects with their schema and means the same thing whatever the restoring session's path.

@contextmanager
def qualified_names(conn: psycopg.Connection) -> Iterator[None]:
    """Inside the caller's transaction: catalog functions print schema-qualified names."""
    previous = conn.execute("SELECT current_setting('search_path')").fetchone()[0]  # type: ignore[index]
    conn.execute("SELECT set_config('search_path', 'pg_catalog', true)")
    # No finally: after an error the transaction is aborted, and ending it drops the LOCAL setting.
    yield
    conn.execute("SELECT set_config('search_path', %s, true)", (previous,))


def dependent_views(conn: psycopg.Connection, tables: list[Table]) -> list[dict[str, Any]]:
    """Views and materialized views that depend on the tables, directly or through other views,
    each with the DDL that re-creates it (``DROP … CASCADE`` removes them silently)."""
    rows = conn.execute(
        """
        WITH RECURSIVE base AS (SELECT to_regclass(t)::oid AS oid FROM unnest(%(t)s::text[]) t),
        deps(oid, level) AS (
          SELECT DISTINCT r.ev_class, 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
          WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
            AND d.refobjid IN (SELECT oid FROM base) AND r.ev_class NOT IN (SELECT oid FROM base)
          UNION
          SELECT r.ev_class, deps.level + 1 FROM deps JOIN pg_depend d ON d.refobjid = deps.oid
            AND d.refclassid = 'pg_class'::regclass AND d.classid = 'pg_rewrite'::regclass
          JOIN pg_rewrite r ON r.oid = d.objid WHERE r.ev_class <> deps.oid AND deps.level < 50)
        SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relispopulated, max(deps.level),
               c.reloptions, obj_description(c.oid, 'pg_class')
        FROM deps JOIN pg_class c ON c.oid = deps.oid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm')
        GROUP BY c.oid, n.nspname, c.relname, c.relkind, c.relispopulated, c.reloptions
        ORDER BY max(deps.level), n.nspname, c.relname
        """,
        {"t": [t.qualified for t in tables]},
    ).fetchall()
    out = []
    for oid, schema, name, kind, populated, level, options, comment in rows:
        ident = Table(schema, name).qualified
        definition = conn.execute("SELECT pg_get_viewdef(%s::oid)", (oid,)).fetchone()[0].rstrip().rstrip(";")  # type: ignore[index]
        with_options = f" WITH ({', '.join(options)})" if options else ""
        ddl = []
        if kind == "m":
            ddl.append(f"CREATE MATERIALIZED VIEW {ident}{with_options} AS {definition} WITH NO DATA")
            ddl += [r[0] for r in conn.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s "
                                               "ORDER BY indexrelid", (oid,))]
        else:
            ddl.append(f"CREATE VIEW {ident}{with_options} AS {definition}")
        ddl += [r[0] for r in conn.execute("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s "
                                           "AND NOT tgisinternal ORDER BY tgname", (oid,))]
        ddl += [r[0] for r in conn.execute("SELECT pg_get_ruledef(oid) FROM pg_rewrite WHERE ev_class = %s "
                                           "AND rulename <> '_RETURN' ORDER BY rulename", (oid,))]
        if comment is not None:
            ddl.append(sql.SQL("COMMENT ON {} {} IS {}").format(
                sql.SQL("MATERIALIZED VIEW" if kind == "m" else "VIEW"), sql.Identifier(schema, name),
                sql.Literal(comment)).as_string(conn))
        if kind == "m" and populated:
            ddl.append(f"REFRESH MATERIALIZED VIEW {ident}")
        out.append({"schema": schema, "name": name, "kind": kind, "level": int(level), "ddl": ddl})
    return out


def dependent_policies(conn: psycopg.Connection, tables: list[Table]) -> list[dict[str, Any]]:
    """Row security policies on other tables whose expressions use the tables."""
    rows = conn.execute(
        """
        SELECT DISTINCT pn.nspname, pc.relname, p.polname, p.polpermissive, p.polcmd::text,
          (SELECT array_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END ORDER BY r)
           FROM unnest(p.polroles) r),
          pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
        FROM pg_depend d JOIN pg_policy p ON p.oid = d.objid
        JOIN pg_class pc ON pc.oid = p.polrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
        WHERE d.classid = 'pg_policy'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.refobjid IN (SELECT to_regclass(t) FROM unnest(%(t)s::text[]) t)
          AND p.polrelid NOT IN (SELECT to_regclass(t) FROM unnest(%(t)s::text[]) t)
        ORDER BY 1, 2, 3
        """,
        {"t": [t.qualified for t in tables]},
    ).fetchall()
    commands = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
    out = []
    for schema, table, name, permissive, cmd, roles, qual, check in rows:
        ddl = (f"CREATE POLICY {quote_ident(name)} ON {Table(schema, table).qualified} "
               f"AS {'PERMISSIVE' if permissive else 'RESTRICTIVE'} FOR {commands[cmd]} TO {', '.join(roles or ['PUBLIC'])}")
        if qual is not None:
            ddl += f" USING ({qual})"
        if check is not None:
            ddl += f" WITH CHECK ({check})"
        out.append({"schema": schema, "table": table, "name": name, "ddl": ddl})
    return out


def dependent_defaults(conn: psycopg.Connection, tables: list[Table]) -> list[dict[str, Any]]:
    """Column defaults of other tables that use the tables or their owned sequences."""
    rows = conn.execute(
        """
        WITH base AS (SELECT to_regclass(t)::oid AS oid FROM unnest(%(t)s::text[]) t),
        owned AS (SELECT oid FROM base UNION SELECT d.objid FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                    AND d.refobjid IN (SELECT oid FROM base) AND d.deptype IN ('a', 'i'))
        SELECT DISTINCT n.nspname, c.relname, a.attname, pg_get_expr(ad.adbin, ad.adrelid)
        FROM pg_depend d JOIN pg_attrdef ad ON ad.oid = d.objid
        JOIN pg_class c ON c.oid = ad.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
        WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.refobjid IN (SELECT oid FROM owned) AND ad.adrelid NOT IN (SELECT oid FROM base)
        ORDER BY 1, 2, 3
        """,
        {"t": [t.qualified for t in tables]},
    ).fetchall()
    return [{"schema": s, "table": t, "column": c,
             "ddl": f"ALTER TABLE {Table(s, t).qualified} ALTER COLUMN {quote_ident(c)} SET DEFAULT {expr}"}
            for s, t, c, expr in rows]


def requirements(conn: psycopg.Connection, table: Table) -> list[dict[str, Any]]:
    """What must exist before the table can be re-created from its DDL: its schema, the user types
    of its columns (enum, domain, composite, range, arrays of them) and the user functions its
    defaults, checks and triggers call. ``probe`` tells whether one exists already."""
    schema = quote_ident(table.schema)
    out: list[dict[str, Any]] = [{"kind": "schema", "name": table.schema, "probe": f"SELECT to_regnamespace({_lit(schema)})",
                                  "ddl": f"CREATE SCHEMA IF NOT EXISTS {schema}"}]
    types = conn.execute(
        """
        WITH RECURSIVE used(oid) AS (
          SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = to_regclass(%(t)s) AND a.attnum > 0 AND NOT a.attisdropped
          UNION SELECT x.oid FROM used JOIN pg_type t ON t.oid = used.oid, LATERAL (
              SELECT unnest(ARRAY[t.typelem, t.typbasetype, (SELECT rngsubtype FROM pg_range WHERE rngtypid = t.oid)]) AS oid
              UNION ALL SELECT a.atttypid FROM pg_attribute a
              WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) x
            WHERE x.oid <> 0)
        SELECT t.oid, n.nspname, t.typname, t.typtype::text FROM used JOIN pg_type t ON t.oid = used.oid
        JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd', 'c', 'r') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = t.oid AND e.deptype = 'e')
          AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
        ORDER BY CASE t.typtype WHEN 'e' THEN 0 WHEN 'r' THEN 1 WHEN 'c' THEN 2 ELSE 3 END, t.oid
        """,
        {"t": table.qualified},
    ).fetchall()
    for oid, schema, name, typtype in types:
        ident = f"{quote_ident(schema)}.{quote_ident(name)}"
        out.append({"kind": "type", "name": ident, "probe": f"SELECT to_regtype({_lit(ident)})",
                    "ddl": _type_ddl(conn, oid, ident, typtype)})
    functions = conn.execute(
        """
        SELECT DISTINCT p.oid, p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_depend d
        JOIN pg_proc p ON p.oid = d.refobjid AND d.refclassid = 'pg_proc'::regclass
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prokind IN ('f', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = p.oid AND e.deptype = 'e')
          AND ((d.classid = 'pg_attrdef'::regclass AND d.objid IN (SELECT oid FROM pg_attrdef WHERE adrelid = to_regclass(%(t)s)))
            OR (d.classid = 'pg_constraint'::regclass AND d.objid IN (SELECT oid FROM pg_constraint WHERE conrelid = to_regclass(%(t)s)))
            OR (d.classid = 'pg_trigger'::regclass AND d.objid IN (SELECT oid FROM pg_trigger WHERE tgrelid = to_regclass(%(t)s)))
            OR (d.classid = 'pg_class'::regclass AND d.objid = to_regclass(%(t)s)))
        ORDER BY p.oid
        """,
        {"t": table.qualified},
    ).fetchall()
    for _oid, signature, definition in functions:
        out.append({"kind": "function", "name": signature, "probe": f"SELECT to_regprocedure({_lit(signature)})",
                    "ddl": definition})
    return out


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _type_ddl(conn: psycopg.Connection, oid: int, ident: str, typtype: str) -> str:
    if typtype == "e":
        labels = [r[0] for r in conn.execute("SELECT enumlabel FROM pg_enum WHERE enumtypid = %s ORDER BY enumsortorder", (oid,))]
        return f"CREATE TYPE {ident} AS ENUM ({', '.join(_lit(label) for label in labels)})"
    if typtype == "r":
        subtype = conn.execute("SELECT format_type(rngsubtype, NULL) FROM pg_range WHERE rngtypid = %s", (oid,)).fetchone()[0]  # type: ignore[index]
        return f"CREATE TYPE {ident} AS RANGE (subtype = {subtype})"
    if typtype == "c":
        attrs = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid "
            "WHERE t.oid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (oid,)).fetchall()
        return f"CREATE TYPE {ident} AS ({', '.join(f'{quote_ident(n)} {t}' for n, t in attrs)})"
    base, default, not_null = conn.execute(
        "SELECT format_type(typbasetype, typtypmod), typdefault, typnotnull FROM pg_type WHERE oid = %s", (oid,)).fetchone()  # type: ignore[misc]
    checks = [f"CONSTRAINT {quote_ident(n)} {d}" for n, d in conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE contypid = %s AND contype = 'c' ORDER BY conname", (oid,))]
    return (f"CREATE DOMAIN {ident} AS {base}" + (f" DEFAULT {default}" if default is not None else "")
            + (" NOT NULL" if not_null else "") + "".join(f" {c}" for c in checks))


def foreign_keys_into(conn: psycopg.Connection, tables: list[Table]) -> list[dict[str, str]]:
    """Every foreign key that references one of the tables (or a partition of one), by its root
    constraint, with its definition: a restore drops them, refills the tables and adds them back."""
    rows = conn.execute(
        """
        WITH family AS (
          SELECT to_regclass(t)::oid AS oid FROM unnest(%(t)s::text[]) t
          UNION SELECT p.relid FROM unnest(%(t)s::text[]) t, LATERAL pg_partition_tree(to_regclass(t)) p)
        SELECT DISTINCT rn.nspname, r.relname, co.conname, pg_get_constraintdef(co.oid)
        FROM pg_constraint co JOIN pg_class r ON r.oid = co.conrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
        WHERE co.contype = 'f' AND co.conparentid = 0 AND co.confrelid IN (SELECT oid FROM family)
        ORDER BY 1, 2, 3
        """,
        {"t": [t.qualified for t in tables]},
    ).fetchall()
    return [{"schema": s, "table": t, "name": n, "definition": d} for s, t, n, d in rows]


def user_triggers(conn: psycopg.Connection, tables: list[Table]) -> list[dict[str, str]]:
    """Enabled user triggers on the tables and their partitions, with their enabled state."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, t.tgname, t.tgenabled::text FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND t.tgparentid = 0
          AND t.tgrelid IN (SELECT to_regclass(x)::oid FROM unnest(%(t)s::text[]) x
                            UNION SELECT p.relid FROM unnest(%(t)s::text[]) x, LATERAL pg_partition_tree(to_regclass(x)) p)
        ORDER BY 1, 2, 3
        """,
        {"t": [t.qualified for t in tables]},
    ).fetchall()
    return [{"schema": s, "table": t, "name": n, "enabled": e} for s, t, n, e in rows]


class CatalogFacts:
    """What the lock-hazard analysis asks of the database before a migration runs (read-only)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def _one(self, query: str, params: tuple[Any, ...]) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def _oid(self, table: RelName) -> int | None:
        return self._one("SELECT to_regclass(%s)::oid", (table.sql,))  # type: ignore[no-any-return]

    def exists(self, table: RelName) -> bool | None:
        return self._oid(table) is not None

    def rows(self, table: RelName) -> float | None:
        """0 only when the table is known empty (it has no pages); None when it is not there."""
        oid = self._oid(table)
        if oid is None:
            return None
        pages = self._one("SELECT pg_relation_size(%s::oid) FROM pg_class WHERE oid = %s", (oid, oid))
        if pages == 0 and not self._one("SELECT relkind = 'p' FROM pg_class WHERE oid = %s", (oid,)):
            return 0.0
        tuples = self._one("SELECT reltuples FROM pg_class WHERE oid = %s", (oid,))
        return float(tuples) if tuples is not None and tuples >= 0 else float("nan")

    def size(self, table: str) -> TableSize | None:
        """The table's estimated size (``table``: its SQL spelling), every partition summed; None
        when it does not exist. Rows come from pg_class.reltuples; a table PostgreSQL never counted
        (reltuples = -1: never vacuumed or analyzed) has its rows counted, up to LARGE_ROWS only."""
        oid = self._one("SELECT to_regclass(%s)::oid", (table,))
        if oid is None:
            return None
        leaves = self.conn.execute(
            "SELECT c.oid, c.reltuples, greatest(c.relpages::bigint * current_setting('block_size')::bigint, "
            "pg_relation_size(c.oid)) FROM pg_class c WHERE c.oid IN (SELECT relid FROM pg_partition_tree(%s::oid) "
            "WHERE isleaf UNION SELECT %s::oid) AND c.relkind <> 'p'", (oid, oid)).fetchall()
        rows, size, counted = 0.0, 0, False
        for leaf, tuples, nbytes in leaves:
            size += int(nbytes)
            if tuples >= 0:
                rows += float(tuples)
            elif nbytes > 0 and rows < LARGE_ROWS:
                found = self._count_up_to(leaf, LARGE_ROWS - int(rows))
                if found is None:
                    return TableSize(None, size)
                rows, counted = rows + found, True
        return TableSize(rows, size, counted)

    def _count_up_to(self, oid: int, limit: int) -> int | None:
        """Rows of a table PostgreSQL never counted, at most ``limit``; None when a session holding
        a strong lock on it keeps even that from being read (the cautious answer)."""
        name = self._one("SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
                         "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,))
        try:
            with self.conn.transaction():
                self.conn.execute("SET LOCAL lock_timeout = '1s'")
                return int(self._one(f"SELECT count(*) FROM (SELECT FROM {name} LIMIT %s) t", (limit,)))
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
            return None

    def partitioned(self, table: RelName) -> bool | None:
        oid = self._oid(table)
        return None if oid is None else bool(self._one("SELECT relkind = 'p' FROM pg_class WHERE oid = %s", (oid,)))

    def column_type(self, table: RelName, column: str) -> str | None:
        return self._one(  # type: ignore[no-any-return]
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "
            "AND NOT attisdropped", (table.sql, column))

    def column_not_null(self, table: RelName, column: str) -> bool | None:
        return self._one("SELECT attnotnull FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "  # type: ignore[no-any-return]
                         "AND NOT attisdropped", (table.sql, column))

    def proven_not_null(self, table: RelName, column: str) -> bool | None:
        """A validated CHECK (column IS NOT NULL): SET NOT NULL then skips its scan."""
        return bool(self._one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conrelid = to_regclass(%s) AND co.contype = 'c' "
            "AND co.convalidated AND pg_get_constraintdef(co.oid) = format('CHECK ((%%I IS NOT NULL))', %s::text))",
            (table.sql, column)))

    def function_volatility(self, name: tuple[str, ...]) -> str | None:
        schema, fname = (name[0], name[-1]) if len(name) > 1 else (None, name[-1])
        found = self.conn.execute(
            "SELECT DISTINCT p.provolatile::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.proname = %s AND (CASE WHEN %s::text IS NULL THEN pg_function_is_visible(p.oid) ELSE n.nspname = %s END)",
            (fname, schema, schema)).fetchall()
        kinds = {r[0] for r in found}
        return "v" if "v" in kinds else ("s" if "s" in kinds else ("i" if kinds else None))

    def inlinable_constant(self, name: tuple[str, ...]) -> bool | None:
        """A one-statement SQL function PostgreSQL inlines to a constant (no per-row call)."""
        schema, fname = (name[0], name[-1]) if len(name) > 1 else (None, name[-1])
        body = self._one(
            "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang "
            "WHERE p.proname = %s AND l.lanname = 'sql' AND p.pronargs = 0 AND NOT p.proretset "
            "AND (CASE WHEN %s::text IS NULL THEN pg_function_is_visible(p.oid) ELSE n.nspname = %s END) LIMIT 1",
            (fname, schema, schema))
        return bool(body) and re.fullmatch(r"\s*select\s+[-+]?[\w.' ]+;?\s*", str(body), re.IGNORECASE) is not None

    def timezone_is_utc(self) -> bool | None:
        return str(self._one("SELECT current_setting('TimeZone')", ())) in ("UTC", "Etc/UTC", "GMT", "Etc/GMT")

    def has_validated_check(self, table: RelName) -> bool | None:
        return bool(self._one("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'c' "
                              "AND convalidated)", (table.sql,)))

    def schema_has_objects(self, schema: str) -> bool | None:
        return bool(self._one("SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE n.nspname = %s)", (schema,)))

    def schema_tables(self, schema: str) -> list[RelName]:
        rows = self.conn.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1", (schema,)).fetchall()
        return [RelName(schema, r[0]) for r in rows]

    def index_table(self, index: RelName) -> RelName | None:
        row = self.conn.execute("SELECT n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indexrelid = to_regclass(%s)",
                                (index.sql,)).fetchone()
        return RelName(row[0], row[1]) if row else None

    def index_backs_constraint(self, index: RelName) -> bool | None:
        return bool(self._one("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = to_regclass(%s) "
                              "AND contype IN ('p', 'u', 'x'))", (index.sql,)))

    def domain_tables(self, domain: tuple[str, ...]) -> list[RelName]:
        rows = self.conn.execute(
            "SELECT DISTINCT n.nspname, c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.atttypid = to_regtype(%s) AND c.relkind IN ('r', 'p') "
            "AND NOT a.attisdropped ORDER BY 1, 2", (".".join(quote_ident(p) for p in domain),)).fetchall()
        return [RelName(r[0], r[1]) for r in rows]

    def index_columns(self, index: RelName) -> list[str]:
        rows = self.conn.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                                 "AND a.attnum = ANY (i.indkey) WHERE i.indexrelid = to_regclass(%s) ORDER BY a.attnum",
                                 (index.sql,)).fetchall()
        return [r[0] for r in rows]
