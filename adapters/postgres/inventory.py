"""A readable account of a database's shape (for naming what differs between two fingerprints) and
the tables a scope's foreign keys lead to (for copying a scope into an empty database)."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg

from polyshift.adapters.postgres import catalog as cat
from polyshift.adapters.postgres.names import quote_ident

_KINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence"}
_INDEX_NAME = re.compile(r"INDEX (\S+) ON ")


def _column(attname: str, type_name: str, not_null: bool, default: str | None, identity: str, generated: str) -> str:
    parts = [type_name]
    if not_null:
        parts.append("NOT NULL")
    if default is not None:
        parts.append(("GENERATED ALWAYS AS " if generated else "DEFAULT ") + default)
    if identity:
        parts.append("IDENTITY")
    return " ".join(parts)


def inventory(conn: psycopg.Connection) -> dict[str, str]:
    """Every user relation, each followed by its columns, constraints, indexes and behaviour; then
    the enum and domain types. polyshift's ledger schema is left out, as in the fingerprint."""
    out: dict[str, str] = {}
    for name, described in cat.schema_descriptions(conn).items():
        kind, columns, constraints, indexes, viewdef, behaviour = _parts(described)
        out[f"{_KINDS.get(kind, 'relation')} {name}"] = "present"
        for column in columns:
            out[f"column {name}.{quote_ident(column[0])}"] = _column(*column)
        for conname, definition in constraints:
            out[f"constraint {quote_ident(conname)} on {name}"] = definition
        for definition in indexes:
            found = _INDEX_NAME.search(definition)
            out[f"index {found.group(1) if found else definition} on {name}"] = definition
        if viewdef is not None:
            out[f"definition of {name}"] = " ".join(str(viewdef).split())
        if any(part for part in behaviour[2:]) or behaviour[0] or behaviour[1]:
            out[f"triggers, policies and rules of {name}"] = json.dumps(behaviour, sort_keys=True, default=str)
    for type_name, typtype, labels in cat.user_types(conn):
        out[f"{'enum' if typtype == 'e' else 'domain'} {type_name}"] = json.dumps(labels)
    return out


def _parts(described: Any) -> tuple[str, list[Any], list[Any], list[str], str | None, list[Any]]:
    kind, columns, constraints, indexes, viewdef, behaviour = described
    return str(kind), list(columns or []), list(constraints or []), list(indexes or []), viewdef, list(behaviour or [])


def referenced(conn: psycopg.Connection, tables: list[cat.Table]) -> list[cat.Table]:
    """Tables outside ``tables`` that their foreign keys point at, and what those point at in turn."""
    if not tables:
        return []
    rows = conn.execute(
        """
        WITH RECURSIVE refs(oid) AS (
          SELECT co.confrelid FROM pg_constraint co
          WHERE co.contype = 'f' AND co.conrelid = ANY (%(tables)s::regclass[])
          UNION
          SELECT co.confrelid FROM pg_constraint co JOIN refs ON co.conrelid = refs.oid WHERE co.contype = 'f')
        SELECT n.nspname, c.relname FROM refs JOIN pg_class c ON c.oid = refs.oid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT (refs.oid = ANY (%(tables)s::regclass[])) ORDER BY 1, 2
        """,
        {"tables": [t.qualified for t in tables]},
    ).fetchall()
    return [cat.Table(schema, name) for schema, name in rows]
