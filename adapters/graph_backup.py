"""Scoped graph backups: nodes carrying the scope's labels, and relationships of the scope's types
or touching those nodes, streamed as JSONL (paged by node id, never SKIP) with the indexes and
constraints on those labels. Internal ids change on restore, so fingerprints are by content:
a node is its labels and properties, a relationship its type, properties and both endpoints'
content.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from adapters import cypher
from framework.concurrency import batched
from framework.errors import BackupCorruptError, BackupError
from framework.protocol import Fingerprint, RestoreReport

if TYPE_CHECKING:
    from adapters.graph import GraphAdapter
    from framework.artifacts import ArtifactStore, ArtifactWriter, Manifest
    from framework.progress import Progress

BATCH = 2000
RELATIONSHIPS = "relationships"


def _plain(value: Any) -> Any:
    """Property values as JSON; anything else (points, temporal types) is refused by name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    raise BackupError(f"property value of type {type(value).__name__} cannot be backed up yet: {value!r}")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def node_digest(labels: list[str], props: dict[str, Any]) -> str:
    return hashlib.sha256(_dumps([sorted(labels), _plain(props)]).encode()).hexdigest()


def rel_digest(kind: str, props: dict[str, Any], start: str, end: str) -> str:
    return hashlib.sha256(_dumps([kind, _plain(props), start, end]).encode()).hexdigest()


def scope_nodes(g: GraphAdapter, labels: list[str]) -> Iterator[tuple[str, int, list[str], dict[str, Any]]]:
    """(label it is counted under, id, labels, properties), each node once, paged by id."""
    for index, label in enumerate(labels):
        last = -1
        query = (f"MATCH (n:{cypher.name(label)}) WHERE id(n) > $last AND NONE(x IN labels(n) WHERE x IN $earlier) "
                 "RETURN id(n), labels(n), properties(n) ORDER BY id(n) LIMIT $batch")
        while True:
            rows = g.run(query, {"last": last, "earlier": labels[:index], "batch": BATCH})
            for node_id, node_labels, props in rows:
                yield label, node_id, list(node_labels), dict(props)
            if len(rows) < BATCH:
                break
            last = rows[-1][0]


