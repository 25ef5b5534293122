"""``polyshift rehearse``: each release forward, back to exactly where it was, forward again and
restored, on rehearsal stores, never on production. Every store here is a real server; the
rehearsal stores are ``[rehearsal.stores.<name>]`` tables pointing at servers of their own, or
(for the four-store release) fresh embedded servers the command starts itself."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import CliProject, Workspace
from tests.release_app import SCOPES, ReleaseApp

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = """\
    CREATE TABLE documents (id int PRIMARY KEY, title text NOT NULL);
    INSERT INTO documents SELECT i, 'doc ' || i FROM generate_series(1, 300) i;
    CREATE TABLE tags (id serial PRIMARY KEY, name text NOT NULL);
    """
DROP_DOCUMENTS = "DROP TABLE IF EXISTS tags; DROP TABLE IF EXISTS documents;"


def rehearse_on(ws: Workspace, url: str) -> None:
    """[rehearsal.stores.main] at ``url``, its password through ${TEST_PG_PASSWORD} like production's."""
    p = conninfo_to_dict(url)
    with ws.config.open("a") as fh:
        fh.write(f'\n[rehearsal.stores.main]\nurl = "postgresql://{p["user"]}:${{TEST_PG_PASSWORD}}@{p["host"]}:{p["port"]}/{p["dbname"]}"\n')


