"""Runs that change stores and the ones that did not finish.

Every command that changes a store (a release, a rollback, a restore) records a run in the
control plane and journals each step as intent before it and done/failed after. A run whose
process died mid-way stays unfinished until ``polyshift recover`` has brought its stores to a
consistent end; until then no other command may change a store underneath it.
"""

from __future__ import annotations

from typing import Any

from polyshift.framework.control.state import ControlPlane
from polyshift.framework.core.errors import LockHeldError, RefusedError
from polyshift.framework.core.lifecycle import BEGAN_CHANGING, CHANGING_COMMANDS, Phase, RunCommand, Step


def describe_run(run: dict[str, Any]) -> str:
    """The run and the runner driving it: host, pid and CI job where it recorded them."""
    runner = run.get("runner") or f"{run['host']} pid={run['pid']}"
    return f"run {run['id'][:8]} ({run['command']} by {run['actor']} on {runner}, started {run['started_at']:%Y-%m-%d %H:%M:%S})"


def midway(run: dict[str, Any]) -> str:
    """What a store is in the middle of while ``run`` is unfinished."""
    return {RunCommand.ROLLBACK: "mid-rollback", RunCommand.RESTORE: "mid-restore"}.get(run["command"], "mid-release")


def run_stores(run: dict[str, Any], every: list[str]) -> list[str]:
    """The stores a run locked (every store for runs that did not record them)."""
    stores = run["detail"].get("stores")
    return [s for s in every if s in stores] if isinstance(stores, list) else list(every)


def refuse_unfinished(state: ControlPlane, then: str) -> None:
    """Refuse (exit 2) while a run that changes stores did not finish: its stores may be half-way,
    and only recover may go on from there. ``then`` is the command to run again afterwards."""
    for run in state.unfinished_runs(CHANGING_COMMANDS):
        began = any(e["step"] in BEGAN_CHANGING for e in state.journal_entries(run["id"]))
        if not state.run_is_alive(run):
            stores = run["detail"].get("stores")
            where = f"store(s) {', '.join(stores)}" if isinstance(stores, list) and stores else "its stores"
            raise RefusedError(f"{describe_run(run)} did not finish: {where} may be {midway(run)}",
                               hint=f"run 'polyshift recover' to finish or undo it, then '{then}' again")
        if began:
            # Alive and past its preflight (or a recover waiting out a dead runner's locks):
            # its stores are spoken for even where a lock has lapsed.
            raise LockHeldError(f"the stores are locked by another polyshift run: {describe_run(run)}",
                                hint="wait for it to finish")


def lock_holders(state: ControlPlane, every: list[str]) -> dict[str, str]:
    """Per store, who holds its lock as the control plane knows it: a live run that journaled
    taking it, named with the runner that took it (host, pid, CI job)."""
    found: dict[str, str] = {}
    for run in state.unfinished_runs(CHANGING_COMMANDS):
        if not state.run_is_alive(run):
            continue
        for entry in state.journal_entries(run["id"]):
            store = entry["store"]
            if (entry["step"], entry["phase"]) == (Step.LOCK, Phase.DONE) and store in every and store not in found:
                runner = entry.get("runner") or run.get("runner") or f"{run['host']} pid={run['pid']}"
                found[store] = (f"{runner} (run {run['id'][:8]}, {run['command']} by {run['actor']}, "
                                f"locked at {entry['at']:%Y-%m-%d %H:%M:%S})")
    return found


def interruptions(state: ControlPlane, every: list[str]) -> dict[str, str]:
    """Per store, the unfinished run that concerns it, as ``status`` reports it."""
    found: dict[str, str] = {}
    for run in state.unfinished_runs(CHANGING_COMMANDS):
        if state.run_is_alive(run):
            text = f"{run['command']} in progress: {describe_run(run)}"
        else:
            text = f"{midway(run)}: {describe_run(run)} did not finish; run 'polyshift recover'"
        for store in run_stores(run, every):
            found.setdefault(store, text)
    return found
