"""A python gate is the project's own code: one process that runs several projects (the Python
API, a test suite) runs each project's gate module, never another project's module of the same
name imported earlier."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Workspace


def _project(root: Path, database: str, state_url: str, verdict: str) -> Workspace:
    root.mkdir()
    ws = Workspace(root, database, state_url)
    ws.sql("CREATE TABLE users (id int PRIMARY KEY, name text); INSERT INTO users VALUES (1, 'ada')")
    (ws.root / "health.py").write_text(f"def check(ctx):\n    return {verdict}, 'said {verdict}'\n")
    (ws.migrations / "releases.toml").write_text(
        '[release."0001"]\nflag = "names_v2"\nstages = [100]\nbake_seconds = 0\n'
        'gates = [{ kind = "python", callable = "health:check" }]\n')
    ws.migration("0001_names", "UPDATE users SET name = upper(name);", "UPDATE users SET name = lower(name);")
    return ws


def test_each_project_in_one_process_runs_its_own_gate_module(
        tmp_path: Path, database: str, second_database: str, state_url: str) -> None:
    passing = _project(tmp_path / "a", database, state_url, "True")
    assert passing.run("up").exit_code == 0
    failing = _project(tmp_path / "b", second_database, "sqlite:///.polyshift/state.db", "False")
    result = failing.run("up")
    assert result.exit_code == 3, result.output
    assert "said False" in result.stderr
    assert failing.value("SELECT name FROM users") == "ada"  # undone

