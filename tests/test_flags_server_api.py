"""The JSON flags API of `polyshift serve` (admin keys write, read keys read, compare-and-set on
every change) and the `users` / `apikeys` commands, over both flag stores."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime, timedelta

import httpx2 as httpx
import pytest

from polyshift.feature_flags.server import releases
from tests import flag_service
from tests.conftest import FlagProject
from tests.flag_service import PASSWORD, Browser, Served

served = flag_service.served  # the fixture


def call(s: Served, method: str, path: str, key: str | None, body: object = None, raw: bytes | None = None,
         content_type: str = "application/json") -> httpx.Response:
    headers = {"Content-Type": content_type} | ({"Authorization": f"Bearer {key}"} if key else {})
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    return s.http().request(method, path, content=content, headers=headers)


# -- reading ---------------------------------------------------------------------------------
def test_a_read_key_lists_flags_and_reads_one_with_its_history(served: Served) -> None:
    served.set("checkout", enabled=True, percent=20, reason="canary")
    key = served.key()
    listing = call(served, "GET", "/api/v1/flags", key)
    assert listing.status_code == 200 and [f["name"] for f in listing.json()] == ["checkout"]
    one = call(served, "GET", "/api/v1/flags/checkout", key).json()
    assert one["percent"] == 20 and one["history"][0]["detail"]["reason"] == "canary"


def test_reading_an_unknown_or_misnamed_flag_is_404_or_400(served: Served) -> None:
    key = served.key()
    assert call(served, "GET", "/api/v1/flags/nope", key).status_code == 404
    r = call(served, "GET", "/api/v1/flags/NOPE", key)
    assert r.status_code == 400 and "[a-z0-9_.-]" in r.json()["error"]


def test_the_api_needs_a_key_and_ignores_the_console_cookie(served: Served) -> None:
    served.set("checkout", enabled=True, percent=20)
    browser = served.browser("root", "admin")
    assert browser.http.get("/api/v1/flags").status_code == 401
    r = browser.http.patch("/api/v1/flags/checkout", json={"reason": "x", "expected_version": 1, "percent": 99})
    assert r.status_code == 401 and served.flag("checkout").percent == 20  # type: ignore[union-attr]


# -- writing ---------------------------------------------------------------------------------
def test_an_admin_key_changes_a_flag_audited_with_the_key_name(served: Served) -> None:
    flag = served.set("checkout", enabled=True, percent=20)
    r = call(served, "PATCH", "/api/v1/flags/checkout", served.key("deploy-bot", "admin"),
             {"reason": "pipeline step 3", "expected_version": flag.version, "percent": 50})
    assert r.status_code == 200 and r.json()["percent"] == 50 and r.json()["version"] == flag.version + 1
    entry = served.audit("flag.changed")[-1]
    assert (entry.actor, entry.detail["via"], entry.detail["reason"]) == ("apikey:deploy-bot", "api", "pipeline step 3")


def test_a_read_key_cannot_write_and_the_refusal_is_audited(served: Served) -> None:
    flag = served.set("checkout", enabled=True, percent=20)
    r = call(served, "PATCH", "/api/v1/flags/checkout", served.key("reader"), {"reason": "x", "expected_version": 1, "killed": True})
    assert r.status_code == 403 and "needs an admin key" in r.json()["error"]
    assert served.flag("checkout") == flag
    assert [e.actor for e in served.audit("api.refused")] == ["apikey:reader"]


def test_a_stale_expected_version_is_409_with_the_current_flag_and_the_kill_stays(served: Served) -> None:
    flag = served.set("checkout", enabled=True, percent=20)
    served.project.run("flags", "kill", "checkout", "--reason", "incident")
    r = call(served, "PATCH", "/api/v1/flags/checkout", served.key("bot", "admin"),
             {"reason": "ramp", "expected_version": flag.version, "percent": 50})
    assert r.status_code == 409 and "was killed by" in r.json()["error"]
    assert r.json()["current"]["killed"] is True
    after = served.flag("checkout")
    assert after is not None and after.killed and after.percent == 20


def test_an_admin_key_creates_a_flag_and_creating_it_twice_is_409(served: Served) -> None:
    key = served.key("bot", "admin")
    r = call(served, "POST", "/api/v1/flags", key, {"name": "new_flow", "reason": "prep", "owner": "growth"})
    assert r.status_code == 201 and r.json()["owner"] == "growth" and r.json()["enabled"] is False
    again = call(served, "POST", "/api/v1/flags", key, {"name": "new_flow", "reason": "prep"})
    assert again.status_code == 409


def test_patching_an_unknown_flag_is_404(served: Served) -> None:
    r = call(served, "PATCH", "/api/v1/flags/nope", served.key("bot", "admin"), {"reason": "x", "expected_version": 1, "percent": 5})
    assert r.status_code == 404 and served.flag("nope") is None


@pytest.mark.parametrize(("body", "message"), [
    ({"expected_version": 1, "percent": 50}, "'reason' is required"),
    ({"reason": "x", "percent": 50}, "'expected_version' is required"),
    ({"reason": "x", "expected_version": "1", "percent": 50}, "'expected_version' must be a non-negative integer"),
    ({"reason": "x", "expected_version": 1, "percent": "50"}, "'percent' must be a number"),
    ({"reason": "x", "expected_version": 1, "percent": 101}, "between 0 and 100"),
    ({"reason": "x", "expected_version": 1, "enabled": "yes"}, "'enabled' must be true or false"),
    ({"reason": "x", "expected_version": 1, "allow_add": "u1"}, "'allow_add' must be a list"),
    ({"reason": "x", "expected_version": 1, "colour": "red"}, "unknown field(s) colour"),
    ({"reason": "x", "expected_version": 1}, "nothing to change"),
])
def test_a_bad_change_is_400_naming_the_problem_and_changes_nothing(served: Served, body: dict, message: str) -> None:  # type: ignore[type-arg]
    flag = served.set("checkout", enabled=True, percent=20)
    r = call(served, "PATCH", "/api/v1/flags/checkout", served.key("bot", "admin"), body)
    assert r.status_code == 400 and message in r.json()["error"], r.json()
    assert served.flag("checkout") == flag


def test_a_body_that_is_not_json_or_not_an_object_or_not_json_typed_is_refused(served: Served) -> None:
    flag = served.set("checkout", enabled=True, percent=20)
    key = served.key("bot", "admin")
    assert call(served, "PATCH", "/api/v1/flags/checkout", key, raw=b"{nope").status_code == 400
    assert call(served, "PATCH", "/api/v1/flags/checkout", key, [1]).json()["error"].startswith("request body must be a JSON object")
    assert call(served, "PATCH", "/api/v1/flags/checkout", key, raw=b"reason=x", content_type="text/plain").status_code == 415
    assert call(served, "PATCH", "/api/v1/flags/checkout", key, raw=b" " * 70_000).status_code == 413
    assert served.flag("checkout") == flag


def test_an_unknown_api_path_is_404_json(served: Served) -> None:
    r = call(served, "GET", "/api/v1/nothing", served.key())
    assert r.status_code == 404 and r.json() == {"error": "nothing at /api/v1/nothing"}


# -- the releases view -----------------------------------------------------------------------
def test_a_release_page_charts_the_flag_and_marks_each_stage_by_its_gates(served: Served) -> None:
    from polyshift.framework.core.lifecycle import Phase, RunCommand, Step

    state = served.service.state
    run = state.start_run(RunCommand.UP)
    state.journal(run, Step.RELEASE, Phase.INTENT, version="0001", detail={"stores": ["main"], "flag": "checkout", "stages": [10, 50]})
    served.set("checkout", enabled=True, percent=10, release="0001")
    state.journal(run, Step.STAGE, Phase.DONE, version="0001",
                  detail={"percent": 10, "gates": [{"gate": "errors", "ok": True, "detail": "0.1%", "duration_ms": 3}]})
    served.set("checkout", percent=50)
    state.journal(run, Step.STAGE, Phase.FAILED, version="0001",
                  detail={"percent": 50, "cause": "health gate failed at 50%: errors: 9%"})
    view = releases.detail(served.service, "0001")
    assert [(e["step"], e["phase"]) for e in view.timeline] == [("release", "intent"), ("stage", "done"), ("stage", "failed")]
    assert "errors ok: 0.1%" in view.timeline[1]["summary"] and "errors: 9%" in view.timeline[2]["summary"]
    assert view.chart.count("<circle") == 2 and 'fill="#1f7a3d"' in view.chart and 'fill="#b42318"' in view.chart
    page = served.browser("vera", "viewer").http.get("/releases/0001")
    assert page.status_code == 200 and "<svg" in page.text and "health gate failed at 50%" in page.text


def test_the_percent_series_is_zero_while_the_flag_is_off_or_killed(served: Served) -> None:
    served.set("checkout", enabled=True, percent=10)
    served.set("checkout", percent=50)
    served.set("checkout", killed=True)
    served.set("checkout", killed=False, enabled=False)
    assert [p for _, p in releases.percent_series(served.service, "checkout")] == [10, 50, 0, 0]


def test_the_chart_of_a_release_never_run_says_so() -> None:
    assert "No flag changes" in releases.chart([], [])
    now = datetime.now(UTC)
    assert "<path" in releases.chart([(now - timedelta(minutes=1), 10.0), (now, 50.0)], [])


def test_a_release_version_that_cannot_be_one_is_400(served: Served) -> None:
    r = served.browser("vera", "viewer").http.get("/releases/..%2F..%2Fetc")
    assert r.status_code in (400, 404)


# -- users and apikeys commands --------------------------------------------------------------
def with_stdin(text: str, fn):  # type: ignore[no-untyped-def]
    saved = sys.stdin
    sys.stdin = io.StringIO(text)
    try:
        return fn()
    finally:
        sys.stdin = saved


def test_users_add_hashes_the_password_and_the_user_can_sign_in(flags: FlagProject) -> None:
    r = with_stdin(PASSWORD + "\n", lambda: flags.run("users", "add", "alice", "--role", "editor", "--password-stdin"))
    assert r.exit_code == 0, r.output
    listing = json.loads(flags.run("--json", "users", "list").stdout)
    assert listing[0]["name"] == "alice" and listing[0]["role"] == "editor" and PASSWORD not in json.dumps(listing)
    s = Served(flags)
    try:
        assert Browser(s.app).sign_in("alice").status_code == 303
        row = s.service.state.engine.connect().exec_driver_sql("SELECT password_hash FROM polyshift_console_users").scalar()
        assert isinstance(row, str) and row.startswith("$argon2id$") and PASSWORD not in row
    finally:
        s.close()


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("users", "add", "alice", "--role", "owner", "--password-stdin"), PASSWORD, "role 'owner' is not one of viewer, editor, admin"),
    (("users", "add", "alice", "--role", "viewer", "--password-stdin"), "short", "at least 12 characters"),
    (("users", "add", "Alice Smith", "--role", "viewer", "--password-stdin"), PASSWORD, "user name 'Alice Smith'"),
    (("users", "add", "alice", "--role", "viewer"), "", "no terminal"),
    (("users", "remove", "nobody"), "", "user 'nobody' does not exist"),
    (("apikeys", "create", "svc", "--scope", "write"), "", "scope 'write' is not one of read, admin"),
    (("apikeys", "create", "Svc!"), "", "API key name 'Svc!'"),
    (("apikeys", "revoke", "nothing"), "", "no active API key has the id or name 'nothing'"),
    (("serve", "--port", "0"), "", "--port must be between 1 and 65535"),
    (("serve", "--cors-origin", "https://app.example.com/path"), "", "must be an origin"),
])
def test_bad_account_commands_exit_2_naming_the_problem_and_change_nothing(flags: FlagProject, args: tuple[str, ...], stdin: str,
                                                                           message: str) -> None:
    r = with_stdin(stdin + "\n", lambda: flags.run(*args))
    assert r.exit_code == 2 and message in r.output, r.output
    assert json.loads(flags.run("--json", "users", "list").stdout) == []
    assert json.loads(flags.run("--json", "apikeys", "list").stdout) == []


def test_adding_a_user_twice_is_refused(flags: FlagProject) -> None:
    add = ("users", "add", "alice", "--role", "viewer", "--password-stdin")
    assert with_stdin(PASSWORD, lambda: flags.run(*add)).exit_code == 0
    r = with_stdin(PASSWORD, lambda: flags.run(*add))
    assert r.exit_code == 2 and "already exists" in r.output


def test_apikeys_create_prints_the_key_once_and_list_never_shows_it(flags: FlagProject) -> None:
    created = json.loads(flags.run("--json", "apikeys", "create", "checkout-svc", "--scope", "read").stdout)
    assert created["key"].startswith("psk_") and created["scope"] == "read"
    listing = flags.run("--json", "apikeys", "list").stdout
    assert created["key"] not in listing and "checkout-svc" in listing
    assert flags.run("apikeys", "create", "checkout-svc").exit_code == 2  # one active key per name
    assert flags.run("apikeys", "revoke", "checkout-svc").exit_code == 0
    [key] = json.loads(flags.run("--json", "apikeys", "list").stdout)
    assert key["revoked_at"] and key["revoked_by"]
    audit = flags.run("--json", "audit").stdout
    assert '"apikey.created"' in audit and '"apikey.revoked"' in audit and created["key"] not in audit


def test_accounts_keys_and_sessions_work_on_a_postgresql_control_plane(database: str) -> None:
    from polyshift.feature_flags.server.accounts import Accounts
    from polyshift.framework.control.state import ControlPlane

    state = ControlPlane(database.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        accounts = Accounts(state)
        user = accounts.add_user("alice", "editor", PASSWORD, who="test")
        assert accounts.authenticate("alice", PASSWORD) == user and accounts.authenticate("alice", "wrong password!") is None
        token, session = accounts.open_session(user)
        assert accounts.session(token) == session
        key, secret = accounts.create_key("svc", "read", who="test")
        assert [k.name for k in accounts.active_keys().values()] == ["svc"]
        accounts.revoke_key(key.id, who="test")
        assert accounts.active_keys() == {} and secret not in str(list(state.audit_entries()))
        accounts.remove_user("alice", who="test")
        assert accounts.session(token) is None
    finally:
        state.close()


def test_serve_on_a_port_in_use_exits_2_naming_it(flags: FlagProject) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = flags.run("serve", "--port", str(port))
    assert r.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in r.output
