"""Zero-downtime PostgreSQL: a step never queues the application behind a long lock wait, and
`up` refuses a long lock on a large table unless the migration says it is meant.

Every test runs on the real server. Waits are bounded polls of pg_locks / pg_stat_activity;
nothing here asserts on elapsed time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from polyshift.adapters.postgres.locking import DEFAULT_SCHEDULE
from tests.conftest import Workspace

MAX_ATTEMPT_MS = max(round(timeout * 1000) for timeout, _ in DEFAULT_SCHEDULE)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def configure(ws: Workspace, **settings: str) -> None:
    """Replace (or add) keys of [stores.main]; values are TOML."""
    lines = [line for line in ws.config.read_text().splitlines() if line.split(" = ")[0] not in settings]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    ws.config.write_text("\n".join(lines) + "\n")


@contextmanager
def slow_reader(ws: Workspace, *, app: str = "nightly report", isolation: str = "READ COMMITTED") -> Iterator[psycopg.Connection]:
    """An ordinary read transaction left open on t: it holds ACCESS SHARE until it ends."""
    conn = psycopg.connect(ws.url, application_name=app)
    try:
        conn.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        conn.execute("SELECT count(*) FROM t")
        yield conn
    finally:
        conn.close()


def polyshift_waiting(ws: Workspace, locktype: str = "relation") -> bool:
    """polyshift's step session is queued for a lock (on t, or on a transaction for CONCURRENTLY)."""
    target = "l.relation = to_regclass('t')" if locktype == "relation" else "l.locktype = 'virtualxid'"
    return bool(ws.value(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        f"WHERE NOT l.granted AND {target} AND a.application_name LIKE 'polyshift main pid=%%'"))


def attempts(ws: Workspace) -> list[dict[str, Any]]:
    from polyshift.framework.control.state import ControlPlane
    from polyshift.framework.core.config import load_config

    state = ControlPlane(load_config(ws.config).state_url)
    try:
        return [e["detail"] | {"phase": e["phase"]} for e in state.journal_entries() if e["step"] == "lock-attempt"]
    finally:
        state.close()


def table_t(ws: Workspace, rows: int = 100, *, analyze: bool = True) -> None:
    ws.sql(f"CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, {rows}) g")
    if analyze:
        ws.sql("ANALYZE t")


def has_column(ws: Workspace, table: str, column: str) -> bool:
    return bool(ws.value("SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "
                         "AND NOT attisdropped", (table, column)))


# -- taking locks in short attempts ----------------------------------------------------------
def test_a_step_behind_a_slow_reader_lets_queued_queries_through_and_applies_once_the_reader_leaves(ws: Workspace) -> None:
    table_t(ws)
    ws.sql("CREATE TABLE step_log (n serial)")
    # lock_timeout no longer bounds a transactional step's wait: each attempt is short.
    configure(ws, lock_timeout='"1h"', retry_deadline='"120s"')
    ws.migration("0001_col", "INSERT INTO step_log DEFAULT VALUES;\nALTER TABLE t ADD COLUMN c int;\n",
                 "ALTER TABLE t DROP COLUMN c;\nDELETE FROM step_log;\n")
    with slow_reader(ws) as reader:
        proc = ws.spawn("up")
        wait_until(lambda: polyshift_waiting(ws), "the ALTER to queue for its lock on t")
        # An application query arriving now queues behind the ALTER's lock request; it gets
        # through while the reader still holds t, because the attempt gives up its place.
        with psycopg.connect(ws.url, autocommit=True) as app:
            app.execute("SET statement_timeout = '60s'")
            assert app.execute("SELECT count(*) FROM t").fetchone() == (100,)
        wait_until(lambda: any(a["outcome"] == "lock-timeout" for a in attempts(ws)), "a failed attempt in the journal")
        assert reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # still blocking
        reader.rollback()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert has_column(ws, "t", "c")
    assert ws.value("SELECT count(*) FROM step_log") == 1  # the whole transaction was retried, not a part of it
    tried = attempts(ws)
    assert [a["outcome"] for a in tried][-1] == "acquired"
    failed = [a for a in tried if a["phase"] == "failed"]
    assert failed and all(a["lock_timeout_ms"] <= MAX_ATTEMPT_MS for a in failed)
    assert any("nightly report" in b for a in failed for b in a["blockers"])


