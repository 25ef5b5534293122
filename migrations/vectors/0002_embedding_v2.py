"""Embedding model v2: expand with a new column, backfill it, index it with HNSW.

The v1 column keeps serving until the flag docs_v2 moves readers to v2; the rollback drops
only what this migration added. Runs outside a transaction so batches commit as they go and
the index builds CONCURRENTLY; the backfill resumes where it stopped if interrupted.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polyshift.framework.core.migration import MigrationContext

TRANSACTION = False
BACKUP: list[str] = []
RISK = "B"
VECTORS = [{"table": "document_chunks", "column": "embedding_v2", "dim": 16, "required": True, "recall": 0.9, "ef_search": 64}]


def embed(rows: list[tuple[int, str]]) -> list[list[float]]:
    """Stand-in for the v2 embedding model: a deterministic unit vector per chunk."""
    vectors = []
    for _id, content in rows:
        raw = [b / 255 - 0.5 for b in hashlib.sha256(b"v2:" + content.encode()).digest()[:16]]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        vectors.append([x / norm for x in raw])
    return vectors


def forward(ctx: MigrationContext) -> None:
    h = ctx.helpers
    h.add_vector_column("document_chunks", "embedding_v2", 16)
    h.backfill("document_chunks", "embedding_v2", embed, source=("content",), batch=2000)
    h.create_hnsw_index("document_chunks", "embedding_v2", "document_chunks_embedding_v2_hnsw", m=16, ef_construction=64)


def rollback(ctx: MigrationContext) -> None:
    ctx.helpers.drop_index("document_chunks_embedding_v2_hnsw")
    ctx.helpers.drop_column("document_chunks", "embedding_v2")
