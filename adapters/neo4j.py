"""Neo4j over Bolt (the official ``neo4j`` driver), the production path for graph stores.

The schema dialect is chosen by probing what the server answers, never by its agent string
(FalkorDB's Bolt endpoint calls itself Neo4j 5.13): ``SHOW INDEXES`` means Neo4j 5, and
``CALL db.indexes()`` means FalkorDB, whose constraints can only be created natively.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Any

from adapters.falkordb import SCHEMA_SETTLE_SECONDS, FalkorDialect
from adapters.graph import Dialect, GraphAdapter, GraphQueryError
from framework.config import setting_duration
from framework.errors import StoreError
from framework.secrets import redact, url_without_password

# id() is deprecated in Neo4j 5 (elementId is not portable to FalkorDB): keep its notices out of logs.
logging.getLogger("neo4j.notifications").setLevel(logging.ERROR)


# One driver per server for the whole process, closed at exit. A driver is meant to live long and
# pool its connections; opening one per command also made FalkorDB's Bolt endpoint hang for 60 s
# on the handshake of every other new connection after a client disconnected.
_DRIVERS: dict[tuple[str, str | None, str | None], Any] = {}
_DRIVERS_LOCK = threading.Lock()


def _close_drivers() -> None:
    for driver in _DRIVERS.values():
        try:
            driver.close()
        except Exception:  # at exit: nothing left to report to
            pass


atexit.register(_close_drivers)


class BoltTransport:
    def __init__(self, url: str, *, user: str | None, password: str | None, database: str | None, timeout: float) -> None:
        import neo4j

        self.description = f"neo4j {url_without_password(url)}" + (f" database {database!r}" if database else "")
        self.database = database
        auth = (user, password or "") if user else None
        key = (url, user, password)
        try:
            with _DRIVERS_LOCK:
                if key not in _DRIVERS:
                    driver = neo4j.GraphDatabase.driver(url, auth=auth, connection_timeout=10)
                    driver.verify_connectivity()
                    _DRIVERS[key] = driver
                self.driver = _DRIVERS[key]
        except (neo4j.exceptions.DriverError, neo4j.exceptions.Neo4jError, OSError, ValueError) as exc:
            raise StoreError(f"cannot connect to {self.description}: {redact(str(exc))}") from None
        self._neo4j = neo4j

    def run(self, statement: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        """One auto-commit transaction per statement (schema and data writes never share one)."""
        errors = self._neo4j.exceptions
        for attempt in (1, 2):
            try:
                with self.driver.session(database=self.database) as session:
                    return [list(record.values()) for record in session.run(statement, params or {})]
            except errors.Neo4jError as exc:
                raise GraphQueryError(f"{exc.code}: {exc.message}" if getattr(exc, "message", None) else str(exc)) from None
            except (errors.SessionExpired, errors.ServiceUnavailable) as exc:
                # A pooled connection the server had already dropped (FalkorDB's endpoint drops one after
                # every error): the statement never reached the server, so one retry on a fresh
                # connection is safe. The driver's own managed transactions retry these errors too.
                if attempt == 2 or "defunct" not in str(exc):
                    raise StoreError(f"{self.description}: {redact(str(exc))}") from None
            except (errors.DriverError, OSError) as exc:
                raise StoreError(f"{self.description}: {redact(str(exc))}") from None
        raise AssertionError("unreachable")

    def run_schema(self, statement: str) -> None:
        self.run(statement)

    def close(self) -> None:
        """The shared driver stays open for the next command in this process (closed at exit)."""


class Neo4jDialect:
    """Indexes and constraints through SHOW INDEXES / SHOW CONSTRAINTS and their createStatement."""

    name = "neo4j"

    def __init__(self, transport: BoltTransport) -> None:
        self.t = transport

    def _indexes(self) -> list[list[Any]]:
        return self.t.run("SHOW INDEXES YIELD name, type, labelsOrTypes, owningConstraint, createStatement")

    def _constraints(self) -> list[list[Any]]:
        return self.t.run("SHOW CONSTRAINTS YIELD name, labelsOrTypes, createStatement")

    def capture(self, labels: set[str], types: set[str]) -> list[dict[str, Any]]:
        scope = labels | types
        items = [{"what": "index", "statement": r[4]} for r in self._indexes()
                 if r[1] != "LOOKUP" and r[3] is None and scope & set(r[2] or [])]
        items += [{"what": "constraint", "statement": r[2]} for r in self._constraints() if scope & set(r[1] or [])]
        return items

    def signature(self) -> list[Any]:
        def ours(names: list[str] | None) -> bool:
            return any(str(n).startswith("__Polyshift") for n in names or [])

        return [sorted(r[4] for r in self._indexes() if r[1] != "LOOKUP" and r[3] is None and not ours(r[2])),
                sorted(r[2] for r in self._constraints() if not ours(r[1]))]

    def restore(self, items: list[dict[str, Any]]) -> None:
        for item in sorted(items, key=lambda i: i["what"] != "constraint"):  # constraints bring their own indexes
            try:
                self.t.run_schema(item["statement"])
            except GraphQueryError as exc:
                if "EquivalentSchemaRuleAlreadyExists" not in str(exc) and "already exists" not in str(exc).lower():
                    raise

    def ensure_lock_constraint(self, label: str) -> bool:
        self.t.run_schema(f"CREATE CONSTRAINT polyshift_lock_name IF NOT EXISTS FOR (l:`{label}`) REQUIRE l.name IS UNIQUE")
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


def probe_dialect(transport: BoltTransport) -> Dialect:
    try:
        transport.run("SHOW INDEXES YIELD name RETURN name LIMIT 1")
        return Neo4jDialect(transport)
    except GraphQueryError:
        pass
    try:
        transport.run("CALL db.indexes()")
    except GraphQueryError:
        raise StoreError(f"{transport.description}: answers neither SHOW INDEXES nor CALL db.indexes(); "
                         "cannot capture its schema") from None
    return FalkorDialect(transport)  # type: ignore[arg-type]


class Neo4jAdapter(GraphAdapter):
    """``kind = "neo4j"``: url bolt:// or neo4j://, user, password, database."""

    kind = "neo4j"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        if "lock_ttl" in config.options:
            self.lock_ttl_ms = int(setting_duration(config.options["lock_ttl"], "lock_ttl", where=f"[stores.{config.name}]") * 1000)

    def open_transport(self) -> tuple[BoltTransport, Dialect]:
        from urllib.parse import unquote, urlparse

        parsed = urlparse(self.config.url)
        user = self.config.options.get("user") or (unquote(parsed.username) if parsed.username else None)
        password = unquote(parsed.password) if parsed.password else None
        # Credentials go to the driver as auth, never inside the URL it may log.
        url = parsed._replace(netloc=f"{parsed.hostname}:{parsed.port}" if parsed.port else str(parsed.hostname)).geturl()
        transport = BoltTransport(url, user=user, password=password, database=self.config.options.get("database"),
                                  timeout=self.config.statement_timeout)
        dialect = probe_dialect(transport)
        if isinstance(dialect, FalkorDialect):
            # FalkorDB 4.16's Bolt endpoint segfaults on a message whose parameters pass about 4 KB
            # (measured: 50 map rows, 400 short strings); keep every batch well under that.
            self.max_param_bytes = 3000
        return transport, dialect
