"""Fresh embedded servers for one ``polyshift rehearse`` run: one PostgreSQL 18 + pgvector cluster
with a database per PostgreSQL store, a redis-server per Redis store, a FalkorDB per FalkorDB
store, a Neo4j Community per Neo4j store. They start on first use, listen on 127.0.0.1 only, and
``close`` stops them and deletes their data. Imported by the rehearse command only."""

from __future__ import annotations

import secrets as pysecrets
from dataclasses import replace
from typing import Any

from polyshift.framework.core import secrets
from polyshift.framework.core.config import StoreConfig
from polyshift.framework.core.errors import StoreError
from polyshift.framework.sandbox.neo4j import Neo4jServer, Neo4jUnavailable
from polyshift.framework.sandbox.servers import EmbeddedPostgres, EmbeddedRedis, falkordb_args


class EmbeddedStores:
    def __init__(self) -> None:
        self._postgres: EmbeddedPostgres | None = None
        self._servers: list[Any] = []

    def provide(self, store: StoreConfig) -> tuple[StoreConfig, str]:
        try:
            return self._provide(store)
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise StoreError(f"rehearsal: the embedded server for store {store.name} did not start: {exc}") from None
        except Neo4jUnavailable as exc:
            raise StoreError(f"rehearsal: store {store.name} is Neo4j, which cannot run here: {str(exc).splitlines()[0]}",
                             hint=f"name a Neo4j to rehearse on in [rehearsal.stores.{store.name}]") from None

    def _provide(self, store: StoreConfig) -> tuple[StoreConfig, str]:
        if store.kind in ("postgres", "pgvector"):
            pg = self._cluster()
            database = f"rehearsal_{store.name.replace('-', '_')}"
            url = pg.create_database(database)
            secrets.register_url(url)
            return replace(store, url=url), f"{store.kind}, fresh embedded PostgreSQL 18 (127.0.0.1:{pg.port}/{database})"
        if store.kind == "redis":
            server = self._start(EmbeddedRedis())
            # One fresh node: a cluster option describes production's topology, not this server's.
            options = {k: v for k, v in store.options.items() if k != "cluster"}
            return replace(store, url=server.url, options=options), f"redis, fresh embedded redis-server (127.0.0.1:{server.port})"
        if store.kind == "falkordb":
            server = self._start(EmbeddedRedis(extra_args=falkordb_args()))
            return replace(store, url=server.url), f"falkordb, fresh embedded FalkorDB (127.0.0.1:{server.port})"
        password = pysecrets.token_urlsafe(18)
        secrets.register(password)
        neo4j = self._start(Neo4jServer(password=password))
        url = f"bolt://neo4j:{password}@127.0.0.1:{neo4j.port}"
        secrets.register_url(url)
        options = {k: v for k, v in store.options.items() if k != "database"}
        return (replace(store, url=url, options=options),
                f"neo4j, fresh embedded Neo4j {neo4j.version} Community (127.0.0.1:{neo4j.port})")

    def _start(self, server: Any) -> Any:
        self._servers.append(server)
        return server.start()

    def _cluster(self) -> EmbeddedPostgres:
        if self._postgres is None:
            password = pysecrets.token_urlsafe(18)
            secrets.register(password)
            self._postgres = EmbeddedPostgres(password=password)
            self._servers.append(self._postgres)
            self._postgres.start()
        return self._postgres

    def close(self) -> None:
        for server in reversed(self._servers):
            try:
                server.stop()
            except Exception:  # stopping must not hide what the rehearsal found or why it failed
                pass
        self._servers = []
        self._postgres = None
