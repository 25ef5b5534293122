"""One real store of each kind for the contract suite, with what the suite cannot say generically:
how to put the same small data set in it, change it behind polyshift's back, and write a
migration that changes it reversibly. Everything else the suite asks of the adapter alone.

A new kind adds a subclass here and an entry in ``SERVERS``; ``test_registry`` fails until it has one.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from polyshift.adapters import adapter_for
from polyshift.framework.core.config import StoreConfig, load_config
from polyshift.framework.core.kinds import store_kind
from polyshift.framework.core.loader import load_store_migrations
from polyshift.framework.core.migration import Migration
from polyshift.framework.core.protocol import Adapter
from tests.conftest import SENTINEL_PASSWORD, clean_neo4j

STORE = "contract"


class ContractStore:
    """A store of ``kind`` at ``url``, named ``contract`` in a project under ``root``."""

    kind: str
    scope: tuple[str, ...]                  # where the seeded data lives, as a migration declares it
    bad_scopes: tuple[tuple[tuple[str, ...], str], ...]  # scopes the kind must refuse, with what the refusal names
    native_client: str | None               # "module:Class" of the driver's client ctx.client is; None: polyshift's runner

    def __init__(self, root: Path, url: str, options: str = "") -> None:
        self.root = root
        self.url = url
        self.options = options
        self.migrations = root / "migrations"
        (self.migrations / STORE).mkdir(parents=True, exist_ok=True)
        self._adapters: list[Adapter] = []

    # -- the project ----------------------------------------------------------------------
    @property
    def spec(self) -> Any:
        return store_kind(self.kind, where="contract")

    def table(self, name: str = STORE, extra: str = "", *, own_options: bool = True) -> str:
        """The store's table; ``own_options``: with the settings the harness needs (FalkorDB's graph)."""
        return f'[stores.{name}]\nkind = "{self.kind}"\nurl = "{self.url}"\n{self.options if own_options else ""}{extra}'

    def config_path(self, *tables: str) -> Path:
        path = self.root / f"polyshift-{len(list(self.root.glob('polyshift-*.toml')))}.toml"
        path.write_text('[project]\nstate_url = "sqlite:///.polyshift/state.db"\n\n' + "\n".join(tables or (self.table(),)))
        return path

    def store_config(self, name: str = STORE, extra: str = "", *, own_options: bool = True) -> StoreConfig:
        return load_config(self.config_path(self.table(name, extra, own_options=own_options))).store(name)

    def url_with(self, *, port: int | None = None, user: str | None = None, password: str | None = None) -> str:
        """This store's URL with another port (nobody listening) or other credentials."""
        parts = urlsplit(self.url)
        host = f"{parts.hostname}:{port or parts.port}"
        auth = f"{user}:{password}@" if user is not None else (parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else "")
        return urlunsplit(parts._replace(netloc=auth + host))

    def adapter_at(self, url: str) -> Adapter:
        """An adapter (not connected) for this store at another URL."""
        table = f'[stores.{STORE}]\nkind = "{self.kind}"\nurl = "{url}"\n{self.options}'
        adapter = adapter_for(load_config(self.config_path(table)).store(STORE))
        self._adapters.append(adapter)
        return adapter

    def adapter(self, name: str = STORE, extra: str = "") -> Adapter:
        adapter = adapter_for(self.store_config(name, extra))
        self._adapters.append(adapter)
        adapter.connect()
        return adapter

    def close(self) -> None:
        for adapter in self._adapters:
            adapter.close()

    # -- migrations on disk ---------------------------------------------------------------
    def load(self, name: str) -> Migration:
        """The migration ``name`` (``0001_slug``) as the loader reads it from this project."""
        found = [m for m in load_store_migrations(self.migrations / STORE, STORE, self.kind) if m.id == name]
        assert found, f"no migration {name} in {self.migrations / STORE}"
        return found[0]

    def python_migration(self, name: str, body: str) -> Migration:
        (self.migrations / STORE / f"{name}.py").write_text(textwrap.dedent(body))
        return self.load(name)

    def script_migration(self, name: str, forward: str, rollback: str) -> Migration:
        language = self.spec.script
        assert language is not None, f"{self.kind} takes Python migrations only"
        for step, text in (("forward", forward), ("rollback", rollback)):
            (self.migrations / STORE / f"{name}.{step}.{language.extension}").write_text(textwrap.dedent(text))
        return self.load(name)

    # -- what each kind says its own way ----------------------------------------------------
    def seed(self) -> None:
        """Five items (1..5, named 'item 1'…) in the scope."""
        raise NotImplementedError

    def change_directly(self) -> None:
        """Behind polyshift's back: rename item 1, remove item 2, add item 9."""
        raise NotImplementedError

    def reversible(self, name: str) -> Migration:
        """A migration whose forward adds a note to every item and whose rollback takes it away."""
        raise NotImplementedError

    def refused(self, name: str) -> Migration:
        """A migration whose forward the store refuses at its first statement, changing nothing."""
        raise NotImplementedError


