"""One control-plane client in its own process, for the concurrency tests (tests/test_control_plane.py).

    python -m tests.cp_worker ROLE URL BARRIER [ARGS...]

Each worker announces itself (``BARRIER/ready-<pid>``), waits until the test creates
``BARRIER/go`` so that every worker starts its work at the same moment, does it and prints one
JSON line. An error is printed as JSON too (``{"error": ...}``) with exit code 1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _wait_for_go(barrier: Path) -> None:
    (barrier / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal within 120 s")
        time.sleep(0.005)


def first_use(url: str) -> dict[str, Any]:
    from polyshift.framework.control.state import ControlPlane
    from polyshift.framework.core.lifecycle import RunCommand

    plane = ControlPlane(url)
    run = plane.start_run(RunCommand.UP)
    plane.audit("test.first_use", f"run:{run}")
    return {"run": run}


def audit(url: str, count: str) -> dict[str, Any]:
    from polyshift.framework.control.state import ControlPlane

    plane = ControlPlane(url)
    seqs = [plane.audit("test.append", f"pid:{os.getpid()}", {"n": n}).seq for n in range(int(count))]
    return {"seqs": seqs}


def claim(url: str, run_id: str) -> dict[str, Any]:
    """Every claimer read the run as it was before any of them claimed it (read before the go)."""
    from polyshift.framework.control.state import ControlPlane

    plane = ControlPlane(url)
    run = next(r for r in plane.unfinished_runs() if r["id"] == run_id)
    _wait_for_go(BARRIER)
    return {"claimed": plane.claim_run(run)}


def flag_increment(url: str, count: str) -> dict[str, Any]:
    """``count`` read-modify-write increments of one flag's percentage, retried on conflict."""
    from dataclasses import replace

    from polyshift.feature_flags.sql_store import SqlFlagStore
    from polyshift.feature_flags.stores import ConflictError

    store = SqlFlagStore(url)
    conflicts = 0
    for _ in range(int(count)):
        while True:
            flag = store.get("shared")
            assert flag is not None
            try:
                store.save(replace(flag, percent=flag.percent + 1, version=flag.version + 1), expected_version=flag.version)
                break
            except ConflictError:
                conflicts += 1
    return {"conflicts": conflicts}


def flag_create(url: str) -> dict[str, Any]:
    from polyshift.feature_flags.model import Flag
    from polyshift.feature_flags.sql_store import SqlFlagStore
    from polyshift.feature_flags.stores import ConflictError

    store = SqlFlagStore(url)
    try:
        store.save(Flag(name=f"f{os.getpid()}", enabled=True), expected_version=None)
    except ConflictError:
        return {"created": False}
    return {"created": True}


ROLES: dict[str, Callable[..., Any]] = {
    "first-use": first_use, "audit": audit, "claim": claim, "flag-increment": flag_increment, "flag-create": flag_create,
}


BARRIER = Path()
SETS_UP_FIRST = {"claim"}  # roles that read before the go signal and wait for it themselves


def main() -> None:
    global BARRIER
    role, url, barrier, *args = sys.argv[1:]
    BARRIER = Path(barrier)
    if role not in SETS_UP_FIRST:
        _wait_for_go(BARRIER)
    try:
        result = ROLES[role](url, *args)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        raise SystemExit(1) from None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
