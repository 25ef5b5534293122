"""polyshift's own files: an unusable backups directory is a clean refusal (exit 2, nothing left
half-applied), a killed backup's partial directory is cleaned by the next backup (never a sealed
one, never one still being written), and the control plane and events log are private."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, Workspace


def _with_rows(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 50);", "DROP TABLE t;")
    assert ws.run("up").exit_code == 0


def _backups_under_a_file(ws: Workspace) -> Path:
    blocker = ws.root / "blocker"
    blocker.write_text("a file where the backups directory should be\n")
    ws.config.write_text(ws.config.read_text().replace('backups = ".polyshift/backups"', 'backups = "blocker/backups"'))
    return blocker / "backups"


def _nothing_unfinished(ws: Workspace) -> None:
    result = ws.run("recover")
    assert result.exit_code == 0, result.output
    assert "nothing to recover" in result.stdout


def test_up_with_an_unusable_backups_directory_is_refused_before_anything_runs(ws: Workspace) -> None:
    _with_rows(ws)
    ws.migration("0002_purge", "DELETE FROM t WHERE id > 10;", "SELECT 1;")
    where = _backups_under_a_file(ws)
    result = ws.run("up")
    assert result.exit_code == 2, result.output
    assert str(where) in result.stderr and "unexpected" not in result.stderr
    assert ws.value("SELECT count(*) FROM t") == 50
    _nothing_unfinished(ws)


def test_rollback_with_an_unusable_backups_directory_changes_nothing(ws: Workspace) -> None:
    _with_rows(ws)
    where = _backups_under_a_file(ws)
    result = ws.run("rollback")
    assert result.exit_code == 2, result.output
    assert str(where) in result.stderr and "unexpected" not in result.stderr
    assert ws.value("SELECT count(*) FROM t") == 50
    assert ws.ledger() == [("0001", "up")]
    _nothing_unfinished(ws)


def test_backup_create_with_an_unusable_backups_directory_is_named(ws: Workspace) -> None:
    _with_rows(ws)
    where = _backups_under_a_file(ws)
    result = ws.run("backup", "create", "main", "--scope", "t")
    assert result.exit_code == 2, result.output
    assert str(where) in result.stderr


# -- partial backups ------------------------------------------------------------------------------
_WRITER = """\
import os, signal, sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from polyshift.framework.control.localstore import LocalArtifactStore
writer = LocalArtifactStore(Path({root!r})).new_writer(store="main", kind="postgres", version=None, scope=("t",), reason="test")
writer.write_bytes("rows.copy.zst", b"half a backup")
print(writer.directory, flush=True)
if {die}:
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(120)
"""


def _writer(root: Path, *, die: bool) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER.format(repo=str(REPO), root=str(root), die=die)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    directory = Path(proc.stdout.readline().strip())
    assert directory.is_dir()
    return proc, directory


def test_a_killed_backups_partial_directory_is_removed_by_the_next_backup(ws: Workspace) -> None:
    _with_rows(ws)
    sealed = ws.run("backup", "create", "main", "--scope", "t", "--json")
    assert sealed.exit_code == 0, sealed.output
    root = ws.root / ".polyshift" / "backups"
    killed, partial = _writer(root, die=True)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    live, writing = _writer(root, die=False)
    try:
        again = ws.run("backup", "create", "main", "--scope", "t", "--json")
        assert again.exit_code == 0, again.output
        assert not partial.exists()                   # its writer is dead
        assert writing.is_dir()                       # its writer is still at work
        assert len(ws.backups()) == 2                 # the sealed ones, untouched
        for b in ws.backups():
            assert ws.run("backup", "verify", b["id"]).exit_code == 0
    finally:
        live.kill()
        live.wait()


def test_a_partial_backup_is_not_listed_as_a_backup(ws: Workspace) -> None:
    _with_rows(ws)
    root = ws.root / ".polyshift" / "backups"
    killed, _partial = _writer(root, die=True)
    killed.wait()
    assert ws.backups() == []


# -- permissions ------------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.sqlite_state
def test_the_state_database_and_events_log_are_private(ws: Workspace) -> None:
    old = os.umask(0o022)
    try:
        _with_rows(ws)
        state, events = ws.root / ".polyshift" / "state.db", ws.root / ".polyshift" / "events.jsonl"
        assert events.exists()
        assert (_mode(state), _mode(events), _mode(ws.root / ".polyshift")) == (0o600, 0o600, 0o700)
        # Files an earlier version left readable by everyone are tightened on the next run.
        state.chmod(0o644)
        events.chmod(0o644)
        ws.migration("0002_u", "CREATE TABLE u (id int);", "DROP TABLE u;")
        assert ws.run("up").exit_code == 0
        assert (_mode(state), _mode(events)) == (0o600, 0o600)
    finally:
        os.umask(old)


@pytest.mark.sqlite_state
def test_a_state_database_in_a_directory_of_the_users_keeps_that_directorys_mode(ws: Workspace) -> None:
    shared = ws.root / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    ws.config.write_text(ws.config.read_text().replace("sqlite:///.polyshift/state.db", "sqlite:///shared/state.db"))
    _with_rows(ws)
    assert _mode(shared / "state.db") == 0o600
    assert _mode(shared) == 0o755  # not polyshift's to change

