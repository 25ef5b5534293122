"""The control plane shared by many runners: a PostgreSQL database that several processes use at
once from its very first use. Every concurrency test here runs real processes that start their
work together (a file barrier), never threads of one process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Server, _fresh_database

WORKERS = 4


@pytest.fixture
def pg_state(pg_server: Server) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for a control plane, as SQLAlchemy's URL."""
    for url in _fresh_database(pg_server):
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)


def _together(tmp_path: Path, role: str, url: str, *args: str, workers: int = WORKERS) -> list[dict[str, Any]]:
    """``workers`` processes of tests/cp_worker.py that begin ``role`` at the same moment; their results."""
    barrier = tmp_path / f"barrier-{role}-{time.monotonic_ns()}"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-m", "tests.cp_worker", role, url, str(barrier), *args],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    deadline = time.monotonic() + 120
    while len(list(barrier.glob("ready-*"))) < workers:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.02)
    (barrier / "go").touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        lines = out.strip().splitlines()
        results.append(json.loads(lines[-1]) if lines else {"error": err.strip().splitlines()[-1:]})
    return results


def test_many_runners_using_a_fresh_postgresql_control_plane_at_once_all_succeed(tmp_path: Path, pg_server: Server) -> None:
    # The issue's failure: CREATE TABLE racing on pg_type ("duplicate key value violates unique
    # constraint pg_type_typname_nsp_index"). A fresh database per round, every worker at once.
    for _round in range(3):
        for url in _fresh_database(pg_server):
            url = url.replace("postgresql://", "postgresql+psycopg://", 1)
            results = _together(tmp_path, "first-use", url)
            assert [r["error"] for r in results if "error" in r] == []
            assert len({r["run"] for r in results}) == WORKERS


def test_audit_appends_from_many_processes_at_once_stay_one_chain(tmp_path: Path, pg_state: str) -> None:
    from polyshift.framework.control.state import ControlPlane

    plane = ControlPlane(pg_state)
    results = _together(tmp_path, "audit", pg_state, "25")
    assert [r.get("error") for r in results] == [None] * WORKERS
    seqs = sorted(s for r in results for s in r["seqs"])
    assert seqs == list(range(1, 25 * WORKERS + 1))
    assert plane.verify_audit() == 25 * WORKERS


def test_racing_recovers_claim_a_dead_run_exactly_once(tmp_path: Path, pg_state: str) -> None:
    from polyshift.framework.control.state import ControlPlane
    from polyshift.framework.core.lifecycle import RunCommand

    plane = ControlPlane(pg_state)
    run_id = plane.start_run(RunCommand.UP)
    plane.close()  # its process is gone as far as the run lock goes; the pid is this test's, so: another host
    with plane.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE polyshift_runs SET host = 'gone-machine', pid = 1")
    results = _together(tmp_path, "claim", pg_state, run_id)
    assert sorted(r["claimed"] for r in results) == [False] * (WORKERS - 1) + [True]


def test_concurrent_flag_changes_from_many_processes_lose_no_update(tmp_path: Path, pg_state: str) -> None:
    from polyshift.feature_flags.model import Flag
    from polyshift.feature_flags.sql_store import SqlFlagStore

    store = SqlFlagStore(pg_state)
    store.save(Flag(name="shared", enabled=True, version=1), expected_version=None)
    version_before = store.version()
    results = _together(tmp_path, "flag-increment", pg_state, "20")
    assert [r.get("error") for r in results] == [None] * WORKERS
    shared = store.get("shared")
    assert shared is not None and shared.percent == 20 * WORKERS and shared.version == 1 + 20 * WORKERS
    assert store.version() == version_before + 20 * WORKERS


def test_the_first_flags_created_at_once_on_a_fresh_control_plane_are_all_kept(tmp_path: Path, pg_state: str) -> None:
    from polyshift.feature_flags.sql_store import SqlFlagStore

    results = _together(tmp_path, "flag-create", pg_state)
    assert [r.get("created") for r in results] == [True] * WORKERS
    version, found = SqlFlagStore(pg_state).load()
    assert len(found) == WORKERS and version == WORKERS


