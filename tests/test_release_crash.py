"""Crash safety: the runner is killed (SIGKILL) right after each of its journal writes, and
`polyshift recover` must leave every store all-forward or all-back, checked by fingerprints of
everything the release touches (rows, vectors, nodes, relationships, keys)."""

from __future__ import annotations

from typing import Any

FAIL_AT_100 = '{ kind = "shell", name = "late-gate", command = "test $POLYSHIFT_PERCENT -lt 100" }'


def _journal_writes(app: Any) -> list[tuple[str, str, str | None]]:
    rows: list[tuple[str, str, str | None]] = app.state_sql("SELECT step, phase, store FROM polyshift_journal ORDER BY id")
    return rows


def _crash_then_recover(app: Any, n: int, blue: dict[str, Any], green: dict[str, Any] | None) -> str:
    app.reset()
    runner = app.spawn("up", env={"POLYSHIFT_FAILPOINT": f"journal:{n}"})
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == -9, f"journal write {n}: the runner was not killed: {out}{err}"
    result = app.run("recover")
    assert result.exit_code in (0, 3), f"journal write {n}: {result.output}"
    state = app.state()
    flag = app.flag()
    if green is not None and state == green:
        assert flag is not None and flag.percent == 100 and not flag.killed, f"journal write {n}: forward but flag {flag}"
        return "forward"
    assert state == blue, f"journal write {n}: neither all-forward nor all-back:\n{state}"
    assert flag is None or flag.killed, f"journal write {n}: back but flag {flag}"
    assert app.run("recover").stdout.strip() == "nothing to recover: every run finished"
    return "back"


def test_kill_9_at_every_journal_step_of_a_release_then_recover_is_all_forward_or_all_back(app: Any) -> None:
    blue = app.state()
    assert app.run("up").exit_code == 0
    green = app.state()
    steps = _journal_writes(app)
    assert len(steps) > 30
    ends = {n: _crash_then_recover(app, n, blue, green) for n in range(1, len(steps) + 1)}
    # Once every store validated and the cutover began, recover finishes; before that, it undoes.
    cutover = steps.index(("cutover", "intent", None)) + 1
    assert all(ends[n] == "back" for n in ends if n < cutover), ends
    assert all(ends[n] == "forward" for n in ends if n >= cutover), ends


def test_kill_9_at_every_journal_step_of_an_undo_then_recover_completes_the_undo(app: Any) -> None:
    app.write_release(gates=FAIL_AT_100)
    blue = app.state()
    assert app.run("up").exit_code == 3
    steps = _journal_writes(app)
    # From the failed stage on: the runner's decision to undo must survive its death.
    first_undo = steps.index(("stage", "failed", None)) + 1
    assert steps[first_undo] == ("undo", "intent", None)
    assert len(steps) - first_undo >= 12  # kill, and rollback + verify per store
    for n in range(first_undo, len(steps) + 1):
        assert _crash_then_recover(app, n, blue, None) == "back"


def test_a_store_server_stopped_mid_forward_names_it_and_the_others_are_compensated(app: Any) -> None:
    app.slow_cache_forward(3)
    blue = app.state()
    runner = app.spawn_until_forwarding()
    app.redis_server.stop(remove=False)
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == 4, err
    assert "cache" in err and "NOT VERIFIED" in err and "polyshift recover" in err
    app.redis_server.start()
    state = app.state()
    for store in ("main", "vectors", "graph"):
        assert state[store] == blue[store], store
    # The run is left for recover, and up refuses until it ran.
    blocked = app.run("up")
    assert blocked.exit_code == 2 and "recover" in blocked.stderr
    # Redis came back empty (no persistence): recover puts the cache back from the release's backup.
    recovered = app.run("recover")
    assert recovered.exit_code == 3, recovered.output
    assert "restored backup" in recovered.stderr
    assert app.state() == blue


def _killed_after_the_first_stage(app: Any) -> None:
    """A complete run to learn the journal, then a fresh run killed right after its first stage."""
    assert app.run("up").exit_code == 0
    first_stage = _journal_writes(app).index(("stage", "done", None)) + 1
    app.reset()
    runner = app.spawn("up", env={"POLYSHIFT_FAILPOINT": f"journal:{first_stage}"})
    assert runner.wait(timeout=120) == -9
    assert app.flag().percent == 50


def test_recover_undoes_instead_of_finishing_when_the_flag_was_killed_after_the_runner_died(app: Any) -> None:
    blue = app.state()
    _killed_after_the_first_stage(app)
    assert app.run("flags", "kill", "docs_v2", "--reason", "on-call saw errors").exit_code == 0
    result = app.run("recover")
    assert result.exit_code == 3, result.output
    assert "flag docs_v2 was killed or changed by" in result.stderr
    assert app.flag().killed
    assert app.state() == blue


def test_recover_undoes_a_release_whose_gates_can_no_longer_be_read(app: Any) -> None:
    # Killed mid-cutover, so recover would finish it; but releases.toml was broken since, and a
    # gate that cannot be read counts as failing.
    blue = app.state()
    _killed_after_the_first_stage(app)
    (app.migrations / "releases.toml").write_text('[release."0001"]\nflag = "docs_v2"\nstages = [100, 50]\n')
    result = app.run("recover")
    assert result.exit_code == 3, result.output
    assert "its gates cannot be read" in result.stderr and "stages must increase" in result.stderr
    assert app.flag().killed
    assert app.state() == blue
