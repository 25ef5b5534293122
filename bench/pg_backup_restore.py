"""Scoped backup and restore of a 1M-row table: polyshift against pg_dump -Fc -t / pg_restore.

Both run against the same embedded PostgreSQL 18 in the same run, alternating, each --repeat
times (the median is reported: single runs vary by ±15% on a 2-core machine). Each tool runs as
its own process; wall time is measured around it and peak RSS comes from wait4() for that process.
polyshift's figures include what pg_dump's do not: reading the artifact back to verify every
sha256 and zstd frame (backup), and a server-side fingerprint of the restored rows (restore).

    python bench/pg_backup_restore.py [--rows 1000000] [--write bench/RESULTS.md]
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
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import measure, write_results  # noqa: E402
from polyshift.adapters.postgres.tools import pg_tool  # noqa: E402
from polyshift.framework.sandbox.servers import EmbeddedPostgres  # noqa: E402


def load_mixed(conn: psycopg.Connection, rows: int) -> None:
    """The benchmark's table: 6 columns incl. jsonb, a bigserial key and a second index."""
    conn.execute("""
        CREATE TABLE big (
            id bigserial PRIMARY KEY, uid uuid NOT NULL, name text NOT NULL, amount numeric(12,2),
            created_at timestamptz NOT NULL, payload jsonb)""")
    conn.execute(f"""
        INSERT INTO big (uid, name, amount, created_at, payload)
        SELECT md5(i::text)::uuid, 'customer ' || i, (i % 100000) / 7.0, now() - i * interval '1 minute',
               jsonb_build_object('n', i, 'tags', jsonb_build_array('a', 'b'), 'note', repeat('x', i % 40))
        FROM generate_series(1, {rows}) i""")
    conn.execute("CREATE INDEX big_created_idx ON big (created_at)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=None, help="default 1,000,000 (250,000 with --vectors)")
    parser.add_argument("--vectors", action="store_true", help="a pgvector table: id + vector(384), as issue 3 asks")
    parser.add_argument("--write", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; the median is reported")
    args = parser.parse_args()
    args.rows = args.rows or (250_000 if args.vectors else 1_000_000)

    pg = EmbeddedPostgres(password="bench-secret").start()
    work = Path(tempfile.mkdtemp(prefix="polyshift-bench-"))
    try:
        url = pg.url()
        with psycopg.connect(url, autocommit=True) as conn:
            t0 = time.perf_counter()
            if args.vectors:
                conn.execute("CREATE TABLE big (id bigint PRIMARY KEY, embedding vector(384) NOT NULL)")
                conn.execute(f"""
                    INSERT INTO big SELECT i, (SELECT array_agg(random()::real) FROM generate_series(1, 384) j WHERE i > 0)::vector
                    FROM generate_series(1, {args.rows}) i""")
            else:
                load_mixed(conn, args.rows)
            conn.execute("VACUUM ANALYZE big")
            size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('big'))").fetchone()[0]  # type: ignore[index]
            print(f"loaded {args.rows:,} rows ({size}) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

        (work / "polyshift.toml").write_text(textwrap.dedent(f"""\
            [project]
            state_url = "sqlite:///{work}/state.db"
            backups = "{work}/backups"
            [stores.main]
            kind = "{'pgvector' if args.vectors else 'postgres'}"
            url = "postgresql://{pg.user}:${{BENCH_PW}}@127.0.0.1:{pg.port}/{pg.database}"
            statement_timeout = "30min"
            """))
        env = {**os.environ, "BENCH_PW": pg.password, "PGPASSWORD": pg.password, "PYTHONPATH": str(REPO)}
        polyshift = [sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(work / "polyshift.toml"), "--json"]
        conninfo = f"host=127.0.0.1 port={pg.port} user={pg.user} dbname={pg.database}"

        results = []
        runs: dict[str, list[tuple[float, float, Any]]] = {name: [] for name in ("backup", "dump", "restore", "pg_restore")}
        dump = work / "big.dump"
        backup: dict[str, object] = {}
        for _ in range(args.repeat):
            t, rss, out = measure([*polyshift, "backup", "create", "main", "--scope", "big"], env)
            backup = json.loads(out)
            runs["backup"].append((t, rss, backup["bytes"]))
            t, rss, _ = measure([pg_tool("pg_dump"), "-Fc", "-t", "big", "-f", str(dump), "-d", conninfo], env)
            runs["dump"].append((t, rss, dump.stat().st_size))
        for _ in range(args.repeat):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS big")
            t, rss, _ = measure([*polyshift, "backup", "restore", str(backup["id"]), "--yes"], env)
            runs["restore"].append((t, rss, None))
            with psycopg.connect(url, autocommit=True) as conn:
                restored = conn.execute("SELECT count(*) FROM big").fetchone()[0]  # type: ignore[index]
                assert restored == args.rows, restored
                conn.execute("DROP TABLE big")
            t, rss, _ = measure([pg_tool("pg_restore"), "-d", conninfo, str(dump)], env)
            runs["pg_restore"].append((t, rss, None))
        labels = {
            "backup": "polyshift backup (COPY → zstd, sha256, read-back verify)",
            "dump": "pg_dump -Fc -t big",
            "restore": "polyshift restore (recreate, COPY, indexes, verify fingerprint)",
            "pg_restore": "pg_restore (same table)",
        }
        for key, label in labels.items():
            t, rss, size = sorted(runs[key])[len(runs[key]) // 2]  # the median run
            results.append((label, t, max(r[1] for r in runs[key]), size))
    finally:
        pg.stop()

    base_backup, base_restore = results[1][1], results[3][1]
    shape = "id + vector(384)" if args.vectors else "6 columns incl. jsonb, 2 indexes"
    lines = [
        f"Scoped backup/restore of one table ({shape}), {args.rows:,} rows, PostgreSQL 18 + pgvector (embedded), same run; "
        f"median of {args.repeat} runs each (peak RSS: the highest). Baseline: pg_dump -Fc -t / pg_restore.",
        "",
        "| operation | wall s | ratio to baseline | peak RSS MiB | artifact MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for i, (name, seconds, rss, size) in enumerate(results):
        base = base_backup if i < 2 else base_restore
        mib = f"{size / 2**20:.1f}" if size else ""
        lines.append(f"| {name} | {seconds:.2f} | {seconds / base:.2f} | {rss:.0f} | {mib} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        command = f"python bench/pg_backup_restore.py --rows {args.rows}" + (" --vectors" if args.vectors else "")
        title = "pgvector" if args.vectors else "PostgreSQL"
        write_results(args.write, f"{title} backup/restore benchmark", command, table, suffix=f" on {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
