"""Neo4j as it really is, on real Neo4j Community (5.26 LTS and the newest line): transactions,
typed property values, every index and constraint kind Community has, elementId without
deprecation notices, and the database option."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.conftest import GraphWorkspace, graph_workspace
from tests.test_graph import _seed

TYPED = """
CREATE (:Event {
  day: date('2024-02-29'),
  at: datetime('2024-10-27T02:30:00.123456789+01:00[Europe/Berlin]'),
  at_offset: datetime('2024-01-01T23:59:59.999999999-05:30'),
  local_at: localdatetime('2024-02-29T12:34:56.000000001'),
  clock: localtime('23:59:59.999999999'),
  clock_tz: time('08:00:00.5+09:00'),
  took: duration('P1Y2M10DT-3H4M5.000000006S'),
  here: point({longitude: 13.404954, latitude: 52.520008}),
  here_3d: point({longitude: 2.35, latitude: 48.85, height: 35.5}),
  xy: point({x: 1.5, y: -2.25}),
  xyz: point({x: 0.1, y: 0.2, z: 0.30000000000000004}),
  days: [date('2020-01-01'), date('1969-12-31')],
  moments: [datetime('2024-03-10T01:59:59Z'), datetime('2024-03-31T01:00:00[Europe/London]')],
  spans: [duration('PT1S'), duration('P3M')],
  places: [point({x: 1, y: 2}), point({x: 3, y: 4})],
  ratio: 1.0 / 7, blob_free: 'no bytes here'
})-[:HAPPENED_ON {when: datetime('2024-02-29T00:00:00Z'), where: point({x: 0, y: 0, z: 1})}]->(:Day {d: date('2024-02-29')})
"""


def test_a_failed_forward_leaves_no_trace_because_its_data_statements_share_one_transaction(nws: GraphWorkspace) -> None:
    _seed(nws)
    before = nws.fingerprint("Doc", "Topic")
    # The rollback step is broken on purpose: nothing may need it.
    nws.migration("0001_retitle", """
        MATCH (d:Doc) SET d.title = 'renamed ' + d.title;
        MATCH (t:Topic) DETACH DELETE t;
        MATCH (d:Doc {id: 7}) SET d.ratio = 1 / 0;
    """, "RETURN 1 / 0;")
    result = nws.run("up")
    assert result.exit_code == 3, result.output
    assert "the transaction was rolled back and graph is verified unchanged" in result.stderr
    assert "restored backup" not in result.stderr
    assert nws.fingerprint("Doc", "Topic") == before
    assert nws.q("MATCH (m:__PolyshiftMigration) RETURN count(m)") == [[0]]


def test_a_data_migration_and_its_ledger_entry_commit_together(nws: GraphWorkspace) -> None:
    _seed(nws)
    nws.migration("0001_flag", "MATCH (d:Doc) WHERE d.id <= 10 SET d.flagged = true;", "MATCH (d:Doc) REMOVE d.flagged;")
    result = nws.run("up", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["non_transactional"] is False
    assert nws.q("MATCH (m:__PolyshiftMigration) RETURN m.version, m.direction") == [["0001", "up"]]
    assert nws.q("MATCH (d:Doc) WHERE d.flagged RETURN count(d)") == [[10]]


def test_schema_statements_commit_on_their_own_and_the_rollback_step_undoes_a_failure_after_them(nws: GraphWorkspace) -> None:
    _seed(nws)
    before = nws.fingerprint("Doc")
    nws.migration("0001_index_then_fail", """
        // polyshift: backup=Doc
        CREATE INDEX doc_title IF NOT EXISTS FOR (d:Doc) ON (d.title);
        MATCH (d:Doc) SET d.title = toUpper(d.title);
        MATCH (d:Doc {id: 7}) SET d.ratio = 1 / 0;
    """, """
        DROP INDEX doc_title IF EXISTS;
        MATCH (d:Doc) SET d.title = toLower(d.title);
    """)
    analysis = nws.run("up", "--dry-run", "--json")
    assert analysis.exit_code == 0, analysis.output
    result = nws.run("up")
    assert result.exit_code == 3, result.output
    assert nws.q("SHOW INDEXES YIELD name WHERE name = 'doc_title' RETURN count(*)") == [[0]]
    assert nws.fingerprint("Doc") == before


def test_call_in_transactions_runs_in_an_auto_commit_transaction_and_rolls_back(nws: GraphWorkspace) -> None:
    _seed(nws)
    before = nws.fingerprint("Doc")
    nws.migration("0001_batched", "MATCH (d:Doc) CALL (d) { SET d.batched = true } IN TRANSACTIONS OF 50 ROWS;",
                  "MATCH (d:Doc) CALL (d) { REMOVE d.batched } IN TRANSACTIONS OF 50 ROWS;")
    result = nws.run("up", "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)[0]
    assert outcome["scope"] == ["Doc"] and outcome["backup"] and outcome["non_transactional"] is True
    assert nws.q("MATCH (d:Doc) WHERE d.batched RETURN count(d)") == [[300]]
    assert nws.run("rollback").exit_code == 0
    assert nws.fingerprint("Doc") == before


def test_temporal_and_spatial_values_and_lists_of_them_back_up_and_restore_exactly(nws: GraphWorkspace) -> None:
    nws.q(TYPED)
    scope = ("Event", "Day", ":HAPPENED_ON")
    before = nws.fingerprint(*scope)
    original = nws.q("MATCH (e:Event) RETURN properties(e)")[0][0]
    backup = nws.run("backup", "create", "graph", "--scope", ",".join(scope), "--json")
    assert backup.exit_code == 0, backup.output
    nws.q("MATCH (e:Event) SET e.at = datetime('2000-01-01T00:00:00Z'), e.here = point({x: 0, y: 0})")
    nws.q("MATCH (d:Day) DETACH DELETE d")
    assert nws.fingerprint(*scope) != before
    result = nws.run("backup", "restore", json.loads(backup.stdout)["id"], "--yes")
    assert result.exit_code == 0, result.output
    assert nws.fingerprint(*scope) == before
    assert nws.q("MATCH (e:Event) RETURN properties(e)")[0][0] == original
    # The server compares them as equal too: zone name, offset in force, nanoseconds, SRID.
    assert nws.q("MATCH (e:Event)-[h:HAPPENED_ON]->(d:Day) RETURN "
                 "e.at = datetime('2024-10-27T02:30:00.123456789+01:00[Europe/Berlin]') AND "
                 "e.clock = localtime('23:59:59.999999999') AND e.took = duration('P1Y2M10DT-3H4M5.000000006S') AND "
                 "e.here_3d = point({longitude: 2.35, latitude: 48.85, height: 35.5}) AND "
                 "h.where = point({x: 0, y: 0, z: 1}) AND d.d = date('2024-02-29')") == [[True]]


SCHEMA = [
    "CREATE RANGE INDEX doc_title FOR (d:Doc) ON (d.title, d.id)",
    "CREATE TEXT INDEX doc_title_text FOR (d:Doc) ON (d.title)",
    "CREATE POINT INDEX doc_where FOR (d:Doc) ON (d.where) OPTIONS {indexConfig: {`spatial.cartesian.min`: [-100.0, -100.0], "
    "`spatial.cartesian.max`: [100.0, 100.0]}}",
    "CREATE FULLTEXT INDEX texts FOR (n:Doc|Topic) ON EACH [n.title, n.name] OPTIONS {indexConfig: {`fulltext.analyzer`: 'english'}}",
    "CREATE VECTOR INDEX doc_embedding FOR (d:Doc) ON (d.embedding) OPTIONS {indexConfig: {`vector.dimensions`: 4, "
    "`vector.similarity_function`: 'euclidean'}}",
    "CREATE INDEX about_weight FOR ()-[r:ABOUT]-() ON (r.weight)",
    "CREATE FULLTEXT INDEX about_text FOR ()-[r:ABOUT]-() ON EACH [r.note]",
    "CREATE CONSTRAINT doc_id FOR (d:Doc) REQUIRE d.id IS UNIQUE",
    "CREATE CONSTRAINT about_key FOR ()-[r:ABOUT]-() REQUIRE r.key IS UNIQUE",
]


def _schema(ws: GraphWorkspace) -> list[str]:
    indexes = ws.q("SHOW INDEXES YIELD type, owningConstraint, createStatement WHERE type <> 'LOOKUP' AND owningConstraint IS NULL "
                   "RETURN createStatement")
    constraints = ws.q("SHOW CONSTRAINTS YIELD createStatement RETURN createStatement")
    return sorted(r[0] for r in indexes + constraints if "__Polyshift" not in r[0])  # polyshift's own lock is not the app's


def test_every_index_and_constraint_kind_of_community_is_captured_and_recreated_exactly(nws: GraphWorkspace) -> None:
    _seed(nws)
    for statement in SCHEMA:
        nws.q(statement)
    nws.q("CALL db.awaitIndexes(60)")
    schema = _schema(nws)
    assert len(schema) == len(SCHEMA)
    before = nws.fingerprint("Doc", "Topic", ":ABOUT")
    backup = json.loads(nws.run("backup", "create", "graph", "--scope", "Doc,Topic,:ABOUT", "--json").stdout)
    for (name,) in nws.q("SHOW CONSTRAINTS YIELD name WHERE NOT name STARTS WITH 'polyshift' RETURN name"):
        nws.q(f"DROP CONSTRAINT {name}")
    for (name,) in nws.q("SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP' AND NOT name STARTS WITH 'polyshift' RETURN name"):
        nws.q(f"DROP INDEX {name}")
    nws.q("CREATE INDEX added_later FOR (t:Topic) ON (t.name)")       # not in the backup: a restore drops it
    nws.q("CREATE VECTOR INDEX doc_embedding FOR (d:Doc) ON (d.embedding) OPTIONS {indexConfig: {`vector.dimensions`: 8}}")
    result = nws.run("backup", "restore", backup["id"], "--yes")
    assert result.exit_code == 0, result.output
    nws.q("CALL db.awaitIndexes(60)")
    assert _schema(nws) == schema
    assert nws.fingerprint("Doc", "Topic", ":ABOUT") == before


def test_property_type_constraints_are_refused_by_community_as_enterprise_only(nws: GraphWorkspace) -> None:
    # Documents why the schema test has none: Community refuses to create one at all.
    from polyshift.adapters.graph.adapter import GraphQueryError

    with pytest.raises(GraphQueryError, match="Enterprise"):
        nws.q("CREATE CONSTRAINT doc_id_type FOR (d:Doc) REQUIRE d.id IS :: INTEGER")


def test_migrations_backups_and_restores_draw_no_deprecation_notice_from_the_server(
        nws: GraphWorkspace, caplog: pytest.LogCaptureFixture) -> None:
    _seed(nws)
    caplog.set_level(logging.INFO, logger="neo4j.notifications")
    nws.migration("0001_relabel", "MATCH (d:Doc) WHERE d.id > 200 SET d:Archived REMOVE d:Doc;",
                  "MATCH (d:Archived) SET d:Doc REMOVE d:Archived;", "MATCH (d:Archived) RETURN count(d) = 100;")
    assert nws.run("up").exit_code == 0
    backup = json.loads(nws.run("backup", "create", "graph", "--scope", "Doc,Topic,Archived", "--json").stdout)
    assert nws.run("backup", "restore", backup["id"], "--yes").exit_code == 0
    assert nws.run("rollback").exit_code == 0
    notices = [r.getMessage() for r in caplog.records if r.name.startswith("neo4j.notifications")]
    assert not [n for n in notices if "deprecat" in n.lower()], notices


def test_the_database_option_selects_the_database_for_every_session(request: pytest.FixtureRequest, tmp_path: Path,
                                                                    state_url: str) -> None:
    explicit = graph_workspace(request, tmp_path / "explicit", "neo4j-5.26", state_url, extra='database = "neo4j"\n')
    try:
        explicit.q("CREATE (:Marker {n: 1})")
        assert explicit.run("status").exit_code == 0
        explicit.migration("0001_touch", "MATCH (m:Marker) SET m.n = 2;", "MATCH (m:Marker) SET m.n = 1;")
        assert explicit.run("up").exit_code == 0
        assert explicit.q("MATCH (m:Marker) RETURN m.n") == [[2]]
    finally:
        explicit.close()


@pytest.mark.parametrize(("database", "message"), [
    ("nowhere", "the server has no database 'nowhere'"),
    ("system", "database = \"system\" is Neo4j's own catalogue"),
])
def test_a_database_the_server_cannot_serve_is_refused_with_exit_2(
        request: pytest.FixtureRequest, tmp_path: Path, database: str, message: str, state_url: str) -> None:
    ws = graph_workspace(request, tmp_path / "ok", "neo4j-5.26", state_url)
    ws.close()
    config = ws.config.read_text() + f'database = "{database}"\n'
    ws.config.write_text(config)
    result = ws.run("status")
    assert result.exit_code == 2, result.output
    assert message in result.stderr
