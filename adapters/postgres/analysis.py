"""Reads SQL with pglast (PostgreSQL's own parser): risk, what each statement changes, and the
statements that must run outside a transaction.

This module knows only the text. It walks the whole parse tree of every statement, so a DELETE
inside a data-modifying CTE, a MERGE action, an ``ON CONFLICT DO UPDATE`` or a DO block counts as
what it is; what the catalog adds (foreign-key actions, triggers, rules, function bodies) is
``polyshift.adapters.postgres.scope``'s job.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pglast
from pglast import ast, enums, visitors

from polyshift.adapters.postgres.hazards import Facts, Finding, Kind, Reader, StatementLocks, option_is_true
from polyshift.adapters.postgres.names import RelName
from polyshift.framework.core.errors import MigrationLoadError
from polyshift.framework.core.migration import Risk

_A, _B, _C = Risk.A, Risk.B, Risk.C
AT = enums.AlterTableType
OT = enums.ObjectType
RK = enums.ReindexObjectType
_CASCADE = enums.DropBehavior.DROP_CASCADE

_ADDITIVE = (ast.CreateStmt, ast.CreateTableAsStmt, ast.ViewStmt, ast.CreateSeqStmt, ast.CreateSchemaStmt,
             ast.CreateExtensionStmt, ast.CreateEnumStmt, ast.CompositeTypeStmt, ast.CreateFunctionStmt,
             ast.CommentStmt, ast.InsertStmt, ast.IndexStmt, ast.VariableSetStmt, ast.CreateDomainStmt,
             ast.AlterEnumStmt, ast.SelectStmt, ast.VacuumStmt, ast.CreateRangeStmt, ast.CallStmt, ast.DoStmt,
             ast.CopyStmt, ast.MergeStmt, ast.ExplainStmt, ast.LockStmt)
# Statements whose expressions are stored, not run, when the statement runs: a function called
# from a view, a column default or a trigger definition does nothing yet.
_STORED_CODE = (ast.ViewStmt, ast.CreateStmt, ast.CreateFunctionStmt, ast.CreateTrigStmt, ast.RuleStmt,
                ast.CreatePolicyStmt, ast.AlterPolicyStmt, ast.CreateDomainStmt, ast.CommentStmt, ast.IndexStmt,
                ast.AlterFunctionStmt, ast.CreateCastStmt)


class RowOp(StrEnum):
    """What a statement does to the rows of a table."""

    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    TRUNCATE = "TRUNCATE"


@dataclass(frozen=True)
class RowChange:
    op: RowOp
    relation: RelName
    columns: frozenset[str] | None = None  # UPDATE: the columns it sets (None: not known)
    cascade: bool = False                   # TRUNCATE … CASCADE
    via: str = ""                           # the construct that does it, for messages


@dataclass(frozen=True)
class Routine:
    """A function or procedure the statement calls: its body decides what it writes."""

    name: tuple[str, ...]  # (schema, name) or (name,)

    @property
    def display(self) -> str:
        return ".".join(self.name)


@dataclass
class Effects:
    """Row changes, calls and unreadable code found in one piece of SQL or PL/pgSQL."""

    rows: list[RowChange] = field(default_factory=list)
    calls: list[Routine] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)  # why some effect cannot be read from the text

    def add(self, other: Effects) -> None:
        self.rows.extend(other.rows)
        self.calls.extend(c for c in other.calls if c not in self.calls)
        self.opaque.extend(other.opaque)

    @property
    def destroys(self) -> bool:
        return bool(self.opaque) or any(r.op != RowOp.INSERT for r in self.rows)


@dataclass(frozen=True)
class CascadeDrop:
    """``DROP TYPE|DOMAIN|SCHEMA … CASCADE``: the catalog knows which tables lose columns or rows."""

    kind: str  # "type" or "schema"
    names: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class TriggerDef:
    """A trigger created by the script itself: the catalog does not know it yet."""

    relation: RelName
    events: frozenset[RowOp]
    function: Routine
    name: str


@dataclass
class Statement:
    sql: str
    node: str
    risk: Risk
    touches: list[RelName] = field(default_factory=list)    # existing tables whose data or shape DDL changes
    creates: list[RelName] = field(default_factory=list)
    non_transactional: str | None = None                    # why it cannot run inside a transaction
    notes: list[str] = field(default_factory=list)
    effects: Effects = field(default_factory=Effects)       # rows it changes, routines it calls
    drops: list[CascadeDrop] = field(default_factory=list)
    defines: dict[tuple[str, ...], Effects] = field(default_factory=dict)  # routines it creates, by name
    triggers: list[TriggerDef] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)                  # lock hazards, data loss, breaking
    locks: StatementLocks | None = None                                    # locks and work on existing tables


def _seq(nodes: Any) -> tuple[Any, ...]:
    """A node list pglast may leave as None."""
    return tuple(nodes) if nodes is not None else ()


def _name_parts(nodes: Any) -> tuple[str, ...]:
    return tuple(str(s.sval) for s in _seq(nodes))


def rel(rv: ast.RangeVar | None) -> RelName:
    if rv is None or rv.relname is None:
        raise ValueError("a statement that names no relation where PostgreSQL's grammar requires one")
    return RelName(rv.schemaname or None, rv.relname)


def _list_name(obj: Any) -> RelName:
    """A DROP's object: a list of String nodes (catalog.schema.name, schema.name or name)."""
    parts = [s.sval for s in obj] if isinstance(obj, (tuple, list)) else [obj.sval]
    return RelName(parts[-2] if len(parts) >= 2 else None, parts[-1])


