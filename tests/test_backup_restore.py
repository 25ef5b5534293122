"""Backups are verified before anything destructive runs, and restores prove what they restored."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Workspace

NOTES = """
    CREATE TABLE docs (id bigserial PRIMARY KEY, title text NOT NULL);
    CREATE TABLE legacy_notes (
        id serial PRIMARY KEY,
        doc_id bigint REFERENCES docs (id),
        note text NOT NULL,
        tags text[] DEFAULT '{}',
        meta jsonb,
        weight double precision,
        body_len int GENERATED ALWAYS AS (length(note)) STORED
    );
    CREATE INDEX legacy_notes_doc_idx ON legacy_notes (doc_id);
    INSERT INTO docs (title) SELECT 'doc ' || i FROM generate_series(1, 50) i;
    INSERT INTO legacy_notes (doc_id, note, tags, meta, weight)
    SELECT 1 + i % 50, E'line one\\nline "two"\\ttab \\\\ backslash ' || i, ARRAY['a', 'b,c'], jsonb_build_object('i', i),
           i / 3.0
    FROM generate_series(1, 2000) i;
    INSERT INTO legacy_notes (doc_id, note, meta) VALUES (NULL, 'ünïcödé ✓', NULL);
"""


def _setup(ws: Workspace) -> None:
    ws.migration("0001_notes", NOTES, "DROP TABLE legacy_notes; DROP TABLE docs;")
    assert ws.run("up").exit_code == 0


def _drop_legacy(ws: Workspace) -> None:
    ws.migration(
        "0002_drop_legacy_notes",
        "DROP TABLE legacy_notes;",  # no declared scope: inferred from the statement
        """
        CREATE TABLE legacy_notes (
            id serial PRIMARY KEY, doc_id bigint REFERENCES docs (id), note text NOT NULL,
            tags text[] DEFAULT '{}', meta jsonb, weight double precision,
            body_len int GENERATED ALWAYS AS (length(note)) STORED
        );
        CREATE INDEX legacy_notes_doc_idx ON legacy_notes (doc_id);
        """,
    )


def test_drop_table_is_backed_up_without_declared_scope_and_returns_by_rollback_and_restore(ws: Workspace) -> None:
    _setup(ws)
    before = ws.fingerprint("legacy_notes")
    _drop_legacy(ws)
    up = ws.run("up", "--json")
    assert up.exit_code == 0, up.output
    outcome = json.loads(up.stdout)[0]
    assert outcome["risk"] == "C"
    assert outcome["scope"] == ["public.legacy_notes"]
    backup_id = outcome["backup"]
    assert ws.value("SELECT to_regclass('legacy_notes')") is None

    assert ws.run("rollback", "--steps", "1").exit_code == 0
    assert ws.value("SELECT count(*) FROM legacy_notes") == 0
    restore = ws.run("backup", "restore", backup_id, "--yes")
    assert restore.exit_code == 0, restore.output
    assert "will be discarded" in restore.stderr

    after = ws.fingerprint("legacy_notes")
    assert after.data_hash == before.data_hash
    assert after.schema_hash == before.schema_hash
    assert ws.value("SELECT note FROM legacy_notes WHERE meta IS NULL AND doc_id IS NULL") == "ünïcödé ✓"
    # The serial sequence continues after the restored rows instead of colliding with them.
    assert ws.value("INSERT INTO legacy_notes (note) VALUES ('next') RETURNING id") == 2002


def test_restore_recreates_a_dropped_table_with_its_indexes_and_inbound_foreign_keys(ws: Workspace) -> None:
    ws.migration("0001_base", """
        CREATE TABLE parents (id int PRIMARY KEY, name text);
        CREATE TABLE children (id int PRIMARY KEY, parent_id int CONSTRAINT children_parent_fk REFERENCES parents (id));
        INSERT INTO parents SELECT i, 'p' || i FROM generate_series(1, 10) i;
        INSERT INTO children SELECT i, 1 + i % 10 FROM generate_series(1, 30) i;
    """, "DROP TABLE children; DROP TABLE parents;")
    assert ws.run("up").exit_code == 0
    before = ws.fingerprint("parents", "children")
    backup = json.loads(ws.run("backup", "create", "main", "--scope", "parents", "--json").stdout)
    ws.sql("DROP TABLE parents CASCADE")  # also silently drops children_parent_fk
    assert ws.run("backup", "restore", backup["id"], "--yes").exit_code == 0
    after = ws.fingerprint("parents", "children")
    assert after.schema_hash == before.schema_hash
    assert after.data_hash == before.data_hash
    assert ws.value("SELECT count(*) FROM pg_constraint WHERE conname = 'children_parent_fk'") == 1


def test_flipped_byte_fails_verify_and_restore_refuses_changing_nothing(ws: Workspace) -> None:
    _setup(ws)
    backup = json.loads(ws.run("backup", "create", "main", "--scope", "legacy_notes", "--json").stdout)
    ws.sql("DELETE FROM legacy_notes WHERE id > 1000")
    before = ws.fingerprint("legacy_notes")
    directory = ws.root / ".polyshift" / "backups" / backup["id"]
    target = next(p for p in directory.iterdir() if p.name.endswith(".copy.zst"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))

    verify = ws.run("backup", "verify", backup["id"])
    assert verify.exit_code == 2
    assert "corrupted" in verify.stderr and target.name in verify.stderr
    restore = ws.run("backup", "restore", backup["id"], "--yes")
    assert restore.exit_code == 2
    assert "corrupted" in restore.stderr
    assert ws.fingerprint("legacy_notes") == before
    assert len(ws.backups()) == 1  # not even a safety backup was taken


def test_restore_without_yes_is_refused_when_not_interactive(ws: Workspace) -> None:
    _setup(ws)
    backup = json.loads(ws.run("backup", "create", "main", "--scope", "legacy_notes", "--json").stdout)
    ws.sql("DELETE FROM legacy_notes")
    result = ws.run("backup", "restore", backup["id"])
    assert result.exit_code == 2
    assert "--yes" in result.stderr and "discarded" in result.stderr
    assert ws.value("SELECT count(*) FROM legacy_notes") == 0


def test_restore_takes_a_safety_backup_and_audits_the_overwritten_window(ws: Workspace) -> None:
    _setup(ws)
    backup = json.loads(ws.run("backup", "create", "main", "--scope", "legacy_notes", "--json").stdout)
    ws.sql("INSERT INTO legacy_notes (note) VALUES ('written after the backup')")
    assert ws.run("backup", "restore", backup["id"], "--yes").exit_code == 0
    assert ws.value("SELECT count(*) FROM legacy_notes WHERE note = 'written after the backup'") == 0
    entries = json.loads(ws.run("audit", "--json").stdout)
    restored = [e for e in entries if e["action"] == "backup.restored"][-1]
    assert restored["detail"]["overwrote_writes_between"][0] == backup["created_at"]
    safety = restored["detail"]["safety_backup"]
    assert safety and safety != backup["id"]
    # The write that the restore discarded is still recoverable from the safety backup.
    assert ws.run("backup", "restore", safety, "--yes").exit_code == 0
    assert ws.value("SELECT count(*) FROM legacy_notes WHERE note = 'written after the backup'") == 1


def test_artifacts_are_private_and_manifest_lists_every_file_with_sha256(ws: Workspace) -> None:
    _setup(ws)
    backup = json.loads(ws.run("backup", "create", "main", "--scope", "legacy_notes,docs", "--json").stdout)
    assert set(backup) >= {"id", "store", "version", "scope", "created_at"}
    directory = ws.root / ".polyshift" / "backups" / backup["id"]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.parent.stat().st_mode) == 0o700
    manifest = json.loads((directory / "manifest.json").read_text())
    assert {f["name"] for f in manifest["files"]} | {"manifest.json"} == {p.name for p in directory.iterdir()}
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])
    assert [t["rows"] for t in manifest["meta"]["tables"]] == [2001, 50]


def test_backup_of_unknown_table_is_refused(ws: Workspace) -> None:
    _setup(ws)
    result = ws.run("backup", "create", "main", "--scope", "no_such_table")
    assert result.exit_code == 2
    assert "no_such_table" in result.stderr
    assert ws.backups() == []


def test_declared_scope_naming_a_missing_table_refuses_up_before_any_change(ws: Workspace) -> None:
    _setup(ws)
    ws.migration("0002_x", "-- polyshift: backup=ghost_table\nALTER TABLE docs ADD COLUMN x int;", "ALTER TABLE docs DROP COLUMN x;")
    result = ws.run("up")
    assert result.exit_code == 2
    assert "ghost_table" in result.stderr
    assert ws.value("SELECT count(*) FROM information_schema.columns WHERE table_name = 'docs' AND column_name = 'x'") == 0


def test_show_and_list_expose_the_manifest(ws: Workspace) -> None:
    _setup(ws)
    created = json.loads(ws.run("backup", "create", "main", "--scope", "docs", "--json").stdout)
    listed = ws.backups()
    assert [b["id"] for b in listed] == [created["id"]]
    shown = json.loads(ws.run("backup", "show", created["id"], "--json").stdout)
    assert shown["scope"] == ["public.docs"]
    assert ws.run("backup", "show", "not-an-id").exit_code == 2




def test_partitioned_table_round_trips(ws: Workspace) -> None:
    ws.migration("0001_events", """
        CREATE TABLE events (id int, at date NOT NULL, kind text) PARTITION BY RANGE (at);
        CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        INSERT INTO events SELECT i, date '2025-06-01' + i, 'k' || (i % 3) FROM generate_series(1, 400) i;
    """, "DROP TABLE events;")
    assert ws.run("up").exit_code == 0
    before = ws.fingerprint("events")
    created = ws.run("backup", "create", "main", "--scope", "events", "--json")
    assert created.exit_code == 0, created.output
    backup = json.loads(created.stdout)
    ws.sql("DELETE FROM events WHERE id > 100")
    result = ws.run("backup", "restore", backup["id"], "--yes")
    assert result.exit_code == 0, result.output
    assert ws.fingerprint("events") == before
    assert ws.value("SELECT count(*) FROM events_2026") > 0
    ws.sql("DROP TABLE events")  # parent and partitions gone: the family is recreated from its DDL
    assert ws.run("backup", "restore", backup["id"], "--yes").exit_code == 0
    assert ws.fingerprint("events") == before
    assert ws.value("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass") == 2


def _fingerprint_then_backup(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             between: str | None) -> tuple[Any, dict[str, Any], list[str]]:
    """A release's order on one connection: fingerprint the scope, then back it up (``between``:
    SQL another session commits in between). Returns the fingerprint, the backup's table entry
    and which hashes the backup computed itself."""
    from polyshift.adapters.postgres import catalog as cat
    from polyshift.adapters.postgres.adapter import PostgresAdapter
    from polyshift.framework.control.localstore import LocalArtifactStore
    from polyshift.framework.core.config import load_config
    from polyshift.framework.core.progress import NullProgress

    computed: list[str] = []
    data_hash, shape_hash = cat.table_data_hash, cat.table_schema_hash

    def data(*args: Any, **kwargs: Any) -> tuple[int, str]:
        computed.append("data")
        return data_hash(*args, **kwargs)

    def shape(*args: Any, **kwargs: Any) -> str | None:
        computed.append("schema")
        return shape_hash(*args, **kwargs)

    adapter = PostgresAdapter(load_config(ws.config).store("main"))
    adapter.connect()
    try:
        fp = adapter.fingerprint(("legacy_notes",))
        if between is not None:
            ws.sql(between)
        monkeypatch.setattr(cat, "table_data_hash", data)
        monkeypatch.setattr(cat, "table_schema_hash", shape)
        store = LocalArtifactStore(tmp_path / "backups")
        writer = store.new_writer(store="main", kind="postgres", version=None, scope=("public.legacy_notes",), reason="test")
        meta = adapter.backup(("public.legacy_notes",), writer, NullProgress())
        monkeypatch.undo()
        store.seal(writer, meta)
    finally:
        adapter.close()
    return fp, meta["tables"][0], computed


def test_a_backup_in_the_fingerprints_own_snapshot_takes_its_hashes(ws: Workspace, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing committed between a release's fingerprint and its backup: the backup sees what the
    fingerprint hashed, so it does not hash the rows or describe the table again (issue 19)."""
    _setup(ws)
    fp, table, computed = _fingerprint_then_backup(ws, tmp_path, monkeypatch, None)
    assert computed == []
    item = fp.items["public.legacy_notes"]
    assert (table["rows"], table["data_hash"], table["schema_hash"]) == (item["rows"], item["data"], item["schema"]) \
        and table["rows"] == 2001


def test_a_backup_after_a_commit_hashes_what_it_copied(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything committed after the fingerprint (here a row and a column) changes the snapshot: the
    backup hashes and describes what it copies itself, never the fingerprint's older figures."""
    _setup(ws)
    fp, table, computed = _fingerprint_then_backup(
        ws, tmp_path, monkeypatch, "INSERT INTO legacy_notes (note) VALUES ('late'); ALTER TABLE legacy_notes ADD COLUMN extra int")
    assert sorted(computed) == ["data", "schema"]
    item = fp.items["public.legacy_notes"]
    assert table["rows"] == item["rows"] + 1 == 2002
    assert table["data_hash"] != item["data"] and table["schema_hash"] != item["schema"]
    assert table["schema_hash"] == ws.fingerprint("legacy_notes").items["public.legacy_notes"]["schema"]
