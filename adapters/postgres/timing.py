"""Per-statement timings of a step, for rehearsals: the locks each statement takes (from the lock
hazard analysis of its text) and how long it holds them.

A lock taken inside a transaction is held until the transaction ends, so a statement's locks are
held from its start until its transaction commits; outside a transaction (``CONCURRENTLY``) only
while it runs. A transaction that fails or is retried leaves no timings: only what committed
would hold locks in production.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polyshift.framework.core.protocol import StatementTiming

if TYPE_CHECKING:
    from polyshift.adapters.postgres.analysis import Statement


@dataclass(frozen=True)
class _Ran:
    statement: Statement
    began: float
    ended: float


def _locks(statement: Statement) -> dict[str, str]:
    held = statement.locks.locks if statement.locks is not None else {}
    return {table: lock.label for table, lock in held.items()}


class StatementClock:
    def __init__(self) -> None:
        self.timings: list[StatementTiming] = []
        self._open: list[_Ran] = []

    def ran(self, statement: Statement, began: float, *, transactional: bool) -> None:
        ended = time.monotonic()
        if transactional:
            self._open.append(_Ran(statement, began, ended))
            return
        ms = (ended - began) * 1000
        self.timings.append(StatementTiming(statement.sql.strip(), _locks(statement), ms, ms, False))

    def committed(self) -> None:
        ended = time.monotonic()
        self.timings.extend(StatementTiming(r.statement.sql.strip(), _locks(r.statement), (r.ended - r.began) * 1000,
                                            (ended - r.began) * 1000, True) for r in self._open)
        self._open = []

    def abandoned(self) -> None:
        self._open = []