def test_a_run_driven_from_another_host_is_alive_while_its_process_holds_the_run_lock(pg_state: str) -> None:
    import os
    import signal

    from polyshift.framework.control.state import ControlPlane

    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import sys, time
        from polyshift.framework.control.state import ControlPlane
        from polyshift.framework.core.lifecycle import RunCommand
        plane = ControlPlane({pg_state!r})
        print(plane.start_run(RunCommand.UP), flush=True)
        time.sleep(600)
        """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert driver.stdout is not None
    run_id = driver.stdout.readline().strip()
    plane = ControlPlane(pg_state)
    with plane.engine.begin() as conn:  # as if it ran on another machine: its pid says nothing here
        conn.exec_driver_sql("UPDATE polyshift_runs SET host = 'ci-runner-7'")
    run = plane.unfinished_runs()[0]
    assert run["id"] == run_id and plane.run_is_alive(run)
    assert not plane.claim_run(run)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    deadline = time.monotonic() + 30
    while plane.run_is_alive(run):  # the server ends the dead session and its lock with it
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert plane.claim_run(run)


# -- the control plane's own schema version ------------------------------------------------------
def _written_before_versioning(url: str) -> None:
    """The tables as a polyshift from before schema versioning created them, with one run and one
    audit entry hashed the way it hashed them."""
    import sqlalchemy as sa

    from polyshift.framework.control import schema
    from polyshift.framework.control.state import _entry_hash, driver_url

    old = sa.MetaData()
    for table in schema.metadata.sorted_tables:
        if table.name != schema.schema_version.name:
            sa.Table(table.name, old, *(c._copy() for c in table.columns if c.name not in ("runner", "manifest_sha256")))
    engine = sa.create_engine(driver_url(url))
    old.create_all(engine)
    entry = {"seq": 1, "at": "2025-01-01T00:00:00.000000+00:00", "actor": "ops@old-box", "action": "migration.applied",
             "subject": "main", "detail": "{}", "prev_hash": "0" * 64}
    with engine.begin() as conn:
        conn.execute(old.tables["polyshift_audit"].insert().values(**entry, hash=_entry_hash(entry)))
        conn.execute(old.tables["polyshift_flags"].insert().values(name="legacy", version=1, data='{"name": "legacy"}'))
        conn.execute(old.tables["polyshift_flags_version"].insert().values(id=1, version=1))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_state"))


def test_a_schema_written_before_versioning_is_upgraded_in_place_keeping_its_history(empty_state: str) -> None:
    import sqlalchemy as sa

    from polyshift.framework.control import keys, schema
    from polyshift.framework.control.state import ControlPlane

    _written_before_versioning(empty_state)
    plane = ControlPlane(empty_state)
    with plane.engine.connect() as conn:
        assert conn.execute(sa.select(schema.schema_version.c.version)).scalar() == keys.SCHEMA_VERSION
        assert {c["name"] for c in sa.inspect(conn).get_columns("polyshift_backups")} >= {"manifest_sha256"}
    appended = plane.audit("test.after_upgrade", "main")
    assert appended.seq == 2 and appended.runner is not None
    assert plane.verify_audit() == 2  # the old entry and the new one, one chain


def test_an_older_polyshift_refuses_a_newer_control_plane_with_exit_2_and_writes_nothing(ws: Any) -> None:
    assert ws.run("status").exit_code == 0
    import sqlalchemy as sa

    from polyshift.framework.control import keys, schema
    from polyshift.framework.core.config import load_config

    url = load_config(ws.config).state_url
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(schema.schema_version.update().values(version=keys.SCHEMA_VERSION + 1, written_by="9.9.0"))
        runs_before = conn.execute(sa.select(sa.func.count()).select_from(schema.runs)).scalar()
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    for command in (["status"], ["up"], ["audit", "--verify"]):
        result = ws.run(*command)
        assert result.exit_code == 2, result.output
        assert f"schema is version {keys.SCHEMA_VERSION + 1} (written by polyshift 9.9.0)" in result.stderr
        assert "upgrade polyshift" in result.stderr
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.runs)).scalar() == runs_before
    assert ws.value("SELECT to_regclass('t')") is None


def test_many_runners_meeting_an_old_schema_at_once_upgrade_it_once(tmp_path: Path, pg_state: str) -> None:
    _written_before_versioning(pg_state)
    results = _together(tmp_path, "first-use", pg_state)
    assert [r.get("error") for r in results] == [None] * WORKERS
    from polyshift.framework.control.state import ControlPlane

    assert ControlPlane(pg_state).verify_audit() == 1 + WORKERS


# -- the read path (the driver itself, without SQLAlchemy) ---------------------------------------
def _end_control_plane_connections(pg_server: Server) -> None:
    """What a server restart or an idle timeout does to the connections a process keeps."""
    import psycopg

    from polyshift.framework.control.database import APPLICATION

    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        ended = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                              (APPLICATION,)).fetchall()
    assert ended and all(row[0] for row in ended)


def test_a_read_after_the_server_ended_the_connection_opens_a_new_one(pg_state: str, pg_server: Server) -> None:
    from polyshift.framework.control.state import ControlPlane
    from polyshift.framework.core.lifecycle import RunCommand

    plane = ControlPlane(pg_state)
    run_id = plane.start_run(RunCommand.UP)
    assert [r["id"] for r in plane.unfinished_runs()] == [run_id]
    _end_control_plane_connections(pg_server)
    assert [r["id"] for r in plane.unfinished_runs()] == [run_id]
    plane.close()


def test_a_write_after_the_server_ended_the_connection_opens_a_new_one_and_lands_once(pg_state: str,
                                                                                       pg_server: Server) -> None:
    from polyshift.framework.control.state import ControlPlane
    from polyshift.framework.core.lifecycle import Phase, RunCommand, Step

    plane = ControlPlane(pg_state)
    run_id = plane.start_run(RunCommand.UP)
    _end_control_plane_connections(pg_server)
    plane.journal(run_id, Step.LOCK, Phase.DONE, store="main")
    assert [(e["step"], e["phase"]) for e in plane.journal_entries(run_id)] == [("lock", "done")]
    plane.close()


def test_reads_of_a_sqlite_control_plane_give_timestamps_as_datetimes(tmp_path: Path) -> None:
    from datetime import datetime

    from polyshift.framework.control.state import ControlPlane
    from polyshift.framework.core.lifecycle import Phase, RunCommand, Step

    plane = ControlPlane(f"sqlite:///{tmp_path / 'state.db'}")
    run_id = plane.start_run(RunCommand.UP, {"stores": ["main"]})
    plane.journal(run_id, Step.LOCK, Phase.DONE, store="main")
    run = plane.unfinished_runs()[0]
    entry = plane.journal_entries(run_id)[0]
    assert isinstance(run["started_at"], datetime) and run["finished_at"] is None
    assert isinstance(entry["at"], datetime) and entry["detail"] == {}
    assert run["detail"] == {"stores": ["main"]}
    plane.close()


def test_a_sqlite_control_plane_is_created_private_by_its_first_open(tmp_path: Path) -> None:
    from polyshift.framework.control.state import ControlPlane

    path = tmp_path / "nested" / "state.db"
    path.parent.mkdir()
    ControlPlane(f"sqlite:///{path}").close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert ControlPlane(f"sqlite:///{path}").verify_audit() == 0  # the second open reads what the first created


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "mysql://app@db/state"])
def test_a_state_url_polyshift_cannot_keep_a_journal_in_is_refused_naming_it(tmp_path: Path, url: str) -> None:
    config = tmp_path / "polyshift.toml"
    config.write_text(f'[project]\nstate_url = "{url}"\n[stores.main]\nkind = "redis"\nurl = "redis://127.0.0.1:1/0"\n')
    result = subprocess.run([sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(config), "status"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"state database {url} is not supported" in result.stderr


def test_a_new_sqlite_control_plane_keeps_its_journal_in_write_ahead_log_mode(tmp_path: Path) -> None:
    import sqlite3

    from polyshift.framework.control.state import ControlPlane

    ControlPlane(f"sqlite:///{tmp_path / 'state.db'}").close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_sqlite_control_plane_created_before_keeps_its_rollback_journal(tmp_path: Path) -> None:
    import sqlite3

    _written_before_versioning(f"sqlite:///{tmp_path / 'state.db'}")
    from polyshift.framework.control.state import ControlPlane

    plane = ControlPlane(f"sqlite:///{tmp_path / 'state.db'}")
    assert plane.verify_audit() == 1
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_many_runners_using_a_fresh_sqlite_control_plane_at_once_all_succeed(tmp_path: Path) -> None:
    # Whoever finds the file empty sets its journal mode; the others must neither fail on that
    # pragma's lock nor on each other's table creation.
    for round_ in range(3):
        url = f"sqlite:///{tmp_path / f'state-{round_}.db'}"
        results = _together(tmp_path, "first-use", url)
        assert [r["error"] for r in results if "error" in r] == []
        assert len({r["run"] for r in results}) == WORKERS
        from polyshift.framework.control.state import ControlPlane

        assert ControlPlane(url).verify_audit() == WORKERS