def scope_relationships(g: GraphAdapter, labels: list[str], types: list[str]) -> Iterator[list[Any]]:
    """Relationships of the scope's types or touching a scope node, with both endpoints.

    Paged by source node id, then expanded: paging on id(r) itself made FalkorDB traverse every
    relationship for every page (quadratic), whereas node id ranges and id seeks are direct.
    """
    last = -1
    # The ids go back as a parameter: bounded where the server cannot take large ones (FalkorDB
    # over Bolt crashes above ~4 KB); a PackStream integer takes at most 9 bytes.
    batch = min(BATCH, g.max_param_bytes // 9) if g.max_param_bytes else BATCH
    page = ("MATCH (a) WHERE id(a) > $last RETURN id(a) ORDER BY id(a) LIMIT $batch")
    expand = ("UNWIND $ids AS x MATCH (a) WHERE id(a) = x MATCH (a)-[r]->(b) WHERE type(r) IN $types "
              "OR any(l IN labels(a) WHERE l IN $labels) OR any(l IN labels(b) WHERE l IN $labels) "
              "RETURN id(r), type(r), properties(r), id(a), labels(a), properties(a), id(b), labels(b), properties(b)")
    while True:
        ids = [row[0] for row in g.run(page, {"last": last, "batch": batch})]
        if not ids:
            return
        yield from g.run(expand, {"ids": ids, "types": types, "labels": labels})
        if len(ids) < batch:
            return
        last = ids[-1]


class _Tally:
    def __init__(self, entries: list[str]) -> None:
        self.sums = dict.fromkeys(entries, 0)
        self.counts = dict.fromkeys(entries, 0)

    def add(self, entry: str, digest: str) -> None:
        self.sums[entry] = (self.sums[entry] + int(digest[:32], 16)) % (1 << 128)
        self.counts[entry] += 1

    def fingerprint(self, schema: list[Any]) -> Fingerprint:
        items: dict[str, dict[str, Any]] = {e: {"data": f"{self.sums[e]:032x}", "rows": self.counts[e]} for e in self.sums}
        data = hashlib.sha256(_dumps(items).encode()).hexdigest()
        # Labels are a graph's shape: the content stands in for the schema, with indexes and constraints.
        return Fingerprint(hashlib.sha256(_dumps([schema, data]).encode()).hexdigest(), data, dict(self.counts), items)


def _entries(labels: list[str], types: list[str]) -> list[str]:
    return [*labels, *(":" + t for t in types), RELATIONSHIPS]


def _rel_entry(kind: str, types: list[str]) -> str:
    return ":" + kind if kind in types else RELATIONSHIPS


def fingerprint(g: GraphAdapter, labels: list[str], types: list[str]) -> Fingerprint:
    tally = _Tally(_entries(labels, types))
    for label, _id, node_labels, props in scope_nodes(g, labels):
        tally.add(label, node_digest(node_labels, props))
    for _rid, kind, props, _a, a_labels, a_props, _b, b_labels, b_props in scope_relationships(g, labels, types):
        tally.add(_rel_entry(kind, types), rel_digest(kind, props, node_digest(a_labels, a_props), node_digest(b_labels, b_props)))
    return tally.fingerprint(g.dialect.signature())


def backup(g: GraphAdapter, labels: list[str], types: list[str], writer: ArtifactWriter, progress: Progress) -> dict[str, Any]:
    tally = _Tally(_entries(labels, types))
    schema = g.dialect.capture(set(labels), set(types))
    in_scope = set(labels)
    progress.start(f"backup {', '.join(labels + [':' + t for t in types])[:60]}")

    def nodes() -> Iterator[bytes]:
        for label, node_id, node_labels, props in scope_nodes(g, labels):
            tally.add(label, node_digest(node_labels, props))
            progress.advance(1)
            yield (_dumps({"id": node_id, "labels": node_labels, "props": _plain(props)}) + "\n").encode()

    def relationships() -> Iterator[bytes]:
        for rid, kind, props, a, a_labels, a_props, b, b_labels, b_props in scope_relationships(g, labels, types):
            tally.add(_rel_entry(kind, types), rel_digest(kind, props, node_digest(a_labels, a_props), node_digest(b_labels, b_props)))
            progress.advance(1)
            yield (_dumps({"id": rid, "type": kind, "props": _plain(props), "start": a, "end": b,
                           "start_in_scope": bool(in_scope & set(a_labels)), "end_in_scope": bool(in_scope & set(b_labels))})
                   + "\n").encode()

    try:
        writer.write_stream("nodes.jsonl.zst", _chunked(nodes()))
        writer.write_stream("relationships.jsonl.zst", _chunked(relationships()))
        writer.write_bytes("schema.json.zst", _dumps(schema).encode())
    finally:
        progress.finish()
    return {"labels": labels, "types": types, "counts": dict(tally.counts), "dialect": g.dialect.name,
            "fingerprint": tally.fingerprint(g.dialect.signature()).to_json()}


def _chunked(lines: Iterator[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    buffer = bytearray()
    for line in lines:
        buffer += line
        if len(buffer) >= size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _lines(artifacts: ArtifactStore, manifest: Manifest, name: str) -> Iterator[dict[str, Any]]:
    with artifacts.open(manifest, name) as raw:
        for line in io.TextIOWrapper(raw, encoding="utf-8"):  # type: ignore[arg-type]
            if line.strip():
                yield json.loads(line)


def _bounded(rows: list[dict[str, Any]], max_bytes: int | None) -> Iterator[list[dict[str, Any]]]:
    """Rows split so each statement's parameters stay under ``max_bytes`` of JSON."""
    if max_bytes is None:
        yield rows
        return
    chunk: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        row_size = len(_dumps(row).encode())
        if chunk and size + row_size > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row_size
    if chunk:
        yield chunk


def restore(g: GraphAdapter, manifest: Manifest, artifacts: ArtifactStore, progress: Progress) -> RestoreReport:
    """Delete the scope, recreate nodes by label set (old id → new id), then relationships, then schema."""
    labels, types = manifest.meta.get("labels"), manifest.meta.get("types")
    if labels is None or types is None:
        raise BackupCorruptError(f"backup {manifest.id}: manifest lists no labels/types")
    progress.start(f"restore {manifest.id}", total=sum(manifest.meta.get("counts", {}).values()) or None)
    # Batched deletes keep each write small; DETACH removes the relationships touching scope nodes.
    while g.run("MATCH (n) WHERE any(x IN labels(n) WHERE x IN $labels) WITH n LIMIT $batch DETACH DELETE n RETURN count(*)",
                {"labels": labels, "batch": BATCH})[0][0]:
        pass
    while types and g.run("MATCH ()-[r]->() WHERE type(r) IN $types WITH r LIMIT $batch DELETE r RETURN count(*)",
                          {"types": types, "batch": BATCH})[0][0]:
        pass
    new_ids: dict[int, int] = {}
    for batch in batched(_lines(artifacts, manifest, "nodes.jsonl.zst"), BATCH):
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for node in batch:
            groups.setdefault(tuple(sorted(node["labels"])), []).append({"id": node["id"], "p": node["props"]})
        for label_set, rows in groups.items():
            for part in _bounded(rows, g.max_param_bytes):
                created = g.run(f"UNWIND $rows AS row CREATE (n{cypher.labels(label_set)}) SET n = row.p RETURN row.id, id(n)",
                                {"rows": part})
                new_ids.update({old: new for old, new in created})
        progress.advance(len(batch))
    missing = 0
    for batch in batched(_lines(artifacts, manifest, "relationships.jsonl.zst"), BATCH):
        groups_r: dict[str, list[dict[str, Any]]] = {}
        for rel in batch:
            start = new_ids.get(rel["start"]) if rel["start_in_scope"] else rel["start"]
            end = new_ids.get(rel["end"]) if rel["end_in_scope"] else rel["end"]
            if start is None or end is None:
                missing += 1
                continue
            groups_r.setdefault(rel["type"], []).append({"s": start, "e": end, "p": rel["props"]})
        for kind, rows in groups_r.items():
            for part in _bounded(rows, g.max_param_bytes):
                # Endpoints are projected to plain variables first: FalkorDB turns `id(a) = s` into an id
                # seek, but `id(a) = row.s` into a scan of every node per row (quadratic restores).
                created = g.run(f"UNWIND $rows AS row WITH row.s AS s, row.e AS e, row.p AS p "
                                f"MATCH (a) WHERE id(a) = s MATCH (b) WHERE id(b) = e "
                                f"CREATE (a)-[r:{cypher.name(kind)}]->(b) SET r = p RETURN count(r)", {"rows": part})
                missing += len(part) - int(created[0][0] if created else 0)
        progress.advance(len(batch))
    g.dialect.restore(json.loads(b"".join(artifacts.iter_chunks(manifest, "schema.json.zst"))))
    progress.finish()
    now = fingerprint(g, labels, types)
    expected = Fingerprint.from_json(manifest.meta["fingerprint"])
    mismatches = []
    if missing:
        mismatches.append(f"{missing} relationships could not be recreated (an endpoint outside the scope is gone)")
    if now.data_hash != expected.data_hash:
        differing = [e for e in now.items if now.items[e] != expected.items.get(e)]
        mismatches.append(f"content differs from the backup for {', '.join(differing)}")
    elif now.schema_hash != expected.schema_hash:
        mismatches.append("indexes or constraints differ from the backup")
    return RestoreReport(manifest.id, dict(now.counts), verified=not mismatches, mismatches=tuple(mismatches))
