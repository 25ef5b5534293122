"""What a script really changes, from the catalog: the backup scope follows foreign-key actions,
triggers, rules, updatable views and function bodies, not only the tables the text names.

``polyshift.adapters.postgres.analysis`` reads what each statement does by itself; this module follows it
through the database as it is now:

- ``ON DELETE/UPDATE CASCADE``, ``SET NULL`` and ``SET DEFAULT`` foreign keys, transitively,
  across partitions and self-references; ``TRUNCATE … CASCADE`` to every referencing table;
- enabled user triggers and rules on every table reached, whose functions are read statement by
  statement (PL/pgSQL through pglast, SQL functions as SQL);
- writes through an automatically updatable view reach its base table;
- volatile user functions and procedures the script calls, the same way as trigger functions.

What cannot be read (dynamic SQL, a function in C or Python, a foreign table) is *unproven*: the
step is risk C and needs a declared scope, and the refusal names the trigger or function.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pglast
import psycopg
from pglast import ast

from polyshift.adapters.postgres import catalog as cat
from polyshift.adapters.postgres.analysis import (
    CascadeDrop,
    Effects,
    Routine,
    RowChange,
    RowOp,
    Statement,
    TriggerDef,
    plpgsql_effects,
    sql_effects,
)
from polyshift.adapters.postgres.names import RelName, quote_ident
from polyshift.framework.core.migration import Risk

_MAX_DEPTH = 12  # nested functions and triggers followed before giving up (and calling it unproven)
_ACTIONS = {"c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
# Built-in functions that change stored data (large objects); every other pg_catalog function
# leaves tables alone.
_CATALOG_WRITERS = {"lo_unlink", "lo_import", "lo_from_bytea", "lo_put", "lo_truncate", "lo_truncate64", "lo_create",
                    "lo_creat"}
# Extension functions written in C that run arbitrary SQL (possibly on this very database).
_EXTENSION_WRITERS = {"dblink", "dblink_exec", "dblink_send_query", "dblink_open", "dblink_fetch"}
_TRIGGER_EVENT = {RowOp.INSERT: 1 << 2, RowOp.DELETE: 1 << 3, RowOp.UPDATE: 1 << 4, RowOp.TRUNCATE: 1 << 5}
_RULE_EVENT = {RowOp.UPDATE: "2", RowOp.INSERT: "3", RowOp.DELETE: "4"}


@dataclass
class Coverage:
    """The tables a script changes, each with why, and what could not be proven."""

    tables: dict[cat.Table, list[str]] = field(default_factory=dict)
    risk: Risk = Risk.A
    unproven: list[str] = field(default_factory=list)

    def add(self, table: cat.Table, reason: str) -> None:
        reasons = self.tables.setdefault(table, [])
        if reason not in reasons:
            reasons.append(reason)

    def refuse(self, why: str) -> None:
        self.risk = Risk.C
        if why not in self.unproven:
            self.unproven.append(why)


@dataclass(frozen=True)
class _Work:
    op: RowOp
    table: cat.Table
    columns: frozenset[str] | None
    cascade: bool
    reason: str
    depth: int


@dataclass(frozen=True)
class _Rel:
    oid: int
    table: cat.Table
    kind: str  # pg_class.relkind


class ScopeExpander:
    """Follows a script's row changes through the catalog of one database (read-only)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._routine_cache: dict[int, Effects] = {}
        self._script_routines: dict[tuple[str, ...], Effects] = {}
        self._script_triggers: list[TriggerDef] = []

    # -- entry point -------------------------------------------------------------------
    def expand(self, statements: list[Statement]) -> Coverage:
        cov = Coverage()
        for st in statements:
            self._script_routines.update({k: v for k, v in st.defines.items()})
            for name in st.touches:
                found = self._relation(name)
                if found is not None and found.kind in ("r", "p"):
                    cov.add(found.table, f"`{_short(st.sql)}`")
            for drop in st.drops:
                self._cascade_drop(drop, st, cov)
            self._effects(st.effects, cov, reason=f"`{_short(st.sql)}`", depth=0, search_path=None)
            self._script_triggers.extend(st.triggers)
        self._collapse_partitions(cov)
        return cov

    # -- effects of one piece of code ----------------------------------------------------
    def _effects(self, effects: Effects, cov: Coverage, *, reason: str, depth: int,
                 search_path: list[str] | None) -> None:
        for why in effects.opaque:
            cov.refuse(why)
        work: deque[_Work] = deque()
        for change in effects.rows:
            found = self._relation(change.relation, search_path)
            if found is None:
                continue  # created by the script itself (nothing to lose yet), or the statement fails
            work.extend(self._targets(found, change, reason, depth, cov))
        self._drain(work, cov)
        for routine in effects.calls:
            self._call(routine, cov, reason=reason, depth=depth, search_path=search_path)

    def _targets(self, found: _Rel, change: RowChange, reason: str, depth: int, cov: Coverage) -> list[_Work]:
        """Where a row change lands: the table itself, or the base table behind an updatable view."""
        if found.kind in ("r", "p"):
            # The script's own statement speaks for itself; code it sets off says what it does.
            why = f"{change.via} {reason}".strip() if depth else reason
            return [_Work(change.op, found.table, change.columns, change.cascade, why, depth)]
        if found.kind == "v":
            return self._through_view(found, change, reason, depth, cov)
        if found.kind == "f":
            cov.refuse(f"{found.table.qualified} is a foreign table: its rows live on another server")
        return []

    def _through_view(self, view: _Rel, change: RowChange, reason: str, depth: int, cov: Coverage) -> list[_Work]:
        triggers = self._triggers(view, change.op, change.columns)
        rules = self._rules(view, change.op)
        if triggers or rules:
            for tg in triggers:
                self._run_trigger(tg, view.table, cov, depth)
            for rule_name, definition in rules:
                self._effects(sql_effects(definition, f"rule {rule_name} on {view.table.qualified}"), cov,
                              reason=f"by rule {rule_name} on {view.table.qualified}", depth=depth + 1,
                              search_path=None)
            return []
        base = self._view_base(view)
        if base is None:
            cov.refuse(f"{change.via} on view {view.table.qualified}, whose base table polyshift cannot tell")
            return []
        return self._targets(base, change, f"through view {view.table.qualified} {reason}".strip(), depth, cov)

    def _drain(self, work: deque[_Work], cov: Coverage) -> None:
        seen: set[tuple[RowOp, cat.Table, frozenset[str] | None, bool]] = set()
        while work:
            item = work.popleft()
            key = (item.op, item.table, item.columns, item.cascade)
            if key in seen:
                continue
            seen.add(key)
            # Inserted rows are in the scope too: the fingerprint that proves an undo must see
            # them gone, and a backup can take them away when a rollback step does not.
            cov.add(item.table, item.reason)
            if item.op != RowOp.INSERT:
                cov.risk = Risk.C
            if item.depth > _MAX_DEPTH:
                cov.refuse(f"changes to {item.table.qualified} set off more than {_MAX_DEPTH} nested triggers or cascades")
                continue
            rel = self._relation_of(item.table)
            if rel is None:
                continue
            work.extend(self._foreign_key_actions(item, rel))
            for tg in self._triggers(rel, item.op, item.columns):
                self._run_trigger(tg, item.table, cov, item.depth)
            for rule_name, definition in self._rules(rel, item.op):
                self._effects(sql_effects(definition, f"rule {rule_name} on {item.table.qualified}"), cov,
                              reason=f"by rule {rule_name} on {item.table.qualified}", depth=item.depth + 1,
                              search_path=None)
            for created in self._script_triggers:
                if item.op in created.events and self._relation(created.relation) == rel:
                    self._call(created.function, cov, reason=f"by trigger {created.name} (created by the script) on "
                               f"{item.table.qualified}", depth=item.depth + 1, search_path=None)

    # -- foreign keys ------------------------------------------------------------------------
    def _foreign_key_actions(self, item: _Work, rel: _Rel) -> list[_Work]:
        if item.op == RowOp.INSERT or (item.op == RowOp.TRUNCATE and not item.cascade):
            return []
        # Constraints are matched on the table, its ancestors and its partitions, then mapped to
        # their root (conparentid = 0): a foreign key declared on a partitioned table is cloned
        # onto every partition on both sides.
        rows = self.conn.execute(
            """
            WITH family AS (
              SELECT %(t)s::oid AS oid
              UNION SELECT relid FROM pg_partition_ancestors(%(t)s::regclass)
              UNION SELECT relid FROM pg_partition_tree(%(t)s::regclass))
            SELECT DISTINCT ON (root.oid) root.conname, rn.nspname, r.relname, root.confdeltype, root.confupdtype,
              (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
               WHERE a.attrelid = root.conrelid AND a.attnum = ANY (root.conkey)),
              (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
               WHERE a.attrelid = root.confrelid AND a.attnum = ANY (root.confkey)),
              (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
               WHERE a.attrelid = root.conrelid AND a.attnum = ANY (root.confdelsetcols))
            FROM pg_constraint co
            JOIN LATERAL (
              WITH RECURSIVE up AS (SELECT co.oid, co.conparentid UNION ALL
                SELECT p.oid, p.conparentid FROM pg_constraint p JOIN up ON p.oid = up.conparentid)
              SELECT oid FROM up WHERE conparentid = 0) top ON true
            JOIN pg_constraint root ON root.oid = top.oid
            JOIN pg_class r ON r.oid = root.conrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
            WHERE co.contype = 'f' AND co.confrelid IN (SELECT oid FROM family)
            ORDER BY root.oid
            """,
            {"t": rel.oid},
        ).fetchall()
        out = []
        for name, schema, table, on_delete, on_update, columns, referenced, set_columns in rows:
            child = cat.Table(schema, table)
            cols = frozenset(columns or ())
            via = f"via {name}"
            if item.op == RowOp.TRUNCATE:
                out.append(_Work(RowOp.TRUNCATE, child, None, True, f"{via} (TRUNCATE … CASCADE from {item.table.qualified})",
                                 item.depth + 1))
            elif item.op == RowOp.DELETE and on_delete in _ACTIONS:
                op = RowOp.DELETE if on_delete == "c" else RowOp.UPDATE
                target_cols = None if op == RowOp.DELETE else frozenset(set_columns or ()) or cols
                out.append(_Work(op, child, target_cols, False,
                                 f"{via} ON DELETE {_ACTIONS[on_delete]} from {item.table.qualified}", item.depth + 1))
            elif item.op == RowOp.UPDATE and on_update in _ACTIONS and (
                    item.columns is None or item.columns & frozenset(referenced or ())):
                out.append(_Work(RowOp.UPDATE, child, cols, False,
                                 f"{via} ON UPDATE {_ACTIONS[on_update]} from {item.table.qualified}", item.depth + 1))
        return out

    # -- triggers and rules ----------------------------------------------------------------------
    def _triggers(self, rel: _Rel, op: RowOp, columns: frozenset[str] | None) -> list[tuple[str, int, str]]:
        """Enabled user triggers that fire for ``op`` on the table or any of its partitions:
        (trigger name, function oid, function's display name)."""
        rows = self.conn.execute(
            """
            SELECT t.tgname, t.tgfoid, t.tgfoid::regproc::text,
              (SELECT array_agg(a.attname) FROM pg_attribute a WHERE a.attrelid = t.tgrelid AND a.attnum = ANY (t.tgattr))
            FROM pg_trigger t
            WHERE t.tgrelid IN (SELECT %(t)s::oid UNION SELECT relid FROM pg_partition_tree(%(t)s::regclass))
              AND NOT t.tgisinternal AND t.tgenabled IN ('O', 'A') AND (t.tgtype & %(event)s) <> 0
            ORDER BY t.tgname
            """,
            {"t": rel.oid, "event": _TRIGGER_EVENT[op]},
        ).fetchall()
        out = []
        for name, function, display, of_columns in rows:
            # UPDATE OF cols: fires only when one of them is set (unknown columns: assume it fires).
            if op == RowOp.UPDATE and of_columns and columns is not None and not columns & frozenset(of_columns):
                continue
            if (name, function, display) not in out:
                out.append((name, function, display))
        return out

    def _run_trigger(self, trigger: tuple[str, int, str], table: cat.Table, cov: Coverage, depth: int) -> None:
        name, function, display = trigger
        where = f"trigger {name} on {table.qualified}"
        effects, search_path = self._routine_body(function, f"{where} (function {display})")
        self._effects(effects, cov, reason=f"by {where}", depth=depth + 1, search_path=search_path)

    def _rules(self, rel: _Rel, op: RowOp) -> list[tuple[str, str]]:
        event = _RULE_EVENT.get(op)
        if event is None:
            return []
        rows = self.conn.execute(
            "SELECT rulename, pg_get_ruledef(oid) FROM pg_rewrite WHERE ev_class = %s AND ev_type = %s "
            "AND rulename <> '_RETURN' AND ev_enabled <> 'D' ORDER BY rulename",
            (rel.oid, event),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def _view_base(self, view: _Rel) -> _Rel | None:
        """The single base relation of an automatically updatable view (what PostgreSQL writes to)."""
        row = self.conn.execute(
            "SELECT pg_relation_is_updatable(%s, false), pg_get_viewdef(%s::oid)", (view.oid, view.oid),
        ).fetchone()
        if row is None or not row[0]:
            return None
        [raw] = pglast.parse_sql(row[1])
        query = raw.stmt
        if not isinstance(query, ast.SelectStmt) or not query.fromClause or len(query.fromClause) != 1:
            return None
        source = query.fromClause[0]
        if not isinstance(source, ast.RangeVar):
            return None
        return self._relation(RelName(source.schemaname or None, source.relname or ""))

    # -- functions -------------------------------------------------------------------------------
    def _call(self, routine: Routine, cov: Coverage, *, reason: str, depth: int, search_path: list[str] | None) -> None:
        if depth > _MAX_DEPTH:
            cov.refuse(f"{routine.display} calls functions nested more than {_MAX_DEPTH} deep")
            return
        schema = routine.name[0] if len(routine.name) > 1 else None
        name = routine.name[-1]
        if routine.name in self._script_routines:
            self._effects(self._script_routines[routine.name], cov, reason=f"by {routine.display}() {reason}",
                          depth=depth + 1, search_path=search_path)
            return
        candidates = self.conn.execute(
            """
            SELECT p.oid, n.nspname, p.provolatile, l.lanname,
                   EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
            WHERE p.proname = %(name)s AND CASE WHEN %(schema)s::text IS NULL
                  THEN n.nspname = ANY (coalesce(%(path)s::text[], current_schemas(true))) ELSE n.nspname = %(schema)s END
            ORDER BY p.oid
            """,
            {"name": name, "schema": schema, "path": search_path},
        ).fetchall()
        if not candidates:
            return  # neither in the database nor created by the script: calling it fails, writing nothing
        for oid, nspname, volatility, language, in_extension in candidates:
            if nspname == "pg_catalog":
                if name in _CATALOG_WRITERS:
                    cov.refuse(f"{routine.display}() writes large objects")
                continue
            if volatility in ("i", "s"):
                continue  # PostgreSQL refuses writes inside immutable and stable functions
            if language in ("c", "internal"):
                if in_extension and name not in _EXTENSION_WRITERS:
                    continue
                cov.refuse(f"function {nspname}.{name}() is written in {language} and may write anything")
                continue
            effects, body_path = self._routine_body(oid, f"function {nspname}.{name}()")
            self._effects(effects, cov, reason=f"by {nspname}.{name}() {reason}", depth=depth + 1,
                          search_path=body_path)

    def _routine_body(self, oid: int, where: str) -> tuple[Effects, list[str] | None]:
        row = self.conn.execute(
            """
            SELECT l.lanname, p.prosrc, p.prosqlbody IS NOT NULL, pg_get_functiondef(p.oid), p.provolatile,
                   (SELECT substr(c, 13) FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%%')
            FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.oid = %s
            """,
            (oid,),
        ).fetchone()
        if row is None:
            return Effects(opaque=[f"{where} no longer exists"]), None
        language, source, atomic, definition, volatility, path = row
        search_path = [s.strip().strip('"') for s in path.split(",")] if path else None
        if oid in self._routine_cache:
            return self._routine_cache[oid], search_path
        if volatility in ("i", "s"):
            effects = Effects()
        elif language == "plpgsql":
            effects = plpgsql_effects(definition, where)
        elif language == "sql":
            effects = sql_effects(definition if atomic else source, where)
        else:
            effects = Effects(opaque=[f"{where} is written in {language}"])
        self._routine_cache[oid] = effects
        return effects, search_path

    # -- DROP TYPE / SCHEMA … CASCADE -------------------------------------------------------------
    def _cascade_drop(self, drop: CascadeDrop, st: Statement, cov: Coverage) -> None:
        for parts in drop.names:
            if drop.kind == "schema":
                rows = self.conn.execute(
                    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 2", (parts[0],),
                ).fetchall()
                for schema, name in rows:
                    cov.add(cat.Table(schema, name), f"dropped with schema {parts[0]} by `{_short(st.sql)}`")
                type_filter = "t.typnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %(a)s)"
                params: dict[str, object] = {"a": parts[0]}
            else:
                type_filter = "t.oid = to_regtype(%(a)s)"
                params = {"a": ".".join(quote_ident(p) for p in parts)}
            # Columns of a dropped type (or of a domain or array over it) go with it, elsewhere too.
            columns = self.conn.execute(
                f"""
                WITH RECURSIVE dropped(oid) AS (
                  SELECT t.oid FROM pg_type t WHERE {type_filter}
                  UNION SELECT t.oid FROM pg_type t JOIN dropped d ON t.typbasetype = d.oid OR t.typelem = d.oid)
                SELECT DISTINCT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
                FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE a.atttypid IN (SELECT oid FROM dropped) AND c.relkind IN ('r', 'p') AND NOT a.attisdropped
                  AND NOT c.relispartition ORDER BY 1, 2, 3
                """,
                params,
            ).fetchall()
            for schema, name, column, type_name in columns:
                cov.add(cat.Table(schema, name), f"column {column} ({type_name}) dropped by `{_short(st.sql)}`")

    # -- names -------------------------------------------------------------------------------------
    def _relation(self, name: RelName, search_path: list[str] | None = None) -> _Rel | None:
        if name.schema is None and search_path:
            row = self.conn.execute(
                "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = %s AND n.nspname = ANY (%s) ORDER BY array_position(%s, n.nspname::text) LIMIT 1",
                (name.name, search_path, search_path),
            ).fetchone()
        else:
            row = self.conn.execute(
                "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(%s)", (name.sql,),
            ).fetchone()
        if row is None:
            return None
        return _Rel(int(row[0]), cat.Table(row[1], row[2]), str(row[3]))

    def _relation_of(self, table: cat.Table) -> _Rel | None:
        return self._relation(RelName(table.schema, table.name))

    def _collapse_partitions(self, cov: Coverage) -> None:
        """A partition whose partitioned ancestor is in the scope is backed up with it, once."""
        kept = cat.without_covered_partitions(self.conn, list(cov.tables))
        for table in list(cov.tables):
            if table not in kept:
                reasons = cov.tables.pop(table)
                parent = next(t for t in kept if cat.is_ancestor(self.conn, t, table))
                for r in reasons:
                    cov.add(parent, f"{table.qualified}: {r}")


def _short(sql: str, width: int = 70) -> str:
    one = " ".join(sql.split())
    return one if len(one) <= width else one[: width - 1] + "…"
