"""Reads SQL with pglast (PostgreSQL's own parser): risk, backup scope, non-transactional statements."""

from __future__ import annotations

from dataclasses import dataclass, field

import pglast
from pglast import ast, enums

from framework.errors import MigrationLoadError
from framework.migration import Risk

_A, _B, _C = Risk.A, Risk.B, Risk.C
AT = enums.AlterTableType
OT = enums.ObjectType

# Object kinds whose DROP loses data or dependants: always category C.
_DESTRUCTIVE_DROPS = {OT.OBJECT_TABLE, OT.OBJECT_SCHEMA, OT.OBJECT_MATVIEW, OT.OBJECT_SEQUENCE,
                      OT.OBJECT_TYPE, OT.OBJECT_DOMAIN, OT.OBJECT_FOREIGN_TABLE}
_ADDITIVE = (ast.CreateStmt, ast.CreateTableAsStmt, ast.ViewStmt, ast.CreateSeqStmt, ast.CreateSchemaStmt,
             ast.CreateExtensionStmt, ast.CreateEnumStmt, ast.CompositeTypeStmt, ast.CreateFunctionStmt,
             ast.CommentStmt, ast.InsertStmt, ast.IndexStmt, ast.VariableSetStmt, ast.CreateDomainStmt,
             ast.AlterEnumStmt, ast.SelectStmt, ast.VacuumStmt, ast.CreateRangeStmt)


@dataclass
class Statement:
    sql: str
    node: str
    risk: Risk
    touches: list[str] = field(default_factory=list)   # existing tables whose data/shape it changes
    creates: list[str] = field(default_factory=list)
    non_transactional: str | None = None                # why it cannot run inside a transaction
    notes: list[str] = field(default_factory=list)


def _rel(rv: ast.RangeVar) -> str:
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else rv.relname


def _names(obj: tuple) -> str:
    return ".".join(s.sval for s in obj)


def _column_not_null(coldef: ast.ColumnDef) -> tuple[bool, bool]:
    not_null = has_default = False
    for con in coldef.constraints or ():
        if con.contype == enums.ConstrType.CONSTR_NOTNULL:
            not_null = True
        elif con.contype in (enums.ConstrType.CONSTR_DEFAULT, enums.ConstrType.CONSTR_IDENTITY,
                             enums.ConstrType.CONSTR_GENERATED):
            has_default = True
        elif con.contype == enums.ConstrType.CONSTR_PRIMARY:
            not_null = True
    return not_null, has_default


def _alter_table(stmt: ast.AlterTableStmt, out: Statement) -> None:
    if stmt.objtype not in (OT.OBJECT_TABLE, OT.OBJECT_MATVIEW, OT.OBJECT_FOREIGN_TABLE):
        out.risk = _B
        return
    risks = []
    for cmd in stmt.cmds:
        sub = cmd.subtype
        if sub == AT.AT_AddColumn:
            not_null, has_default = _column_not_null(cmd.def_)
            risks.append(_B if not_null else _A)
            if not_null and not has_default:
                out.notes.append(f"ADD COLUMN {cmd.def_.colname} NOT NULL without a default fails on a non-empty table")
        elif sub == AT.AT_DropColumn:
            risks.append(_C)
        elif sub in (AT.AT_DropNotNull, AT.AT_ColumnDefault, AT.AT_SetStatistics, AT.AT_SetStorage):
            risks.append(_A)
        elif sub == AT.AT_DetachPartition and getattr(cmd.def_, "concurrent", False):
            out.non_transactional = "DETACH PARTITION CONCURRENTLY"
            risks.append(_B)
        else:
            risks.append(_B)  # type change, SET NOT NULL, constraints: rewrite or validation under lock
    out.risk = Risk.highest(risks)
    # Purely additive changes lose nothing; the rollback that undoes them (DROP COLUMN) is
    # analysed, and backed up, in its own right when it runs.
    if out.risk != _A:
        out.touches.append(_rel(stmt.relation))