def _type_name(obj: Any) -> tuple[str, ...]:
    names = obj.names if isinstance(obj, ast.TypeName) else obj
    return _name_parts(names)


# ALTER TABLE subcommands whose hazards (lock, rewrite, scan, breaking) the lock-hazard reader
# knows: their category follows its findings. Anything else is not assumed safe (B, backed up).
_KNOWN_ALTERS = {AT.AT_AddColumn, AT.AT_DropColumn, AT.AT_AlterColumnType, AT.AT_SetNotNull, AT.AT_DropNotNull,
                 AT.AT_ColumnDefault, AT.AT_AddConstraint, AT.AT_ValidateConstraint, AT.AT_DropConstraint,
                 AT.AT_SetLogged, AT.AT_SetUnLogged, AT.AT_SetTableSpace, AT.AT_SetAccessMethod, AT.AT_AttachPartition,
                 AT.AT_DetachPartition, AT.AT_SetStatistics, AT.AT_SetOptions, AT.AT_ResetOptions, AT.AT_SetRelOptions,
                 AT.AT_ResetRelOptions, AT.AT_ClusterOn, AT.AT_DropCluster, AT.AT_SetStorage, AT.AT_SetCompression,
                 AT.AT_EnableTrig, AT.AT_DisableTrig, AT.AT_EnableAlwaysTrig, AT.AT_EnableReplicaTrig,
                 AT.AT_EnableTrigAll, AT.AT_DisableTrigAll, AT.AT_EnableTrigUser, AT.AT_DisableTrigUser,
                 AT.AT_AddIdentity, AT.AT_SetIdentity, AT.AT_DropIdentity, AT.AT_EnableRowSecurity,
                 AT.AT_DisableRowSecurity, AT.AT_ForceRowSecurity, AT.AT_NoForceRowSecurity, AT.AT_ReplicaIdentity,
                 AT.AT_AlterConstraint, AT.AT_ChangeOwner}


