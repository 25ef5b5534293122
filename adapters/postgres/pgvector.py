"""pgvector adapter: the PostgreSQL adapter plus vector-aware validation and re-embedding helpers.

Backups need nothing extra: vector, halfvec and sparsevec values round-trip losslessly through
COPY's text form, and HNSW/IVFFlat index definitions, parameters included, come back from the
DDL captured by pg_dump. What is added is checking what a migration promises about its vectors:

- every row of the column has the declared dimension, and none is NULL where embeddings are required;
- every ANN index on the column is valid and ready (``pg_index.indisvalid``);
- recall@k of each ANN index against exact search, on a random sample of query vectors taken
  from the table, is at least the declared threshold (default 0.9 at k = 10), reported as a figure.

Declared per migration, in Python ``VECTORS = [{"table": "docs", "column": "embedding", "dim": 384,
"required": True, "recall": 0.95}]`` or as a header directive
``-- polyshift: vector=docs.embedding:384:required:recall=0.95``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from polyshift.adapters.postgres.adapter import PostgresAdapter
from polyshift.adapters.postgres.catalog import Table, resolve
from polyshift.adapters.postgres.errors import PSYCOPG_ERRORS
from polyshift.adapters.postgres.pgvector_helpers import VectorHelpers
from polyshift.framework.core.errors import MigrationLoadError
from polyshift.framework.core.kinds import PGVECTOR
from polyshift.framework.core.migration import Migration

# Distance operator of each pgvector operator class: the ANN query must use the index's own.
_OPERATORS = {"l2": "<->", "ip": "<#>", "cosine": "<=>", "l1": "<+>", "hamming": "<~>", "jaccard": "<%>"}


@dataclass(frozen=True)
class VectorCheck:
    table: str
    column: str
    dim: int | None = None
    required: bool = False
    recall: float | None = 0.9
    k: int = 10
    sample: int = 30
    ef_search: int | None = None
    probes: int | None = None

    @staticmethod
    def parse(spec: Any, origin: str) -> VectorCheck:
        """From a VECTORS dict or a directive ``table.column:dim[:required][:recall=x][:k=n][:sample=n]``."""
        if isinstance(spec, dict):
            try:
                table, column = spec["table"], spec["column"]
            except KeyError as exc:
                raise MigrationLoadError(f"{origin}: VECTORS entries need 'table' and 'column' ({exc} missing)") from None
            unknown = set(spec) - {"table", "column", "dim", "required", "recall", "k", "sample", "ef_search", "probes"}
            if unknown:
                raise MigrationLoadError(f"{origin}: unknown VECTORS key(s) {', '.join(sorted(unknown))}")
            check = VectorCheck(table, column, spec.get("dim"), bool(spec.get("required", False)), spec.get("recall", 0.9),
                                int(spec.get("k", 10)), int(spec.get("sample", 30)), spec.get("ef_search"), spec.get("probes"))
        else:
            parts = str(spec).split(":")
            target = parts[0].rsplit(".", 1)
            if len(target) != 2:
                raise MigrationLoadError(f"{origin}: vector directive {spec!r} must start with table.column")
            fields: dict[str, Any] = {"table": target[0], "column": target[1]}
            for part in parts[1:]:
                key, _, value = part.partition("=")
                if part.isdigit():
                    fields["dim"] = int(part)
                elif part == "required":
                    fields["required"] = True
                elif key in ("recall", "k", "sample", "ef_search", "probes") and value:
                    fields[key] = float(value) if key == "recall" else int(value)
                else:
                    raise MigrationLoadError(f"{origin}: vector directive part {part!r} not understood")
            return VectorCheck.parse(fields, origin)
        if check.recall is not None and not 0 < float(check.recall) <= 1:
            raise MigrationLoadError(f"{origin}: recall threshold must be in (0, 1], got {check.recall}")
        if check.k < 1 or check.sample < 1:
            raise MigrationLoadError(f"{origin}: k and sample must be positive")
        return check


def vector_checks(migration: Migration) -> list[VectorCheck]:
    origin = f"{migration.store}/{migration.id}"
    if migration.module is not None:
        return [VectorCheck.parse(spec, origin) for spec in getattr(migration.module, "VECTORS", [])]
    directive = migration.directives.get("vector")
    return [VectorCheck.parse(spec, origin) for spec in directive.split(",")] if directive else []


class PgvectorAdapter(PostgresAdapter):
    spec = PGVECTOR
    kind = PGVECTOR.name

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._figures: dict[str, float] = {}

    def helpers(self, migration: Migration) -> VectorHelpers:
        return VectorHelpers(self.conn, lock_timeout=self.config.lock_timeout,
                             maintenance_work_mem=str(self.config.options.get("maintenance_work_mem", "256MB")))

    def figures(self) -> dict[str, float]:
        """Measurements of the last validation (recall per index), for reports and the audit log."""
        return dict(self._figures)

    def parse(self, migration: Migration) -> None:
        super().parse(migration)
        vector_checks(migration)

    def validate(self, migration: Migration) -> list[str]:
        failures = super().validate(migration)
        self._figures = {}
        for check in vector_checks(migration):
            try:
                failures.extend(self._check(check))
            except psycopg.Error as exc:
                failures.append(f"{check.table}.{check.column}: vector checks could not run: {PSYCOPG_ERRORS.describe(exc)}")
        return failures

    def _check(self, check: VectorCheck) -> list[str]:
        label = f"{check.table}.{check.column}"
        tables, _ = resolve(self.conn, [check.table], missing_ok=True)
        if not tables:
            return [f"{label}: table {check.table} does not exist"]
        table = tables[0]
        col = sql.Identifier(check.column)
        typ = self.conn.execute(
            "SELECT format_type(a.atttypid, a.atttypmod), t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
            (table.ident.as_string(self.conn), check.column),
        ).fetchone()
        if typ is None:
            return [f"{label}: column does not exist"]
        if typ[1] not in ("vector", "halfvec", "sparsevec"):
            return [f"{label}: is {typ[0]}, not a pgvector column"]
        failures = []
        if check.dim is not None:
            dims = (sql.SQL("vector_dims({})").format(col) if typ[1] != "sparsevec"
                    else sql.SQL("split_part({}::text, '/', 2)::int").format(col))
            wrong = self.conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL AND {} <> %s").format(
                table.ident, col, dims), (check.dim,)).fetchone()[0]  # type: ignore[index]
            if wrong:
                failures.append(f"{label}: {wrong} rows do not have dimension {check.dim}")
        if check.required:
            missing = self.conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(table.ident, col)).fetchone()[0]  # type: ignore[index]
            if missing:
                failures.append(f"{label}: {missing} rows have no embedding (required)")
        for name, method, opclass, valid in self._ann_indexes(table, check.column):
            if not valid:
                failures.append(f"{label}: index {name} is not valid (indisvalid/indisready false): rebuild it")
                continue
            if check.recall is not None:
                recall = self._recall(table, check, name, method, opclass)
                self._figures[f"recall@{check.k} {name}"] = recall
                if recall < float(check.recall):
                    failures.append(f"{label}: recall@{check.k} of {method} index {name} is {recall:.3f}, "
                                    f"below the required {float(check.recall):.3f}")
        return failures

    def _ann_indexes(self, table: Table, column: str) -> list[tuple[str, str, str, bool]]:
        rows = self.conn.execute(
            "SELECT i.relname, am.amname, oc.opcname, x.indisvalid AND x.indisready FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam "
            "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0] "
            "JOIN pg_opclass oc ON oc.oid = x.indclass[0] "
            "WHERE x.indrelid = to_regclass(%s) AND a.attname = %s AND am.amname IN ('hnsw', 'ivfflat')",
            (table.ident.as_string(self.conn), column),
        ).fetchall()
        return [(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def _recall(self, table: Table, check: VectorCheck, index: str, method: str, opclass: str) -> float:
        """Mean |ANN top-k ∩ exact top-k| / k over a random sample of the table's own vectors."""
        op = next((o for key, o in _OPERATORS.items() if opclass.endswith(f"_{key}_ops")), None)
        if op is None:
            raise psycopg.ProgrammingError(f"operator class {opclass} of {index} is not a known pgvector class")
        col = sql.Identifier(check.column)
        queries = [r[0] for r in self.conn.execute(sql.SQL(
            "SELECT {}::text FROM {} WHERE {} IS NOT NULL ORDER BY random() LIMIT %s").format(col, table.ident, col),
            (check.sample,))]
        if not queries:
            return 1.0
        cast = self.conn.execute(sql.SQL("SELECT pg_typeof({})::text FROM {} LIMIT 1").format(col, table.ident)).fetchone()[0]  # type: ignore[index]
        nearest = sql.SQL("SELECT ctid::text FROM {} WHERE {} IS NOT NULL ORDER BY {} {} %s::{} LIMIT %s").format(
            table.ident, col, col, sql.SQL(op), sql.SQL(cast))
        started, hits = time.monotonic(), 0
        with self.conn.transaction(force_rollback=True):
            for q in queries:
                self._plan(approximate=False, method=method, check=check)
                exact = {r[0] for r in self.conn.execute(nearest, (q, check.k))}
                self._plan(approximate=True, method=method, check=check)
                ann = {r[0] for r in self.conn.execute(nearest, (q, check.k))}
                hits += len(exact & ann)
        recall = hits / (len(queries) * check.k)
        self._figures[f"seconds measuring recall of {index}"] = round(time.monotonic() - started, 3)
        return recall

    def _plan(self, *, approximate: bool, method: str, check: VectorCheck) -> None:
        """Force the index (approximate) or a sequential scan (exact) for the next query."""
        for setting in ("enable_seqscan", "enable_indexscan", "enable_bitmapscan"):
            on = (setting == "enable_indexscan") if approximate else (setting == "enable_seqscan")
            self.conn.execute("SELECT set_config(%s, %s, true)", (setting, "on" if on else "off"))
        if approximate and method == "hnsw" and (check.ef_search or self.config.options.get("ef_search")):
            self.conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(check.ef_search or self.config.options["ef_search"]),))
        if approximate and method == "ivfflat" and check.probes:
            self.conn.execute("SELECT set_config('ivfflat.probes', %s, true)", (str(check.probes),))
