"""Taking a step's locks without stalling the application.

A statement waiting for a lock holds its place in the table's lock queue, and every query that
arrives after it waits behind it: an ``ALTER TABLE`` stuck behind one slow read transaction
freezes all traffic on the table for as long as it waits. So a transactional step waits for its
locks in short attempts (a small ``lock_timeout``), rolls back when one runs out, sleeps so the
queued queries drain, and tries the whole transaction again, with a slowly growing schedule,
until ``retry_deadline``. The application stalls for at most one attempt's lock timeout.

While an attempt runs, a second session asks the server who it waits for
(``pg_blocking_pids``), so a step that gives up names the sessions that kept it out.

Statements that must run outside a transaction (``CREATE INDEX CONCURRENTLY`` waits for old
transactions by design, ``VACUUM``) keep their single wait of ``lock_timeout``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import psycopg

from polyshift.framework.core.protocol import AttemptOutcome, LockAttempt
from polyshift.framework.core.secrets import redact

Schedule = tuple[tuple[float, float], ...]  # (lock timeout, sleep after a failed attempt), seconds

# Short enough that what queues behind a waiting attempt is a blip (GitLab's lock-retry helpers
# start at 100 ms); the sleeps grow so that behind a long blocker the table is queued at most a
# tenth of the time. The last entry repeats until retry_deadline.
DEFAULT_SCHEDULE: Schedule = ((0.1, 0.05), (0.1, 0.1), (0.15, 0.25), (0.2, 0.5), (0.2, 1.0), (0.2, 2.0))
# ``lock_retry = false``: every attempt waits up to lock_timeout, with these sleeps between.
_FALLBACK_SLEEPS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

RETRYABLE: dict[type[psycopg.Error], AttemptOutcome] = {
    psycopg.errors.LockNotAvailable: AttemptOutcome.LOCK_TIMEOUT,
    psycopg.errors.DeadlockDetected: AttemptOutcome.DEADLOCK,
    psycopg.errors.SerializationFailure: AttemptOutcome.SERIALIZATION,
}
RETRYABLE_ERRORS = tuple(RETRYABLE)

_POLL_SECONDS = 0.01

_BLOCKERS_SQL = """
SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), a.query_start, a.xact_start,
       coalesce(a.client_addr::text, 'local')
FROM pg_stat_activity a WHERE a.pid = ANY (pg_blocking_pids(%s)) ORDER BY a.pid
"""


def schedule_for(configured: Schedule | None, lock_timeout: float) -> Schedule:
    """The attempts a store's steps use: its ``lock_retry``, the default when it has none, or
    ``lock_timeout`` every time when it was turned off (``lock_retry = false``: an empty one)."""
    if configured is None:
        return DEFAULT_SCHEDULE
    if not configured:
        return tuple((lock_timeout, pause) for pause in _FALLBACK_SLEEPS)
    return configured


@dataclass(frozen=True)
class Blocker:
    """A session another session's lock request waits for."""

    pid: int
    application_name: str
    state: str
    query_start: datetime | None
    xact_start: datetime | None
    client: str

    def describe(self) -> str:
        def at(moment: datetime | None) -> str:
            return f"{moment:%Y-%m-%d %H:%M:%S %Z}".strip() if moment else "unknown"

        app = redact(self.application_name) or "(no application_name)"
        return (f"pid {self.pid} ({app!r} from {self.client}, state {self.state or 'unknown'}, "
                f"query started {at(self.query_start)}, transaction open since {at(self.xact_start)})")


