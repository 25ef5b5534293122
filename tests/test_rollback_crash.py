"""Crash safety of `rollback` and `backup restore`: a run killed with SIGKILL is journaled like a
release, `status` and `up` name the store as mid-rollback or mid-restore, and `recover` finishes
or undoes what was interrupted, checked by fingerprints of everything in scope."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path
from typing import Any

from polyshift.framework.core.lifecycle import Phase, RunCommand, Step
from tests.conftest import RedisWorkspace, Workspace
from tests.test_up_failures import ORDERS


def _journal(project: Any) -> list[tuple[str, str, str | None, str]]:
    rows: list[tuple[str, str, str | None, str]] = project.state_sql(
        "SELECT j.step, j.phase, j.store, r.command FROM polyshift_journal j JOIN polyshift_runs r ON r.id = j.run_id ORDER BY j.id")
    return rows


def _killed(project: Any, *args: str, failpoint: str | None = None) -> None:
    runner = project.spawn(*args, env={"POLYSHIFT_FAILPOINT": failpoint} if failpoint else None)
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == -signal.SIGKILL, f"{failpoint}: the run was not killed: {out}{err}"


def _interrupted(project: Any) -> str | None:
    interrupted: str | None = json.loads(project.run("status", "--json").stdout)[0]["interrupted"]
    return interrupted


# -- PostgreSQL: rollback --to killed at every journal write -----------------------------------------
def _three_releases(ws: Workspace) -> None:
    ws.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    ws.migration("0002_region", "ALTER TABLE orders ADD COLUMN region text; UPDATE orders SET region = 'eu';",
                 "ALTER TABLE orders DROP COLUMN region;")
    ws.migration("0003_shipments", "CREATE TABLE shipments AS SELECT id, id * 2 AS weight FROM orders;",
                 "DROP TABLE shipments;")


def _pg_state(ws: Workspace) -> tuple[Any, list[str]]:
    return ws.fingerprint("orders", "shipments"), json.loads(ws.run("status", "--json").stdout)[0]["applied"]


def test_kill_9_at_every_journal_step_of_a_rollback_then_recover_leaves_each_migration_rolled_back_or_not(ws: Workspace) -> None:
    _three_releases(ws)
    assert ws.run("up").exit_code == 0
    all_applied = _pg_state(ws)
    assert ws.run("rollback").exit_code == 0
    third_back = _pg_state(ws)
    assert ws.run("rollback").exit_code == 0
    both_back = _pg_state(ws)
    assert ws.run("up").exit_code == 0
    assert _pg_state(ws) == all_applied
    learned = len(_journal(ws))
    assert ws.run("rollback", "--to", "0001").exit_code == 0
    writes = len(_journal(ws)) - learned
    assert writes >= 5  # the locks, then intent and done for each of the two migrations
    assert ws.run("up").exit_code == 0
    ends = set()
    for n in range(1, writes + 1):
        _killed(ws, "rollback", "--to", "0001", failpoint=f"journal:{n}")
        assert _interrupted(ws), n
        blocked = ws.run("up")
        assert blocked.exit_code == 2 and "mid-rollback" in blocked.stderr, (n, blocked.output)
        result = ws.run("recover")
        assert result.exit_code in (0, 3), (n, result.output)
        state = _pg_state(ws)
        assert state in (all_applied, third_back, both_back), (n, state)
        ends.add(len(state[1]))
        assert _interrupted(ws) is None
        assert ws.run("recover").stdout.strip() == "nothing to recover: every run finished"
        assert ws.run("up").exit_code == 0
    assert ends == {1, 2, 3}


# -- Redis: a rollback step killed half-way ---------------------------------------------------------
REKEY = """
    import os, signal
    BACKUP = ["session:*", "sess:v2:*"]

    def forward(ctx):
        ctx.helpers.rename_prefix("session:", "sess:v2:")

    def rollback(ctx):
        for i, key in enumerate(sorted(ctx.client.scan_iter(match="sess:v2:*", count=1000))):
            if i == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
            ctx.client.rename(key, b"session:" + key[len(b"sess:v2:"):])
