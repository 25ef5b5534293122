"""Lock hazards, read from PostgreSQL's own parse tree: which lock each statement takes on a table
that already exists, whether it rewrites, scans or indexes that table while holding it, and what
to write instead.

A statement is a *lock* hazard when it holds SHARE or stronger (writes stop; ACCESS EXCLUSIVE
stops reads too) while it does work that grows with the table; a *data-loss* hazard when rows or
stored values go; *breaking* when it works but code using the old name or shape breaks; *fails*
when it errors on existing data. Every finding has a stable code and the safe form. What the text
alone cannot settle (is this function volatile, is that column already known NOT NULL, is the
table empty) is asked of ``Facts``, the catalog as it is before the migration runs; without it
the answer is the cautious one.

The lock levels and work are those PostgreSQL 18 measurably takes (tests/data/lock_hazards.toml
holds the corpus they are checked against).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Protocol

import pglast
from pglast import ast, enums, visitors

from polyshift.adapters.postgres.names import RelName
from polyshift.adapters.postgres.sizes import TableSize
from polyshift.framework.core import protocol
from polyshift.framework.core.protocol import FindingKind

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType


class Lock(IntEnum):
    """PostgreSQL's table lock modes, weakest first."""

    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @property
    def blocks_writes(self) -> bool:
        return self >= Lock.SHARE


class Work(StrEnum):
    REWRITE = "rewrite"
    SCAN = "scan"
    INDEX = "index build"


Kind = FindingKind  # one vocabulary with the Analysis record every adapter returns



@dataclass(frozen=True)
class Finding:
    code: str
    kind: Kind
    statement: str
    table: str | None
    lock: Lock | None
    work: tuple[Work, ...]
    message: str
    safe: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "kind": self.kind.value, "statement": self.statement, "table": self.table,
                "lock": self.lock.label if self.lock else None, "work": [w.value for w in self.work],
                "message": self.message, "safe": self.safe}

    def reported(self, size: TableSize | None, *, acknowledged: bool) -> protocol.Finding:
        """The store-neutral record ``plan`` lists and ``up`` decides on. ``size``: the largest
        existing table the statement does its work on (None: none exists yet)."""
        return protocol.Finding(self.code, self.kind, self.statement, self.message, self.safe, self.table,
                                self.lock.label if self.lock else None, tuple(w.value for w in self.work),
                                size.describe() if size else None, bool(size and size.large), acknowledged)


@dataclass
class StatementLocks:
    """What one statement does to the tables that exist before it: the lock and the work."""

    sql: str
    locks: dict[str, Lock] = field(default_factory=dict)
    work: dict[str, set[Work]] = field(default_factory=dict)

    def take(self, table: RelName, lock: Lock, *work: Work) -> None:
        name = table.sql
        self.locks[name] = max(self.locks.get(name, Lock.ACCESS_SHARE), lock)
        self.work.setdefault(name, set()).update(work)


class Facts(Protocol):
    """The catalog before the migration runs; None means 'cannot tell' (answered cautiously)."""

    def exists(self, table: RelName) -> bool | None: ...

    def rows(self, table: RelName) -> float | None: ...

    def partitioned(self, table: RelName) -> bool | None: ...

    def column_type(self, table: RelName, column: str) -> str | None: ...

    def column_not_null(self, table: RelName, column: str) -> bool | None: ...

    def proven_not_null(self, table: RelName, column: str) -> bool | None: ...

    def function_volatility(self, name: tuple[str, ...]) -> str | None: ...

    def inlinable_constant(self, name: tuple[str, ...]) -> bool | None: ...

    def timezone_is_utc(self) -> bool | None: ...

    def has_validated_check(self, table: RelName) -> bool | None: ...

    def schema_has_objects(self, schema: str) -> bool | None: ...

    def schema_tables(self, schema: str) -> list[RelName]: ...

    def index_table(self, index: RelName) -> RelName | None: ...

    def index_backs_constraint(self, index: RelName) -> bool | None: ...

    def index_columns(self, index: RelName) -> list[str]: ...

    def domain_tables(self, domain: tuple[str, ...]) -> list[RelName]: ...


