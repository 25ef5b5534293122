"""Cypher scripts: statement splitting, name escaping, and what a migration's statements change.

Statements are separated by ``;`` outside string literals, backtick-quoted names and comments.
Schema statements (indexes, constraints) are told apart because Neo4j requires them to run in
their own transactions, apart from data writes; so is ``CALL { … } IN TRANSACTIONS``, which
commits batch by batch and must run in an auto-commit transaction.

``analyze`` reads, statement by statement, which existing nodes and relationships are deleted,
lose labels or properties (REMOVE), or are overwritten (SET, ON MATCH SET): their labels and
relationship types are the inferred backup scope, as tables are for SQL. A label a SET adds is
in the scope too, so a restore removes the relabelled nodes. Entities created in the same
statement lose nothing. What cannot be read with certainty (a variable with no label, a
procedure call that may write) is reported as unproven, and such a migration needs a declared
scope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from polyshift.framework.core.errors import MigrationLoadError
from polyshift.framework.core.migration import Risk

_SCHEMA = re.compile(r"^\s*(CREATE|DROP)\s+(INDEX|CONSTRAINT|RANGE\s+INDEX|TEXT\s+INDEX|POINT\s+INDEX|FULLTEXT\s+INDEX|"
                     r"VECTOR\s+INDEX|LOOKUP\s+INDEX)\b", re.I)
_SCHEMA_DROP = re.compile(r"^\s*DROP\b", re.I)
_IN_TRANSACTIONS = re.compile(r"\}\s*IN\s+(?:\d+\s+CONCURRENT\s+)?TRANSACTIONS\b", re.I)
_IDENT = r"(?:`(?:[^`]|``)+`|[A-Za-z_][A-Za-z0-9_]*)"
_NODE = re.compile(r"(?<![\w`])\(\s*(" + _IDENT + r")?\s*(:[^(){}]*?)?\s*(?=\{|\)|\bWHERE\b)", re.I)
_REL = re.compile(r"-\s*\[\s*(" + _IDENT + r")?\s*(:[^\[\]{}*]*?)?\s*(?:\*[^\]{]*)?(?=\{|\]|\bWHERE\b)", re.I)
_CLAUSE = re.compile(r"\b(OPTIONAL\s+MATCH|MATCH|MERGE|CREATE|ON\s+CREATE\s+SET|ON\s+MATCH\s+SET|SET|REMOVE|DETACH\s+DELETE|"
                     r"NODETACH\s+DELETE|DELETE|WHERE|WITH|UNWIND|RETURN|FOREACH|CALL|UNION|ORDER\s+BY|SKIP|LIMIT|YIELD|"
                     r"LOAD\s+CSV|FINISH)\b", re.I)
_PROCEDURE = re.compile(r"\bCALL\s+(" + _IDENT + r"(?:\s*\.\s*" + _IDENT + r")+)\s*(?:\(|$|\bYIELD\b)", re.I)
# Procedures that only read: anything else called from a migration may write where nothing shows.
_READ_ONLY_PROCEDURES = ("db.labels", "db.relationshiptypes", "db.propertykeys", "db.schema.", "db.index.fulltext.query",
                         "db.index.vector.query", "dbms.components", "db.info", "db.ping", "apoc.meta.", "apoc.help")


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


def in_transactions(statement: str) -> bool:
    """``CALL { … } IN TRANSACTIONS``: commits in batches, only from an auto-commit transaction."""
    return bool(_IN_TRANSACTIONS.search(_mask_strings(statement)))


def _mask_strings(statement: str) -> str:
    """String literals emptied (backtick-quoted names kept): nothing inside a string is Cypher."""
    return re.sub(r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"", "''", statement)


def _unquote(identifier: str) -> str:
    return identifier[1:-1].replace("``", "`") if identifier.startswith("`") else identifier


def _label_names(expression: str | None) -> set[str] | None:
    """Names in a label or type expression (``:A:B``, ``:A&B``, ``:A|B``): a superset of those an
    entity matched by it carries. None where it cannot be read (negation, wildcard, dynamic)."""
    if not expression:
        return set()
    if re.search(r"[!%$(]", re.sub(_IDENT, "x", expression)):
        return None
    return {_unquote(n) for n in re.findall(_IDENT, expression)}


@dataclass
class CypherStatement:
    """One statement, as ``analyze`` reads it."""

    text: str
    risk: Risk
    schema: bool = False
    in_transactions: bool = False
    touches: list[str] = field(default_factory=list)     # scope entries: labels and :TYPES it changes
    unproven: list[str] = field(default_factory=list)    # why its effect on existing data cannot be read


@dataclass
class _Entity:
    names: set[str] | None = field(default_factory=set)  # labels or types; None: unreadable
    relationship: bool = False
    created: bool = False                                  # first bound by CREATE in this statement
    neighbours: list[str] = field(default_factory=list)   # for a relationship: its endpoints' variables


def _clauses(text: str) -> list[tuple[str, int, int]]:
    """(clause keyword, start of its body, end of its body) in order."""
    found = [(" ".join(m.group(1).upper().split()), m.end()) for m in _CLAUSE.finditer(text)]
    starts = [m.start() for m in _CLAUSE.finditer(text)]
    return [(kw, body, starts[i + 1] if i + 1 < len(starts) else len(text)) for i, (kw, body) in enumerate(found)]


def _clause_at(clauses: list[tuple[str, int, int]], position: int) -> str:
    current = ""
    for keyword, body, _end in clauses:
        if body > position:
            break
        current = keyword
    return current


def _entities(text: str, clauses: list[tuple[str, int, int]]) -> dict[str, _Entity]:
    entities: dict[str, _Entity] = {}
    nodes = list(_NODE.finditer(text))
    for match in nodes:
        if re.search(r"\bCALL\s*$", text[:match.start()], re.I):
            continue  # CALL (x, y) { … }: a subquery's imported variables, not a pattern
        var, expression = match.group(1), match.group(2)
        names = _label_names(expression)
        if var is None:
            continue
        var = _unquote(var)
        entity = entities.get(var)
        if entity is None:
            entity = entities[var] = _Entity(names=set(), created=_clause_at(clauses, match.start()) == "CREATE")
        if names is None or entity.names is None:
            entity.names = None
        else:
            entity.names |= names
    for match in _REL.finditer(text):
        var = _unquote(match.group(1)) if match.group(1) else None
        names = _label_names(match.group(2))
        if var is None:
            continue
        entity = entities.get(var)
        if entity is None:
            entity = entities[var] = _Entity(names=set(), relationship=True,
                                             created=_clause_at(clauses, match.start()) == "CREATE")
        entity.relationship = True
        if names is None or entity.names is None:
            entity.names = None
        else:
            entity.names |= names
        left = next((n for n in reversed(nodes) if n.end() <= match.start() and
                     re.fullmatch(r"\)?\s*<?\s*", text[n.end():match.start()])), None)
        right_end = text.find("]", match.end())
        right = next((n for n in nodes if right_end != -1 and n.start() > right_end and
                      re.fullmatch(r"\]\s*-\s*>?\s*", text[right_end:n.start()])), None)
        entity.neighbours += [_unquote(n.group(1)) for n in (left, right) if n is not None and n.group(1)]
    return entities


def _items(body: str) -> list[str]:
    """A clause body split on its top-level commas, up to the end of its subquery, if any."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for c in body:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                break
        if c == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(c)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


