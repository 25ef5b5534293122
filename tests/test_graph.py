"""Graph migrations on FalkorDB (native protocol) and on real Neo4j Community (5.26 LTS and the newest
line, over Bolt): scoped backups, content fingerprints, undo, the lock, inferred scope."""

from __future__ import annotations

import json
import threading

import pytest

from tests.conftest import GraphWorkspace

# Separate statements on purpose: FalkorDB applies `WITH … WHERE` placed after a CREATE to the
# rows before it (UNWIND … CREATE … WITH d, i WHERE i % 10 = 0 … made 30 nodes, not 300).
SEED = [
    "UNWIND range(1, 300) AS i CREATE (:Doc {id: i, title: 'doc ' + toString(i), draft: i % 3 = 0, tags: ['a', 'b'], "
    "score: i * 0.5})",
    "UNWIND range(1, 30) AS i CREATE (:Topic {name: 'topic ' + toString(i)})",
    "MATCH (d:Doc), (t:Topic) WHERE d.id % 10 = 0 AND t.name = 'topic ' + toString(d.id / 10) CREATE (d)-[:ABOUT {weight: 0.5}]->(t)",
]


def _seed(gws: GraphWorkspace) -> None:
    for statement in SEED:
        gws.q(statement)
    assert gws.q("MATCH (d:Doc) RETURN count(d)") == [[300]]
    assert gws.q("MATCH ()-[r:ABOUT]->() RETURN count(r)") == [[30]]
    gws.q("MATCH (a:Doc {id: 1}), (b:Doc {id: 2}) CREATE (a)-[:CITES {since: 2020}]->(b)")


def test_relationship_adding_migration_rolled_back_leaves_an_equal_fingerprint(gws: GraphWorkspace) -> None:
    _seed(gws)
    before = gws.fingerprint("Doc", "Topic", ":MENTIONS")
    gws.migration("0001_mentions", """
        // polyshift: backup=Doc,Topic,:MENTIONS
        MATCH (d:Doc)-[:ABOUT]->(t:Topic) CREATE (d)-[:MENTIONS {source: 'about'}]->(t);
    """, "MATCH ()-[m:MENTIONS]->() DELETE m;", "MATCH ()-[m:MENTIONS]->() RETURN count(m) = 30;")
    up = gws.run("up", "--json")
    assert up.exit_code == 0, up.output
    assert gws.q("MATCH ()-[m:MENTIONS]->() RETURN count(m)") == [[30]]
    ledger = gws.q("MATCH (m:__PolyshiftMigration) RETURN m.version, m.direction")
    assert ledger == [["0001", "up"]]
    assert gws.run("rollback").exit_code == 0
    assert gws.fingerprint("Doc", "Topic", ":MENTIONS") == before


