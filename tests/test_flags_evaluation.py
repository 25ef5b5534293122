"""Flag evaluation: kill → deny → allow → disabled → percentage, sticky and uniform buckets."""

from __future__ import annotations

import logging

from polyshift.feature_flags.admin import Change
from tests.conftest import FlagProject

SUBJECTS = [f"user-{i}" for i in range(100_000)]


def _set(flags: FlagProject, name: str, **change: object) -> None:
    flags.admin().change(name, Change(**change), reason="test", create=True)  # type: ignore[arg-type]


def test_thirty_percent_of_100k_subjects_are_on_within_one_percent(flags: FlagProject) -> None:
    _set(flags, "checkout_v2", enabled=True, percent=30)
    with flags.client(background=False) as client:
        on = sum(client.is_enabled("checkout_v2", s) for s in SUBJECTS)
    assert abs(on / len(SUBJECTS) - 0.30) <= 0.01, on


def test_raising_the_percentage_never_turns_a_subject_off(flags: FlagProject) -> None:
    previous: set[str] = set()
    with flags.client(background=False) as client:
        for percent in (10, 50, 100):
            _set(flags, "search_v2", enabled=True, percent=percent)
            client.refresh()
            on = {s for s in SUBJECTS[:20_000] if client.is_enabled("search_v2", s)}
            assert previous <= on, f"{len(previous - on)} subjects turned off at {percent}%"
            assert abs(len(on) / 20_000 - percent / 100) <= 0.015
            previous = on
    assert len(previous) == 20_000


def test_two_flags_bucket_independently(flags: FlagProject) -> None:
    _set(flags, "flag_a", enabled=True, percent=50)
    _set(flags, "flag_b", enabled=True, percent=50)
    with flags.client(background=False) as client:
        both = sum(client.is_enabled("flag_a", s) and client.is_enabled("flag_b", s) for s in SUBJECTS)
    assert abs(both / len(SUBJECTS) - 0.25) <= 0.01, both  # P(A and B) = P(A) P(B)


def test_kill_switch_beats_the_allow_list(flags: FlagProject) -> None:
    _set(flags, "beta", enabled=True, percent=100, allow_add=("vip",))
    with flags.client(background=False) as client:
        assert client.is_enabled("beta", "vip") is True
        flags.admin().kill("beta", reason="incident")
        client.refresh()
        assert client.is_enabled("beta", "vip") is False
        assert client.evaluate("beta", "vip").detail == "kill switch"


def test_deny_list_beats_allow_list_and_allow_list_beats_disabled(flags: FlagProject) -> None:
    _set(flags, "beta", enabled=False, allow_add=("alice", "mallory"), deny_add=("mallory",))
    with flags.client(background=False) as client:
        assert client.is_enabled("beta", "alice") is True
        assert client.is_enabled("beta", "mallory") is False
        assert client.is_enabled("beta", "bob") is False


def test_without_a_subject_a_partial_rollout_is_off_and_full_rollout_is_on(flags: FlagProject) -> None:
    _set(flags, "partial", enabled=True, percent=50)
    _set(flags, "full", enabled=True, percent=100)
    _set(flags, "none", enabled=True, percent=0)
    with flags.client(background=False) as client:
        assert client.is_enabled("partial") is False
        assert client.evaluate("partial").detail == "partial rollout without a subject"
        assert client.is_enabled("full") is True
        assert client.is_enabled("none", "anyone") is False


def test_unknown_flag_returns_the_default_and_is_reported_once(flags: FlagProject, caplog) -> None:  # type: ignore[no-untyped-def]
    with flags.client(background=False) as client, caplog.at_level(logging.WARNING, logger="polyshift.flags"):
        assert client.is_enabled("no_such_flag", "u1", default=True) is True
        assert client.is_enabled("no_such_flag", "u2", default=False) is False
        assert client.is_enabled("no_such_flag") is False
    assert [r.getMessage() for r in caplog.records].count(
        f"flag 'no_such_flag' is not defined in {client._store.description}; returning the caller's default") == 1
    assert client.unknown_flags == {"no_such_flag"}


def test_buckets_are_sticky_across_clients_and_processes(flags: FlagProject) -> None:
    _set(flags, "sticky", enabled=True, percent=37)
    with flags.client(background=False) as a, flags.client(background=False) as b:
        assert [a.is_enabled("sticky", s) for s in SUBJECTS[:5000]] == [b.is_enabled("sticky", s) for s in SUBJECTS[:5000]]
