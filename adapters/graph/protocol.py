"""What the graph logic needs of a graph server: a transport that runs Cypher, and a dialect for
what servers do differently. The adapter, the backups and the servers' modules all import these
from here, so none of them imports another to learn the contracts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from polyshift.framework.core.secrets import redact


class GraphQueryError(Exception):
    """The server answered a statement with an error (a transport raises it from its driver's own
    class for that: neo4j's Neo4jError, redis-py's ResponseError); the adapter turns it into a
    StepFailed or StoreError. ``code`` is the server's status code where it has one
    (Neo4j's ``Neo.ClientError…``). A server that does not answer is StoreUnavailable instead."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class QueryErrors:
    """``DriverErrors`` (polyshift.adapters.boundary) of a graph transport: the statements it refused."""

    catches: tuple[type[BaseException], ...] = (GraphQueryError,)

    def unavailable(self, exc: BaseException) -> bool:
        return False  # a transport reports a server that does not answer as StoreUnavailable itself

    def describe(self, exc: BaseException) -> str:
        return redact(str(exc))


QUERY_ERRORS = QueryErrors()


class Runs(Protocol):
    def run(self, statement: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        """The statement's rows, each a list of values; GraphQueryError when the server refuses it."""
        ...


@runtime_checkable
class Transport(Runs, Protocol):
    """``run`` is one auto-commit statement; ``stream`` yields rows as the server sends them."""

    description: str

    def stream(self, statement: str, params: dict[str, Any] | None = None) -> Iterator[list[Any]]: ...
    def close(self) -> None: ...


@runtime_checkable
class Transactional(Protocol):
    """Optional: a transport whose statements can share one transaction (committed on a clean exit)."""

    def transaction(self) -> AbstractContextManager[Runs]: ...


class Dialect(Protocol):
    """What differs between graph servers: how entities are addressed and scanned, and the schema."""

    name: str
    id_function: str    # the Cypher function giving an entity's id ("elementId" or "id")

    def scan_nodes(self, labels: list[str]) -> Iterator[tuple[str, Any, list[str], dict[str, Any]]]:
        """(scope label it counts under, id, labels, properties) of each node carrying a scope label, once."""
        ...

    def scan_relationships(self, labels: list[str], types: list[str]) -> Iterator[list[Any]]:
        """(id, type, properties, start id, labels, properties, end id, labels, properties) of each
        relationship of a scope type or touching a scope node, once."""
        ...

    def delete_scope(self, labels: list[str], types: list[str], batch: int) -> None: ...
    def capture(self, labels: set[str], types: set[str]) -> list[dict[str, Any]]: ...
    def signature(self) -> list[Any]: ...
    def restore(self, items: list[dict[str, Any]], labels: set[str], types: set[str]) -> None: ...
    def ensure_lock_constraint(self, label: str) -> bool: ...
    def problems(self) -> list[str]:
        """Indexes or constraints that are not serving: FAILED, or still being built after a wait."""
        ...
