"""`make demo`: the sample application's releases across PostgreSQL, pgvector, a graph (real Neo4j
Community when a JDK is present, FalkorDB otherwise) and Redis, on embedded real servers, through
the real CLI.

1. sandbox up; 2. release 0001 (the schema) and the application's data; 3. release 0002 with a
staged cutover whose health gates stay green; 4. release 0003, whose gate fails at 10%: the flag
is killed and all four stores are undone and verified; 5. fingerprints before and after, the
stores' ledgers and the audit chain.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import os
import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import psycopg
import redis
from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from polyshift.adapters import adapter_for
from polyshift.adapters.graph.adapter import GraphAdapter
from polyshift.framework.core.config import load_config
from polyshift.framework.sandbox.demo_app import DemoApp

# The CLI's own entry point, handed in by the CLI's demo command (the demo never imports the CLI).
Invoke = Callable[[list[str]], None]
SCOPES = {
    "main": ("documents", "authors", "legacy_notes"),
    "vectors": ("document_chunks",),
    "graph": ("Doc", "Document", "Topic", "Area", ":ABOUT", ":IN_AREA"),
    "cache": ("doc:*", "docs:v2:*", "session:*", "sess:v2:*"),
}
console = Console(highlight=False)


def step(title: str) -> None:
    console.print()
    console.print(Rule(f"[bold cyan]{title}", align="left"))


def samples_dir() -> Path:
    """The sample application's migrations, shipped with the package (``polyshift.samples``)."""
    samples = importlib.import_module("polyshift.samples")
    return Path(str(samples.__file__)).parent