# -- codes: stable, documented in README ----------------------------------------------------------
CODES: dict[str, tuple[Kind, str]] = {
    "PS101": (Kind.LOCK, "ADD COLUMN with a volatile default rewrites the table under ACCESS EXCLUSIVE"),
    "PS102": (Kind.LOCK, "ADD COLUMN … STORED generated column rewrites the table under ACCESS EXCLUSIVE"),
    "PS103": (Kind.LOCK, "ADD COLUMN with an identity or serial rewrites the table under ACCESS EXCLUSIVE"),
    "PS104": (Kind.LOCK, "ADD COLUMN … UNIQUE / PRIMARY KEY builds an index under ACCESS EXCLUSIVE"),
    "PS105": (Kind.LOCK, "ADD COLUMN … CHECK scans the table under ACCESS EXCLUSIVE"),
    "PS106": (Kind.FAILS, "ADD COLUMN … NOT NULL without a default fails on a non-empty table"),
    "PS110": (Kind.LOCK, "SET NOT NULL scans the table under ACCESS EXCLUSIVE"),
    "PS111": (Kind.LOCK, "ADD FOREIGN KEY without NOT VALID scans the table under SHARE ROW EXCLUSIVE on both tables"),
    "PS112": (Kind.LOCK, "ADD CHECK without NOT VALID scans the table under ACCESS EXCLUSIVE"),
    "PS113": (Kind.LOCK, "ADD UNIQUE / PRIMARY KEY / EXCLUDE builds an index under ACCESS EXCLUSIVE"),
    "PS114": (Kind.LOCK, "ADD PRIMARY KEY USING INDEX on a nullable column scans the table under ACCESS EXCLUSIVE"),
    "PS120": (Kind.LOCK, "ALTER COLUMN TYPE rewrites the table (and its indexes) under ACCESS EXCLUSIVE"),
    "PS121": (Kind.DATA_LOSS, "ALTER COLUMN TYPE narrows the stored values"),
    "PS122": (Kind.LOCK, "ALTER COLUMN TYPE … COLLATE rebuilds the column's indexes under ACCESS EXCLUSIVE"),
    "PS130": (Kind.LOCK, "CREATE INDEX without CONCURRENTLY blocks writes (SHARE) while it builds"),
    "PS131": (Kind.FAILS, "CREATE INDEX CONCURRENTLY is refused on a partitioned table"),
    "PS132": (Kind.LOCK, "REINDEX without CONCURRENTLY blocks writes (SHARE) while it builds"),
    "PS140": (Kind.LOCK, "VACUUM FULL / CLUSTER rewrites the table under ACCESS EXCLUSIVE"),
    "PS141": (Kind.LOCK, "SET LOGGED / UNLOGGED / TABLESPACE / ACCESS METHOD rewrites the table under ACCESS EXCLUSIVE"),
    "PS142": (Kind.LOCK, "ATTACH PARTITION scans the partition under ACCESS EXCLUSIVE"),
    "PS143": (Kind.LOCK, "ALTER DOMAIN ADD CONSTRAINT without NOT VALID scans every column of the domain"),
    "PS150": (Kind.BREAKING, "RENAME breaks running code that uses the old name"),
    "PS151": (Kind.BREAKING, "DROP VIEW breaks running code that reads it"),
    "PS152": (Kind.BREAKING, "DETACH PARTITION takes its rows out of the partitioned table"),
    "PS160": (Kind.DATA_LOSS, "DROP COLUMN loses the column's values"),
    "PS161": (Kind.DATA_LOSS, "DROP TABLE / TRUNCATE loses the table's rows"),
    "PS162": (Kind.DATA_LOSS, "UPDATE / DELETE changes existing rows"),
    "PS163": (Kind.DATA_LOSS, "DROP … CASCADE loses what depends on the object"),
    "PS164": (Kind.DATA_LOSS, "DROP DATABASE loses every table in it"),
    "PS170": (Kind.FAILS, "DROP SCHEMA without CASCADE fails while the schema holds objects"),
    "PS171": (Kind.FAILS, "DROP INDEX of an index that backs a constraint fails (drop the constraint instead)"),
}

