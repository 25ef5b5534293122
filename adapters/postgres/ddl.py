"""A table family's DDL written from the catalog, in the caller's snapshot, on the caller's connection.

The backup used to run ``pg_dump --schema-only`` twice per table family (pre-data, post-data):
about 60 ms of process start each, which a long history of small destructive steps on empty
tables paid hundreds of times. The server prints every piece itself (``format_type``,
``pg_get_expr``, ``pg_get_constraintdef``, ``pg_get_indexdef``, ``pg_get_triggerdef``,
``pg_get_ruledef``, ``pg_get_partkeydef``, ``pg_get_statisticsobjdef``), so the statements here
are assembled from those strings, read inside the backup's REPEATABLE READ transaction.

The split follows pg_dump's sections, which the restore relies on: *pre* creates the tables
(columns, defaults, identity and generated columns, NOT NULL and validated CHECK constraints,
partition keys and bounds, owned sequences, comments, row security flags) before the rows are
loaded; *post* adds what is cheaper built over loaded rows or must see them (primary keys, unique
and exclusion constraints, indexes, NOT VALID checks, foreign keys, triggers, rules, policies,
extended statistics).

A family this module cannot write faithfully is named by ``_UNSUPPORTED_SQL`` and the backup falls
back to pg_dump for that family alone. The restore checks the re-created tables against the
fingerprint taken at backup time either way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import psycopg

from polyshift.adapters.postgres import catalog as cat
from polyshift.adapters.postgres.names import quote_ident

# Each reason is a shape whose DDL holds something the statements below do not write. The list
# is what pg_dump --table would carry and this module would silently lose: privileges and
# security labels (pg_dump writes them relative to the original owner), tablespaces, tables
# typed by a composite type or inheriting without partitioning (pg_dump's INHERITS / OF
# handling), foreign partitions, per-column options and TOAST storage parameters.
_UNSUPPORTED_SQL = """
SELECT c.oid, CASE
  WHEN c.relkind NOT IN ('r', 'p') THEN 'a ' || CASE c.relkind WHEN 'f' THEN 'foreign table' ELSE 'non-table' END || ' in the family'
  WHEN c.reloftype <> 0 THEN 'a typed table (OF type)'
  WHEN (NOT c.relispartition AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid))
    OR (c.relkind <> 'p' AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid)) THEN 'table inheritance without partitioning'
  WHEN c.relpersistence = 't' THEN 'a temporary table'
  WHEN c.reltablespace <> 0 THEN 'a tablespace'
  WHEN c.relacl IS NOT NULL THEN 'table privileges'
  WHEN EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                 AND (a.attacl IS NOT NULL OR a.attoptions IS NOT NULL OR a.attfdwoptions IS NOT NULL)) THEN 'column privileges or options'
  WHEN EXISTS (SELECT 1 FROM pg_class t WHERE t.oid = c.reltoastrelid AND t.reloptions IS NOT NULL) THEN 'TOAST storage parameters'
  WHEN EXISTS (SELECT 1 FROM pg_seclabel l WHERE l.objoid = c.oid AND l.classoid = 'pg_class'::regclass) THEN 'a security label'
  WHEN c.relreplident = 'i' THEN 'a replica identity index'
END
FROM pg_class c WHERE c.oid IN (SELECT to_regclass(x) FROM unnest(%(names)s::text[]) x)
"""

_TABLE_SQL = """
SELECT c.oid, c.relkind::text, c.relpersistence::text, c.relispartition, c.relreplident::text,
       c.relrowsecurity, c.relforcerowsecurity, c.reloptions, am.amname,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
       (SELECT format('%%I.%%I', pn.nspname, p.relname) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid),
       obj_description(c.oid, 'pg_class')
