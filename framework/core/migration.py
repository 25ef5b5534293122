"""The store-neutral migration record and the Migration protocol that steps follow."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from polyshift.framework.core.errors import UsageError

T = TypeVar("T")
_VERSION = re.compile(r"^\d+(?:\.\d+)*$")


class Risk(StrEnum):
    """Rollback risk, in the A/B/C vocabulary of the usual rollback-strategy documents.

    A: additive and safe (new table, nullable column, index).
    B: moderate (type change, NOT NULL with default, index rebuild, constraint validation).
    C: high (drop column/table, truncate, bulk update/delete): always backed up.
    """

    A = "A"
    B = "B"
    C = "C"

    @staticmethod
    def highest(risks: list[Risk]) -> Risk:
        return max(risks, key=lambda r: r.value) if risks else Risk.A


@dataclass(frozen=True)
class ScriptLanguage:
    """The language of a store kind's migration scripts (``polyshift.framework.core.kinds``)."""

    extension: str                  # "sql": files are <version>_<slug>.forward.sql
    comment: str                    # line comment that carries directives: "-- polyshift: backup=..."
    scope_example: str              # what a backup scope lists, for hints: "table", "Label,:TYPE"
    nested_block_comments: bool     # PostgreSQL nests /* */ comments; Cypher does not


@dataclass
class MigrationContext:
    """What a Python step receives. ``client`` by kind:

    - postgres, pgvector: the driver's ``psycopg.Connection``, inside the step's transaction
      (committed with its ledger row) unless the module sets ``TRANSACTION = False``;
    - redis: the driver's ``redis.Redis``, or ``redis.cluster.RedisCluster`` for a cluster;
      Redis has no transaction spanning a step;
    - neo4j, falkordb: not the driver's session but polyshift's statement runner:
      ``client.run(statement, params=None)`` returns the rows as lists of values and raises on a
      statement the server refuses; on Neo4j it runs inside the step's transaction (committed
      with its ledger entry) unless the module sets ``TRANSACTION = False``, on FalkorDB each
      statement commits on its own.

    ``helpers`` holds the kind's data-migration helpers (Redis, pgvector re-embedding) or None.
    """

    client: Any
    store: str
    log: logging.Logger
    migration: Migration
    helpers: Any = None


StepFn = Callable[[MigrationContext], Any]


class UserCodeExit(Exception):
    """User code (a step, a check, a gate, a module being imported) raised SystemExit or
    KeyboardInterrupt. Left alone, either would unwind through every ``except Exception`` and end
    the process with a step half-done and exit 0; as an ordinary exception it is that code failing."""

    def __init__(self, raised: SystemExit | KeyboardInterrupt) -> None:
        what = f"SystemExit({raised.code!r})" if isinstance(raised, SystemExit) else type(raised).__name__
        super().__init__(f"{what}: user code fails by raising an exception, never by exiting")
        self.raised = raised


def call_user_code(function: Callable[..., T], *args: Any) -> T:
    """The one way polyshift calls code it did not write: an exit from it becomes UserCodeExit."""
    try:
        return function(*args)
    except (SystemExit, KeyboardInterrupt) as exc:
        raise UserCodeExit(exc) from exc


def describe_failure(exc: BaseException) -> str:
    """How a failure of user code reads in a message: ``ValueError: boom`` or ``SystemExit(0): …``."""
    return str(exc) if isinstance(exc, UserCodeExit) else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Step:
    """One of forward / rollback / validate: a script in the store's language or a Python function."""

    name: str
    path: Path
    script: str | None = None
    function: StepFn | None = None

    @property
    def is_python(self) -> bool:
        return self.function is not None

    def call(self, ctx: MigrationContext) -> Any:
        """Run the Python step; an exit from it is its failure (UserCodeExit), like any exception."""
        assert self.function is not None
        return call_user_code(self.function, ctx)


@dataclass
class Migration:
    version: str
    slug: str
    store: str
    forward: Step
    rollback: Step | None
    validate: Step | None
    checksum: str
    declared_scope: tuple[str, ...] | None = None
    # ``backup=`` in the rollback script's own header: what its rollback step destroys.
    rollback_scope: tuple[str, ...] | None = None
    flag: str | None = None
    declared_risk: Risk | None = None
    irreversible: bool = False
    # Finding codes the forward's header acknowledges (``allow=PS130``): ``up`` runs them anyway.
    allowed: tuple[str, ...] = ()
    module: ModuleType | None = field(default=None, repr=False)
    directives: dict[str, str] = field(default_factory=dict)
    language: ScriptLanguage | None = None   # the scripts' language; None for a Python migration

    @property
    def id(self) -> str:
        return f"{self.version}_{self.slug}"

    @property
    def version_key(self) -> tuple[int, ...]:
        return version_key(self.version)

    @property
    def is_python(self) -> bool:
        return self.forward.is_python

    def directive_hint(self, key: str) -> str:
        """How directive ``key`` is written in this migration's own language, e.g.
        ``// polyshift: backup=Label,:TYPE,...`` in a Cypher file, ``BACKUP = [...]`` in Python."""
        if self.is_python or self.language is None:
            return f"{key.upper()} = [...]" if key == "backup" else f"{key.upper()} = True"
        comment = self.language.comment
        if key != "backup":
            return f"{comment} polyshift: {key}"
        return f"{comment} polyshift: backup={self.language.scope_example},..."

    def extra(self, name: str, default: Any = None) -> Any:
        """A module-level setting of a Python migration, or a header directive of a script."""
        if self.module is not None and hasattr(self.module, name):
            return getattr(self.module, name)
        return self.directives.get(name.lower(), default)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def check_version(text: str, what: str) -> str:
    """A version given on the command line, refused (exit 2) unless it reads as one."""
    if not _VERSION.match(text):
        raise UsageError(f"{what} {text!r} is not a version: digits, dots allowed (0003, 1.2)")
    return text

