"""Neo4j 5 and newer over Bolt (the official ``neo4j`` driver): transport, schema and data dialect.

- Entities are addressed by ``elementId()`` (``id()`` is deprecated since Neo4j 5): scans stream
  one query per label or type through the driver's lazy record fetching, so memory stays flat
  and no page is ever re-read.
- Data statements of a migration share one transaction (a failure leaves nothing behind); schema
  statements and ``CALL { … } IN TRANSACTIONS`` run on their own, as Neo4j requires.
- Indexes and constraints are captured and re-created from ``SHOW … YIELD createStatement``,
  which carries every kind Community has (range, text, point, full-text, vector with its
  options, lookup, uniqueness) and the Enterprise ones too.
- ``database = "…"`` selects the database for every session (``system`` is refused with the config).
- Driver errors are read by the driver's classes: a statement the server refused (``Neo4jError``)
  is GraphQueryError with its status code, and is retried within a deadline when the driver
  says it is retryable; a server that does not answer (``ServiceUnavailable``,
  ``SessionExpired``, a socket error) is StoreUnavailable.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from polyshift.adapters.boundary import translate
from polyshift.adapters.graph import cypher
from polyshift.adapters.graph.adapter import GraphAdapter
from polyshift.adapters.graph.protocol import GraphQueryError
from polyshift.framework.core.errors import StoreError
from polyshift.framework.core.kinds import NEO4J
from polyshift.framework.core.secrets import redact, url_without_password

# One driver per server for the whole process, closed at exit: a driver is meant to live long
# and pool its connections, and every CLI command of a test run shares it.
_DRIVERS: dict[tuple[str, str | None, str | None], Any] = {}
_DRIVERS_LOCK = threading.Lock()
SCHEMA_SETTLE_SECONDS = 10.0
_RETRY_SECONDS = 10.0
_REL_COLUMNS = ("elementId(r), type(r), properties(r), elementId(a), labels(a), properties(a), "
                "elementId(b), labels(b), properties(b)")


def _close_drivers() -> None:
    for driver in _DRIVERS.values():
        with contextlib.suppress(Exception):  # at exit: nothing left to report to
            driver.close()


atexit.register(_close_drivers)


class Neo4jErrors:
    """The neo4j driver's errors, read by their classes (``DriverErrors`` of polyshift.adapters.boundary)."""

    def __init__(self) -> None:
        from neo4j import exceptions

        self.refused: tuple[type[BaseException], ...] = (exceptions.Neo4jError,)
        self.catches: tuple[type[BaseException], ...] = (exceptions.Neo4jError, exceptions.DriverError, OSError)
        self.connecting: tuple[type[BaseException], ...] = (*self.catches, ValueError)  # ValueError: a URL it cannot use
        self._gone = (exceptions.ServiceUnavailable, exceptions.SessionExpired, OSError)

    def unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, self._gone)

    def retryable(self, exc: BaseException) -> bool:
        """The driver's word: a transient failure (deadlock, leader switch) that rolled the work back whole."""
        return bool(getattr(exc, "is_retryable", lambda: False)())

    def describe(self, exc: BaseException) -> str:
        code, message = getattr(exc, "code", None), getattr(exc, "message", None)
        return redact(f"{code}: {message}" if code and message else str(exc))

    def query_error(self, exc: BaseException) -> GraphQueryError:
        return GraphQueryError(self.describe(exc), code=getattr(exc, "code", None))


