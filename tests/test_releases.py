"""Releases across four real stores: staged flag cutover guarded by health gates, and the undo."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest

FAIL_AT_10 = '{ kind = "shell", name = "error-rate", command = "test $POLYSHIFT_PERCENT -lt 10" }'


def _journal(app: Any) -> list[tuple[str, str, str | None]]:
    rows: list[tuple[str, str, str | None]] = app.state_sql("SELECT step, phase, store FROM polyshift_journal ORDER BY id")
    return rows


def _audit_actions(app: Any) -> list[str]:
    return [e["action"] for e in json.loads(app.run("audit", "--json").stdout)]


def test_release_forwards_every_store_and_moves_the_flag_through_its_stages(app: Any) -> None:
    blue = app.state()
    result = app.run("up")
    assert result.exit_code == 0, result.output
    green = app.state()
    assert all(green[s]["applied"] for s in green)
    assert all(green[s]["schema"] != blue[s]["schema"] or green[s]["data"] != blue[s]["data"] for s in green)
    flag = app.flag()
    assert (flag.enabled, flag.percent, flag.killed, flag.release) == (True, 100.0, False, "0001")



def test_failing_gate_at_10_percent_kills_the_flag_first_then_undoes_every_store(app: Any) -> None:
    app.write_release(gates=FAIL_AT_10, stages="[1, 10, 50, 100]")
    blue = app.state()
    result = app.run("up")
    assert result.exit_code == 3, result.output
    assert "health gate failed at 10%" in result.stderr and "error-rate" in result.stderr
    assert app.state() == blue
    flag = app.flag()
    assert flag.killed and flag.percent == 10
    steps = _journal(app)
    kill = steps.index(("kill", "done", None))
    rollbacks = [i for i, s in enumerate(steps) if s[0] == "rollback" and s[1] == "intent"]
    assert [steps[i][2] for i in rollbacks] == ["cache", "graph", "vectors", "main"]  # reverse store order
    assert kill < rollbacks[0]
    actions = _audit_actions(app)
    # The kill comes before any announcement (audit, hooks), and the stores after both.
    assert actions.index("release.flag_killed") < actions.index("release.gate_failed") < actions.index("migration.rolled_back")
    assert "release.rolled_back" in actions and app.run("audit", "--verify").exit_code == 0


def test_gate_that_cannot_be_evaluated_counts_as_failing(app: Any) -> None:
    app.write_release(gates='{ kind = "http", url = "http://127.0.0.1:9/health", timeout = 1 }')
    blue = app.state()
    result = app.run("up")
    assert result.exit_code == 3, result.output
    assert "could not be evaluated" in result.stderr
    assert app.state() == blue


def test_sql_shell_and_python_gates_pass_and_the_release_completes(app: Any) -> None:
    (app.root / "health.py").write_text("def ok(ctx):\n    return ctx.percent <= 100, f'at {ctx.percent}'\n")
    app.write_release(gates=", ".join([
        '{ kind = "sql", store = "main", query = "SELECT count(*) = 150 FROM documents WHERE status = \'published\'" }',
        '{ kind = "python", callable = "health:ok" }',
        '{ kind = "shell", command = "test -n \\"$POLYSHIFT_RELEASE\\"" }',
    ]))
    result = app.run("up")
    assert result.exit_code == 0, result.output
    assert app.flag().percent == 100


def test_validation_failure_in_one_store_compensates_the_stores_already_forwarded(app: Any) -> None:
    (app.migrations / "graph" / "0001_areas.validate.cypher").write_text("MATCH (a:Area) RETURN count(a) = 99;\n")
    blue = app.state()
    result = app.run("up")
    assert result.exit_code == 3, result.output
    assert "graph/0001_areas validation failed" in result.stderr
    assert app.state() == blue
    assert app.flag() is None  # the cutover never began
    assert ("rollback", "intent", "cache") in _journal(app)  # cache had forwarded too: every store is compensated


def test_two_runners_at_once_one_proceeds_the_other_exits_2_naming_the_holder(app: Any) -> None:
    app.write_release(gates='{ kind = "shell", command = "true" }', bake=1.5)
    procs = [app.spawn("up", env={"POLYSHIFT_ACTOR": f"runner-{i}"}) for i in range(2)]
    results = [(p.wait(timeout=120), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, (_, err) in results if code == 2)
    assert "locked by" in loser and "runner-" in loser and "pid=" in loser
    assert all(s["applied"] for s in app.state().values())


def test_up_refuses_while_an_unfinished_run_exists_and_points_to_recover(app: Any) -> None:
    proc = app.spawn("up", env={"POLYSHIFT_FAILPOINT": "journal:20"})  # somewhere in forward
    assert proc.wait(timeout=120) == -9
    blocked = app.run("up")
    assert blocked.exit_code == 2
    assert "did not finish" in blocked.stderr and "polyshift recover" in blocked.stderr
    recovered = app.run("recover")
    assert recovered.exit_code == 3, recovered.output
    assert app.run("up").exit_code == 0


def test_recover_with_nothing_unfinished_changes_nothing(app: Any) -> None:
    assert app.run("up").exit_code == 0
    result = app.run("recover")
    assert result.exit_code == 0 and "nothing to recover" in result.stdout


@pytest.mark.parametrize("stage", [10, 50])
def test_emergency_rollback_during_a_stage_kills_the_flag_and_the_runner_undoes(app: Any, stage: int) -> None:
    app.write_release(gates='{ kind = "shell", command = "true" }', stages="[10, 50, 100]", bake=2)
    blue = app.state()
    runner = app.spawn("up")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        flag = app.flag()
        if flag is not None and flag.percent == stage:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the flag never reached {stage}%")
    result = app.run("emergency-rollback", "0001")
    assert result.exit_code == 0, result.output
    assert runner.wait(timeout=60) == 3
    assert "killed by" in runner.communicate()[1]
    assert app.flag().killed
    assert app.state() == blue


def test_emergency_rollback_after_the_release_completed(app: Any) -> None:
    blue = app.state()
    assert app.run("up").exit_code == 0
    result = app.run("emergency-rollback", "0001")
    assert result.exit_code == 0, result.output
    assert "flag docs_v2 killed" in result.stdout
    assert app.flag().killed
    assert app.state() == blue
    assert app.run("emergency-rollback", "0001").stdout.strip().startswith("release 0001 is not applied")


def test_releases_lists_each_store_and_the_flag(app: Any) -> None:
    before = json.loads(app.run("releases", "--json").stdout)
    assert before[0]["stores"] == dict.fromkeys(["main", "vectors", "graph", "cache"], "pending")
    assert before[0]["last"] == "never run"
    assert app.run("up").exit_code == 0
    after = json.loads(app.run("releases", "--json").stdout)[0]
    assert set(after["stores"].values()) == {"applied"} and after["flag_state"] == "100%" and after["last"] == "completed"


def test_releases_points_to_recover_for_an_interrupted_release(app: Any) -> None:
    runner = app.spawn("up", env={"POLYSHIFT_FAILPOINT": "journal:20"})
    assert runner.wait(timeout=120) == -9
    row = json.loads(app.run("releases", "--json").stdout)[0]
    assert row["last"].startswith("interrupted, run 'polyshift recover': run ")
    assert app.run("recover").exit_code == 3
    assert json.loads(app.run("releases", "--json").stdout)[0]["last"] == "rolled back"


def test_events_reach_the_on_event_command_and_the_json_log(app: Any) -> None:
    config = app.config.read_text().replace("[project]\n", '[project]\non_event = "cat >> hook.jsonl"\n', 1)
    app.config.write_text(config)
    assert app.run("up").exit_code == 0
    hooked = [json.loads(line)["event"] for line in (app.root / "hook.jsonl").read_text().splitlines()]
    assert hooked == ["release.started", "release.stage_advanced", "release.stage_advanced", "release.completed"]
    logged = [json.loads(line) for line in (app.root / ".polyshift" / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in logged] == hooked and all(e["release"] == "0001" for e in logged)


@pytest.mark.parametrize(("releases_toml", "message"), [
    ('[release."0001"]\nflag = "docs_v2"\nstagse = [1]\n', "unknown key(s) stagse"),
    ('[release."0001"]\nflag = "docs_v2"\nstages = [50, 10, 100]\n', "stages must increase"),
    ('[release."0001"]\nflag = "docs_v2"\nstages = [10, 50]\n', "the last stage must be 100"),
    ('[release."0001"]\nflag = "docs_v2"\ngates = [{ kind = "smtp" }]\n', "kind must be one of sql, http, shell, python"),
    ('[release."0001"]\nflag = "docs_v2"\ngates = [{ kind = "sql", store = "cache", query = "SELECT 1" }]\n',
     "sql gates need a postgres or pgvector store"),
    ('[release."0001"]\nflag = "Docs V2"\n', "flag name"),
    ('[release."0001"]\ngates = [{ kind = "shell", command = "true" }]\n', "needs a flag"),
    ('[release."0009"]\nflag = "x"\n', "release(s) 0009 have no migration"),
    ('[release."0001"]\norder = ["main", "ghost"]\n', "unknown store(s) ghost"),
])
def test_bad_release_settings_exit_2_with_nothing_changed(app: Any, releases_toml: str, message: str) -> None:
    (app.migrations / "releases.toml").write_text(releases_toml)
    blue = app.state()
    result = app.run("up")
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert app.state() == blue


def test_an_invalid_index_left_by_a_release_fails_the_store_invariants_and_the_release_is_undone(app: Any) -> None:
    # The migration swallows the failure of its CONCURRENTLY build, so its own steps "succeed".
    app.python_migration("main", "0001_status", """\
        import psycopg
        TRANSACTION = False
        BACKUP = ['documents']

        def forward(ctx):
            try:
                ctx.client.execute('CREATE UNIQUE INDEX CONCURRENTLY documents_body_key ON documents (body)')
            except psycopg.Error:
                pass

        def rollback(ctx):
            ctx.client.execute('DROP INDEX CONCURRENTLY IF EXISTS documents_body_key')
        """)
    blue = app.state()
    result = app.run("up")
    assert result.exit_code == 3, result.output
    assert "store invariants failed: main: index documents_body_key is INVALID" in result.stderr
    assert app.state() == blue
    assert app.value_of("main", "SELECT count(*) FROM pg_indexes WHERE indexname = 'documents_body_key'") == 0


def test_a_kill_while_the_gates_run_is_never_undone_by_the_next_stage(app: Any) -> None:
    # The gate itself plays the operator: it kills the flag while the runner waits for gates.
    kill = f"{sys.executable} -m polyshift.framework.cli.main --config polyshift.toml flags kill docs_v2 --reason oncall"
    app.write_release(gates=f'{{ kind = "shell", command = "{kill}" }}')
    blue = app.state()
    result = app.run_process("up")
    assert result.exit_code == 3, result.output
    assert "flag docs_v2 was killed by" in result.stderr
    flag = app.flag()
    assert flag.killed and flag.percent == 50
    assert app.state() == blue


def test_up_with_store_refuses_to_run_half_a_release(app: Any) -> None:
    blue = app.state()
    result = app.run("up", "--store", "main")
    assert result.exit_code == 2
    assert "release 0001 also changes cache, graph, vectors; it runs whole" in result.stderr
    assert app.state() == blue


def test_emergency_rollback_keeps_what_the_application_wrote_since_the_release(app: Any) -> None:
    assert app.run("up").exit_code == 0
    with_status = app.value_of("main", "SELECT count(*) FROM documents")
    import psycopg

    with psycopg.connect(app.main_url, autocommit=True) as conn:
        conn.execute("INSERT INTO documents (id, title, body, status) VALUES (1001, 'written after', '', 'published')")
    result = app.run("emergency-rollback", "0001")
    assert result.exit_code == 0, result.output
    assert app.value_of("main", "SELECT count(*) FROM documents") == with_status + 1  # not overwritten by the old backup
    assert "public.documents: content differs" in result.stderr  # reported as an integrity warning
    assert any(b["reason"] == "before 0001_status emergency rollback" for b in app.backups())


def test_emergency_rollback_refuses_to_undo_a_release_under_a_newer_one(app: Any) -> None:
    (app.migrations / "main" / "0002_summary.forward.sql").write_text("ALTER TABLE documents ADD COLUMN summary text;\n")
    (app.migrations / "main" / "0002_summary.rollback.sql").write_text("ALTER TABLE documents DROP COLUMN summary;\n")
    assert app.run("up").exit_code == 0
    green = app.state()
    result = app.run("emergency-rollback", "0001")
    assert result.exit_code == 2
    assert "main has newer release(s) 0002 applied" in result.stderr and "emergency-rollback 0002" in result.stderr
    state = app.state()
    assert {s: state[s] for s in ("vectors", "graph", "cache")} == {s: green[s] for s in ("vectors", "graph", "cache")}


def test_recover_refuses_when_a_migration_changed_on_disk_since_the_run(app: Any) -> None:
    proc = app.spawn("up", env={"POLYSHIFT_FAILPOINT": "journal:20"})
    assert proc.wait(timeout=120) == -9
    rollback = app.migrations / "graph" / "0001_areas.rollback.cypher"
    original = rollback.read_text()
    rollback.write_text("MATCH (t:Topic) DETACH DELETE t;\n")
    refused = app.run("recover")
    assert refused.exit_code == 2
    assert "graph/0001_areas changed on disk since the run started" in refused.stderr
    rollback.write_text(original)
    assert app.run("recover").exit_code == 3


@pytest.mark.neo4j
def test_a_release_with_the_graph_on_neo4j_is_undone_then_completes(app: Any) -> None:
    app.write_release(gates='{ kind = "shell", command = "test $POLYSHIFT_PERCENT -lt 100" }')
    blue = app.state()
    failed = app.run("up")
    assert failed.exit_code == 3, failed.output
    assert app.state() == blue
    app.write_release(gates='{ kind = "shell", command = "true" }')
    assert app.run("up").exit_code == 0
    assert all(s["applied"] for s in app.state().values())


def test_dry_run_shows_each_release_and_its_cutover_and_changes_nothing(app: Any) -> None:
    blue = app.state()
    result = app.run("up", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "release 0001: main, vectors, graph, cache; then flag docs_v2 through 50% → 100%" in result.stdout
    assert "gates: shell gate 'shell-1' (true)" in result.stdout
    assert "would apply cache 0001_rekey_docs" in result.stdout
    assert app.state() == blue and app.flag() is None


def test_a_graph_constraint_that_fails_after_it_was_accepted_fails_the_invariants(app: Any) -> None:
    # FalkorDB accepts a uniqueness constraint and builds it in the background; topics share areas,
    # so it ends FAILED. The migration's own steps all "succeed".
    app.python_migration("graph", "0001_unique_area", """\
        BACKUP = ['Topic']
        UNIQUE = ('UNIQUE', 'NODE', 'Topic', 'PROPERTIES', 1, 'area')

        def forward(ctx):
            ctx.client.run('CREATE INDEX FOR (t:Topic) ON (t.area)')
            ctx.client.command('GRAPH.CONSTRAINT', 'CREATE', ctx.client.graph_name, *UNIQUE)

        def rollback(ctx):
            ctx.client.command('GRAPH.CONSTRAINT', 'DROP', ctx.client.graph_name, *UNIQUE)
            ctx.client.run('DROP INDEX FOR (t:Topic) ON (t.area)')
        """)
    blue = app.state()
    result = app.run("up")
    assert result.exit_code == 3, result.output
    assert "store invariants failed: graph: unique constraint on Topic(area) FAILED" in result.stderr
    assert app.state() == blue


def test_emergency_rollback_while_stores_are_still_moving_forward_stops_the_release_before_cutover(app: Any) -> None:
    app.slow_cache_forward(2)
    blue = app.state()
    runner = app.spawn_until_forwarding()
    assert app.flag() is None  # the cutover has not begun: the kill creates the flag killed
    result = app.run("emergency-rollback", "0001")
    assert result.exit_code == 0, result.output
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 3 and "flag docs_v2 was killed by" in err and "during the release" in err
    flag = app.flag()
    assert flag.killed and flag.percent == 0
    assert app.state() == blue


@pytest.mark.parametrize(("args", "message"), [
    (("up", "--release", "9999"), "--release 9999: no migration has that version"),
    (("up", "--to", "0001", "--release", "0001"), "use either --to or --release"),
    (("emergency-rollback", "9999"), "emergency-rollback 9999: no migration has that version"),
])
def test_bad_release_arguments_exit_2_with_nothing_changed(app: Any, args: tuple[str, ...], message: str) -> None:
    blue = app.state()
    result = app.run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert app.state() == blue and app.flag() is None
