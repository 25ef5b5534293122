"""Backups in S3-compatible object storage, on a real server (VersityGW) started by the tests:
streamed in parts, never overwriting, read back and verified, manifests checked against the
control plane, restorable by any runner that shares the control plane and the bucket."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, Workspace, _fresh_database

ORDERS = """\
    CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2) NOT NULL);
    INSERT INTO orders SELECT i, 'customer ' || (i % 97), (i * 7 % 1000) / 10.0 FROM generate_series(1, 2000) i;
    """


@pytest.fixture
def shared_state(pg_server: Server) -> Iterator[str]:
    """A PostgreSQL control plane, as a team shares it ([project] state_url)."""
    yield from _fresh_database(pg_server)


def _team_workspace(root: Path, database: str, state: str, bucket: str) -> Workspace:
    """A runner's working directory: its own checkout, the team's control plane and bucket."""
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace(root, database, state)
    ws.config.write_text(ws.config.read_text().replace('backups = ".polyshift/backups"', f'backups = "s3://{bucket}/team/backups"'))
    return ws


def _store(bucket: str, **kwargs: Any) -> Any:
    from polyshift.framework.control.s3store import S3ArtifactStore

    return S3ArtifactStore(f"s3://{bucket}/unit", **kwargs)


def _object_path(s3_server: Any, bucket: str, key: str) -> Path:
    return Path(s3_server.data_dir) / bucket / key


# -- restore by any runner ---------------------------------------------------------------------
def test_a_backup_in_the_bucket_is_restored_by_another_runner_from_another_directory(
        tmp_path: Path, database: str, shared_state: str, s3_bucket: str) -> None:
    first = _team_workspace(tmp_path / "runner-a", database, shared_state, s3_bucket)
    first.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    assert first.run("up").exit_code == 0
    before = first.fingerprint("orders")
    created = first.run("backup", "create", "main", "--scope", "orders", "--json")
    assert created.exit_code == 0, created.output
    backup = json.loads(created.stdout)["id"]
    assert not (first.root / ".polyshift" / "backups").exists()  # nothing on this machine's disk
    first.sql("DELETE FROM orders WHERE id > 10")

    second = _team_workspace(tmp_path / "runner-b", database, shared_state, s3_bucket)
    (second.migrations / "main" / "0001_orders.forward.sql").write_text(textwrap.dedent(ORDERS))
    (second.migrations / "main" / "0001_orders.rollback.sql").write_text("DROP TABLE orders;\n")
    assert backup in [b["id"] for b in second.backups()]
    restored = second.run("backup", "restore", backup, "--yes")
    assert restored.exit_code == 0, restored.output
    assert second.fingerprint("orders") == before


def test_backup_list_show_and_verify_read_the_bucket(tmp_path: Path, database: str, shared_state: str, s3_bucket: str) -> None:
    ws = _team_workspace(tmp_path / "runner", database, shared_state, s3_bucket)
    ws.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    assert ws.run("up").exit_code == 0
    backup = json.loads(ws.run("backup", "create", "main", "--scope", "orders", "--json").stdout)["id"]
    listed = ws.backups()
    assert [b["id"] for b in listed] == [backup]
    verify = ws.run("backup", "verify", backup)
    assert verify.exit_code == 0, verify.output


# -- streamed in parts, memory flat ------------------------------------------------------------
def _random_chunks(total: int, seed: int = 7) -> Iterator[bytes]:
    """Incompressible data, so the stored object is as large as what was streamed."""
    import random

    rng = random.Random(seed)
    for _ in range(total // (1 << 20)):
        yield rng.randbytes(1 << 20)


def _upload_peak(store: Any, total: int) -> tuple[Any, Any, int]:
    writer = store.new_writer(store="main", kind="postgres", version=None, scope=("t",), reason="test")
    tracemalloc.start()
    try:
        written = writer.write_stream("big.zst", _random_chunks(total))
        return writer, written, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_file_larger_than_many_parts_is_uploaded_in_parts_with_memory_flat_whatever_its_size(s3_bucket: str) -> None:
    part = 5 << 20
    store = _store(s3_bucket, part_size=part)
    assert store.client is not None  # the client (its service model) is loaded before measuring
    _, _, small_peak = _upload_peak(store, 12 << 20)
    writer, written, peak = _upload_peak(store, 48 << 20)
    assert written.bytes > 9 * part  # ten parts
    assert peak < 4 * part, f"peak {peak / 2**20:.1f} MiB while uploading a {written.bytes / 2**20:.0f} MiB file"
    assert peak < small_peak + part, f"{small_peak / 2**20:.1f} MiB for 12 MiB, {peak / 2**20:.1f} MiB for 48 MiB"
    manifest = store.seal(writer, {})
    head = store.client.head_object(Bucket=s3_bucket, Key=store.key(manifest.id, "big.zst"))
    assert head["ETag"].strip('"').endswith("-10")  # a multipart object of ten parts
    expected = hashlib.sha256()
    for chunk in _random_chunks(48 << 20):
        expected.update(chunk)
    got = hashlib.sha256()
    for block in store.iter_chunks(store.verify(manifest.id, expected_digest=manifest.digest), "big.zst"):
        got.update(block)
    assert got.hexdigest() == expected.hexdigest()


# -- never overwriting -------------------------------------------------------------------------
def test_a_backup_file_never_replaces_an_object_that_exists(s3_bucket: str) -> None:
    from polyshift.framework.core.errors import BackupError

    store = _store(s3_bucket)
    writer = store.new_writer(store="main", kind="postgres", version=None, scope=("t",), reason="test")
    key = store.key(writer.base["id"], "rows.copy.zst")
    store.client.put_object(Bucket=s3_bucket, Key=key, Body=b"another runner's bytes")
    with pytest.raises(BackupError, match="exists already"):
        writer.write_bytes("rows.copy.zst", b"ours")
    assert store.client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"another runner's bytes"


@pytest.mark.parametrize("size", [1 << 20, 24 << 20], ids=["single-put", "multipart"])
def test_an_object_that_appears_while_a_file_uploads_is_not_replaced(s3_bucket: str, size: int) -> None:
    # The look before writing passed; the object appears before the upload completes. The
    # conditional write (If-None-Match: *) is what refuses it, on the server.
    from polyshift.framework.core.errors import BackupError

    store = _store(s3_bucket, part_size=5 << 20)
    writer = store.new_writer(store="main", kind="postgres", version=None, scope=("t",), reason="test")
    key = store.key(writer.base["id"], "rows.copy.zst")

    def racing() -> Iterator[bytes]:
        yield from _random_chunks(size)
        store.client.put_object(Bucket=s3_bucket, Key=key, Body=b"written meanwhile")

    with pytest.raises(BackupError, match="never overwritten"):
        writer.write_stream("rows.copy.zst", racing())
    assert store.client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"written meanwhile"
    assert not store.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")  # the refused upload was aborted


# -- read back and verified ----------------------------------------------------------------------
def _team_backup(tmp_path: Path, database: str, shared_state: str, bucket: str) -> tuple[Workspace, str]:
    ws = _team_workspace(tmp_path / "runner", database, shared_state, bucket)
    ws.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    assert ws.run("up").exit_code == 0
    return ws, json.loads(ws.run("backup", "create", "main", "--scope", "orders", "--json").stdout)["id"]


def test_a_corrupted_object_fails_verify_and_its_restore_changes_nothing(
        tmp_path: Path, database: str, shared_state: str, s3_bucket: str, s3_server: Any) -> None:
    ws, backup = _team_backup(tmp_path, database, shared_state, s3_bucket)
    stored = next(p for p in (_object_path(s3_server, s3_bucket, f"team/backups/{backup}")).iterdir() if p.name.endswith(".copy.zst"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))  # the bucket's bytes changed behind the server's back (bit rot, a bad disk)
    ws.sql("DELETE FROM orders WHERE id > 10")
    changed = ws.fingerprint("orders")
    verify = ws.run("backup", "verify", backup)
    assert verify.exit_code == 2, verify.output
    assert "corrupted" in verify.stderr and stored.name in verify.stderr
    restore = ws.run("backup", "restore", backup, "--yes")
    assert restore.exit_code == 2, restore.output
    assert ws.fingerprint("orders") == changed
    assert [b["id"] for b in ws.backups()] == [backup]  # not even a safety backup was taken


def test_a_manifest_replaced_in_the_bucket_is_refused_against_the_control_plane(
        tmp_path: Path, database: str, shared_state: str, s3_bucket: str) -> None:
    from polyshift.framework.control.s3store import S3ArtifactStore

    ws, backup = _team_backup(tmp_path, database, shared_state, s3_bucket)
    store = S3ArtifactStore(f"s3://{s3_bucket}/team/backups")
    key = store.key(backup, "manifest.json")
    manifest = json.loads(store.client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    manifest["scope"] = ["public.other"]
    store.client.put_object(Bucket=s3_bucket, Key=key, Body=json.dumps(manifest, indent=2, sort_keys=True).encode())
    for command in (["backup", "verify", backup], ["backup", "restore", backup, "--yes"]):
        result = ws.run(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "manifest.json was changed after the backup was sealed" in result.stderr


def test_a_backup_whose_writer_died_before_sealing_is_neither_listed_nor_restored(
        tmp_path: Path, database: str, shared_state: str, s3_bucket: str) -> None:
    ws, sealed = _team_backup(tmp_path, database, shared_state, s3_bucket)
    from polyshift.framework.control.s3store import S3ArtifactStore

    store = S3ArtifactStore(f"s3://{s3_bucket}/team/backups")
    writer = store.new_writer(store="main", kind="postgres", version=None, scope=("public.orders",), reason="test")
    writer.write_bytes("public.orders.copy.zst", b"half a backup")  # and then the runner is gone
    assert [b["id"] for b in ws.backups()] == [sealed]
    result = ws.run("backup", "restore", writer.base["id"], "--yes")
    assert result.exit_code == 2, result.output
    assert "never sealed" in result.stderr


# -- bad settings: exit 2, nothing changed -------------------------------------------------------
@pytest.mark.parametrize(("url", "message"), [
    ("s3://", "is not a bucket name"),
    ("s3://Bad_Bucket/x", "is not a bucket name"),
    ("s3://key:secret@bucket/x", "credentials and the endpoint come from"),
    ("s3://bucket/a/../b", "'..'"),
    ("gs://bucket/x", "only s3://"),
])
def test_a_malformed_backups_url_is_refused_by_name(ws: Workspace, url: str, message: str) -> None:
    ws.config.write_text(ws.config.read_text().replace('backups = ".polyshift/backups"', f'backups = "{url}"'))
    result = ws.run("status")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "[project] backups" in result.stderr


def _destructive_pending(ws: Workspace, bucket_url: str) -> None:
    ws.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    assert ws.run("up").exit_code == 0
    ws.migration("0002_purge", "DELETE FROM orders WHERE id > 100;", "SELECT 1;")
    ws.config.write_text(ws.config.read_text().replace('backups = ".polyshift/backups"', f'backups = "{bucket_url}"'))


def test_up_with_a_bucket_that_does_not_exist_is_refused_before_anything_runs(ws: Workspace, s3_bucket: str) -> None:
    _destructive_pending(ws, "s3://no-such-bucket-here/x")
    result = ws.run("up")
    assert result.exit_code == 2, result.output
    assert "s3://no-such-bucket-here/x" in result.stderr and "bucket does not exist" in result.stderr
    assert ws.value("SELECT count(*) FROM orders") == 2000


def test_up_without_credentials_is_refused_naming_them(ws: Workspace, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _destructive_pending(ws, f"s3://{s3_bucket}/x")
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = ws.run("up")
    assert result.exit_code == 2, result.output
    assert "no AWS credentials" in result.stderr and "AWS_ACCESS_KEY_ID" in result.stderr
    assert ws.value("SELECT count(*) FROM orders") == 2000


def test_up_with_wrong_credentials_is_refused_as_access_denied(ws: Workspace, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _destructive_pending(ws, f"s3://{s3_bucket}/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    result = ws.run("up")
    assert result.exit_code == 2, result.output
    assert "access denied" in result.stderr
    assert "not-the-secret" not in result.output
    assert ws.value("SELECT count(*) FROM orders") == 2000


def test_up_with_an_unreachable_endpoint_is_refused(ws: Workspace, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from polyshift.framework.sandbox.servers import free_port

    _destructive_pending(ws, f"s3://{s3_bucket}/x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = ws.run("up")
    assert result.exit_code == 2, result.output
    assert "unreachable" in result.stderr
    assert ws.value("SELECT count(*) FROM orders") == 2000


def test_a_big_tables_parts_are_uploaded_side_by_side_and_restored(
        tmp_path: Path, database: str, shared_state: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from polyshift.adapters.postgres import copydata

    monkeypatch.setenv(copydata.PARALLEL_MIN_BYTES_ENV, "0")
    monkeypatch.setenv(copydata.PARALLEL_WORKERS_ENV, "2")
    ws = _team_workspace(tmp_path / "runner", database, shared_state, s3_bucket)
    ws.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    assert ws.run("up").exit_code == 0
    before = ws.fingerprint("orders")
    created = ws.run("backup", "create", "main", "--scope", "orders", "--json")
    assert created.exit_code == 0, created.output
    shown = json.loads(ws.run("backup", "show", json.loads(created.stdout)["id"], "--json").stdout)
    assert sum(".part" in f["name"] for f in shown["files"]) == 2
    ws.sql("DELETE FROM orders WHERE id > 10")
    restored = ws.run("backup", "restore", json.loads(created.stdout)["id"], "--yes", "--json")
    assert restored.exit_code == 0, restored.output
    after = ws.fingerprint("orders")
    assert (after.data_hash, after.counts) == (before.data_hash, before.counts)
