"""The lifecycle vocabulary as the control plane keeps it: journaled steps, run statuses and the
ledger's direction words, read back the same by recover and by older ledgers."""

from __future__ import annotations

import pytest

from polyshift.framework.control.journal import Journal
from polyshift.framework.control.state import ControlPlane
from polyshift.framework.core.errors import StepFailed
from polyshift.framework.core.lifecycle import Direction, RunCommand, Step
from polyshift.framework.core.protocol import LedgerEntry


@pytest.fixture
def journal(control_plane_url: str) -> Journal:
    plane = ControlPlane(control_plane_url)
    return Journal(plane, plane.start_run(RunCommand.UP), "0001")


def _entries(journal: Journal) -> list[tuple[str, str, dict[str, object]]]:
    return [(e["step"], e["phase"], e["detail"]) for e in journal.state.journal_entries(journal.run_id)]


def test_a_step_that_completes_is_journaled_as_intent_then_done_with_its_detail(journal: Journal) -> None:
    with journal.step(Step.FORWARD, store="main") as entry:
        entry.done(duration_ms=5)
    assert _entries(journal) == [("forward", "intent", {}), ("forward", "done", {"duration_ms": 5})]


def test_a_step_that_raises_a_named_error_is_journaled_failed_with_the_error_and_the_error_goes_on(journal: Journal) -> None:
    with pytest.raises(StepFailed), journal.step(Step.ROLLBACK, store="main") as entry:
        entry.end_with(percent=10)
        raise StepFailed("syntax error at or near DROPP", step="rollback")
    assert _entries(journal)[-1] == ("rollback", "failed", {"percent": 10, "error": "syntax error at or near DROPP"})


def test_a_step_that_reports_failure_without_raising_is_journaled_failed(journal: Journal) -> None:
    with journal.step(Step.VALIDATE, store="main") as entry:
        entry.fail(failures=["count mismatch"])
    assert [(s, p) for s, p, _ in _entries(journal)] == [("validate", "intent"), ("validate", "failed")]


def test_a_crash_inside_a_step_leaves_only_its_intent_for_recover(journal: Journal) -> None:
    with pytest.raises(KeyboardInterrupt), journal.step(Step.FORWARD, store="main"):
        raise KeyboardInterrupt
    assert _entries(journal) == [("forward", "intent", {})]
    assert journal.state.journal_entries(journal.run_id)[0]["version"] == "0001"


@pytest.mark.parametrize(("word", "direction"), [("up", Direction.FORWARD), ("down", Direction.ROLLBACK),
                                                 ("forward", Direction.FORWARD), ("rollback", Direction.ROLLBACK)])
def test_ledger_words_old_and_new_read_as_one_direction(word: str, direction: Direction) -> None:
    assert Direction.from_ledger(word) is direction


def test_a_ledger_entry_holds_its_direction_as_the_enum_and_writes_the_stored_word() -> None:
    from datetime import UTC, datetime
    entry = LedgerEntry(1, "0001", "x", "sha", "down", "ci", datetime.now(UTC), 0, True, False, None)  # type: ignore[arg-type]
    assert entry.direction is Direction.ROLLBACK and entry.direction.ledger_word == "down"


def test_an_unknown_ledger_word_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'sideways'"):
        Direction.from_ledger("sideways")
