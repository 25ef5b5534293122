"""What a rehearsal costs: ``polyshift rehearse --from-production`` next to plain ``polyshift up``
followed by ``polyshift rollback`` of the same releases on the same data, in the same run.

Two workloads, each on embedded "production" servers started here:

- the demo's releases 0002-0004 across PostgreSQL, pgvector, a FalkorDB graph and Redis, on the
  demo's data (20,000 documents, 10,000 embedded chunks, 2,000 graph documents, 10,000 keys);
- one PostgreSQL table of 1,000,000 rows and a release that rewrites it
  (``ALTER COLUMN amount TYPE numeric(12,2)``) and whose rollback rewrites it back.

The rehearsal includes starting its own fresh servers, copying production's scope through a
verified backup, and every check (fingerprints of the scope before, after each step); the
baseline is what a release and its undo cost on production itself (backups included). Each
contender runs as its own process; releases.toml is replaced by one without flags or gates
(neither contender runs a cutover here).

    python bench/rehearse.py [--rows 1000000] [--write bench/REHEARSE_RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import measure, write_results  # noqa: E402
from polyshift.framework.sandbox.demo import seed  # noqa: E402
from polyshift.framework.sandbox.servers import EmbeddedPostgres, EmbeddedRedis, falkordb_args  # noqa: E402


def polyshift(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(config), *args]


def demo_project(root: Path, pg: EmbeddedPostgres, cache: EmbeddedRedis, graph: EmbeddedRedis) -> Path:
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    (root / "migrations" / "releases.toml").write_text("# no cutover: both contenders stop at the stores\n")
    config = root / "polyshift.toml"
    config.write_text(textwrap.dedent(f"""\
        [project]
        state_url = "sqlite:///.polyshift/state.db"
        [stores.main]
        kind = "postgres"
        url = "{pg.url('main')}"
        [stores.vectors]
        kind = "pgvector"
        url = "{pg.url('vectors')}"
        [stores.graph]
        kind = "falkordb"
        url = "{graph.url}"
        graph = "app"
        [stores.cache]
        kind = "redis"
        url = "{cache.url}"
        """))
    return config


def table_project(root: Path, pg: EmbeddedPostgres, rows: int) -> Path:
    migrations = root / "migrations" / "main"
    migrations.mkdir(parents=True)
    (migrations / "0001_orders.forward.sql").write_text(
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, amount int NOT NULL, note text);\n")
    (migrations / "0001_orders.rollback.sql").write_text("DROP TABLE orders;\n")
    (migrations / "0002_amount_numeric.forward.sql").write_text("ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12,2);\n")
    (migrations / "0002_amount_numeric.rollback.sql").write_text("ALTER TABLE orders ALTER COLUMN amount TYPE int;\n")
    config = root / "polyshift.toml"
    config.write_text(textwrap.dedent(f"""\
        [project]
        state_url = "sqlite:///.polyshift/state.db"
        [stores.main]
        kind = "postgres"
        url = "{pg.url('orders')}"
        statement_timeout = "1h"
        """))
    return config


def run(config: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    """Wall seconds and stdout; a rehearsal that finds a failing check (exit 1) is a result too."""
    started = time.perf_counter()
    done = subprocess.run(polyshift(config, *args), env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1) or (done.returncode == 1 and args[0] != "rehearse"):
        raise SystemExit(f"polyshift {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout


def contenders(config: Path, env: dict[str, str], first: str, last: str) -> dict[str, Any]:
    """Rehearsal of the pending releases, then up + rollback of the same on production."""
    rehearsal, out = run(config, env, "rehearse", "--from-production", "--json")
    report = json.loads(out)
    up, _ = run(config, env, "up", "--to", last)
    rollback, _ = run(config, env, "rollback", "--to", first)
    held = max((t["held_ms"] for s in report["steps"] if s["step"] == "forward" for t in s["statements"]), default=0.0)
    phases: dict[str, float] = {}
    for step in report["steps"]:
        kind = "forward (all three)" if step["step"].startswith("forward") else step["step"]
        phases[kind] = phases.get(kind, 0.0) + step["seconds"]
    return {"rehearsal": rehearsal, "up": up, "rollback": rollback, "checks": len(report["checks"]),
            "failed": len(report["failed"]), "held_ms": held, "inside": report["seconds"], "phases": phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="polyshift-bench-rehearse-"))
    pg = EmbeddedPostgres().start()
    cache, graph = EmbeddedRedis().start(), EmbeddedRedis(extra_args=falkordb_args()).start()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    results = {}
    try:
        for database in ("main", "vectors", "orders"):
            pg.create_database(database)
        demo = demo_project(scratch / "demo", pg, cache, graph)
        measure(polyshift(demo, "up", "--release", "0001"), env)
        seed(demo)
        results["the demo's releases 0002-0004, four stores"] = contenders(demo, env, "0001", "0004")
        orders = table_project(scratch / "orders", pg, args.rows)
        measure(polyshift(orders, "up", "--release", "0001"), env)
        with psycopg.connect(pg.url("orders"), autocommit=True) as conn:
            conn.execute("INSERT INTO orders SELECT i, i %% 5000, i %% 100000, 'order ' || i FROM generate_series(1, %s) i",
                         (args.rows,))
            conn.execute("ANALYZE orders")
        results[f"{args.rows:,}-row table, a rewriting ALTER"] = contenders(orders, env, "0001", "0002")
    finally:
        cache.stop()
        graph.stop()
        pg.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    for name, r in results.items():
        print(f"{name}: {json.dumps(r)}", file=sys.stderr)
    lines = ["| workload | `up` + `rollback` (baseline) | `rehearse --from-production` | ratio | checks "
             "| longest lock held by a forward statement |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        baseline = r["up"] + r["rollback"]
        lines.append(f"| {name} | {baseline:.2f} s ({r['up']:.2f} + {r['rollback']:.2f}) | {r['rehearsal']:.2f} s | "
                     f"{r['rehearsal'] / baseline:.2f}x | {r['checks']} ({r['failed']} failed) | {r['held_ms']:,.0f} ms |")
    lines += ["", "| where the rehearsal's time goes | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    kinds = list(dict.fromkeys(k for r in results.values() for k in r["phases"]))
    for kind in kinds:
        lines.append(f"| {kind} steps | " + " | ".join(f"{r['phases'].get(kind, 0.0):.2f} s" for r in results.values()) + " |")
    lines.append("| servers, production copy, fingerprints before/after each step, checks | " + " | ".join(
        f"{r['inside'] - sum(r['phases'].values()):.2f} s" for r in results.values()) + " |")
    lines.append("| interpreter start and imports | "
                 + " | ".join(f"{r['rehearsal'] - r['inside']:.2f} s" for r in results.values()) + " |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        stamp = datetime.now().strftime("%Y-%m-%d")
        write_results(args.write, "What a rehearsal costs, next to up + rollback of the same releases",
                      "make bench", table, suffix=f" ({stamp}, same embedded servers, same run)")


if __name__ == "__main__":
    main()