def test_a_blocker_that_never_leaves_makes_up_give_up_at_the_deadline_with_exit_3_naming_it(ws: Workspace) -> None:
    table_t(ws)
    configure(ws, lock_timeout='"1h"', retry_deadline='"1s"')
    ws.migration("0001_col", "ALTER TABLE t ADD COLUMN c int;", "ALTER TABLE t DROP COLUMN c;")
    before = ws.fingerprint("t")
    with slow_reader(ws, app="nightly report") as reader:
        pid = reader.info.backend_pid
        result = ws.run("up")
        assert reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert result.exit_code == 3, result.output
    assert f"pid {pid} ('nightly report'" in result.stderr
    assert "state idle in transaction" in result.stderr and "query started" in result.stderr
    assert "retry_deadline 1s" in result.stderr and "55P03" in result.stderr
    assert not has_column(ws, "t", "c")
    assert ws.fingerprint("t") == before
    assert ws.ledger() == []
    tried = attempts(ws)
    assert len(tried) >= 2 and all(a["outcome"] == "lock-timeout" for a in tried)


def test_up_json_error_for_a_step_that_gave_up_names_the_blocker(ws: Workspace) -> None:
    table_t(ws)
    configure(ws, retry_deadline='"500ms"')
    ws.migration("0001_col", "ALTER TABLE t ADD COLUMN c int;", "ALTER TABLE t DROP COLUMN c;")
    with slow_reader(ws, app="etl-job"):
        result = ws.run("up", "--json")
    assert result.exit_code == 3
    error = json.loads(result.stdout)
    assert error["exit_code"] == 3 and "etl-job" in error["error"]


def test_a_python_step_is_retried_whole_in_short_attempts_too(ws: Workspace) -> None:
    table_t(ws)
    ws.sql("CREATE TABLE step_log (n serial)")
    configure(ws, lock_timeout='"1h"', retry_deadline='"120s"')
    ws.python_migration("0001_col", """\
        BACKUP = []
        RISK = "A"

        def forward(ctx):
            ctx.client.execute("INSERT INTO step_log DEFAULT VALUES")
            ctx.client.execute("ALTER TABLE t ADD COLUMN c int")

        def rollback(ctx):
            ctx.client.execute("ALTER TABLE t DROP COLUMN c")
        """)
    with slow_reader(ws) as reader:
        proc = ws.spawn("up")
        wait_until(lambda: any(a["outcome"] == "lock-timeout" for a in attempts(ws)), "a failed attempt in the journal")
        reader.rollback()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert has_column(ws, "t", "c")
    assert ws.value("SELECT count(*) FROM step_log") == 1
    assert attempts(ws)[-1]["outcome"] == "acquired"


def test_create_index_concurrently_keeps_its_own_wait_outside_the_attempts(ws: Workspace) -> None:
    table_t(ws)
    # A retry_deadline that the attempts would exhaust long before the old transaction ends.
    configure(ws, lock_timeout='"1h"', retry_deadline='"200ms"')
    ws.migration("0001_idx", "CREATE INDEX CONCURRENTLY t_v ON t (v);", "DROP INDEX CONCURRENTLY t_v;")
    with slow_reader(ws, isolation="REPEATABLE READ") as reader:
        proc = ws.spawn("up")
        wait_until(lambda: polyshift_waiting(ws, "virtualxid"), "CREATE INDEX CONCURRENTLY to wait for the old transaction")
        reader.rollback()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert ws.value("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('t_v')") is True
    assert [a for a in attempts(ws) if a["phase"] == "failed"] == []


