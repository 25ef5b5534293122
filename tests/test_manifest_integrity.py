"""A backup's manifest is trusted only as it was written: its sha256 is recorded in the control
plane when the backup is sealed and checked on every read that verify, restore or recover rely on,
and the artifact file names it lists are held to the rule the writer follows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Workspace

TWINS = """
    CREATE TABLE invoices (id int PRIMARY KEY, amount int NOT NULL);
    CREATE TABLE payments (id int PRIMARY KEY, amount int NOT NULL);
    INSERT INTO invoices SELECT i, i FROM generate_series(1, 1000) i;
    INSERT INTO payments SELECT i, i * 7 FROM generate_series(1, 1000) i;
"""


def _twins_backup(ws: Workspace) -> tuple[str, Path]:
    ws.migration("0001_twins", TWINS, "DROP TABLE payments; DROP TABLE invoices;")
    assert ws.run("up").exit_code == 0
    backup = json.loads(ws.run("backup", "create", "main", "--scope", "invoices", "--json").stdout)["id"]
    return backup, ws.root / ".polyshift" / "backups" / backup / "manifest.json"


def _edit(path: Path, change: Any) -> None:
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _retarget(ws: Workspace) -> Any:
    """An edit that points the invoices backup at payments, shape hash included (copied from a
    backup of payments), so that nothing but the manifest's own digest can tell."""
    payments = json.loads(ws.run("backup", "create", "main", "--scope", "payments", "--json").stdout)["id"]
    shape = json.loads(ws.run("backup", "show", payments, "--json").stdout)["meta"]["tables"][0]["schema_hash"]

    def edit(manifest: dict[str, Any]) -> None:
        manifest["meta"]["tables"][0].update(name="payments", schema_hash=shape)
        manifest["scope"] = ["public.payments"]
    return edit


def test_an_edited_manifest_fails_verify(ws: Workspace) -> None:
    backup, manifest = _twins_backup(ws)
    _edit(manifest, _retarget(ws))
    result = ws.run("backup", "verify", backup)
    assert result.exit_code == 2, result.output
    assert "manifest.json" in result.stderr and "changed" in result.stderr


def test_restore_of_an_edited_manifest_changes_nothing(ws: Workspace) -> None:
    backup, manifest = _twins_backup(ws)
    edit = _retarget(ws)
    before = ws.fingerprint("invoices", "payments")
    _edit(manifest, edit)
    result = ws.run("backup", "restore", backup, "--yes")
    assert result.exit_code == 2, result.output
    assert "manifest.json" in result.stderr
    assert ws.fingerprint("invoices", "payments") == before
    assert len(list(manifest.parent.parent.iterdir())) == 2  # not even a safety backup was taken


def test_a_manifest_whose_id_names_another_backup_is_refused(ws: Workspace) -> None:
    backup, manifest = _twins_backup(ws)
    other = json.loads(ws.run("backup", "create", "main", "--scope", "payments", "--json").stdout)["id"]
    _edit(manifest, lambda m: m.update(id=other))
    # even with a digest that matches the edited file
    ws.state_sql("UPDATE polyshift_backups SET manifest_sha256 = NULL WHERE id = :id", id=backup)
    result = ws.run("backup", "verify", backup)
    assert result.exit_code == 2, result.output
    assert other in result.stderr


def test_a_file_name_that_leaves_the_backup_directory_is_refused(ws: Workspace) -> None:
    backup, manifest = _twins_backup(ws)
    directory = manifest.parent
    target = next(p for p in directory.iterdir() if p.name.endswith(".copy.zst"))
    outside = directory.parent / "elsewhere.copy.zst"
    outside.write_bytes(target.read_bytes())

    def escape(m: dict[str, Any]) -> None:
        for f in m["files"]:
            if f["name"] == target.name:
                f["name"] = "../elsewhere.copy.zst"
        m["meta"]["tables"][0]["stem"] = "../elsewhere"

    _edit(manifest, escape)
    # a backup from before digests were recorded: only the name rule protects it
    ws.state_sql("UPDATE polyshift_backups SET manifest_sha256 = NULL WHERE id = :id", id=backup)
    for command in (["backup", "verify", backup], ["backup", "restore", backup, "--yes"]):
        result = ws.run(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "../elsewhere.copy.zst" in result.stderr and "file name" in result.stderr


def test_a_backup_taken_before_digests_were_recorded_still_verifies_and_restores(ws: Workspace) -> None:
    backup, _manifest = _twins_backup(ws)
    # A control plane from before digests were kept, which was also before its schema had a version.
    ws.state_sql("ALTER TABLE polyshift_backups DROP COLUMN manifest_sha256")
    ws.state_sql("DROP TABLE polyshift_schema")
    ws.sql("DELETE FROM invoices WHERE id > 10")
    verify = ws.run("backup", "verify", backup)
    assert verify.exit_code == 0, verify.output
    assert "not on record" in verify.stderr
    restore = ws.run("backup", "restore", backup, "--yes")
    assert restore.exit_code == 0, restore.output
    assert ws.value("SELECT count(*) FROM invoices") == 1000
    recorded = ws.state_sql("SELECT count(*) FROM polyshift_backups WHERE manifest_sha256 IS NOT NULL")[0][0]
    assert recorded == 1  # the safety backup taken before the restore (the column is back)


def test_every_backup_records_the_sha256_of_its_manifest(ws: Workspace) -> None:
    import hashlib

    backup, manifest = _twins_backup(ws)
    recorded = ws.state_sql("SELECT manifest_sha256 FROM polyshift_backups WHERE id = :id", id=backup)[0][0]
    assert recorded == hashlib.sha256(manifest.read_bytes()).hexdigest()


def test_a_postgresql_control_plane_from_before_digests_gains_the_column(database: str) -> None:
    import psycopg

    from polyshift.framework.control.state import ControlPlane

    url = database.replace("postgresql://", "postgresql+psycopg://", 1)
    ControlPlane(url).close()
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("ALTER TABLE polyshift_backups DROP COLUMN manifest_sha256")
        conn.execute("DROP TABLE polyshift_schema")  # as before the schema had a version
    plane = ControlPlane(url)
    try:
        assert plane.manifest_digest("20261123T000000Z-main-000000") is None
    finally:
        plane.close()
    with psycopg.connect(database, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM information_schema.columns "
                             "WHERE table_name = 'polyshift_backups' AND column_name = 'manifest_sha256'").fetchone()
    assert found == (1,)
