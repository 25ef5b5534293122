"""A 10M-row table backed up and restored with parallel COPY over key ranges: polyshift against
pg_dump -Fd -j N / pg_restore -j N (N = 2 by default, the cores of the machine it was written on).

Same embedded PostgreSQL 18, same run, each contender as its own process (wall time around it,
peak RSS from wait4). polyshift's backup copies N primary-key ranges on N connections sharing one
exported snapshot, each into its own artifact part, fingerprints the table on another connection
and reads every part back to verify it; its restore loads the parts in one transaction, builds the
indexes and proves the restored rows against the backup's fingerprint. pg_dump / pg_restore do none
of the proving. Also prints the 1M-row restore against pg_restore (single table, no -j) unless
--skip-1m.

    python bench/pg_parallel.py [--rows 10000000] [--jobs 2] [--write bench/PARALLEL_RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import measure, write_results  # noqa: E402
from bench.pg_backup_restore import load_mixed  # noqa: E402
from polyshift.adapters.postgres.copydata import PARALLEL_WORKERS_ENV  # noqa: E402
from polyshift.adapters.postgres.tools import pg_tool  # noqa: E402
from polyshift.framework.sandbox.servers import EmbeddedPostgres  # noqa: E402


def _rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM big").fetchone()[0])  # type: ignore[index]


def _drop(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS big")


def _round(rows: int, jobs: int, pg: EmbeddedPostgres, work: Path, polyshift: list[str],
           env: dict[str, str]) -> list[tuple[str, float, float, int | None, str]]:
    """One backup and one restore of each contender on a table of ``rows`` rows."""
    url = pg.url()
    _drop(url)
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        load_mixed(conn, rows)
        conn.execute("VACUUM ANALYZE big")
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('big'))").fetchone()[0]  # type: ignore[index]
    print(f"loaded {rows:,} rows ({size}) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    conninfo = f"host=127.0.0.1 port={pg.port} user={pg.user} dbname={pg.database}"
    parallel = jobs > 1
    dump = work / f"big-{rows}.dump"
    shutil.rmtree(dump, ignore_errors=True)
    dump_cmd = [pg_tool("pg_dump"), "-t", "big", "-f", str(dump), "-d", conninfo]
    dump_cmd[1:1] = ["-Fd", "-j", str(jobs)] if parallel else ["-Fc"]
    restore_cmd = [pg_tool("pg_restore"), "-d", conninfo, str(dump)] + (["-j", str(jobs)] if parallel else [])
    dump_label = f"pg_dump -Fd -j {jobs}" if parallel else "pg_dump -Fc"
    restore_label = f"pg_restore -j {jobs}" if parallel else "pg_restore"

    t_b, rss_b, out = measure([*polyshift, "backup", "create", "main", "--scope", "big"], env)
    backup = json.loads(out)
    t_d, rss_d, _ = measure(dump_cmd, env)
    dump_bytes = sum(f.stat().st_size for f in dump.rglob("*") if f.is_file()) if dump.is_dir() else dump.stat().st_size
    manifest = json.loads((work / "backups" / backup["id"] / "manifest.json").read_text())
    parts = len(manifest["meta"]["tables"][0].get("parts", [])) or 1
    _drop(url)
    t_r, rss_r, out = measure([*polyshift, "backup", "restore", str(backup["id"]), "--yes"], env)
    assert json.loads(out)["verified"] is True, out
    assert _rows(url) == rows
    _drop(url)
    t_p, rss_p, _ = measure(restore_cmd, env)
    assert _rows(url) == rows
    shutil.rmtree(work / "backups" / backup["id"], ignore_errors=True)
    shutil.rmtree(dump, ignore_errors=True)
    n = f"{rows / 1e6:g}M"
    return [
        (f"{n} polyshift backup ({parts} part{'s' if parts > 1 else ''}, fingerprint, read-back verify)", t_b, rss_b,
         int(backup["bytes"]), "b"),
        (f"{n} {dump_label}", t_d, rss_d, dump_bytes, "B"),
        (f"{n} polyshift restore (one transaction, indexes, verify fingerprint)", t_r, rss_r, None, "r"),
        (f"{n} {restore_label}", t_p, rss_p, None, "R"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--jobs", type=int, default=2, help="pg_dump/pg_restore -j and polyshift's copy workers")
    parser.add_argument("--skip-1m", action="store_true", help="only the big table")
    parser.add_argument("--write", type=Path, help="also write the markdown table to this file")
    args = parser.parse_args()

    pg = EmbeddedPostgres(password="bench-secret").start()
    work = Path(tempfile.mkdtemp(prefix="polyshift-bench-"))
    try:
        (work / "polyshift.toml").write_text(textwrap.dedent(f"""\
            [project]
            state_url = "sqlite:///{work}/state.db"
            backups = "{work}/backups"
            [stores.main]
            kind = "postgres"
            url = "postgresql://{pg.user}:${{BENCH_PW}}@127.0.0.1:{pg.port}/{pg.database}"
            statement_timeout = "60min"
            """))
        env = {**os.environ, "BENCH_PW": pg.password, "PGPASSWORD": pg.password, "PYTHONPATH": str(REPO),
               PARALLEL_WORKERS_ENV: str(args.jobs)}
        polyshift = [sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(work / "polyshift.toml"), "--json"]
        results = [] if args.skip_1m else _round(1_000_000, 1, pg, work, polyshift, env)
        results += _round(args.rows, args.jobs, pg, work, polyshift, env)
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"One table (6 columns incl. jsonb, 2 indexes), PostgreSQL 18 (embedded), {os.cpu_count()} cores, one run each, "
        f"same run. Baselines: pg_dump / pg_restore (1M, single table) and pg_dump -Fd -j {args.jobs} / "
        f"pg_restore -j {args.jobs} ({args.rows / 1e6:g}M).",
        "",
        "| operation | wall s | ratio to baseline | peak RSS MiB | artifact MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    base: dict[str, float] = {}
    for name, seconds, _rss, _size, kind in results:
        if kind.isupper():
            base[name.split(" ")[0] + kind.lower()] = seconds
    for name, seconds, rss, size, kind in results:
        baseline = base[name.split(" ")[0] + kind.lower()]
        mib = f"{size / 2**20:.1f}" if size else ""
        lines.append(f"| {name} | {seconds:.2f} | {seconds / baseline:.2f} | {rss:.0f} | {mib} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_results(args.write, "PostgreSQL big tables: parallel COPY benchmark",
                      f"python bench/pg_parallel.py --rows {args.rows} --jobs {args.jobs}", table)


if __name__ == "__main__":
    main()
