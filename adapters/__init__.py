"""One adapter per store kind; ``adapter_for`` builds the right one from a store's config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.errors import ConfigError

if TYPE_CHECKING:
    from framework.config import StoreConfig
    from framework.protocol import Adapter


def adapter_for(store: StoreConfig) -> Adapter:
    if store.kind == "postgres":
        from adapters.postgres import PostgresAdapter

        return PostgresAdapter(store)
    if store.kind == "pgvector":
        from adapters.pgvector import PgvectorAdapter

        return PgvectorAdapter(store)
    if store.kind == "neo4j":
        from adapters.neo4j import Neo4jAdapter

        return Neo4jAdapter(store)
    if store.kind == "falkordb":
        from adapters.falkordb import FalkorAdapter

        return FalkorAdapter(store)
    if store.kind == "redis":
        from adapters.redis import RedisAdapter

        return RedisAdapter(store)
    raise ConfigError(f"[stores.{store.name}]: kind {store.kind!r} has no adapter in this version of polyshift")
