"""Locks: two runners never both apply; a held lock is named; lock timeouts are retried."""

from __future__ import annotations

import threading
import time

import psycopg

from tests.conftest import Workspace


def test_two_concurrent_up_processes_never_both_apply(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);", "DROP TABLE t;")
    # A slow migration keeps the first runner inside its lock while the second arrives.
    ws.migration("0002_slow", "SELECT pg_sleep(1.5); INSERT INTO t VALUES (2);", "DELETE FROM t WHERE id = 2;")
    procs = [ws.spawn("up") for _ in range(2)]
    results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:
        loser = next(r for r in results if r[2] == 2)
        assert "locked by another polyshift run" in loser[1]
        assert "pid=" in loser[1]  # names the holder
    assert ws.ledger() == [("0001", "up"), ("0002", "up")]
    assert ws.value("SELECT count(*) FROM t") == 2


def test_lock_held_by_another_runner_exits_2_naming_it_and_changes_nothing(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    from polyshift.adapters.postgres.adapter import PostgresAdapter
    from polyshift.framework.core.config import load_config

    holder = PostgresAdapter(load_config(ws.config).store("main"))
    holder.connect()
    holder.acquire_lock("deploy-bot pid=4242 run=abcd1234", wait=0)
    try:
        result = ws.run("up")
        assert result.exit_code == 2
        assert "deploy-bot pid=4242" in result.stderr
        assert ws.value("SELECT to_regclass('t')") is None
    finally:
        holder.close()
    assert ws.run("up").exit_code == 0  # released when its session ended


def test_lock_timeout_is_retried_until_the_blocker_goes_away(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);", "DROP TABLE t;")
    assert ws.run("up").exit_code == 0
    ws.config.write_text(ws.config.read_text().replace('lock_timeout = "2s"', 'lock_timeout = "100ms"'))
    ws.migration("0002_col", "ALTER TABLE t ADD COLUMN c int;", "ALTER TABLE t DROP COLUMN c;")
    blocker = psycopg.connect(ws.url)
    blocker.execute("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE")  # blocks ALTER TABLE's ACCESS EXCLUSIVE
    release = threading.Timer(1.5, blocker.rollback)
    release.start()
    started = time.monotonic()
    try:
        result = ws.run("up")
    finally:
        release.join()
        blocker.close()
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 1.4  # it waited through several 100 ms lock timeouts
    assert ws.ledger()[-1] == ("0002", "up")


def test_lock_timeout_past_the_retry_deadline_fails_cleanly_with_exit_3(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    assert ws.run("up").exit_code == 0
    text = ws.config.read_text().replace('lock_timeout = "2s"', 'lock_timeout = "100ms"')
    ws.config.write_text(text.replace('retry_deadline = "10s"', 'retry_deadline = "1s"'))
    ws.migration("0002_col", "ALTER TABLE t ADD COLUMN c int;", "ALTER TABLE t DROP COLUMN c;")
    with psycopg.connect(ws.url) as blocker:
        blocker.execute("LOCK TABLE t IN ACCESS SHARE MODE")
        result = ws.run("up")
    assert result.exit_code == 3, result.output
    assert "55P03" in result.stderr  # lock_not_available, after retries
    assert ws.ledger() == [("0001", "up")]


def _running_runs(ws: Workspace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return int(ws.state_sql("SELECT count(*) FROM polyshift_runs WHERE status = 'running'")[0][0])
    except SQLAlchemyError:  # the control plane is not created yet
        return 0


def test_a_runner_that_waited_for_the_lock_refuses_a_release_another_runner_left_unfinished_meanwhile(ws: Workspace) -> None:
    # B passes the unfinished-run check, then waits for the lock; meanwhile another runner (A)
    # began a release and died. Holding the lock at last, B must see A's run, not apply over it.
    import subprocess
    import sys

    from polyshift.adapters.postgres.adapter import PostgresAdapter
    from polyshift.framework.control.state import ControlPlane
    from polyshift.framework.core.config import load_config
    from polyshift.framework.core.lifecycle import Phase, RunCommand, Step

    ws.migration("0001_t", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);", "DROP TABLE t;")
    ws.config.write_text(ws.config.read_text().replace('lock_timeout = "2s"', 'lock_timeout = "2s"\nlock_wait = "60s"'))
    config = load_config(ws.config)
    holder = PostgresAdapter(config.store("main"))
    holder.connect()
    holder.acquire_lock("runner-a pid=1 run=aaaaaaaa", wait=0)
    runner_b = ws.spawn("up")
    try:
        deadline = time.monotonic() + 60
        while not _running_runs(ws):  # B has started its run: it is waiting for the lock
            assert time.monotonic() < deadline and runner_b.poll() is None, runner_b.communicate()
            time.sleep(0.05)
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
        plane = ControlPlane(config.state_url)
        try:
            run_a = plane.start_run(RunCommand.UP, {"stores": ["main"]})
            plane.journal(run_a, Step.RELEASE, Phase.INTENT, version="0001", detail={"stores": ["main"]})
        finally:
            plane.close()
        ws.state_sql("UPDATE polyshift_runs SET pid = :pid WHERE id = :id", pid=int(dead.stdout), id=run_a)
    finally:
        holder.close()  # A's lock goes with it; B gets it
    _, err = runner_b.communicate(timeout=120)
    assert runner_b.returncode == 2, err
    assert "did not finish" in err and "polyshift recover" in err
    assert ws.value("SELECT to_regclass('t')") is None