def polyshift(invoke: Invoke, config: Path, *args: str, quiet: bool = False) -> tuple[int, str]:
    if not quiet:
        console.print(f"[dim]$ polyshift {' '.join(args)}[/]")
    buffer = io.StringIO()
    code = 0
    try:
        if quiet:
            with redirect_stdout(buffer):
                invoke(["--config", str(config), *args])
        else:
            invoke(["--config", str(config), *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    if code and not quiet:
        console.print(f"[yellow]exit {code}[/]")
    return code, buffer.getvalue()


def write_project(scratch: Path, urls: dict[str, str]) -> Path:
    shutil.copytree(samples_dir(), scratch / "migrations", ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    pg = urls["POLYSHIFT_SANDBOX_POSTGRES_URL"]
    if "POLYSHIFT_SANDBOX_NEO4J_URL" in urls:
        graph = f'kind = "neo4j"                    # Neo4j {urls["POLYSHIFT_SANDBOX_NEO4J_VERSION"]} Community, over Bolt\n' \
                f'        url = "{urls["POLYSHIFT_SANDBOX_NEO4J_URL"]}"'
    else:
        graph = f'kind = "falkordb"                 # no JDK here: FalkorDB, natively\n' \
                f'        url = "{urls["POLYSHIFT_SANDBOX_FALKORDB_URL"]}"\n        graph = "app"'
    config = scratch / "polyshift.toml"
    config.write_text(textwrap.dedent(f"""\
        [project]
        state_url = "sqlite:///.polyshift/state.db"

        [stores.main]
        kind = "postgres"
        url = "{pg}"

        [stores.vectors]
        kind = "pgvector"
        url = "{pg.rsplit('/', 1)[0]}/vectors"

        [stores.graph]
        {graph}

        [stores.cache]
        kind = "redis"
        url = "{urls['POLYSHIFT_SANDBOX_REDIS_URL']}"

        [flags]
        refresh_interval = "200ms"        # the flag service sees each stage well within its 1 s bake
        """))
    return config


def seed(config: Path) -> None:
    """The application's data between releases 0001 and 0002."""
    cfg = load_config(config)
    with psycopg.connect(cfg.store("main").url, autocommit=True) as conn:
        conn.execute("INSERT INTO authors (name, email) SELECT 'author ' || i, 'a' || i || '@example.com' FROM generate_series(1, 200) i")
        conn.execute("INSERT INTO documents (author_id, title, body) SELECT 1 + i % 200, 'Document ' || i, repeat('lorem ', 40) "
                     "FROM generate_series(1, 20000) i")
        conn.execute("INSERT INTO legacy_notes (document_id, note) SELECT i * 4, 'note about ' || i * 4 FROM generate_series(1, 5000) i")
    with psycopg.connect(cfg.store("vectors").url, autocommit=True) as conn:
        conn.execute("INSERT INTO document_chunks (document_id, chunk, content, embedding) "
                     "SELECT 1 + i / 2, i % 2, 'chunk ' || i, (SELECT array_agg(sin(i * 16 + k))::vector FROM generate_series(1, 16) k) "
                     "FROM generate_series(0, 9999) i")
    cache = redis.Redis.from_url(cfg.store("cache").url)
    pipe = cache.pipeline(transaction=False)
    for i in range(1, 5001):
        pipe.set(f"doc:{i}", json.dumps({"title": f"Document {i}"}), ex=3600)
        pipe.hset(f"session:{i}", mapping={"user": f"user-{i % 2000}", "seen": i})
        pipe.expire(f"session:{i}", 1800)
    pipe.execute()
    graph = adapter_for(cfg.store("graph"))
    assert isinstance(graph, GraphAdapter)  # the sample's graph store: seeded through its transport
    graph.connect()
    try:
        graph.t.run("UNWIND range(1, 30) AS i CREATE (:Topic {name: 'topic ' + toString(i), area: 'area ' + toString(i % 4)})")
        graph.t.run("UNWIND range(1, 2000) AS i CREATE (:Doc {id: i, title: 'Document ' + toString(i)})")
        graph.t.run("MATCH (d:Doc), (t:Topic) WHERE t.name = 'topic ' + toString(1 + d.id % 30) CREATE (d)-[:ABOUT]->(t)")
    finally:
        graph.close()
    console.print("200 authors, 20,000 documents, 5,000 legacy notes (PostgreSQL); 10,000 embedded chunks (pgvector); "
                  "30 topics, 2,000 documents, 2,000 ABOUT links (graph); 5,000 cached documents and 5,000 sessions (Redis)")


def fingerprints(config: Path) -> dict[str, Any]:
    cfg = load_config(config)
    result = {}
    logging.disable(logging.WARNING)  # "pattern matches no key" is expected here: both shapes are listed
    for store, scope in SCOPES.items():
        adapter = adapter_for(cfg.store(store))
        adapter.connect()
        try:
            present = adapter.resolve_scope(scope, missing_ok=True)
            fp = adapter.fingerprint(present)
            result[store] = {"schema": fp.schema_hash[:12], "data": fp.data_hash[:12], "items": sum(fp.counts.values())}
        finally:
            adapter.close()
    logging.disable(logging.NOTSET)
    return result


def compare(before: dict[str, Any], after: dict[str, Any]) -> bool:
    table = Table(title="fingerprints: before release 0003 / after its rollback", title_justify="left")
    for column in ("store", "schema before", "schema after", "data before", "data after", "items", ""):
        table.add_column(column)
    same = True
    for store in before:
        b, a = before[store], after[store]
        equal = b == a
        same &= equal
        table.add_row(store, b["schema"], a["schema"], b["data"], a["data"], f"{a['items']:,}",
                      "[green]identical[/]" if equal else "[red]DIFFERENT[/]")
    console.print(table)
    return same


def start_flag_service(config: Path) -> tuple[Any, tuple[str, str]]:
    """`polyshift serve` next to the demo: the console for a product team, OFREP for the application."""
    from polyshift.feature_flags.server.background import ServeProcess, demo_access

    password, key = demo_access(config)
    service = ServeProcess(config).start()
    console.print(f"[bold]flag console[/] {service.url}/  (user demo, password {password})", soft_wrap=True)
    console.print(f"[bold]OFREP[/] {service.url}/ofrep/v1 with the read key {key}", soft_wrap=True)
    console.print("the stand-in application evaluates its flags there")
    return service, (service.url, key)


def run(invoke: Invoke) -> int:
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="polyshift-demo-"))
    sandbox = scratch / ".polyshift" / "sandbox"
    cwd = os.getcwd()
    os.chdir(scratch)
    app: DemoApp | None = None
    service = None
    try:
        step("1. Start real servers, no Docker: PostgreSQL 18 + pgvector, Redis, FalkorDB, Neo4j Community")
        (scratch / "polyshift.toml").write_text("[stores.none]\nkind = 'redis'\nurl = 'redis://127.0.0.1:1'\n")
        code, out = polyshift(invoke, scratch / "polyshift.toml", "sandbox", "up", "--dir", str(sandbox), "--json", quiet=True)
        if code:
            console.print(out)
            return code
        urls = json.loads(out)
        os.environ["PGPASSFILE"] = urls["PGPASSFILE"]
        for key, value in urls.items():
            console.print(f"{key}={value}")
        neo4j = urls.get("POLYSHIFT_SANDBOX_NEO4J_VERSION")
        console.print(f"[bold]graph store: {f'Neo4j {neo4j} Community (Bolt)' if neo4j else 'FalkorDB (no JDK found for Neo4j)'}[/]")
        with psycopg.connect(urls["POLYSHIFT_SANDBOX_POSTGRES_URL"], autocommit=True) as conn:
            conn.execute("CREATE DATABASE vectors")
        config = write_project(scratch, urls)
        service, ofrep = start_flag_service(config)
        app = DemoApp(config, ofrep).start()
        # Each health check is 2,000 OFREP requests: on a busy machine that takes longer than a
        # real application's health endpoint would, and the gate must wait for it.
        os.environ.update({"APP_HEALTH_URL": app.health_url, "APP_HEALTH_TIMEOUT": "60s", "RELEASE_BAKE": "1s"})

        step("2. The releases: one version across four stores is one release")
        polyshift(invoke, config, "releases")
        polyshift(invoke, config, "up", "--release", "0001")
        seed(config)

        step("3. Release 0002: forward everywhere, validate everywhere, then docs_v2 goes 1% → 10% → 50% → 100%")
        code, _ = polyshift(invoke, config, "up", "--release", "0002")
        if code:
            return code
        polyshift(invoke, config, "flags", "check", "docs_v2", "--subject", "user-7")
        before = fingerprints(config)

        step("4. Release 0003: the application's health gate fails at 10%: flag killed, all four stores undone")
        code, _ = polyshift(invoke, config, "up", "--release", "0003")
        if code != 3:
            console.print(f"[red]expected exit 3 (rolled back and verified), got {code}[/]")
            return 1
        after = fingerprints(config)
        if not compare(before, after):
            return 1

        step("5. Where everything stands: releases, the stores' own ledgers, the audit chain")
        polyshift(invoke, config, "releases")
        polyshift(invoke, config, "history", "--store", "graph")
        polyshift(invoke, config, "flags", "list")
        polyshift(invoke, config, "audit", "--verify")
        events = (scratch / ".polyshift" / "events.jsonl").read_text().splitlines()
        console.print(f"{len(events)} release events in .polyshift/events.jsonl, e.g.: {events[-1][:160]}")
        console.print(f"\n[bold green]demo finished in {time.monotonic() - started:.1f} s[/]  (scratch project: {scratch})")
        return 0
    finally:
        if app is not None:
            app.stop()
        if service is not None:
            service.stop()
        polyshift(invoke, scratch / "polyshift.toml", "sandbox", "down", "--dir", str(sandbox), quiet=True)
        os.chdir(cwd)

