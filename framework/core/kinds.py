"""Store kinds: what each kind of store is, in one record per kind.

A ``StoreKind`` names the kind, its adapter class, the language of its migration scripts, the
server family and default port its URLs point at, the settings its ``[stores.<name>]`` table
takes (each with its check), its capabilities, and whether a password in its URL needs a
user. Every adapter class names its record as ``spec`` and takes its ``kind`` from it; nothing
else anywhere switches on a kind's name. A new kind is one record in ``KINDS`` and an adapter
that passes tests/contract/.

The records are plain data: the adapter class is named by import path and imported only when a
store of the kind is opened (``polyshift.adapters.adapter_for``), so reading a config imports
neither a store driver nor any adapter module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from polyshift.framework.core.durations import DURATION_BOUNDS, HOUR, parse_duration, setting_duration
from polyshift.framework.core.errors import ConfigError
from polyshift.framework.core.migration import ScriptLanguage


class Capability(StrEnum):
    """What some kinds of store can do and others cannot."""

    SQL = "sql"                         # answers SQL: a release's sql gates may query it
    ATOMIC_STEPS = "atomic-steps"       # a step's statements and its ledger entry can commit as one transaction
    EXPIRING_LOCK = "expiring-lock"     # the lock lives while its holder renews it (lock_ttl); otherwise
    #                                     the server frees it when the holder's session ends
    WHOLE_SCOPE_COPY = "whole-scope-copy"  # a scope's backup restores whole into an empty store (a graph's
    #                                     relationships to nodes outside the scope cannot be recreated there)


Server = Literal["postgres", "redis", "neo4j"]
"""The server software a kind's data lives in: kinds on one server family share its addressing."""


OptionCheck = Callable[[str, str, Any], Any]
"""Checks one setting of a store table: ``(where, key, value)`` → the value to keep, or ConfigError."""


@dataclass(frozen=True)
class StoreKind:
    name: str
    adapter: str                    # "package.module:Class", imported by adapters.adapter_for only
    script: ScriptLanguage | None   # None: migrations are Python modules only
    server: Server                  # FalkorDB is a Redis server; pgvector a PostgreSQL one
    default_port: int               # where a URL without a port points
    options: Mapping[str, OptionCheck] = field(default_factory=dict, hash=False)
    capabilities: frozenset[Capability] = frozenset()
    password_needs_user: bool = False   # a password in the URL is refused without a user to go with it

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities


def known_kinds() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def script_language(extension: str) -> ScriptLanguage:
    """The language of scripts ending ``.<extension>``, as the kinds that run them declare it."""
    for kind in KINDS:
        if kind.script is not None and kind.script.extension == extension:
            return kind.script
    raise ValueError(f"no store kind runs .{extension} scripts")


def store_kind(name: object, *, where: str) -> StoreKind:
    """The record of kind ``name``; ConfigError naming ``where`` for a kind this version lacks."""
    kind = _BY_NAME.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ConfigError(f"{where}: kind must be one of {', '.join(known_kinds())}, got {name!r}")
    return kind


# -- checks of settings that several kinds share ----------------------------------------------
def text(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} {key}: expected a non-empty string, got {value!r}")
    return value


def flag(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} {key}: expected true or false, got {value!r}")
    return value


def duration(where: str, key: str, value: Any) -> float:
    """Seconds, within the bounds ``DURATION_BOUNDS`` gives the setting ``key``."""
    return setting_duration(value, key, where=where)


