"""The audit log is a hash chain: any edit, deletion or reordering is found and named."""

from __future__ import annotations

from tests.conftest import Workspace


def _with_entries(ws: Workspace) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);", "DROP TABLE t;")
    ws.migration("0002_d", "DELETE FROM t;", "INSERT INTO t VALUES (1);")
    assert ws.run("up").exit_code == 0
    assert ws.run("rollback").exit_code == 0


def test_intact_chain_verifies(ws: Workspace) -> None:
    _with_entries(ws)
    result = ws.run("audit", "--verify")
    assert result.exit_code == 0
    assert "verified" in result.stdout


def test_edited_entry_is_named(ws: Workspace) -> None:
    _with_entries(ws)
    assert ws.state_sql("SELECT count(*) FROM polyshift_audit")[0][0] >= 4
    ws.state_sql("UPDATE polyshift_audit SET actor = 'mallory' WHERE seq = 3")
    result = ws.run("audit", "--verify")
    assert result.exit_code == 2
    assert "audit entry 3 was altered" in result.stderr


def test_deleted_entry_is_named(ws: Workspace) -> None:
    _with_entries(ws)
    ws.state_sql("DELETE FROM polyshift_audit WHERE seq = 2")
    result = ws.run("audit", "--verify")
    assert result.exit_code == 2
    assert "audit entry 2 is missing" in result.stderr


def test_rewritten_tail_with_recomputed_hash_still_breaks_the_link(ws: Workspace) -> None:
    from polyshift.framework.control.state import _entry_hash

    _with_entries(ws)
    columns = ["seq", "at", "actor", "action", "subject", "detail", "prev_hash", "runner"]
    row = ws.state_sql(f"SELECT {', '.join(columns)} FROM polyshift_audit WHERE seq = 2")[0]
    entry = dict(zip(columns, row, strict=True))
    entry["detail"] = '{"forged": true}'
    ws.state_sql("UPDATE polyshift_audit SET detail = :detail, hash = :hash WHERE seq = 2", detail=entry["detail"],
                 hash=_entry_hash(entry))
    result = ws.run("audit", "--verify")
    assert result.exit_code == 2
    assert "audit entry 3 does not chain to entry 2" in result.stderr


def test_every_change_is_audited_with_actor(ws: Workspace, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("POLYSHIFT_ACTOR", "release-bot")
    _with_entries(ws)
    import json

    entries = json.loads(ws.run("audit", "--json").stdout)
    actions = [e["action"] for e in entries]
    assert actions.count("migration.applied") == 2
    assert "migration.rolled_back" in actions
    assert "backup.created" in actions
    assert {e["actor"] for e in entries} == {"release-bot"}
