"""The SQLite control plane appends through a write-ahead log, every commit synced before it returns.

A run commits its journal entry by entry (about 5,000 commits for a 315-migration history); in
SQLite's default rollback-journal mode each one created, synced and deleted a journal file.
"""

from __future__ import annotations

import stat
from pathlib import Path

from polyshift.framework.control.state import ControlPlane


def test_sqlite_control_plane_uses_a_write_ahead_log_with_full_sync(tmp_path: Path) -> None:
    plane = ControlPlane(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        plane.audit("test", "wal")
        with plane.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: durable at COMMIT
        wal = tmp_path / "state.db-wal"
        assert wal.exists()
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600  # as private as the database file
    finally:
        plane.close()
