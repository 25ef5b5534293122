"""OFREP as `polyshift serve` answers it (OpenAPI of open-feature/protocol): shapes, reasons, error
codes and status codes, the same buckets as the in-process client, ETag revalidation, and every
way a request can be refused, over both flag stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2 as httpx

from polyshift.feature_flags.model import CompiledFlag
from tests import flag_service
from tests.conftest import FlagProject
from tests.flag_service import Served, wait_for

served = flag_service.served  # the fixture

ONE = "/ofrep/v1/evaluate/flags/{}"
BULK = "/ofrep/v1/evaluate/flags"


def post(s: Served, path: str, body: object = None, key: str | None = None, **headers: str) -> httpx.Response:
    http = s.http()
    sent = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, bytes) else json.dumps(body if body is not None else {"context": {}}).encode()
    return http.post(path, content=content, headers=sent | {"Content-Type": "application/json"} | headers)


# -- single evaluation: happy paths ---------------------------------------------------------
def test_an_enabled_flag_at_100_percent_is_on_for_everyone_statically(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    r = post(served, ONE.format("checkout"), {"context": {"targetingKey": "u1"}}, served.key())
    assert r.status_code == 200
    body = r.json()
    assert (body["key"], body["value"], body["reason"], body["variant"]) == ("checkout", True, "STATIC", "on")
    assert body["metadata"]["version"] == 1 and body["metadata"]["percent"] == 100


def test_a_disabled_flag_is_off_with_reason_disabled(served: Served) -> None:
    served.set("checkout", enabled=False, percent=100)
    body = post(served, ONE.format("checkout"), {"context": {"targetingKey": "u1"}}, served.key()).json()
    assert (body["value"], body["reason"], body["variant"]) == (False, "DISABLED", "off")


def test_a_killed_flag_is_off_even_for_its_allow_list(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100, allow_add=("vip",), killed=True)
    body = post(served, ONE.format("checkout"), {"context": {"targetingKey": "vip"}}, served.key()).json()
    assert (body["value"], body["reason"], body["metadata"]["detail"]) == (False, "DISABLED", "kill switch")


def test_allow_and_deny_lists_are_targeting_matches(served: Served) -> None:
    served.set("checkout", enabled=True, percent=50, allow_add=("vip",), deny_add=("bot",))
    key = served.key()
    allowed = post(served, ONE.format("checkout"), {"context": {"targetingKey": "vip"}}, key).json()
    denied = post(served, ONE.format("checkout"), {"context": {"targetingKey": "bot"}}, key).json()
    assert (allowed["value"], allowed["reason"]) == (True, "TARGETING_MATCH")
    assert (denied["value"], denied["reason"]) == (False, "TARGETING_MATCH")


def test_a_partial_rollout_buckets_each_subject_as_the_in_process_client_does(served: Served) -> None:
    flag = served.set("checkout", enabled=True, percent=30)
    compiled, key = CompiledFlag(flag), served.key()
    http = served.http()
    for i in range(300):
        subject = f"user-{i}"
        body = http.post(ONE.format("checkout"), json={"context": {"targetingKey": subject}},
                         headers={"Authorization": f"Bearer {key}"}).json()
        assert (body["value"], body["reason"]) == (compiled.evaluate(subject).value, "SPLIT"), subject


def test_context_attributes_besides_the_targeting_key_are_accepted_and_ignored(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    body = post(served, ONE.format("checkout"), {"context": {"targetingKey": "u1", "country": "CA", "plan": {"tier": 2}}},
                served.key()).json()
    assert body["value"] is True


def test_a_flag_the_same_for_everyone_needs_no_targeting_key(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    key = served.key()
    assert post(served, ONE.format("checkout"), {"context": {}}, key).json()["value"] is True
    assert post(served, ONE.format("checkout"), {}, key).json()["value"] is True  # what the Python provider sends without context


def test_an_x_api_key_header_is_accepted_like_a_bearer_token(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    r = post(served, ONE.format("checkout"), {"context": {}}, None, **{"X-API-Key": served.key()})
    assert r.status_code == 200


# -- single evaluation: failure paths -------------------------------------------------------
def test_an_unknown_flag_is_404_flag_not_found(served: Served) -> None:
    r = post(served, ONE.format("nope"), {"context": {"targetingKey": "u1"}}, served.key())
    assert r.status_code == 404
    assert r.json() == {"key": "nope", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "flag 'nope' was not found"}


def test_a_key_that_cannot_be_a_flag_name_is_flag_not_found_naming_the_rule(served: Served) -> None:
    r = post(served, ONE.format("Bad%20Name"), {"context": {}}, served.key())
    assert r.status_code == 404 and r.json()["errorCode"] == "FLAG_NOT_FOUND"
    assert "[a-z0-9_.-]" in r.json()["errorDetails"]


def test_a_partial_rollout_without_a_targeting_key_is_targeting_key_missing(served: Served) -> None:
    served.set("checkout", enabled=True, percent=30)
    r = post(served, ONE.format("checkout"), {"context": {"plan": "pro"}}, served.key())
    assert r.status_code == 400
    assert r.json()["errorCode"] == "TARGETING_KEY_MISSING" and "targetingKey" in r.json()["errorDetails"]


def test_a_body_that_is_not_json_is_parse_error(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    r = post(served, ONE.format("checkout"), b'{"context": ', served.key())
    assert r.status_code == 400 and r.json()["errorCode"] == "PARSE_ERROR"
    assert r.json()["errorDetails"].startswith("request body is not JSON")


def test_a_body_that_is_not_an_object_is_invalid_context(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    r = post(served, ONE.format("checkout"), [1, 2], served.key())
    assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_CONTEXT"
    assert "got list" in r.json()["errorDetails"]


def test_a_context_that_is_not_an_object_is_invalid_context(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    r = post(served, ONE.format("checkout"), {"context": "user-1"}, served.key())
    assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_CONTEXT"
    assert "'context' must be an object" in r.json()["errorDetails"]


def test_a_targeting_key_that_is_not_a_string_is_invalid_context(served: Served) -> None:
    served.set("checkout", enabled=True, percent=30)
    r = post(served, ONE.format("checkout"), {"context": {"targetingKey": 42}}, served.key())
    assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_CONTEXT"
    assert "targetingKey" in r.json()["errorDetails"]


def test_a_body_over_64_kib_is_refused(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    r = post(served, ONE.format("checkout"), {"context": {"targetingKey": "u", "blob": "x" * 70_000}}, served.key())
    assert r.status_code == 413 and "limit is 65536" in r.json()["errorDetails"]


def test_no_api_key_is_401_naming_how_to_get_one_and_is_audited(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    r = post(served, ONE.format("checkout"), {"context": {}})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "apikeys create" in r.json()["errorDetails"]
    [refusal] = served.audit("ofrep.refused")
    assert refusal.detail["status"] == 401 and refusal.actor.startswith("anonymous@")


def test_a_wrong_or_revoked_api_key_is_401(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    key = served.key("doomed")
    assert post(served, ONE.format("checkout"), {"context": {}}, key).status_code == 200
    served.service.accounts.revoke_key("doomed", who="test")
    served.service.keys.reload()
    r = post(served, ONE.format("checkout"), {"context": {}}, key)
    assert r.status_code == 401 and "not valid" in r.json()["errorDetails"]
    assert post(served, ONE.format("checkout"), {"context": {}}, key + "x").status_code == 401


def test_an_authorization_header_that_is_not_bearer_is_401(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    r = served.http().post(ONE.format("checkout"), json={"context": {}}, headers={"Authorization": f"Basic {served.key()}"})
    assert r.status_code == 401 and "Bearer" in r.json()["errorDetails"]


def test_repeated_refusals_are_audited_once_per_window_with_a_count(served: Served) -> None:
    for _ in range(20):
        post(served, ONE.format("checkout"), {"context": {}}, "psk_wrong")
    assert len(served.audit("ofrep.refused")) == 1


def test_a_get_on_the_evaluation_endpoint_is_405_in_ofrep_shape(served: Served) -> None:
    r = served.http().get(ONE.format("checkout"))
    assert r.status_code == 405 and r.json()["errorCode"] == "GENERAL"
    assert "GET is not allowed" in r.json()["errorDetails"]


# -- bulk evaluation ------------------------------------------------------------------------
def test_bulk_evaluates_every_flag_for_the_subject_with_an_etag(served: Served) -> None:
    served.set("a_on", enabled=True, percent=100)
    served.set("b_off", enabled=False)
    served.set("c_split", enabled=True, percent=30)
    r = post(served, BULK, {"context": {"targetingKey": "user-7"}}, served.key())
    assert r.status_code == 200 and r.headers["ETag"].startswith('"')
    flags = {f["key"]: f for f in r.json()["flags"]}
    assert flags["a_on"]["value"] is True and flags["b_off"]["reason"] == "DISABLED"
    split = CompiledFlag(served.flag("c_split")).evaluate("user-7")  # type: ignore[arg-type]
    assert flags["c_split"]["value"] is split.value
    assert r.json()["metadata"]["version"] == 3


def test_bulk_without_a_targeting_key_reports_the_rollouts_that_need_one_per_flag(served: Served) -> None:
    served.set("a_on", enabled=True, percent=100)
    served.set("c_split", enabled=True, percent=30)
    flags = {f["key"]: f for f in post(served, BULK, {"context": {}}, served.key()).json()["flags"]}
    assert flags["a_on"]["value"] is True
    assert flags["c_split"] == {"key": "c_split", "errorCode": "TARGETING_KEY_MISSING",
                                "errorDetails": "flag 'c_split' is a 30% rollout: send context.targetingKey"}


def test_bulk_with_the_current_etag_is_304_and_a_change_makes_it_200_again(served: Served) -> None:
    served.set("checkout", enabled=True, percent=100)
    key = served.key()
    first = post(served, BULK, {"context": {"targetingKey": "u1"}}, key)
    tag = first.headers["ETag"]
    same = post(served, BULK, {"context": {"targetingKey": "u1"}}, key, **{"If-None-Match": tag})
    assert same.status_code == 304 and same.headers["ETag"] == tag and same.content == b""
    served.project.run("flags", "kill", "checkout", "--reason", "errors")  # the CLI, another process's view
    changed = wait_for(lambda: (r := post(served, BULK, {"context": {"targetingKey": "u1"}}, key, **{"If-None-Match": tag}))
                       .status_code == 200 and r, 10, "the kill to reach the server")
    assert changed.headers["ETag"] != tag
    assert changed.json()["flags"][0]["value"] is False


def test_bulk_etags_differ_per_subject(served: Served) -> None:
    served.set("checkout", enabled=True, percent=50)
    key = served.key()
    tag = post(served, BULK, {"context": {"targetingKey": "u1"}}, key).headers["ETag"]
    other = post(served, BULK, {"context": {"targetingKey": "u2"}}, key, **{"If-None-Match": tag})
    assert other.status_code == 200


def test_bulk_refuses_bad_input_like_single_evaluation(served: Served) -> None:
    key = served.key()
    assert post(served, BULK, b"nope", key).json()["errorCode"] == "PARSE_ERROR"
    assert post(served, BULK, {"context": []}, key).json()["errorCode"] == "INVALID_CONTEXT"
    assert post(served, BULK, {"context": {}}).status_code == 401


# -- configuration --------------------------------------------------------------------------
def test_configuration_names_polyshift_boolean_flags_and_the_polling_interval(served: Served) -> None:
    key = served.key()
    r = served.http().get("/ofrep/v1/configuration", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert r.json() == {"name": "polyshift", "capabilities": {
        "cacheInvalidation": {"polling": {"enabled": True, "minPollingIntervalMs": 200}},
        "flagEvaluation": {"supportedTypes": ["boolean"]}}}
    again = served.http().get("/ofrep/v1/configuration", headers={"Authorization": f"Bearer {key}", "If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304


def test_configuration_needs_an_api_key(served: Served) -> None:
    assert served.http().get("/ofrep/v1/configuration").status_code == 401


def test_a_store_outage_serves_the_last_flags_marked_stale_and_refuses_writes(tmp_path: Path, redis_server: Any,
                                                                              state_url: str) -> None:
    project = FlagProject(tmp_path, "redis", redis_server.url, state_url=state_url)
    s = Served(project)
    try:
        s.set("checkout", enabled=True, percent=100)
        key = s.key()
        browser = s.browser("alice", "editor")
        redis_server.stop(remove=False)
        wait_for(lambda: s.service.client.refresh() is False and s.service.client.stale, 10, "the client to notice")
        body = post(s, ONE.format("checkout"), {"context": {"targetingKey": "u1"}}, key).json()
        assert body["value"] is True and body["metadata"]["stale"] is True
        page = browser.http.post("/flags", data={"csrf": browser.csrf("/audit"), "name": "other", "reason": "x"})
        assert page.status_code == 503 and "did not answer" in page.text and redis_server.url not in page.text
        listing = browser.http.get("/flags")
        assert listing.status_code == 503 and "did not answer" in listing.text and redis_server.url not in listing.text
    finally:
        s.close()


def test_cors_lets_only_the_configured_origins_read_ofrep_answers(flags: FlagProject) -> None:
    from polyshift.feature_flags.server.service import ServeSettings

    s = Served(flags, ServeSettings(cors_origins=("https://app.example.com",)))
    try:
        s.set("checkout", enabled=True, percent=100)
        http = s.http()
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
        ok = http.options(BULK, headers={"Origin": "https://app.example.com"} | preflight)
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "access-control-allow-credentials" not in ok.headers
        other = http.options(BULK, headers={"Origin": "https://evil.example"} | preflight)
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        answer = post(s, BULK, {"context": {"targetingKey": "u"}}, s.key(), Origin="https://app.example.com")
        assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "etag" in answer.headers["access-control-expose-headers"].lower()
    finally:
        s.close()
