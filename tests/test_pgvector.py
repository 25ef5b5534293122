"""pgvector: lossless vector backups, dimension/NULL/index checks, recall@k against exact search, re-embedding."""

from __future__ import annotations

import json
import textwrap

from tests.conftest import Workspace

DOCS = """
    CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL, embedding vector(16));
    INSERT INTO docs
    SELECT i, 'doc ' || i, (SELECT array_agg(sin(i * 0.7 + j * 1.3 + random() * 0.001)) FROM generate_series(1, 16) j)::vector
    FROM generate_series(1, 3000) i;
"""


def _docs(ws: Workspace, index: str = "") -> None:
    ws.migration("0001_docs", DOCS + index, "DROP TABLE docs;")
    assert ws.run("up").exit_code == 0


def test_vector_halfvec_sparsevec_and_ann_indexes_back_up_losslessly(vws: Workspace) -> None:
    vws.migration("0001_kinds", """
        CREATE TABLE items (id int PRIMARY KEY, v vector(3), h halfvec(3), s sparsevec(5));
        INSERT INTO items SELECT i, ARRAY[i * 0.1, 1.0 / 3, -2.5e-7]::vector, ARRAY[i, 0.333, 65504]::halfvec,
                                 ('{1:' || i || '.5,5:-1}/5')::sparsevec FROM generate_series(1, 500) i;
        CREATE INDEX items_v_hnsw ON items USING hnsw (v vector_cosine_ops) WITH (m = 8, ef_construction = 32);
        CREATE INDEX items_h_ivf ON items USING ivfflat (h halfvec_l2_ops) WITH (lists = 4);
    """, "DROP TABLE items;")
    assert vws.run("up").exit_code == 0
    before = vws.fingerprint("items")
    backup = json.loads(vws.run("backup", "create", "main", "--scope", "items", "--json").stdout)
    vws.sql("DROP TABLE items")
    assert vws.run("backup", "restore", backup["id"], "--yes").exit_code == 0
    assert vws.fingerprint("items") == before
    assert vws.value("SELECT v::text FROM items WHERE id = 3") == "[0.3,0.33333334,-2.5e-07]"
    defs = {r[0] for r in vws.sql("SELECT indexdef FROM pg_indexes WHERE tablename = 'items'")}
    assert any("hnsw (v vector_cosine_ops) WITH (m='8', ef_construction='32')" in d for d in defs), defs
    assert any("ivfflat (h halfvec_l2_ops) WITH (lists='4')" in d for d in defs), defs


def test_recall_validation_passes_a_good_hnsw_index_and_reports_the_figure(vws: Workspace) -> None:
    _docs(vws)
    vws.migration("0002_hnsw", """
        -- polyshift: vector=docs.embedding:16:required:recall=0.9:k=10:sample=20:ef_search=100
        CREATE INDEX docs_embedding_hnsw ON docs USING hnsw (embedding vector_l2_ops) WITH (m = 16, ef_construction = 64);
    """, "DROP INDEX docs_embedding_hnsw;")
    result = vws.run("up")
    assert result.exit_code == 0, result.output
    assert "recall@10 docs_embedding_hnsw" in result.stdout
    applied = [e for e in json.loads(vws.run("audit", "--json").stdout) if e["action"] == "migration.applied"][-1]
    assert applied["detail"]["figures"]["recall@10 docs_embedding_hnsw"] >= 0.9


def test_recall_validation_fails_a_deliberately_bad_index_and_rolls_it_back_exit_3(vws: Workspace) -> None:
    _docs(vws)
    before = vws.fingerprint("docs")
    vws.migration("0002_bad_hnsw", """
        -- polyshift: vector=docs.embedding:16:recall=0.9:k=10:sample=20:ef_search=1
        CREATE INDEX docs_embedding_hnsw ON docs USING hnsw (embedding vector_l2_ops) WITH (m = 2, ef_construction = 4);
    """, "DROP INDEX docs_embedding_hnsw;")
    result = vws.run("up")
    assert result.exit_code == 3, result.output
    assert "recall@10 of hnsw index docs_embedding_hnsw is" in result.stderr and "below the required 0.900" in result.stderr
    assert vws.value("SELECT to_regclass('docs_embedding_hnsw')") is None
    assert vws.fingerprint("docs").schema_hash == before.schema_hash


def test_wrong_dimensions_and_missing_embeddings_fail_validation(vws: Workspace) -> None:
    vws.migration("0001_loose", """
        CREATE TABLE notes (id int PRIMARY KEY, emb vector);
        INSERT INTO notes VALUES (1, '[1,2,3]'), (2, '[1,2]'), (3, NULL);
    """, "DROP TABLE notes;")
    assert vws.run("up").exit_code == 0
    vws.python_migration("0002_checks", '''
        BACKUP = []
        RISK = "A"
        VECTORS = [{"table": "notes", "column": "emb", "dim": 3, "required": True, "recall": None}]

        def forward(ctx):
            pass

        def rollback(ctx):
            pass
    ''')
    result = vws.run("up")
    assert result.exit_code == 3
    assert "notes.emb: 1 rows do not have dimension 3" in result.stderr
    assert "notes.emb: 1 rows have no embedding (required)" in result.stderr


