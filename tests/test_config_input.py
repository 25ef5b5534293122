"""polyshift.toml and releases.toml: every wrong value is refused at load (exit 2) naming the key,
with nothing changed in the store; passwords reach the drivers however they are written and are
never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import REPO, Workspace

TABLE_T = ("CREATE TABLE t (id int);", "DROP TABLE t;")


def _refused(ws: Workspace, *names: str, command: tuple[str, ...] = ("up",)) -> str:
    """Runs ``command``: exit 2, every name in the message, and the store untouched."""
    result = ws.run(*command)
    assert result.exit_code == 2, result.output
    for name in names:
        assert name in result.stderr, (name, result.stderr)
    assert ws.value("SELECT to_regclass('t')") is None
    assert ws.value("SELECT to_regclass('_polyshift.schema_history')") is None
    return result.stderr


# -- [project] and top-level tables -----------------------------------------------------------
@pytest.mark.parametrize(("line", "key"), [
    ("migrations = 123", "migrations"),
    ("backups = true", "backups"),
    ("state_url = 5", "state_url"),
    ("events_log = []", "events_log"),
    ("name = 1.5", "name"),
])
def test_a_project_key_of_the_wrong_type_is_named(ws: Workspace, line: str, key: str) -> None:
    ws.migration("0001_t", *TABLE_T)
    kept = [x for x in ws.config.read_text().splitlines() if not x.startswith(f"{key} =")]
    ws.config.write_text("\n".join(kept).replace("[project]", f"[project]\n{line}", 1) + "\n")
    stderr = _refused(ws, f"[project] {key}")
    assert "unexpected" not in stderr


def test_an_unknown_top_level_table_is_named_with_the_known_ones(ws: Workspace) -> None:
    ws.migration("0001_t", *TABLE_T)
    ws.config.write_text(ws.config.read_text() + '\n[flag]\nstore = "state"\n')
    _refused(ws, "[flag]", "flags", "project", "stores")


@pytest.mark.parametrize(("table", "key"), [('[flags]\nprefix = 5\n', "[flags] prefix"),
                                            ('[flags]\nurl = ["sqlite:///x.db"]\n', "[flags] url")])
def test_a_flags_setting_of_the_wrong_type_is_named(ws: Workspace, table: str, key: str) -> None:
    ws.migration("0001_t", *TABLE_T)
    ws.config.write_text(ws.config.read_text() + "\n" + table)
    _refused(ws, key, command=("status",))


def test_a_store_setting_of_the_wrong_type_is_named(ws: Workspace) -> None:
    ws.migration("0001_t", *TABLE_T)
    ws.config.write_text(ws.config.read_text().replace('kind = "postgres"', 'kind = "postgres"\npassword = 1234'))
    _refused(ws, "[stores.main] password")


# -- durations -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("setting", "value"), [
    ("lock_timeout", "nan"),
    ("lock_timeout", "inf"),
    ("lock_timeout", '"1000000h"'),
    ("lock_timeout", "0"),
    ("lock_timeout", '"0.1ms"'),
    ("statement_timeout", "-inf"),
    ("retry_deadline", "nan"),
    ("lock_wait", "1e12"),
])
def test_nan_infinite_and_absurd_durations_are_refused_at_load(ws: Workspace, setting: str, value: str) -> None:
    ws.migration("0001_t", *TABLE_T)
    text = ws.config.read_text()
    lines = [line for line in text.splitlines() if not line.startswith(f"{setting} =")]
    ws.config.write_text("\n".join(lines) + f"\n{setting} = {value}\n")
    stderr = _refused(ws, f"[stores.main] {setting}")
    assert "between" in stderr or "expected a duration" in stderr


def test_a_zero_lock_ttl_is_refused(ws: Workspace, redis_server) -> None:  # type: ignore[no-untyped-def]
    ws.migration("0001_t", *TABLE_T)
    ws.config.write_text(ws.config.read_text() + f'\n[stores.cache]\nkind = "redis"\nurl = "{redis_server.url}"\nlock_ttl = 0\n')
    _refused(ws, "[stores.cache] lock_ttl")


def test_durations_inside_the_bounds_are_accepted(ws: Workspace) -> None:
    ws.migration("0001_t", *TABLE_T)
    ws.config.write_text(ws.config.read_text().replace('lock_timeout = "2s"', 'lock_timeout = "250ms"')
                         .replace('statement_timeout = "60s"', 'statement_timeout = "2h"'))
    result = ws.run("up")
    assert result.exit_code == 0, result.output
    assert ws.value("SELECT to_regclass('t')") == "t"


@pytest.mark.parametrize("bake", ["nan", "inf", '"100000h"', "-1"])
def test_a_nan_or_absurd_bake_is_refused_before_anything_runs(ws: Workspace, bake: str) -> None:
    ws.migration("0001_t", *TABLE_T)
    (ws.migrations / "releases.toml").write_text(f'[release."0001"]\nflag = "t_v2"\nstages = [100]\nbake_seconds = {bake}\n')
    # Run as its own process with a bound: before the fix, a NaN bake spun forever.
    proc = subprocess.Popen([sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(ws.config), "up"], cwd=ws.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ws.env, "PYTHONPATH": str(REPO)})
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err
    assert "bake_seconds" in err
    assert ws.value("SELECT to_regclass('t')") is None


def test_a_nan_gate_timeout_is_refused(ws: Workspace) -> None:
    ws.migration("0001_t", *TABLE_T)
    (ws.migrations / "releases.toml").write_text(
        '[release."0001"]\nflag = "t_v2"\nstages = [100]\ngates = [{ kind = "shell", command = "true", timeout = nan }]\n')
    _refused(ws, "gates[0] timeout")


def test_a_nan_flag_refresh_interval_is_refused(ws: Workspace) -> None:
    ws.migration("0001_t", *TABLE_T)
    ws.config.write_text(ws.config.read_text() + '\n[flags]\nrefresh_interval = nan\n')
    (ws.migrations / "releases.toml").write_text('[release."0001"]\nflag = "t_v2"\nstages = [100]\n')
    _refused(ws, "[flags] refresh_interval")


def test_emergency_rollback_refuses_a_nan_wait(ws: Workspace) -> None:
    ws.migration("0001_t", *TABLE_T)
    started = time.monotonic()
    _refused(ws, "--wait", command=("emergency-rollback", "0001", "--wait", "nan"))
    assert time.monotonic() - started < 60


# -- passwords -----------------------------------------------------------------------------------
def _url_parts(ws: Workspace) -> tuple[str, str]:
    """(user, host:port/dbname) of the workspace's database."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(ws.url)
    return str(params["user"]), f"{params['host']}:{params['port']}/{params['dbname']}"