def test_a_step_that_gets_its_locks_at_once_is_journaled_as_one_acquired_attempt(ws: Workspace) -> None:
    table_t(ws)
    ws.migration("0001_col", "ALTER TABLE t ADD COLUMN c int;", "ALTER TABLE t DROP COLUMN c;")
    assert ws.run("up").exit_code == 0
    [only] = attempts(ws)
    assert only["outcome"] == "acquired" and only["attempt"] == 1 and only["lock_timeout_ms"] == 100


def test_a_configured_schedule_sets_each_attempts_lock_timeout(ws: Workspace) -> None:
    table_t(ws)
    configure(ws, lock_retry='["30ms/10ms", "60ms/20ms"]', retry_deadline='"600ms"')
    ws.migration("0001_col", "ALTER TABLE t ADD COLUMN c int;", "ALTER TABLE t DROP COLUMN c;")
    with slow_reader(ws):
        assert ws.run("up").exit_code == 3
    timeouts = [a["lock_timeout_ms"] for a in attempts(ws)]
    assert timeouts[:2] == [30, 60] and set(timeouts[2:]) == {60}  # the last entry repeats


def test_lock_retry_false_waits_up_to_lock_timeout_in_every_attempt(ws: Workspace) -> None:
    table_t(ws)
    configure(ws, lock_retry="false", lock_timeout='"250ms"', retry_deadline='"300ms"')
    ws.migration("0001_col", "ALTER TABLE t ADD COLUMN c int;", "ALTER TABLE t DROP COLUMN c;")
    with slow_reader(ws):
        assert ws.run("up").exit_code == 3
    assert {a["lock_timeout_ms"] for a in attempts(ws)} == {250}


