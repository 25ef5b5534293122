"""What the benchmarks share: running a contender as its own process and measuring it."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path


def user_env(**extra: str) -> dict[str, str]:
    """The environment a contender runs in, as on a user's machine: bytecode is cached after the
    first run. A sandbox that sets PYTHONDONTWRITEBYTECODE would otherwise make every run of a
    Python CLI compile its own modules again (about 180 ms for polyshift's status here)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return env | extra


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB (wait4 of that process alone), and its stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{cmd[0]} failed ({os.waitstatus_to_exitcode(status)}): {err.read().decode()[-2000:]}")
        return elapsed, usage.ru_maxrss / 1024, out.read().decode()


def write_results(path: Path, title: str, command: str, table: str, *, suffix: str = "") -> None:
    """Write a results file, keeping its hand-written ``## Notes`` section when it is regenerated."""
    notes = ""
    if path.exists():
        text = path.read_text()
        if "\n## Notes" in text:
            notes = text[text.index("\n## Notes"):]
    path.write_text(f"# {title}\n\n`{command}`{suffix}\n\n{table}\n{notes}")
