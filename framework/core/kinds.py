"""Store kinds: what each kind of store is, in one record per kind, declared beside its adapter.

A ``StoreKind`` names the kind, its adapter class, the language of its migration scripts, the
settings its ``[stores.<name>]`` table takes (each with its check), its capabilities, and
whether a password in its URL needs a user. Each adapter package declares the kinds it serves
in its ``kinds`` module, and the adapter class takes its ``kind`` from that record: a new kind
is one record there, one line in ``_DECLARED_IN`` and an adapter passing tests/contract/.

The adapter class is named by import path and imported only when a store of the kind is
opened (``polyshift.adapters.adapter_for``): reading a config imports no store driver.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from polyshift.framework.core.durations import setting_duration
from polyshift.framework.core.errors import ConfigError
from polyshift.framework.core.migration import ScriptLanguage

# The modules whose KINDS tuples make up the registry, in the order kinds are listed to users.
_DECLARED_IN = (
    "polyshift.adapters.postgres.kinds",
    "polyshift.adapters.redis.kinds",
    "polyshift.adapters.graph.kinds",
)


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


@functools.cache
def _registry() -> dict[str, StoreKind]:
    kinds: dict[str, StoreKind] = {}
    for module in _DECLARED_IN:
        for kind in importlib.import_module(module).KINDS:
            if kind.name in kinds:
                raise TypeError(f"store kind {kind.name!r} is declared twice ({module})")
            kinds[kind.name] = kind
    return kinds


def known_kinds() -> tuple[str, ...]:
    return tuple(_registry())


def script_language(extension: str) -> ScriptLanguage:
    """The language of scripts ending ``.<extension>``, as the kinds that run them declare it."""
    for kind in _registry().values():
        if kind.script is not None and kind.script.extension == extension:
            return kind.script
    raise ValueError(f"no store kind runs .{extension} scripts")


def store_kind(name: object, *, where: str) -> StoreKind:
    """The record of kind ``name``; ConfigError naming ``where`` for a kind this version lacks."""
    kind = _registry().get(name) if isinstance(name, str) else None
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
