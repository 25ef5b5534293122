"""A four-store project for release tests: PostgreSQL ('main'), pgvector ('vectors'), a graph
('graph': FalkorDB natively, or real Neo4j) and Redis ('cache'), every one a real server, with one release (0001)
that changes all four and moves the flag ``docs_v2`` through 50% and 100%.

``reset()`` puts the application's data back (the "blue" state) so a test can run the release
many times; ``state()`` fingerprints everything the release touches, for all-forward / all-back
comparisons that are independent of polyshift's own bookkeeping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import SENTINEL_PASSWORD, SQLITE_STATE, CliProject, clean_neo4j

SCOPES = {
    "main": ("documents",),
    "vectors": ("chunks",),
    "graph": ("Doc", "Topic", "Area", ":ABOUT", ":IN_AREA"),
    "cache": ("doc:*", "docs:v2:*"),
}

MIGRATIONS = {
    "main/0001_status.forward.sql": """\
        ALTER TABLE documents ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'draft';
        UPDATE documents SET status = 'published' WHERE id % 2 = 0;
        """,
    "main/0001_status.rollback.sql": "ALTER TABLE documents DROP COLUMN IF EXISTS status;\n",
    "main/0001_status.validate.sql": "SELECT count(*) = 150 FROM documents WHERE status = 'published';\n",
    "vectors/0001_norms.forward.sql": """\
        ALTER TABLE chunks ADD COLUMN IF NOT EXISTS norm real;
        UPDATE chunks SET norm = vector_norm(embedding);
        CREATE INDEX IF NOT EXISTS chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_l2_ops);
        """,
    "vectors/0001_norms.rollback.sql": """\
        DROP INDEX IF EXISTS chunks_embedding_hnsw;
        ALTER TABLE chunks DROP COLUMN IF EXISTS norm;
        """,
    "vectors/0001_norms.validate.sql": "SELECT count(*) = 0 FROM chunks WHERE norm IS NULL;\n",
    "graph/0001_areas.forward.cypher": """\
        // polyshift: backup=Topic,Area,:IN_AREA
        MATCH (t:Topic) MERGE (a:Area {name: t.area});
        MATCH (t:Topic), (a:Area) WHERE a.name = t.area MERGE (t)-[:IN_AREA]->(a);
        """,
    "graph/0001_areas.rollback.cypher": "MATCH (a:Area) DETACH DELETE a;\n",
    "graph/0001_areas.validate.cypher": "MATCH (:Topic)-[r:IN_AREA]->(:Area) RETURN count(r) = 10;\n",
    "cache/0001_rekey_docs.py": '''\
        """Cached documents move to a versioned key: doc:<id> becomes docs:v2:<id>."""

        BACKUP = ["doc:*", "docs:v2:*"]
        RISK = "B"


        def forward(ctx):
            ctx.helpers.rename_prefix("doc:", "docs:v2:")


        def rollback(ctx):
            ctx.helpers.rename_prefix("docs:v2:", "doc:")


        def validate(ctx):
            left = sum(1 for _ in ctx.client.scan_iter(match="doc:*", count=1000))
            return [f"{left} documents still cached under doc:*"] if left else []
        ''',
}


class ReleaseApp(CliProject):
    def __init__(self, root: Path, main_url: str, vectors_url: str, redis_server: Any, graph: tuple[str, str],
                 *, gates: str = '{ kind = "shell", command = "true" }', stages: str = "[50, 100]", bake: float = 0,
                 state_url: str = SQLITE_STATE) -> None:
        self.root = root
        self.main_url, self.vectors_url = main_url, vectors_url
        self.config = root / "polyshift.toml"
        self.migrations = root / "migrations"
        params = conninfo_to_dict(main_url)
        self.env = {"TEST_PG_PASSWORD": str(params.get("password", "")), "TEST_NEO4J_PASSWORD": SENTINEL_PASSWORD}
        host = f"{params.get('host')}:{params.get('port')}"

        def pg(url: str) -> str:
            return f"postgresql://{params.get('user')}:${{TEST_PG_PASSWORD}}@{host}/{conninfo_to_dict(url)['dbname']}"

        self.redis_server = redis_server
        self.graph_kind, graph_url = graph
        graph_options = f'kind = "{self.graph_kind}"\n            url = "{graph_url}"'
        if self.graph_kind == "falkordb":
            graph_options += '\n            graph = "app"'
        self.config.write_text(textwrap.dedent(f"""\
            [project]
            state_url = "{state_url}"

            [stores.main]
            kind = "postgres"
            url = "{pg(main_url)}"
            lock_timeout = "2s"

            [stores.vectors]
            kind = "pgvector"
            url = "{pg(vectors_url)}"

            [stores.graph]
            {graph_options}
            lock_ttl = "1s"

            [stores.cache]
            kind = "redis"
            url = "{redis_server.url}"
            lock_ttl = "1s"
            """))
        self.write_release(gates=gates, stages=stages, bake=bake)
        self.r = redis.Redis.from_url(redis_server.url)

    def write_release(self, *, gates: str, stages: str = "[50, 100]", bake: float = 0, flag: str = "docs_v2") -> None:
        for name, body in MIGRATIONS.items():
            path = self.migrations / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(body))
        (self.migrations / "releases.toml").write_text(textwrap.dedent(f"""\
            [release."0001"]
            flag = "{flag}"
            stages = {stages}
            bake_seconds = {bake}
            gates = [{gates}]
            """))

    def python_migration(self, store: str, name: str, body: str) -> None:
        """Replace the store's 0001 migration (whatever its files) by a Python module."""
        for path in (self.migrations / store).glob("0001_*"):
            path.unlink()
        (self.migrations / store / f"{name}.py").write_text(textwrap.dedent(body))

    def slow_cache_forward(self, seconds: float) -> None:
        """The cache step announces itself (file 'forwarding') and takes ``seconds`` before moving keys."""
        self.python_migration("cache", "0001_rekey_docs", f"""\
            import pathlib, time
            BACKUP = ['doc:*', 'docs:v2:*']

            def forward(ctx):
                pathlib.Path('forwarding').touch()
                time.sleep({seconds})
                ctx.helpers.rename_prefix('doc:', 'docs:v2:')

            def rollback(ctx):
                ctx.helpers.rename_prefix('docs:v2:', 'doc:')
            """)

    def spawn_until_forwarding(self) -> subprocess.Popen[str]:
        """``up`` in its own process, returned once the slow cache step has begun."""
        runner = self.spawn("up")
        deadline = time.monotonic() + 60
        while not (self.root / "forwarding").exists():
            assert time.monotonic() < deadline and runner.poll() is None, runner.communicate()
            time.sleep(0.05)
        return runner

    # -- the application's data, before the release ("blue") --------------------------------
    def reset(self) -> None:
        for url, ddl in ((self.main_url, "DROP TABLE IF EXISTS documents; DROP SCHEMA IF EXISTS _polyshift CASCADE;"
                          "CREATE TABLE documents (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL);"
                          "INSERT INTO documents SELECT i, 'doc ' || i, repeat('text ', i % 7) FROM generate_series(1, 300) i;"),
                         (self.vectors_url, "DROP TABLE IF EXISTS chunks; DROP SCHEMA IF EXISTS _polyshift CASCADE;"
                          "CREATE TABLE chunks (id int PRIMARY KEY, doc_id int NOT NULL, embedding vector(4) NOT NULL);"
                          "INSERT INTO chunks SELECT i, 1 + i % 300, ARRAY[i % 5, i % 7, i % 11, 1]::vector "
                          "FROM generate_series(1, 600) i;")):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(ddl)
        self.r.flushall()
        pipe = self.r.pipeline(transaction=False)
        for i in range(1, 201):
            pipe.set(f"doc:{i}", json.dumps({"title": f"doc {i}"}), ex=3600 if i % 2 else None)
        pipe.hset("doc:meta", mapping={"count": 200, "version": 1})
        pipe.execute()
        os.environ.update(self.env)
        graph = self.graph()
        try:
            if self.graph_kind == "neo4j":
                clean_neo4j(graph.t.run)
            elif graph.t.db.connection.exists(graph.t.graph_name):  # a FalkorDB graph is one key: its schema goes with it
                graph.t.graph.delete()
            graph.t.run("UNWIND range(1, 10) AS i CREATE (:Topic {name: 'topic ' + toString(i), area: 'area ' + toString(i % 3)})")
            graph.t.run("UNWIND range(1, 60) AS i CREATE (:Doc {id: i, title: 'doc ' + toString(i)})")
            graph.t.run("MATCH (d:Doc), (t:Topic) WHERE t.name = 'topic ' + toString(1 + d.id % 10) CREATE (d)-[:ABOUT]->(t)")
        finally:
            graph.close()
        self.reset_state()
        shutil.rmtree(self.root / ".polyshift", ignore_errors=True)

    def graph(self) -> Any:
        """The graph store's adapter, connected (its ``t.run`` runs Cypher)."""
        from polyshift.adapters import adapter_for
        from polyshift.framework.core.config import load_config

        adapter = adapter_for(load_config(self.config).store("graph"))
        adapter.connect()
        return adapter

    # -- what the stores hold, independent of polyshift ------------------------------------------
    def state(self) -> dict[str, Any]:
        from polyshift.adapters import adapter_for
        from polyshift.framework.core.config import load_config

        config = load_config(self.config)
        result = {}
        for store, scope in SCOPES.items():
            adapter = adapter_for(config.store(store))
            adapter.connect()
            try:
                fp = adapter.fingerprint(scope)
                adapter.ensure_ledger()
                applied = [e.version for e in adapter.ledger() if e.direction.ledger_word == "up"]
                downs = [e.version for e in adapter.ledger() if e.direction.ledger_word == "down"]
            finally:
                adapter.close()
            result[store] = {"schema": fp.schema_hash, "data": fp.data_hash, "counts": fp.counts,
                             "applied": len(applied) > len(downs)}
        return result

    def value_of(self, store: str, query: str) -> Any:
        with psycopg.connect(self.main_url if store == "main" else self.vectors_url) as conn:
            row = conn.execute(query).fetchone()
        return row[0] if row else None

    def flag(self) -> Any:
        from polyshift.feature_flags.settings import flag_settings, open_store
        from polyshift.framework.core.config import load_config

        store = open_store(flag_settings(load_config(self.config)))
        try:
            return store.get("docs_v2")
        finally:
            store.close()

