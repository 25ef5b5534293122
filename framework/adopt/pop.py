"""gobuffalo/pop (also as Ory's popx): ``<version>_<name>[.<dialect>][.autocommit].<up|down>.<sql|fizz>``.

One directory holds every database's scripts: a file with a dialect (postgres, cockroach, mysql,
sqlite3) is for that database only, a file without one is for every database, and for each version
and direction the dialect's own file wins over the dialect-less one. So the same directory is a
different history per database, and the import needs to know which: ``--dialect``. Versions order
as pop orders them (as strings; timestamps of one width, so also as numbers).

``.fizz`` files are pop's own schema DSL, translated to SQL by pop at run time: polyshift has no
translator, so a fizz file that a version would run is a problem named by file (one that the
dialect's SQL file overrides is listed as ignored). Scripts are Go templates in popx; template
actions are named as templating.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
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
from polyshift.framework.core.errors import UsageError

_NAME = re.compile(r"^(?P<version>\d+)_(?P<name>[^.]+)(?:\.(?P<dialect>[a-z0-9]+))?(?P<autocommit>\.autocommit)?"
                   r"\.(?P<direction>up|down)\.(?P<type>sql|fizz)$")
_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.DOTALL)


class Dialect(StrEnum):
    """pop's canonical dialect names (what its file names say after canonicalisation)."""

    POSTGRES = "postgres"
    COCKROACH = "cockroach"
    MYSQL = "mysql"
    SQLITE3 = "sqlite3"


# The spellings pop accepts for each dialect in a file name (pop.CanonicalDialect).
_ALIASES = {
    "postgres": Dialect.POSTGRES, "postgresql": Dialect.POSTGRES, "pg": Dialect.POSTGRES,
    "cockroach": Dialect.COCKROACH, "cockroachdb": Dialect.COCKROACH, "crdb": Dialect.COCKROACH,
    "mysql": Dialect.MYSQL, "mariadb": Dialect.MYSQL,
    "sqlite3": Dialect.SQLITE3, "sqlite": Dialect.SQLITE3,
}
# The dialects whose SQL a PostgreSQL store runs: CockroachDB speaks PostgreSQL's dialect.
POSTGRES_DIALECTS = (Dialect.POSTGRES, Dialect.COCKROACH)


def dialect(name: str | None) -> Dialect:
    """``--dialect``: required for pop, one of pop's dialects (or an alias pop accepts)."""
    if name is None:
        raise UsageError("--from pop needs --dialect: a pop directory holds every database's scripts "
                         f"(known: {', '.join(d.value for d in Dialect)})",
                         hint="polyshift import --from pop DIR --store S --dialect postgres")
    found = _ALIASES.get(name.lower())
    if found is None:
        raise UsageError(f"--dialect {name!r}: not a pop dialect (known: {', '.join(d.value for d in Dialect)})")
    return found


@dataclass(frozen=True)
class _File:
    path: Path
    version: str
    name: str
    dialect: Dialect | None      # None: pop's "all", for every database
    direction: str
    type: str
    autocommit: bool


