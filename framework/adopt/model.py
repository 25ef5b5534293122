"""What an import reads out of another tool's migration directory, before anything is written.

Every reader (one module per format) turns a source directory into an ``ImportPlan``: the
migrations in the order the source tool applies them, each with its scripts, where each came
from, and what the conversion changed (``notes``) or could not do (``problems``). A plan with
problems is shown, never written: nothing in the source is dropped without being named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from polyshift.framework.core.kinds import script_language
from polyshift.framework.core.migration import ScriptLanguage, version_key


class Format(StrEnum):
    """The migration tools ``polyshift import --from`` reads."""

    GOLANG_MIGRATE = "golang-migrate"
    GOOSE = "goose"
    DBMATE = "dbmate"
    FLYWAY = "flyway"
    SQITCH = "sqitch"
    LIQUIBASE = "liquibase"
    NEO4J_MIGRATIONS = "neo4j-migrations"
    POP = "pop"
    ALEMBIC = "alembic"


class Language(StrEnum):
    """The script language a format's migrations are written in (polyshift's file extension)."""

    SQL = "sql"
    CYPHER = "cypher"

    @property
    def script(self) -> ScriptLanguage:
        """The language as the store kinds that run it declare it (comment syntax included)."""
        return script_language(self.value)

    @property
    def comment(self) -> str:
        return self.script.comment


class Issue(StrEnum):
    """Why something in the source cannot be converted as it is."""

    MALFORMED = "malformed"                    # the file does not follow the source tool's own format
    NO_DOWN = "no-down"                        # a migration without an undo script
    TRANSACTION_CONTROL = "transaction-control"  # BEGIN/COMMIT inside a step polyshift runs in one transaction
    TEMPLATING = "templating"                  # placeholders the source tool substitutes before running
    UNSUPPORTED = "unsupported"                # a kind of migration polyshift has no counterpart for
    DUPLICATE_VERSION = "duplicate-version"    # two migrations claim one version
    DEPENDENCY = "dependency"                  # a Sqitch requirement that cannot be honoured
    NOT_PARSED = "not-parsed"                  # the script is not valid in the target store's language
    CONFLICT = "conflict"                      # the target directory already has this version


@dataclass(frozen=True)
class Problem:
    """Something that blocks writing the import: ``source`` names the exact file (and the part of
    it, for a changeset in a Liquibase changelog)."""

    source: str
    issue: Issue
    reason: str

    def describe(self) -> str:
        return f"{self.source}: {self.reason} [{self.issue.value}]"


@dataclass
class Script:
    """One step's text as it will be written, and the source file it came from."""

    text: str
    source: str
    noop: bool = False          # the source step has no statements: written with the noop directive


@dataclass
class ImportedMigration:
    """One migration of the source, in polyshift's terms.

    ``source_id`` is what the source tool's history table calls it (a golang-migrate version, a
    Flyway version, a Sqitch change name, a Liquibase ``id::author``); ``source_checksum`` is the
    source tool's own checksum of the forward script where it records one (Flyway CRC32, Sqitch
    SHA-1), so a baseline can tell whether the file is the one that ran."""

    version: str
    slug: str
    source_id: str
    forward: Script
    rollback: Script | None = None
    validate: Script | None = None
    irreversible: bool = False
    source_checksum: str | None = None
    notes: list[str] = field(default_factory=list)
    # Written as the source has it, but worth a look: an empty down under an up that changes
    # something rolls back nothing.
    warnings: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.version}_{self.slug}"

    @property
    def version_key(self) -> tuple[int, ...]:
        return version_key(self.version)


@dataclass
class ImportPlan:
    format: Format
    language: Language
    source: Path
    migrations: list[ImportedMigration] = field(default_factory=list)
    # Problems of the source as a whole or of files that are no migration polyshift can hold.
    problems: list[Problem] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    # Files in the source directory that are no migration of this tool (a README), named so
    # nothing is left out unseen.
    ignored: list[str] = field(default_factory=list)

    def all_problems(self) -> list[Problem]:
        return self.problems + [p for m in self.migrations for p in m.problems]


class SourceReader(Protocol):
    """One migration tool's directory layout. ``read`` never raises for a bad file: it reports it
    as a Problem so the user sees every one at once; it raises UsageError only when ``source``
    is not something this format can be read from at all."""

    format: Format
    language: Language

    def read(self, source: Path) -> ImportPlan: ...


_SLUG_JUNK = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    """A polyshift slug (lowercase letters, digits, '_') from a source tool's description."""
    slug = _SLUG_JUNK.sub("_", text.lower()).strip("_")
    return slug or "migration"


def dotted_version(text: str) -> str:
    """Flyway and neo4j-migrations write version parts with '.' or '_' (V1_2__x is 1.2)."""
    return text.replace("_", ".")


def same_version(a: str, b: str) -> bool:
    """Versions compare by their numbers: Flyway's 1.0 is 1, golang-migrate's 000042 is 42."""
    ka, kb = list(version_key(a)), list(version_key(b))
    while len(ka) > 1 and ka[-1] == 0:
        ka.pop()
    while len(kb) > 1 and kb[-1] == 0:
        kb.pop()
    return ka == kb


def relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def read_text(path: Path, root: Path, problems: list[Problem]) -> str | None:
    """A source file's text (UTF-8, BOM removed), or None with a problem recorded."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        problems.append(Problem(relative(path, root), Issue.MALFORMED,
                                f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8 and import again"))
        return None
