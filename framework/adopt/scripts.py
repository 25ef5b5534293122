"""Checks every imported script gets, whatever its source tool: empty steps become explicit
noops, a BEGIN/COMMIT pair wrapping a whole SQL script is dropped (polyshift runs each step in
one transaction itself, and refuses transaction control inside it), any other transaction
control or a script PostgreSQL cannot parse is a problem naming the line."""

from __future__ import annotations

import re

import pglast
from pglast import ast
from pglast.enums import TransactionStmtKind

from polyshift.framework.adopt.model import ImportedMigration, Issue, Language, Problem, Script
from polyshift.framework.core.loader import has_statements

_OPENERS = {TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START}
_CLOSERS = {TransactionStmtKind.TRANS_STMT_COMMIT, TransactionStmtKind.TRANS_STMT_ROLLBACK}
# cypher-shell commands (":begin", ":commit", ":use db", ":param"): not Cypher, and the driver refuses them.
_SHELL_COMMAND = re.compile(r"^\s*(:[a-z]+)\b", re.IGNORECASE | re.MULTILINE)


def _line(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _after_semicolon(data: bytes, end: int) -> int:
    """Offset just past the ';' ending a statement that ends at ``end`` (or ``end`` if none)."""
    match = re.compile(rb"\s*;").match(data, end)
    return match.end() if match else end


def _span(data: bytes, raw: ast.RawStmt) -> tuple[int, int]:
    """Byte offsets of a statement without its ';' (a length of 0 means: to the end of the text)."""
    start = raw.stmt_location or 0
    return start, start + (raw.stmt_len or len(data) - start)


def check_script(m: ImportedMigration, step: str, script: Script, language: Language) -> None:
    """Prepare ``script`` (one step of ``m``) in place, adding notes and problems to ``m``."""
    if not has_statements(script.text, language.script):
        if step == "validate":
            return  # an empty check checks nothing; the writer leaves it out and says so
        script.noop = True
        m.notes.append(f"{script.source} has no statements: written with '{language.comment} polyshift: noop'")
        return
    if language is Language.SQL:
        if not any(p.source == script.source and p.issue is Issue.TEMPLATING for p in m.problems):
            _check_sql(m, step, script)  # templated SQL does not parse until its tool substitutes it
    else:
        for match in _SHELL_COMMAND.finditer(script.text):
            line = script.text.count("\n", 0, match.start()) + 1
            m.problems.append(Problem(script.source, Issue.UNSUPPORTED,
                                      f"line {line}: '{match.group(1)}' is a cypher-shell command, not Cypher"))


def _check_sql(m: ImportedMigration, step: str, script: Script) -> None:
    data = script.text.encode()
    try:
        statements = pglast.parse_sql(script.text)
    except pglast.parser.ParseError as exc:
        where = f"line {_line(data, int(exc.args[1]))}: " if len(exc.args) > 1 and isinstance(exc.args[1], int) else ""
        m.problems.append(Problem(script.source, Issue.NOT_PARSED, f"{where}not PostgreSQL that polyshift can read: {exc.args[0]}"))
        return
    control = [(i, s) for i, s in enumerate(statements) if isinstance(s.stmt, ast.TransactionStmt)]
    if not control:
        return
    first, last = statements[0], statements[-1]
    wrapped = (len(control) == 2 and control[0][0] == 0 and control[1][0] == len(statements) - 1
               and first.stmt.kind in _OPENERS and last.stmt.kind in _CLOSERS)  # type: ignore[union-attr]
    if wrapped:
        (begin_start, begin_stop), (close_start, close_stop) = _span(data, first), _span(data, last)
        begin_end, close_end = _after_semicolon(data, begin_stop), _after_semicolon(data, close_stop)
        kept = data[:begin_start] + data[begin_end:close_start] + data[close_end:]
        closer = data[close_start:close_end].decode().strip()
        script.text = kept.decode()
        m.notes.append(f"{script.source}: the wrapping '{data[begin_start:begin_end].decode().strip()}' … "
                       f"'{closer}' removed (polyshift runs the {step} step in one transaction)")
        if not has_statements(script.text, Language.SQL.script):
            script.noop = True
        return
    for _, raw in control:
        start, stop = _span(data, raw)
        text = data[start:stop].decode().strip()
        m.problems.append(Problem(script.source, Issue.TRANSACTION_CONTROL,
                                  f"line {_line(data, start)}: '{text}' controls the transaction inside the script; "
                                  "polyshift runs each step in one transaction (split the migration where it commits)"))


def check_migration(m: ImportedMigration, language: Language) -> None:
    for step, script in (("forward", m.forward), ("rollback", m.rollback), ("validate", m.validate)):
        if script is not None:
            check_script(m, step, script, language)
    if m.rollback is not None and m.rollback.noop and not m.forward.noop:
        # Kept as the source tool runs it (an empty down does nothing, there as here), not made
        # irreversible: histories split one change over several versions and undo the whole group
        # in the first version's down, leaving the others' downs empty on purpose.
        m.warnings.append(f"{m.rollback.source} is empty but {m.forward.source} changes something: rolling back "
                          f"{m.version} undoes nothing of it (another version's down may undo it; if none does, "
                          "write one)")
    if m.validate is not None and not has_statements(m.validate.text, language.script):
        m.notes.append(f"{m.validate.source} has no statements: no validate step written")
        m.validate = None
