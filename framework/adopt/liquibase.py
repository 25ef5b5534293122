"""Liquibase formatted SQL: a file starting ``--liquibase formatted sql`` holds changesets, each
opened by ``--changeset author:id [attribute:value …]`` and undone by its ``--rollback`` lines
(or a ``/* liquibase rollback … */`` block). SOURCE is one changelog file or a directory of them,
read in path order like ``includeAll``. Attributes that make a changeset run conditionally or
repeatedly (contexts, labels, runAlways, runOnChange, preconditions) have no polyshift meaning and
are named; ``${properties}`` are substituted by Liquibase, so they are named too."""

from __future__ import annotations

import re
from pathlib import Path

from polyshift.framework.adopt.flyway import placeholders
from polyshift.framework.adopt.model import (
    Format,
    ImportedMigration,
    ImportPlan,
    Issue,
    Language,
    Problem,
    Script,
    read_text,
    relative,
    slugify,
)
from polyshift.framework.adopt.sources import migration_files

_HEADER = re.compile(r"^--\s*liquibase\s+formatted\s+sql\b", re.IGNORECASE)
_CHANGESET = re.compile(r'^--\s*changeset\s+(?P<author>"[^"]+"|[^:]+?)\s*:\s*(?P<id>"[^"]+"|\S+)(?P<attrs>.*)$', re.IGNORECASE)
_ROLLBACK = re.compile(r"^--\s*rollback\b\s?(?P<sql>.*)$", re.IGNORECASE)
_ROLLBACK_BLOCK = re.compile(r"/\*\s*liquibase\s+rollback\b(?P<sql>.*?)\*/", re.IGNORECASE | re.DOTALL)
_DIRECTIVE = re.compile(r"^--\s*(?P<name>preconditions?\S*|precondition-\S+|validCheckSum|ignoreLines|include\S*|property)\b",
                        re.IGNORECASE)
_ATTRIBUTE = re.compile(r"(?P<key>[A-Za-z]+):(?P<value>\"[^\"]*\"|\S*)")
# Attributes that decide whether (or how often) a changeset runs: polyshift runs every migration once.
_CONDITIONAL = {"context", "contextfilter", "labels", "runalways", "runonchange", "dbms", "failonerror", "ignore"}
_NEUTRAL = {"runintransaction", "splitstatements", "stripcomments", "logicalfilepath", "rollbacksplitstatements",
            "rollbackenddelimiter", "enddelimiter", "created", "runwith", "runwithspoolfile"}
_NO_ROLLBACK = {"empty", "not required"}


class Liquibase:
    format = Format.LIQUIBASE
    language = Language.SQL

    def read(self, source: Path) -> ImportPlan:
        plan = ImportPlan(self.format, self.language, source)
        root = source.parent if source.is_file() else source
        files = [source] if source.is_file() else [p for p in migration_files(source, recursive=True) if p.suffix == ".sql"]
        if not source.is_file():
            plan.ignored += [f"{relative(p, source)}: not a .sql changelog" for p in migration_files(source, recursive=True)
                             if p.suffix != ".sql"]
        for path in files:
            text = read_text(path, root, plan.problems)
            if text is not None:
                self._changelog(path, relative(path, root), text, plan)
        width = max(4, len(str(len(plan.migrations))))
        for number, m in enumerate(plan.migrations, 1):
            m.version = str(number).zfill(width)
        return plan

    def _changelog(self, path: Path, name: str, text: str, plan: ImportPlan) -> None:
        lines = text.splitlines(keepends=True)
        first = next((line for line in lines if line.strip()), "")
        if not _HEADER.match(first.strip()):
            plan.problems.append(Problem(name, Issue.MALFORMED, "does not start with '--liquibase formatted sql'"))
            return
        current: tuple[int, re.Match[str]] | None = None
        body: list[str] = []
        seen: set[str] = set()
        for number, line in enumerate(lines, 1):
            match = _CHANGESET.match(line.strip())
            if match is not None:
                if current is not None:
                    self._changeset(name, current, body, plan, seen)
                current, body = (number, match), []
            elif current is None:
                if line.strip() and not line.strip().startswith("--"):
                    plan.problems.append(Problem(name, Issue.MALFORMED, f"line {number}: SQL before the first '--changeset'"))
            else:
                body.append(line)
        if current is not None:
            self._changeset(name, current, body, plan, seen)

    def _changeset(self, name: str, opened: tuple[int, re.Match[str]], body: list[str], plan: ImportPlan, seen: set[str]) -> None:
        number, match = opened
        author, ident = match["author"].strip('"'), match["id"].strip('"')
        where = f"{name} (changeset {author}:{ident})"
        m = ImportedMigration("0", slugify(ident), f"{ident}::{author}", Script("", where))
        if f"{ident}::{author}" in seen:
            plan.problems.append(Problem(where, Issue.DUPLICATE_VERSION, f"line {number}: changeset {author}:{ident} appears twice"))
            return
        seen.add(f"{ident}::{author}")
        for attr in _ATTRIBUTE.finditer(match["attrs"]):
            key, value = attr["key"].lower(), attr["value"].strip('"')
            if key in _CONDITIONAL:
                if (key in ("runalways", "runonchange", "ignore") and value.lower() == "false") or \
                        (key == "dbms" and "postgresql" in value.lower().split(",")) or (key == "failonerror" and value.lower() == "true"):
                    continue
                m.problems.append(Problem(where, Issue.UNSUPPORTED, f"line {number}: '{attr.group(0)}' decides whether or how often "
                                          "Liquibase runs the changeset; polyshift runs each migration once, always"))
            elif key == "enddelimiter" and value not in ("", ";"):
                m.problems.append(Problem(where, Issue.UNSUPPORTED, f"line {number}: '{attr.group(0)}': polyshift splits statements "
                                          "at ';' with PostgreSQL's grammar"))
            elif key not in _NEUTRAL:
                m.problems.append(Problem(where, Issue.UNSUPPORTED, f"line {number}: unknown changeset attribute '{attr.group(0)}'"))
            elif key == "runintransaction" and value.lower() == "false":
                m.notes.append(f"{where}: runInTransaction:false — polyshift runs the step in one transaction, and on its own each "
                               "statement PostgreSQL refuses there")
        forward: list[str] = []
        rollback: list[str] = []
        for offset, line in enumerate(body, number + 1):
            stripped = line.strip()
            back = _ROLLBACK.match(stripped)
            if back is not None:
                rollback.append(back["sql"] + "\n")
                continue
            directive = _DIRECTIVE.match(stripped)
            if directive is not None:
                m.problems.append(Problem(where, Issue.UNSUPPORTED, f"line {offset}: '--{directive['name']}' has no polyshift counterpart"))
                continue
            forward.append(line)
        text = "".join(forward)
        for block in _ROLLBACK_BLOCK.finditer(text):
            rollback.append(block["sql"].strip("\n") + "\n")
        text = _ROLLBACK_BLOCK.sub("", text)
        m.forward.text = text
        m.problems += placeholders(where, text)
        if rollback:
            undo = "".join(rollback)
            if undo.strip().lower() in _NO_ROLLBACK:
                m.notes.append(f"{where}: '--rollback {undo.strip()}': nothing to undo, written as a noop rollback")
                undo = ""
            m.rollback = Script(undo, f"{where} --rollback")
            m.problems += placeholders(m.rollback.source, undo)
        plan.migrations.append(m)