def has_ledger(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass('_polyshift.schema_history')").fetchone()[0] is not None  # type: ignore[index]


def checks(result: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    report = json.loads(result.stdout)
    return {(c["release"], c["store"], c["check"]): c for c in report["checks"]}


@pytest.fixture
def rws_pg(ws: Workspace, second_database: str) -> Workspace:
    """Production is the test's database; the rehearsal runs on a second one. Release 0001 builds
    the history (300 documents, an empty tags table); each test writes its release 0002."""
    ws.migration("0001_documents", DOCUMENTS, DROP_DOCUMENTS)
    rehearse_on(ws, second_database)
    ws.rehearsal_url = second_database  # type: ignore[attr-defined]
    return ws


# -- PostgreSQL ---------------------------------------------------------------------------------
def test_a_correct_release_holds_every_check(rws_pg: Workspace) -> None:
    rws_pg.migration("0002_status", "ALTER TABLE documents ADD COLUMN status text NOT NULL DEFAULT 'draft';",
                     "ALTER TABLE documents DROP COLUMN status;", "SELECT count(*) = 300 FROM documents WHERE status = 'draft';")
    result = rws_pg.run("rehearse", "--release", "0002", "--json")
    assert result.exit_code == 0, result.output
    found = checks(result)
    assert {k[2] for k, c in found.items() if c["status"] == "passed"} >= {
        "preflight", "backup", "forward", "validate", "invariants", "rollback", "rollback-restores", "forward-again",
        "idempotent", "restore"}
    assert not [c for c in found.values() if c["status"] == "failed"]


def test_a_rollback_that_forgets_a_column_is_caught_naming_the_column(rws_pg: Workspace) -> None:
    rws_pg.migration("0002_status", "ALTER TABLE documents ADD COLUMN status text; ALTER TABLE documents ADD COLUMN priority int;",
                     "ALTER TABLE documents DROP COLUMN status;")
    result = rws_pg.run("rehearse", "--release", "0002", "--json")
    assert result.exit_code == 1, result.output
    failed = checks(result)["0002", "main", "rollback-restores"]
    assert failed["status"] == "failed"
    assert failed["detail"].startswith("column public.documents.priority: absent before the release, integer after the rollback")
    assert "0002 main rollback-restores" in result.stderr


def test_a_rollback_that_loses_rows_is_caught_naming_the_table_and_row_count(rws_pg: Workspace) -> None:
    rws_pg.migration("0002_titles", "UPDATE documents SET title = upper(title) WHERE id > 250;",
                     "DELETE FROM documents WHERE id > 250;")
    result = rws_pg.run("rehearse", "--release", "0002", "--json")
    assert result.exit_code == 1, result.output
    failed = checks(result)["0002", "main", "rollback-restores"]
    assert failed["status"] == "failed"
    assert "public.documents: 300 rows before the release, 250 after the rollback" in failed["detail"]


def test_a_forward_that_is_not_idempotent_is_caught(rws_pg: Workspace) -> None:
    # The rollback deletes the rows, but the sequence moved on: a second forward gives them new ids.
    rws_pg.migration("0002_default_tags", "INSERT INTO tags (name) VALUES ('news'), ('howto');",
                     "DELETE FROM tags WHERE name IN ('news', 'howto');")
    result = rws_pg.run("rehearse", "--release", "0002", "--json")
    assert result.exit_code == 1, result.output
    found = checks(result)
    assert found["0002", "main", "rollback-restores"]["status"] == "passed"
    assert found["0002", "main", "idempotent"]["status"] == "failed"
    assert "public.tags: 2 rows after the first forward, 2 after forward, rollback, forward (same count, different content)" \
        in found["0002", "main", "idempotent"]["detail"]


def test_a_restore_that_leaves_what_the_forward_created_is_caught(rws_pg: Workspace) -> None:
    # The backup covers documents; the table the forward creates survives a restore of it.
    rws_pg.migration("0002_archive",
                     "CREATE TABLE archive AS SELECT * FROM documents WHERE id > 290; DELETE FROM documents WHERE id > 290;",
                     "INSERT INTO documents SELECT * FROM archive; DROP TABLE archive;")
    result = rws_pg.run("rehearse", "--release", "0002", "--json")
    assert result.exit_code == 1, result.output
    found = checks(result)
    assert found["0002", "main", "rollback-restores"]["status"] == "passed"
    assert found["0002", "main", "restore"]["status"] == "failed"
    assert "table public.archive: absent before the release, present after the restore" in found["0002", "main", "restore"]["detail"]


def test_each_statement_s_lock_and_how_long_it_was_held_are_measured(rws_pg: Workspace) -> None:
    rws_pg.migration("0002_status", "ALTER TABLE documents ADD COLUMN status text NOT NULL DEFAULT 'draft';",
                     "ALTER TABLE documents DROP COLUMN status;")
    report = json.loads(rws_pg.run("rehearse", "--release", "0002", "--json").stdout)
    forward = next(s for s in report["steps"] if s["release"] == "0002" and s["step"] == "forward")
    (statement,) = forward["statements"]
    assert statement["sql"].startswith("ALTER TABLE documents ADD COLUMN status")
    assert statement["locks"] == {"public.documents": "ACCESS EXCLUSIVE"}
    assert statement["transactional"] and statement["held_ms"] >= statement["ran_ms"] > 0
    assert forward["rows"] == {"public.documents": 300}


def test_the_terminal_report_names_the_data_source_and_the_lock_held(rws_pg: Workspace) -> None:
    rws_pg.migration("0002_status", "ALTER TABLE documents ADD COLUMN status text;", "ALTER TABLE documents DROP COLUMN status;")
    result = rws_pg.run("rehearse", "--release", "0002")
    assert result.exit_code == 0, result.output
    assert "data: schema and rows from the migrations' own history alone (no production data)" in result.stdout
    assert "ACCESS EXCLUSIVE on public.documents" in result.stdout
    assert "applied first (history): 0001" in result.stdout


def test_gates_pointed_at_a_rehearsal_endpoint_that_fails_are_named(rws_pg: Workspace) -> None:
    rws_pg.migration("0002_status", "ALTER TABLE documents ADD COLUMN status text;", "ALTER TABLE documents DROP COLUMN status;")
    (rws_pg.migrations / "releases.toml").write_text(textwrap.dedent("""\
        [release."0002"]
        flag = "status_column"
        gates = [
          { kind = "sql", name = "documents-kept", store = "main", query = "SELECT count(*) = 300 FROM documents" },
          { kind = "http", name = "app-health", url = "https://app.example/health", timeout = "1s" },
        ]
        """))
    result = rws_pg.run("rehearse", "--release", "0002", "--gate-url", "http://127.0.0.1:1/health", "--json")
    assert result.exit_code == 1, result.output
    gate = checks(result)["0002", "*", "gates"]
    assert gate["status"] == "failed"
    assert gate["detail"].startswith("app-health: could not be evaluated")
    assert "documents-kept" not in gate["detail"]  # the sql gate read the rehearsal store, and held


def test_a_rehearsal_from_a_backup_runs_on_that_backup_s_rows(rws_pg: Workspace) -> None:
    rws_pg.sql(DOCUMENTS.replace("300)", "40)"))
    manual = json.loads(rws_pg.run("backup", "create", "main", "--scope", "documents,tags", "--json").stdout)["id"]
    rws_pg.migration("0002_status", "ALTER TABLE documents ADD COLUMN status text;", "ALTER TABLE documents DROP COLUMN status;")
    result = rws_pg.run("rehearse", "--from-backup", manual, "--release", "0002", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["data"].startswith(
        f"an existing rollback point: main: public.documents, public.tags (40 rows/keys/nodes, backup {manual})")
    forward = next(s for s in report["steps"] if s["step"] == "forward")
    assert forward["rows"] == {"public.documents": 40}


def test_a_sampled_copy_of_production_holds_at_most_n_rows_of_each_table(rws_pg: Workspace) -> None:
    assert rws_pg.run("up").exit_code == 0  # production has release 0001 and its 300 documents
    rws_pg.migration("0002_status", "ALTER TABLE documents ADD COLUMN status text;", "ALTER TABLE documents DROP COLUMN status;")
    result = rws_pg.run("rehearse", "--from-production", "--sample", "50", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["releases"] == ["0002"] and report["applied_first"] == ["0001"]
    assert "main: public.documents (50 rows/keys/nodes, a sample of at most 50 per table" in report["data"]
    assert next(s for s in report["steps"] if s["step"] == "forward")["rows"] == {"public.documents": 50}
    assert rws_pg.value("SELECT count(*) FROM documents") == 300


def test_a_sample_without_a_copy_of_production_is_refused(rws_pg: Workspace) -> None:
    result = rws_pg.run("rehearse", "--sample", "50")
    assert result.exit_code == 2
    assert "use it with --from-production" in result.stderr
    assert not has_ledger(rws_pg.rehearsal_url)  # type: ignore[attr-defined]


def test_the_junit_report_validates_against_the_schema_ci_systems_read(rws_pg: Workspace, tmp_path: Path) -> None:
    from lxml import etree

    rws_pg.migration("0002_status", "ALTER TABLE documents ADD COLUMN status text; ALTER TABLE documents ADD COLUMN priority int;",
                     "ALTER TABLE documents DROP COLUMN status;")
    junit = tmp_path / "rehearsal.xml"
    result = rws_pg.run("rehearse", "--junit", str(junit), "--json")
    assert result.exit_code == 1
    # The Jenkins xUnit plugin's junit-10.xsd (MIT), vendored unchanged in tests/data.
    schema = etree.XMLSchema(etree.parse(str(REPO / "tests" / "data" / "junit-10.xsd")))
    document = etree.parse(str(junit))
    schema.assertValid(document)
    cases = document.findall(".//testcase")
    assert len(cases) == len(json.loads(result.stdout)["checks"])
    failures = {(c.get("classname"), c.get("name")): c.find("failure") for c in document.findall(".//testcase[failure]")}
    assert "public.documents.priority" in failures["release 0002.main", "rollback-restores"].get("message")
    assert {c.get("classname") for c in cases} == {"release 0001.main", "release 0002.main"}


# -- bad input: exit 2, nothing changed ------------------------------------------------------------
def test_an_unknown_release_is_refused_and_nothing_is_touched(rws_pg: Workspace) -> None:
    before = rws_pg.fingerprint("documents")
    result = rws_pg.run("rehearse", "--release", "0042")
    assert result.exit_code == 2
    assert "--release 0042: no migration has that version (releases: 0001)" in result.stderr
    assert not has_ledger(rws_pg.rehearsal_url)  # type: ignore[attr-defined]
    assert rws_pg.fingerprint("documents") == before and not has_ledger(rws_pg.url)


def test_a_rehearsal_store_at_a_production_address_is_refused(ws: Workspace) -> None:
    ws.migration("0001_documents", DOCUMENTS, DROP_DOCUMENTS)
    # The production database itself, spelled as another user would write it.
    p = conninfo_to_dict(ws.url)
    with ws.config.open("a") as fh:
        fh.write(f'\n[rehearsal.stores.main]\nurl = "postgresql://someone@localhost:{p["port"]}/{p["dbname"]}"\n')
    result = ws.run("rehearse")
    assert result.exit_code == 2
    assert "[rehearsal.stores.main]: url" in result.stderr and "is production store 'main'" in result.stderr
    assert ws.value("SELECT to_regclass('documents')") is None and not has_ledger(ws.url)


def test_an_unknown_backup_id_is_refused_and_nothing_is_touched(rws_pg: Workspace) -> None:
    result = rws_pg.run("rehearse", "--from-backup", "20990101T000000Z-main-000000")
    assert result.exit_code == 2
    assert "20990101T000000Z-main-000000" in result.stderr
    assert not has_ledger(rws_pg.rehearsal_url) and not has_ledger(rws_pg.url)  # type: ignore[attr-defined]


def test_a_junit_file_in_a_missing_directory_is_refused_before_anything_starts(rws_pg: Workspace, tmp_path: Path) -> None:
    result = rws_pg.run("rehearse", "--junit", str(tmp_path / "nowhere" / "r.xml"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert not has_ledger(rws_pg.rehearsal_url)  # type: ignore[attr-defined]


def config_project(tmp_path: Path, rehearsal: str) -> CliProject:
    project = CliProject()
    project.root, project.config, project.env = tmp_path, tmp_path / "polyshift.toml", {}
    project.config.write_text(textwrap.dedent("""\
        [stores.main]
        kind = "postgres"
        url = "postgresql://app@db.internal:5432/app"
        [stores.cache]
        kind = "redis"
        url = "redis://cache.internal:6379/0"
        """) + textwrap.dedent(rehearsal))
    return project


@pytest.mark.parametrize(("table", "named"), [
    ('[rehearsal.stores.mian]\nurl = "postgresql://app@staging:5432/app"\n', "[rehearsal.stores.mian]: no store 'mian' in [stores]"),
    ('[rehearsal.stores.main]\nkind = "redis"\nurl = "redis://staging:6379/0"\n',
     "[rehearsal.stores.main]: kind 'redis' differs from the store's own kind 'postgres'"),
    ('[rehearsal.stores.cache]\nurl = "redis://CACHE.internal/0"\n', "is production store 'cache'"),
    ('[rehearsal.stores.main]\nurl = "postgresql://ci:pw@db.internal/app"\n', "is production store 'main'"),
    ('[rehearsal]\nstore = 1\n', "[rehearsal] holds only [rehearsal.stores.<name>] tables"),
])
def test_a_rehearsal_table_the_loader_cannot_accept_is_refused_naming_it(tmp_path: Path, table: str, named: str) -> None:
    result = config_project(tmp_path, table).run("rehearse")
    assert result.exit_code == 2
    assert named in result.stderr


# -- Redis and graphs ------------------------------------------------------------------------------
class Project(CliProject):
    """One store of ``kind`` at ``url``, rehearsed at ``rehearsal_url``."""

    def __init__(self, root: Path, store: str, kind: str, url: str, rehearsal_url: str, extra: str = "") -> None:
        self.root, self.env = root, {}
        self.migrations = root / "migrations" / store
        self.migrations.mkdir(parents=True)
        self.config = root / "polyshift.toml"
        self.config.write_text(textwrap.dedent(f"""\
            [project]
            state_url = "sqlite:///.polyshift/state.db"
            [stores.{store}]
            kind = "{kind}"
            url = "{url}"
            {extra}
            [rehearsal.stores.{store}]
            url = "{rehearsal_url}"
            {extra}
            """))

    def write(self, name: str, body: str) -> None:
        (self.migrations / name).write_text(textwrap.dedent(body))


@pytest.fixture
def second_redis() -> Any:
    from polyshift.framework.sandbox.servers import EmbeddedRedis

    server = EmbeddedRedis().start()
    yield server
    server.stop()


def test_a_redis_rollback_that_drops_a_ttl_is_caught_naming_the_key(tmp_path: Path, redis_server: Any, second_redis: Any) -> None:
    project = Project(tmp_path, "cache", "redis", redis_server.url, second_redis.url)
    project.write("0001_documents.py", """\
        BACKUP = ["doc:*"]

        def forward(ctx):
            for i in range(1, 11):
                ctx.client.set(f"doc:{i}", f"document {i}", ex=3600)

        def rollback(ctx):
            ctx.client.delete(*[f"doc:{i}" for i in range(1, 11)])
        """)
    project.write("0002_rekey.py", """\
        BACKUP = ["doc:*", "docs:v2:*"]

        def forward(ctx):
            ctx.helpers.rename_prefix("doc:", "docs:v2:")

        def rollback(ctx):
            # Copies the values back and forgets their expiry.
            for key in list(ctx.client.scan_iter(match="docs:v2:*")):
                ctx.client.set(b"doc:" + key[len(b"docs:v2:"):], ctx.client.get(key))
                ctx.client.delete(key)
        """)
    result = project.run("rehearse", "--release", "0002", "--json")
    assert result.exit_code == 1, result.output
    detail = checks(result)["0002", "cache", "rollback-restores"]["detail"]
    assert "expiring keys doc:*: 10 with a TTL before the release, 0 with a TTL after the rollback" in detail
    assert "key doc:1: string, expires," in detail and "string, no TTL," in detail
    assert not any(True for _ in _keys(redis_server.url))  # production never heard of it


def _keys(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url).scan_iter()


@pytest.fixture
def second_falkordb() -> Any:
    from polyshift.framework.sandbox.servers import EmbeddedRedis, falkordb_args

    server = EmbeddedRedis(extra_args=falkordb_args()).start()
    yield server
    server.stop()


def test_a_graph_rollback_that_loses_a_relationship_property_is_caught(tmp_path: Path, falkordb_server: Any,
                                                                       second_falkordb: Any) -> None:
    project = Project(tmp_path, "graph", "falkordb", falkordb_server.url, second_falkordb.url, 'graph = "app"')
    project.write("0001_areas.forward.cypher", """\
        UNWIND range(1, 6) AS i
        CREATE (:Topic {name: 'topic ' + toString(i)})-[:IN_AREA {since: 2020 + i}]->(:Area {name: 'area ' + toString(i)});
        """)
    project.write("0001_areas.rollback.cypher", "MATCH (n) WHERE n:Topic OR n:Area DETACH DELETE n;\n")
    project.write("0002_weights.forward.cypher", """\
        // polyshift: backup=:IN_AREA
        MATCH ()-[r:IN_AREA]->() SET r.weight = 1;
        """)
    project.write("0002_weights.rollback.cypher", """\
        // polyshift: backup=:IN_AREA
        MATCH ()-[r:IN_AREA]->() REMOVE r.weight, r.since;
        """)
    result = project.run("rehearse", "--release", "0002", "--json")
    assert result.exit_code == 1, result.output
    detail = checks(result)["0002", "graph", "rollback-restores"]["detail"]
    assert detail.startswith("property since of :IN_AREA relationships: on 6 before the release, absent after the rollback")


# -- four stores, from production ------------------------------------------------------------------
def production_state(app: ReleaseApp) -> dict[str, Any]:
    """What production holds, read without creating anything (no ledger, no lock)."""
    from polyshift.adapters import adapter_for
    from polyshift.framework.core.config import load_config

    config = load_config(app.config)
    state: dict[str, Any] = {}
    for store, scope in SCOPES.items():
        adapter = adapter_for(config.store(store))
        adapter.connect()
        try:
            state[store] = adapter.fingerprint(scope).to_json()
        finally:
            adapter.close()
    state["ledgers"] = [has_ledger(app.main_url), has_ledger(app.vectors_url)]
    state["redis keys"] = sorted(app.r.scan_iter())
    graph = app.graph()
    try:
        state["graph nodes"] = graph.t.run("MATCH (n) RETURN labels(n), count(n) ORDER BY labels(n)")
    finally:
        graph.close()
    return state


def test_a_correct_four_store_release_passes_on_a_copy_of_production(app: ReleaseApp) -> None:
    result = app.run("rehearse", "--from-production", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["releases"] == ["0001"] and report["source"] == "production"
    assert {c["store"] for c in report["checks"]} == {"main", "vectors", "graph", "cache", "*"}
    assert all(c["status"] in ("passed", "skipped") for c in report["checks"])
    for store in ("main", "vectors", "graph", "cache"):
        assert checks(result)["0001", store, "rollback-restores"]["status"] == "passed"
    assert "main: public.documents (300 rows/keys/nodes" in report["data"]
    assert all("fresh embedded" in where for where in report["stores"].values())


def test_a_rehearsal_never_writes_to_a_production_store(app: ReleaseApp) -> None:
    before = production_state(app)
    result = app.run("rehearse", "--from-production")
    assert result.exit_code == 0, result.output
    assert production_state(app) == before
    assert before["ledgers"] == [False, False]
