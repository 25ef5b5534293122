"""golang-migrate: ``<version>_<title>.up.<ext>`` and ``<version>_<title>.down.<ext>`` in one
directory, versions unsigned integers (sequence or timestamp), one file per direction."""

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

_NAME = re.compile(r"^(?P<version>\d+)_(?P<title>.*)\.(?P<direction>up|down)\.(?P<ext>[A-Za-z0-9]+)$")


class GolangMigrate:
    format = Format.GOLANG_MIGRATE
    language = Language.SQL

    def read(self, source: Path) -> ImportPlan:
        plan = ImportPlan(self.format, self.language, source)
        found: dict[int, dict[str, Path]] = {}
        for path in migration_files(source, recursive=False):
            match = _NAME.match(path.name)
            if match is None or match["ext"] != "sql":
                plan.ignored.append(f"{relative(path, source)}: not a golang-migrate file name (<version>_<title>.up.sql / .down.sql)")
                continue
            version = int(match["version"])
            files = found.setdefault(version, {})
            if match["direction"] in files:
                other = files[match["direction"]].name
                plan.problems.append(Problem(path.name, Issue.DUPLICATE_VERSION,
                                             f"version {version} has two {match['direction']} files ({other} and {path.name})"))
                continue
            files[match["direction"]] = path
        for version in sorted(found):
            files = found[version]
            if "up" not in files:
                plan.problems.append(Problem(files["down"].name, Issue.MALFORMED, f"a down file without an up file for version {version}"))
                continue
            up = files["up"]
            text = read_text(up, source, plan.problems)
            if text is None:
                continue
            match = _NAME.match(up.name)
            assert match is not None
            m = ImportedMigration(match["version"], slugify(match["title"]), str(version), Script(text, up.name))
            if "down" in files:
                down = read_text(files["down"], source, m.problems)
                if down is not None:
                    m.rollback = Script(down, files["down"].name)
            plan.migrations.append(m)
        return plan