def test_a_password_in_the_url_query_string_works_and_is_never_printed(ws: Workspace) -> None:
    user, rest = _url_parts(ws)
    text = ws.config.read_text()
    ws.config.write_text(text.replace(f"postgresql://{user}:${{TEST_PG_PASSWORD}}@{rest}",
                                      f"postgresql://{user}@{rest}?password={ws.password}"))
    ws.migration("0001_t", *TABLE_T)
    for args in (["-v", "up"], ["--json", "status"], ["history"]):
        result = ws.run_process(*args)
        assert result.exit_code == 0, result.output
        assert ws.password not in result.output, args
    assert ws.value("SELECT to_regclass('t')") == "t"


def test_a_wrong_password_in_the_url_query_string_is_masked_in_the_error(ws: Workspace) -> None:
    user, rest = _url_parts(ws)
    wrong = "Query-pw-wrong-3b1d"
    ws.config.write_text(ws.config.read_text().replace(f"postgresql://{user}:${{TEST_PG_PASSWORD}}@{rest}",
                                                       f"postgresql://{user}@{rest}?sslmode=disable&password={wrong}"))
    ws.migration("0001_t", *TABLE_T)
    for args in (["up"], ["--json", "status"], ["-v", "plan"]):
        result = ws.run_process(*args)
        assert result.exit_code == 2, result.output
        assert "cannot connect" in result.output
        assert wrong not in result.output, args


