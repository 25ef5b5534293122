"""A readable account of a graph scope, for naming what differs between two fingerprints: the
indexes and constraints, then per label and per relationship type how many there are and how
many carry each property key (a rollback that loses a relationship property shows here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from polyshift.adapters.graph import cypher

if TYPE_CHECKING:
    from polyshift.adapters.graph.protocol import Runs


def _schema_entries(signature: list[Any]) -> Iterator[str]:
    """Each index and constraint of a dialect's signature (Neo4j: statements; FalkorDB: two lists)."""
    for part in signature:
        if isinstance(part, list) and all(isinstance(p, list) for p in part):
            yield from (json.dumps(p, sort_keys=True, default=str) for p in part)
        else:
            yield part if isinstance(part, str) else json.dumps(part, sort_keys=True, default=str)


def account(run: Runs, signature: list[Any], labels: list[str], types: list[str]) -> dict[str, str]:
    out = {f"index or constraint {entry}": "present" for entry in sorted(_schema_entries(signature))}
    for label in labels:
        match = f"MATCH (n:{cypher.name(label)})"
        out[f"nodes :{label}"] = str(run.run(f"{match} RETURN count(n)")[0][0])
        for key, n in sorted(run.run(f"{match} UNWIND keys(n) AS k RETURN k, count(*)")):
            out[f"property {key} of :{label} nodes"] = f"on {n}"
    for kind in types:
        match = f"MATCH ()-[r:{cypher.name(kind)}]->()"
        out[f"relationships :{kind}"] = str(run.run(f"{match} RETURN count(r)")[0][0])
        for key, n in sorted(run.run(f"{match} UNWIND keys(r) AS k RETURN k, count(*)")):
            out[f"property {key} of :{kind} relationships"] = f"on {n}"
    return out
