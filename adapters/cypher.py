"""Cypher scripts: statement splitting, name escaping, and the little analysis a graph migration gets.

Statements are separated by ``;`` outside string literals, backtick-quoted names and comments.
Schema statements (indexes, constraints) are told apart because Neo4j requires them to run in
their own transactions, apart from data writes.
"""

from __future__ import annotations

import re

from framework.errors import MigrationLoadError
from framework.migration import Risk

_SCHEMA = re.compile(r"^\s*(CREATE|DROP)\s+(INDEX|CONSTRAINT|RANGE\s+INDEX|TEXT\s+INDEX|POINT\s+INDEX|FULLTEXT\s+INDEX|"
                     r"VECTOR\s+INDEX|LOOKUP\s+INDEX)\b", re.I)
_DESTRUCTIVE = re.compile(r"\b(DELETE|REMOVE|DROP)\b", re.I)
_CHANGES = re.compile(r"\b(SET|MERGE)\b", re.I)


def split(script: str, *, origin: str = "") -> list[str]:
    """Statements of a script, in order, without comments or empty statements."""
    out: list[str] = []
    current: list[str] = []
    i, n = 0, len(script)
    quote: str | None = None
    while i < n:
        c = script[i]
        if quote is not None:
            current.append(c)
            if c == "\\" and quote != "`" and i + 1 < n:
                current.append(script[i + 1])
                i += 2
                continue
            if c == quote:
                quote = None
            i += 1
            continue
        if c in "'\"`":
            quote = c
            current.append(c)
        elif script.startswith("//", i):
            end = script.find("\n", i)
            i = n if end == -1 else end
            continue
        elif script.startswith("/*", i):
            end = script.find("*/", i + 2)
            if end == -1:
                raise MigrationLoadError(f"{origin}: unterminated /* comment")
            i = end + 2
            continue
        elif c == ";":
            statement = "".join(current).strip()
            if statement:
                out.append(statement)
            current = []
        else:
            current.append(c)
        i += 1
    if quote is not None:
        raise MigrationLoadError(f"{origin}: unterminated {quote} quote")
    tail = "".join(current).strip()
    if tail:
        out.append(tail)
    return out


def is_schema(statement: str) -> bool:
    return bool(_SCHEMA.match(statement))


def risk(statements: list[str]) -> Risk:
    """C for anything that deletes, removes or drops; B for SET/MERGE; A for pure creation and reads."""
    text = "\n".join(_strip_strings(s) for s in statements)
    if _DESTRUCTIVE.search(text):
        return Risk.C
    if _CHANGES.search(text):
        return Risk.B
    return Risk.A


def _strip_strings(statement: str) -> str:
    return re.sub(r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"|`[^`]*`", "''", statement)


def name(identifier: str) -> str:
    """A label, relationship type or property key, backtick-quoted with embedded backticks doubled."""
    if not isinstance(identifier, str) or not identifier:
        raise MigrationLoadError(f"graph names must be non-empty strings, got {identifier!r}")
    return "`" + identifier.replace("`", "``") + "`"


def labels(names: list[str] | tuple[str, ...]) -> str:
    return "".join(":" + name(n) for n in names)
