"""Changing flags: audited, compare-and-set, bad input refused with nothing changed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

from polyshift.feature_flags.admin import Change
from tests.conftest import REPO, FlagProject


def test_every_change_is_audited_with_actor_reason_and_diff(flags: FlagProject, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("POLYSHIFT_ACTOR", "carol")
    assert flags.run("flags", "set", "checkout_v2", "--create", "--on", "--percent", "5", "--reason", "canary").exit_code == 0
    assert flags.run("flags", "set", "checkout_v2", "--percent", "25", "--reason", "widen").exit_code == 0
    assert flags.run("flags", "set", "checkout_v2", "--allow", "qa-1", "--reason", "qa").exit_code == 0
    assert flags.run("flags", "kill", "checkout_v2", "--reason", "errors").exit_code == 0
    history = json.loads(flags.run("flags", "history", "checkout_v2", "--json").stdout)
    assert [h["action"] for h in history] == ["flag.created", "flag.changed", "flag.changed", "flag.changed"]
    assert [h["detail"]["reason"] for h in history] == ["canary", "widen", "qa", "errors"]
    assert {h["actor"] for h in history} == {"carol"}
    assert history[1]["detail"]["changes"] == {"percent": {"from": 5.0, "to": 25.0}}
    assert history[3]["detail"]["changes"] == {"killed": {"from": False, "to": True}}
    assert flags.run("audit", "--verify").exit_code == 0
    shown = json.loads(flags.run("flags", "show", "checkout_v2", "--json").stdout)
    assert shown["version"] == 4 and shown["updated_by"] == "carol" and shown["killed"] is True


def test_bad_input_exits_2_and_changes_nothing(flags: FlagProject) -> None:
    assert flags.run("flags", "set", "f", "--create", "--on", "--percent", "10", "--reason", "r").exit_code == 0
    before = flags.run("flags", "show", "f", "--json").stdout
    cases = [
        (["flags", "set", "f", "--percent", "101", "--reason", "r"], "between 0 and 100"),
        (["flags", "set", "f", "--percent", "-1", "--reason", "r"], "between 0 and 100"),
        (["flags", "set", "Checkout!", "--on", "--create", "--reason", "r"], "[a-z0-9_.-]"),
        (["flags", "set", "missing_flag", "--on", "--reason", "r"], "pass --create"),
        (["flags", "set", "f", "--on", "--off", "--reason", "r"], "contradict"),
        (["flags", "set", "f", "--on", "--reason", "  "], "--reason"),
        (["flags", "set", "f", "--reason", "r"], "nothing to change"),
        (["flags", "kill", "missing_flag", "--reason", "r"], "does not exist"),
        (["flags", "show", "missing_flag"], "does not exist"),
    ]
    for args, message in cases:
        result = flags.run(*args)
        assert result.exit_code == 2, args
        assert message in result.stderr, (args, result.stderr)
    assert flags.run("flags", "set", "f", "--on").exit_code == 2  # --reason is required
    assert flags.run("flags", "show", "f", "--json").stdout == before
    assert json.loads(flags.run("flags", "list", "--json").stdout)[0]["name"] == "f"
    assert len(json.loads(flags.run("flags", "list", "--json").stdout)) == 1


def test_concurrent_changes_are_never_lost(flags: FlagProject) -> None:
    flags.admin().change("shared", Change(enabled=True), reason="create", create=True)
    admins = [flags.admin() for _ in range(4)]

    def add(i: int) -> None:
        for j in range(5):
            admins[i].change("shared", Change(allow_add=(f"u{i}-{j}",)), reason="add")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flag = flags.admin().get("shared")
    assert len(flag.allow) == 20
    assert flag.version == 21


def test_runner_hooks_stage_and_kill_record_the_owning_release(flags: FlagProject) -> None:
    admin = flags.admin()
    admin.stage("docs_v2", 10, release="0003")
    flag = admin.stage("docs_v2", 50, release="0003")
    assert (flag.enabled, flag.percent, flag.release, flag.killed) == (True, 50.0, "0003", False)
    killed = admin.kill("docs_v2", release="0003")
    assert killed.killed and killed.release == "0003"
    reasons = [h["detail"]["reason"] for h in admin.history("docs_v2")]
    assert reasons == ["release 0003: stage 10%", "release 0003: stage 50%", "release 0003: kill"]


def test_a_change_reaches_another_process_within_the_refresh_interval(flags: FlagProject) -> None:
    flags.admin().change("live", Change(enabled=False), reason="create", create=True)
    watcher = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from polyshift.feature_flags import FlagClient
        client = FlagClient.from_config({str(flags.config)!r})
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while not client.is_enabled("live") and time.monotonic() < deadline:
            time.sleep(0.005)
        print(time.time(), client.is_enabled("live"), flush=True)
    """)], stdout=subprocess.PIPE, text=True, cwd=flags.root)
    assert watcher.stdout is not None
    assert watcher.stdout.readline().strip() == "ready"
    changed_at = time.time()
    result = flags.run("flags", "set", "live", "--on", "--percent", "100", "--reason", "go")  # changed from this process
    assert result.exit_code == 0
    seen_at, value = watcher.stdout.readline().split()
    watcher.wait(timeout=30)
    assert value == "True"
    assert float(seen_at) - changed_at <= 0.2 + 0.5  # refresh_interval 0.2 s, plus scheduling slack
