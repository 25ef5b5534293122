"""Serving when the store is gone, and the OpenFeature provider through the SDK's own client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from polyshift.feature_flags.admin import Change
from polyshift.feature_flags.openfeature_provider import PolyshiftProvider
from polyshift.framework.sandbox.servers import EmbeddedRedis
from tests.conftest import FlagProject


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    server.stop()


def test_client_keeps_serving_last_values_when_redis_stops_and_says_it_is_stale(tmp_path: Path, own_redis: EmbeddedRedis,
                                                                              state_url: str) -> None:
    flags = FlagProject(tmp_path, "redis", own_redis.url, refresh=0.1, state_url=state_url)
    flags.admin().change("checkout_v2", Change(enabled=True, percent=100, deny_add=("blocked",)), reason="r", create=True)
    with flags.client() as client:
        assert client.is_enabled("checkout_v2", "u1") is True and not client.stale
        own_redis.stop(remove=False)
        deadline = time.monotonic() + 10
        while not client.stale and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.stale
        assert "unreachable" in (client.last_error or "")
        # Last known values, evaluated exactly as before; nothing raises on the hot path.
        assert client.is_enabled("checkout_v2", "u1") is True
        assert client.is_enabled("checkout_v2", "blocked") is False
        assert client.is_enabled("unknown", default=True) is True

        own_redis.start()  # same port, empty: the flags are gone with the old process
        deadline = time.monotonic() + 10
        while client.stale and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.stale
        assert client.is_enabled("checkout_v2", "u1", default=False) is False  # reloaded: flag no longer exists


def test_client_started_while_the_store_is_down_serves_defaults(tmp_path: Path, own_redis: EmbeddedRedis, state_url: str) -> None:
    flags = FlagProject(tmp_path, "redis", own_redis.url, state_url=state_url)
    own_redis.stop(remove=False)
    with flags.client(background=False) as client:
        assert client.stale is True
        assert client.is_enabled("anything", "u", default=True) is True


def test_admin_changes_against_an_unreachable_store_exit_2(tmp_path: Path, own_redis: EmbeddedRedis, state_url: str) -> None:
    flags = FlagProject(tmp_path, "redis", own_redis.url, state_url=state_url)
    own_redis.stop(remove=False)
    result = flags.run("flags", "set", "x", "--create", "--on", "--reason", "r")
    assert result.exit_code == 2
    assert "unreachable" in result.stderr


@pytest.fixture
def openfeature_client(flags: FlagProject):  # type: ignore[no-untyped-def]
    admin = flags.admin()
    admin.change("split", Change(enabled=True, percent=50), reason="r", create=True)
    admin.change("listed", Change(enabled=True, percent=0, allow_add=("vip",)), reason="r", create=True)
    admin.change("off", Change(enabled=False), reason="r", create=True)
    admin.change("everyone", Change(enabled=True, percent=100), reason="r", create=True)
    client = flags.client(background=False)
    api.set_provider(PolyshiftProvider(client))
    yield api.get_client(), client
    api.shutdown()


def test_openfeature_resolves_booleans_with_reason_and_variant(openfeature_client) -> None:  # type: ignore[no-untyped-def]
    of, _ = openfeature_client
    subjects = [f"user-{i}" for i in range(2000)]
    details = [of.get_boolean_details("split", False, EvaluationContext(targeting_key=s)) for s in subjects]
    assert {d.reason for d in details} == {Reason.SPLIT}
    assert {d.variant for d in details} == {"on", "off"}
    assert all(d.value == (d.variant == "on") for d in details)
    assert 0.45 < sum(d.value for d in details) / len(details) < 0.55

    vip = of.get_boolean_details("listed", False, EvaluationContext(targeting_key="vip"))
    assert (vip.value, vip.reason, vip.variant) == (True, Reason.TARGETING_MATCH, "on")
    off = of.get_boolean_details("off", True, EvaluationContext(targeting_key="vip"))
    assert (off.value, off.reason) == (False, Reason.DISABLED)
    static = of.get_boolean_details("everyone", False)
    assert (static.value, static.reason) == (True, Reason.STATIC)
    assert of.get_boolean_value("split", False, EvaluationContext(targeting_key="user-1")) == details[1].value


def test_openfeature_unknown_flag_and_wrong_type_return_the_default_with_an_error_code(openfeature_client) -> None:  # type: ignore[no-untyped-def]
    of, _ = openfeature_client
    missing = of.get_boolean_details("nope", True)
    assert (missing.value, missing.error_code, missing.reason) == (True, ErrorCode.FLAG_NOT_FOUND, Reason.ERROR)
    wrong = of.get_string_details("split", "fallback")
    assert (wrong.value, wrong.error_code) == ("fallback", ErrorCode.TYPE_MISMATCH)


def test_openfeature_reports_stale_when_serving_last_known_values(tmp_path: Path, own_redis: EmbeddedRedis, state_url: str) -> None:
    flags = FlagProject(tmp_path, "redis", own_redis.url, state_url=state_url)
    flags.admin().change("checkout_v2", Change(enabled=True, percent=100), reason="r", create=True)
    client = flags.client(background=False)
    api.set_provider(PolyshiftProvider(client))
    try:
        own_redis.stop(remove=False)
        client.refresh()
        details = api.get_client().get_boolean_details("checkout_v2", False, EvaluationContext(targeting_key="u"))
        assert (details.value, details.reason) == (True, Reason.STALE)
    finally:
        api.shutdown()