FROM pg_class c LEFT JOIN pg_am am ON am.oid = c.relam WHERE c.oid = to_regclass(%(t)s)
"""

# One row per column, with what the parent already gives a partition (``inherited_*``) so a
# partition only states where it differs.
_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod),
       CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
            THEN (SELECT format('%%I.%%I', cn.nspname, co.collname) FROM pg_collation co
                  JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END,
       a.attnotnull, a.attidentity::text, a.attgenerated::text, pg_get_expr(d.adbin, d.adrelid),
       a.attislocal, a.attinhcount,
       (SELECT pg_get_expr(pd.adbin, pd.adrelid) FROM pg_inherits i JOIN pg_attribute pa ON pa.attrelid = i.inhparent
          AND pa.attname = a.attname LEFT JOIN pg_attrdef pd ON pd.adrelid = pa.attrelid AND pd.adnum = pa.attnum
        WHERE i.inhrelid = a.attrelid),
       CASE WHEN a.attstorage <> t.typstorage THEN a.attstorage::text END,
       CASE WHEN a.attcompression <> '' THEN a.attcompression::text END,
       a.attstattarget,
       col_description(a.attrelid, a.attnum),
       s.seqrelid::regclass::text, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
       s.seqcache, s.seqcycle
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN LATERAL (SELECT q.* FROM pg_depend dep JOIN pg_sequence q ON q.seqrelid = dep.objid
                   WHERE a.attidentity <> '' AND dep.refclassid = 'pg_class'::regclass AND dep.refobjid = a.attrelid
                     AND dep.refobjsubid = a.attnum AND dep.classid = 'pg_class'::regclass AND dep.deptype = 'i') s ON true
WHERE a.attrelid = to_regclass(%(t)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# Sequences a column owns through serial (deptype 'a'); identity sequences come with the column.
_SERIAL_SQL = """
SELECT s.seqrelid::regclass::text, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
       s.seqcache, s.seqcycle, sc.relpersistence::text, a.attname
FROM pg_depend d JOIN pg_sequence s ON s.seqrelid = d.objid JOIN pg_class sc ON sc.oid = s.seqrelid
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = to_regclass(%(t)s) AND d.deptype = 'a'
ORDER BY s.seqrelid
"""

_CONSTRAINTS_SQL = """
SELECT co.conname, co.contype::text, pg_get_constraintdef(co.oid), co.convalidated, co.conislocal, co.coninhcount,
       co.conparentid <> 0, obj_description(co.oid, 'pg_constraint')
FROM pg_constraint co WHERE co.conrelid = to_regclass(%(t)s)
ORDER BY co.contype, co.conname
"""

# Indexes that no constraint owns (those come with their constraint), and for every index of a
# partition, the partitioned index it attaches to.
_INDEXES_SQL = """
SELECT ic.oid::regclass::text, pg_get_indexdef(i.indexrelid),
       EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conindid = i.indexrelid AND co.conrelid = i.indrelid
               AND co.contype IN ('p', 'u', 'x')),
       (SELECT pi.inhparent::regclass::text FROM pg_inherits pi WHERE pi.inhrelid = i.indexrelid),
       obj_description(i.indexrelid, 'pg_class'), i.indisclustered, ic.relname
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = to_regclass(%(t)s)
ORDER BY ic.relname
"""

_TRIGGERS_SQL = """
SELECT t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text, obj_description(t.oid, 'pg_trigger')
FROM pg_trigger t WHERE t.tgrelid = to_regclass(%(t)s) AND NOT t.tgisinternal AND t.tgparentid = 0 ORDER BY t.tgname
"""

_RULES_SQL = """
SELECT r.rulename, pg_get_ruledef(r.oid), r.ev_enabled::text, obj_description(r.oid, 'pg_rewrite')
FROM pg_rewrite r WHERE r.ev_class = to_regclass(%(t)s) AND r.rulename <> '_RETURN' ORDER BY r.rulename
"""

_POLICIES_SQL = """
SELECT p.polname, p.polpermissive, p.polcmd::text,
       (SELECT array_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END ORDER BY r) FROM unnest(p.polroles) r),
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid), obj_description(p.oid, 'pg_policy')
FROM pg_policy p WHERE p.polrelid = to_regclass(%(t)s) ORDER BY p.polname
"""

_STATISTICS_SQL = """
SELECT pg_get_statisticsobjdef(s.oid), format('%%I.%%I', n.nspname, s.stxname), obj_description(s.oid, 'pg_statistic_ext')
FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE s.stxrelid = to_regclass(%(t)s) ORDER BY s.stxname
"""

_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
_TRIGGER_STATE = {"D": "DISABLE TRIGGER", "A": "ENABLE ALWAYS TRIGGER", "R": "ENABLE REPLICA TRIGGER"}
_RULE_STATE = {"D": "DISABLE RULE", "A": "ENABLE ALWAYS RULE", "R": "ENABLE REPLICA RULE"}
_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}
_COMPRESSION = {"p": "pglz", "l": "lz4"}


@dataclass(frozen=True)
class FamilyDDL:
    """The two sections of a table family's DDL, as pg_dump would split them."""

    pre: str
    post: str


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _script(statements: list[str]) -> str:
    return "".join(f"{s};\n" for s in statements)