# -- checks of settings one kind takes ------------------------------------------------------
def _ef_search(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ConfigError(f"{where} {key}: expected a whole number from 1 to 1000 (pgvector's range), got {value!r}")
    return value


def _memory(where: str, key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not re.fullmatch(r"\d+\s*(kB|MB|GB|TB)?", str(value)):
        raise ConfigError(f"{where} {key}: expected a PostgreSQL memory size like '256MB', got {value!r}")
    return str(value)


LOCK_RETRY_MAX_ENTRIES = 100


def lock_retry_schedule(where: str, key: str, value: Any) -> tuple[tuple[float, float], ...]:
    """``lock_retry = ["100ms/50ms", "200ms/100ms"]``: each attempt's lock timeout and the sleep
    after it fails, the last entry repeating until ``retry_deadline``; ``false`` turns the
    schedule off (every attempt waits up to ``lock_timeout``). Returns seconds; () when off."""
    if value is False:
        return ()
    if not isinstance(value, list) or not value:
        raise ConfigError(f'{where} {key}: expected a list like ["100ms/50ms", "200ms/100ms"] (lock timeout/sleep per '
                          f"attempt), or false to turn it off, got {value!r}")
    if len(value) > LOCK_RETRY_MAX_ENTRIES:
        raise ConfigError(f"{where} {key}: at most {LOCK_RETRY_MAX_ENTRIES} entries (the last one repeats), got {len(value)}")
    schedule = []
    for number, entry in enumerate(value, 1):
        what = f"{where} {key} entry {number}"
        if not isinstance(entry, str) or entry.count("/") != 1:
            raise ConfigError(f'{what}: expected "lock timeout/sleep" like "200ms/100ms", got {entry!r}')
        timeout, sleep = entry.split("/")
        schedule.append((parse_duration(timeout, what=f"{what} lock timeout", bounds=DURATION_BOUNDS["lock_timeout"]),
                         parse_duration(sleep, what=f"{what} sleep", bounds=(0.0, HOUR))))
    return tuple(schedule)


def _database(where: str, key: str, value: Any) -> str:
    name = text(where, key, value)
    if name.lower() == "system":
        raise ConfigError(f"{where} database = \"system\" is Neo4j's own catalogue of users and databases; polyshift "
                          "migrates user databases", hint='use "neo4j" or a database you created')
    return name


# -- the kinds, in the order they are listed to users -----------------------------------------
SQL = ScriptLanguage(extension="sql", comment="--", scope_example="table", nested_block_comments=True)
CYPHER = ScriptLanguage(extension="cypher", comment="//", scope_example="Label,:TYPE", nested_block_comments=False)
_POSTGRES_CAPABILITIES = frozenset({Capability.SQL, Capability.ATOMIC_STEPS, Capability.WHOLE_SCOPE_COPY})

POSTGRES = StoreKind(name="postgres", adapter="polyshift.adapters.postgres.adapter:PostgresAdapter", script=SQL,
                     server="postgres", default_port=5432, options={"lock_retry": lock_retry_schedule},
                     capabilities=_POSTGRES_CAPABILITIES)
PGVECTOR = StoreKind(name="pgvector", adapter="polyshift.adapters.postgres.pgvector:PgvectorAdapter", script=SQL,
                     server="postgres", default_port=5432,
                     options={"maintenance_work_mem": _memory, "ef_search": _ef_search, "lock_retry": lock_retry_schedule},
                     capabilities=_POSTGRES_CAPABILITIES)
REDIS = StoreKind(name="redis", adapter="polyshift.adapters.redis.adapter:RedisAdapter", script=None,
                  server="redis", default_port=6379, options={"prefix": text, "cluster": flag, "lock_ttl": duration},
                  capabilities=frozenset({Capability.EXPIRING_LOCK, Capability.WHOLE_SCOPE_COPY}))
NEO4J = StoreKind(name="neo4j", adapter="polyshift.adapters.graph.neo4j:Neo4jAdapter", script=CYPHER,
                  server="neo4j", default_port=7687, options={"user": text, "database": _database, "lock_ttl": duration},
                  capabilities=frozenset({Capability.ATOMIC_STEPS, Capability.EXPIRING_LOCK}), password_needs_user=True)
FALKORDB = StoreKind(name="falkordb", adapter="polyshift.adapters.graph.falkordb:FalkorAdapter", script=CYPHER,
                     server="redis", default_port=6379, options={"graph": text, "lock_ttl": duration},
                     capabilities=frozenset({Capability.EXPIRING_LOCK}))

KINDS: tuple[StoreKind, ...] = (POSTGRES, PGVECTOR, REDIS, NEO4J, FALKORDB)
_BY_NAME = {kind.name: kind for kind in KINDS}
