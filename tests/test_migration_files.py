"""Migration files as found on disk: encodings, a byte-order mark, and empty steps. A file that
cannot be a migration is refused at load (exit 2) naming it, before any store changes; a step
that is empty on purpose says so with '-- polyshift: noop'."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import GraphWorkspace, Workspace


def _nothing_ran(ws: Workspace) -> None:
    assert ws.value("SELECT to_regclass('t')") is None
    assert ws.value("SELECT to_regclass('_polyshift.schema_history')") is None


# -- encodings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("step", ["forward", "rollback", "validate"])
def test_a_script_that_is_not_utf8_is_named(ws: Workspace, step: str) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;", "SELECT true;")
    path = ws.migrations / "main" / f"0001_t.{step}.sql"
    path.write_bytes(b"-- caf\xe9\n" + path.read_bytes())  # Latin-1, as an old editor saves it
    for command in ("plan", "up"):
        result = ws.run(command)
        assert result.exit_code == 2, result.output
        assert f"main/0001_t.{step}.sql" in result.stderr and "UTF-8" in result.stderr
        assert "unexpected" not in result.stderr
    _nothing_ran(ws)


def test_a_config_file_that_is_not_utf8_is_named(ws: Workspace) -> None:
    ws.config.write_bytes(ws.config.read_bytes().replace(b"[project]", b"# r\xe9glages\n[project]"))
    result = ws.run("status")
    assert result.exit_code == 2, result.output
    assert "polyshift.toml" in result.stderr and "UTF-8" in result.stderr


def test_a_byte_order_mark_is_accepted_and_the_checksum_stays_the_files(ws: Workspace) -> None:
    from polyshift.framework.core.loader import checksum

    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;", "SELECT count(*) = 0 FROM t;")
    for step in ("forward", "rollback", "validate"):
        path = ws.migrations / "main" / f"0001_t.{step}.sql"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (ws.migrations / "releases.toml").write_bytes(b'\xef\xbb\xbf[release."0001"]\nstages = [100]\n')
    result = ws.run("up")
    assert result.exit_code == 0, result.output
    assert ws.value("SELECT to_regclass('t')") == "t"
    # The checksum is over the bytes on disk, as before byte-order marks were accepted.
    files = [(s, (ws.migrations / "main" / f"0001_t.{s}.sql").read_bytes()) for s in ("forward", "rollback", "validate")]
    assert ws.value("SELECT checksum FROM _polyshift.schema_history") == checksum(files)
    status = json.loads(ws.run("status", "--json").stdout)[0]
    assert (status["current"], status["drift"], status["pending"]) == ("0001", [], [])
    assert ws.run("validate").exit_code == 0
    assert ws.run("rollback").exit_code == 0
    assert ws.value("SELECT to_regclass('t')") is None


# -- empty steps ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("forward", "rollback", "empty"), [
    ("", "DROP TABLE IF EXISTS t;", "forward"),
    ("-- only a comment\n\n", "DROP TABLE IF EXISTS t;", "forward"),
    ("/* a /* nested */ comment */ ;\n", "DROP TABLE IF EXISTS t;", "forward"),
    ("CREATE TABLE t (id int);", "-- TODO write the rollback\n", "rollback"),
    ("CREATE TABLE t (id int);", "  ;\n;", "rollback"),
])
def test_an_empty_or_comment_only_step_is_refused_at_load(ws: Workspace, forward: str, rollback: str, empty: str) -> None:
    ws.migration("0001_t", forward, rollback)
    for command in ("plan", "up"):
        result = ws.run(command)
        assert result.exit_code == 2, result.output
        assert f"main/0001_t.{empty}.sql" in result.stderr and "no statements" in result.stderr
        assert "polyshift: noop" in result.stderr
    _nothing_ran(ws)


def test_a_scaffolded_migration_must_be_filled_in_before_it_runs(ws: Workspace) -> None:
    assert ws.run("new", "main", "add_t").exit_code == 0
    result = ws.run("up")
    assert result.exit_code == 2, result.output
    assert "0001_add_t.forward.sql" in result.stderr and "no statements" in result.stderr
    _nothing_ran(ws)


def test_a_step_marked_noop_is_applied_and_rolled_back_as_empty(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    ws.migration("0002_imported", "-- polyshift: noop\n-- applied by hand in 2019, recorded here\n",
                 "-- polyshift: noop\n")
    result = ws.run("up")
    assert result.exit_code == 0, result.output
    assert ws.ledger() == [("0001", "up"), ("0002", "up")]
    assert ws.run("rollback").exit_code == 0
    assert ws.ledger() == [("0001", "up"), ("0002", "up"), ("0002", "down")]
    assert ws.value("SELECT to_regclass('t')") == "t"


def test_a_step_marked_noop_that_has_statements_is_refused(ws: Workspace) -> None:
    ws.migration("0001_t", "-- polyshift: noop\nCREATE TABLE t (id int);", "DROP TABLE t;")
    result = ws.run("up")
    assert result.exit_code == 2, result.output
    assert "0001_t.forward.sql" in result.stderr and "noop" in result.stderr
    _nothing_ran(ws)


def test_an_empty_validate_script_means_no_checks(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;", "-- checks come later\n")
    result = ws.run("up")
    assert result.exit_code == 0, result.output
    assert ws.value("SELECT to_regclass('t')") == "t"
    assert ws.run("validate").exit_code == 0


# -- the same rules for Cypher --------------------------------------------------------------------
@pytest.fixture
def graph(tmp_path: Any, falkordb_server: Any, state_url: str) -> Any:
    project = GraphWorkspace(tmp_path, "falkordb", falkordb_server.url, state_url=state_url)
    yield project
    project.close()


def test_a_comment_only_cypher_step_is_refused_at_load(graph: GraphWorkspace) -> None:
    graph.migration("0001_topics", "CREATE (:Topic {name: 'a'});", "// nothing to undo, surely\n")
    result = graph.run("up")
    assert result.exit_code == 2, result.output
    assert "graph/0001_topics.rollback.cypher" in result.stderr and "// polyshift: noop" in result.stderr
    assert graph.q("MATCH (t:Topic) RETURN count(t)") == [[0]]


def test_a_cypher_step_marked_noop_is_applied(graph: GraphWorkspace) -> None:
    graph.migration("0001_imported", "// polyshift: noop\n", "// polyshift: noop\n")
    result = graph.run("up")
    assert result.exit_code == 0, result.output
    history = json.loads(graph.run("history", "--json").stdout)
    assert [(h["version"], h["direction"]) for h in history] == [("0001", "up")]


def test_marking_an_applied_empty_step_noop_is_not_drift(ws: Workspace) -> None:
    from polyshift.framework.core.loader import checksum

    forward, rollback = b"CREATE TABLE t (id int);\n", b"-- nothing to undo\n"
    # What an earlier version recorded when it applied this migration with its empty rollback.
    recorded = checksum([("forward", forward), ("rollback", rollback)])
    (ws.migrations / "main" / "0001_t.forward.sql").write_bytes(forward)
    (ws.migrations / "main" / "0001_t.rollback.sql").write_bytes(rollback)
    assert ws.run("status").exit_code == 2  # refused until the empty step says it is meant
    (ws.migrations / "main" / "0001_t.rollback.sql").write_bytes(b"-- polyshift: noop\n" + rollback)
    assert ws.run("up").exit_code == 0
    assert ws.value("SELECT checksum FROM _polyshift.schema_history") == recorded