_PER_TABLE = {"table": _TABLE_SQL, "serials": _SERIAL_SQL, "columns": _COLUMNS_SQL, "constraints": _CONSTRAINTS_SQL,
              "indexes": _INDEXES_SQL, "triggers": _TRIGGERS_SQL, "rules": _RULES_SQL, "policies": _POLICIES_SQL,
              "statistics": _STATISTICS_SQL}

Rows = dict[str, list[tuple[Any, ...]]]


def _read(conn: psycopg.Connection, family: list[cat.Table]) -> tuple[str | None, dict[cat.Table, Rows]]:
    """Everything the DDL is written from, in one round trip (pipeline mode) rather than one per
    query: a history backs up hundreds of small tables, and ten queries a table added up."""
    pipelined = contextlib.nullcontext() if not psycopg.Pipeline.is_supported() else conn.pipeline()
    with pipelined:
        why = conn.execute(_UNSUPPORTED_SQL, {"names": [t.qualified for t in family]})
        cursors = {t: {key: conn.execute(query, {"t": t.qualified}) for key, query in _PER_TABLE.items()} for t in family}
    reasons = [str(reason) for _oid, reason in why.fetchall() if reason is not None]
    return (reasons[0] if reasons else None), {t: {k: c.fetchall() for k, c in found.items()} for t, found in cursors.items()}


def family_ddl(conn: psycopg.Connection, family: list[cat.Table]) -> FamilyDDL | None:
    """Pre- and post-data DDL of a table and its partitions (parents before children), or None
    when ``_UNSUPPORTED_SQL`` names a shape it cannot write. Call inside the backup's transaction:
    names come out schema-qualified (the search path is pg_catalog for the duration)."""
    if conn.info.server_version < 140000:
        return None  # the queries read pg_attribute.attcompression, new in PostgreSQL 14
    with cat.qualified_names(conn):
        why, rows = _read(conn, family)
    if why is not None:
        return None
    not_null_in_catalog = conn.info.server_version >= 180000  # PostgreSQL 18 keeps NOT NULL as named constraints
    pre: list[str] = []
    post: list[str] = []
    attaches: list[str] = []
    fks: list[str] = []
    for table in family:
        _table(table, rows[table], not_null_in_catalog, pre, post, attaches, fks)
    # Deepest partition's index first: a partitioned index turns valid once every child is attached.
    post += reversed(attaches)
    post += fks  # after every key of the family, which a self-reference needs
    for table in family:
        _behaviour(table, rows[table], post)
    return FamilyDDL(_script(pre), _script(post))


def _sequence_options(typ: str, start: int, inc: int, lo: int, hi: int, cache: int, cycle: bool) -> str:
    return (f"AS {typ} START WITH {start} INCREMENT BY {inc} MINVALUE {lo} MAXVALUE {hi} CACHE {cache}"
            f"{' CYCLE' if cycle else ' NO CYCLE'}")