def _alter_table(stmt: ast.AlterTableStmt, out: Statement) -> None:
    if stmt.objtype not in (OT.OBJECT_TABLE, OT.OBJECT_MATVIEW, OT.OBJECT_FOREIGN_TABLE):
        out.risk = _A if stmt.objtype == OT.OBJECT_INDEX else _B
        return
    risks, touched = [_A], False
    for cmd in _seq(stmt.cmds):
        sub = cmd.subtype
        if sub == AT.AT_DropColumn:
            risks.append(_C)
            touched = True
        elif sub == AT.AT_AlterColumnType:
            touched = True  # values are converted, maybe lossily by a USING expression: keep them
        elif sub == AT.AT_DetachPartition and getattr(cmd.def_, "concurrent", False):
            out.non_transactional = "DETACH PARTITION CONCURRENTLY"
        elif sub not in _KNOWN_ALTERS:
            risks.append(_B)
            touched = True
    out.risk = Risk.highest(risks)
    if touched:
        out.touches.append(rel(stmt.relation))


def _drop(node: ast.DropStmt, out: Statement) -> None:
    kind, cascade = node.removeType, node.behavior == _CASCADE
    if kind == OT.OBJECT_TABLE:
        out.risk = _C
        out.touches.extend(_list_name(obj) for obj in _seq(node.objects))
    elif kind in (OT.OBJECT_TYPE, OT.OBJECT_DOMAIN):
        # Without CASCADE the drop fails while any column still uses the type: nothing to lose.
        out.risk = _C if cascade else _B
        if cascade:
            out.drops.append(CascadeDrop("type", tuple(_type_name(obj) for obj in _seq(node.objects))))
    elif kind == OT.OBJECT_SCHEMA:
        out.risk = _C if cascade else _B
        if cascade:
            out.drops.append(CascadeDrop("schema", tuple((str(obj.sval),) for obj in _seq(node.objects))))
    elif kind == OT.OBJECT_SEQUENCE:
        out.risk = _C
    elif kind in (OT.OBJECT_INDEX, OT.OBJECT_VIEW, OT.OBJECT_MATVIEW, OT.OBJECT_FOREIGN_TABLE):
        # No stored rows are lost (a materialized view's derive from its query); what breaks is
        # the lock-hazard reader's to say.
        out.risk = _A
    else:
        out.risk = _B  # functions, triggers, policies, extensions: what depends on them is not read here
    if node.concurrent:
        out.non_transactional = "DROP INDEX CONCURRENTLY"


def _classify(node: ast.Node, out: Statement) -> None:
    if isinstance(node, ast.TransactionStmt):
        raise MigrationLoadError("migrations must not contain BEGIN/COMMIT/ROLLBACK: polyshift runs each step in its own transaction")
    if isinstance(node, ast.CreateStmt):
        out.risk, out.creates = _A, [rel(node.relation)]
    elif isinstance(node, ast.CreateTableAsStmt):
        out.risk, out.creates = _A, [rel(node.into.rel if node.into is not None else None)]
    elif isinstance(node, ast.SelectStmt) and node.intoClause is not None:
        out.risk, out.creates = _A, [rel(node.intoClause.rel)]
    elif isinstance(node, ast.IndexStmt):
        out.risk = _A
        if node.concurrent:
            out.non_transactional = "CREATE INDEX CONCURRENTLY"
    elif isinstance(node, ast.AlterTableStmt):
        _alter_table(node, out)
    elif isinstance(node, ast.RenameStmt):
        out.risk = _A  # the lock-hazard reader rates renames that break running code
        if node.relation is not None and node.renameType in (OT.OBJECT_TABLE, OT.OBJECT_COLUMN):
            out.touches.append(rel(node.relation))
    elif isinstance(node, ast.DropStmt):
        _drop(node, out)
    elif isinstance(node, ast.TruncateStmt):
        out.risk = _C
        out.touches.extend(rel(rv) for rv in _seq(node.relations))
    elif isinstance(node, (ast.UpdateStmt, ast.DeleteStmt)):
        out.risk = _C
    elif isinstance(node, ast.ReindexStmt):
        out.risk = _A
        if any(getattr(p, "defname", None) == "concurrently" and option_is_true(p.arg) for p in node.params or ()):
            out.non_transactional = "REINDEX CONCURRENTLY"
        elif node.kind in (RK.REINDEX_OBJECT_SCHEMA, RK.REINDEX_OBJECT_DATABASE, RK.REINDEX_OBJECT_SYSTEM):
            out.non_transactional = f"REINDEX {RK(node.kind).name.removeprefix('REINDEX_OBJECT_')}"
    elif isinstance(node, ast.ClusterStmt):
        out.risk = _A
        if node.relation is None:
            out.non_transactional = "CLUSTER (every clustered table)"
    elif isinstance(node, ast.VacuumStmt):
        out.risk = _A
        if node.is_vacuumcmd:
            out.non_transactional = "VACUUM"
    elif isinstance(node, (ast.CreatedbStmt, ast.DropdbStmt, ast.AlterSystemStmt, ast.CreateTableSpaceStmt,
                           ast.DropTableSpaceStmt)):
        out.risk = _C if isinstance(node, ast.DropdbStmt) else _B
        out.non_transactional = type(node).__name__
    elif isinstance(node, ast.CreateFunctionStmt):
        out.risk = _A
        out.defines[_name_parts(node.funcname)] = routine_effects(node, out.sql)
    elif isinstance(node, ast.CreateTrigStmt):
        out.risk = _A  # what it sets off is followed by the scope expander
        out.triggers.append(TriggerDef(rel(node.relation), _trigger_events(node.events or 0),
                                       Routine(_name_parts(node.funcname)), node.trigname or ""))
    elif isinstance(node, _ADDITIVE):
        out.risk = _A
    else:
        out.risk = _B  # unknown to the classifier: not assumed safe
    out.effects.add(effects_of(node))
    if out.effects.destroys:
        out.risk = _C


