"""Fault injection for crash tests: ``POLYSHIFT_FAILPOINT=NAME:N`` sends SIGKILL to this process
right after it passes the point NAME for the N-th time, so a test can stop a run at every
recorded step the same way a lost host or ``kill -9`` would. Points: ``journal`` (each journal
write) and ``restore-batch`` (each batch of keys a Redis restore writes). Unset (always, outside
tests), nothing happens."""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def passed(point: str) -> None:
    spec = os.environ.get("POLYSHIFT_FAILPOINT", "")
    name, _, count = spec.partition(":")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)


def journal_written() -> None:
    passed("journal")
