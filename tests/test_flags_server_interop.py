"""The generic OFREP providers, unmodified, against `polyshift serve` running as its own process
under uvicorn: the OpenFeature Python SDK with openfeature-provider-ofrep (PyPI) and the
OpenFeature Node SDK with @openfeature/ofrep-provider (npm, installed by `make install` into
tests/ofrep_node). A subject gets the answer the in-process client gives it."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from polyshift.feature_flags import FlagClient
from polyshift.feature_flags.admin import Change
from tests import flag_service
from tests.conftest import REPO
from tests.flag_service import LiveServer, wait_for

live = flag_service.live  # the fixture

NODE_CHECK = REPO / "tests" / "ofrep_node"
SUBJECTS = [f"user-{i}" for i in range(10_000)]

pytestmark = pytest.mark.slow


def setup_flags(server: LiveServer) -> None:
    admin = server.project.admin()
    for name, change in {
        "on_flag": Change(enabled=True, percent=100),
        "off_flag": Change(enabled=False, percent=100),
        "split_flag": Change(enabled=True, percent=30, allow_add=("vip",), deny_add=("bot",)),
        "killed_flag": Change(enabled=True, percent=100, killed=True),
    }.items():
        admin.change(name, change, reason="interop", create=True)


@pytest.fixture
def of_client(live: LiveServer) -> Iterator[Any]:
    setup_flags(live)
    key = live.key("python-app")
    domain = f"polyshift-{live.port}"
    api.set_provider(OFREPProvider(live.url, headers_factory=lambda: {"Authorization": f"Bearer {key}"}), domain)
    try:
        yield api.get_client(domain)
    finally:
        api.clear_providers()


def in_process(live: LiveServer) -> FlagClient:
    client: FlagClient = live.project.client(background=False)
    return client


# -- Python: openfeature-provider-ofrep -------------------------------------------------------
def test_python_provider_on_off_and_killed(of_client: Any) -> None:
    ctx = EvaluationContext(targeting_key="user-1")
    on = of_client.get_boolean_details("on_flag", False, ctx)
    off = of_client.get_boolean_details("off_flag", True, ctx)
    killed = of_client.get_boolean_details("killed_flag", True, ctx)
    assert (on.value, on.reason, on.variant) == (True, Reason.STATIC, "on")
    assert (off.value, off.reason, off.variant) == (False, Reason.DISABLED, "off")
    assert (killed.value, killed.reason, killed.flag_metadata["detail"]) == (False, Reason.DISABLED, "kill switch")


def test_python_provider_buckets_10k_subjects_as_the_in_process_client(of_client: Any, live: LiveServer) -> None:
    client = in_process(live)
    try:
        mismatched = [s for s in SUBJECTS
                      if of_client.get_boolean_value("split_flag", False, EvaluationContext(targeting_key=s)) != client.is_enabled(
                          "split_flag", s)]
    finally:
        client.close()
    assert mismatched == []


def test_python_provider_unknown_flag_is_the_default_with_flag_not_found(of_client: Any) -> None:
    details = of_client.get_boolean_details("no_such_flag", True, EvaluationContext(targeting_key="user-1"))
    assert (details.value, details.error_code, details.reason) == (True, ErrorCode.FLAG_NOT_FOUND, Reason.ERROR)


def test_python_provider_partial_rollout_without_subject_is_the_default_with_targeting_key_missing(of_client: Any) -> None:
    details = of_client.get_boolean_details("split_flag", True)
    assert (details.value, details.error_code) == (True, ErrorCode.TARGETING_KEY_MISSING)


def test_python_provider_with_a_revoked_key_gets_defaults(of_client: Any, live: LiveServer) -> None:
    assert live.project.run("apikeys", "revoke", "python-app").exit_code == 0
    wait_for(lambda: of_client.get_boolean_details("on_flag", False, EvaluationContext(targeting_key="u")).error_code
             == ErrorCode.GENERAL, 10, "the revocation to reach the server")
    assert of_client.get_boolean_value("on_flag", False, EvaluationContext(targeting_key="u")) is False


# -- bulk over HTTP with ETag revalidation, as the web provider polls -------------------------
def test_a_changed_flag_is_seen_after_etag_revalidation(live: LiveServer) -> None:
    import httpx2 as httpx

    setup_flags(live)
    key = live.key("web-app")
    headers = {"Authorization": f"Bearer {key}"}
    body = {"context": {"targetingKey": "user-1"}}
    first = httpx.post(f"{live.url}/ofrep/v1/evaluate/flags", json=body, headers=headers)
    assert first.status_code == 200
    tag = first.headers["ETag"]
    assert httpx.post(f"{live.url}/ofrep/v1/evaluate/flags", json=body, headers=headers | {"If-None-Match": tag}).status_code == 304
    assert live.project.run("flags", "kill", "on_flag", "--reason", "incident").exit_code == 0
    changed = wait_for(lambda: (r := httpx.post(f"{live.url}/ofrep/v1/evaluate/flags", json=body,
                                                headers=headers | {"If-None-Match": tag})).status_code == 200 and r,
                       10, "the kill behind a new ETag")
    assert {f["key"]: f.get("value") for f in changed.json()["flags"]}["on_flag"] is False


# -- Node: @openfeature/ofrep-provider -------------------------------------------------------
def node_evaluate(live: LiveServer, key: str, evaluations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (NODE_CHECK / "node_modules" / "@openfeature" / "ofrep-provider").is_dir():
        pytest.fail("tests/ofrep_node has no node_modules: run 'make install' (it runs npm ci there when npm is present)")
    done = subprocess.run(["node", str(NODE_CHECK / "evaluate.mjs")], input=json.dumps(
        {"baseUrl": live.url, "key": key, "evaluations": evaluations}), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def test_node_provider_agrees_with_the_in_process_client_on_every_case_and_10k_subjects(live: LiveServer) -> None:
    setup_flags(live)
    key = live.key("node-app")
    cases = [{"flag": f, "subject": s, "default": d} for f, s, d in [
        ("on_flag", "user-1", False), ("off_flag", "user-1", True), ("killed_flag", "vip", True),
        ("split_flag", "vip", False), ("split_flag", "bot", True), ("no_such_flag", "user-1", True), ("split_flag", None, True)]]
    cases += [{"flag": "split_flag", "subject": s, "default": False} for s in SUBJECTS]
    results = node_evaluate(live, key, cases)
    by_case = {(r["flag"], r["subject"]): r for r in results[:7]}
    assert (by_case["on_flag", "user-1"]["value"], by_case["on_flag", "user-1"]["reason"]) == (True, "STATIC")
    assert (by_case["off_flag", "user-1"]["value"], by_case["off_flag", "user-1"]["reason"]) == (False, "DISABLED")
    assert by_case["killed_flag", "vip"]["value"] is False
    assert (by_case["split_flag", "vip"]["value"], by_case["split_flag", "vip"]["reason"]) == (True, "TARGETING_MATCH")
    assert by_case["split_flag", "bot"]["value"] is False
    assert (by_case["no_such_flag", "user-1"]["value"], by_case["no_such_flag", "user-1"]["errorCode"]) == (True, "FLAG_NOT_FOUND")
    assert (by_case["split_flag", None]["value"], by_case["split_flag", None]["errorCode"]) == (True, "TARGETING_KEY_MISSING")
    client = in_process(live)
    try:
        mismatched = [r["subject"] for r in results[7:] if r["value"] != client.is_enabled("split_flag", r["subject"])]
        on = sum(r["value"] for r in results[7:])
    finally:
        client.close()
    assert mismatched == [] and 2_700 < on < 3_300  # a 30% rollout over 10k subjects