def test_label_refactor_is_backed_up_applied_and_rolled_back(gws: GraphWorkspace) -> None:
    _seed(gws)
    before = gws.fingerprint("Doc", "Document", "Draft")
    gws.migration("0001_split_doc", """
        // polyshift: backup=Doc,Document,Draft
        MATCH (d:Doc) WHERE d.draft SET d:Draft REMOVE d:Doc, d.draft;
        MATCH (d:Doc) SET d:Document REMOVE d:Doc, d.draft;
    """, """
        MATCH (d:Draft) SET d:Doc, d.draft = true REMOVE d:Draft;
        MATCH (d:Document) SET d:Doc, d.draft = false REMOVE d:Document;
    """, "MATCH (d:Doc) RETURN count(d) = 0;")
    result = gws.run("up", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["backup"]
    assert gws.q("MATCH (d:Draft) RETURN count(d)") == [[100]] and gws.q("MATCH (d:Document) RETURN count(d)") == [[200]]
    assert gws.run("rollback").exit_code == 0
    assert gws.fingerprint("Doc", "Document", "Draft") == before


def test_broken_rollback_triggers_restore_and_fingerprint_equals_the_pre_migration_one(gws: GraphWorkspace) -> None:
    _seed(gws)
    before = gws.fingerprint("Doc", "Topic")
    gws.migration("0001_bad", """
        // polyshift: backup=Doc,Topic
        MATCH (d:Doc) WHERE d.id > 250 DETACH DELETE d;
        MATCH (t:Topic) SET t.name = toUpper(t.name);
    """, "RETURN 1 / 0;", "MATCH (d:Doc) RETURN count(d) = 300;")
    result = gws.run("up")
    assert result.exit_code == 3, result.output
    assert "restored backup" in result.stderr
    assert gws.fingerprint("Doc", "Topic") == before
    assert gws.q("MATCH (d:Doc {id: 1})-[c:CITES]->(e:Doc {id: 2}) RETURN c.since") == [[2020]]


def test_constraints_and_indexes_survive_backup_and_restore(gws: GraphWorkspace) -> None:
    import time

    _seed(gws)
    gws.q("CREATE INDEX FOR (t:Topic) ON (t.name)")
    if gws.kind == "neo4j":
        gws.q("CREATE CONSTRAINT doc_id IF NOT EXISTS FOR (d:Doc) REQUIRE d.id IS UNIQUE")
        drop_topic_index = "DROP INDEX " + gws.q("SHOW INDEXES YIELD name, labelsOrTypes WHERE 'Topic' IN labelsOrTypes RETURN name")[0][0]
    else:
        gws.q("CREATE INDEX FOR (d:Doc) ON (d.id)")
        gws._client.t.command("GRAPH.CONSTRAINT", "CREATE", "app", "UNIQUE", "NODE", "Doc", "PROPERTIES", 1, "id")
        drop_topic_index = "DROP INDEX FOR (t:Topic) ON (t.name)"
        time.sleep(0.3)  # FalkorDB builds constraints asynchronously
    before = gws.fingerprint("Doc", "Topic")
    backup = json.loads(gws.run("backup", "create", "graph", "--scope", "Doc,Topic", "--json").stdout)
    gws.q(drop_topic_index)
    gws.q("MATCH (d:Doc) WHERE d.id < 100 DETACH DELETE d")
    result = gws.run("backup", "restore", backup["id"], "--yes")
    assert result.exit_code == 0, result.output
    time.sleep(0.3)
    assert gws.fingerprint("Doc", "Topic") == before


def test_names_with_quotes_spaces_and_unicode_round_trip(gws: GraphWorkspace) -> None:
    # FalkorDB rejects a doubled backtick inside a quoted name (natively too), so a name containing
    # a backtick cannot exist there; every other character is escaped by backtick-quoting.
    gws.q("CREATE (:`we'ird \"label\": x` {`odd 'key`: $v, plain: $w})-[:`rel type`]->(:`Ünï` {x: 1})",
          {"v": "it's a \"quoted\" \\ backslash ✓", "w": "line\nbreak"})
    scope = ("we'ird \"label\": x", "Ünï", ":rel type")
    before = gws.fingerprint(*scope)
    assert before.counts["we'ird \"label\": x"] == 1 and before.counts[":rel type"] == 1
    backup = json.loads(gws.run("backup", "create", "graph", "--scope", ",".join(scope), "--json").stdout)
    gws.q("MATCH (n) WHERE NOT n:__PolyshiftMigration DETACH DELETE n")
    assert gws.run("backup", "restore", backup["id"], "--yes").exit_code == 0
    assert gws.fingerprint(*scope) == before
    assert gws.q("MATCH (n:`we'ird \"label\": x`) RETURN n.`odd 'key`") == [["it's a \"quoted\" \\ backslash ✓"]]


def test_cypher_names_are_escaped_not_injected() -> None:
    from polyshift.adapters.graph.cypher import labels, name

    assert name("a`) DETACH DELETE (n") == "`a``) DETACH DELETE (n`"
    assert labels(["A", "b c"]) == ":`A`:`b c`"


def test_concurrent_runners_never_both_hold_the_lock(gws: GraphWorkspace) -> None:
    adapters = [gws.adapter() for _ in range(6)]
    winners: list[int] = []
    errors: list[str] = []

    def grab(i: int) -> None:
        try:
            adapters[i].acquire_lock(f"runner-{i}", wait=0)
            winners.append(i)
        except Exception as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(winners) == 1, winners
        assert len(errors) == 5 and all(f"runner-{winners[0]}" in e for e in errors)
    finally:
        for a in adapters:
            a.close()
    assert gws.q("MATCH (l:__PolyshiftLock) RETURN count(l)") == [[0]]


def test_a_crashed_runners_lock_expires_and_can_be_taken_over(gws: GraphWorkspace) -> None:
    gws.config.write_text(gws.config.read_text() + 'lock_ttl = "1s"\n')
    crashed = gws.adapter()
    crashed.acquire_lock("crashed", wait=0)
    crashed.lock._renewer.stop()   # the runner died: nobody renews
    crashed.lock._claim = None     # and nobody releases
    taker = gws.adapter()
    try:
        taker.acquire_lock("next", wait=5)
        assert gws.q("MATCH (l:__PolyshiftLock) RETURN l.holder") == [["next"]]
    finally:
        taker.close()
        crashed.close()


def test_cypher_syntax_error_fails_cleanly_with_the_graph_unchanged(gws: GraphWorkspace) -> None:
    _seed(gws)
    before = gws.fingerprint("Doc")
    gws.migration("0001_typo", "// polyshift: backup=Doc\nMATCH (d:Doc) SETT d.x = 1;", "MATCH (d:Doc) REMOVE d.x;")
    result = gws.run("up")
    assert result.exit_code == 3, result.output
    assert "0001_typo forward failed" in result.stderr
    assert gws.fingerprint("Doc") == before


def test_unknown_label_in_scope_warns_and_status_reads_the_graph_ledger(gws: GraphWorkspace) -> None:
    _seed(gws)
    gws.migration("0001_noop", "// polyshift: backup=Doc,Nope\nMATCH (d:Doc {id: 1}) SET d.seen = true;",
                  "MATCH (d:Doc {id: 1}) REMOVE d.seen;")
    result = gws.run("-v", "up")
    assert result.exit_code == 0, result.output
    assert "label 'Nope' in the backup scope has no nodes" in result.stderr
    assert json.loads(gws.run("status", "--json").stdout)[0]["current"] == "0001"


def test_backup_and_restore_round_trip_with_plain_data(gws: GraphWorkspace) -> None:
    _seed(gws)
    before = gws.fingerprint("Doc", "Topic", ":ABOUT")
    backup = json.loads(gws.run("backup", "create", "graph", "--scope", "Doc,Topic,:ABOUT", "--json").stdout)
    assert backup["scope"] == ["Doc", "Topic", ":ABOUT"]
    gws.q("MATCH (d:Doc) WHERE d.id > 150 DETACH DELETE d")
    gws.q("MATCH (t:Topic) SET t.name = 'renamed'")
    gws.q("CREATE (:Doc {id: 999})")
    result = gws.run("backup", "restore", backup["id"], "--yes")
    assert result.exit_code == 0, result.output
    assert gws.fingerprint("Doc", "Topic", ":ABOUT") == before
    assert gws.q("MATCH (d:Doc {id: 999}) RETURN count(d)") == [[0]]
    assert gws.q("MATCH (d:Doc {id: 1})-[c:CITES]->(:Doc {id: 2}) RETURN c.since") == [[2020]]


def test_a_scope_larger_than_one_page_fingerprints_and_backs_up(gws: GraphWorkspace) -> None:
    gws.q("UNWIND range(1, 2500) AS i CREATE (:Doc {id: i})")
    gws.q("UNWIND range(1, 5) AS i CREATE (:Topic {id: i})")
    gws.q("MATCH (d:Doc), (t:Topic) WHERE t.id = 1 + d.id % 5 CREATE (d)-[:ABOUT]->(t)")
    fingerprint = gws.fingerprint("Topic")
    assert fingerprint.counts == {"Topic": 5, "relationships": 2500}
    assert gws.run("backup", "create", "graph", "--scope", "Topic").exit_code == 0
    assert gws.q("MATCH (n) RETURN count(n)") == [[2505]]


def test_a_label_refactor_is_backed_up_by_the_scope_inferred_from_its_cypher(gws: GraphWorkspace) -> None:
    _seed(gws)
    before = gws.fingerprint("Doc", "Document")
    gws.migration("0001_rename_label", "MATCH (d:Doc) SET d:Document REMOVE d:Doc;",
                  "MATCH (d:Document) SET d:Doc REMOVE d:Document;", "MATCH (d:Doc) RETURN count(d) = 0;")
    result = gws.run("up", "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)[0]
    assert outcome["scope"] == ["Doc", "Document"] and outcome["backup"]
    assert gws.q("MATCH (d:Document) RETURN count(d)") == [[300]]
    assert gws.run("rollback").exit_code == 0
    assert gws.fingerprint("Doc", "Document") == before


def test_a_declared_scope_is_combined_with_the_inferred_one(gws: GraphWorkspace) -> None:
    _seed(gws)
    gws.migration("0001_prune", """
        // polyshift: backup=Topic
        MATCH (d:Doc) WHERE d.id > 290 DETACH DELETE d;
        MATCH ()-[c:CITES]->() SET c.checked = true;
    """, "RETURN 1;")
    result = gws.run("up", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["scope"] == ["Topic", "Doc", ":CITES"]


def test_a_change_whose_targets_cannot_be_read_is_refused_with_a_hint_in_cypher_syntax(gws: GraphWorkspace) -> None:
    _seed(gws)
    before = gws.fingerprint("Doc", "Topic")
    gws.migration("0001_wipe", "MATCH (n) WHERE n.id > 100 DETACH DELETE n;", "RETURN 1;")
    result = gws.run("up")
    assert result.exit_code == 2, result.output
    assert "cannot tell which nodes or relationships `MATCH (n) WHERE n.id > 100 DETACH DELETE n` changes" in result.stderr
    assert "// polyshift: backup=Label,:TYPE" in result.stderr and "-- polyshift" not in result.stderr
    assert gws.fingerprint("Doc", "Topic") == before


@pytest.mark.parametrize(("statement", "risk", "scope", "unproven"), [
    ("MATCH (d:Doc) SET d:Document REMOVE d:Doc", "C", ["Doc", "Document"], False),
    ("MATCH (d:Doc)-[r]->(t:Topic) DELETE r", "C", ["Doc", "Topic"], False),
    ("MATCH ()-[m:MENTIONS]->() DELETE m", "C", [":MENTIONS"], False),
    ("MATCH (t:`odd label`) SET t.name = 'x'", "C", ["odd label"], False),
    ("MERGE (k:Key {id: 1}) ON CREATE SET k.new = true ON MATCH SET k.seen = true", "C", ["Key"], False),
    ("MERGE (k:Key {id: 1}) ON CREATE SET k.new = true", "B", [], False),
    ("MATCH (d:Doc) CREATE (d)-[:MENTIONS]->(n:Note) SET n.text = 'x'", "A", [], False),
    ("MATCH (d:Doc) CALL (d) { DETACH DELETE d } IN TRANSACTIONS OF 100 ROWS", "C", ["Doc"], False),
    ("MATCH (n:A) CALL { MATCH (n) DELETE n }", "C", [], True),
    ("MATCH (n) DETACH DELETE n", "C", [], True),
    ("MATCH (n:!Doc) DELETE n", "C", [], True),
    ("MATCH (d:Doc) WITH collect(d) AS ds UNWIND ds AS x DELETE x", "C", [], True),
    ("CALL apoc.periodic.iterate('MATCH (n) RETURN n', 'DETACH DELETE n', {})", "C", [], True),
    ("CREATE INDEX FOR (t:Topic) ON (t.name)", "A", [], False),
    ("DROP INDEX topic_name", "B", [], False),
])
def test_cypher_analysis_reads_what_a_statement_changes(statement: str, risk: str, scope: list[str], unproven: bool) -> None:
    from polyshift.adapters.graph.cypher import analyze

    (result,) = analyze([statement])
    assert (result.risk.value, result.touches, bool(result.unproven)) == (risk, scope, unproven)


def test_the_preflight_disk_check_counts_what_a_graph_backup_will_take(gws: GraphWorkspace, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import shutil
    from collections import namedtuple

    from polyshift.framework.engine.pipeline import DISK_HEADROOM

    _seed(gws)
    before = gws.fingerprint("Doc")
    gws.migration("0001_touch", "// polyshift: backup=Doc\nMATCH (d:Doc) SET d.seen = true;", "MATCH (d:Doc) REMOVE d.seen;")
    usage = namedtuple("usage", "total used free")
    # Room for the headroom and one byte more: enough only if the graph backup counted as nothing.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2 * DISK_HEADROOM, DISK_HEADROOM, DISK_HEADROOM + 1))
    result = gws.run("up")
    assert result.exit_code == 2, result.output
    assert "backups need about" in result.stderr
    assert gws.fingerprint("Doc") == before
    assert gws.q("MATCH (m:__PolyshiftMigration) RETURN count(m)") == [[0]]