def _classify(node: ast.Node, out: Statement) -> None:
    if isinstance(node, ast.TransactionStmt):
        raise MigrationLoadError("migrations must not contain BEGIN/COMMIT/ROLLBACK: polyshift runs each step in its own transaction")
    if isinstance(node, ast.CreateStmt):
        out.risk, out.creates = _A, [_rel(node.relation)]
    elif isinstance(node, ast.CreateTableAsStmt):
        out.risk, out.creates = _A, [_rel(node.into.rel)]
    elif isinstance(node, ast.IndexStmt):
        out.risk = _A
        if node.concurrent:
            out.non_transactional = "CREATE INDEX CONCURRENTLY"
    elif isinstance(node, ast.AlterTableStmt):
        _alter_table(node, out)
    elif isinstance(node, ast.RenameStmt):
        out.risk = _B
        if node.relation is not None:
            out.touches.append(_rel(node.relation))
    elif isinstance(node, ast.DropStmt):
        if node.removeType in _DESTRUCTIVE_DROPS:
            out.risk = _C
            if node.removeType == OT.OBJECT_TABLE:
                out.touches.extend(_names(obj) for obj in node.objects)
        else:
            out.risk = _B
        if node.concurrent:
            out.non_transactional = "DROP INDEX CONCURRENTLY"
    elif isinstance(node, ast.TruncateStmt):
        out.risk = _C
        out.touches.extend(_rel(rv) for rv in node.relations)
    elif isinstance(node, (ast.UpdateStmt, ast.DeleteStmt)):
        out.risk = _C
        out.touches.append(_rel(node.relation))
    elif isinstance(node, ast.ReindexStmt):
        out.risk = _B
        if any(getattr(p, "defname", None) == "concurrently" for p in node.params or ()):
            out.non_transactional = "REINDEX CONCURRENTLY"
    elif isinstance(node, ast.VacuumStmt):
        out.risk = _A
        if node.is_vacuumcmd:
            out.non_transactional = "VACUUM"
    elif isinstance(node, (ast.CreatedbStmt, ast.DropdbStmt, ast.AlterSystemStmt, ast.CreateTableSpaceStmt,
                           ast.DropTableSpaceStmt)):
        out.risk = _C if isinstance(node, ast.DropdbStmt) else _B
        out.non_transactional = type(node).__name__
    elif isinstance(node, _ADDITIVE):
        out.risk = _A
    else:
        out.risk = _B  # unknown to the classifier: not assumed safe


def analyze_sql(script: str, *, origin: str = "") -> list[Statement]:
    """Every statement of a script, classified. Raises MigrationLoadError on a syntax error."""
    try:
        parsed = pglast.parse_sql(script)
    except pglast.parser.ParseError as exc:
        where = f"{origin}: " if origin else ""
        raise MigrationLoadError(f"{where}SQL syntax error: {exc}") from None
    statements = []
    # pglast.split gives each statement's exact text (its offsets are character-correct for
    # non-ASCII scripts); parse_sql gives the nodes, in the same order.
    for raw, sql in zip(parsed, pglast.split(script), strict=True):
        out = Statement(sql=sql, node=type(raw.stmt).__name__, risk=_B)
        try:
            _classify(raw.stmt, out)
        except MigrationLoadError as exc:
            raise MigrationLoadError(f"{origin}: {exc}" if origin else str(exc)) from None
        statements.append(out)
    return statements


def inferred_scope(statements: list[Statement]) -> list[str]:
    """Existing tables the script changes: altered, renamed, dropped, truncated, updated or deleted from.

    Tables created earlier in the same script are left out: they have nothing to back up.
    """
    created: set[str] = set()
    scope: list[str] = []
    for st in statements:
        for name in st.touches:
            if name not in created and name not in scope:
                scope.append(name)
        created.update(st.creates)
    return scope
