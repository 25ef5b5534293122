"""Re-embedding as expand and contract (``ctx.helpers`` of pgvector migrations with ``TRANSACTION = False``).

    TRANSACTION = False          # batches commit as they go; indexes build CONCURRENTLY
    BACKUP = []                  # the old column is never touched
    VECTORS = [{"table": "docs", "column": "embedding_v2", "dim": 768, "required": True, "recall": 0.95}]

    def forward(ctx):
        h = ctx.helpers
        h.add_vector_column("docs", "embedding_v2", 768)
        h.backfill("docs", "embedding_v2", embed, source=("body",), batch=500, throttle=0.05)
        h.create_hnsw_index("docs", "embedding_v2", "docs_embedding_v2_hnsw", m=16, ef_construction=64)

    def rollback(ctx):
        ctx.helpers.drop_index("docs_embedding_v2_hnsw")
        ctx.helpers.drop_column("docs", "embedding_v2")

The backfill only fills rows whose new column is NULL, so a rerun after a crash resumes where it
stopped. Each batch is its own short transaction under ``lock_timeout`` and skips rows locked by
the application. Every vector the embedding function returns is checked against the column's
dimension before anything is written.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

_TYPMOD = re.compile(r"^(vector|halfvec|sparsevec)\((\d+)\)$")


class DimensionMismatch(ValueError):
    pass


class VectorHelpers:
    def __init__(self, conn: psycopg.Connection, *, lock_timeout: float, maintenance_work_mem: str) -> None:
        self.conn = conn
        self.lock_timeout = lock_timeout
        self.maintenance_work_mem = maintenance_work_mem

    def _outside_transaction(self, what: str) -> None:
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise RuntimeError(f"{what} must run outside a transaction: set TRANSACTION = False in the migration")

    def _ddl(self, statement: sql.Composed) -> None:
        with self.conn.transaction():
            self.conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(self.lock_timeout * 1000)}ms",))
            self.conn.execute(statement)

    @staticmethod
    def _table(name: str) -> sql.Composable:
        return sql.Identifier(*name.split(".", 1))

    def add_vector_column(self, table: str, column: str, dim: int, kind: str = "vector") -> None:
        """Expand: a new nullable column; the old one keeps serving blue."""
        if kind not in ("vector", "halfvec", "sparsevec"):
            raise ValueError(f"vector column type must be vector, halfvec or sparsevec, not {kind!r}")
        self._ddl(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
            self._table(table), sql.Identifier(column), sql.SQL(f"{kind}({int(dim)})")))

    def column_dim(self, table: str, column: str) -> int:
        row = self.conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "
            "AND NOT attisdropped", (self._table(table).as_string(self.conn), column)).fetchone()
        match = _TYPMOD.match(row[0]) if row else None
        if match is None:
            raise ValueError(f"{table}.{column} is not a vector column with a declared dimension")
        return int(match.group(2))

    def backfill(self, table: str, column: str, fn: Callable[[list[tuple[Any, ...]]], Sequence[Sequence[float]]], *,
                 source: Sequence[str] = ("id",), key: str = "id", batch: int = 500, throttle: float = 0.0) -> int:
        """Fill ``column`` for rows where it is NULL: ``fn(rows)`` gets (key, *source) tuples, returns one vector each."""
        self._outside_transaction("backfill")
        dim = self.column_dim(table, column)
        tbl, col, keycol = self._table(table), sql.Identifier(column), sql.Identifier(key)
        select = sql.SQL("SELECT {}, {} FROM {} WHERE {} IS NULL ORDER BY {} LIMIT %s FOR UPDATE SKIP LOCKED").format(
            keycol, sql.SQL(", ").join(map(sql.Identifier, source)), tbl, col, keycol)
        key_type = self.conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s",
            (tbl.as_string(self.conn), key)).fetchone()
        if key_type is None:
            raise ValueError(f"{table} has no key column {key!r}")
        # Keys travel as text and are cast back to the key's own type, so each batch uses the key's index.
        update = sql.SQL("UPDATE {} AS t SET {} = v.vec::{} FROM unnest(%s::text[], %s::text[]) AS v(k, vec) "
                         "WHERE t.{} = v.k::{}").format(tbl, col, sql.SQL(f"vector({dim})"), keycol, sql.SQL(key_type[0]))
        done = 0
        while True:
            with self.conn.transaction():
                self.conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(self.lock_timeout * 1000)}ms",))
                rows = self.conn.execute(select, (batch,)).fetchall()
                if not rows:
                    return done
                vectors = list(fn(rows))
                if len(vectors) != len(rows):
                    raise DimensionMismatch(f"backfill of {table}.{column}: the embedding function returned "
                                            f"{len(vectors)} vectors for {len(rows)} rows")
                for row, vec in zip(rows, vectors, strict=True):
                    if len(vec) != dim:
                        raise DimensionMismatch(f"backfill of {table}.{column}: row {key}={row[0]} got a {len(vec)}-dimension "
                                                f"vector, the column is vector({dim}); nothing from this batch was written")
                texts = ["[" + ",".join(repr(float(x)) for x in vec) + "]" for vec in vectors]
                self.conn.execute(update, ([str(r[0]) for r in rows], texts))
            done += len(rows)
            if throttle:
                time.sleep(throttle)  # leave room for the application between batches

    def _build_index(self, name: str, definition: sql.Composed) -> None:
        self._outside_transaction("building an index CONCURRENTLY")
        self.conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (self.maintenance_work_mem,))
        try:
            self.conn.execute(definition)
        finally:
            self.conn.execute("RESET maintenance_work_mem")
        valid = self.conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
                                  (sql.Identifier(name).as_string(self.conn),)).fetchone()
        if not valid or not valid[0]:
            self.drop_index(name)  # a failed CONCURRENTLY build leaves an INVALID index behind
            raise RuntimeError(f"index {name} was built INVALID and has been dropped")

    def create_hnsw_index(self, table: str, column: str, name: str, *, opclass: str = "vector_l2_ops",
                          m: int = 16, ef_construction: int = 64) -> None:
        self._build_index(name, sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING hnsw ({} {}) "
                                        "WITH (m = {}, ef_construction = {})").format(
            sql.Identifier(name), self._table(table), sql.Identifier(column), sql.Identifier(opclass),
            sql.Literal(int(m)), sql.Literal(int(ef_construction))))

    def create_ivfflat_index(self, table: str, column: str, name: str, *, opclass: str = "vector_l2_ops", lists: int = 100) -> None:
        self._build_index(name, sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING ivfflat ({} {}) "
                                        "WITH (lists = {})").format(
            sql.Identifier(name), self._table(table), sql.Identifier(column), sql.Identifier(opclass), sql.Literal(int(lists))))

    def drop_index(self, name: str) -> None:
        self._outside_transaction("DROP INDEX CONCURRENTLY")
        self.conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(self._table(name)))

    def drop_column(self, table: str, column: str) -> None:
        """Contract (or the rollback of an expand): the column and its data are gone."""
        self._ddl(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(self._table(table), sql.Identifier(column)))