class PostgresStore(ContractStore):
    kind = "postgres"
    scope = ("public.items",)
    bad_scopes = ((("no_such_table",), "no_such_table"), (("public.items", "nowhere.items"), "nowhere.items"))
    native_client = "psycopg:Connection"

    def _sql(self, statement: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(statement)

    def seed(self) -> None:
        self._sql("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); "
                  "INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 5) i")

    def change_directly(self) -> None:
        self._sql("UPDATE items SET name = 'renamed' WHERE id = 1; DELETE FROM items WHERE id = 2; "
                  "INSERT INTO items VALUES (9, 'item 9')")

    def reversible(self, name: str) -> Migration:
        return self.script_migration(name, """\
            -- polyshift: backup=items
            ALTER TABLE items ADD COLUMN note text;
            UPDATE items SET note = 'note ' || id;
            """, "ALTER TABLE items DROP COLUMN note;\n")

    def refused(self, name: str) -> Migration:
        return self.script_migration(name, "UPDATE no_such_table SET x = 1;\n", "SELECT 1;\n")


class PgvectorStore(PostgresStore):
    kind = "pgvector"


class RedisStore(ContractStore):
    kind = "redis"
    scope = ("item:*",)
    bad_scopes = ((("",), "key patterns"), (("item:[",), "unclosed '['"))
    native_client = "redis:Redis"

    def _client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def seed(self) -> None:
        client = self._client()
        for i in range(1, 6):
            client.hset(f"item:{i}", mapping={"name": f"item {i}"})
        client.close()

    def change_directly(self) -> None:
        client = self._client()
        client.hset("item:1", "name", "renamed")
        client.delete("item:2")
        client.hset("item:9", mapping={"name": "item 9"})
        client.close()

    def reversible(self, name: str) -> Migration:
        return self.python_migration(name, """\
            BACKUP = ["item:*"]

            def forward(ctx):
                for key in ctx.client.scan_iter(match="item:*"):
                    ctx.client.hset(key, "note", b"note " + key.split(b":")[1])

            def rollback(ctx):
                for key in ctx.client.scan_iter(match="item:*"):
                    ctx.client.hdel(key, "note")
            """)

    def refused(self, name: str) -> Migration:
        return self.python_migration(name, """\
            BACKUP = []

            def forward(ctx):
                ctx.client.execute_command("NO.SUCH.COMMAND")

            def rollback(ctx):
                pass
            """)


class GraphStore(ContractStore):
    scope = ("Item",)
    bad_scopes = (((":",), "labels or :TYPES"), (("Item", "__PolyshiftLock"), "polyshift's own ledger and lock"))
    native_client = None

    _seeder: Any = None

    def _run(self, statement: str) -> list[list[Any]]:
        """A statement on the server directly, through the transport (no lock, no ledger)."""
        if self._seeder is None:
            self._seeder = self.adapter(name="seeder")
        return self._seeder.t.run(statement)  # type: ignore[no-any-return]

    def seed(self) -> None:
        self._run("UNWIND range(1, 5) AS i CREATE (:Item {n: i, name: 'item ' + toString(i)})")
        self._run("MATCH (a:Item), (b:Item) WHERE b.n = a.n + 1 CREATE (a)-[:NEXT {since: a.n}]->(b)")

    def change_directly(self) -> None:
        self._run("MATCH (i:Item {n: 1}) SET i.name = 'renamed'")
        self._run("MATCH (i:Item {n: 2}) DETACH DELETE i")
        self._run("CREATE (:Item {n: 9, name: 'item 9'})")

    def reversible(self, name: str) -> Migration:
        return self.script_migration(name, """\
            // polyshift: backup=Item
            MATCH (i:Item) SET i.note = 'note ' + toString(i.n);
            """, "MATCH (i:Item) REMOVE i.note;\n")

    def refused(self, name: str) -> Migration:
        return self.script_migration(name, "// polyshift: backup=Item\nCALL no.such.procedure();\n",
                                     "MATCH (i:Item) REMOVE i.note;\n")


class FalkorStore(GraphStore):
    kind = "falkordb"

    def __init__(self, root: Path, url: str, options: str = "") -> None:
        super().__init__(root, url, 'graph = "contract"\n' + options)


class Neo4jStore(GraphStore):
    kind = "neo4j"


# Each server the suite runs on: (harness class, how a test gets its URL). Neo4j runs on both
# release lines the fixtures start (5.26 LTS, and the newest).
def _postgres(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("database"))


def _redis(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("redis_server").url)


def _falkordb(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("falkordb_server").url)


def _neo4j(line: str) -> Callable[[pytest.FixtureRequest], str]:
    def url(request: pytest.FixtureRequest) -> str:
        os.environ["TEST_NEO4J_PASSWORD"] = SENTINEL_PASSWORD
        return str(request.getfixturevalue("neo4j_servers").url(line))
    return url


SERVERS: dict[str, tuple[type[ContractStore], Callable[[pytest.FixtureRequest], str]]] = {
    "postgres": (PostgresStore, _postgres),
    "pgvector": (PgvectorStore, _postgres),
    "redis": (RedisStore, _redis),
    "falkordb": (FalkorStore, _falkordb),
    "neo4j-5.26": (Neo4jStore, _neo4j("5.26")),
    "neo4j-2026": (Neo4jStore, _neo4j("2026")),
}


def open_store(request: pytest.FixtureRequest, tmp_path: Path, server: str) -> ContractStore:
    harness, url = SERVERS[server]
    store = harness(tmp_path, url(request))
    if isinstance(store, Neo4jStore):
        clean_neo4j(store.adapter(name="cleaner").t.run)  # type: ignore[attr-defined]  # one server for the session
    return store