SAFE: dict[str, str] = {
    "PS101": "add the column without a default (or with a constant one), backfill in batches, then SET DEFAULT",
    "PS102": "add a nullable column, backfill it in batches, keep it current with a trigger",
    "PS103": "add a nullable bigint, backfill in batches, then attach a sequence with SET DEFAULT nextval(…)",
    "PS104": "add the column, CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … UNIQUE USING INDEX",
    "PS105": "add the column, then ADD CONSTRAINT … CHECK (…) NOT VALID and VALIDATE CONSTRAINT in a later step",
    "PS106": "add the column with a default (constant defaults are instant since PostgreSQL 11), or nullable and backfill",
    "PS110": "ADD CONSTRAINT … CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT, then SET NOT NULL (no scan)",
    "PS111": "ADD CONSTRAINT … FOREIGN KEY … NOT VALID, then VALIDATE CONSTRAINT in a later step",
    "PS112": "ADD CONSTRAINT … CHECK (…) NOT VALID, then VALIDATE CONSTRAINT in a later step",
    "PS113": "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … UNIQUE (or PRIMARY KEY) USING INDEX",
    "PS114": "make the column NOT NULL first (validated CHECK, then SET NOT NULL), then ADD PRIMARY KEY USING INDEX",
    "PS120": "add a new column of the new type, backfill in batches, switch readers with a flag, drop the old one later",
    "PS121": "add a new column, copy what fits, check what does not, then switch",
    "PS122": "CREATE INDEX CONCURRENTLY on the new collation beside the old index, then swap",
    "PS130": "CREATE INDEX CONCURRENTLY (polyshift runs it outside a transaction)",
    "PS131": "CREATE INDEX … ON ONLY the parent, CREATE INDEX CONCURRENTLY on each partition, then ALTER INDEX … ATTACH PARTITION",
    "PS132": "REINDEX … CONCURRENTLY",
    "PS140": "pg_repack or pg_squeeze rebuild a table without holding ACCESS EXCLUSIVE for the copy",
    "PS141": "avoid on a busy table; create the new table beside the old one and move rows in batches",
    "PS142": "add a CHECK constraint matching the bounds to the partition (NOT VALID, then VALIDATE) before ATTACH",
    "PS143": "ALTER DOMAIN … ADD CONSTRAINT … NOT VALID, then VALIDATE CONSTRAINT",
    "PS150": "expand and contract: add the new name (a column, or a view for a table), write both, move readers, drop the old",
    "PS151": "keep the view until no reader uses it (contract in a later release)",
    "PS152": "move readers off the partitioned table first, or copy the rows elsewhere",
    "PS160": "stop reading the column, then drop it in a later release (polyshift backs it up first)",
    "PS161": "polyshift backs the rows up first; make sure no code still reads or writes the table",
    "PS162": "update in batches; polyshift backs the rows up first",
    "PS163": "name what goes with it explicitly; polyshift backs up what it can find",
    "PS164": "never from a migration: back the database up and drop it by hand",
    "PS170": "drop the schema's objects first, or use CASCADE with a declared backup scope",
    "PS171": "ALTER TABLE … DROP CONSTRAINT",
}

# Functions whose result changes per row (a default with one rewrites the table). Stable ones
# (now(), current_timestamp) are evaluated once per statement: no rewrite.
_VOLATILE_BUILTINS = {"random", "gen_random_uuid", "clock_timestamp", "timeofday", "nextval", "uuid_generate_v1",
                      "uuid_generate_v4", "uuidv4", "uuidv7", "setseed", "random_normal"}
_SERIAL = {"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"}
_TS_LIKE = re.compile(r"^(timestamp|time)( without time zone)?$")


