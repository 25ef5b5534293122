"""The kinds this package serves: ``postgres`` and ``pgvector`` (PostgreSQL with vector checks).

Read by the kind registry when a config is loaded: imports no driver.
"""

from __future__ import annotations

import re
from typing import Any

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


POSTGRES = StoreKind(name="postgres", adapter="polyshift.adapters.postgres.adapter:PostgresAdapter", script=SQL,
                     server="postgres", default_port=5432, capabilities=_CAPABILITIES)
PGVECTOR = StoreKind(name="pgvector", adapter="polyshift.adapters.postgres.pgvector:PgvectorAdapter", script=SQL,
                     server="postgres", default_port=5432,
                     options={"maintenance_work_mem": _memory, "ef_search": _ef_search}, capabilities=_CAPABILITIES)
KINDS = (POSTGRES, PGVECTOR)
