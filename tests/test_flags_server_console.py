"""The console of `polyshift serve`: sign-in, roles, flag edits through the same compare-and-set and
audit as the CLI, CSRF, cookies, throttling, escaping and every refusal, over both flag stores."""

from __future__ import annotations

import re

from polyshift.feature_flags.server.service import ServeSettings
from tests import flag_service
from tests.flag_service import PASSWORD, Browser, Served, error_of

served = flag_service.served  # the fixture


# -- sign-in ---------------------------------------------------------------------------------
def test_every_page_needs_a_signed_in_user(served: Served) -> None:
    http = served.http()
    for path in ("/flags", "/flags/x", "/audit", "/releases", "/admin/keys"):
        r = http.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path


def test_sign_in_sets_an_httponly_samesite_strict_session_cookie_and_audits_it(served: Served) -> None:
    served.user("alice", "editor")
    r = Browser(served.app).sign_in("alice")
    assert r.status_code == 303 and r.headers["location"] == "/flags"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("polyshift_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert [e.actor for e in served.audit("console.signed_in")] == ["alice"]


def test_over_https_the_session_cookie_is_secure_and_host_prefixed(served: Served) -> None:
    served.user("alice", "editor")
    r = Browser(served.app, "https://testserver").sign_in("alice")
    cookie = next(c for c in r.headers.get_list("set-cookie") if "polyshift_session=" in c)
    assert cookie.startswith("__Host-polyshift_session=") and "Secure" in cookie and "Path=/" in cookie


def test_secure_cookies_setting_marks_them_secure_on_plain_http(flags) -> None:  # type: ignore[no-untyped-def]
    s = Served(flags, ServeSettings(secure_cookies=True))
    try:
        r = s.http().get("/login")  # a browser then sends it back only over HTTPS (the TLS proxy's side)
        assert "Secure" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    finally:
        s.close()


def test_a_wrong_password_is_refused_audited_and_signs_nobody_in(served: Served) -> None:
    served.user("alice", "editor")
    browser = Browser(served.app)
    r = browser.sign_in("alice", "not the password")
    assert r.status_code == 401 and error_of(r) == "Wrong user or password."
    assert browser.http.get("/flags").status_code == 303
    [failed] = served.audit("console.signin_failed")
    assert failed.actor.startswith("alice@") and PASSWORD not in str(failed.detail)


def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(served: Served) -> None:
    r = Browser(served.app).sign_in("mallory", "whatever it is")
    assert r.status_code == 401 and error_of(r) == "Wrong user or password."


def test_sign_in_is_throttled_after_five_failures_even_with_the_right_password(served: Served) -> None:
    served.user("alice", "editor")
    browser = Browser(served.app)
    for _ in range(5):
        assert browser.sign_in("alice", "wrong guess").status_code == 401
    r = browser.sign_in("alice")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "too many failed sign-ins" in error_of(r)
    assert any(e.detail["status"] == 429 for e in served.audit("console.refused"))


def test_a_sign_in_form_without_its_token_is_refused(served: Served) -> None:
    served.user("alice", "editor")
    r = served.http().post("/login", data={"user": "alice", "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403 and "sign-in form expired" in error_of(r)


def test_sign_in_never_redirects_off_the_site(served: Served) -> None:
    served.user("alice", "editor")
    browser = Browser(served.app)
    page = browser.http.get("/login?next=//evil.example/steal")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = browser.http.post("/login", data={"csrf": token, "user": "alice", "password": PASSWORD, "next": "https://evil.example/"})
    assert r.headers["location"] == "/flags"


def test_sign_out_ends_the_session_on_the_server(served: Served) -> None:
    browser = served.browser("alice", "editor")
    cookie = browser.http.cookies.get("polyshift_session")
    assert browser.http.post("/logout", data={"csrf": browser.csrf()}).status_code == 303
    replay = served.http()
    replay.cookies.set("polyshift_session", cookie or "")
    assert replay.get("/flags").status_code == 303


def test_removing_a_user_ends_their_sessions(served: Served) -> None:
    browser = served.browser("alice", "editor")
    served.service.accounts.remove_user("alice", who="admin")
    assert browser.http.get("/flags").status_code == 303


# -- reading ---------------------------------------------------------------------------------
def test_the_flag_list_shows_state_percentage_lists_owner_and_last_change(served: Served) -> None:
    served.set("checkout", enabled=True, percent=25, allow_add=("a", "b"), deny_add=("c",), owner="payments")
    served.set("search", enabled=True, percent=100, killed=True)
    page = served.browser("vera", "viewer").http.get("/flags").text
    row = re.search(r'<tr data-flag="checkout">(.*?)</tr>', page, re.S).group(1)  # type: ignore[union-attr]
    assert "on 25%" in row and ">2<" in row and ">1<" in row and "payments" in row and "by setup" in row
    assert "KILLED" in re.search(r'<tr data-flag="search">(.*?)</tr>', page, re.S).group(1)  # type: ignore[union-attr]


def test_a_kill_made_with_the_cli_shows_in_the_console_at_once(served: Served) -> None:
    served.set("checkout", enabled=True, percent=50)
    browser = served.browser("alice", "editor")
    assert served.project.run("flags", "kill", "checkout", "--reason", "5xx spike").exit_code == 0
    page = browser.http.get("/flags/checkout").text
    assert 'id="state">KILLED<' in page and "5xx spike" in page and 'id="form-unkill"' in page


def test_a_viewer_sees_no_write_controls(served: Served) -> None:
    served.set("checkout", enabled=True, percent=50)
    viewer = served.browser("vera", "viewer")
    flag_page, flags_page = viewer.http.get("/flags/checkout").text, viewer.http.get("/flags").text
    assert 'id="controls"' not in flag_page and "<form class=\"card" not in flag_page
    assert 'id="create-flag"' not in flags_page and "/admin/keys" not in flags_page


def test_descriptions_and_reasons_are_escaped(served: Served) -> None:
    served.set("checkout", reason="<img src=x onerror=alert(2)>", description="<script>alert(1)</script>")
    browser = served.browser("vera", "viewer")
    for path in ("/flags", "/flags/checkout", "/audit"):
        page = browser.http.get(path).text
        assert "<script>alert(1)" not in page and "<img src=x" not in page, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in browser.http.get("/flags/checkout").text


def test_pages_carry_a_strict_content_security_policy_and_are_not_cached_or_framed(served: Served) -> None:
    served.set("checkout", enabled=True, percent=30)
    r = served.browser("vera", "viewer").http.get("/flags")
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"
    # The policy allows no inline style or script: the pages must need none to render.
    assert " style=" not in r.text and "<script" not in r.text


def test_an_unknown_flag_page_is_404_and_a_bad_name_400(served: Served) -> None:
    browser = served.browser("vera", "viewer")
    assert browser.http.get("/flags/nope").status_code == 404
    r = browser.http.get("/flags/Not%20A%20Name")
    assert r.status_code == 400 and "[a-z0-9_.-]" in error_of(r)


# -- writing ---------------------------------------------------------------------------------
def test_an_editor_raises_the_percentage_and_the_audit_log_names_them_and_why(served: Served) -> None:
    served.set("checkout", enabled=True, percent=10)
    browser = served.browser("alice", "editor")
    r = browser.change("checkout", "percent", percent="25", reason="canary healthy")
    assert r.status_code == 303 and r.headers["location"] == "/flags/checkout?done=percent"
    flag = served.flag("checkout")
    assert flag is not None and flag.percent == 25 and flag.updated_by == "alice"
    entry = served.audit("flag.changed")[-1]
    assert (entry.actor, entry.detail["reason"], entry.detail["via"]) == ("alice", "canary healthy", "console")
    assert entry.detail["changes"] == {"percent": {"from": 10.0, "to": 25.0}}
    assert "canary healthy" in browser.http.get("/flags/checkout").text


def test_a_change_reaches_ofrep_at_once(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    key = served.key()
    served.browser("alice", "editor").change("checkout", "disable")
    body = served.http().post("/ofrep/v1/evaluate/flags/checkout", json={"context": {}}, headers={"Authorization": f"Bearer {key}"}).json()
    assert body["value"] is False


def test_an_edit_on_a_page_loaded_before_a_kill_is_refused_and_the_kill_stays(served: Served) -> None:
    flag = served.set("checkout", enabled=True, percent=10)
    browser = served.browser("alice", "editor")
    assert served.project.run("flags", "kill", "checkout", "--reason", "errors").exit_code == 0
    r = browser.change("checkout", "percent", expected=flag.version, percent="50")
    assert r.status_code == 409
    assert "was killed by" in error_of(r) and f"you saw version {flag.version}" in error_of(r)
    after = served.flag("checkout")
    assert after is not None and after.killed and after.percent == 10


def test_kill_needs_its_confirmation_box(served: Served) -> None:
    served.set("checkout", enabled=True, percent=50)
    r = served.browser("alice", "editor").change("checkout", "kill")
    assert r.status_code == 400 and "confirmation box" in error_of(r)
    assert not served.flag("checkout").killed  # type: ignore[union-attr]


def test_kill_and_unkill_with_reason_and_confirmation(served: Served) -> None:
    served.set("checkout", enabled=True, percent=50)
    browser = served.browser("alice", "editor")
    assert browser.change("checkout", "kill", confirm="yes", reason="checkout 5xx").status_code == 303
    assert served.flag("checkout").killed  # type: ignore[union-attr]
    assert browser.change("checkout", "unkill", confirm="yes", reason="fixed").status_code == 303
    flag = served.flag("checkout")
    assert flag is not None and not flag.killed and flag.percent == 50
    assert [e.detail["reason"] for e in served.audit("flag.changed")][-2:] == ["checkout 5xx", "fixed"]


def test_allow_and_deny_lists_are_edited_by_subject_keys(served: Served) -> None:
    served.set("checkout", enabled=True, percent=0, allow_add=("old",))
    browser = served.browser("alice", "editor")
    r = browser.change("checkout", "lists", allow_add="u1, u2", allow_remove="old", deny_add="bot")
    assert r.status_code == 303
    flag = served.flag("checkout")
    assert flag is not None and flag.allow == {"u1", "u2"} and flag.deny == {"bot"}


def test_an_editor_creates_a_flag_that_starts_off(served: Served) -> None:
    browser = served.browser("alice", "editor")
    r = browser.http.post("/flags", data={"csrf": browser.csrf(), "name": "new_flow", "description": "d", "owner": "team",
                                           "reason": "launch prep"})
    assert r.status_code == 303
    flag = served.flag("new_flow")
    assert flag is not None and not flag.enabled and flag.owner == "team"


def test_creating_a_flag_that_exists_is_409_and_changes_nothing(served: Served) -> None:
    before = served.set("checkout", enabled=True, percent=50)
    browser = served.browser("alice", "editor")
    r = browser.http.post("/flags", data={"csrf": browser.csrf(), "name": "checkout", "reason": "again"})
    assert r.status_code == 409 and "exists already" in error_of(r)
    assert served.flag("checkout") == before


def test_bad_form_values_are_400_naming_the_problem_and_change_nothing(served: Served) -> None:
    before = served.set("checkout", enabled=True, percent=50)
    browser = served.browser("alice", "editor")
    cases = [
        ({"action": "percent", "percent": "150"}, "between 0 and 100"),
        ({"action": "percent", "percent": "lots"}, "must be a number"),
        ({"action": "percent", "percent": "10", "reason": " "}, "'reason' is required"),
        ({"action": "explode"}, "unknown action 'explode'"),
        ({"action": "lists"}, "at least one subject key"),
        ({"action": "lists", "allow_add": "x" * 201}, "longer than 200"),
        ({"action": "about", "description": "line\x01break"}, "control characters"),
    ]
    for fields, message in cases:
        r = browser.change("checkout", **fields)  # type: ignore[arg-type]
        assert r.status_code == 400 and message in error_of(r), (fields, error_of(r))
    r = browser.change("checkout", "percent", expected="v1", percent="10")  # type: ignore[arg-type]
    assert r.status_code == 400 and "expected_version" in error_of(r)
    assert served.flag("checkout") == before


# -- refusals --------------------------------------------------------------------------------
def test_a_viewer_cannot_write_and_the_refusal_is_audited(served: Served) -> None:
    before = served.set("checkout", enabled=True, percent=50)
    viewer = served.browser("vera", "viewer")
    r = viewer.http.post("/flags/checkout", data={"csrf": viewer.csrf(), "action": "kill", "confirm": "yes", "reason": "x",
                                                  "expected_version": str(before.version)})
    assert r.status_code == 403 and "role viewer may not" in error_of(r)
    assert served.flag("checkout") == before
    [refusal] = served.audit("console.refused")
    assert refusal.actor == "vera" and refusal.detail["status"] == 403


def test_a_post_with_a_wrong_csrf_token_is_refused_and_audited(served: Served) -> None:
    before = served.set("checkout", enabled=True, percent=50)
    browser = served.browser("alice", "editor")
    r = browser.http.post("/flags/checkout", data={"csrf": "forged", "action": "disable", "reason": "x",
                                                   "expected_version": str(before.version)})
    assert r.status_code == 403 and "CSRF" in error_of(r)
    assert served.flag("checkout") == before and served.audit("console.refused")


def test_a_post_from_another_origin_is_refused_even_with_the_token(served: Served) -> None:
    before = served.set("checkout", enabled=True, percent=50)
    browser = served.browser("alice", "editor")
    r = browser.http.post("/flags/checkout", headers={"Origin": "https://evil.example"},
                          data={"csrf": browser.csrf(), "action": "disable", "reason": "x", "expected_version": str(before.version)})
    assert r.status_code == 403 and served.flag("checkout") == before


def test_a_post_without_a_session_is_401(served: Served) -> None:
    before = served.set("checkout", enabled=True, percent=50)
    r = served.http().post("/flags/checkout", data={"action": "disable", "reason": "x", "expected_version": "1"})
    assert r.status_code == 401 and served.flag("checkout") == before


def test_a_form_too_large_or_of_the_wrong_type_is_refused(served: Served) -> None:
    served.set("checkout", enabled=True, percent=50)
    browser = served.browser("alice", "editor")
    big = browser.http.post("/flags/checkout", data={"csrf": browser.csrf(), "reason": "x" * 40_000})
    assert big.status_code == 413
    typed = browser.http.post("/flags/checkout", json={"action": "disable"})
    assert typed.status_code == 415


def test_an_editor_cannot_manage_api_keys(served: Served) -> None:
    editor = served.browser("alice", "editor")
    assert editor.http.get("/admin/keys").status_code == 403
    r = editor.http.post("/admin/keys", data={"csrf": editor.csrf(), "name": "sneaky", "scope": "admin"})
    assert r.status_code == 403 and served.service.accounts.list_keys() == []


# -- API keys --------------------------------------------------------------------------------
def test_an_admin_creates_a_key_shown_once_that_evaluates_then_revokes_it(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    admin = served.browser("root", "admin")
    page = admin.http.post("/admin/keys", data={"csrf": admin.csrf(), "name": "checkout-svc", "scope": "read"})
    secret = re.search(r'id="new-key-secret">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    ofrep = served.http()
    headers = {"Authorization": f"Bearer {secret}"}
    assert ofrep.post("/ofrep/v1/evaluate/flags/checkout", json={"context": {}}, headers=headers).status_code == 200
    listing = admin.http.get("/admin/keys").text
    assert "checkout-svc" in listing and secret not in listing and secret not in admin.http.get("/audit").text
    [key] = served.service.accounts.list_keys()
    assert admin.http.post(f"/admin/keys/{key.id}/revoke", data={"csrf": admin.csrf()}).status_code == 303
    assert ofrep.post("/ofrep/v1/evaluate/flags/checkout", json={"context": {}}, headers=headers).status_code == 401


def test_a_key_with_a_bad_name_or_scope_is_refused(served: Served) -> None:
    admin = served.browser("root", "admin")
    r = admin.http.post("/admin/keys", data={"csrf": admin.csrf(), "name": "Bad Name", "scope": "read"})
    assert r.status_code == 400 and "[a-z0-9_.-]" in error_of(r)
    r = admin.http.post("/admin/keys", data={"csrf": admin.csrf(), "name": "ok", "scope": "god"})
    assert r.status_code == 400 and "scope 'god'" in error_of(r)
    assert served.service.accounts.list_keys() == []


def test_store_urls_and_state_paths_are_never_rendered(served: Served) -> None:
    served.set("checkout", enabled=True, percent=50)
    text = served.project.config.read_text()
    secrets = [*re.findall(r'url = "([^"]+)"', text), "state.db"]
    admin = served.browser("root", "admin")
    for path in ("/flags", "/flags/checkout", "/audit", "/releases", "/releases/0001", "/admin/keys", "/admin/users"):
        page = admin.http.get(path)
        assert page.status_code == 200, path
        for secret in secrets:
            assert secret not in page.text, (path, secret)
