"""`polyshift sandbox up | down | env`: real servers on this machine for trying polyshift, no Docker.

``up`` starts PostgreSQL 18 + pgvector, Redis, FalkorDB and Neo4j Community 5.26 (when a JDK
and Maven are present; otherwise it says so in one line and the graph is FalkorDB's alone) under
``.polyshift/sandbox/`` and leaves them running; ``env`` prints their URLs as shell exports;
``down`` stops them and removes their data. Neo4j listens on loopback without authentication,
like the sandbox's Redis. The PostgreSQL password is never printed: it goes to
a 0600 pgpass file that libpq (psycopg, pg_dump, psql) reads through ``PGPASSFILE``.
"""

from __future__ import annotations

import json
import os
import secrets as pysecrets
import shutil
from pathlib import Path
from typing import Any

import typer

from polyshift.framework.cli import output
from polyshift.framework.cli.output import emit_json, say
from polyshift.framework.core.errors import StoreError
from polyshift.framework.core.processes import pid_alive

# The servers themselves (framework/sandbox, a leaf of the package) are imported by the commands
# that start or stop them, so no other command pays for it.

sandbox_app = typer.Typer(no_args_is_help=True, help="Embedded real servers for trying polyshift: up, down, env.")
_DEFAULT = Path(".polyshift/sandbox")


def _state_file(directory: Path) -> Path:
    return directory / "sandbox.json"


def _read(directory: Path) -> dict[str, Any] | None:
    path = _state_file(directory)
    return json.loads(path.read_text()) if path.exists() else None


def _urls(state: dict[str, Any]) -> dict[str, str]:
    pg = state["postgres"]
    urls = {
        "POLYSHIFT_SANDBOX_POSTGRES_URL": f"postgresql://{pg['user']}@127.0.0.1:{pg['port']}/{pg['database']}",
        "PGPASSFILE": pg["pgpass"],
        "POLYSHIFT_SANDBOX_REDIS_URL": f"redis://127.0.0.1:{state['redis']['port']}/0",
        "POLYSHIFT_SANDBOX_FALKORDB_URL": f"redis://127.0.0.1:{state['falkordb']['port']}",
    }
    if state.get("neo4j"):
        urls["POLYSHIFT_SANDBOX_NEO4J_URL"] = f"bolt://127.0.0.1:{state['neo4j']['port']}"
        urls["POLYSHIFT_SANDBOX_NEO4J_VERSION"] = state["neo4j"]["version"]
    return urls


def _servers(state: dict[str, Any]) -> list[str]:
    return [k for k in ("postgres", "redis", "falkordb", "neo4j") if state.get(k)]


def _running(state: dict[str, Any]) -> bool:
    return all(pid_alive(state[k].get("pid")) for k in _servers(state))


def _postgres_pid(root: Path) -> int | None:
    pidfile = root / "data" / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else None


def _show(state: dict[str, Any]) -> None:
    urls = _urls(state)
    if output.json_mode():
        emit_json(urls)
        return
    for key, value in urls.items():
        say("export {key}={value}", key=key, value=value)


@sandbox_app.command("up")
def sandbox_up(directory: Path = typer.Option(_DEFAULT, "--dir", help="Where the servers keep their data.")) -> None:
    """Start PostgreSQL 18 + pgvector, Redis, FalkorDB and Neo4j, or show the running ones.  Example: polyshift sandbox up"""
    state = _read(directory)
    if state is not None and _running(state):
        _show(state)
        return
    if state is not None:
        _stop(state)  # a half-dead sandbox from an earlier run: clear it before starting afresh
        shutil.rmtree(directory, ignore_errors=True)
    from polyshift.framework.sandbox.neo4j import Neo4jServer, Neo4jUnavailable
    from polyshift.framework.sandbox.servers import EmbeddedPostgres, EmbeddedRedis, falkordb_args

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = pysecrets.token_urlsafe(18)
    try:
        pg = EmbeddedPostgres(password=password, root=(directory / "postgres").resolve())
        pg.root.mkdir(parents=True, exist_ok=True)
        pg.start()
        pgpass = (directory / "pgpass").resolve()
        fd = os.open(pgpass, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"127.0.0.1:{pg.port}:*:{pg.user}:{password}\n")
        redis = EmbeddedRedis(root=(directory / "redis").resolve(), detach=True)
        redis.root.mkdir(parents=True, exist_ok=True)
        redis.start()
        graph = EmbeddedRedis(root=(directory / "falkordb").resolve(), detach=True, extra_args=falkordb_args())
        graph.root.mkdir(parents=True, exist_ok=True)
        graph.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        raise StoreError(f"sandbox: a server did not start: {exc}", hint=f"see the logs under {directory}") from None
    server = Neo4jServer(root=(directory / "neo4j").resolve(), detach=True)
    neo4j: Neo4jServer | None = server
    try:
        server.start()
    except Neo4jUnavailable as exc:
        output.err.print(f"neo4j: not started ({str(exc).splitlines()[0]}); the graph runs on FalkorDB natively")
        neo4j = None
    state = {
        "postgres": {"port": pg.port, "user": pg.user, "database": pg.database, "root": str(pg.root), "pgpass": str(pgpass),
                     "pid": _postgres_pid(pg.root)},
        "redis": {"port": redis.port, "pid": redis.process.pid if redis.process else None, "root": str(redis.root)},
        "falkordb": {"port": graph.port, "pid": graph.process.pid if graph.process else None, "root": str(graph.root)},
        "neo4j": {"port": neo4j.port, "pid": neo4j.pid, "root": str(neo4j.root), "version": neo4j.version,
                  "java": neo4j.java_version} if neo4j else None,
    }
    _state_file(directory).write_text(json.dumps(state, indent=2))
    _show(state)


def _stop(state: dict[str, Any]) -> None:
    from polyshift.framework.sandbox.servers import EmbeddedPostgres, stop_pid

    EmbeddedPostgres(root=Path(state["postgres"]["root"]), port=state["postgres"]["port"]).stop(remove=False)
    for key in ("redis", "falkordb", "neo4j"):
        if state.get(key) and state[key].get("pid"):
            stop_pid(state[key]["pid"], timeout=60 if key == "neo4j" else 10)


@sandbox_app.command("down")
def sandbox_down(directory: Path = typer.Option(_DEFAULT, "--dir")) -> None:
    """Stop the sandbox's servers and delete their data.  Example: polyshift sandbox down"""
    state = _read(directory)
    if state is None:
        say("no sandbox is running here")
        return
    _stop(state)
    shutil.rmtree(directory, ignore_errors=True)
    say("sandbox stopped and removed")


@sandbox_app.command("env")
def sandbox_env(directory: Path = typer.Option(_DEFAULT, "--dir")) -> None:
    """The running sandbox's URLs as shell exports.  Example: eval "$(polyshift sandbox env)" """
    state = _read(directory)
    if state is None or not _running(state):
        raise StoreError("no sandbox is running here", hint="start one with 'polyshift sandbox up'")
    _show(state)
