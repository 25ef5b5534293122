"""A long real history on an empty database: `polyshift up` next to psql run once per file (the
baseline) and one psql process for the whole history, in the same run, on the same PostgreSQL.

The history is Ory Kratos v1.3.1's PostgreSQL migrations, fetched at that pinned version by
``polyshift.framework.sandbox.histories.fetch()`` and laid out by ``polyshift import --from pop
--dialect postgres`` (per migration its ``.postgres.`` file, else the dialect-less one); psql runs
the same source files in the same order.

Each contender starts from a fresh, empty database and runs as its own process(es), interpreter
start included. ``--before PYTHON`` adds a row for another polyshift install (for example the main
checkout's ``.venv/bin/python``) run in the same way, so a change is measured against the code
before it in the same run.

    python bench/history.py [--repeat 3] [--before /work/main/.venv/bin/python] [--write bench/HISTORY_RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402
from polyshift.adapters.postgres.tools import pg_tool  # noqa: E402
from polyshift.framework.sandbox.histories import KRATOS, fetch  # noqa: E402
from polyshift.framework.sandbox.servers import EmbeddedPostgres  # noqa: E402


def import_history(source: Path, root: Path, url: str) -> list[Path]:
    """``polyshift import --from pop`` of the history into a project at ``root``; the picked source
    files in the order polyshift applies them (what the psql contenders run)."""
    config = write_config(root, url)
    done = subprocess.run([sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(config), "--json", "import",
                           "--from", "pop", str(source), "--store", "main", "--dialect", "postgres"],
                          cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"polyshift import --from pop failed: {(done.stdout + done.stderr)[-3000:]}")
    return [source / m["source"] for m in json.loads(done.stdout)["migrations"]]


def write_config(root: Path, url: str) -> Path:
    config = root / "polyshift.toml"
    config.write_text(textwrap.dedent(f"""\
        [project]
        migrations = "migrations"
        state_url = "sqlite:///.polyshift/state.db"
        backups = ".polyshift/backups"
        [stores.main]
        kind = "postgres"
        url = "{url}"
        """))
    return config


def fresh(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}… failed ({done.returncode}): {(done.stdout + done.stderr)[-3000:]}")


def polyshift_up(python: str, root: Path) -> tuple[float, int]:
    """Wall seconds of one `polyshift up` process, and how many backups it took."""
    shutil.rmtree(root / ".polyshift", ignore_errors=True)
    config = root / "polyshift.toml"
    env = {**os.environ}
    env.pop("PYTHONPATH", None)  # each install runs its own code
    started = time.perf_counter()
    run([python, "-m", "polyshift.framework.cli.main", "--config", str(config), "up"], env, cwd=root)
    elapsed = time.perf_counter() - started
    listed = subprocess.run([python, "-m", "polyshift.framework.cli.main", "--config", str(config), "backup", "list", "--json"],
                            env=env, cwd=root, capture_output=True, text=True, check=True)
    return elapsed, len(json.loads(listed.stdout))


def psql_per_file(url: str, files: list[Path], env: dict[str, str]) -> float:
    started = time.perf_counter()
    for path in files:
        run([pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(path), url], env)
    return time.perf_counter() - started


def psql_once(url: str, files: list[Path], env: dict[str, str], scratch: Path) -> float:
    script = scratch / "all.sql"
    script.write_text("".join(f"\\i '{p}'\n" for p in files))
    started = time.perf_counter()
    run([pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script), url], env)
    return time.perf_counter() - started


def tables_and_rows(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables WHERE schemaname <> '_polyshift'")]
        rows = 0
        for t in tables:
            found = conn.execute(f"SELECT count(*) FROM {t}").fetchone()
            rows += int(found[0]) if found else 0
    return len(tables), rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", help="python of another polyshift install, measured as 'before'")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    write = args.write.resolve() if args.write else None
    source = fetch(KRATOS)
    root = Path(tempfile.mkdtemp(prefix="polyshift-bench-history-"))
    pg = EmbeddedPostgres(password="bench-pw").start()
    env = {**os.environ, "PGPASSWORD": "bench-pw"}
    try:
        admin = pg.url()
        url = pg.url("history")
        files = import_history(source, root, url)
        contenders: dict[str, list[float]] = {"per-file": [], "once": [], "after": []}
        if args.before:
            contenders["before"] = []
        backups: dict[str, int] = {}
        shape: dict[str, tuple[int, int]] = {}
        for _ in range(args.repeat):
            fresh(admin, "history")
            contenders["per-file"].append(psql_per_file(url, files, env))
            shape["psql"] = tables_and_rows(url)
            fresh(admin, "history")
            contenders["once"].append(psql_once(url, files, env, root))
            if args.before:
                fresh(admin, "history")
                seconds, backups["before"] = polyshift_up(args.before, root)
                contenders["before"].append(seconds)
            fresh(admin, "history")
            seconds, backups["after"] = polyshift_up(sys.executable, root)
            contenders["after"].append(seconds)
            shape["polyshift"] = tables_and_rows(url)
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    base = statistics.median(contenders["per-file"])
    lines = [f"{KRATOS.cite()}: {len(files)} PostgreSQL migrations, applied to an empty database.", "",
             "| contender | wall time (median) | ratio | backups taken |", "|---|---:|---:|---:|",
             f"| psql once per file, `-1` (baseline) | {base:.2f} s | 1.00x | - |",
             f"| one psql process, every file | {statistics.median(contenders['once']):.2f} s | "
             f"{statistics.median(contenders['once']) / base:.2f}x | - |"]
    if args.before:
        before = statistics.median(contenders["before"])
        lines.append(f"| `polyshift up`, before (`{args.before}`) | {before:.2f} s | {before / base:.2f}x | {backups['before']} |")
    after = statistics.median(contenders["after"])
    lines.append(f"| `polyshift up`, this checkout | {after:.2f} s | {after / base:.2f}x | {backups['after']} |")
    lines += ["", f"After psql: {shape['psql'][0]} tables, {shape['psql'][1]} rows; after `polyshift up`: "
              f"{shape['polyshift'][0]} tables, {shape['polyshift'][1]} rows (its own ledger schema left out)."]
    table = "\n".join(lines)
    print(table)
    if write:
        write_results(write, "A long real history on an empty database: polyshift up vs psql", "make bench",
                      table, suffix=f" ({args.repeat} runs each, same PostgreSQL 18, same run)")


if __name__ == "__main__":
    main()
