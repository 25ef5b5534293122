"""Scoped graph backup and restore: 100k nodes and 500k relationships on FalkorDB (native protocol).

Reports entities per second and peak RSS for polyshift's backup and restore (each its own process,
peak RSS from wait4), and, in the same run, reading the scope's nodes with id-keyed paging
(``WHERE id(n) > $last ORDER BY id(n) LIMIT``, what polyshift does) against SKIP/LIMIT paging.

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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import measure, write_results  # noqa: E402
from framework.sandbox import EmbeddedRedis, falkordb_args  # noqa: E402

PAGE = 2000


def load(graph, nodes: int, rels: int) -> None:  # type: ignore[no-untyped-def]
    for start in range(0, nodes, 20_000):
        graph.query("UNWIND range($a, $b) AS i CREATE (:Doc {id: i, title: 'doc ' + toString(i), score: i % 100})",
                    {"a": start, "b": min(start + 20_000, nodes) - 1})
    graph.query("CREATE INDEX FOR (d:Doc) ON (d.id)")
    per_node = max(rels // nodes, 1)
    for start in range(0, nodes, 10_000):
        # A fresh graph numbers nodes 0..n-1 in creation order; targets are found by id seek.
        graph.query("MATCH (a:Doc) WHERE a.id >= $a AND a.id < $b UNWIND range(1, $k) AS j "
                    "WITH a, j, (id(a) * 7 + j * 13) % $n AS target MATCH (b) WHERE id(b) = target "
                    "CREATE (a)-[:LINKS {w: j}]->(b)",
                    {"a": start, "b": start + 10_000, "k": per_node, "n": nodes})


def page_by_id(graph) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    started, last, seen = time.perf_counter(), -1, 0
    while True:
        rows = graph.query("MATCH (n:Doc) WHERE id(n) > $last RETURN id(n), properties(n) ORDER BY id(n) LIMIT $p",
                           {"last": last, "p": PAGE}).result_set
        seen += len(rows)
        if len(rows) < PAGE:
            return time.perf_counter() - started, seen
        last = rows[-1][0]


def page_by_skip(graph) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    started, skip, seen = time.perf_counter(), 0, 0
    while True:
        rows = graph.query("MATCH (n:Doc) RETURN id(n), properties(n) ORDER BY id(n) SKIP $s LIMIT $p",
                           {"s": skip, "p": PAGE}).result_set
        seen += len(rows)
        if len(rows) < PAGE:
            return time.perf_counter() - started, seen
        skip += PAGE


def main() -> None:
    from falkordb import FalkorDB

    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--rels", type=int, default=500_000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    server = EmbeddedRedis(extra_args=falkordb_args()).start()
    work = Path(tempfile.mkdtemp(prefix="polyshift-graph-bench-"))
    try:
        graph = FalkorDB(host="127.0.0.1", port=server.port).select_graph("bench")
        t0 = time.perf_counter()
        load(graph, args.nodes, args.rels)
        nodes = graph.query("MATCH (n:Doc) RETURN count(n)").result_set[0][0]
        rels = graph.query("MATCH ()-[r:LINKS]->() RETURN count(r)").result_set[0][0]
        print(f"loaded {nodes:,} nodes and {rels:,} relationships in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        (work / "polyshift.toml").write_text(textwrap.dedent(f"""\
            [project]
            state_url = "sqlite:///{work}/state.db"
            backups = "{work}/backups"
            [stores.graph]
            kind = "falkordb"
            url = "{server.url}"
            graph = "bench"
            statement_timeout = "30min"
            """))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cli = [sys.executable, "-m", "framework.cli", "--config", str(work / "polyshift.toml"), "--json"]
        backup_s, backup_rss, out = measure([*cli, "backup", "create", "graph", "--scope", "Doc,:LINKS"], env)
        backup = json.loads(out)
        id_s, id_n = page_by_id(graph)
        skip_s, skip_n = page_by_skip(graph)
        assert id_n == skip_n == nodes
        graph.query("MATCH (n:Doc) DETACH DELETE n")
        restore_s, restore_rss, _ = measure([*cli, "backup", "restore", backup["id"], "--yes"], env)
        assert graph.query("MATCH ()-[r:LINKS]->() RETURN count(r)").result_set[0][0] == rels
    finally:
        server.stop()
    entities = nodes + rels
    lines = [
        f"Scoped graph backup/restore, {nodes:,} nodes + {rels:,} relationships, FalkorDB 4.16 (native protocol), same run.",
        "", "| operation | seconds | entities/s | peak RSS MiB | note |", "|---|---:|---:|---:|---|",
        f"| polyshift backup (id-paged JSONL, zstd, verify, content fingerprint) | {backup_s:.2f} | {entities / backup_s:,.0f} | "
        f"{backup_rss:.0f} | {backup['bytes'] / 2**20:.1f} MiB artifact |",
        f"| polyshift restore (delete scope, UNWIND by label set, id map, relationships, verify) | {restore_s:.2f} | "
        f"{entities / restore_s:,.0f} | {restore_rss:.0f} | |",
        f"| read all nodes, id-keyed paging (WHERE id(n) > $last) | {id_s:.2f} | {nodes / id_s:,.0f} | | page {PAGE} |",
        f"| read all nodes, SKIP/LIMIT paging | {skip_s:.2f} | {nodes / skip_s:,.0f} | | {skip_s / id_s:.1f}x the id-keyed time |",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_results(args.write, "Graph backup/restore benchmark",
                      f"python bench/graph_backup_restore.py --nodes {args.nodes} --rels {args.rels}", table)


if __name__ == "__main__":
    main()
