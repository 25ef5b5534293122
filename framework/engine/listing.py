"""`polyshift releases`: every release with its state per store, its flag and its last run."""

from __future__ import annotations

from typing import Any

from polyshift.framework.control.runs import describe_run
from polyshift.framework.core.errors import PolyshiftError
from polyshift.framework.core.lifecycle import RELEASE_COMMANDS, Phase, Step
from polyshift.framework.core.status import applied_entries
from polyshift.framework.engine.recovery import Recovery
from polyshift.framework.engine.session import Session


def release_listing(session: Session) -> list[dict[str, Any]]:
    """Every release with its state per store, its flag and how its last run ended."""
    names = list(session.project.config.stores)
    recovery = Recovery(session)
    applied: dict[str, set[str] | None] = {}
    for name in names:
        try:
            with session.runner.adapter(name) as adapter:
                applied[name] = set(applied_entries(adapter.ledger()))
        except PolyshiftError:
            applied[name] = None
    journal = session.project.state.journal_entries()
    interrupted = {}
    for run in session.project.state.unfinished_runs(RELEASE_COMMANDS):
        replay = recovery.replay(run["id"])
        if replay is not None:
            alive = session.project.state.run_is_alive(run)
            interrupted[replay.version] = ("in progress: " if alive else "interrupted, run 'polyshift recover': ") + describe_run(run)
    rows = []
    for rel in session.releases(names):
        ends = [e for e in journal if e["version"] == rel.version and e["step"] in (Step.RELEASE, Step.COMPLETE, Step.UNDO, Step.STAGE)]
        stores = {}
        for store in rel.order:
            if store in rel.migrations:
                done = applied[store]
                stores[store] = "unreachable" if done is None else ("applied" if rel.version in done else "pending")
        flag = rel.settings.flag
        flag_state = None
        if flag:
            try:
                f = session.flags().store.get(flag)
                flag_state = "absent" if f is None else ("killed" if f.killed else f"{f.percent:g}%" if f.enabled else "off")
            except PolyshiftError:
                flag_state = "unreachable"
        rows.append({"version": rel.version, "stores": stores, "flag": flag, "flag_state": flag_state,
                     "stages": list(rel.settings.stages) if flag else [],
                     "last": interrupted.get(rel.version) or _last_state(ends)})
    return rows


def _last_state(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "never run"
    e = entries[-1]
    return _LAST_STATES.get((e["step"], e["phase"]), f"in progress ({e['step']} {e['phase']})")


_LAST_STATES: dict[tuple[str, str], str] = {
    (Step.COMPLETE, Phase.DONE): "completed",
    (Step.UNDO, Phase.DONE): "rolled back",
    (Step.UNDO, Phase.FAILED): "undo unverified: run recover",
    (Step.RELEASE, Phase.ABANDONED): "abandoned (nothing changed)",
    (Step.UNDO, Phase.INTENT): "undoing",
}