_TRIGGER_EVENT_BITS = {1 << 2: RowOp.INSERT, 1 << 3: RowOp.DELETE, 1 << 4: RowOp.UPDATE, 1 << 5: RowOp.TRUNCATE}


def _trigger_events(bits: int) -> frozenset[RowOp]:
    return frozenset(op for bit, op in _TRIGGER_EVENT_BITS.items() if bits & bit)


class _EffectsVisitor(visitors.Visitor):
    """Every row change and call anywhere in a statement's tree, CTEs and MERGE actions included."""

    def __init__(self) -> None:
        self.effects = Effects()

    def visit(self, ancestors: Any, node: Any) -> Any:
        if isinstance(node, _STORED_CODE):
            return visitors.Skip
        e = self.effects
        if isinstance(node, ast.InsertStmt):
            target = rel(node.relation)
            e.rows.append(RowChange(RowOp.INSERT, target, via="INSERT"))
            conflict = node.onConflictClause
            if conflict is not None and conflict.action == enums.OnConflictAction.ONCONFLICT_UPDATE:
                e.rows.append(RowChange(RowOp.UPDATE, target, _columns(conflict.targetList), via="INSERT … ON CONFLICT DO UPDATE"))
        elif isinstance(node, ast.UpdateStmt):
            e.rows.append(RowChange(RowOp.UPDATE, rel(node.relation), _columns(node.targetList), via="UPDATE"))
        elif isinstance(node, ast.DeleteStmt):
            e.rows.append(RowChange(RowOp.DELETE, rel(node.relation), via="DELETE"))
        elif isinstance(node, ast.MergeStmt):
            target = rel(node.relation)
            for clause in node.mergeWhenClauses or ():
                cmd = clause.commandType
                if cmd == enums.CmdType.CMD_UPDATE:
                    e.rows.append(RowChange(RowOp.UPDATE, target, _columns(clause.targetList), via="MERGE … THEN UPDATE"))
                elif cmd == enums.CmdType.CMD_DELETE:
                    e.rows.append(RowChange(RowOp.DELETE, target, via="MERGE … THEN DELETE"))
                elif cmd == enums.CmdType.CMD_INSERT:
                    e.rows.append(RowChange(RowOp.INSERT, target, via="MERGE … THEN INSERT"))
        elif isinstance(node, ast.TruncateStmt):
            cascade = node.behavior == _CASCADE
            for rv in _seq(node.relations):
                e.rows.append(RowChange(RowOp.TRUNCATE, rel(rv), cascade=cascade,
                                        via="TRUNCATE … CASCADE" if cascade else "TRUNCATE"))
        elif isinstance(node, ast.CopyStmt) and node.is_from and node.relation is not None:
            e.rows.append(RowChange(RowOp.INSERT, rel(node.relation), via="COPY FROM"))
        elif isinstance(node, ast.FuncCall):
            routine = Routine(_name_parts(node.funcname))
            if routine not in e.calls:
                e.calls.append(routine)
        elif isinstance(node, ast.DoStmt):
            e.add(_do_block(node))
        return None


