"""FalkorDB over its native protocol (the ``falkordb`` client): the transport and the schema dialect.

The native protocol handles quotes, backslashes, unicode and map parameters correctly; every
query is atomic on its own (FalkorDB serialises writes per graph), and there are no
multi-statement transactions: each statement of a migration commits on its own. Results come
back whole, so scans page by id (``WHERE id(n) > $last ORDER BY id(n) LIMIT``), never SKIP.
Every statement goes through GRAPH.QUERY, which creates the graph's key when it is missing, so
a graph nothing was written to yet reads as empty.

The client raises redis-py's exceptions: a server that does not answer is StoreUnavailable, a
statement it refuses GraphQueryError. Whether an index or constraint exists is asked of the
server (``db.indexes()``, ``db.constraints()``), never read from an error's text.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlparse

from polyshift.adapters.boundary import translate
from polyshift.adapters.graph import cypher
from polyshift.adapters.graph.adapter import GraphAdapter
from polyshift.adapters.graph.protocol import GraphQueryError
from polyshift.adapters.redis.errors import REDIS_ERRORS
from polyshift.framework.core.errors import BackupError
from polyshift.framework.core.kinds import FALKORDB
from polyshift.framework.core.secrets import url_without_password


class FalkorTransport:
    def __init__(self, url: str, graph: str, *, timeout: float) -> None:
        from falkordb import FalkorDB

        parsed = urlparse(url)
        self.description = f"falkordb {url_without_password(url)} graph {graph!r}"
        self.graph_name = graph
        # userinfo is percent-encoded in a URL (config writes a password = key that way too).
        password = unquote(parsed.password) if parsed.password else None
        username = unquote(parsed.username) if parsed.username else None
        try:
            self.db = FalkorDB(host=parsed.hostname or "127.0.0.1", port=parsed.port or 6379,
                               password=password, username=username, socket_timeout=timeout)
            self.graph = self.db.select_graph(graph)
            self.db.connection.ping()
        except REDIS_ERRORS.catches as exc:
            raise translate(REDIS_ERRORS, exc, f"cannot connect to {self.description}") from None

    def _failure(self, exc: BaseException) -> Exception:
        """A statement the server refused, or a server that failed us, translated."""
        if REDIS_ERRORS.refused_statement(exc):
            return GraphQueryError(REDIS_ERRORS.describe(exc))
        return translate(REDIS_ERRORS, exc, self.description)

    def run(self, statement: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        try:
            result = self.graph.query(statement, params or None)
        except REDIS_ERRORS.catches as exc:
            raise self._failure(exc) from None
        return [list(row) for row in result.result_set]

    def stream(self, statement: str, params: dict[str, Any] | None = None) -> Iterator[list[Any]]:
        yield from self.run(statement, params)

    def command(self, *args: Any) -> Any:
        try:
            return self.db.connection.execute_command(*args)
        except REDIS_ERRORS.catches as exc:
            raise self._failure(exc) from None

    def close(self) -> None:
        try:
            self.db.connection.close()
        except Exception:  # closing must never mask the error that got us here
            pass


SCHEMA_SETTLE_SECONDS = 10.0


class FalkorDialect:
    """Indexes and constraints through ``CALL db.indexes()`` / ``db.constraints()`` and ``GRAPH.CONSTRAINT``."""

    name = "falkordb"
    id_function = "id"
    page = 2000

    def __init__(self, transport: FalkorTransport) -> None:
        self.t = transport

    def scan_nodes(self, labels: list[str]) -> Iterator[tuple[str, Any, list[str], dict[str, Any]]]:
        for index, label in enumerate(labels):
            last = -1
            query = (f"MATCH (n:{cypher.name(label)}) WHERE id(n) > $last AND NONE(x IN labels(n) WHERE x IN $earlier) "
                     "RETURN id(n), labels(n), properties(n) ORDER BY id(n) LIMIT $batch")
            while True:
                rows = self.t.run(query, {"last": last, "earlier": labels[:index], "batch": self.page})
                for node_id, node_labels, props in rows:
                    yield label, node_id, list(node_labels), dict(props)
                if len(rows) < self.page:
                    break
                last = rows[-1][0]

    def scan_relationships(self, labels: list[str], types: list[str]) -> Iterator[list[Any]]:
        """Paged by source node id, then expanded: paging on id(r) itself made FalkorDB traverse every
        relationship for every page (quadratic), whereas node id ranges and id seeks are direct."""
        last = -1
        page = "MATCH (a) WHERE id(a) > $last RETURN id(a) ORDER BY id(a) LIMIT $batch"
        expand = ("UNWIND $ids AS x MATCH (a) WHERE id(a) = x MATCH (a)-[r]->(b) WHERE type(r) IN $types "
                  "OR any(l IN labels(a) WHERE l IN $labels) OR any(l IN labels(b) WHERE l IN $labels) "
                  "RETURN id(r), type(r), properties(r), id(a), labels(a), properties(a), id(b), labels(b), properties(b)")
        while True:
            ids = [row[0] for row in self.t.run(page, {"last": last, "batch": self.page})]
            if not ids:
                return
            yield from self.t.run(expand, {"ids": ids, "types": types, "labels": labels})
            if len(ids) < self.page:
                return
            last = ids[-1]

    def delete_scope(self, labels: list[str], types: list[str], batch: int) -> None:
        """Batched deletes keep each write small."""
        while self.t.run("MATCH (n) WHERE any(x IN labels(n) WHERE x IN $labels) WITH n LIMIT $batch DETACH DELETE n "
                         "RETURN count(*)", {"labels": labels, "batch": batch})[0][0]:
            pass
        while types and self.t.run("MATCH ()-[r]->() WHERE type(r) IN $types WITH r LIMIT $batch DELETE r RETURN count(*)",
                                   {"types": types, "batch": batch})[0][0]:
            pass

    def capture(self, labels: set[str], types: set[str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for row in self.t.run("CALL db.indexes()"):
            label, properties, kinds, entity = row[0], row[1], row[2], row[6]
            if label not in (labels if entity == "NODE" else types):
                continue
            for prop in properties:
                for kind in kinds.get(prop, []):
                    if kind not in ("RANGE", "FULLTEXT"):
                        raise BackupError(f"{self.t.description}: {kind} index on {label}.{prop} cannot be captured yet")
                    items.append({"what": "index", "kind": kind, "entity": entity, "label": label, "property": prop})
        for row in self.t.run("CALL db.constraints()"):
            kind, label, properties, entity = row[0], row[1], list(row[2]), row[3]
            if label in (labels if entity == "NODE" else types):
                items.append({"what": "constraint", "kind": kind, "entity": entity, "label": label, "properties": properties})
        return sorted(items, key=lambda i: (i["what"] != "index", str(sorted(i.items()))))

    def signature(self) -> list[Any]:
        """Every index and constraint of the graph, for the schema part of a fingerprint."""
        # polyshift's own lock/ledger labels are left out: taking the lock must not change the schema.
        indexes = sorted([r[0], sorted(r[1]), sorted((k, sorted(v)) for k, v in r[2].items()), r[6]]
                         for r in self.t.run("CALL db.indexes()") if not str(r[0]).startswith("__Polyshift"))
        constraints = sorted([r[0], r[1], sorted(r[2]), r[3]] for r in self.t.run("CALL db.constraints()")
                             if not str(r[1]).startswith("__Polyshift"))
        return [indexes, constraints]

    def problems(self) -> list[str]:
        # FalkorDB accepts a constraint as PENDING and builds it in the background: wait for a verdict.
        deadline = time.monotonic() + SCHEMA_SETTLE_SECONDS
        while True:
            failed: list[str] = []
            building: list[str] = []
            for r in self.t.run("CALL db.constraints()"):
                kind, label, properties, status = r[0], r[1], ", ".join(r[2]), r[4]
                if str(label).startswith("__Polyshift") or status == "OPERATIONAL":
                    continue
                what = f"{str(kind).lower()} constraint on {label}({properties})"
                (failed if status == "FAILED" else building).append(what)
            for r in self.t.run("CALL db.indexes()"):
                if r[7] != "OPERATIONAL" and not str(r[0]).startswith("__Polyshift"):
                    building.append(f"index on {r[0]}({', '.join(r[1])})")
            if not building or time.monotonic() >= deadline:
                return [f"{w} FAILED (existing data violates it)" for w in failed] + \
                       [f"{w} is still being built after {SCHEMA_SETTLE_SECONDS:g} s" for w in building]
            time.sleep(0.2)

    def restore(self, items: list[dict[str, Any]], labels: set[str], types: set[str]) -> None:
        """Re-create the backed-up indexes and constraints that are missing."""
        for item in items:
            label = cypher.name(item["label"])
            if item["what"] == "index":
                if item["kind"] == "FULLTEXT":
                    if not self._has_index("NODE", item["label"], item["property"], "FULLTEXT"):
                        self.t.run("CALL db.idx.fulltext.createNodeIndex($l, $p)", {"l": item["label"], "p": item["property"]})
                elif item["entity"] == "NODE":
                    self._create_index(f"CREATE INDEX FOR (n:{label}) ON (n.{cypher.name(item['property'])})",
                                       "NODE", item["label"], item["property"])
                else:
                    self._create_index(f"CREATE INDEX FOR ()-[r:{label}]-() ON (r.{cypher.name(item['property'])})",
                                       item["entity"], item["label"], item["property"])
            else:
                self._create_constraint(item["kind"], item["entity"], item["label"], list(item["properties"]))

    def ensure_lock_constraint(self, label: str) -> bool:
        """A uniqueness constraint on the lock node's name, so two lock nodes can never coexist;
        False when the server would not take it (the lock then relies on MERGE alone)."""
        try:
            self._create_index(f"CREATE INDEX FOR (n:{cypher.name(label)}) ON (n.name)", "NODE", label, "name")
            self._create_constraint("UNIQUE", "NODE", label, ["name"])
        except GraphQueryError:
            return False
        return True

    def _has_index(self, entity: str, label: str, prop: str, kind: str = "RANGE") -> bool:
        return any(r[0] == label and r[6] == entity and kind in r[2].get(prop, []) for r in self.t.run("CALL db.indexes()"))

    def _has_constraint(self, kind: str, entity: str, label: str, properties: list[str]) -> bool:
        return any((r[0], r[1], list(r[2]), r[3]) == (kind, label, properties, entity) for r in self.t.run("CALL db.constraints()"))

    def _create_index(self, statement: str, entity: str, label: str, prop: str) -> None:
        """Create a range index unless the server has it; a runner racing us to it is no failure."""
        if self._has_index(entity, label, prop):
            return
        try:
            self.t.run(statement)
        except GraphQueryError:
            if not self._has_index(entity, label, prop):
                raise

    def _create_constraint(self, kind: str, entity: str, label: str, properties: list[str]) -> None:
        if self._has_constraint(kind, entity, label, properties):
            return
        try:
            self.t.command("GRAPH.CONSTRAINT", "CREATE", self.t.graph_name, kind, entity, label,
                           "PROPERTIES", len(properties), *properties)
        except GraphQueryError:
            if not self._has_constraint(kind, entity, label, properties):
                raise


class FalkorAdapter(GraphAdapter):
    """The graph adapter over FalkorDB's native protocol (``kind = "falkordb"``, ``graph = "name"``)."""

    spec = FALKORDB
    kind = FALKORDB.name

    def open_transport(self) -> tuple[FalkorTransport, FalkorDialect]:
        transport = FalkorTransport(self.config.url, str(self.config.options.get("graph", "polyshift")),
                                    timeout=self.config.statement_timeout)
        return transport, FalkorDialect(transport)