@pytest.mark.parametrize(("value", "problem"), [
    ('"100ms/50ms"', "expected a list"),
    ("[]", "expected a list"),
    ("true", "expected a list"),
    ('["100ms"]', 'entry 1: expected "lock timeout/sleep"'),
    ('["100ms/50ms", 3]', 'entry 2: expected "lock timeout/sleep"'),
    ('["soon/50ms"]', "entry 1 lock timeout: expected a duration"),
    ('["0/50ms"]', "entry 1 lock timeout: must be between 1 ms and 1 h"),
    ('["100ms/2h"]', "entry 1 sleep: must be between 0 ms and 1 h"),
    ('["100ms/nan"]', "entry 1 sleep"),
    ("[" + ", ".join(['"100ms/50ms"'] * 101) + "]", "at most 100 entries"),
])
def test_a_bad_lock_retry_is_refused_naming_the_problem_and_nothing_changes(ws: Workspace, value: str, problem: str) -> None:
    ws.migration("0001_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    configure(ws, lock_retry=value)
    result = ws.run("up")
    assert result.exit_code == 2, result.output
    assert "[stores.main] lock_retry" in result.stderr and problem in result.stderr, result.stderr
    assert ws.value("SELECT to_regclass('t')") is None


# -- lock hazards: refused on large tables unless acknowledged ---------------------------------
INDEX = ("CREATE INDEX t_v ON t (v);\n", "DROP INDEX t_v;\n")


def index_exists(ws: Workspace) -> bool:
    return ws.value("SELECT to_regclass('t_v')") is not None


@pytest.mark.parametrize("args", [("up",), ("up", "--dry-run")])
def test_up_refuses_a_lock_hazard_on_a_large_table_naming_code_table_and_safe_form(ws: Workspace, args: tuple[str, ...]) -> None:
    table_t(ws, 20_000)
    ws.migration("0001_idx", *INDEX)
    result = ws.run(*args)
    assert result.exit_code == 2, result.output
    for expected in ("PS130", "on t", "~20,000 rows", "CREATE INDEX CONCURRENTLY", "10,000 estimated rows or 64 MiB",
                     "-- polyshift: allow=PS130", "--allow-lock-hazard"):
        assert expected in result.stderr, (expected, result.stderr)
    assert not index_exists(ws)
    assert ws.value("SELECT to_regclass('_polyshift.schema_history')") is None  # not even the ledger
    assert ws.backups() == []


def test_the_refusal_lists_every_unacknowledged_code_in_the_hint(ws: Workspace) -> None:
    table_t(ws, 20_000)
    ws.migration("0001_two", "-- polyshift: allow=PS110\nCREATE INDEX t_v ON t (v);\nALTER TABLE t ALTER COLUMN v SET NOT NULL;\n"
                 "CREATE INDEX t_v2 ON t (v, id);\n", "DROP INDEX t_v, t_v2;\nALTER TABLE t ALTER COLUMN v DROP NOT NULL;\n")
    result = ws.run("up", "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert error["type"] == "RefusedError"
    assert "allow=PS130'" in error["hint"] and "PS110" not in error["error"]


def test_a_never_analyzed_large_table_is_counted_and_refused(ws: Workspace) -> None:
    table_t(ws, 20_000, analyze=False)
    ws.sql("ALTER TABLE t SET (autovacuum_enabled = false)")
    ws.migration("0001_idx", *INDEX)
    result = ws.run("up")
    assert result.exit_code == 2, result.output
    assert "at least 10,000 rows" in result.stderr
    assert not index_exists(ws)


def test_an_allow_directive_acknowledges_the_finding_and_up_runs_it(ws: Workspace) -> None:
    table_t(ws, 20_000)
    ws.migration("0001_idx", "-- polyshift: allow=PS130\n" + INDEX[0], INDEX[1])
    [row] = json.loads(ws.run("plan", "--json").stdout)
    [finding] = row["findings"]
    assert (finding["acknowledged"], finding["large"], finding["refuses"], row["refused"]) == (True, True, False, False)
    result = ws.run("up")
    assert result.exit_code == 0, result.output
    assert index_exists(ws)


def test_allow_lock_hazard_runs_it_anyway(ws: Workspace) -> None:
    table_t(ws, 20_000)
    ws.migration("0001_idx", *INDEX)
    result = ws.run("up", "--allow-lock-hazard")
    assert result.exit_code == 0, result.output
    assert index_exists(ws)


@pytest.mark.parametrize(("directive", "problem"), [
    ("allow=PS999", "allow=PS999: no such finding code"),
    ("allow=PS160", "PS160 is a data-loss finding, and allow= acknowledges lock findings only"),
    ("allow=", "allow= needs finding codes"),
    ("allow=PS130,,PS110", "allow= needs finding codes"),
    ("allow=CREATE", "CREATE is not a finding code"),
])
def test_a_bad_allow_directive_is_refused_naming_the_problem(ws: Workspace, directive: str, problem: str) -> None:
    table_t(ws)
    ws.migration("0001_idx", f"-- polyshift: {directive}\n" + INDEX[0], INDEX[1])
    for args in (("up",), ("plan",)):
        result = ws.run(*args)
        assert result.exit_code == 2, result.output
        assert problem in result.stderr, result.stderr
    assert not index_exists(ws)


def test_on_a_small_table_a_lock_hazard_is_information_only(ws: Workspace) -> None:
    table_t(ws, 5)
    ws.migration("0001_idx", *INDEX)
    plan = ws.run("plan")
    assert plan.exit_code == 0
    assert "PS130" in plan.stdout and "REFUSED" not in plan.stdout
    result = ws.run("up")
    assert result.exit_code == 0, result.output
    assert index_exists(ws)


def test_plan_json_lists_each_migrations_findings(ws: Workspace) -> None:
    table_t(ws, 20_000)
    ws.sql("CREATE TABLE small (id int); INSERT INTO small VALUES (1), (2)")
    ws.migration("0001_mixed", "CREATE INDEX t_v ON t (v);\nALTER TABLE small RENAME COLUMN id TO ident;\n",
                 "DROP INDEX t_v;\nALTER TABLE small RENAME COLUMN ident TO id;\n")
    result = ws.run("plan", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["refused"] is True and row["threshold"] == "10,000 estimated rows or 64 MiB"
    index, rename = row["findings"]
    assert index == {
        "code": "PS130", "kind": "lock", "statement": "CREATE INDEX t_v ON t (v)",
        "message": "CREATE INDEX without CONCURRENTLY blocks writes (SHARE) while it builds on t",
        "safe": "CREATE INDEX CONCURRENTLY (polyshift runs it outside a transaction)", "table": "t", "lock": "SHARE",
        "work": ["scan", "index build"], "size": index["size"], "large": True, "acknowledged": False, "refuses": True,
    }
    assert index["size"].startswith("~20,000 rows, ")
    assert (rename["code"], rename["kind"], rename["table"], rename["refuses"]) == ("PS150", "breaking", "small", False)
    assert rename["statement"] == "ALTER TABLE small RENAME COLUMN id TO ident"


def test_plan_text_marks_what_up_refuses(ws: Workspace) -> None:
    table_t(ws, 20_000)
    ws.migration("0001_idx", *INDEX)
    result = ws.run("plan")
    assert result.exit_code == 0
    assert "PS130 lock" in result.stdout and "REFUSED" in result.stdout
    assert "allow=CODE" in result.stderr


# -- the attempt schedule itself (a fake clock: what is checked is arithmetic, not the server) ---
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _never_connects() -> psycopg.Connection:
    raise AssertionError("an attempt that returns at once needs no blocker watch")


def _run(schedule: tuple[tuple[float, float], ...], deadline: float, fail_times: int) -> tuple[list[Any], FakeClock, Any]:
    from polyshift.adapters.postgres.locking import BlockerWatch, LocksNotAcquired, run_in_attempts

    clock = FakeClock()
    reports: list[Any] = []
    calls: list[Any] = []

    def attempt(lock_timeout: float) -> None:
        calls.append(lock_timeout)
        clock.now += lock_timeout  # the wait ran out
        if len(calls) <= fail_times:
            raise psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
        clock.now -= lock_timeout  # this one got its locks at once

    try:
        outcome: Any = run_in_attempts(attempt, schedule=schedule, deadline=deadline, backend_pid=lambda: 0,
                                       watch=BlockerWatch(_never_connects), report=reports.append, clock=clock, sleep=clock.sleep)
    except LocksNotAcquired as exc:
        outcome = exc
    return reports, clock, outcome


def test_the_schedule_grows_then_repeats_its_last_entry_until_an_attempt_commits() -> None:
    reports, clock, outcome = _run(((0.1, 0.05), (0.2, 0.5)), deadline=60, fail_times=4)
    assert outcome == 5
    assert [r.lock_timeout_ms for r in reports] == [100, 200, 200, 200, 200]
    assert clock.slept == [0.05, 0.5, 0.5, 0.5]
    assert [r.outcome.value for r in reports] == ["lock-timeout"] * 4 + ["acquired"]


def test_the_last_sleep_is_cut_short_at_the_deadline_and_one_more_attempt_is_made() -> None:
    reports, clock, outcome = _run(((1.0, 10.0),), deadline=5, fail_times=99)
    # 1 s waiting, then 4 s of the 10 s sleep (the deadline), one more attempt, then it gives up.
    assert clock.slept == [4.0]
    assert len(reports) == 2 and reports[-1].sleep_ms == 0
    assert type(outcome).__name__ == "LocksNotAcquired" and len(outcome.attempts) == 2
    assert "2 attempts with a 1000 ms lock timeout within retry_deadline 5s (SQLSTATE 55P03)" in outcome.describe()


def test_a_zero_deadline_makes_exactly_one_attempt() -> None:
    reports, _, outcome = _run(((0.1, 0.05),), deadline=0, fail_times=99)
    assert len(reports) == 1 and type(outcome).__name__ == "LocksNotAcquired"
    assert "no blocking session was seen" in outcome.describe()
