"""Scoped PostgreSQL backup and restore: COPY streams plus each table's own DDL.

Backup runs in one REPEATABLE READ snapshot that it exports to ``pg_dump --snapshot``, so
the DDL, the rows, the sequences and the fingerprints all describe the same instant.
Restore runs in one transaction: it either puts back every table of the scope or nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from typing import TYPE_CHECKING, Any

import pglast
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from polyshift.adapters.postgres import catalog as cat
from polyshift.adapters.postgres import copydata as cd
from polyshift.adapters.postgres import ddl as pg_ddl
from polyshift.adapters.postgres.tools import pg_tool
from polyshift.framework.core.errors import BackupCorruptError, BackupError, StoreError
from polyshift.framework.core.protocol import RestoreReport
from polyshift.framework.core.secrets import redact

if TYPE_CHECKING:
    from polyshift.framework.control.artifacts import ArtifactStore, ArtifactWriter, Manifest
    from polyshift.framework.core.progress import Progress

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _file_stem(index: int, table: cat.Table) -> str:
    return f"{index:03d}.{_SAFE.sub('_', table.qualified)[:80]}"


def _pg_dump_ddl(url: str, tables: list[cat.Table], section: str, snapshot: str) -> str:
    """DDL of the tables in one pg_dump call, so a partition tree comes out in dependency order."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)  # never on the command line, where ps would show it
    cmd = [pg_tool("pg_dump"), "--schema-only", f"--section={section}", "--no-owner", f"--snapshot={snapshot}"]
    for table in tables:
        cmd += ["--table", f'"{table.schema.replace(chr(34), chr(34) * 2)}"."{table.name.replace(chr(34), chr(34) * 2)}"']
    conninfo = make_conninfo("", **{k: v for k, v in params.items() if v is not None})
    proc = subprocess.run([*cmd, "--dbname", conninfo], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise BackupError(f"pg_dump could not capture the DDL of {tables[0].qualified}: {redact(proc.stderr.strip())}")
    return str(proc.stdout)


def _family_ddl(conn: psycopg.Connection, url: str, family: list[cat.Table], snapshot: str) -> tuple[str, str]:
    """Pre- and post-data DDL from the catalog on this connection; pg_dump only for a shape the
    catalog DDL does not write (``ddl._UNSUPPORTED_SQL`` names them), for that family alone."""
    written = pg_ddl.family_ddl(conn, family)
    if written is not None:
        return written.pre, written.post
    global pg_dump_calls
    pg_dump_calls += 2
    return _pg_dump_ddl(url, family, "pre-data", snapshot), _pg_dump_ddl(url, family, "post-data", snapshot)


pg_dump_calls = 0  # pg_dump processes started by this process's backups; the benchmark and tests read it


def _ddl_statements(ddl: str) -> list[str]:
    """pg_dump output minus psql meta-commands and session SETs that would outlive our transaction."""
    body = "\n".join(line for line in ddl.splitlines() if not line.startswith("\\"))
    out = []
    for stmt in pglast.split(body):
        head = stmt.lstrip().upper()
        if head.startswith("SET ") or head.startswith("SELECT PG_CATALOG.SET_CONFIG"):
            continue
        out.append(stmt)
    return out


class _SnapshotHasher:
    """Fingerprints tables on a second connection that shares the backup's exported snapshot,
    so hashing runs in the server while the first connection streams COPY."""

    def __init__(self, url: str, snapshot: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, application_name="polyshift backup fingerprint")
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self.conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polyshift-hash")

    def submit(self, table: cat.Table, limit: int | None) -> Future[tuple[int, str]]:
        return self.pool.submit(cat.table_data_hash, self.conn, table, limit)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.conn.close()


class _InlineHasher:
    """The fingerprint on the backup's own connection, computed when submitted."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def submit(self, table: cat.Table, limit: int | None) -> Future[tuple[int, str]]:
        done: Future[tuple[int, str]] = Future()
        done.set_result(cat.table_data_hash(self.conn, table, limit))
        return done

    def close(self) -> None:
        pass


# A second connection takes ~5 ms to open; hashing a quarter MiB in the server takes about as long.
_PARALLEL_HASH_BYTES = 256 << 10


_SIZE = ("SELECT pg_table_size(r) + coalesce((SELECT sum(pg_table_size(p.relid)) FROM pg_partition_tree(r) p WHERE p.relid <> r), 0) "
         "FROM to_regclass(%s) r")


def backup(conn: psycopg.Connection, url: str, tables: list[cat.Table], writer: ArtifactWriter,
           progress: Progress, *, limit: int | None = None, hashed: cat.Hashed | None = None) -> dict[str, Any]:
    """Stream every table of the scope into the artifact; returns the manifest metadata.
    ``limit``: at most that many rows per table (a rehearsal's sample, never a rollback point).
    ``hashed``: the last fingerprint's table hashes; used only when this backup's snapshot is the
    one they were read in (nothing committed between: the release's fingerprint just before its
    backup), so the rows are not hashed and the shapes not described a second time.

    Besides rows and DDL, the manifest keeps what a restore needs around the tables: the schemas,
    types and functions their DDL uses, and the views, policies and defaults elsewhere that a
    ``DROP … CASCADE`` would take with them."""
    meta: dict[str, Any] = {"tables": []} | ({"sample": limit} if limit is not None else {})
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        known = hashed.reusable(conn) if hashed is not None and limit is None else {}
        # With its partitions: a partitioned parent has no storage of its own.
        sizes = [int(conn.execute(_SIZE, (t.ident.as_string(conn),)).fetchone()[0] or 0) for t in tables]  # type: ignore[index]
        progress.start(f"backup {', '.join(t.qualified for t in tables)[:60]}", total=sum(sizes) or None)
        # A second connection costs more than it saves on small tables (and a history's backups
        # are mostly of empty ones): below _PARALLEL_HASH_BYTES the rows are hashed on this
        # connection, in this same snapshot, before their COPY.
        hashing = sum(size for t, size in zip(tables, sizes, strict=True) if t not in known)
        hasher: _SnapshotHasher | _InlineHasher = (
            _SnapshotHasher(url, snapshot) if hashing >= _PARALLEL_HASH_BYTES else _InlineHasher(conn))
        try:
            _backup_tables(conn, url, tables, snapshot, hasher, writer, progress, meta, limit, known)
        finally:
            hasher.close()
        with cat.qualified_names(conn):
            meta["dependents"] = {"views": cat.dependent_views(conn, tables), "policies": cat.dependent_policies(conn, tables),
                                  "defaults": cat.dependent_defaults(conn, tables)}
    progress.finish()
    return meta


def _backup_tables(conn: psycopg.Connection, url: str, tables: list[cat.Table], snapshot: str,
                   hasher: _SnapshotHasher | _InlineHasher,
                   writer: ArtifactWriter, progress: Progress, meta: dict[str, Any], limit: int | None,
                   known: dict[cat.Table, tuple[int, str, str | None]]) -> None:
    for index, table in enumerate(tables):
        fingerprint: Future[tuple[int, str]]
        if table in known:
            known_rows, known_hash, _shape = known[table]
            fingerprint = Future()
            fingerprint.set_result((known_rows, known_hash))
        else:
            fingerprint = hasher.submit(table, limit)  # hashed in the server while COPY streams
        stem = _file_stem(index, table)
        # DDL (pg_dump where it still runs) before the COPY, not beside it: on two cores both at once was measured slower.
        family = [table, *cat.partitions(conn, table)]
        partitioned = cat.is_partitioned(conn, table)
        pre, post = _family_ddl(conn, url, family, snapshot)
        writer.write_bytes(f"{stem}.pre.sql.zst", pre.encode())
        writer.write_bytes(f"{stem}.post.sql.zst", post.encode())
        columns = cat.copy_columns(conn, table)
        data = _backup_rows(conn, url, snapshot, table, columns, writer, stem, progress, partitioned, limit)
        rows = data.pop("rows")
        count, data_hash = fingerprint.result()
        if count != rows:
            raise BackupError(f"backup of {table.qualified}: COPY produced {rows} rows but the table has {count}")
        with cat.qualified_names(conn):
            inbound, needs = cat.inbound_foreign_keys(conn, table), cat.requirements(conn, table)
        meta["tables"].append({
            "schema": table.schema, "name": table.name, "qualified": table.qualified, "stem": stem, "columns": columns,
            "rows": rows, "data_hash": data_hash,
            "schema_hash": known[table][2] if table in known else cat.table_schema_hash(conn, table),
            "partitions": [t.qualified for t in family[1:]], "partitioned": partitioned,
            "sequences": cat.owned_sequences(conn, table), "inbound_fks": inbound, "requires": needs,
        } | data)


def _backup_rows(conn: psycopg.Connection, url: str, snapshot: str, table: cat.Table, columns: list[str],
                 writer: ArtifactWriter, stem: str, progress: Progress, partitioned: bool, limit: int | None) -> dict[str, Any]:
    """The table's rows into the artifact: one COPY stream, or parts over key ranges copied in parallel
    for a big table. Returns the rows copied and what the manifest says about how they are stored."""
    fmt = cd.copy_format(conn, table, columns)
    ranges = None if partitioned or limit is not None else cd.plan_parts(conn, table)
    if ranges is not None:
        rows, parts = cd.parallel_copy_out(url, snapshot, table, columns, fmt, ranges, writer, stem, progress)
        return {"rows": rows, "copy_format": fmt.value, "parts": parts}
    counter = cd.RowCounter()
    writer.write_stream(f"{stem}.copy.zst", cd.copy_out(conn, table, columns, counter, progress, fmt=fmt,
                                                        partitioned=partitioned, limit=limit))
    return {"rows": counter.rows, "copy_format": fmt.value}


def _execute_all(conn: psycopg.Connection, statements: list[str], what: str) -> None:
    for stmt in statements:
        try:
            conn.execute(stmt)
        except psycopg.Error as exc:
            raise StoreError(f"restore: {what} failed on `{stmt.strip()[:120]}`: {redact(str(exc).strip())}") from exc


def _drop_fk(conn: psycopg.Connection, fk: dict[str, str]) -> None:
    conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
        sql.Identifier(fk["schema"], fk["table"]), sql.Identifier(fk["name"])))


def _add_fk(conn: psycopg.Connection, fk: dict[str, str]) -> None:
    exists = conn.execute(
        "SELECT 1 FROM pg_constraint WHERE conname = %s AND conrelid = to_regclass(%s)",
        (fk["name"], sql.Identifier(fk["schema"], fk["table"]).as_string(conn)),
    ).fetchone()
    referencing = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(fk["schema"], fk["table"]).as_string(conn),)).fetchone()
    if exists or referencing is None or referencing[0] is None:
        return
    statement = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} " + fk["definition"].replace("%", "%%")).format(
        sql.Identifier(fk["schema"], fk["table"]), sql.Identifier(fk["name"]))
    try:
        with conn.transaction():  # savepoint: name the constraint the restored rows do not satisfy
            conn.execute(statement)
    except psycopg.errors.ForeignKeyViolation as exc:
        raise StoreError(
            f"restore: rows of {cat.Table(fk['schema'], fk['table']).qualified} written since the backup reference rows the "
            f"backup does not have ({fk['name']}: {redact(str(exc).strip().splitlines()[0])}); nothing was changed",
            hint=f"back up and restore {cat.Table(fk['schema'], fk['table']).qualified} together with this scope",
        ) from None


def _exists(conn: psycopg.Connection, probe: str) -> bool:
    row = conn.execute(sql.SQL(probe)).fetchone()  # probes come from our own manifest, checked by its digest
    return row is not None and row[0] is not None


def _relation_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    return _exists(conn, sql.SQL("SELECT to_regclass({})").format(sql.Literal(cat.Table(schema, name).qualified)).as_string(conn))


_ENABLE = {"O": "ENABLE TRIGGER", "A": "ENABLE ALWAYS TRIGGER", "R": "ENABLE REPLICA TRIGGER"}


class _Restore:
    """One restore inside one transaction: every step below either all lands or none does."""

    def __init__(self, conn: psycopg.Connection, manifest: Manifest, artifacts: ArtifactStore, progress: Progress) -> None:
        self.conn, self.manifest, self.artifacts, self.progress = conn, manifest, artifacts, progress
        self.tables_meta: list[dict[str, Any]] = manifest.meta["tables"]
        self.dependents: dict[str, list[dict[str, Any]]] = manifest.meta.get("dependents", {})

    def ddl(self, t: dict[str, Any], section: str) -> list[str]:
        return _ddl_statements(b"".join(self.artifacts.iter_chunks(self.manifest, f"{t['stem']}.{section}.sql.zst")).decode())

    def run(self) -> None:
        conn = self.conn
        recreate: list[dict[str, Any]] = []
        truncate: list[cat.Table] = []
        changed: list[cat.Table] = []
        for t in self.tables_meta:
            table = cat.Table(t["schema"], t["name"])
            current = cat.table_schema_hash(conn, table)
            if current is None:
                recreate.append(t)
            elif current == t["schema_hash"]:
                truncate.append(table)
            else:
                changed.append(table)  # reshaped (a column dropped, a rollback failed): rebuilt from our DDL
                recreate.append(t)
        present = truncate + changed
        with cat.qualified_names(conn):
            # Restoring must not set off what the tables' own triggers do on TRUNCATE and INSERT.
            triggers = cat.user_triggers(conn, truncate)
            # Foreign keys into the scope go for the refill (TRUNCATE refuses them, and rows must
            # not be checked in COPY order) and come back, validated, at the end.
            fks = cat.foreign_keys_into(conn, present) if present else []
            views = cat.dependent_views(conn, changed) if changed else []
            policies = cat.dependent_policies(conn, changed) if changed else []
            defaults = cat.dependent_defaults(conn, changed) if changed else []
        for tg in triggers:
            conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(sql.Identifier(tg["schema"], tg["table"]),
                                                                           sql.Identifier(tg["name"])))
        for fk in fks:
            _drop_fk(conn, fk)
        for view in reversed(views):
            kind = "MATERIALIZED VIEW" if view["kind"] == "m" else "VIEW"
            conn.execute(sql.SQL(f"DROP {kind} {{}}").format(sql.Identifier(view["schema"], view["name"])))
        for p in policies:
            conn.execute(sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(p["name"]), sql.Identifier(p["schema"], p["table"])))
        for d in defaults:
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(
                sql.Identifier(d["schema"], d["table"]), sql.Identifier(d["column"])))
        for table in changed:
            _execute_all(conn, [sql.SQL("DROP TABLE {}").format(table.ident).as_string(conn)], f"dropping changed {table.qualified}")
        for t in recreate:
            for need in t.get("requires", []):
                if not _exists(conn, need["probe"]):
                    _execute_all(conn, [need["ddl"]], f"re-creating {need['kind']} {need['name']} for {t['schema']}.{t['name']}")
            _execute_all(conn, self.ddl(t, "pre"), f"recreating {t['schema']}.{t['name']}")
        if truncate:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(t.ident for t in truncate)))
        self.copy_in()
        for t in recreate:
            _execute_all(conn, self.ddl(t, "post"), f"re-creating indexes and constraints of {t['schema']}.{t['name']}")
        for tg in triggers:
            conn.execute(sql.SQL(f"ALTER TABLE {{}} {_ENABLE[tg['enabled']]} {{}}").format(
                sql.Identifier(tg["schema"], tg["table"]), sql.Identifier(tg["name"])))
        for t in self.tables_meta:
            for seq in t.get("sequences", []):
                conn.execute("SELECT setval(to_regclass(%s), %s, %s)",
                             (sql.Identifier(seq["schema"], seq["name"]).as_string(conn), seq["last_value"], seq["is_called"]))
        for fk in fks + [fk for t in self.tables_meta for fk in t.get("inbound_fks", [])]:
            _add_fk(conn, fk)
        self.recreate_dependents(views, policies, defaults)

    def copy_in(self) -> None:
        # All parts of a big table load here, one COPY after another inside the restore's one
        # transaction, while a thread reads and decompresses the next blocks. Loading parts on
        # several connections would need each to commit its rows somewhere first: a staging table
        # swapped in at the end, which means re-creating the table under another name with all it
        # carries (identity and serial sequences, constraint and index names, triggers, policies,
        # grants, the FKs and views that point at it) and renaming it all back. On two cores the
        # server's COPY already has one core and decompression the other, so that machinery buys
        # little; the parallelism is in the backup's COPY out, the index builds (parallel maintenance
        # workers) and the fingerprint (a parallel aggregate), and atomicity stays as it was.
        for t in self.tables_meta:
            table = cat.Table(t["schema"], t["name"])
            fmt = cd.format_of(t)
            names = cd.data_files(self.manifest, t)
            # Every table here was created or truncated in this transaction, which is when FREEZE is
            # allowed: rows land frozen, sparing the table a later rewrite of hint bits by vacuum.
            # PostgreSQL refuses FREEZE on a partitioned parent, whose rows go to its partitions.
            with closing(cd.read_ahead(lambda name: self.artifacts.iter_chunks(self.manifest, name), names)) as files:
                for _name, blocks in files:
                    cd.copy_in(self.conn, table, t["columns"], fmt, blocks, self.progress, freeze=not t.get("partitioned"))

    def recreate_dependents(self, views: list[dict[str, Any]], policies: list[dict[str, Any]],
                            defaults: list[dict[str, Any]]) -> None:
        """Views, policies and defaults that ``DROP … CASCADE`` (or the rebuild above) removed, as the
        backup recorded them; ones made since the backup come back as they were just now."""
        conn = self.conn
        recorded = {(v["schema"], v["name"]): v for v in self.dependents.get("views", [])}
        merged = dict(recorded)
        for v in views:
            merged.setdefault((v["schema"], v["name"]), v)
        for v in sorted(merged.values(), key=lambda v: v["level"]):
            if not _relation_exists(conn, v["schema"], v["name"]):
                _execute_all(conn, v["ddl"], f"re-creating view {cat.Table(v['schema'], v['name']).qualified}")
        for p in {(p["schema"], p["table"], p["name"]): p for p in [*policies, *self.dependents.get("policies", [])]}.values():
            present = conn.execute("SELECT 1 FROM pg_policy WHERE polname = %s AND polrelid = to_regclass(%s)",
                                   (p["name"], cat.Table(p["schema"], p["table"]).qualified)).fetchone()
            if present is None and _relation_exists(conn, p["schema"], p["table"]):
                _execute_all(conn, [p["ddl"]], f"re-creating policy {p['name']}")
        for d in [*defaults, *self.dependents.get("defaults", [])]:
            missing = conn.execute(
                "SELECT 1 FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.atthasdef",
                (cat.Table(d["schema"], d["table"]).qualified, d["column"])).fetchone()
            if missing is not None:
                _execute_all(conn, [d["ddl"]], f"re-creating the default of {d['table']}.{d['column']}")


def restore(conn: psycopg.Connection, manifest: Manifest, artifacts: ArtifactStore, progress: Progress,
            *, lock_timeout: float) -> RestoreReport:
    """Put every table of the backup back, in one transaction, then verify it against the manifest."""
    tables_meta = manifest.meta.get("tables")
    if not isinstance(tables_meta, list):
        raise BackupCorruptError(f"backup {manifest.id}: manifest has no table list")
    total = sum(manifest.file(name).bytes for t in tables_meta for name in cd.data_files(manifest, t))
    progress.start(f"restore {manifest.id}", total=total or None)
    with conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout * 1000)}ms",))
        cd.raise_maintenance_memory(conn)
        _Restore(conn, manifest, artifacts, progress).run()
    progress.finish()
    return verify_restored(conn, manifest)


def verify_restored(conn: psycopg.Connection, manifest: Manifest) -> RestoreReport:
    mismatches: list[str] = []
    items: dict[str, int] = {}
    for v in manifest.meta.get("dependents", {}).get("views", []):
        if not _relation_exists(conn, v["schema"], v["name"]):
            mismatches.append(f"view {cat.Table(v['schema'], v['name']).qualified} is missing")
    for t in manifest.meta["tables"]:
        table = cat.Table(t["schema"], t["name"])
        shape = cat.table_schema_hash(conn, table)
        if shape != t["schema_hash"]:
            mismatches.append(f"{table.qualified}: schema differs from the backup")
            continue
        count, data_hash = cat.table_data_hash(conn, table)
        items[table.qualified] = count
        if (count, data_hash) != (t["rows"], t["data_hash"]):
            mismatches.append(f"{table.qualified}: {count} rows / data hash differ from backup ({t['rows']} rows)")
    return RestoreReport(manifest.id, items, verified=not mismatches, mismatches=tuple(mismatches))
