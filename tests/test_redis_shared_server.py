"""Redis and FalkorDB stores on real servers: two stores on one Redis keep their own ledger and
lock, a ledger written before entries carried the store is still read, passwords reach
password-protected servers however they are written, and every key pattern is either read as
Redis reads it or refused by name."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import CliProject, RedisWorkspace

SET_KEY = """\
    BACKUP = []
    RISK = "A"

    def forward(ctx):
        ctx.client.set("{key}", "1")

    def rollback(ctx):
        ctx.client.delete("{key}")
"""


def _two_stores(rws: RedisWorkspace) -> None:
    """A second store, 'sessions', on the same server, database and (default) prefix as 'cache'."""
    rws.config.write_text(rws.config.read_text() + f'[stores.sessions]\nkind = "redis"\nurl = "{rws.server.url}"\n')
    (rws.migrations / "sessions").mkdir()


def _migration(rws: RedisWorkspace, store: str, name: str, key: str) -> None:
    (rws.migrations / store / f"{name}.py").write_text(textwrap.dedent(SET_KEY.format(key=key)))


def _status(rws: RedisWorkspace) -> dict[str, dict[str, Any]]:
    result = rws.run("status", "--json")
    assert result.exit_code == 0, result.output
    return {s["store"]: s for s in json.loads(result.stdout)}


def test_two_stores_on_one_redis_keep_their_own_ledger(rws: RedisWorkspace) -> None:
    _two_stores(rws)
    _migration(rws, "cache", "0001_cache_a", "cache:a")
    _migration(rws, "sessions", "0002_sessions_b", "sess:b")
    result = rws.run("up")
    assert result.exit_code == 0, result.output
    status = _status(rws)
    assert (status["cache"]["current"], status["cache"]["missing"], status["cache"]["drift"]) == ("0001", [], [])
    assert (status["sessions"]["current"], status["sessions"]["missing"], status["sessions"]["drift"]) == ("0002", [], [])
    history = json.loads(rws.run("history", "--json", "--store", "sessions").stdout)
    assert [(h["version"], h["direction"]) for h in history] == [("0002", "up")]
    assert rws.run("rollback", "--store", "sessions").exit_code == 0
    assert rws.r.exists("sess:b") == 0 and rws.r.exists("cache:a") == 1
    status = _status(rws)
    assert status["cache"]["current"] == "0001" and status["sessions"]["pending"] == ["0002"]


def test_two_stores_on_one_redis_have_separate_locks(rws: RedisWorkspace) -> None:
    _two_stores(rws)
    from polyshift.adapters.redis.adapter import RedisAdapter
    from polyshift.framework.core.config import load_config

    config = load_config(rws.config)
    cache, sessions = RedisAdapter(config.store("cache")), RedisAdapter(config.store("sessions"))
    try:
        cache.acquire_lock("runner-a", wait=0)
        sessions.acquire_lock("runner-b", wait=0)  # another store's lock does not hold this one
        other = RedisAdapter(config.store("cache"))
        try:
            with pytest.raises(Exception, match="store cache is locked by another polyshift run"):
                other.acquire_lock("runner-c", wait=0)
        finally:
            other.close()
    finally:
        cache.close()
        sessions.close()


def test_a_ledger_written_without_store_names_is_still_read_and_claimed_by_the_next_write(rws: RedisWorkspace) -> None:
    _migration(rws, "cache", "0001_cache_a", "cache:a")
    assert rws.run("up").exit_code == 0
    # What the previous version wrote: the same entries, without the store.
    entries = [json.loads(raw) for raw in rws.r.lrange("polyshift:ledger", 0, -1)]
    rws.r.delete("polyshift:ledger")
    for entry in entries:
        entry.pop("store", None)
        rws.r.rpush("polyshift:ledger", json.dumps(entry))
    status = _status(rws)["cache"]
    assert (status["current"], status["pending"], status["missing"]) == ("0001", [], [])
    assert rws.run("up").exit_code == 0  # nothing applied twice
    assert rws.r.llen("polyshift:ledger") == 1

    _migration(rws, "cache", "0002_cache_b", "cache:b")
    assert rws.run("up").exit_code == 0
    stored = [json.loads(raw) for raw in rws.r.lrange("polyshift:ledger", 0, -1)]
    assert [(e["version"], e.get("store")) for e in stored] == [("0001", "cache"), ("0002", "cache")]
    # Claimed: a store added later on the same prefix starts with an empty ledger.
    _two_stores(rws)
    _migration(rws, "sessions", "0003_sessions_c", "sess:c")
    result = rws.run("up")
    assert result.exit_code == 0, result.output
    assert _status(rws)["sessions"]["current"] == "0003"


def test_a_lock_held_by_the_previous_version_is_respected(rws: RedisWorkspace) -> None:
    rws.r.set("polyshift:lock", json.dumps({"holder": "old-runner", "token": "t", "since": "then"}), px=60_000)
    _migration(rws, "cache", "0001_cache_a", "cache:a")
    result = rws.run("up")
    assert result.exit_code == 2, result.output
    assert "locked" in result.stderr and "old-runner" in result.stderr
    assert rws.r.exists("cache:a") == 0


# -- key patterns ----------------------------------------------------------------------------
def test_a_reversed_range_in_a_pattern_is_read_as_redis_reads_it(rws: RedisWorkspace) -> None:
    for key in ("a1b", "amb", "azb", "a-b"):
        rws.r.set(key, key)
    result = rws.run("backup", "create", "cache", "--scope", "a[z-a]b", "--json")
    assert result.exit_code == 0, result.output
    backup = json.loads(result.stdout)
    assert backup["scope"] == ["a[z-a]b"]
    manifest = json.loads(rws.run("backup", "show", backup["id"], "--json").stdout)
    assert manifest["meta"]["counts"] == {"a[z-a]b": 2}  # amb, azb: Redis swaps a reversed range


@pytest.mark.parametrize("pattern", ["a[b", "x["])
def test_a_pattern_redis_cannot_match_is_refused_by_name(rws: RedisWorkspace, pattern: str) -> None:
    result = rws.run("backup", "create", "cache", "--scope", pattern)
    assert result.exit_code == 2, result.output
    assert f"key pattern {pattern!r}" in result.stderr


@pytest.mark.parametrize(("pattern", "matches", "misses"), [
    ("user:[ab]*", [b"user:a1", b"user:b"], [b"user:c", b"user:"]),
    ("k[^0-9]", [b"kx"], [b"k5", b"kxy"]),
    ("k[]x", [], [b"kx", b"k]x"]),
    ("k[\\]]", [b"k]"], [b"k\\"]),
    ("k\\*", [b"k*"], [b"kx"]),
    ("[z-a]?", [b"mz"], [b"Az"]),
])
def test_glob_regex_matches_what_redis_matches(redis_server: Any, pattern: str, matches: list[bytes],
                                               misses: list[bytes]) -> None:
    from polyshift.adapters.redis.keys import glob_regex

    client = redis.Redis.from_url(redis_server.url)
    for key in matches + misses:
        client.set(key, 1)
    assert sorted(client.scan_iter(match=pattern)) == sorted(matches)  # the server's reading
    regex = glob_regex(pattern)
    assert [k for k in matches + misses if regex.match(k)] == matches


# -- passwords -------------------------------------------------------------------------------
PASSWORD = "p@ss:w/rd%-Sentinel-9c"
ENCODED = "p%40ss%3Aw%2Frd%25-Sentinel-9c"


@pytest.fixture
def locked_redis() -> Iterator[Any]:
    from polyshift.framework.sandbox.servers import EmbeddedRedis

    server = EmbeddedRedis(password=PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
def locked_falkordb() -> Iterator[Any]:
    from polyshift.framework.sandbox.servers import EmbeddedRedis, falkordb_args

    server = EmbeddedRedis(extra_args=falkordb_args(), password=PASSWORD).start()
    yield server
    server.stop()


class _Project(CliProject):
    def __init__(self, root: Path, store: str) -> None:
        self.root, self.config, self.env = root, root / "polyshift.toml", {}
        self.config.write_text('[project]\nstate_url = "sqlite:///.polyshift/state.db"\n' + textwrap.dedent(store))
        (root / "migrations" / "s").mkdir(parents=True)


def _falkordb_release(project: _Project, port: int) -> None:
    (project.root / "migrations" / "s" / "0001_topic.forward.cypher").write_text("CREATE (:Topic {name: 'a'});\n")
    (project.root / "migrations" / "s" / "0001_topic.rollback.cypher").write_text("MATCH (t:Topic) DELETE t;\n")
    result = project.run("up")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output and ENCODED not in result.output
    client: Any = redis.Redis(port=port, password=PASSWORD)
    graph = client.execute_command("GRAPH.QUERY", "app", "MATCH (t:Topic) RETURN count(t)")
    assert graph[1] == [[1]]


@pytest.mark.parametrize("how", ["password key", "percent-encoded url"])
def test_falkordb_with_a_password_applies_a_migration(tmp_path: Path, locked_falkordb: Any, how: str) -> None:
    url = f"redis://127.0.0.1:{locked_falkordb.port}"
    store = (f'[stores.s]\nkind = "falkordb"\nurl = "{url}"\ngraph = "app"\npassword = "{PASSWORD}"\n' if how == "password key"
             else f'[stores.s]\nkind = "falkordb"\nurl = "redis://:{ENCODED}@127.0.0.1:{locked_falkordb.port}"\ngraph = "app"\n')
    _falkordb_release(_Project(tmp_path, store), locked_falkordb.port)


def test_redis_with_a_password_key_and_no_user_in_the_url_applies_a_migration(tmp_path: Path, locked_redis: Any) -> None:
    project = _Project(tmp_path, f'[stores.s]\nkind = "redis"\nurl = "redis://127.0.0.1:{locked_redis.port}/0"\n'
                                 f'password = "{PASSWORD}"\n')
    (tmp_path / "migrations" / "s" / "0001_k.py").write_text(textwrap.dedent(SET_KEY.format(key="k")))
    result = project.run("up")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert redis.Redis(port=locked_redis.port, password=PASSWORD).get("k") == b"1"
