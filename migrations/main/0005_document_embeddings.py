"""Semantic search: embed every document (vector(16)), backfill in batches, index with HNSW.

Expand only: the documents keep serving as before, and the rollback drops the new column and
index. Runs outside a transaction so batches commit as they go and the index builds CONCURRENTLY.
Needs the store to be kind = "pgvector".
"""

import hashlib
import math

TRANSACTION = False
BACKUP: list[str] = []
RISK = "B"
FLAG = "semantic_search"
VECTORS = [{"table": "documents", "column": "embedding", "dim": 16, "required": True, "recall": 0.9, "ef_search": 64}]


def embed(rows):
    """Stand-in for an embedding model: a deterministic unit vector per title."""
    vectors = []
    for _id, title in rows:
        raw = [b / 255 - 0.5 for b in hashlib.sha256(title.encode()).digest()[:16]]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        vectors.append([x / norm for x in raw])
    return vectors


def forward(ctx):
    h = ctx.helpers
    h.add_vector_column("documents", "embedding", 16)
    h.backfill("documents", "embedding", embed, source=("title",), batch=2000)
    h.create_hnsw_index("documents", "embedding", "documents_embedding_hnsw", m=16, ef_construction=64)


def rollback(ctx):
    ctx.helpers.drop_index("documents_embedding_hnsw")
    ctx.helpers.drop_column("documents", "embedding")
