"""neo4j-migrations: ``V<version>__<description>.cypher`` under the location, versions as in
Flyway. It has no undo: each is imported irreversible unless ``--rollbacks DIR`` supplies a file
of the same name holding its undo. ``// assume`` / ``// assert`` preconditions decide whether the
tool runs a migration at all, so they are named: polyshift runs what it imports."""

from __future__ import annotations

import re
from pathlib import Path

from polyshift.framework.adopt.flyway import Flyway
from polyshift.framework.adopt.model import Format, ImportedMigration, Issue, Language, Problem

_PRECONDITION = re.compile(r"^\s*//\s*(assume|assert)\b.*$", re.IGNORECASE | re.MULTILINE)


class Neo4jMigrations(Flyway):
    format = Format.NEO4J_MIGRATIONS
    language = Language.CYPHER
    extension = "cypher"

    def finish(self, m: ImportedMigration, path: Path, text: str, config: Path | None, source: Path) -> None:
        for match in _PRECONDITION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            m.problems.append(Problem(m.forward.source, Issue.UNSUPPORTED, f"line {line}: precondition '{match.group(0).strip()}' "
                                      "decides whether neo4j-migrations runs the script; polyshift always runs it"))
        if config is not None:
            m.problems.append(Problem(str(config.name), Issue.UNSUPPORTED, "script configuration has no neo4j-migrations meaning"))