"""


def _redis(tmp_path: Path, redis_server: Any, state_url: str) -> RedisWorkspace:
    rws = RedisWorkspace(tmp_path, redis_server, extra='lock_ttl = "1s"\n', state_url=state_url)
    rws.r.mset({f"session:{i}": f"user {i}" for i in range(1000)})
    return rws


def test_a_rollback_step_killed_half_way_is_reported_and_recover_restores_the_backup(tmp_path: Path, redis_server: Any,
                                                                                     state_url: str) -> None:
    rws = _redis(tmp_path, redis_server, state_url)
    rws.python_migration("0001_rekey", textwrap.dedent(REKEY).replace("{kill_at}", "500"))
    assert rws.run("up").exit_code == 0
    forwarded = rws.fingerprint("session:*", "sess:v2:*")
    _killed(rws, "rollback")
    assert rws.fingerprint("session:*").counts == {"session:*": 500}  # half of the keys moved back
    assert "mid-rollback" in (_interrupted(rws) or "")
    blocked = rws.run("up")
    assert blocked.exit_code == 2 and "mid-rollback" in blocked.stderr and "polyshift recover" in blocked.stderr
    result = rws.run("recover")
    assert result.exit_code == 3, result.output
    assert "restored backup" in result.stderr and "0001" in result.stderr
    assert rws.fingerprint("session:*", "sess:v2:*") == forwarded
    assert json.loads(rws.run("status", "--json").stdout)[0]["applied"] == ["0001"]
    assert _interrupted(rws) is None
    assert rws.run("recover").stdout.strip() == "nothing to recover: every run finished"


def test_a_rollback_refused_after_an_interrupted_rollback_until_recover_ran(tmp_path: Path, redis_server: Any,
                                                                            state_url: str) -> None:
    rws = _redis(tmp_path, redis_server, state_url)
    rws.python_migration("0001_rekey", textwrap.dedent(REKEY).replace("{kill_at}", "500"))
    assert rws.run("up").exit_code == 0
    _killed(rws, "rollback")
    again = rws.run("rollback")
    assert again.exit_code == 2, again.output
    assert "mid-rollback" in again.stderr and "polyshift recover" in again.stderr
    assert rws.fingerprint("session:*").counts == {"session:*": 500}


# -- Redis: a restore killed half-way ---------------------------------------------------------------
def test_a_restore_killed_half_way_is_reported_and_recover_finishes_it(tmp_path: Path, redis_server: Any,
                                                                       state_url: str) -> None:
    rws = _redis(tmp_path, redis_server, state_url)
    rws.r.mset({f"session:{i}": f"user {i}" for i in range(1000, 3500)})
    backed_up = rws.fingerprint("session:*")
    backup = json.loads(rws.run("backup", "create", "cache", "--scope", "session:*", "--json").stdout)["id"]
    rws.r.mset({f"session:{i}": "logged out" for i in range(3500)})
    changed = rws.fingerprint("session:*")
    _killed(rws, "backup", "restore", backup, "--yes", failpoint="restore-batch:2")
    half = rws.fingerprint("session:*")
    assert half not in (backed_up, changed)
    assert "mid-restore" in (_interrupted(rws) or "")
    blocked = rws.run("backup", "restore", backup, "--yes")
    assert blocked.exit_code == 2 and "mid-restore" in blocked.stderr
    result = rws.run("recover")
    assert result.exit_code == 0, result.output
    assert backup in result.stdout
    assert rws.fingerprint("session:*") == backed_up
    assert list(rws.r.scan_iter(match="polyshift:restore:*")) == []  # no marker left behind
    assert _interrupted(rws) is None


# -- PostgreSQL: backup restore killed at every journal write ---------------------------------------
def test_kill_9_at_every_journal_step_of_a_restore_then_recover_leaves_the_backup_restored_or_nothing_changed(ws: Workspace) -> None:
    ws.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    assert ws.run("up").exit_code == 0
    backed_up = ws.fingerprint("orders")
    backup = json.loads(ws.run("backup", "create", "main", "--scope", "orders", "--json").stdout)["id"]
    ws.sql("DELETE FROM orders WHERE id > 100")
    changed = ws.fingerprint("orders")
    learned = len(_journal(ws))
    assert ws.run("backup", "restore", backup, "--yes").exit_code == 0
    writes = len(_journal(ws)) - learned
    assert writes >= 3  # the lock, then the restore's intent and done
    ends = set()
    for n in range(1, writes + 1):
        ws.sql("DELETE FROM orders WHERE id > 100")
        _killed(ws, "backup", "restore", backup, "--yes", failpoint=f"journal:{n}")
        assert "mid-restore" in (_interrupted(ws) or ""), n
        result = ws.run("recover")
        assert result.exit_code == 0, (n, result.output)
        state = ws.fingerprint("orders")
        assert state in (backed_up, changed), n
        ends.add("restored" if state == backed_up else "unchanged")
        assert _interrupted(ws) is None
    assert ends == {"restored", "unchanged"}


def test_emergency_rollback_refuses_while_a_restore_did_not_finish(ws: Workspace) -> None:
    ws.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    assert ws.run("up").exit_code == 0
    backup = json.loads(ws.run("backup", "create", "main", "--scope", "orders", "--json").stdout)["id"]
    _killed(ws, "backup", "restore", backup, "--yes", failpoint="journal:2")  # right after the restore's intent
    result = ws.run("emergency-rollback", "0001")
    assert result.exit_code == 2, result.output
    assert "mid-restore" in result.stderr and "polyshift recover" in result.stderr
    assert ws.ledger() == [("0001", "up")]
    assert ws.run("recover").exit_code == 0
    assert ws.run("emergency-rollback", "0001").exit_code == 0
    assert ws.ledger() == [("0001", "up"), ("0001", "down")]


def test_a_rollback_killed_under_an_older_polyshift_is_closed_by_recover_and_reported_unverified(ws: Workspace) -> None:
    import subprocess
    import sys

    from polyshift.framework.control.state import ControlPlane
    from polyshift.framework.core.config import load_config

    ws.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    assert ws.run("up").exit_code == 0
    # What an older polyshift left behind: a rollback run whose process is gone, and an intent
    # journaled without the fingerprint this version records with it.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    plane = ControlPlane(load_config(ws.config).state_url)
    try:
        run_id = plane.start_run(RunCommand.ROLLBACK, {"stores": ["main"]})
        plane.journal(run_id, Step.ROLLBACK, Phase.INTENT, store="main", version="0001")
    finally:
        plane.close()  # on PostgreSQL, its run lock goes with it
    ws.state_sql("UPDATE polyshift_runs SET pid = :pid WHERE id = :id", pid=int(dead.stdout), id=run_id)
    assert "mid-rollback" in (_interrupted(ws) or "")
    result = ws.run("recover")
    assert result.exit_code == 4, result.output
    assert "without a fingerprint" in result.stderr and "still applied" in result.stderr
    assert _interrupted(ws) is None
    assert ws.run("up").exit_code == 0
