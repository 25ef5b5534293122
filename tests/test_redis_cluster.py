"""Redis Cluster: scans, backups and restores cover every primary of a real 3-primary cluster."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from polyshift.framework.sandbox.servers import EmbeddedRedisCluster
from tests.conftest import RedisWorkspace


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedRedisCluster]:
    c = EmbeddedRedisCluster().start()
    yield c
    c.stop()


@pytest.fixture
def cws(tmp_path: Path, cluster: EmbeddedRedisCluster, state_url: str) -> Iterator[RedisWorkspace]:
    ws = RedisWorkspace(tmp_path, cluster, state_url=state_url)
    ws.r.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    yield ws
    ws.r.close()


def test_backup_covers_every_primary_and_restore_puts_every_key_back(cws: RedisWorkspace, cluster: EmbeddedRedisCluster) -> None:
    for i in range(3000):
        cws.r.set(f"session:{i}", f"v{i}", ex=3600 if i % 3 == 0 else None)
        cws.r.hset(f"cart:{i}", mapping={"items": str(i)})
    per_node = [redis.Redis(port=n.port).dbsize() for n in cluster.nodes]
    assert all(count > 1000 for count in per_node), per_node  # keys really are spread over the primaries
    before = cws.fingerprint("session:*", "cart:*")
    assert before.counts == {"session:*": 3000, "cart:*": 3000}
    backup = json.loads(cws.run("backup", "create", "cache", "--scope", "session:*,cart:*", "--json").stdout)
    manifest = json.loads(cws.run("backup", "show", backup["id"], "--json").stdout)
    assert manifest["meta"]["counts"] == {"session:*": 3000, "cart:*": 3000}

    cws.r.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    cws.r.set("session:late", "x")
    result = cws.run("backup", "restore", backup["id"], "--yes")
    assert result.exit_code == 0, result.output
    assert cws.fingerprint("session:*", "cart:*") == before
    assert cws.r.ttl("session:0") > 3500 and cws.r.ttl("session:1") == -1


def test_rename_prefix_works_across_hash_slots(cws: RedisWorkspace) -> None:
    for i in range(500):
        cws.r.set(f"session:{i}", f"v{i}", ex=600)
    before = cws.fingerprint("session:*")
    cws.python_migration("0001_rekey", '''
        BACKUP = ["session:*"]

        def forward(ctx):
            ctx.helpers.rename_prefix("session:", "s2:")

        def rollback(ctx):
            ctx.helpers.rename_prefix("s2:", "session:")
    ''')
    assert cws.run("up").exit_code == 0
    assert cws.fingerprint("s2:*").counts == {"s2:*": 500}
    assert cws.r.ttl("s2:42") > 500
    assert cws.run("rollback").exit_code == 0
    assert cws.fingerprint("session:*") == before


def test_a_cluster_with_uncovered_slots_is_an_invariant_problem(tmp_path: Path) -> None:
    own = EmbeddedRedisCluster().start()  # its own cluster: this test breaks it
    try:
        adapter = RedisWorkspace(tmp_path, own).adapter()
        assert adapter.invariants() == []
        adapter.nodes()[0].execute_command("CLUSTER", "DELSLOTSRANGE", 0, 10)
        deadline = time.monotonic() + 10
        while not adapter.invariants() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(p.startswith("cluster_state is fail on 127.0.0.1:") for p in adapter.invariants())
        adapter.close()
    finally:
        own.stop()
