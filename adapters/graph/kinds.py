"""The graph kinds: ``neo4j`` (Neo4j 5 and newer over Bolt) and ``falkordb`` (its native protocol).

Read by the kind registry when a config is loaded: imports no driver.
"""

from __future__ import annotations

from typing import Any

from polyshift.framework.core.errors import ConfigError
from polyshift.framework.core.kinds import Capability, StoreKind, duration, text
from polyshift.framework.core.migration import ScriptLanguage

CYPHER = ScriptLanguage(extension="cypher", comment="//", scope_example="Label,:TYPE", nested_block_comments=False)


def _database(where: str, key: str, value: Any) -> str:
    name = text(where, key, value)
    if name.lower() == "system":
        raise ConfigError(f"{where} database = \"system\" is Neo4j's own catalogue of users and databases; polyshift "
                          "migrates user databases", hint='use "neo4j" or a database you created')
    return name


NEO4J = StoreKind(name="neo4j", adapter="polyshift.adapters.graph.neo4j:Neo4jAdapter", script=CYPHER,
                  server="neo4j", default_port=7687, options={"user": text, "database": _database, "lock_ttl": duration},
                  capabilities=frozenset({Capability.ATOMIC_STEPS, Capability.EXPIRING_LOCK}), password_needs_user=True)
FALKORDB = StoreKind(name="falkordb", adapter="polyshift.adapters.graph.falkordb:FalkorAdapter", script=CYPHER,
                     server="redis", default_port=6379, options={"graph": text, "lock_ttl": duration},
                     capabilities=frozenset({Capability.EXPIRING_LOCK}))
KINDS = (NEO4J, FALKORDB)
