"""The cost of the guard rails: a no-op release across four stores, end to end, next to
`alembic upgrade head` of a one-statement revision on the same PostgreSQL, in the same run.

polyshift's release: version 0001 in main (PostgreSQL), vectors (pgvector), graph (FalkorDB,
native) and cache (Redis), each a ``SELECT 1`` / ``RETURN 1`` / no-op Python step, through the
whole pipeline: preflight with four locks, drift and disk checks, pre-release fingerprints,
forward, validate, invariants, and a flag cutover to 100% behind one SQL health gate.
alembic: ``op.execute("SELECT 1")`` in one revision. Both run as their own process (interpreter
start included), median of --repeat runs; the stores are reset between runs, untimed. polyshift
runs twice per round: as a project that has released before (its control plane kept, the usual
case in a pipeline) and as a first release, which also creates the control plane's tables (the
one command that imports SQLAlchemy); alembic's version table is dropped before each of its runs.

    python bench/release_noop.py [--repeat 5] [--write bench/RELEASE_RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
from datetime import datetime
from pathlib import Path

import psycopg
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import measure, user_env, write_results  # noqa: E402
from polyshift.framework.sandbox.servers import EmbeddedPostgres, EmbeddedRedis, falkordb_args  # noqa: E402

PHASES = [  # (label, journal entry that ends the phase)
    ("preflight (4 locks, drift, disk)", ("preflight", "done")),
    ("snapshot + backups", ("backup-or-snapshot", "done")),
    ("forward", ("forward", "done")),
    ("validate + invariants", ("invariants", "done")),
    ("cutover (1 stage, 1 gate)", ("complete", "done")),
]


def polyshift_project(root: Path, pg_url: str, vectors_url: str, cache_url: str, graph_port: int) -> Path:
    migrations = root / "migrations"
    for store, files in {
        "main": {"0001_noop.forward.sql": "SELECT 1;\n", "0001_noop.rollback.sql": "SELECT 1;\n",
                 "0001_noop.validate.sql": "SELECT true;\n"},
        "vectors": {"0001_noop.forward.sql": "SELECT 1;\n", "0001_noop.rollback.sql": "SELECT 1;\n"},
        "graph": {"0001_noop.forward.cypher": "RETURN 1;\n", "0001_noop.rollback.cypher": "RETURN 1;\n"},
        "cache": {"0001_noop.py": "BACKUP = []\nRISK = 'A'\n\ndef forward(ctx):\n    pass\n\ndef rollback(ctx):\n    pass\n"},
    }.items():
        (migrations / store).mkdir(parents=True)
        for name, body in files.items():
            (migrations / store / name).write_text(body)
    (migrations / "releases.toml").write_text(textwrap.dedent("""\
        [release."0001"]
        flag = "noop"
        stages = [100]
        gates = [{ kind = "sql", store = "main", query = "SELECT true" }]
        """))
    config = root / "polyshift.toml"
    config.write_text(textwrap.dedent(f"""\
        [project]
        state_url = "sqlite:///.polyshift/state.db"
        [stores.main]
        kind = "postgres"
        url = "{pg_url}"
        [stores.vectors]
        kind = "pgvector"
        url = "{vectors_url}"
        [stores.graph]
        kind = "falkordb"
        url = "redis://127.0.0.1:{graph_port}"
        graph = "bench"
        [stores.cache]
        kind = "redis"
        url = "{cache_url}"
        """))
    return config


def alembic_project(root: Path, pg_url: str) -> Path:
    subprocess.run([str(Path(sys.executable).parent / "alembic"), "init", "alembic"], check=True, cwd=root,
                   capture_output=True)
    ini = root / "alembic.ini"
    ini.write_text(ini.read_text().replace("driver://user:pass@localhost/dbname",
                                           pg_url.replace("postgresql://", "postgresql+psycopg://", 1)))
    (root / "alembic" / "versions" / "0001_noop.py").write_text(textwrap.dedent('''\
        from alembic import op

        revision = "0001"
        down_revision = None


        def upgrade():
            op.execute("SELECT 1")


        def downgrade():
            op.execute("SELECT 1")
        '''))
    return ini


def reset(root: Path, urls: list[str], cache: redis.Redis, graph: redis.Redis, *, keep_control_plane: bool) -> None:
    """The stores back to empty (their ledgers too), so the release applies again; the control
    plane is kept for a project that has released before, removed for a first release."""
    for url in urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS _polyshift CASCADE; DROP TABLE IF EXISTS alembic_version")
    cache.flushall()
    graph.flushall()
    if not keep_control_plane:
        shutil.rmtree(root / ".polyshift", ignore_errors=True)


def phases(root: Path) -> dict[str, float]:
    with sqlite3.connect(root / ".polyshift" / "state.db") as db:
        run_id, started = db.execute("SELECT id, started_at FROM polyshift_runs ORDER BY started_at DESC LIMIT 1").fetchone()
        rows = db.execute("SELECT step, phase, at FROM polyshift_journal WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
    at = [(step, phase, datetime.fromisoformat(ts)) for step, phase, ts in rows]
    previous = datetime.fromisoformat(started)
    result = {}
    for label, (step, phase) in PHASES:
        if step == "backup-or-snapshot":
            ends = [t for s, p, t in at if s in ("snapshot", "backup") and p == "done"]
        else:
            ends = [t for s, p, t in at if (s, p) == (step, phase)]
        end = ends[-1]
        result[label] = (end - previous).total_seconds()
        previous = end
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    write = args.write.resolve() if args.write else None  # the runs below change directory
    cwd = Path.cwd()
    root = Path(tempfile.mkdtemp(prefix="polyshift-bench-release-"))
    pg = EmbeddedPostgres(password="bench-pw").start()
    cache_server = EmbeddedRedis().start()
    graph_server = EmbeddedRedis(extra_args=falkordb_args()).start()
    try:
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE vectors")
        vectors_url = pg.url().rsplit("/", 1)[0] + "/vectors"
        (root / "p").mkdir()
        (root / "a").mkdir()
        config = polyshift_project(root / "p", pg.url(), vectors_url, cache_server.url, graph_server.port)
        alembic_project(root / "a", pg.url())
        cache, graph = redis.Redis.from_url(cache_server.url), redis.Redis(port=graph_server.port)
        env = user_env(PYTHONPATH=str(REPO))
        bin_dir = Path(sys.executable).parent
        ours, first, theirs, breakdown = [], [], [], []
        for _ in range(args.repeat):
            up = [str(bin_dir / "polyshift"), "--config", str(config), "up"]
            reset(root / "p", [pg.url(), vectors_url], cache, graph, keep_control_plane=False)
            os.chdir(root / "p")
            first.append(measure(up, env)[0])
            reset(root / "p", [pg.url(), vectors_url], cache, graph, keep_control_plane=True)
            ours.append(measure(up, env)[0])
            breakdown.append(phases(root / "p"))
            os.chdir(root / "a")
            reset(root / "a", [pg.url()], cache, graph, keep_control_plane=False)
            theirs.append(measure([str(bin_dir / "alembic"), "upgrade", "head"], env)[0])
        startup = statistics.median(measure([sys.executable, "-c", "import polyshift.framework.cli.main"], env)[0] for _ in range(3))
    finally:
        os.chdir(cwd)
        graph_server.stop()
        cache_server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    mine, fresh, base = statistics.median(ours), statistics.median(first), statistics.median(theirs)
    lines = ["| contender | wall time (median) | ratio |", "|---|---:|---:|",
             f"| `alembic upgrade head`, one `SELECT 1` revision, version table created (baseline) | {base:.2f} s | 1.00x |",
             f"| `polyshift up`, guarded no-op release across 4 stores, project released before | {mine:.2f} s | {mine / base:.2f}x |",
             f"| `polyshift up`, the same as a project's first release (control plane created) | {fresh:.2f} s | {fresh / base:.2f}x |",
             "", "| polyshift phase | median |", "|---|---:|",
             f"| interpreter + imports (`import polyshift.framework.cli.main`) | {startup:.2f} s |"]
    for label, _ in PHASES:
        lines.append(f"| {label} | {statistics.median(b[label] for b in breakdown) * 1000:.0f} ms |")
    table = "\n".join(lines)
    print(table)
    if write:
        write_results(write, "A guarded no-op release across four stores vs alembic upgrade", "make bench",
                      table, suffix=f" ({args.repeat} runs each, same PostgreSQL 18, same run)")


if __name__ == "__main__":
    main()
