"""neo4j-migrations on real Neo4j: the imported Cypher runs, and a graph the tool migrated is
baselined from its ``:__Neo4jMigration`` nodes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import GraphWorkspace, graph_workspace

SRC = Path(__file__).parent / "data" / "adopt" / "neo4j-migrations"


@pytest.fixture
def neo4j(request: pytest.FixtureRequest, tmp_path: Path, state_url: str) -> Iterator[GraphWorkspace]:
    ws = graph_workspace(request, tmp_path, "neo4j-5.26", state_url)
    yield ws
    ws.close()


def _import(ws: GraphWorkspace) -> None:
    result = ws.run("import", "--from", "neo4j-migrations", str(SRC / "neo4j" / "migrations"), "--store", "graph",
                    "--rollbacks", str(SRC / "rollbacks"))
    assert result.exit_code == 0, result.output


def test_a_graph_neo4j_migrations_brought_to_a_version_is_baselined_from_its_nodes(neo4j: GraphWorkspace) -> None:
    _import(neo4j)
    neo4j.q("CREATE CONSTRAINT person_name IF NOT EXISTS FOR (p:Person) REQUIRE p.name IS UNIQUE")
    neo4j.q("CREATE (b:__Neo4jMigration {version: 'BASELINE'})-[:MIGRATED_TO]->"
            "(:__Neo4jMigration {version: '0001', description: 'Person constraint', type: 'CYPHER', "
            "source: 'V0001__Person_constraint.cypher', checksum: '1100083332'})")
    refused = neo4j.run("up")
    assert refused.exit_code == 2 and "neo4j-migrations history" in refused.stderr
    result = neo4j.run("--json", "baseline", "--store", "graph")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["versions"] == ["0001"]
    status = json.loads(neo4j.run("--json", "status").stdout)[0]
    assert status["current"] == "0001" and status["pending"] == ["0002", "0003"]


def test_imported_cypher_runs_and_rolls_back(neo4j: GraphWorkspace) -> None:
    _import(neo4j)
    up = neo4j.run("up", "--to", "0002")
    assert up.exit_code == 0, up.output
    assert neo4j.q("MATCH (g:Genre) RETURN count(g)") == [[3]]
    down = neo4j.run("rollback", "--to", "0")
    assert down.exit_code == 0, down.output
    assert neo4j.q("MATCH (g:Genre) RETURN count(g)") == [[0]]
