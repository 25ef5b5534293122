"""`polyshift backup clean`: what backups that never sealed left behind (a runner killed
mid-backup) is removed once its writer is gone; a sealed backup, a live writer's files and
anything written to since it was listed are never touched."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.conftest import Workspace

ORDERS = """\
    CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL);
    INSERT INTO orders SELECT i, 'customer ' || i FROM generate_series(1, 200) i;
    """


def _bucket_workspace(ws: Workspace, bucket: str) -> Workspace:
    ws.config.write_text(ws.config.read_text().replace('backups = ".polyshift/backups"', f'backups = "s3://{bucket}/team/backups"'))
    return ws


def _sealed_backup(ws: Workspace) -> str:
    ws.migration("0001_orders", ORDERS, "DROP TABLE orders;")
    assert ws.run("up").exit_code == 0
    created = ws.run("backup", "create", "main", "--scope", "orders", "--json")
    assert created.exit_code == 0, created.output
    return str(json.loads(created.stdout)["id"])


def _s3_store(bucket: str) -> Any:
    from polyshift.framework.control.s3store import S3ArtifactStore

    return S3ArtifactStore(f"s3://{bucket}/team/backups")


def _abandon_s3_backups(bucket: str) -> tuple[str, str]:
    """One backup killed after a whole file, one killed in the middle of a multipart upload."""
    store = _s3_store(bucket)
    whole = store.new_writer(store="main", kind="postgres", version=None, scope=("public.orders",), reason="test")
    whole.write_bytes("public.orders.copy.zst", b"half a backup")
    torn = store.new_writer(store="main", kind="postgres", version=None, scope=("public.orders",), reason="test")
    key = store.key(torn.base["id"], "public.orders.copy.zst")
    upload = store.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    store.client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * (5 << 20))
    return whole.base["id"], torn.base["id"]


def _keys(bucket: str) -> list[str]:
    store = _s3_store(bucket)
    return sorted(o["Key"] for o in store.client.list_objects_v2(Bucket=bucket, Prefix="team/backups/").get("Contents", []))


def _uploads(bucket: str) -> list[str]:
    return [u["Key"] for u in _s3_store(bucket).client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


# -- object storage ------------------------------------------------------------------------------
def test_clean_removes_the_objects_and_unfinished_uploads_of_unsealed_backups(ws: Workspace, s3_bucket: str) -> None:
    _bucket_workspace(ws, s3_bucket)
    sealed = _sealed_backup(ws)
    whole, torn = _abandon_s3_backups(s3_bucket)
    result = ws.run("backup", "clean", "--older-than", "0s", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(report["removed"]) == sorted([whole, torn])
    assert {f["id"]: f["uploads"] for f in report["found"]} == {whole: 0, torn: 1}
    assert all(f"/{sealed}/" in key for key in _keys(s3_bucket))
    assert _uploads(s3_bucket) == []
    assert ws.run("backup", "verify", sealed).exit_code == 0
    removed = [r[0] for r in ws.state_sql("SELECT subject FROM polyshift_audit WHERE action = 'backup.leftover_removed'")]
    assert sorted(removed) == sorted([whole, torn])


def test_clean_dry_run_lists_the_leftovers_and_removes_nothing(ws: Workspace, s3_bucket: str) -> None:
    _bucket_workspace(ws, s3_bucket)
    _sealed_backup(ws)
    whole, torn = _abandon_s3_backups(s3_bucket)
    keys, uploads = _keys(s3_bucket), _uploads(s3_bucket)
    result = ws.run("backup", "clean", "--older-than", "0s", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"would remove {whole}" in result.stdout and f"would remove {torn}" in result.stdout
    assert (_keys(s3_bucket), _uploads(s3_bucket)) == (keys, uploads)


def test_clean_leaves_recent_leftovers_alone_since_their_writer_may_still_be_uploading(ws: Workspace, s3_bucket: str) -> None:
    _bucket_workspace(ws, s3_bucket)
    _abandon_s3_backups(s3_bucket)
    keys, uploads = _keys(s3_bucket), _uploads(s3_bucket)
    result = ws.run("backup", "clean")  # the default: nothing written for 24 hours
    assert result.exit_code == 0, result.output
    assert "no leftovers of unsealed backups" in result.stdout
    assert (_keys(s3_bucket), _uploads(s3_bucket)) == (keys, uploads)


def test_a_leftover_written_to_after_it_was_listed_is_left_alone(s3_bucket: str) -> None:
    store = _s3_store(s3_bucket)
    writer = store.new_writer(store="main", kind="postgres", version=None, scope=("public.orders",), reason="test")
    writer.write_bytes("public.orders.copy.zst", b"first file")
    [listed] = store.leftovers(0.0)
    writer.write_bytes("public.orders.pre.sql.zst", b"the writer was alive after all")
    assert store.remove_leftover(listed) is False
    assert len(_keys(s3_bucket)) == 2


def test_a_backup_sealed_after_it_was_listed_is_left_alone(s3_bucket: str) -> None:
    store = _s3_store(s3_bucket)
    writer = store.new_writer(store="main", kind="postgres", version=None, scope=("public.orders",), reason="test")
    writer.write_bytes("public.orders.copy.zst", b"rows")
    [listed] = store.leftovers(0.0)
    manifest = store.seal(writer, {})
    assert store.remove_leftover(listed) is False
    assert store.verify(manifest.id, expected_digest=manifest.digest).id == listed.id


# -- the local directory ---------------------------------------------------------------------------
_KILLED_WRITER = textwrap.dedent("""\
    import os, sys
    from pathlib import Path
    from polyshift.framework.control.localstore import LocalArtifactStore
    writer = LocalArtifactStore(Path(sys.argv[1])).new_writer(store="main", kind="postgres", version=None,
                                                             scope=("public.orders",), reason="test")
    writer.write_bytes("public.orders.copy.zst", b"half a backup")
    print(writer.base["id"], flush=True)
    os._exit(9)  # killed: no seal, no clean-up, the kernel drops the flock
    """)


def test_clean_removes_a_local_partial_backup_whose_writer_died_but_not_a_live_one(ws: Workspace) -> None:
    from polyshift.framework.control.localstore import LocalArtifactStore

    sealed = _sealed_backup(ws)
    backups = ws.root / ".polyshift" / "backups"
    # The live writer first: starting a backup also removes what dead writers left.
    live = LocalArtifactStore(backups).new_writer(store="main", kind="postgres", version=None, scope=("t",), reason="test")
    died = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(backups)], capture_output=True, text=True)
    dead_id = died.stdout.strip()
    assert died.returncode == 9 and (backups / f".{dead_id}.partial").is_dir(), died.stderr
    result = ws.run("backup", "clean", "--older-than", "0s", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["removed"] == [dead_id]
    assert not (backups / f".{dead_id}.partial").exists()
    assert live.directory.is_dir()
    assert ws.run("backup", "verify", sealed).exit_code == 0


# -- bad input: exit 2, nothing removed ------------------------------------------------------------
@pytest.mark.parametrize("value", ["soon", "-1h", "400days", "1e9h"])
def test_an_unreadable_older_than_is_refused_by_name_and_nothing_is_removed(ws: Workspace, s3_bucket: str, value: str) -> None:
    _bucket_workspace(ws, s3_bucket)
    _abandon_s3_backups(s3_bucket)
    keys = _keys(s3_bucket)
    result = ws.run("backup", "clean", "--older-than", value)
    assert result.exit_code == 2, result.output
    assert "--older-than" in result.stderr
    assert _keys(s3_bucket) == keys


def test_clean_before_any_backup_finds_nothing(ws: Workspace) -> None:
    result = ws.run("backup", "clean", "--older-than", "0s", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["found"] == []
