"""Scoped graph backups: nodes carrying the scope's labels, and relationships of the scope's types
or touching those nodes, streamed as JSONL (as the dialect scans them: streamed by label on Neo4j,
paged by id on FalkorDB, never SKIP) with the indexes and constraints on those labels. Property
values keep their types (``polyshift.adapters.graph.values``). Ids change on restore, so fingerprints are by
content: a node is its labels and properties, a relationship its type, properties and both
endpoints' content.

What these need of a server is its dialect (scans, schema) and a way to run Cypher: never the
adapter, so nothing here imports it.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from polyshift.adapters.graph import cypher
from polyshift.adapters.graph.values import decode_props, encode
from polyshift.framework.core.concurrency import batched
from polyshift.framework.core.errors import BackupCorruptError
from polyshift.framework.core.protocol import Fingerprint, RestoreReport

if TYPE_CHECKING:
    from polyshift.adapters.graph.protocol import Dialect, Runs
    from polyshift.framework.control.artifacts import ArtifactStore, ArtifactWriter, Manifest
    from polyshift.framework.core.progress import Progress

BATCH = 2000
RELATIONSHIPS = "relationships"
_SAMPLE = 200                 # entities read per label or type to estimate a backup's size
_SCHEMA_BYTES = 64 * 1024     # schema.json and the manifest, generously


def _plain(props: dict[str, Any]) -> dict[str, Any]:
    return {str(k): encode(v) for k, v in props.items()}


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def node_digest(labels: list[str], props: dict[str, Any]) -> str:
    return hashlib.sha256(_dumps([sorted(labels), _plain(props)]).encode()).hexdigest()


def rel_digest(kind: str, props: dict[str, Any], start: str, end: str) -> str:
    return hashlib.sha256(_dumps([kind, _plain(props), start, end]).encode()).hexdigest()


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


def fingerprint(dialect: Dialect, labels: list[str], types: list[str]) -> Fingerprint:
    tally = _Tally(_entries(labels, types))
    for label, _id, node_labels, props in dialect.scan_nodes(labels):
        tally.add(label, node_digest(node_labels, props))
    for _rid, kind, props, _a, a_labels, a_props, _b, b_labels, b_props in dialect.scan_relationships(labels, types):
        tally.add(_rel_entry(kind, types), rel_digest(kind, props, node_digest(a_labels, a_props), node_digest(b_labels, b_props)))
    return tally.fingerprint(dialect.signature())


def _node_line(node_id: Any, labels: list[str], props: dict[str, Any]) -> bytes:
    return (_dumps({"id": node_id, "labels": labels, "props": _plain(props)}) + "\n").encode()


def _rel_line(rid: Any, kind: str, props: dict[str, Any], start: Any, end: Any, start_in_scope: bool, end_in_scope: bool) -> bytes:
    return (_dumps({"id": rid, "type": kind, "props": _plain(props), "start": start, "end": end,
                    "start_in_scope": start_in_scope, "end_in_scope": end_in_scope}) + "\n").encode()


def estimate_bytes(dialect: Dialect, graph: Runs, labels: list[str], types: list[str]) -> int:
    """What the scope's backup files hold before compression: each label's and type's count times
    the mean size of a sample of its lines, as ``backup`` writes them. The artifacts are compressed
    (JSON lines shrink several-fold), so this bounds them from above. Counting is cheap where the
    server keeps counts (Neo4j's count store, FalkorDB's label matrices); a node with two scope
    labels, or a relationship reached from both ends, is counted twice, which only errs high."""
    if not labels and not types:
        return 0
    id_of = dialect.id_function
    node_patterns = [f"(n:{cypher.name(label)})" for label in labels]
    rel_patterns = [f"(a)-[r:{cypher.name(kind)}]->(b)" for kind in types]
    for label in labels:
        rel_patterns += [f"(a:{cypher.name(label)})-[r]->(b)", f"(a)-[r]->(b:{cypher.name(label)})"]
    total = _SCHEMA_BYTES
    for pattern in node_patterns:
        total += _sampled(graph, pattern, "n", f"{id_of}(n), labels(n), properties(n)",
                          lambda row: _node_line(row[0], row[1], row[2]))
    for pattern in rel_patterns:
        total += _sampled(graph, pattern, "r", f"{id_of}(r), type(r), properties(r), {id_of}(a), {id_of}(b)",
                          lambda row: _rel_line(row[0], row[1], row[2], row[3], row[4], True, True))
    return total


def _sampled(graph: Runs, pattern: str, entity: str, columns: str, line: Callable[[list[Any]], bytes]) -> int:
    """Entities matching ``pattern`` times the mean size of the lines of up to _SAMPLE of them."""
    count = int(graph.run(f"MATCH {pattern} RETURN count({entity})")[0][0])
    if not count:
        return 0
    rows = graph.run(f"MATCH {pattern} WITH {'a, r, b' if entity == 'r' else 'n'} LIMIT $sample RETURN {columns}",
                     {"sample": _SAMPLE})
    sizes = [len(line(row)) for row in rows]
    return count * -(-sum(sizes) // max(len(sizes), 1))


def backup(dialect: Dialect, labels: list[str], types: list[str], writer: ArtifactWriter, progress: Progress) -> dict[str, Any]:
    tally = _Tally(_entries(labels, types))
    schema = dialect.capture(set(labels), set(types))
    in_scope = set(labels)
    progress.start(f"backup {', '.join(labels + [':' + t for t in types])[:60]}")

    def nodes() -> Iterator[bytes]:
        for label, node_id, node_labels, props in dialect.scan_nodes(labels):
            tally.add(label, node_digest(node_labels, props))
            progress.advance(1)
            yield _node_line(node_id, node_labels, props)

    def relationships() -> Iterator[bytes]:
        for rid, kind, props, a, a_labels, a_props, b, b_labels, b_props in dialect.scan_relationships(labels, types):
            tally.add(_rel_entry(kind, types), rel_digest(kind, props, node_digest(a_labels, a_props), node_digest(b_labels, b_props)))
            progress.advance(1)
            yield _rel_line(rid, kind, props, a, b, bool(in_scope & set(a_labels)), bool(in_scope & set(b_labels)))

    try:
        writer.write_stream("nodes.jsonl.zst", _chunked(nodes()))
        writer.write_stream("relationships.jsonl.zst", _chunked(relationships()))
        writer.write_bytes("schema.json.zst", _dumps(schema).encode())
    finally:
        progress.finish()
    return {"labels": labels, "types": types, "counts": dict(tally.counts), "dialect": dialect.name,
            "fingerprint": tally.fingerprint(dialect.signature()).to_json()}


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
        for line in io.TextIOWrapper(raw, encoding="utf-8"):
            if line.strip():
                yield json.loads(line)


def restore(dialect: Dialect, graph: Runs, manifest: Manifest, artifacts: ArtifactStore, progress: Progress) -> RestoreReport:
    """Delete the scope, recreate nodes by label set (old id → new id), then relationships, then schema."""
    labels, types = manifest.meta.get("labels"), manifest.meta.get("types")
    if labels is None or types is None:
        raise BackupCorruptError(f"backup {manifest.id}: manifest lists no labels/types")
    progress.start(f"restore {manifest.id}", total=sum(manifest.meta.get("counts", {}).values()) or None)
    # DETACH removes the relationships touching scope nodes too.
    dialect.delete_scope(labels, types, BATCH)
    id_of = dialect.id_function
    new_ids: dict[Any, Any] = {}
    for batch in batched(_lines(artifacts, manifest, "nodes.jsonl.zst"), BATCH):
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for node in batch:
            groups.setdefault(tuple(sorted(node["labels"])), []).append({"id": node["id"], "p": decode_props(node["props"])})
        for label_set, rows in groups.items():
            created = graph.run(f"UNWIND $rows AS row CREATE (n{cypher.labels(label_set)}) SET n = row.p RETURN row.id, {id_of}(n)",
                            {"rows": rows})
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
            groups_r.setdefault(rel["type"], []).append({"s": start, "e": end, "p": decode_props(rel["props"])})
        for kind, rows in groups_r.items():
            # Endpoints are projected to plain variables first: FalkorDB turns `id(a) = s` into an id
            # seek, but `id(a) = row.s` into a scan of every node per row (quadratic restores).
            created = graph.run(f"UNWIND $rows AS row WITH row.s AS s, row.e AS e, row.p AS p "
                            f"MATCH (a) WHERE {id_of}(a) = s MATCH (b) WHERE {id_of}(b) = e "
                            f"CREATE (a)-[r:{cypher.name(kind)}]->(b) SET r = p RETURN count(r)", {"rows": rows})
            missing += len(rows) - int(created[0][0] if created else 0)
        progress.advance(len(batch))
    dialect.restore(json.loads(b"".join(artifacts.iter_chunks(manifest, "schema.json.zst"))), set(labels), set(types))
    progress.finish()
    now = fingerprint(dialect, labels, types)
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