class BoltTransaction:
    """An explicit transaction: ``run`` as on the transport; committed by the transport's context manager."""

    def __init__(self, tx: Any, errors: Neo4jErrors) -> None:
        self._tx = tx
        self._errors = errors

    def run(self, statement: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        try:
            return [list(record.values()) for record in self._tx.run(statement, params or {})]
        except self._errors.refused as exc:
            raise self._errors.query_error(exc) from None


class BoltTransport:
    def __init__(self, url: str, *, user: str | None, password: str | None, database: str | None, timeout: float) -> None:
        import neo4j

        self.description = f"neo4j {url_without_password(url)}" + (f" database {database!r}" if database else "")
        self.database = database
        self.timeout = timeout
        self.errors = Neo4jErrors()
        auth = (user, password or "") if user else None
        key = (url, user, password)
        try:
            with _DRIVERS_LOCK:
                if key not in _DRIVERS:
                    driver = neo4j.GraphDatabase.driver(url, auth=auth, connection_timeout=10)
                    driver.verify_connectivity()
                    _DRIVERS[key] = driver
                self.driver = _DRIVERS[key]
        except self.errors.connecting as exc:
            raise translate(self.errors, exc, f"cannot connect to {self.description}") from None

    def _session(self) -> Any:
        return self.driver.session(database=self.database)

    def run(self, statement: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        """One auto-commit transaction. A transient failure (deadlock, leader switch) rolled the
        statement back whole, so it is retried within a deadline, as the driver's managed
        transactions do; batches of ``IN TRANSACTIONS`` may have committed and are not retried."""
        deadline = time.monotonic() + _RETRY_SECONDS
        delay = 0.05
        while True:
            try:
                with self._session() as session:
                    return [list(record.values()) for record in session.run(statement, params or {})]
            except self.errors.refused as exc:
                if self.errors.retryable(exc) and time.monotonic() < deadline and not cypher.in_transactions(statement):
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise self.errors.query_error(exc) from None
            except self.errors.catches as exc:
                raise translate(self.errors, exc, self.description) from None

    def stream(self, statement: str, params: dict[str, Any] | None = None) -> Iterator[list[Any]]:
        """Rows as the driver fetches them (1,000 a round trip), in one read transaction."""
        try:
            with self._session() as session:
                for record in session.run(statement, params or {}):
                    yield list(record.values())
        except self.errors.refused as exc:
            raise self.errors.query_error(exc) from None
        except self.errors.catches as exc:
            raise translate(self.errors, exc, self.description) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[BoltTransaction]:
        """Commits when the block ends cleanly; any exception rolls everything back."""
        try:
            with self._session() as session, session.begin_transaction(timeout=self.timeout) as tx:
                yield BoltTransaction(tx, self.errors)
                tx.commit()
        except self.errors.refused as exc:
            raise self.errors.query_error(exc) from None
        except self.errors.catches as exc:
            raise translate(self.errors, exc, self.description) from None

    def close(self) -> None:
        """The shared driver stays open for the next command in this process (closed at exit)."""


class Neo4jDialect:
    """Schema through SHOW INDEXES / SHOW CONSTRAINTS and their createStatement; data by elementId."""

    name = "neo4j"
    id_function = "elementId"

    def __init__(self, transport: BoltTransport) -> None:
        self.t = transport

    # -- data ---------------------------------------------------------------------------
    def scan_nodes(self, labels: list[str]) -> Iterator[tuple[str, Any, list[str], dict[str, Any]]]:
        """Each node carrying a scope label once, under the first of its labels in the scope."""
        for index, label in enumerate(labels):
            query = (f"MATCH (n:{cypher.name(label)}) WHERE NONE(x IN labels(n) WHERE x IN $earlier) "
                     "RETURN elementId(n), labels(n), properties(n)")
            for node_id, node_labels, props in self.t.stream(query, {"earlier": labels[:index]}):
                yield label, node_id, node_labels, props

    def scan_relationships(self, labels: list[str], types: list[str]) -> Iterator[list[Any]]:
        """Relationships of the scope's types, then those touching a scope node, each exactly once:
        a relationship of another type is read from its start node's first scope label, or, when
        that node has none, from its end node's."""
        for kind in types:
            yield from self.t.stream(f"MATCH (a)-[r:{cypher.name(kind)}]->(b) RETURN {_REL_COLUMNS}")
        for index, label in enumerate(labels):
            params = {"types": types, "labels": labels, "earlier": labels[:index]}
            yield from self.t.stream(f"MATCH (a:{cypher.name(label)})-[r]->(b) WHERE NOT type(r) IN $types "
                                     f"AND NONE(x IN labels(a) WHERE x IN $earlier) RETURN {_REL_COLUMNS}", params)
            yield from self.t.stream(f"MATCH (a)-[r]->(b:{cypher.name(label)}) WHERE NOT type(r) IN $types "
                                     "AND NONE(x IN labels(a) WHERE x IN $labels) AND NONE(x IN labels(b) WHERE x IN $earlier) "
                                     f"RETURN {_REL_COLUMNS}", params)

    def delete_scope(self, labels: list[str], types: list[str], batch: int) -> None:
        """In batches of their own transactions, so a large scope never needs one huge transaction."""
        for label in labels:
            self.t.run(f"MATCH (n:{cypher.name(label)}) CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS OF {batch} ROWS")
        for kind in types:
            self.t.run(f"MATCH ()-[r:{cypher.name(kind)}]->() CALL (r) {{ DELETE r }} IN TRANSACTIONS OF {batch} ROWS")

    # -- schema -------------------------------------------------------------------------
    def _indexes(self) -> list[list[Any]]:
        return self.t.run("SHOW INDEXES YIELD name, type, labelsOrTypes, owningConstraint, createStatement")

    def _constraints(self) -> list[list[Any]]:
        return self.t.run("SHOW CONSTRAINTS YIELD name, labelsOrTypes, createStatement")

    def _schema(self, scope: set[str] | None) -> list[dict[str, Any]]:
        """Indexes (but the built-in token lookups and those a constraint owns) and constraints on
        the scope's labels and types (every one when ``scope`` is None), polyshift's own left out."""
        def wanted(names: list[str] | None) -> bool:
            names = names or []
            if any(str(n).startswith("__Polyshift") for n in names):
                return False
            return scope is None or bool(scope & set(names))

        items = [{"what": "index", "name": r[0], "statement": r[4]} for r in self._indexes()
                 if r[1] != "LOOKUP" and r[3] is None and wanted(r[2])]
        items += [{"what": "constraint", "name": r[0], "statement": r[2]} for r in self._constraints() if wanted(r[1])]
        return items

    def capture(self, labels: set[str], types: set[str]) -> list[dict[str, Any]]:
        return self._schema(labels | types)

    def signature(self) -> list[Any]:
        return sorted(i["statement"] for i in self._schema(None))

    def restore(self, items: list[dict[str, Any]], labels: set[str], types: set[str]) -> None:
        """Make the scope's indexes and constraints exactly the backed-up ones: drop what is not in
        the backup (or differs), then create what is missing, constraints first (they bring their own index)."""
        wanted = {i["statement"] for i in items}
        for item in self._schema(labels | types):
            if item["statement"] not in wanted:
                self.t.run(f"DROP {item['what'].upper()} {cypher.name(item['name'])} IF EXISTS")
        present = {i["statement"] for i in self._schema(None)}
        for item in sorted(items, key=lambda i: i["what"] != "constraint"):
            if item["statement"] not in present:
                self.t.run(item["statement"])

    def ensure_lock_constraint(self, label: str) -> bool:
        self.t.run(f"CREATE CONSTRAINT polyshift_lock_name IF NOT EXISTS FOR (l:{cypher.name(label)}) REQUIRE l.name IS UNIQUE")
        return True

    def problems(self) -> list[str]:
        """Neo4j populates an index in the background; FAILED (or still POPULATING after a wait) is a problem."""
        deadline = time.monotonic() + SCHEMA_SETTLE_SECONDS
        while True:
            rows = self.t.run("SHOW INDEXES YIELD name, state, failureMessage WHERE state <> 'ONLINE' "
                              "RETURN name, state, failureMessage")
            if not rows or all(r[1] == "FAILED" for r in rows) or time.monotonic() >= deadline:
                return [f"index {r[0]} is {r[1]}" + (f": {r[2]}" if r[2] else "") for r in rows]
            time.sleep(0.2)


def _check_server(transport: BoltTransport) -> str:
    """The server's version; refuses what is not Neo4j 5 or newer, and a database it does not have."""
    try:
        rows = transport.run("CALL dbms.components() YIELD name, versions RETURN name, versions[0]")
    except GraphQueryError as exc:
        if exc.code == "Neo.ClientError.Database.DatabaseNotFound":
            raise StoreError(f"{transport.description}: the server has no database {transport.database!r}",
                             hint="check [stores] database; SHOW DATABASES lists them (Community has neo4j and system)") from None
        raise StoreError(f"{transport.description}: not a Neo4j server ({exc})",
                         hint='for FalkorDB use kind = "falkordb" (its native protocol)') from None
    version = str(rows[0][1]) if rows else ""
    major = version.split(".")[0]
    if not major.isdigit() or int(major) < 5:
        raise StoreError(f"{transport.description}: Neo4j {version or '(unknown version)'} is not supported; "
                         "polyshift needs Neo4j 5 or newer")
    return version


class Neo4jAdapter(GraphAdapter):
    """``kind = "neo4j"``: url bolt:// or neo4j://, user (or in the URL), password, database."""

    spec = NEO4J
    kind = NEO4J.name

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.server_version = ""

    def open_transport(self) -> tuple[BoltTransport, Neo4jDialect]:
        from urllib.parse import unquote, urlparse

        parsed = urlparse(self.config.url)
        user = self.config.options.get("user") or (unquote(parsed.username) if parsed.username else None)
        password = self.config.options.get("password") or (unquote(parsed.password) if parsed.password else None)
        # Credentials go to the driver as auth, never inside the URL it may log.
        url = parsed._replace(netloc=f"{parsed.hostname}:{parsed.port}" if parsed.port else str(parsed.hostname)).geturl()
        transport = BoltTransport(url, user=user, password=password, database=self.config.options.get("database"),
                                  timeout=self.config.statement_timeout)
        self.server_version = _check_server(transport)
        return transport, Neo4jDialect(transport)