@pytest.mark.sqlite_state
def test_a_password_in_the_state_url_query_string_is_masked(ws: Workspace) -> None:
    secret = "State-pw-query-91ce"
    ws.config.write_text(ws.config.read_text().replace('state_url = "sqlite:///.polyshift/state.db"',
                                                       f'state_url = "postgresql://nobody@127.0.0.1:1/x?password={secret}"'))
    for args in (["status"], ["--json", "status"], ["-v", "up"]):
        result = ws.run(*args)
        assert result.exit_code == 2, result.output
        assert "state database" in result.output
        assert secret not in result.output, args


def test_a_password_key_reaches_the_server_when_the_url_has_no_user(ws: Workspace) -> None:
    _user, rest = _url_parts(ws)
    text = ws.config.read_text()
    # The server's only role is the superuser the tests connect as; the OS user libpq falls back to
    # does not exist there, so the user goes in PGUSER and the URL carries none.
    lines = [line for line in text.splitlines() if not line.startswith("url =")]
    lines.insert(lines.index('kind = "postgres"') + 1, f'url = "postgresql://{rest}"\npassword = "${{TEST_PG_PASSWORD}}"')
    ws.config.write_text("\n".join(lines) + "\n")
    ws.env["PGUSER"] = _user
    ws.migration("0001_t", *TABLE_T)
    result = ws.run_process("up")
    assert result.exit_code == 0, result.output
    assert ws.password not in result.output
    assert ws.value("SELECT to_regclass('t')") == "t"


def test_two_different_passwords_for_one_store_are_refused(ws: Workspace) -> None:
    ws.migration("0001_t", *TABLE_T)
    ws.config.write_text(ws.config.read_text().replace('kind = "postgres"', 'kind = "postgres"\npassword = "Other-pw-51ab"'))
    stderr = _refused(ws, "[stores.main]", "password")
    assert "Other-pw-51ab" not in stderr and ws.password not in stderr


# -- gates checked in preflight ----------------------------------------------------------------------
@pytest.mark.parametrize(("gate", "message"), [
    ('{ kind = "python", callable = "no_such_gates:ok" }', "no_such_gates"),
    ('{ kind = "python", callable = "health:missing" }', "health:missing"),
    ('{ kind = "python", callable = "health:LIMIT" }', "not callable"),
    ('{ kind = "sql", store = "main", query = "SELEC 1" }', "SQL syntax error"),
    ('{ kind = "shell", command = "./checks/missing.sh --strict" }', "./checks/missing.sh"),
])
def test_a_gate_that_cannot_work_is_refused_before_the_forward(ws: Workspace, gate: str, message: str) -> None:
    module = f"health_{uuid.uuid4().hex[:8]}"  # Python caches modules by name; the CLI runs in this process
    gate, message = gate.replace("health", module), message.replace("health", module)
    (ws.root / f"{module}.py").write_text("LIMIT = 3\n\ndef ok(ctx):\n    return True\n")
    ws.migration("0001_t", *TABLE_T)
    (ws.migrations / "releases.toml").write_text(f'[release."0001"]\nflag = "t_v2"\nstages = [100]\ngates = [{gate}]\n')
    for command in (("up", "--dry-run"), ("up",)):
        stderr = _refused(ws, "gate", message, command=command)
        assert "unexpected" not in stderr
    flags = ws.run("--json", "flags", "list")
    assert flags.exit_code == 0 and json.loads(flags.stdout) == []


def test_gates_that_can_work_pass_preflight(ws: Workspace) -> None:
    module = f"health_{uuid.uuid4().hex[:8]}"
    (ws.root / f"{module}.py").write_text("def ok(ctx):\n    return True, 'fine'\n")
    (ws.root / "check.sh").write_text("#!/bin/sh\nexit 0\n")
    (ws.root / "check.sh").chmod(0o755)
    ws.migration("0001_t", *TABLE_T)
    (ws.migrations / "releases.toml").write_text(
        '[release."0001"]\nflag = "t_v2"\nstages = [100]\ngates = [{ kind = "python", callable = "MODULE:ok" }, '
        '{ kind = "shell", command = "./check.sh" }, { kind = "sql", store = "main", query = "SELECT true" }]\n'
        .replace("MODULE", module))
    result = ws.run("up")
    assert result.exit_code == 0, result.output
    assert ws.value("SELECT to_regclass('t')") == "t"
