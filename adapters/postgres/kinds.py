"""The kinds this package serves: ``postgres`` and ``pgvector`` (PostgreSQL with vector checks).

Read by the kind registry when a config is loaded: imports no driver.
"""

from __future__ import annotations

import re
from typing import Any

from polyshift.framework.core.durations import DURATION_BOUNDS, HOUR, parse_duration
from polyshift.framework.core.errors import ConfigError
from polyshift.framework.core.kinds import Capability, StoreKind
from polyshift.framework.core.migration import ScriptLanguage

SQL = ScriptLanguage(extension="sql", comment="--", scope_example="table", nested_block_comments=True)
_CAPABILITIES = frozenset({Capability.SQL, Capability.ATOMIC_STEPS, Capability.WHOLE_SCOPE_COPY})


def _ef_search(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ConfigError(f"{where} {key}: expected a whole number from 1 to 1000 (pgvector's range), got {value!r}")
    return value


def _memory(where: str, key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not re.fullmatch(r"\d+\s*(kB|MB|GB|TB)?", str(value)):
        raise ConfigError(f"{where} {key}: expected a PostgreSQL memory size like '256MB', got {value!r}")
    return str(value)


LOCK_RETRY_MAX_ENTRIES = 100


def lock_retry_schedule(where: str, key: str, value: Any) -> tuple[tuple[float, float], ...]:
    """``lock_retry = ["100ms/50ms", "200ms/100ms"]``: each attempt's lock timeout and the sleep
    after it fails, the last entry repeating until ``retry_deadline``; ``false`` turns the
    schedule off (every attempt waits up to ``lock_timeout``). Returns seconds; () when off."""
    if value is False:
        return ()
    if not isinstance(value, list) or not value:
        raise ConfigError(f'{where} {key}: expected a list like ["100ms/50ms", "200ms/100ms"] (lock timeout/sleep per '
                          f"attempt), or false to turn it off, got {value!r}")
    if len(value) > LOCK_RETRY_MAX_ENTRIES:
        raise ConfigError(f"{where} {key}: at most {LOCK_RETRY_MAX_ENTRIES} entries (the last one repeats), got {len(value)}")
    schedule = []
    for number, entry in enumerate(value, 1):
        what = f"{where} {key} entry {number}"
        if not isinstance(entry, str) or entry.count("/") != 1:
            raise ConfigError(f'{what}: expected "lock timeout/sleep" like "200ms/100ms", got {entry!r}')
        timeout, sleep = entry.split("/")
        schedule.append((parse_duration(timeout, what=f"{what} lock timeout", bounds=DURATION_BOUNDS["lock_timeout"]),
                         parse_duration(sleep, what=f"{what} sleep", bounds=(0.0, HOUR))))
    return tuple(schedule)


POSTGRES = StoreKind(name="postgres", adapter="polyshift.adapters.postgres.adapter:PostgresAdapter", script=SQL,
                     server="postgres", default_port=5432, options={"lock_retry": lock_retry_schedule},
                     capabilities=_CAPABILITIES)
PGVECTOR = StoreKind(name="pgvector", adapter="polyshift.adapters.postgres.pgvector:PgvectorAdapter", script=SQL,
                     server="postgres", default_port=5432,
                     options={"maintenance_work_mem": _memory, "ef_search": _ef_search, "lock_retry": lock_retry_schedule},
                     capabilities=_CAPABILITIES)
KINDS = (POSTGRES, PGVECTOR)