def _columns(targets: Any) -> frozenset[str] | None:
    names = [t.name for t in targets or () if getattr(t, "name", None)]
    return frozenset(names) if names else None


def effects_of(node: ast.Node) -> Effects:
    walker = _EffectsVisitor()
    walker(node)
    return walker.effects


def _option(options: Any, name: str) -> str | None:
    for opt in options or ():
        if getattr(opt, "defname", None) == name and isinstance(opt.arg, ast.String):
            return str(opt.arg.sval)
    return None


def _do_block(node: ast.DoStmt) -> Effects:
    body = _option(node.args, "as")
    language = (_option(node.args, "language") or "plpgsql").lower()
    if body is None:
        return Effects(opaque=["a DO block without a body"])
    if language != "plpgsql":
        return Effects(opaque=[f"a DO block in language {language}"])
    tag = f"polyshift_{secrets.token_hex(4)}"
    return plpgsql_effects(f"CREATE FUNCTION pg_temp.polyshift_do() RETURNS void LANGUAGE plpgsql AS ${tag}${body}${tag}$",
                           "the DO block")


def routine_effects(node: ast.CreateFunctionStmt, definition: str) -> Effects:
    """What a function would write when called, from its ``CREATE FUNCTION`` statement (node and text)."""
    language = (_option(node.options, "language") or "sql").lower()
    name = ".".join(_name_parts(node.funcname))
    if node.sql_body is not None:
        out = Effects()
        for part in node.sql_body:
            for stmt in part if isinstance(part, (tuple, list)) else (part,):
                if stmt is not None:
                    out.add(effects_of(stmt))
        return out
    body = _option(node.options, "as")
    if body is None:
        as_list = next((o.arg for o in node.options or () if o.defname == "as"), None)
        body = as_list[0].sval if as_list else None
    if body is None:
        return Effects(opaque=[f"function {name} has no body polyshift can read"])
    if language == "sql":
        return sql_effects(body, f"function {name}")
    if language == "plpgsql":
        return plpgsql_effects(definition, f"function {name}")
    return Effects(opaque=[f"function {name} is written in {language}"])


def sql_effects(script: str, where: str) -> Effects:
    """Row changes and calls of SQL text (a function body, a rule); unparsable text is opaque."""
    try:
        parsed = pglast.parse_sql(script)
    except pglast.parser.ParseError as exc:
        return Effects(opaque=[f"{where} could not be parsed ({exc})"])
    out = Effects()
    for raw in parsed:
        if raw.stmt is not None:
            out.add(effects_of(raw.stmt))
    return out


# PL/pgSQL statements that build their SQL at run time: what they change cannot be read.
_DYNAMIC = {"PLpgSQL_stmt_dynexecute": "dynamic SQL (EXECUTE)", "PLpgSQL_stmt_dynfors": "dynamic SQL (FOR … EXECUTE)"}
# parseMode of PLpgSQL_expr (PostgreSQL's RawParseMode): 0 a statement, 1 a type name,
# 2 an expression, 3 to 5 an assignment "target := expression".
_MODE_STATEMENT, _MODE_TYPE, _MODE_EXPR = 0, 1, 2


