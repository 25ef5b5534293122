"""PostgreSQL names by identity: a relation is its (schema, name) exactly as stored in the catalog.

A name written in SQL is folded to lower case unless it is quoted, so ``"Users"`` and ``users``
are two tables. Every scope entry polyshift prints, journals or stores is therefore the SQL
spelling of the identity (quoted where the name needs it), which ``to_regclass`` reads back to
the same relation, never to its lowercase twin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")


@cache
def _needs_quotes() -> frozenset[str]:
    # Unreserved keywords may stand unquoted, as PostgreSQL's own quote_ident() decides. pglast
    # (the SQL parser, ~20 ms to import) is loaded when a name is first spelled, not by every
    # command that opens a PostgreSQL store (issue 19).
    from pglast import keywords

    return frozenset(keywords.RESERVED_KEYWORDS | keywords.COL_NAME_KEYWORDS | keywords.TYPE_FUNC_NAME_KEYWORDS)


def quote_ident(name: str) -> str:
    """The SQL spelling of one identifier: bare when PostgreSQL would fold it back to itself."""
    if _PLAIN.match(name) and name not in _needs_quotes():
        return name
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, order=True)
class RelName:
    """A relation as a statement names it: ``schema`` is None when the search_path decides."""

    schema: str | None
    name: str

    @property
    def sql(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}" if self.schema else quote_ident(self.name)

    def __str__(self) -> str:
        return self.sql
