"""Redis data migrations through `up`: helpers, ledger in Redis, failing migrations undone, the lock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

from tests.conftest import REPO, RedisWorkspace


def _sessions(rws: RedisWorkspace, n: int = 2500) -> None:
    pipe = rws.r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"session:{i}", json.dumps({"user": i, "v": 1}, separators=(",", ":")), ex=3600 if i % 2 else None)
        pipe.hset(f"profile:{i}", mapping={"name": f"user {i}", "lang": "en"})
    pipe.execute()


REKEY = '''
    BACKUP = ["session:*"]
    RISK = "B"

    def forward(ctx):
        ctx.helpers.rename_prefix("session:", "sess:v2:")

    def rollback(ctx):
        ctx.helpers.rename_prefix("sess:v2:", "session:")

    def validate(ctx):
        left = sum(1 for _ in ctx.client.scan_iter(match="session:*", count=1000))
        return [f"{left} keys still use the old prefix"] if left else []
'''


def test_rekey_migration_applies_records_in_redis_and_rolls_back(rws: RedisWorkspace) -> None:
    _sessions(rws)
    before = rws.fingerprint("session:*")
    rws.python_migration("0001_rekey_sessions", REKEY)
    up = rws.run("up", "--json")
    assert up.exit_code == 0, up.output
    assert json.loads(up.stdout)[0]["backup"]
    assert rws.r.exists("session:7") == 0 and rws.r.ttl("sess:v2:7") > 3500
    ledger = [json.loads(e) for e in rws.r.lrange("polyshift:ledger", 0, -1)]
    assert [(e["version"], e["direction"]) for e in ledger] == [("0001", "up")]
    assert json.loads(rws.run("status", "--json").stdout)[0]["current"] == "0001"
    assert rws.run("rollback").exit_code == 0
    assert rws.fingerprint("session:*") == before


def test_failing_data_migration_is_undone_by_its_rollback_step_exit_3(rws: RedisWorkspace) -> None:
    _sessions(rws)
    before = rws.fingerprint("session:*")
    rws.python_migration("0001_reshape", '''
        BACKUP = ["session:*"]

        def forward(ctx):
            ctx.helpers.reshape_json("session:*", lambda v: {**v, "v": 2, "user_id": v["user"]})
            raise RuntimeError("downstream check failed")

        def rollback(ctx):
            ctx.helpers.reshape_json("session:*", lambda v: {"user": v.get("user_id", v["user"]), "v": 1})
    ''')
    result = rws.run("up")
    assert result.exit_code == 3, result.output
    assert "downstream check failed" in result.stderr and "rolled back with its rollback step" in result.stderr
    assert rws.fingerprint("session:*") == before


def test_broken_rollback_is_followed_by_restore_and_content_is_identical_exit_3(rws: RedisWorkspace) -> None:
    _sessions(rws)
    before = rws.fingerprint("session:*", "profile:*")
    rws.python_migration("0001_bad", '''
        BACKUP = ["session:*", "profile:*"]

        def forward(ctx):
            ctx.helpers.rename_hash_field("profile:*", "lang", "locale")
            ctx.helpers.set_ttl("session:*", 5)
            ctx.client.delete("session:3")

        def rollback(ctx):
            raise RuntimeError("rollback forgot the TTLs")

        def validate(ctx):
            return ["sessions must not expire this soon"]
    ''')
    result = rws.run("up")
    assert result.exit_code == 3, result.output
    assert "restored backup" in result.stderr
    assert rws.fingerprint("session:*", "profile:*") == before
    assert rws.r.ttl("session:0") == -1 and rws.r.hget("profile:1", "lang") == b"en"
    ledger = [json.loads(e)["direction"] for e in rws.r.lrange("polyshift:ledger", 0, -1)]
    assert ledger == ["up", "down"]


def test_helpers_are_reversible(rws: RedisWorkspace) -> None:
    _sessions(rws, 500)
    before = rws.fingerprint("session:*", "profile:*")
    rws.python_migration("0001_all_helpers", '''
        BACKUP = ["session:*", "profile:*"]

        def forward(ctx):
            h = ctx.helpers
            h.rename_hash_field("profile:*", "name", "display_name")
            h.transform_hash_field("profile:*", "lang", lambda v: v.upper())
            h.copy_prefix("session:", "session_v2:")
            h.reshape_json("session_v2:*", lambda v: {"uid": v["user"], "schema": 2})

        def rollback(ctx):
            h = ctx.helpers
            h.drop_prefix("session_v2:")
            h.transform_hash_field("profile:*", "lang", lambda v: v.lower())
            h.rename_hash_field("profile:*", "display_name", "name")
    ''')
    assert rws.run("up").exit_code == 0
    assert json.loads(rws.r.get("session_v2:10")) == {"uid": 10, "schema": 2}
    assert rws.r.ttl("session_v2:11") > 3500  # copy keeps TTLs
    assert rws.r.hget("profile:1", "display_name") == b"user 1" and rws.r.hget("profile:1", "lang") == b"EN"
    assert rws.run("rollback").exit_code == 0
    assert rws.fingerprint("session:*", "profile:*") == before
    assert rws.r.exists("session_v2:10") == 0


def test_a_helper_interrupted_mid_way_resumes_from_its_saved_cursor(rws: RedisWorkspace) -> None:
    _sessions(rws, 5000)
    calls = {"n": 0}

    def flaky(value: bytes) -> bytes:
        calls["n"] += 1
        if calls["n"] == 2500:
            raise ConnectionError("worker lost")
        return b"EN"

    adapter = rws.adapter()
    try:
        from polyshift.framework.core.migration import Migration, Step

        mig = Migration("0001", "x", "cache", Step("forward", rws.root), None, None, "c")
        helpers = adapter._context(mig, "run").helpers
        try:
            helpers.transform_hash_field("profile:*", "lang", flaky)
        except ConnectionError:
            pass
        assert rws.r.exists("polyshift:progress:cache:0001_x:htransform:profile:*:lang") == 1
        done_first = calls["n"]
        changed = helpers.transform_hash_field("profile:*", "lang", flaky)
        assert rws.r.exists("polyshift:progress:cache:0001_x:htransform:profile:*:lang") == 0
        # The resumed walk did not start over: together the two runs touched each key about once.
        assert done_first - 1 + changed < 5000 + 2000
        assert all(v == b"EN" for v in (rws.r.hget(f"profile:{i}", "lang") for i in range(5000)))
    finally:
        adapter.close()


def test_lock_is_exclusive_and_names_its_holder(rws: RedisWorkspace) -> None:
    first = rws.adapter()
    try:
        first.acquire_lock("deploy-bot pid=7 run=abc", wait=0)
        result = rws.run("backup", "create", "cache", "--scope", "x:*")  # backups need no lock
        assert result.exit_code == 0
        rws.python_migration("0001_noop", "BACKUP = []\ndef forward(ctx): pass\ndef rollback(ctx): pass\n")
        result = rws.run("up")
        assert result.exit_code == 2
        assert "deploy-bot pid=7" in result.stderr
    finally:
        first.close()
    assert rws.run("up").exit_code == 0


def test_a_live_lock_is_renewed_and_never_released_by_another(rws: RedisWorkspace) -> None:
    rws.config.write_text(rws.config.read_text() + 'lock_ttl = "1s"\n')
    owner, other = rws.adapter(), rws.adapter()
    try:
        owner.acquire_lock("owner", wait=0)
        time.sleep(2.5)  # well past the TTL: renewal keeps it
        token = rws.r.get("polyshift:lock:cache")
        assert token is not None and b"owner" in token
        assert rws.r.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end",
                          1, "polyshift:lock:cache", b"somebody else's token") == 0
        other.release_lock()  # holds no token: must not touch the owner's lock
        assert rws.r.get("polyshift:lock:cache") == token
    finally:
        owner.close()
        other.close()
    assert rws.r.exists("polyshift:lock:cache") == 0


def test_a_crashed_runners_lock_expires_and_can_be_taken(rws: RedisWorkspace) -> None:
    rws.config.write_text(rws.config.read_text() + 'lock_ttl = "1s"\n')
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from polyshift.adapters.redis.adapter import RedisAdapter
        from polyshift.framework.core.config import load_config
        a = RedisAdapter(load_config({str(rws.config)!r}).store("cache"))
        a.acquire_lock("doomed-runner", wait=0)
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    taker = rws.adapter()
    try:
        taker.acquire_lock("next-runner", wait=5)  # the dead runner's lock expires within its TTL
        assert b"next-runner" in rws.r.get("polyshift:lock:cache")
    finally:
        taker.close()


def test_redis_store_options_are_checked(rws: RedisWorkspace) -> None:
    rws.config.write_text(rws.config.read_text() + 'prefxi = "x:"\n')
    result = rws.run("status")
    assert result.exit_code == 2
    assert "unknown key(s) prefxi for kind 'redis'" in result.stderr