def plpgsql_effects(create_function_sql: str, where: str) -> Effects:
    """Row changes and calls of a PL/pgSQL body, read statement by statement; dynamic SQL is opaque."""
    try:
        tree = pglast.parse_plpgsql(create_function_sql)
    except pglast.parser.ParseError as exc:
        return Effects(opaque=[f"{where} could not be parsed as PL/pgSQL ({exc})"])
    out = Effects()
    _walk_plpgsql(tree, out, where)
    return out


def _walk_plpgsql(node: Any, out: Effects, where: str) -> None:
    if isinstance(node, list):
        for item in node:
            _walk_plpgsql(item, out, where)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in _DYNAMIC:
            out.opaque.append(f"{where} runs {_DYNAMIC[key]}")
        elif key == "dynquery" and value:
            out.opaque.append(f"{where} opens a cursor on dynamic SQL")
        if key == "PLpgSQL_expr" and isinstance(value, dict):
            out.add(_expression_effects(str(value.get("query", "")), int(value.get("parseMode", 0)), where))
            continue
        _walk_plpgsql(value, out, where)


def _expression_effects(query: str, mode: int, where: str) -> Effects:
    if mode == _MODE_TYPE or not query.strip():
        return Effects()
    if mode == _MODE_STATEMENT:
        text = query
    elif mode == _MODE_EXPR:
        text = f"SELECT {query}"
    else:
        _, sep, rhs = query.partition(":=")
        if not sep:
            _, sep, rhs = query.partition("=")
        text = f"SELECT {rhs}"
    return sql_effects(text, where)


def analyze_sql(script: str, *, origin: str = "", facts: Facts | None = None) -> list[Statement]:
    """Every statement of a script, classified, with its lock-hazard findings (``facts``: the
    catalog before the script runs; without it the findings are the cautious ones). The category
    follows what the statement does to data (C) and the findings (C for data loss; B for lock
    hazards, breaking changes, statements that fail on existing data; A otherwise). Raises
    MigrationLoadError on a syntax error."""
    try:
        parsed = pglast.parse_sql(script)
    except pglast.parser.ParseError as exc:
        where = f"{origin}: " if origin else ""
        raise MigrationLoadError(f"{where}SQL syntax error: {exc}") from None
    statements = []
    reader = Reader(facts)
    # pglast.split gives each statement's exact text (its offsets are character-correct for
    # non-ASCII scripts); parse_sql gives the nodes, in the same order.
    for raw, sql in zip(parsed, pglast.split(script), strict=True):
        if raw.stmt is None:
            continue
        out = Statement(sql=sql, node=type(raw.stmt).__name__, risk=_B)
        try:
            _classify(raw.stmt, out)
        except MigrationLoadError as exc:
            raise MigrationLoadError(f"{origin}: {exc}" if origin else str(exc)) from None
        out.locks = reader.read(raw.stmt, sql)
        statements.append(out)
    # Findings are settled once the whole script is read: a later statement may withdraw one
    # (CREATE VIEW under a table's old name keeps the renamed table's readers working).
    for out, found in zip(statements, reader.per_statement, strict=True):
        out.findings = found
        out.risk = Risk.highest([out.risk, *(_FINDING_RISK[f.kind] for f in found)])
    return statements


_FINDING_RISK = {Kind.DATA_LOSS: _C, Kind.LOCK: _B, Kind.BREAKING: _B, Kind.FAILS: _B}


def inferred_scope(statements: list[Statement]) -> list[str]:
    """Existing tables the script names as changing: altered, renamed, dropped, or written to (the
    text alone; ``polyshift.adapters.postgres.scope`` adds what the catalog says they set off).

    Tables created earlier in the same script are left out: they have nothing to back up.
    """
    created: set[RelName] = set()
    scope: list[str] = []
    for st in statements:
        named = list(st.touches) + [r.relation for r in st.effects.rows]
        for name in named:
            if name not in created and name.sql not in scope:
                scope.append(name.sql)
        created.update(st.creates)
    return scope
