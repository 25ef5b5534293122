"""`make demo`: the sample migrations on a real embedded PostgreSQL 18 + pgvector, end to end.

Runs the real CLI in a scratch project so every line shown is what a user would see.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import psycopg
from rich.console import Console
from rich.rule import Rule

from framework import cli
from framework.sandbox import EmbeddedPostgres, EmbeddedRedis

REPO = Path(__file__).resolve().parent.parent
console = Console(highlight=False)


def step(title: str) -> None:
    console.print()
    console.print(Rule(f"[bold cyan]{title}", align="left"))


def polyshift(config: Path, *args: str, quiet: bool = False) -> tuple[int, str]:
    console.print(f"[dim]$ polyshift {' '.join(args)}[/]")
    buffer = StringIO()
    code = 0
    try:
        if quiet:
            with redirect_stdout(buffer):
                cli.main(["--config", str(config), *args])
        else:
            cli.main(["--config", str(config), *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    if code:
        console.print(f"[yellow]exit {code}[/]")
    return code, buffer.getvalue()


def fingerprint_line(url: str, table: str) -> str:
    with psycopg.connect(url) as conn:
        rows, digest = conn.execute(
            f"SELECT count(*), coalesce(sum(('x' || left(md5(to_jsonb(t)::text), 16))::bit(64)::bigint::numeric), 0) FROM {table} t",
        ).fetchone()  # type: ignore[misc]
    return f"{table}: {rows} rows, data hash …{str(digest)[-12:]}"


def run() -> int:
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="polyshift-demo-"))
    step("1. Start embedded servers: PostgreSQL 18 + pgvector, and Redis (no Docker)")
    pg = EmbeddedPostgres(password=os.urandom(12).hex()).start()
    cache = EmbeddedRedis().start()
    try:
        console.print(f"postgres: {pg.url(with_password=False)}  (password via ${{DEMO_PG_PASSWORD}})")
        console.print(f"redis:    {cache.url}")
        os.environ["DEMO_PG_PASSWORD"] = pg.password
        for store in ("main", "cache"):
            shutil.copytree(REPO / "migrations" / store, scratch / "migrations" / store)
        config = scratch / "polyshift.toml"
        config.write_text(textwrap.dedent(f"""\
            [project]
            migrations = "migrations"
            state_url = "sqlite:///.polyshift/state.db"
            backups = ".polyshift/backups"

            [stores.main]
            kind = "pgvector"
            url = "postgresql://{pg.user}:${{DEMO_PG_PASSWORD}}@127.0.0.1:{pg.port}/{pg.database}"
            lock_timeout = "2s"

            [stores.cache]
            kind = "redis"
            url = "{cache.url}"

            [flags]
            store = "redis"
            url = "{cache.url}"
            refresh_interval = "1s"
            """))
        url = pg.url()

        step("2. What would run: risk category, inferred backup scope, statements outside a transaction")
        polyshift(config, "plan")

        step("3. Apply the schema, then let the 'application' write some data")
        polyshift(config, "up", "--store", "main", "--to", "0001")
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO authors (name, email) "
                         "SELECT 'author ' || i, 'a' || i || '@example.com' FROM generate_series(1, 200) i")
            conn.execute("INSERT INTO documents (author_id, title, body) SELECT 1 + i % 200, 'Document ' || i, repeat('lorem ', 50) "
                         "FROM generate_series(1, 20000) i")
            conn.execute("INSERT INTO legacy_notes (document_id, note) SELECT i, 'note about ' || i FROM generate_series(1, 5000) i")
        import redis

        sessions = redis.Redis.from_url(cache.url)
        pipe = sessions.pipeline(transaction=False)
        for i in range(5000):
            pipe.set(f"session:{i}", f'{{"user": {i % 200}}}', ex=3600)
        pipe.execute()
        console.print("inserted 200 authors, 20,000 documents, 5,000 legacy notes; 5,000 sessions in Redis")
        notes_before = fingerprint_line(url, "legacy_notes")

        step("4. Apply the rest: destructive steps only after a verified backup; embeddings checked by recall@10")
        polyshift(config, "up")
        polyshift(config, "status")
        console.print(f"sessions now under sess:v2:*  -> {sessions.exists('sess:v2:42')} key, TTL {sessions.ttl('sess:v2:42')} s kept")

        step("5. Feature flags: product moves traffic to the new shape, sticky per user")
        polyshift(config, "flags", "set", "semantic_search", "--create", "--on", "--percent", "10", "--reason", "canary")
        polyshift(config, "flags", "check", "semantic_search", "--subject", "user-7")
        polyshift(config, "flags", "set", "semantic_search", "--percent", "50", "--reason", "widen")
        polyshift(config, "flags", "kill", "semantic_search", "--reason", "demo: instant switch back to blue")
        polyshift(config, "flags", "history", "semantic_search")

        step("6. A bad migration: validation fails, polyshift rolls it back and proves the schema is as before")
        bad = scratch / "migrations" / "main"
        (bad / "0006_bad_backfill.forward.sql").write_text("ALTER TABLE documents ALTER COLUMN status DROP NOT NULL;\n"
                                                           "UPDATE documents SET status = NULL WHERE id % 1000 = 0;\n")
        (bad / "0006_bad_backfill.rollback.sql").write_text("UPDATE documents SET status = 'draft' WHERE status IS NULL;\n"
                                                            "ALTER TABLE documents ALTER COLUMN status SET NOT NULL;\n")
        (bad / "0006_bad_backfill.validate.sql").write_text("SELECT count(*) = 0 FROM documents WHERE status IS NULL;\n")
        polyshift(config, "up", "--store", "main")
        for p in bad.glob("0006_*"):
            p.unlink()

        step("7. Roll back: the Redis re-key, then main down to 0002; the dropped legacy_notes rows come back from their backup")
        polyshift(config, "rollback", "--store", "cache")
        console.print(f"sessions back under session:*  -> {sessions.exists('session:42')} key, TTL {sessions.ttl('session:42')} s")
        polyshift(config, "rollback", "--store", "main", "--to", "0002")
        _, listing = polyshift(config, "backup", "list", "--json", quiet=True)
        backup_id = next(b["id"] for b in json.loads(listing) if b["reason"] == "before 0003_drop_legacy_notes up")
        polyshift(config, "backup", "restore", backup_id, "--yes")
        console.print(f"before the drop : {notes_before}")
        console.print(f"after restore   : {fingerprint_line(url, 'legacy_notes')}")

        step("8. The stores' own ledgers, and the audit chain")
        polyshift(config, "history")
        polyshift(config, "audit", "--verify")
        console.print(f"\n[bold green]demo finished in {time.monotonic() - started:.1f} s[/]  (scratch project: {scratch})")
        return 0
    finally:
        cache.stop()
        pg.stop()


if __name__ == "__main__":
    raise SystemExit(run())
