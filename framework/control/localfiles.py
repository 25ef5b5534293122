"""polyshift's own files on the local disk are private: directories it creates are 0700, the
control-plane database and the events log are 0600 (backups: see ``polyshift.framework.control.artifacts``).

A directory that already exists keeps its mode: it may be the user's (``state_url =
"sqlite:///state.db"`` puts the database in the project root). A file that already exists is
tightened to 0600, so files an earlier version left readable by everyone are fixed by the next run.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import IO

log = logging.getLogger("polyshift.files")


def private_dir(path: Path) -> None:
    """``path`` and its missing parents, each created 0700 (whatever the umask)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)


def _tighten(fd: int, path: Path) -> None:
    if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
        try:
            os.fchmod(fd, 0o600)
        except OSError as exc:  # another user's file that we may write through its group: say so, go on
            log.warning("%s is readable by others and cannot be made private: %s", path, exc.strerror)


def private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 if it is missing; make it 0600 if it exists.

    A file that exists is never opened, only looked at and chmod-ed by its path: SQLite's locks are
    POSIX locks, and a process loses all of them on a file when it closes any descriptor of it. An
    open-and-close of the control-plane database beside a live connection of this process dropped
    that connection's shared lock; in WAL mode another process then took the database for its own
    on closing, checkpointed and deleted the log under the first one, which lost rows and
    corrupted the file (seen with ``polyshift serve`` and the CLI on one SQLite control plane)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            try:
                os.chmod(path, 0o600)
            except OSError as exc:  # another user's file that we may write through its group: say so, go on
                log.warning("%s is readable by others and cannot be made private: %s", path, exc.strerror)
        return
    os.close(fd)  # new: no connection of this process can hold a lock on it yet


def append_private(path: Path) -> IO[str]:
    """``path`` opened for appending text, created 0600 (and made 0600 if it exists)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    _tighten(fd, path)
    return os.fdopen(fd, "a", encoding="utf-8")
