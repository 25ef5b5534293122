"""Scoped graph backup and restore on real Neo4j Community: 100k nodes and 500k relationships.

In the same run and on the same graph: polyshift's backup and restore (each its own process, peak
RSS from wait4, both verified by content fingerprint), APOC core's ``apoc.export.json.all`` and
``apoc.import.json`` (the procedure the seed documents use; it runs inside the server, so its
memory is the server's), and reading every node three ways: one streamed query (what polyshift
does), keyset paging on an indexed property, and SKIP/LIMIT paging.

    python bench/graph_backup_restore.py [--nodes 100000] [--rels 500000] [--write bench/GRAPH_RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import measure, write_results  # noqa: E402
from polyshift.framework.sandbox.neo4j import Neo4jServer  # noqa: E402

PAGE = 2000


def load(session, nodes: int, rels: int) -> None:  # type: ignore[no-untyped-def]
    session.run("CREATE CONSTRAINT doc_id IF NOT EXISTS FOR (d:Doc) REQUIRE d.id IS UNIQUE").consume()
    for start in range(0, nodes, 20_000):
        session.run("UNWIND range($a, $b) AS i CREATE (:Doc {id: i, title: 'doc ' + toString(i), score: i % 100, "
                    "created: date('2024-01-01') + duration({days: i % 365})})",
                    {"a": start, "b": min(start + 20_000, nodes) - 1}).consume()
    per_node = max(rels // nodes, 1)
    for start in range(0, nodes, 10_000):
        session.run("MATCH (a:Doc) WHERE a.id >= $a AND a.id < $b UNWIND range(1, $k) AS j "
                    "MATCH (b:Doc {id: (a.id * 7 + j * 13) % $n}) CREATE (a)-[:LINKS {w: j}]->(b)",
                    {"a": start, "b": start + 10_000, "k": per_node, "n": nodes}).consume()


def count(session, query: str) -> int:  # type: ignore[no-untyped-def]
    return int(session.run(query).single()[0])


T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def read_streamed(session) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for _ in session.run("MATCH (n:Doc) RETURN elementId(n), labels(n), properties(n)"))


def read_keyset(session) -> int:  # type: ignore[no-untyped-def]
    last, seen = -1, 0
    while True:
        rows = list(session.run("MATCH (n:Doc) WHERE n.id > $last RETURN n.id, labels(n), properties(n) ORDER BY n.id LIMIT $p",
                                {"last": last, "p": PAGE}))
        seen += len(rows)
        if len(rows) < PAGE:
            return seen
        last = rows[-1][0]


def read_skip(session) -> int:  # type: ignore[no-untyped-def]
    skip, seen = 0, 0
    while True:
        rows = list(session.run("MATCH (n:Doc) RETURN n.id, labels(n), properties(n) ORDER BY n.id SKIP $s LIMIT $p",
                                {"s": skip, "p": PAGE}))
        seen += len(rows)
        if len(rows) < PAGE:
            return seen
        skip += PAGE


def clear(session) -> None:  # type: ignore[no-untyped-def]
    session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 5000 ROWS").consume()


def main() -> None:
    import neo4j

    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--rels", type=int, default=500_000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    server = Neo4jServer(line="5.26", heap="2g", pagecache="1g").start()
    work = Path(tempfile.mkdtemp(prefix="polyshift-graph-bench-"))
    rows: list[str] = []
    try:
        driver = neo4j.GraphDatabase.driver(server.url, auth=None)
        with driver.session() as session:
            t0 = time.perf_counter()
            load(session, args.nodes, args.rels)
            nodes = count(session, "MATCH (n:Doc) RETURN count(n)")
            rels = count(session, "MATCH ()-[r:LINKS]->() RETURN count(r)")
            print(f"loaded {nodes:,} nodes and {rels:,} relationships in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            entities = nodes + rels
            (work / "polyshift.toml").write_text(textwrap.dedent(f"""\
                [project]
                state_url = "sqlite:///{work}/state.db"
                backups = "{work}/backups"
                [stores.graph]
                kind = "neo4j"
                url = "{server.url}"
                statement_timeout = "30min"
                """))
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            cli = [sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(work / "polyshift.toml"), "--json"]
            backup_s, backup_rss, out = measure([*cli, "backup", "create", "graph", "--scope", "Doc,:LINKS"], env)
            backup = json.loads(out)
            streamed_s, streamed_n = timed(lambda: read_streamed(session))
            keyset_s, keyset_n = timed(lambda: read_keyset(session))
            skip_s, skip_n = timed(lambda: read_skip(session))
            assert streamed_n == keyset_n == skip_n == nodes
            export_s, export = timed(lambda: session.run("CALL apoc.export.json.all('bench.json', {}) "
                                                         "YIELD nodes, relationships RETURN nodes, relationships").single())
            assert export is not None and export[0] + export[1] == entities
            export_bytes = next(server.root.rglob("bench.json")).stat().st_size  # type: ignore[union-attr]
            clear(session)
            restore_s, restore_rss, _ = measure([*cli, "backup", "restore", backup["id"], "--yes"], env)
            assert count(session, "MATCH ()-[r:LINKS]->() RETURN count(r)") == rels
            clear(session)
            session.run("DROP CONSTRAINT doc_id").consume()
            # APOC requires a uniqueness constraint on its import id; creating it counts as part of the import.
            import_s, _ = timed(lambda: (
                session.run("CREATE CONSTRAINT apoc_import FOR (n:Doc) REQUIRE n.neo4jImportId IS UNIQUE").consume(),
                session.run("CALL apoc.import.json('file:///bench.json')").consume()))
            assert count(session, "MATCH (n:Doc) RETURN count(n)") == nodes
            assert count(session, "MATCH ()-[r:LINKS]->() RETURN count(r)") == rels
            server_rss = server.rss_mib()
        driver.close()
        rows = [
            f"Scoped graph backup/restore, {nodes:,} nodes + {rels:,} relationships, Neo4j {server.version} Community "
            f"(Java {server.java_version}, heap 2 GiB, page cache 1 GiB), APOC core 5.26.19, same run.",
            "", "| operation | seconds | entities/s | peak RSS MiB | note |", "|---|---:|---:|---:|---|",
            f"| polyshift backup (streamed by label/type, JSONL, zstd, sha256 read-back, content fingerprint) | {backup_s:.2f} | "
            f"{entities / backup_s:,.0f} | {backup_rss:.0f} | {backup['bytes'] / 2**20:.1f} MiB artifact; "
            f"{backup_s / export_s:.2f}x APOC export |",
            f"| APOC `apoc.export.json.all` (in the server, to a file) | {export_s:.2f} | {entities / export_s:,.0f} | (server) | "
            f"{export_bytes / 2**20:.1f} MiB JSON, not verified |",
            f"| polyshift restore (delete scope, UNWIND by label set, elementId map, relationships, schema, verify) | "
            f"{restore_s:.2f} | {entities / restore_s:,.0f} | {restore_rss:.0f} | {restore_s / import_s:.2f}x APOC import |",
            f"| APOC `apoc.import.json` (in the server, from that file) | {import_s:.2f} | {entities / import_s:,.0f} | (server) | "
            "no delete, no verification |",
            f"| read all nodes, one streamed query (polyshift) | {streamed_s:.2f} | {nodes / streamed_s:,.0f} | | |",
            f"| read all nodes, keyset paging on an indexed id (page {PAGE}) | {keyset_s:.2f} | {nodes / keyset_s:,.0f} | | |",
            f"| read all nodes, SKIP/LIMIT paging (page {PAGE}) | {skip_s:.2f} | {nodes / skip_s:,.0f} | | "
            f"{skip_s / streamed_s:.1f}x the streamed time |",
            "", f"Server RSS at the end: {server_rss:.0f} MiB; it started in {server.started_in:.1f} s.",
        ]
    finally:
        server.stop(graceful=False)
    table = "\n".join(rows)
    print(table)
    if args.write:
        write_results(args.write, "Graph backup/restore benchmark",
                      f"python bench/graph_backup_restore.py --nodes {args.nodes} --rels {args.rels}", table)


if __name__ == "__main__":
    main()