def _table(table: cat.Table, rows: Rows, not_null_in_catalog: bool, pre: list[str], post: list[str],
           attaches: list[str], fks: list[str]) -> None:
    _oid, kind, persistence, is_partition, replident, rls, force_rls, options, am, partkey, bound, parent, comment = rows["table"][0]
    ident = table.qualified
    serials = rows["serials"]
    for seq, typ, start, inc, lo, hi, cache, cycle, seq_persistence, _col in serials:
        unlogged = "UNLOGGED " if seq_persistence == "u" else ""
        pre.append(f"CREATE {unlogged}SEQUENCE {seq} {_sequence_options(typ, start, inc, lo, hi, cache, cycle)}")
    columns, constraints = rows["columns"], rows["constraints"]
    body: list[str] = []
    after: list[str] = []  # column settings that CREATE TABLE has no clause for
    for (name, typ, collation, not_null, identity, generated, default, _local, _inh, parent_default, storage, compression,
         stattarget, col_comment, id_seq, id_typ, start, inc, lo, hi, cache, cycle) in columns:
        col = quote_ident(name)
        if is_partition:
            # The parent gives the column, its type, identity and generation; only a default of its own is stated.
            if default is not None and not generated and default != parent_default:
                after.append(f"ALTER TABLE ONLY {ident} ALTER COLUMN {col} SET DEFAULT {default}")
        else:
            spec = f"{col} {typ}"
            if collation is not None:
                spec += f" COLLATE {collation}"
            if generated:
                spec += f" GENERATED ALWAYS AS ({default}) {'STORED' if generated == 's' else 'VIRTUAL'}"
            elif identity:
                how = "ALWAYS" if identity == "a" else "BY DEFAULT"
                spec += (f" GENERATED {how} AS IDENTITY (SEQUENCE NAME {id_seq} "
                         f"{_sequence_options(id_typ, start, inc, lo, hi, cache, cycle).removeprefix(f'AS {id_typ} ')})")
            elif default is not None:
                spec += f" DEFAULT {default}"
            if not_null and not not_null_in_catalog:
                spec += " NOT NULL"
            body.append(spec)
        if storage is not None:
            after.append(f"ALTER TABLE ONLY {ident} ALTER COLUMN {col} SET STORAGE {_STORAGE[storage]}")
        if compression is not None:
            after.append(f"ALTER TABLE ONLY {ident} ALTER COLUMN {col} SET COMPRESSION {_COMPRESSION[compression]}")
        if stattarget is not None and stattarget >= 0:
            after.append(f"ALTER TABLE ONLY {ident} ALTER COLUMN {col} SET STATISTICS {stattarget}")
        if col_comment is not None:
            after.append(f"COMMENT ON COLUMN {ident}.{col} IS {_lit(col_comment)}")
    for name, contype, definition, validated, local, inhcount, has_parent, con_comment in constraints:
        clause = f"CONSTRAINT {quote_ident(name)} {definition}"
        inherited = inhcount > 0 or has_parent
        if contype in ("c", "n") and not inherited and local:
            if validated and not is_partition:
                body.append(clause)
            else:  # NOT VALID stays so only if added after the rows; a partition's own checks come after it exists
                (after if validated else post).append(f"ALTER TABLE ONLY {ident} ADD {clause}")
        elif contype in ("p", "u", "x"):
            # ONLY plus an index attach below, as pg_dump does: each partition keeps its own index name.
            post.append(f"ALTER TABLE ONLY {ident} ADD {clause}")
        elif contype == "f" and not has_parent:
            fks.append(f"ALTER TABLE {ident} ADD {clause}")  # without ONLY: a partitioned table's FK reaches its partitions
        if con_comment is not None and (local or not inherited):
            post.append(f"COMMENT ON CONSTRAINT {quote_ident(name)} ON {ident} IS {_lit(con_comment)}")
    if is_partition:
        head = f"CREATE {'UNLOGGED ' if persistence == 'u' else ''}TABLE {ident} PARTITION OF {parent} {bound}"
    else:
        head = f"CREATE {'UNLOGGED ' if persistence == 'u' else ''}TABLE {ident} ({', '.join(body)})"
        if partkey is not None:
            head += f" PARTITION BY {partkey}"
    if is_partition and partkey is not None:
        head += f" PARTITION BY {partkey}"
    if am is not None and am != "heap" and kind == "r":
        head += f" USING {quote_ident(am)}"
    if options:
        head += f" WITH ({', '.join(options)})"
    pre.append(head)
    for _seq_row in serials:
        seq, col_name = _seq_row[0], _seq_row[9]
        pre.append(f"ALTER SEQUENCE {seq} OWNED BY {ident}.{quote_ident(col_name)}")
    pre += after
    if replident in ("f", "n"):
        pre.append(f"ALTER TABLE ONLY {ident} REPLICA IDENTITY {'FULL' if replident == 'f' else 'NOTHING'}")
    if rls:
        pre.append(f"ALTER TABLE ONLY {ident} ENABLE ROW LEVEL SECURITY")
    if force_rls:
        pre.append(f"ALTER TABLE ONLY {ident} FORCE ROW LEVEL SECURITY")
    if comment is not None:
        pre.append(f"COMMENT ON TABLE {ident} IS {_lit(comment)}")
    for index, definition, owned, parent_index, idx_comment, clustered, index_name in rows["indexes"]:
        if not owned:
            post.append(definition)
        if parent_index is not None:
            attaches.append(f"ALTER INDEX {parent_index} ATTACH PARTITION {index}")
        if idx_comment is not None:
            post.append(f"COMMENT ON INDEX {index} IS {_lit(idx_comment)}")
        if clustered:
            post.append(f"ALTER TABLE ONLY {ident} CLUSTER ON {quote_ident(index_name)}")