def test_invalid_ann_index_fails_validation(vws: Workspace) -> None:
    _docs(vws, "CREATE INDEX docs_embedding_hnsw ON docs USING hnsw (embedding vector_l2_ops);")
    vws.sql("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'docs_embedding_hnsw'::regclass")
    vws.python_migration("0002_check", '''
        BACKUP = []
        VECTORS = [{"table": "docs", "column": "embedding"}]
        def forward(ctx): pass
        def rollback(ctx): pass
    ''')
    result = vws.run("up")
    assert result.exit_code == 3
    assert "index docs_embedding_hnsw is not valid" in result.stderr


REEMBED = '''
    import math

    TRANSACTION = False
    BACKUP = []
    RISK = "B"
    VECTORS = [{{"table": "docs", "column": "embedding_v2", "dim": {dim}, "required": True, "recall": 0.9, "sample": 15,
                 "ef_search": 400}}]

    # Scattered, distinct vectors: no two neighbours of a query lie at (nearly) the same distance,
    # so the exact top-k has no ties for the index to break differently. (Points along one smooth
    # curve made the 10th and 11th neighbours tie, and recall@10 hung on the HNSW build's chance.)
    def embed(rows):
        return [[math.sin(row[0] * 12.9898 + (j + 1) * 78.233) * 43758.5453 % 1.0 for j in range({out})] for row in rows]

    def forward(ctx):
        h = ctx.helpers
        h.add_vector_column("docs", "embedding_v2", {dim})
        h.backfill("docs", "embedding_v2", embed, source=("body",), batch=700, throttle=0.0)
        h.create_hnsw_index("docs", "embedding_v2", "docs_embedding_v2_hnsw", m=16, ef_construction=64)

    def rollback(ctx):
        ctx.helpers.drop_index("docs_embedding_v2_hnsw")
        ctx.helpers.drop_column("docs", "embedding_v2")
'''


def test_dimension_change_expands_validates_and_rolls_back_leaving_the_old_column_untouched(vws: Workspace) -> None:
    _docs(vws, "CREATE INDEX docs_embedding_hnsw ON docs USING hnsw (embedding vector_l2_ops);")
    before = vws.fingerprint("docs")
    vws.python_migration("0002_reembed_32", textwrap.dedent(REEMBED.format(dim=32, out=32)))
    result = vws.run("up")
    assert result.exit_code == 0, result.output
    assert vws.value("SELECT count(*) FROM docs WHERE embedding_v2 IS NULL") == 0
    assert vws.value("SELECT vector_dims(embedding_v2) FROM docs LIMIT 1") == 32
    assert vws.sql("SELECT non_transactional FROM _polyshift.schema_history ORDER BY installed_rank")[-1] == (True,)
    assert vws.run("rollback").exit_code == 0
    after = vws.fingerprint("docs")
    assert after == before  # old column, its index and every row exactly as they were


def test_backfill_with_the_wrong_dimension_is_refused_and_undone_exit_3(vws: Workspace) -> None:
    _docs(vws)
    before = vws.fingerprint("docs")
    vws.python_migration("0002_reembed_bad", textwrap.dedent(REEMBED.format(dim=32, out=31)))
    result = vws.run("up")
    assert result.exit_code == 3, result.output
    assert "got a 31-dimension vector, the column is vector(32)" in result.stderr
    assert vws.value("SELECT count(*) FROM information_schema.columns WHERE table_name = 'docs' AND column_name = 'embedding_v2'") == 0
    assert vws.fingerprint("docs") == before


def test_backfill_resumes_where_it_stopped(vws: Workspace) -> None:
    _docs(vws)
    import psycopg

    from polyshift.adapters.postgres.pgvector_helpers import VectorHelpers

    with psycopg.connect(vws.url, autocommit=True) as conn:
        helpers = VectorHelpers(conn, lock_timeout=2, maintenance_work_mem="64MB")
        helpers.add_vector_column("docs", "e2", 4)
        calls = []

        def flaky(rows):  # type: ignore[no-untyped-def]
            calls.append(len(rows))
            if len(calls) == 3:
                raise ConnectionError("embedding service timed out")
            return [[1.0, 2.0, 3.0, 4.0]] * len(rows)

        try:
            helpers.backfill("docs", "e2", flaky, batch=500)
        except ConnectionError:
            pass
        assert vws.value("SELECT count(*) FROM docs WHERE e2 IS NOT NULL") == 1000  # two batches committed
        filled = helpers.backfill("docs", "e2", flaky, batch=500)
        assert filled == 2000  # only the rest: nothing was embedded twice
        assert vws.value("SELECT count(*) FROM docs WHERE e2 IS NULL") == 0
