"""A sentinel password never appears anywhere polyshift writes: output, logs, --json, audit, state DB, backups."""

from __future__ import annotations

import json
from pathlib import Path

import zstandard

from tests.conftest import Workspace


def _everything_written(root: Path) -> bytes:
    blobs = []
    for path in (root / ".polyshift").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            blobs.append(zstandard.ZstdDecompressor().stream_reader(data).read() if path.suffix == ".zst" else data)
    return b"\n".join(blobs)


def test_sentinel_password_is_never_printed_or_stored(ws: Workspace) -> None:
    assert len(ws.password) >= 8
    ws.migration("0001_t", "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10);", "DROP TABLE t;",
                 "SELECT count(*) = 10 FROM t;")
    ws.migration("0002_drop", "DROP TABLE t;", "CREATE TABLE t (id int);")
    ws.migration("0003_fails", "CREATE TABLE u (id int); SELECT 1/0;", "DROP TABLE u;")
    outputs = []
    for args in (["plan"], ["--json", "plan"], ["up", "--to", "0002"], ["-v", "up"], ["--json", "up"], ["status"],
                 ["status", "--json"], ["history", "--json"], ["validate"], ["backup", "list", "--json"],
                 ["rollback", "--steps", "1"], ["audit", "--json"], ["audit", "--verify"]):
        result = ws.run_process(*args)
        outputs.append(result)
        assert ws.password not in result.stdout, args
        assert ws.password not in result.stderr, args
    assert any(r.exit_code == 3 for r in outputs)  # the failing migration's path was exercised
    backup_id = json.loads(ws.run_process("backup", "list", "--json").stdout)[0]["id"]
    for args in (["backup", "show", backup_id], ["backup", "verify", backup_id], ["backup", "restore", backup_id, "--yes"],
                 ["backup", "create", "main", "--scope", "t", "--json"]):
        result = ws.run_process(*args)
        assert result.exit_code == 0, result.output
        assert ws.password not in result.output, args
    assert ws.password.encode() not in _everything_written(ws.root)


def test_connection_errors_and_inline_urls_are_redacted(ws: Workspace) -> None:
    text = ws.config.read_text()
    # Inline password in the URL (no ${ENV}), and a wrong one so the driver's error path runs.
    ws.config.write_text(text.replace("${TEST_PG_PASSWORD}", ws.password + "-wrong"))
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    for args in (["up"], ["--json", "status"], ["-v", "plan"]):
        result = ws.run_process(*args)
        assert result.exit_code == 2, result.output
        assert "cannot connect" in result.output
        assert ws.password not in result.output, args
    assert ws.password.encode() not in _everything_written(ws.root)


def test_password_key_in_store_table_is_redacted_too(ws: Workspace) -> None:
    text = ws.config.read_text().replace(":${TEST_PG_PASSWORD}@", "@")
    ws.config.write_text(text.replace('kind = "postgres"', 'kind = "postgres"\npassword = "${TEST_PG_PASSWORD}"'))
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    result = ws.run_process("--json", "up")
    assert result.exit_code == 0, result.output
    assert ws.password not in result.output


def test_passwords_in_redis_and_graph_urls_are_never_printed(tmp_path: Path) -> None:
    from tests.conftest import Workspace

    sentinel = "Sentinel-pw-graph-77c1"
    config = tmp_path / "polyshift.toml"
    # Nothing listens on port 1: every command fails to connect, which is the path that prints URLs.
    config.write_text(f"""
[project]
state_url = "sqlite:///.polyshift/state.db"
[stores.cache]
kind = "redis"
url = "redis://:{sentinel}@127.0.0.1:1/0"
[stores.graph]
kind = "neo4j"
url = "bolt://neo4j:{sentinel}@127.0.0.1:1"
[stores.fgraph]
kind = "falkordb"
url = "redis://default:{sentinel}@127.0.0.1:1"
[flags]
store = "redis"
url = "redis://:{sentinel}@127.0.0.1:1/0"
""")
    ws = Workspace.__new__(Workspace)
    ws.root, ws.config = tmp_path, config
    for args in (["status", "--store", "cache"], ["status", "--store", "graph"], ["--json", "status", "--store", "fgraph"],
                 ["-v", "backup", "create", "graph", "--scope", "Doc"], ["flags", "list"], ["--json", "flags", "check", "x"]):
        result = ws.run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert sentinel not in result.output, args
    assert "unreachable" in ws.run("flags", "check", "x").stderr
