"""Which runner did it: every run, journal entry, audit entry and lock holder names the host, the
process and the CI job, so an operator can tell which pipeline holds a lock or left a run
unfinished; ``polyshift status`` shows it."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from polyshift.framework.control.identity import CI_JOB_VARIABLES, ci_job
from tests.conftest import Workspace

GITHUB = {"GITHUB_RUN_ID": "987654", "GITHUB_RUN_ATTEMPT": "2", "GITHUB_JOB": "deploy"}


@pytest.fixture(autouse=True)
def _outside_any_ci_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets name a job, even when the suite itself runs in CI."""
    for variable, _, detail in CI_JOB_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        if detail:
            monkeypatch.delenv(detail, raising=False)
    monkeypatch.delenv("GITHUB_RUN_ATTEMPT", raising=False)


@pytest.mark.parametrize(("environ", "expected"), [
    (GITHUB, "github-actions 987654/2 (deploy)"),
    ({"CI_JOB_ID": "4242", "CI_PROJECT_PATH": "team/app"}, "gitlab 4242 (team/app)"),
    ({"BUILDKITE_JOB_ID": "0190-ab", "BUILDKITE_PIPELINE_SLUG": "deploy"}, "buildkite 0190-ab (deploy)"),
    ({"POLYSHIFT_CI_JOB": "nightly-17", "GITHUB_RUN_ID": "1"}, "ci nightly-17"),
    ({"PATH": "/usr/bin"}, None),
])
def test_the_ci_job_is_read_from_the_ci_systems_own_variables(environ: dict[str, str], expected: str | None) -> None:
    assert ci_job(environ) == expected


def _slow_release(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);", "DROP TABLE t;")
    ws.migration("0002_slow", "SELECT pg_sleep(4); INSERT INTO t VALUES (2);", "DELETE FROM t WHERE id = 2;")


def test_runs_journal_and_audit_entries_name_the_runner_with_its_ci_job(ws: Workspace) -> None:
    _slow_release(ws)
    proc = ws.spawn("up", env=GITHUB)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    label = f"{socket.gethostname()} pid={proc.pid}, github-actions 987654/2 (deploy)"
    assert ws.state_sql("SELECT runner FROM polyshift_runs") == [(label,)]
    assert {r for (r,) in ws.state_sql("SELECT DISTINCT runner FROM polyshift_journal")} == {label}
    entries = json.loads(ws.run("audit", "--json").stdout)
    assert entries and {e["runner"] for e in entries} == {label}
    assert ws.run("audit", "--verify").exit_code == 0  # the runner is covered by each entry's hash


def _holding_the_lock(ws: Workspace, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = ws.spawn("up", env=env)
    deadline = time.monotonic() + 60
    while not ws.value("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(4)%' AND state = 'active'"):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    return proc


def test_status_names_the_runner_holding_a_stores_lock(ws: Workspace) -> None:
    _slow_release(ws)
    proc = _holding_the_lock(ws, {"CI_JOB_ID": "4242", "CI_PROJECT_PATH": "team/app"})
    try:
        shown = ws.run("status")
        listed = json.loads(ws.run("status", "--json").stdout)
    finally:
        proc.communicate(timeout=120)
    holder = f"{socket.gethostname()} pid={proc.pid}, gitlab 4242 (team/app)"
    assert f"main is locked by {holder}" in shown.stderr
    assert listed[0]["locked_by"].startswith(holder)
    assert json.loads(ws.run("status", "--json").stdout)[0]["locked_by"] is None  # let go when it finished


def test_a_second_runner_refused_a_lock_is_told_which_ci_job_holds_it(ws: Workspace) -> None:
    _slow_release(ws)
    proc = _holding_the_lock(ws, {"BUILDKITE_JOB_ID": "0190-ab", "BUILDKITE_PIPELINE_SLUG": "deploy"})
    try:
        second = ws.run("up")
    finally:
        proc.communicate(timeout=120)
    assert second.exit_code == 2, second.output
    assert "locked by" in second.stderr and "buildkite 0190-ab (deploy)" in second.stderr


def test_status_names_the_runner_of_an_unfinished_run(ws: Workspace) -> None:
    _slow_release(ws)
    proc = ws.spawn("up", env={"POLYSHIFT_FAILPOINT": "journal:6", "POLYSHIFT_CI_JOB": "nightly-17"})
    assert proc.wait(timeout=120) == -9
    shown = ws.run("status")
    assert "did not finish" in shown.stderr
    assert f"{socket.gethostname()} pid={proc.pid}, ci nightly-17" in shown.stderr
