"""One adapter per store kind; ``adapter_for`` builds the right one from a store's config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyshift.framework.core.errors import ConfigError

if TYPE_CHECKING:
    from polyshift.framework.core.config import StoreConfig
    from polyshift.framework.core.protocol import Adapter


def adapter_for(store: StoreConfig) -> Adapter:
    if store.kind == "postgres":
        from polyshift.adapters.postgres.adapter import PostgresAdapter

        return PostgresAdapter(store)
    if store.kind == "pgvector":
        from polyshift.adapters.postgres.pgvector import PgvectorAdapter

        return PgvectorAdapter(store)
    if store.kind == "neo4j":
        from polyshift.adapters.graph.neo4j import Neo4jAdapter

        return Neo4jAdapter(store)
    if store.kind == "falkordb":
        from polyshift.adapters.graph.falkordb import FalkorAdapter

        return FalkorAdapter(store)
    if store.kind == "redis":
        from polyshift.adapters.redis.adapter import RedisAdapter

        return RedisAdapter(store)
    raise ConfigError(f"[stores.{store.name}]: kind {store.kind!r} has no adapter in this version of polyshift")
