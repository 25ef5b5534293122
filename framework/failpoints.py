"""Fault injection for crash tests: ``POLYSHIFT_FAILPOINT=journal:N`` sends SIGKILL to this
process right after its N-th journal write, so a test can stop the runner at every recorded step
the same way a lost host or ``kill -9`` would. Unset (always, outside tests), it does nothing."""

from __future__ import annotations

import os
import signal

_count = 0


def journal_written() -> None:
    global _count
    spec = os.environ.get("POLYSHIFT_FAILPOINT", "")
    if not spec.startswith("journal:"):
        return
    _count += 1
    if _count == int(spec.split(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)