def _behaviour(table: cat.Table, rows: Rows, post: list[str]) -> None:
    """Triggers, rules, policies and extended statistics: after the rows, so none fires on the load."""
    ident = table.qualified
    for name, definition, enabled, comment in rows["triggers"]:
        post.append(definition)
        if enabled in _TRIGGER_STATE:
            post.append(f"ALTER TABLE {ident} {_TRIGGER_STATE[enabled]} {quote_ident(name)}")
        if comment is not None:
            post.append(f"COMMENT ON TRIGGER {quote_ident(name)} ON {ident} IS {_lit(comment)}")
    for name, definition, enabled, comment in rows["rules"]:
        post.append(definition.rstrip().rstrip(";"))
        if enabled in _RULE_STATE:
            post.append(f"ALTER TABLE {ident} {_RULE_STATE[enabled]} {quote_ident(name)}")
        if comment is not None:
            post.append(f"COMMENT ON RULE {quote_ident(name)} ON {ident} IS {_lit(comment)}")
    for name, permissive, cmd, roles, qual, check, comment in rows["policies"]:
        policy = (f"CREATE POLICY {quote_ident(name)} ON {ident} AS {'PERMISSIVE' if permissive else 'RESTRICTIVE'} "
                  f"FOR {_COMMANDS[cmd]} TO {', '.join(roles or ['PUBLIC'])}")
        if qual is not None:
            policy += f" USING ({qual})"
        if check is not None:
            policy += f" WITH CHECK ({check})"
        post.append(policy)
        if comment is not None:
            post.append(f"COMMENT ON POLICY {quote_ident(name)} ON {ident} IS {_lit(comment)}")
    for definition, name, comment in rows["statistics"]:
        post.append(definition)
        if comment is not None:
            post.append(f"COMMENT ON STATISTICS {name} IS {_lit(comment)}")