class Pop:
    format = Format.POP
    language = Language.SQL

    def __init__(self, target: Dialect = Dialect.POSTGRES) -> None:
        self.dialect = target

    def read(self, source: Path) -> ImportPlan:
        plan = ImportPlan(self.format, self.language, source)
        # (version, direction) -> {dialect or None: file}
        found: dict[tuple[str, str], dict[Dialect | None, _File]] = {}
        other: Counter[str] = Counter()
        for path in migration_files(source, recursive=True):
            name = relative(path, source)
            match = _NAME.match(path.name)
            if match is None:
                plan.ignored.append(f"{name}: not a pop migration file name (<version>_<name>[.<dialect>].up.sql / .down.sql)")
                continue
            file_dialect = None
            if match["dialect"] is not None:
                file_dialect = _ALIASES.get(match["dialect"])
                if file_dialect is None:  # pop itself skips a dialect it does not support
                    plan.ignored.append(f"{name}: dialect '{match['dialect']}' is none pop supports")
                    continue
                if match["type"] == "fizz":
                    plan.problems.append(Problem(name, Issue.MALFORMED, "a fizz file with a dialect (pop refuses it: fizz is "
                                                 "dialect-independent)"))
                    continue
            if file_dialect is not None and file_dialect is not self.dialect:
                other[file_dialect.value] += 1
                continue
            file = _File(path, match["version"], match["name"], file_dialect, match["direction"], match["type"],
                         match["autocommit"] is not None)
            slot = found.setdefault((file.version, file.direction), {})
            clash = slot.get(file_dialect)
            if clash is not None:
                plan.problems.append(Problem(name, Issue.DUPLICATE_VERSION, f"version {file.version} has two {file.direction} "
                                             f"files for {file_dialect or 'every database'} ({relative(clash.path, source)} and {name})"))
                continue
            slot[file_dialect] = file
        for value, count in sorted(other.items()):
            plan.ignored.append(f"{count} file(s) for dialect {value}: not the --dialect {self.dialect.value} history")
        versions = sorted({v for v, _ in found})  # pop's order: the version strings'
        numeric = sorted(versions, key=int)
        if numeric != versions:
            # polyshift orders versions as numbers; for pop they are strings, so different widths can disagree
            first = next(i for i, (a, b) in enumerate(zip(versions, numeric, strict=True)) if a != b)
            files = [relative(f.path, source) for v in (versions[first], numeric[first])
                     for f in found.get((v, "up"), found.get((v, "down"), {})).values()]
            plan.problems.append(Problem(" and ".join(files), Issue.UNSUPPORTED,
                                         f"pop runs {versions[first]} before {numeric[first]} (it orders versions as text); "
                                         "as numbers, the order polyshift keeps, they come the other way round: give them one width"))
        for version in versions:
            up = self._choose(plan, source, found.get((version, "up"), {}))
            down = self._choose(plan, source, found.get((version, "down"), {}))
            if up is None:
                if down is not None and not found.get((version, "up")):  # an up pop has but polyshift cannot take is reported already
                    plan.problems.append(Problem(relative(down.path, source), Issue.MALFORMED,
                                                 f"a down file without an up file for version {version}"))
                continue
            m = self._migration(plan, source, up, down)
            if m is not None:
                plan.migrations.append(m)
        return plan

    def _choose(self, plan: ImportPlan, source: Path, files: dict[Dialect | None, _File]) -> _File | None:
        """The file pop runs for this version and direction: the dialect's own, else the dialect-less one."""
        own, common = files.get(self.dialect), files.get(None)
        if own is not None and common is not None:
            plan.ignored.append(f"{relative(common.path, source)}: {relative(own.path, source)} replaces it for "
                                f"{self.dialect.value}")
        chosen = own or common
        if chosen is not None and chosen.type == "fizz":
            plan.problems.append(Problem(relative(chosen.path, source), Issue.UNSUPPORTED,
                                         "a fizz migration: pop's schema DSL, translated to SQL by pop when it runs; polyshift "
                                         f"has no translator (write the {self.dialect.value} SQL it produces in "
                                         f"{chosen.version}_{chosen.name}.{self.dialect.value}.{chosen.direction}.sql, "
                                         "or leave it out with --exclude)"))
            return None
        return chosen

    def _migration(self, plan: ImportPlan, source: Path, up: _File, down: _File | None) -> ImportedMigration | None:
        name = relative(up.path, source)
        text = read_text(up.path, source, plan.problems)
        if text is None:
            return None
        m = ImportedMigration(up.version, slugify(up.name), up.version, Script(text, name))
        m.problems += _templates(name, text)
        if down is not None:
            down_name = relative(down.path, source)
            down_text = read_text(down.path, source, m.problems)
            if down_text is not None:
                m.rollback = Script(down_text, down_name)
                m.problems += _templates(down_name, down_text)
        for file in (up, down):
            if file is not None and file.autocommit:
                m.notes.append(f"{relative(file.path, source)}: '.autocommit' — pop runs it outside a transaction; polyshift "
                               "runs the step in one transaction, and on its own each statement PostgreSQL refuses there")
        return m


def _templates(name: str, text: str) -> list[Problem]:
    return [Problem(name, Issue.TEMPLATING, f"line {text.count(chr(10), 0, m.start()) + 1}: template action '{m.group(0)}' "
                    "is filled in by popx before the script runs; write its value in")
            for m in _TEMPLATE.finditer(text)]
