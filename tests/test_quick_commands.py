"""Quick commands import only what they use: a store's driver, the engine, the control plane and
the flag server load when a command needs them, not when the CLI starts (issue 19). What is
checked is which modules a fresh interpreter holds after the command, not how long it took."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from polyshift.feature_flags.admin import Change
from tests.conftest import FlagProject, RedisWorkspace, Workspace

# The drivers and libraries whose import is most of a slow start; none is needed to print help.
DRIVERS = ("sqlalchemy", "psycopg", "redis", "neo4j", "falkordb", "pglast", "starlette", "uvicorn", "zstandard")
POLYSHIFT_HEAVY = ("polyshift.framework.engine", "polyshift.framework.control", "polyshift.adapters",
                   "polyshift.framework.adopt", "polyshift.feature_flags.server.app")


def loaded_after(args: list[str], cwd: Path) -> tuple[int, list[str]]:
    """Run ``polyshift ARGS`` in a fresh interpreter; its exit code and every module it imported."""
    probe = textwrap.dedent(f"""\
        import json, sys
        from polyshift.framework.cli.main import main
        try:
            main({args!r})
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stderr.write("\\nMODULES " + json.dumps({{"code": code, "modules": sorted(sys.modules)}}) + "\\n")
        """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd, env={**os.environ},
                         timeout=120)
    line = next(ln for ln in out.stderr.splitlines() if ln.startswith("MODULES "))
    result = json.loads(line[len("MODULES "):])
    return result["code"], result["modules"]


def heavy(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted({m for m in modules if any(m == n or m.startswith(n + ".") for n in names)})


def test_help_imports_no_driver_engine_control_plane_or_web_server(tmp_path: Path) -> None:
    code, modules = loaded_after(["--help"], tmp_path)
    assert code == 0
    assert heavy(modules, DRIVERS + POLYSHIFT_HEAVY) == []


def test_flags_list_with_a_redis_flag_store_imports_neither_sql_nor_graph_drivers_nor_the_engine(
        tmp_path: Path, redis_url: str) -> None:
    project = FlagProject(tmp_path, "redis", redis_url)
    project.admin().change("checkout_v2", Change(enabled=True, percent=10), reason="canary", create=True)
    code, modules = loaded_after(["--config", str(project.config), "flags", "list", "--json"], tmp_path)
    assert code == 0
    assert "redis" in modules  # it did read the store
    assert heavy(modules, ("sqlalchemy", "psycopg", "neo4j", "falkordb", "pglast", "starlette", "uvicorn",
                           "polyshift.framework.engine", "polyshift.framework.control", "polyshift.adapters")) == []


def test_status_of_a_redis_project_imports_no_postgresql_or_graph_driver(rws: RedisWorkspace, state_backend: str) -> None:
    code, modules = loaded_after(["--config", str(rws.config), "status", "--json"], rws.root)
    assert code == 0
    assert "redis" in modules  # it did read the store's ledger
    # A control plane on PostgreSQL is read with psycopg; the PostgreSQL adapter is still not loaded.
    driver = ("psycopg",) if state_backend == "sqlite" else ()
    assert heavy(modules, (*driver, "neo4j", "falkordb", "pglast", "starlette", "uvicorn",
                           "polyshift.adapters.postgres", "polyshift.adapters.graph")) == []


def test_status_of_a_postgresql_project_reads_the_control_plane_without_sqlalchemy_or_the_sql_parser(
        ws: Workspace) -> None:
    ws.migration("0001_users", "CREATE TABLE users (id bigint PRIMARY KEY);", "DROP TABLE users;")
    assert ws.run("status").exit_code == 0  # the control plane's first use creates its tables
    code, modules = loaded_after(["--config", str(ws.config), "status", "--json"], ws.root)
    assert code == 0
    assert "polyshift.adapters.postgres.adapter" in modules  # it did read the store's ledger
    assert heavy(modules, ("sqlalchemy", "pglast", "polyshift.adapters.postgres.backup",
                           "polyshift.adapters.postgres.analysis")) == []


def test_plan_parses_the_pending_migration_and_still_reads_the_control_plane_without_sqlalchemy(ws: Workspace) -> None:
    ws.migration("0001_users", "CREATE TABLE users (id bigint PRIMARY KEY);", "DROP TABLE users;")
    assert ws.run("status").exit_code == 0
    code, modules = loaded_after(["--config", str(ws.config), "plan", "--json"], ws.root)
    assert code == 0
    assert "pglast" in modules
    assert heavy(modules, ("sqlalchemy", "polyshift.adapters.postgres.backup")) == []
