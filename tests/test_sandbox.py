"""`polyshift sandbox`: real servers that outlive the command, reachable at the URLs it prints."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import redis

from tests.conftest import REPO


def _cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polyshift.framework.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=180)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sandbox_up_env_down(tmp_path: Path) -> None:
    up = _cli(tmp_path, "--json", "sandbox", "up")
    assert up.returncode == 0, up.stderr
    urls = json.loads(up.stdout)
    try:
        # The command has exited; the servers it started are still serving.
        pgpass = Path(urls["PGPASSFILE"])
        assert oct(pgpass.stat().st_mode & 0o777) == "0o600"
        password = pgpass.read_text().strip().rsplit(":", 1)[1]
        assert password not in up.stdout + up.stderr
        with psycopg.connect(urls["POLYSHIFT_SANDBOX_POSTGRES_URL"], passfile=urls["PGPASSFILE"]) as conn:
            assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone() is not None
        assert redis.Redis.from_url(urls["POLYSHIFT_SANDBOX_REDIS_URL"]).ping()
        graph: Any = redis.Redis.from_url(urls["POLYSHIFT_SANDBOX_FALKORDB_URL"])
        assert graph.execute_command("GRAPH.QUERY", "g", "RETURN 1")
        from neo4j import GraphDatabase

        with GraphDatabase.driver(urls["POLYSHIFT_SANDBOX_NEO4J_URL"], auth=None) as driver, driver.session() as session:
            # Real Neo4j Community, not a stand-in: its own version and edition.
            row = session.run("CALL dbms.components() YIELD versions, edition RETURN versions[0], edition").single()
            assert row is not None
            assert (row[0], row[1]) == (urls["POLYSHIFT_SANDBOX_NEO4J_VERSION"], "community")
        again = _cli(tmp_path, "--json", "sandbox", "up")
        assert json.loads(again.stdout) == urls  # idempotent: the running sandbox is reused
        env = _cli(tmp_path, "sandbox", "env")
        assert f"export PGPASSFILE={urls['PGPASSFILE']}" in env.stdout
    finally:
        down = _cli(tmp_path, "sandbox", "down")
    assert down.returncode == 0
    assert not (tmp_path / ".polyshift" / "sandbox").exists()
    assert not _port_open(int(urls["POLYSHIFT_SANDBOX_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]))
    assert not _port_open(int(urls["POLYSHIFT_SANDBOX_NEO4J_URL"].rsplit(":", 1)[1]))
    gone = _cli(tmp_path, "sandbox", "env")
    assert gone.returncode == 2 and "no sandbox is running" in gone.stderr


def test_sandbox_without_java_says_so_in_one_line_and_keeps_the_graph_on_falkordb(tmp_path: Path) -> None:
    bare = {"PATH": str(tmp_path), "JAVA_HOME": str(tmp_path / "no-jdk"), "POLYSHIFT_NEO4J_JDK_DIRS": str(tmp_path)}
    up = _cli(tmp_path, "--json", "sandbox", "up", env=bare)
    try:
        assert up.returncode == 0, up.stderr
        urls = json.loads(up.stdout)
        assert "POLYSHIFT_SANDBOX_NEO4J_URL" not in urls
        notes = [line for line in up.stderr.splitlines() if line.startswith("neo4j:")]
        assert len(notes) == 1 and "the graph runs on FalkorDB natively" in notes[0]
        graph: Any = redis.Redis.from_url(urls["POLYSHIFT_SANDBOX_FALKORDB_URL"])
        assert graph.execute_command("GRAPH.QUERY", "g", "RETURN 1")
    finally:
        assert _cli(tmp_path, "sandbox", "down", env=bare).returncode == 0
