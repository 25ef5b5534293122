"""Backup and restore of a 1M-row table to S3-compatible object storage against the local
directory, same run, same table, same PostgreSQL.

The object store is VersityGW (built with go install, see polyshift.framework.sandbox.objectstore)
on 127.0.0.1 over its own directory on the same disk, so the ratio shows what polyshift's S3 path
costs (multipart upload, the download that verifies every sha256 and zstd frame, the conditional
writes) rather than a network. Each operation runs as its own process, alternating local / S3,
--repeat times; the median is reported, peak RSS is the highest (wait4 of that process).

    python bench/object_store.py [--rows 1000000] [--repeat 3] [--write bench/OBJECT_STORE_RESULTS.md]
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

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import measure, write_results  # noqa: E402
from polyshift.framework.sandbox.objectstore import EmbeddedObjectStore  # noqa: E402
from polyshift.framework.sandbox.servers import EmbeddedPostgres  # noqa: E402


def _load(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
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
        conn.execute("VACUUM ANALYZE big")
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('big'))").fetchone()[0]  # type: ignore[index]
    print(f"loaded {rows:,} rows ({size}) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; the median is reported")
    parser.add_argument("--write", type=Path, help="also write the markdown table to this file")
    args = parser.parse_args()

    pg = EmbeddedPostgres(password="bench-secret").start()
    s3 = EmbeddedObjectStore().start()
    work = Path(tempfile.mkdtemp(prefix="polyshift-bench-s3-"))
    try:
        url = pg.url()
        _load(url, args.rows)
        bucket = s3.create_bucket("polyshift-bench")
        store = f"""\
            [stores.main]
            kind = "postgres"
            url = "postgresql://{pg.user}:${{BENCH_PW}}@127.0.0.1:{pg.port}/{pg.database}"
            statement_timeout = "30min"
            """
        configs = {}
        for name, target in (("local", f"{work}/backups"), ("s3", f"s3://{bucket}/bench")):
            configs[name] = work / f"{name}.toml"
            configs[name].write_text(textwrap.dedent(f"""\
                [project]
                state_url = "sqlite:///{work}/{name}-state.db"
                backups = "{target}"
                """) + textwrap.dedent(store))
        env = {**os.environ, **s3.env(), "BENCH_PW": pg.password, "PYTHONPATH": str(REPO)}

        def polyshift(name: str) -> list[str]:
            return [sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(configs[name]), "--json"]

        runs: dict[tuple[str, str], list[tuple[float, float, int | None]]] = {}
        backups: dict[str, str] = {}
        for _ in range(args.repeat):
            for name in configs:
                t, rss, out = measure([*polyshift(name), "backup", "create", "main", "--scope", "big"], env)
                made = json.loads(out)
                backups[name] = str(made["id"])
                runs.setdefault(("backup", name), []).append((t, rss, int(made["bytes"])))
        for _ in range(args.repeat):
            for name in configs:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("DROP TABLE IF EXISTS big")
                t, rss, _ = measure([*polyshift(name), "backup", "restore", backups[name], "--yes"], env)
                with psycopg.connect(url, autocommit=True) as conn:
                    restored = conn.execute("SELECT count(*) FROM big").fetchone()[0]  # type: ignore[index]
                assert restored == args.rows, restored
                runs.setdefault(("restore", name), []).append((t, rss, None))
    finally:
        s3.stop()
        pg.stop()

    labels = {
        "backup": "backup create (COPY → zstd → store, sha256, read-back verify)",
        "restore": "backup restore (verify, recreate, COPY, indexes, fingerprint)",
    }
    lines = [
        f"Backup/restore of one table (6 columns incl. jsonb, 2 indexes), {args.rows:,} rows, PostgreSQL 18 (embedded), "
        f"to an S3-compatible object store (VersityGW on 127.0.0.1) against the local directory, same run; median of "
        f"{args.repeat} runs each (peak RSS: the highest). Baseline: the local directory.",
        "",
        "| operation | backups in | wall s | MiB/s of artifact | k rows/s | ratio to local | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    size = sorted(runs["backup", "local"])[args.repeat // 2][2] or 0
    for op, label in labels.items():
        base = sorted(runs[op, "local"])[args.repeat // 2][0]
        for name, where in (("local", "local directory"), ("s3", "s3://bucket/prefix")):
            t, _, made = sorted(runs[op, name])[args.repeat // 2]
            rss = max(r[1] for r in runs[op, name])
            artifact = made or size
            lines.append(f"| {label} | {where} | {t:.2f} | {artifact / 2**20 / t:.1f} | {args.rows / t / 1000:.0f} | "
                         f"{t / base:.2f} | {rss:.0f} |")
    lines.append("")
    lines.append(f"Artifact: {size / 2**20:.1f} MiB compressed (zstd level 1).")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_results(args.write, "Object-store backup/restore benchmark", f"python bench/object_store.py --rows {args.rows}",
                      table, suffix=f" on {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