class BlockerWatch:
    """Asks, from a session of its own, which sessions the watched backend waits for, every 10 ms
    while an attempt runs. ``connect`` opens that session the first time an attempt is still
    running after 10 ms, so a step that gets its locks at once costs nothing more."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self._conn: psycopg.Connection | None = None

    @contextmanager
    def watching(self, backend_pid: int) -> Iterator[dict[int, Blocker]]:
        """Sessions seen blocking ``backend_pid`` during the ``with`` block (complete when it ends)."""
        stop = threading.Event()
        found: dict[int, Blocker] = {}
        failed: list[BaseException] = []

        def poll() -> None:
            try:
                while not stop.wait(_POLL_SECONDS):
                    if self._conn is None or self._conn.closed:
                        self._conn = self._connect()
                    for row in self._conn.execute(_BLOCKERS_SQL, (backend_pid,)).fetchall():
                        found[row[0]] = Blocker(*row)
            except BaseException as exc:  # the watch is an aid: losing it must not fail the step
                failed.append(exc)

        thread = threading.Thread(target=poll, name=f"polyshift-blockers-{backend_pid}", daemon=True)
        thread.start()
        try:
            yield found
        finally:
            stop.set()
            thread.join()
            if failed:
                self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None


class LocksNotAcquired(Exception):
    """Every attempt ran out of lock timeout (or deadlocked) before ``retry_deadline``.

    Internal to the adapter, which turns it into a StepFailed naming the step."""

    def __init__(self, attempts: list[LockAttempt], cause: psycopg.Error, blockers: list[Blocker], deadline: float) -> None:
        super().__init__(f"gave up after {len(attempts)} attempts")
        self.attempts = attempts
        self.cause = cause
        self.blockers = blockers
        self.deadline = deadline

    def describe(self) -> str:
        timeouts = sorted({a.lock_timeout_ms for a in self.attempts})
        span = f"{timeouts[0]} ms" if len(timeouts) == 1 else f"{timeouts[0]} to {timeouts[-1]} ms"
        sqlstate = f"SQLSTATE {self.cause.sqlstate}" if self.cause.sqlstate else type(self.cause).__name__
        who = ("; blocked by " + "; ".join(b.describe() for b in self.blockers)) if self.blockers \
            else "; no blocking session was seen (it may have gone between attempts)"
        return (f"could not get its locks without stalling the application: {len(self.attempts)} attempts with a "
                f"{span} lock timeout within retry_deadline {self.deadline:g}s ({sqlstate}){who}")


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def run_in_attempts(attempt: Callable[[float], None], *, schedule: Schedule, deadline: float, backend_pid: Callable[[], int],
                    watch: BlockerWatch, report: Callable[[LockAttempt], None],
                    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """Run ``attempt(lock_timeout)`` (one whole transaction, rolled back when it raises) until it
    commits; returns the number of attempts. A lock timeout, deadlock or serialization failure
    is retried after the schedule's sleep (cut short at the deadline) until ``deadline`` seconds
    have passed since the first attempt began; then LocksNotAcquired. The last attempt may end
    up to one lock timeout after the deadline. Every attempt is reported, the one that commits too."""
    started = clock()
    attempts: list[LockAttempt] = []
    seen: dict[int, Blocker] = {}
    number = 0
    while True:
        number += 1
        timeout, pause = schedule[min(number - 1, len(schedule) - 1)]
        began = clock()
        try:
            with watch.watching(backend_pid()) as blockers:
                attempt(timeout)
        except RETRYABLE_ERRORS as exc:
            seen.update(blockers)
            remaining = deadline - (clock() - started)
            give_up = remaining <= 0
            pause = min(pause, max(remaining, 0.0))
            outcome = next(o for cls, o in RETRYABLE.items() if isinstance(exc, cls))
            record = LockAttempt(number, _ms(timeout), _ms(clock() - began), outcome, _ms(pause),
                                 tuple(b.describe() for b in blockers.values()))
            attempts.append(record)
            report(record)
            if give_up:
                # The sessions of the last attempt, or of any earlier one when it saw none.
                raise LocksNotAcquired(attempts, exc, list(blockers.values()) or list(seen.values()), deadline) from None
            sleep(pause)
            continue
        report(LockAttempt(number, _ms(timeout), _ms(clock() - began), AttemptOutcome.ACQUIRED))
        return number
