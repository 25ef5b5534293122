"""A team's pipeline: four runners, each in its own working directory (standing in for its own
machine), share one PostgreSQL control plane and keep their backups in one S3 bucket. They race
`up` on the four-store release; the one that gets the locks is killed with SIGKILL mid-release and
its directory is deleted (the machine is gone); another runner, from yet another directory, runs
`recover` with nothing but the shared control plane and the bucket. Every store ends all-forward
or all-back, checked by fingerprints of everything the release touches; the audit chain verifies."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import Server, _fresh_database
from tests.release_app import ReleaseApp

RUNNERS = 4

# The cache step changes a value its rollback step does not put back, then moves the keys, then
# lingers: killed there, only the release's backup (in the bucket) brings the cache back.
SLOW_CACHE = '''\
    import pathlib, time
    BACKUP = ['doc:*', 'docs:v2:*']

    def forward(ctx):
        ctx.client.hset('doc:meta', 'version', 2)
        ctx.helpers.rename_prefix('doc:', 'docs:v2:')
        pathlib.Path('forwarding').touch()
        time.sleep(float(__import__('os').environ.get('SLOW_CACHE_SECONDS', '0')))

    def rollback(ctx):
        ctx.helpers.rename_prefix('docs:v2:', 'doc:')
    '''


@pytest.fixture
def team(tmp_path: Path, pg_server: Server, database: str, second_database: str, redis_server: Any,
         falkordb_server: Any, s3_bucket: str) -> Iterator[list[ReleaseApp]]:
    """Four runners' working directories: the same checkout, one control plane, one bucket."""
    databases = _fresh_database(pg_server)
    state = next(databases)
    params = conninfo_to_dict(state)
    state_url = f"postgresql://{params['user']}:${{TEST_PG_PASSWORD}}@{params['host']}:{params['port']}/{params['dbname']}"
    runners = []
    for i in range(RUNNERS):
        (tmp_path / f"runner-{i}").mkdir()
        app = ReleaseApp(tmp_path / f"runner-{i}", database, second_database, redis_server, ("falkordb", falkordb_server.url),
                         bake=2.0, state_url=state_url)
        app.config.write_text(app.config.read_text().replace("[project]\n", f'[project]\nbackups = "s3://{s3_bucket}/pipeline"\n', 1))
        app.python_migration("cache", "0001_rekey_docs", SLOW_CACHE)
        runners.append(app)
    os.environ.update(runners[0].env)
    runners[0].reset()
    yield runners
    next(databases, None)  # drops the control plane's database

def _race(runners: list[ReleaseApp], until: Callable[[], bool], *, cache_seconds: int) -> tuple[int, list[subprocess.Popen[str]]]:
    """Every runner starts ``up`` at once; when ``until`` holds, the runner driving the release is
    killed with SIGKILL. Returns its index and the processes."""
    for r in runners:
        (r.root / "forwarding").unlink(missing_ok=True)
    procs = [r.spawn("up", env={"POLYSHIFT_CI_JOB": f"deploy-{i}", "SLOW_CACHE_SECONDS": str(cache_seconds)})
             for i, r in enumerate(runners)]
    deadline = time.monotonic() + 120
    while not until():
        assert time.monotonic() < deadline, [p.poll() for p in procs]
        time.sleep(0.05)
    driving = runners[0].state_sql(
        "SELECT DISTINCT r.pid FROM polyshift_runs r JOIN polyshift_journal j ON j.run_id = r.id "
        "WHERE r.status = 'running' AND j.step = 'release' AND j.phase = 'intent'")
    pids = {p.pid: i for i, p in enumerate(procs) if p.poll() is None}
    alive = [pid for (pid,) in driving if pid in pids]
    assert len(alive) == 1, (driving, pids)
    os.kill(alive[0], signal.SIGKILL)
    return pids[alive[0]], procs


def _losers_changed_nothing(procs: list[subprocess.Popen[str]], killed: int) -> None:
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=120)
        if i == killed:
            assert proc.returncode == -signal.SIGKILL
            continue
        # Refused at the lock (naming the holder) or, arriving after the kill, at the unfinished run.
        assert proc.returncode == 2, (i, out, err)
        assert "locked by" in err or "did not finish" in err, (i, err)
        assert "deploy-" in err  # the runner in the way, by its CI job


def _green(team: list[ReleaseApp]) -> dict[str, Any]:
    """What all-forward looks like: one undisturbed release, then the stores put back."""
    first = team[0]
    done = first.run("up")
    assert done.exit_code == 0, done.output
    green = first.state()
    first.reset()
    return green


def _recover_elsewhere(team: list[ReleaseApp], killed: int) -> tuple[Any, ReleaseApp]:
    shutil.rmtree(team[killed].root)  # the killed runner's machine is gone, and its disk with it
    other = team[(killed + 1) % RUNNERS]
    assert not (other.root / ".polyshift" / "backups").exists()
    return other.run("recover"), other


def test_four_runners_race_one_is_killed_mid_forward_and_another_undoes_it_from_the_bucket(team: list[ReleaseApp]) -> None:
    blue = team[0].state()
    _green(team)
    killed, procs = _race(team, lambda: any((r.root / "forwarding").exists() for r in team), cache_seconds=60)
    _losers_changed_nothing(procs, killed)
    result, other = _recover_elsewhere(team, killed)
    assert result.exit_code == 3, result.output
    assert f"deploy-{killed}" in result.stderr  # whose run it was
    assert "restored backup" in result.stderr  # the cache came back from the bucket
    assert other.state() == blue
    flag = other.flag()
    assert flag is None or flag.killed
    _chain_and_nothing_left(other)


def test_four_runners_race_one_is_killed_mid_cutover_and_another_finishes_it(team: list[ReleaseApp]) -> None:
    green = _green(team)
    killed, procs = _race(team, lambda: _flag_percent(team[0]) == 50, cache_seconds=0)
    _losers_changed_nothing(procs, killed)
    result, other = _recover_elsewhere(team, killed)
    assert result.exit_code == 0, result.output
    assert "finished the cutover" in result.stdout + result.stderr
    assert other.state() == green
    flag = other.flag()
    assert flag is not None and flag.percent == 100 and not flag.killed
    _chain_and_nothing_left(other)


def _flag_percent(app: ReleaseApp) -> float | None:
    flag = app.flag()
    return None if flag is None else float(flag.percent)


def _chain_and_nothing_left(app: ReleaseApp) -> None:
    verified = app.run("audit", "--verify")
    assert verified.exit_code == 0, verified.output
    assert app.run("recover").stdout.strip() == "nothing to recover: every run finished"
    runners = {r for (r,) in app.state_sql("SELECT DISTINCT runner FROM polyshift_audit")}
    assert len(runners) >= 2  # the killed runner's entries and the recovering runner's, one chain