def _shadowed(text: str) -> set[str]:
    """Variables bound afresh without a label inside a ``CALL { … }`` subquery that does not import
    them: the outer pattern's labels say nothing about what the subquery changes."""
    shadowed: set[str] = set()
    for match in re.finditer(r"\bCALL\s*(?:\(([^)]*)\))?\s*\{", text, re.I):
        depth, end = 1, match.end()
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        body = text[match.end():end - 1]
        imported = {_unquote(v) for v in re.findall(_IDENT, match.group(1) or "")}
        leading = re.match(r"\s*WITH\s+(.*?)(?=\b(?:MATCH|OPTIONAL|MERGE|CREATE|SET|DELETE|DETACH|REMOVE|WHERE|UNWIND|CALL|RETURN)\b)",
                           body, re.I | re.S)
        if leading:
            imported |= {_unquote(v) for v in re.findall(_IDENT, leading.group(1))}
        if "*" in (match.group(1) or ""):
            continue
        for pattern in (*_NODE.finditer(body), *_REL.finditer(body)):
            if pattern.group(1) and not pattern.group(2) and _unquote(pattern.group(1)) not in imported:
                shadowed.add(_unquote(pattern.group(1)))
    return shadowed


def analyze(statements: list[str]) -> list[CypherStatement]:
    return [_analyze(s) for s in statements]


