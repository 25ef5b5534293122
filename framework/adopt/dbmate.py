"""dbmate: ``<version>_<name>.sql`` (the version is the leading digits, usually a timestamp)
with ``-- migrate:up`` and ``-- migrate:down`` sections, each optionally ``transaction:false``."""

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

_NAME = re.compile(r"^(?P<version>\d+)_?(?P<name>.*)\.sql$")
_SECTION = re.compile(r"^--\s*migrate:(?P<direction>up|down)\b(?P<options>.*)$")


class Dbmate:
    format = Format.DBMATE
    language = Language.SQL

    def read(self, source: Path) -> ImportPlan:
        plan = ImportPlan(self.format, self.language, source)
        seen: dict[str, str] = {}
        for path in migration_files(source, recursive=False):
            match = _NAME.match(path.name)
            if match is None:
                plan.ignored.append(f"{relative(path, source)}: not a dbmate migration file name (<version>_<name>.sql)")
                continue
            version = match["version"]
            if version in seen:
                plan.problems.append(Problem(path.name, Issue.DUPLICATE_VERSION, f"version {version} is also used by {seen[version]}"))
                continue
            seen[version] = path.name
            text = read_text(path, source, plan.problems)
            if text is None:
                continue
            sections: dict[str, list[str]] = {"head": [], "up": [], "down": []}
            current, notes, problems = "head", [], []
            for number, line in enumerate(text.splitlines(keepends=True), 1):
                section = _SECTION.match(line.strip())
                if section is None:
                    sections[current].append(line)
                    continue
                direction = section["direction"]
                if current != "head" and (direction == "up" or current == "down"):
                    problems.append(Problem(path.name, Issue.MALFORMED, f"line {number}: a second or misplaced 'migrate:{direction}'"))
                current = direction
                options = section["options"].split()
                for option in options:
                    if option.replace(" ", "") == "transaction:false":
                        notes.append(f"{path.name}: 'migrate:{direction} transaction:false' — polyshift runs the step in one "
                                     "transaction, and on its own each statement PostgreSQL refuses there")
                    else:
                        problems.append(Problem(path.name, Issue.UNSUPPORTED, f"line {number}: unknown dbmate option '{option}'"))
            if current == "head":
                plan.problems.append(Problem(path.name, Issue.MALFORMED, "no '-- migrate:up' section (dbmate refuses the file too)"))
                continue
            if any(line.strip() and not line.strip().startswith("--") for line in sections["head"]):
                problems.append(Problem(path.name, Issue.MALFORMED, "statements before '-- migrate:up'"))
            m = ImportedMigration(version, slugify(match["name"]), version,
                                  Script("".join(sections["head"] + sections["up"]), f"{path.name} (migrate:up)"),
                                  notes=notes, problems=problems)
            if current == "down":
                m.rollback = Script("".join(sections["down"]), f"{path.name} (migrate:down)")
            plan.migrations.append(m)
        return plan
