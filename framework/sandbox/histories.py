"""Real migration histories of public projects, for the adoption tests and the history benchmark.

Nothing of these projects is kept in this repository: the module is fetched at the pinned version
through the Go module proxy with ``go mod download``, which checks it against the Go checksum
database and caches it outside the repository (``go env GOMODCACHE``). A test therefore runs on
exactly the files the project published at that version, and cites them by module and version.

    python -m polyshift.framework.sandbox.histories fetch     # what 'make install' runs
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


class HistoryUnavailable(Exception):
    """The module cannot be fetched on this machine (no Go toolchain, no proxy)."""


@dataclass(frozen=True)
class PublicHistory:
    """One project's migration directory at a pinned, checksum-verified module version."""

    name: str
    module: str
    version: str
    directory: str  # inside the module
    tool: str  # the migration tool whose file layout the directory uses
    source: str  # where a reader finds the same files

    def cite(self) -> str:
        return f"{self.module}@{self.version}/{self.directory} ({self.source})"


# Ory Kratos keeps one file per SQL dialect per migration (gobuffalo/pop's layout, as used through
# ory/x popx): 273 PostgreSQL up/down pairs at v1.3.1, many of them intentionally empty
# placeholders for what only another dialect needed.
KRATOS = PublicHistory(
    name="kratos",
    module="github.com/ory/kratos",
    version="v1.3.1",
    directory="persistence/sql/migrations/sql",
    tool="pop",
    source="https://github.com/ory/kratos/tree/v1.3.1/persistence/sql/migrations/sql",
)

HISTORIES = {h.name: h for h in (KRATOS,)}


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if go is None:
        raise HistoryUnavailable("fetching a public history needs the Go toolchain ('go' on PATH)")
    return go


def fetch(history: PublicHistory = KRATOS) -> Path:
    """The history's migration directory, downloaded once and verified by the go command."""
    # Run outside any go.mod so the download is of the module alone, never a dependency graph.
    with tempfile.TemporaryDirectory(prefix="polyshift-history-") as scratch:
        env = {**os.environ, "GO111MODULE": "on", "GOFLAGS": "-mod=mod"}
        done = subprocess.run([_go(), "mod", "download", "-json", f"{history.module}@{history.version}"],
                              cwd=scratch, env=env, capture_output=True, text=True)
    try:
        info = json.loads(done.stdout) if done.stdout.strip() else {}
    except json.JSONDecodeError:
        info = {}
    if done.returncode != 0 or not info.get("Dir"):
        why = info.get("Error") or (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise HistoryUnavailable(f"go mod download {history.module}@{history.version} failed: {why}")
    path = Path(info["Dir"]) / history.directory
    if not path.is_dir():
        raise HistoryUnavailable(f"{history.cite()} has no directory {history.directory}")
    return path


def main(argv: list[str]) -> int:
    if argv[:1] != ["fetch"]:
        print("usage: python -m polyshift.framework.sandbox.histories fetch", file=sys.stderr)
        return 2
    for history in HISTORIES.values():
        try:
            print(f"{history.cite()}: {fetch(history)}")
        except HistoryUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