def _analyze(statement: str) -> CypherStatement:
    if is_schema(statement):
        return CypherStatement(statement, Risk.B if _SCHEMA_DROP.match(statement) else Risk.A, schema=True)
    text = _mask_strings(statement)
    out = CypherStatement(statement, Risk.A, in_transactions=in_transactions(statement))
    clauses = _clauses(text)
    entities = _entities(text, clauses)
    for var in _shadowed(text):
        entities[var] = _Entity(names=set(), relationship=entities[var].relationship if var in entities else False)
    changed_existing = False

    def touch(var: str, added_labels: set[str] = frozenset(), what: str = "changes") -> None:  # type: ignore[assignment]
        nonlocal changed_existing
        entity = entities.get(var)
        if entity is not None and entity.created:
            return  # created by this very statement: nothing existed to lose
        changed_existing = True
        names = entity.names if entity is not None else None
        if entity is not None and entity.relationship and names == set():
            # An untyped relationship is backed up with its labelled endpoints (relationships touching scope nodes).
            ends = [entities[n].names for n in entity.neighbours if n in entities and not entities[n].relationship]
            names = set().union(*[e for e in ends if e]) if any(ends) and None not in ends else set()
            if names:
                out.touches.extend(n for n in sorted(names) if n not in out.touches)
                return
        if not names:
            out.unproven.append(f"it {what} `{var}`, whose {'type' if entity and entity.relationship else 'labels'} "
                                "the statement does not name")
            return
        prefix = ":" if entity is not None and entity.relationship else ""
        for n in sorted(names) + sorted(added_labels):
            if prefix + n not in out.touches:
                out.touches.append(prefix + n)

    for keyword, start, end in clauses:
        body = text[start:end]
        if keyword in ("DELETE", "DETACH DELETE", "NODETACH DELETE"):
            for item in _items(body):
                if re.fullmatch(_IDENT, item):
                    touch(_unquote(item), what="deletes")
                else:
                    changed_existing = True
                    out.unproven.append(f"it deletes `{item}`, an expression rather than a matched variable")
        elif keyword in ("SET", "ON MATCH SET", "REMOVE"):
            what = "removes from" if keyword == "REMOVE" else "overwrites"
            for item in _items(body):
                m = re.match(r"(" + _IDENT + r")\s*(:.*|\.|\+?=|\[|IS\b)", item, re.S | re.I)
                if m is None:
                    changed_existing = True
                    out.unproven.append(f"it {what} `{item[:40]}`, which is not a matched variable")
                    continue
                added = set()
                if m.group(2).startswith(":") or m.group(2).upper().startswith("IS"):
                    names = _label_names(m.group(2).lstrip(":").removeprefix("IS").removeprefix("is"))
                    if names is None:
                        changed_existing = True
                        out.unproven.append(f"it {what} labels of `{m.group(1)}` that the statement does not name")
                        continue
                    added = names
                touch(_unquote(m.group(1)), added, what)
    for match in _PROCEDURE.finditer(text):
        procedure = re.sub(r"[\s`]", "", match.group(1)).lower()
        if not procedure.startswith(_READ_ONLY_PROCEDURES):
            changed_existing = True
            out.unproven.append(f"it calls procedure {procedure}, whose writes the statement does not show")
    if changed_existing:
        out.risk = Risk.C
    elif re.search(r"\bMERGE\b", text, re.I):
        out.risk = Risk.B
    return out


def inferred_scope(analysed: list[CypherStatement]) -> list[str]:
    scope: list[str] = []
    for st in analysed:
        scope.extend(t for t in st.touches if t not in scope)
    return scope


def name(identifier: str) -> str:
    """A label, relationship type or property key, backtick-quoted with embedded backticks doubled."""
    if not isinstance(identifier, str) or not identifier:
        raise MigrationLoadError(f"graph names must be non-empty strings, got {identifier!r}")
    return "`" + identifier.replace("`", "``") + "`"


def labels(names: list[str] | tuple[str, ...]) -> str:
    return "".join(":" + name(n) for n in names)
