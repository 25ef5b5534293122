"""goose: ``<version>_<name>.sql`` with ``-- +goose Up`` and ``-- +goose Down`` sections in one
file; ``StatementBegin``/``StatementEnd`` fence a statement holding semicolons (polyshift reads
PostgreSQL's own grammar, so the fences go); ``.go`` migrations are Go code."""

from __future__ import annotations

import re
from pathlib import Path

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

_NAME = re.compile(r"^(?P<version>\d+)_(?P<name>.+)\.(?P<ext>sql|go)$")
_ANNOTATION = re.compile(r"^\s*--\s*\+goose\s+(?P<command>.+?)\s*$", re.IGNORECASE)


class Goose:
    format = Format.GOOSE
    language = Language.SQL

    def read(self, source: Path) -> ImportPlan:
        plan = ImportPlan(self.format, self.language, source)
        seen: dict[int, str] = {}
        for path in migration_files(source, recursive=False):
            match = _NAME.match(path.name)
            if match is None:
                plan.ignored.append(f"{relative(path, source)}: not a goose migration file name (<version>_<name>.sql)")
                continue
            version = int(match["version"])
            if version in seen:
                plan.problems.append(Problem(path.name, Issue.DUPLICATE_VERSION, f"version {version} is also used by {seen[version]}"))
                continue
            seen[version] = path.name
            if match["ext"] == "go":
                plan.problems.append(Problem(path.name, Issue.UNSUPPORTED, "a Go migration: goose compiles it into the binary; "
                                             "rewrite it as SQL or as a polyshift Python migration"))
                continue
            text = read_text(path, source, plan.problems)
            if text is not None:
                m = self._migration(path.name, match["version"], slugify(match["name"]), str(version), text)
                if m is not None:
                    plan.migrations.append(m)
                else:
                    plan.problems.append(Problem(path.name, Issue.MALFORMED, "no '-- +goose Up' annotation (goose refuses the file too)"))
        return plan

    @staticmethod
    def _migration(name: str, version: str, slug: str, source_id: str, text: str) -> ImportedMigration | None:
        sections: dict[str, list[str]] = {"head": [], "up": [], "down": []}
        current = "head"
        notes: list[str] = []
        problems: list[Problem] = []
        fenced = False
        for number, line in enumerate(text.splitlines(keepends=True), 1):
            match = _ANNOTATION.match(line)
            if match is None:
                sections[current].append(line)
                continue
            command = match["command"].lower()
            if command in ("up", "down"):
                if sections[command] or (command == "up" and current == "down"):
                    problems.append(Problem(name, Issue.MALFORMED, f"line {number}: a second or misplaced '+goose {match['command']}'"))
                current = command
            elif command in ("statementbegin", "statementend"):
                fenced = True
            elif command == "no transaction":
                notes.append(f"{name}: '+goose NO TRANSACTION' — polyshift runs in one transaction whatever PostgreSQL allows "
                             "there, and on its own each statement it refuses there (CREATE INDEX CONCURRENTLY …)")
            elif command.startswith("envsub"):
                if command.endswith("on"):
                    problems.append(Problem(name, Issue.TEMPLATING, f"line {number}: '+goose ENVSUB ON' substitutes environment "
                                            "variables into the SQL before it runs; write the values in"))
            else:
                problems.append(Problem(name, Issue.UNSUPPORTED, f"line {number}: unknown goose annotation '+goose {match['command']}'"))
        if current == "head" and not sections["up"]:
            return None
        head = "".join(sections["head"])
        if any(line.strip() and not line.strip().startswith("--") for line in sections["head"]):
            problems.append(Problem(name, Issue.MALFORMED, "statements before '-- +goose Up'"))
        if fenced:
            notes.append(f"{name}: StatementBegin/StatementEnd fences removed (polyshift splits statements with PostgreSQL's grammar)")
        m = ImportedMigration(version, slug, source_id, Script(head + "".join(sections["up"]), f"{name} (+goose Up)"),
                              notes=notes, problems=problems)
        if current == "down" or sections["down"]:
            m.rollback = Script("".join(sections["down"]), f"{name} (+goose Down)")
        return m