def _short(sql: str, width: int = 100) -> str:
    one = " ".join(sql.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def _rel(rv: Any) -> RelName:
    return RelName(rv.schemaname or None, rv.relname)


def _names(nodes: Any) -> tuple[str, ...]:
    return tuple(str(n.sval) for n in nodes or ())


class Reader:
    """Findings for one script, statement by statement, remembering what the script itself did."""

    def __init__(self, facts: Facts | None) -> None:
        self.facts = facts
        self.created: set[RelName] = set()
        self.validated_not_null: set[tuple[RelName, str]] = set()
        self.pending_not_null_checks: dict[str, tuple[RelName, str]] = {}
        self.renamed_away: dict[RelName, str] = {}
        self.per_statement: list[list[Finding]] = []  # a later statement may withdraw an earlier finding
        self.statements: list[StatementLocks] = []

    @property
    def findings(self) -> list[Finding]:
        return [f for found in self.per_statement for f in found]

    # -- what is known about a table --------------------------------------------------------
    def existing(self, table: RelName) -> bool:
        """Whether the table holds rows from before this migration (the ones a lock stalls)."""
        if table in self.created or RelName(None, table.name) in self.created:
            return False
        known = self.facts.exists(table) if self.facts else None
        return known is not False

    def empty(self, table: RelName) -> bool:
        rows = self.facts.rows(table) if self.facts else None
        return rows == 0

    def add(self, code: str, st: StatementLocks, table: RelName | None, lock: Lock | None, *work: Work,
            detail: str = "") -> None:
        kind, message = CODES[code]
        where = f" on {table.sql}" if table else ""
        self.per_statement[-1].append(Finding(code, kind, _short(st.sql), table.sql if table else None, lock, tuple(work),
                                              f"{message}{where}" + (f" ({detail})" if detail else ""), SAFE[code]))

    # -- statements -------------------------------------------------------------------------
    def read(self, node: Any, sql: str) -> StatementLocks:
        st = StatementLocks(sql)
        self.per_statement.append([])
        handler = getattr(self, f"_{type(node).__name__}", None)
        if handler is not None:
            handler(node, st)
        self.statements.append(st)
        return st

    def _CreateStmt(self, node: ast.CreateStmt, st: StatementLocks) -> None:
        self.created.add(_rel(node.relation))
        # A foreign key to an existing table takes SHARE ROW EXCLUSIVE on it (briefly: no rows to check yet).
        constraints = [c for e in node.tableElts or () for c in (getattr(e, "constraints", None) or (e,))]
        for con in constraints:
            if isinstance(con, ast.Constraint) and con.contype == CT.CONSTR_FOREIGN and con.pktable is not None:
                st.take(_rel(con.pktable), Lock.SHARE_ROW_EXCLUSIVE)

    def _CreateTableAsStmt(self, node: ast.CreateTableAsStmt, st: StatementLocks) -> None:
        if node.into is not None:
            self.created.add(_rel(node.into.rel))

    def _ViewStmt(self, node: ast.ViewStmt, st: StatementLocks) -> None:
        name = _rel(node.view)
        # RENAME t TO t2 followed by CREATE VIEW t AS SELECT … FROM t2: readers of t keep working.
        for old in list(self.renamed_away):
            if old.name == name.name:
                for found in self.per_statement:
                    found[:] = [f for f in found if not (f.code == "PS150" and f.table == old.sql)]
                self.renamed_away.pop(old)

    def _AlterTableStmt(self, node: ast.AlterTableStmt, st: StatementLocks) -> None:
        if node.objtype not in (OT.OBJECT_TABLE, OT.OBJECT_MATVIEW, OT.OBJECT_FOREIGN_TABLE) or node.relation is None:
            return
        table = _rel(node.relation)
        existing = self.existing(table)
        for cmd in node.cmds or ():
            self._alter(table, cmd, st, existing)

    def _alter(self, table: RelName, cmd: Any, st: StatementLocks, existing: bool) -> None:
        sub = cmd.subtype
        ae = Lock.ACCESS_EXCLUSIVE
        if sub == AT.AT_AddColumn:
            st.take(table, ae)
            if existing:
                self._add_column(table, cmd.def_, st)
        elif sub == AT.AT_DropColumn:
            st.take(table, ae)
            if existing:
                self.add("PS160", st, table, ae, detail=f"column {cmd.name}")
                if cmd.behavior == enums.DropBehavior.DROP_CASCADE:
                    self.add("PS163", st, table, ae)
        elif sub == AT.AT_AlterColumnType:
            st.take(table, ae)
            if existing:
                self._alter_type(table, cmd, st)
        elif sub == AT.AT_SetNotNull:
            st.take(table, ae)
            if existing and not self._not_null_proven(table, cmd.name):
                st.take(table, ae, Work.SCAN)
                self.add("PS110", st, table, ae, Work.SCAN, detail=f"column {cmd.name}")
        elif sub == AT.AT_AddConstraint:
            self._add_constraint(table, cmd.def_, st, existing)
        elif sub == AT.AT_ValidateConstraint:
            st.take(table, Lock.SHARE_UPDATE_EXCLUSIVE, Work.SCAN)  # scans, but reads and writes go on
            if cmd.name in self.pending_not_null_checks:
                self.validated_not_null.add(self.pending_not_null_checks.pop(cmd.name))
        elif sub in (AT.AT_SetLogged, AT.AT_SetUnLogged, AT.AT_SetTableSpace, AT.AT_SetAccessMethod):
            st.take(table, ae, Work.REWRITE)
            if existing:
                self.add("PS141", st, table, ae, Work.REWRITE)
        elif sub == AT.AT_AttachPartition:
            partition = _rel(cmd.def_.name)
            st.take(table, Lock.SHARE_UPDATE_EXCLUSIVE)
            st.take(partition, ae)
            checked = self.facts.has_validated_check(partition) if self.facts else None
            if self.existing(partition) and not checked and not self.empty(partition):
                st.take(partition, ae, Work.SCAN)
                self.add("PS142", st, partition, ae, Work.SCAN)
        elif sub == AT.AT_DetachPartition:
            concurrent = bool(getattr(cmd.def_, "concurrent", False))
            partition = _rel(cmd.def_.name)
            st.take(table, Lock.SHARE_UPDATE_EXCLUSIVE if concurrent else ae)
            st.take(partition, ae)
            self.add("PS152", st, partition, ae)
        elif sub in (AT.AT_SetStatistics, AT.AT_SetOptions, AT.AT_ResetOptions, AT.AT_SetRelOptions,
                     AT.AT_ResetRelOptions, AT.AT_ClusterOn, AT.AT_DropCluster):
            st.take(table, Lock.SHARE_UPDATE_EXCLUSIVE)
        elif sub in (AT.AT_EnableTrig, AT.AT_DisableTrig, AT.AT_EnableAlwaysTrig, AT.AT_EnableReplicaTrig,
                     AT.AT_EnableTrigAll, AT.AT_DisableTrigAll, AT.AT_EnableTrigUser, AT.AT_DisableTrigUser):
            st.take(table, Lock.SHARE_ROW_EXCLUSIVE)
        elif sub == AT.AT_DropConstraint:
            st.take(table, ae)
        else:
            st.take(table, ae)  # DROP NOT NULL, SET/DROP DEFAULT, RLS, identity options: instant

    def _add_column(self, table: RelName, coldef: Any, st: StatementLocks) -> None:
        ae = Lock.ACCESS_EXCLUSIVE
        type_name = _names(coldef.typeName.names)[-1] if coldef.typeName is not None else ""
        not_null = has_default = False
        for con in coldef.constraints or ():
            kind = con.contype
            if kind == CT.CONSTR_GENERATED:
                has_default = True
                if con.generated_kind == "s":
                    st.take(table, ae, Work.REWRITE)
                    self.add("PS102", st, table, ae, Work.REWRITE, detail=f"column {coldef.colname}")
            elif kind == CT.CONSTR_IDENTITY:
                has_default = True
                st.take(table, ae, Work.REWRITE)
                self.add("PS103", st, table, ae, Work.REWRITE, detail=f"column {coldef.colname}")
            elif kind == CT.CONSTR_DEFAULT:
                has_default = True
                volatile = self._volatile(con.raw_expr)
                if volatile:
                    st.take(table, ae, Work.REWRITE)
                    self.add("PS101", st, table, ae, Work.REWRITE, detail=f"column {coldef.colname} DEFAULT {volatile}")
            elif kind in (CT.CONSTR_UNIQUE, CT.CONSTR_PRIMARY):
                not_null = not_null or kind == CT.CONSTR_PRIMARY
                st.take(table, ae, Work.INDEX)
                self.add("PS104", st, table, ae, Work.INDEX, detail=f"column {coldef.colname}")
            elif kind == CT.CONSTR_CHECK:
                st.take(table, ae, Work.SCAN)
                self.add("PS105", st, table, ae, Work.SCAN, detail=f"column {coldef.colname}")
            elif kind == CT.CONSTR_NOTNULL:
                not_null = True
        if type_name in _SERIAL:
            has_default = True
            st.take(table, ae, Work.REWRITE)
            self.add("PS103", st, table, ae, Work.REWRITE, detail=f"column {coldef.colname} {type_name}")
        if not_null and not has_default and not self.empty(table):
            self.add("PS106", st, table, ae, detail=f"column {coldef.colname}")

    def _volatile(self, expr: Any) -> str | None:
        """The first function in a default that is evaluated per row (so the table is rewritten)."""
        for call in _calls(expr):
            name = call[-1].lower()
            if len(call) == 1 or call[0] == "pg_catalog":
                if name in _VOLATILE_BUILTINS:
                    return f"{name}()"
                if self.facts is None or self.facts.function_volatility(call) in (None, "i", "s"):
                    continue
            volatility = self.facts.function_volatility(call) if self.facts else None
            if volatility in ("i", "s"):
                continue
            if volatility == "v" and self.facts is not None and self.facts.inlinable_constant(call):
                continue  # a one-line SQL function PostgreSQL folds to a constant
            if volatility is None and self.facts is not None:
                continue  # not in the database (the statement fails) or created by this script
            return f"{'.'.join(call)}()"
        return None

    def _alter_type(self, table: RelName, cmd: Any, st: StatementLocks) -> None:
        ae = Lock.ACCESS_EXCLUSIVE
        coldef = cmd.def_
        new = _type_text(coldef.typeName)
        old = self.facts.column_type(table, cmd.name) if self.facts else None
        if coldef.collClause is not None:
            st.take(table, ae, Work.INDEX)
            self.add("PS122", st, table, ae, Work.INDEX, detail=f"column {cmd.name}")
            if old is not None and _base(old) == _base(new):
                return
        verdict = _coercion(old, new, self.facts.timezone_is_utc() if self.facts else None, coldef.raw_default is not None)
        if verdict == "free":
            return
        st.take(table, ae, Work.REWRITE, Work.INDEX)
        if verdict == "narrows":
            self.add("PS121", st, table, ae, Work.REWRITE, detail=f"column {cmd.name}: {old} to {new}")
        else:
            self.add("PS120", st, table, ae, Work.REWRITE, Work.INDEX,
                     detail=f"column {cmd.name}: {old or 'its type'} to {new}")

    def _not_null_proven(self, table: RelName, column: str) -> bool:
        if (table, column) in self.validated_not_null:
            return True
        return bool(self.facts and self.facts.proven_not_null(table, column))

    def _add_constraint(self, table: RelName, con: Any, st: StatementLocks, existing: bool) -> None:
        ae = Lock.ACCESS_EXCLUSIVE
        kind = con.contype
        not_valid = bool(con.skip_validation)
        if kind == CT.CONSTR_FOREIGN:
            st.take(table, Lock.SHARE_ROW_EXCLUSIVE)
            if con.pktable is not None:
                st.take(_rel(con.pktable), Lock.SHARE_ROW_EXCLUSIVE)
            if existing and not not_valid and not self.empty(table):
                st.take(table, Lock.SHARE_ROW_EXCLUSIVE, Work.SCAN)
                self.add("PS111", st, table, Lock.SHARE_ROW_EXCLUSIVE, Work.SCAN)
        elif kind == CT.CONSTR_CHECK:
            st.take(table, ae)
            column = _is_not_null_check(con.raw_expr)
            if not_valid and column and con.conname:
                self.pending_not_null_checks[con.conname] = (table, column)
            if existing and not not_valid and not self.empty(table):
                st.take(table, ae, Work.SCAN)
                self.add("PS112", st, table, ae, Work.SCAN)
        elif kind == CT.CONSTR_NOTNULL:
            st.take(table, ae)
            columns = _names(con.keys)
            if not_valid and con.conname and columns:
                self.pending_not_null_checks[con.conname] = (table, columns[0])
            if existing and not not_valid and not all(self._not_null_proven(table, c) for c in columns):
                st.take(table, ae, Work.SCAN)
                self.add("PS110", st, table, ae, Work.SCAN)
        elif kind in (CT.CONSTR_UNIQUE, CT.CONSTR_PRIMARY, CT.CONSTR_EXCLUSION):
            st.take(table, ae)
            if con.indexname:
                index = RelName(table.schema, str(con.indexname))
                keys = list(_names(con.keys)) or (self.facts.index_columns(index) if self.facts else [])
                if kind == CT.CONSTR_PRIMARY and existing and self.facts is not None and keys and not all(
                        self.facts.column_not_null(table, c) or self._not_null_proven(table, c) for c in keys):
                    st.take(table, ae, Work.SCAN)
                    self.add("PS114", st, table, ae, Work.SCAN)
            elif existing:
                st.take(table, ae, Work.INDEX)
                self.add("PS113", st, table, ae, Work.INDEX)
        else:
            st.take(table, ae)

    def _IndexStmt(self, node: ast.IndexStmt, st: StatementLocks) -> None:
        if node.relation is None:
            return
        table = _rel(node.relation)
        partitioned = bool(self.facts and self.facts.partitioned(table))
        if node.concurrent:
            st.take(table, Lock.SHARE_UPDATE_EXCLUSIVE, Work.INDEX)
            if partitioned and self.existing(table):
                self.add("PS131", st, table, Lock.SHARE_UPDATE_EXCLUSIVE)
            return
        if partitioned and node.relation.inh is False:
            st.take(table, Lock.SHARE)  # ON ONLY the parent: an invalid shell, built per partition
            return
        st.take(table, Lock.SHARE, Work.INDEX)
        if self.existing(table) and not self.empty(table):
            self.add("PS130", st, table, Lock.SHARE, Work.SCAN, Work.INDEX,
                     detail="on every partition" if partitioned else "")
            if partitioned:
                self.per_statement[-1][-1] = _with_safe(self.per_statement[-1][-1], SAFE["PS131"])

    def _ReindexStmt(self, node: ast.ReindexStmt, st: StatementLocks) -> None:
        concurrent = any(getattr(p, "defname", None) == "concurrently" and option_is_true(p.arg) for p in node.params or ())
        kind = node.kind
        if concurrent:
            return
        table = _rel(node.relation) if node.relation is not None else None
        if table is not None and kind == enums.ReindexObjectType.REINDEX_OBJECT_INDEX:
            table = self.facts.index_table(table) if self.facts else None
        if table is not None:
            st.take(table, Lock.SHARE, Work.INDEX)
        self.add("PS132", st, table, Lock.SHARE, Work.INDEX, detail=node.name or "")

    def _ClusterStmt(self, node: ast.ClusterStmt, st: StatementLocks) -> None:
        if node.relation is None:
            self.add("PS140", st, None, Lock.ACCESS_EXCLUSIVE, Work.REWRITE, detail="every clustered table")
            return
        table = _rel(node.relation)
        st.take(table, Lock.ACCESS_EXCLUSIVE, Work.REWRITE, Work.INDEX)
        self.add("PS140", st, table, Lock.ACCESS_EXCLUSIVE, Work.REWRITE)

    def _VacuumStmt(self, node: ast.VacuumStmt, st: StatementLocks) -> None:
        if not node.is_vacuumcmd:
            for rel in node.rels or ():
                if rel.relation is not None:
                    st.take(_rel(rel.relation), Lock.SHARE_UPDATE_EXCLUSIVE)
            return
        full = any(getattr(o, "defname", None) == "full" and (o.arg is None or option_is_true(o.arg)) for o in node.options or ())
        for rel in node.rels or ():
            if rel.relation is None:
                continue
            table = _rel(rel.relation)
            if full:
                st.take(table, Lock.ACCESS_EXCLUSIVE, Work.REWRITE)
                self.add("PS140", st, table, Lock.ACCESS_EXCLUSIVE, Work.REWRITE)
            else:
                st.take(table, Lock.SHARE_UPDATE_EXCLUSIVE)

    def _RenameStmt(self, node: ast.RenameStmt, st: StatementLocks) -> None:
        kind = node.renameType
        if kind == OT.OBJECT_TABCONSTRAINT and node.relation is not None:
            st.take(_rel(node.relation), Lock.ACCESS_EXCLUSIVE)  # brief: nothing running names a constraint
            return
        if kind not in (OT.OBJECT_TABLE, OT.OBJECT_COLUMN, OT.OBJECT_VIEW, OT.OBJECT_MATVIEW) or node.relation is None:
            return  # indexes: nothing running names them
        table = _rel(node.relation)
        st.take(table, Lock.ACCESS_EXCLUSIVE)
        if not self.existing(table):
            return
        what = f"column {node.subname}" if kind == OT.OBJECT_COLUMN else f"to {node.newname}"
        self.add("PS150", st, table, Lock.ACCESS_EXCLUSIVE, detail=what)
        if kind == OT.OBJECT_TABLE:
            self.renamed_away[table] = str(node.newname)

    def _DropStmt(self, node: ast.DropStmt, st: StatementLocks) -> None:
        kind = node.removeType
        cascade = node.behavior == enums.DropBehavior.DROP_CASCADE
        for obj in node.objects or ():
            parts = _names(obj) if isinstance(obj, (tuple, list)) else (str(obj.sval),) if isinstance(obj, ast.String) else ()
            target = RelName(parts[-2] if len(parts) >= 2 else None, parts[-1]) if parts else None
            if kind == OT.OBJECT_TABLE and target is not None:
                st.take(target, Lock.ACCESS_EXCLUSIVE)
                if self.existing(target):
                    self.add("PS161", st, target, Lock.ACCESS_EXCLUSIVE)
                    if cascade:
                        self.add("PS163", st, target, Lock.ACCESS_EXCLUSIVE)
            elif kind in (OT.OBJECT_VIEW, OT.OBJECT_MATVIEW) and target is not None and self.existing(target):
                self.add("PS151", st, target, None)
            elif kind == OT.OBJECT_SCHEMA and not cascade and parts and self._schema_has_objects(parts[0]):
                self.add("PS170", st, None, None, detail=f"schema {parts[0]}")
            elif kind in (OT.OBJECT_SCHEMA, OT.OBJECT_TYPE, OT.OBJECT_DOMAIN) and cascade:
                if kind == OT.OBJECT_SCHEMA and self.facts is not None and parts:
                    for table in self.facts.schema_tables(parts[0]):
                        st.take(table, Lock.ACCESS_EXCLUSIVE)
                self.add("PS163", st, None, None, detail=".".join(parts) or str(kind))
            elif kind == OT.OBJECT_INDEX and target is not None:
                self._drop_index(target, bool(node.concurrent), st)

    def _drop_index(self, index: RelName, concurrent: bool, st: StatementLocks) -> None:
        table = self.facts.index_table(index) if self.facts else None
        if table is not None:
            st.take(table, Lock.SHARE_UPDATE_EXCLUSIVE if concurrent else Lock.ACCESS_EXCLUSIVE)  # brief: no work
        if self.facts is not None and self.facts.index_backs_constraint(index):
            self.add("PS171", st, table, None, detail=index.sql)

    def _DropdbStmt(self, node: ast.DropdbStmt, st: StatementLocks) -> None:
        self.add("PS164", st, None, None, detail=str(node.dbname))

    def _schema_has_objects(self, schema: str) -> bool:
        return (self.facts.schema_has_objects(schema) if self.facts else None) is not False

    def _TruncateStmt(self, node: ast.TruncateStmt, st: StatementLocks) -> None:
        for rv in node.relations or ():
            table = _rel(rv)
            st.take(table, Lock.ACCESS_EXCLUSIVE, Work.REWRITE)
            if self.existing(table):
                self.add("PS161", st, table, Lock.ACCESS_EXCLUSIVE)

    def _UpdateStmt(self, node: ast.UpdateStmt, st: StatementLocks) -> None:
        table = _rel(node.relation)
        st.take(table, Lock.ROW_EXCLUSIVE, Work.SCAN)
        if self.existing(table):
            self.add("PS162", st, table, Lock.ROW_EXCLUSIVE)

    def _DeleteStmt(self, node: ast.DeleteStmt, st: StatementLocks) -> None:
        self._UpdateStmt(node, st)  # type: ignore[arg-type]

    def _InsertStmt(self, node: ast.InsertStmt, st: StatementLocks) -> None:
        st.take(_rel(node.relation), Lock.ROW_EXCLUSIVE)

    def _AlterDomainStmt(self, node: ast.AlterDomainStmt, st: StatementLocks) -> None:
        con = node.def_
        if node.subtype == "C" and isinstance(con, ast.Constraint) and not con.skip_validation:
            domain = _names(node.typeName)
            for table in self.facts.domain_tables(domain) if self.facts else []:
                st.take(table, Lock.SHARE, Work.SCAN)
            self.add("PS143", st, None, Lock.SHARE, Work.SCAN, detail=".".join(domain))

    def _CreateTrigStmt(self, node: ast.CreateTrigStmt, st: StatementLocks) -> None:
        if node.relation is not None:
            st.take(_rel(node.relation), Lock.SHARE_ROW_EXCLUSIVE)


def _with_safe(f: Finding, safe: str) -> Finding:
    return Finding(f.code, f.kind, f.statement, f.table, f.lock, f.work, f.message, safe)


def option_is_true(arg: Any) -> bool:
    """A boolean option of a utility statement (``(CONCURRENTLY false)``); absent means true."""
    if arg is None:
        return True
    value = getattr(arg, "sval", None) or getattr(arg, "boolval", None)
    if isinstance(arg, ast.Boolean):
        return bool(arg.boolval)
    if isinstance(arg, ast.Integer):
        return bool(arg.ival)
    return str(value).lower() not in ("false", "off", "0", "no")


def _calls(expr: Any) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []

    class _V(visitors.Visitor):
        def visit_FuncCall(self, ancestors: Any, node: ast.FuncCall) -> None:
            found.append(_names(node.funcname))

    if expr is not None:
        _V()(expr)
    return found


def _is_not_null_check(expr: Any) -> str | None:
    """``col IS NOT NULL``: the CHECK whose validation lets SET NOT NULL skip its scan."""
    if isinstance(expr, ast.NullTest) and expr.nulltesttype == enums.NullTestType.IS_NOT_NULL:
        ref = expr.arg
        if isinstance(ref, ast.ColumnRef) and ref.fields and isinstance(ref.fields[-1], ast.String):
            return str(ref.fields[-1].sval)
    return None


def _type_text(type_name: Any) -> str:
    if type_name is None:
        return ""
    names = [n for n in _names(type_name.names) if n != "pg_catalog"]
    mods = [str(getattr(m.val, "ival", "")) for m in type_name.typmods or () if isinstance(m, ast.A_Const)]
    base = {"int4": "integer", "int8": "bigint", "int2": "smallint", "varchar": "character varying",
            "bpchar": "character", "float8": "double precision", "float4": "real", "bool": "boolean",
            "timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone",
            "numeric": "numeric", "text": "text"}.get(names[-1], names[-1])
    return f"{base}({','.join(mods)})" if mods else base


def _base(type_text: str) -> str:
    return type_text.split("(")[0].strip()


def _mods(type_text: str) -> list[int]:
    if "(" not in type_text:
        return []
    return [int(x) for x in type_text.split("(", 1)[1].rstrip(")").split(",") if x.strip().isdigit()]


_INTEGERS = {"smallint": 2, "integer": 4, "bigint": 8}


def _coercion(old: str | None, new: str, utc: bool | None, using: bool) -> str:
    """free: no rewrite (binary coercible, or a check only); rewrite: the table is rewritten;
    narrows: stored values may be cut."""
    if old is None:
        return "rewrite"  # cannot tell from the text: assume the worst
    ob, nb = _base(old), _base(new)
    om, nm = _mods(old), _mods(new)
    if ob == "numeric" and nb in _INTEGERS:
        return "narrows"
    if ob in _INTEGERS and nb in _INTEGERS and _INTEGERS[nb] < _INTEGERS[ob]:
        return "narrows"
    if using:
        return "rewrite"
    if ob == nb == "numeric":
        if not nm:
            return "free"
        if om and len(om) == 2 and len(nm) == 2 and nm[1] < om[1]:
            return "narrows"
        if om and nm and nm[0] >= om[0] and (nm[1:] or [0]) == (om[1:] or [0]):
            return "free"
        return "rewrite"
    if ob == "character varying" and nb in ("text", "character varying"):
        if nb == "text" or not nm or (om and nm[0] >= om[0]):
            return "free"
        return "rewrite"
    if ob == nb and not nm:
        return "free"
    if ob == "timestamp without time zone" and nb == "timestamp with time zone":
        return "free" if utc else "rewrite"
    return "rewrite"


@dataclass
class LockReport:
    findings: list[Finding]
    statements: list[StatementLocks]


def read_script(script: str, facts: Facts | None = None) -> LockReport:
    """Findings and per-statement locks of one script (which has already parsed: syntax errors
    are the loader's to report)."""
    reader = Reader(facts)
    for raw, sql in zip(pglast.parse_sql(script), pglast.split(script), strict=True):
        if raw.stmt is not None:
            reader.read(raw.stmt, sql)
    return LockReport(reader.findings, reader.statements)
