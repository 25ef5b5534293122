"""Flyway: versioned ``V<version>__<description>.sql`` with optional undo ``U<version>__….sql``
(version parts separated by '.' or '_'), anywhere under the location. Repeatable ``R__`` scripts,
baseline ``B`` scripts and callbacks have no polyshift counterpart and are named as unsupported;
``${placeholders}`` are substituted by Flyway before running, so they are named too."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

from polyshift.framework.adopt.model import (
    Format,
    ImportedMigration,
    ImportPlan,
    Issue,
    Language,
    Problem,
    Script,
    dotted_version,
    read_text,
    relative,
    same_version,
    slugify,
)
from polyshift.framework.adopt.sources import migration_files

VERSIONED = re.compile(r"^(?P<prefix>[VUB])(?P<version>\d+(?:[._]\d+)*)__(?P<description>.+)\.(?P<ext>sql|cypher)$")
REPEATABLE = re.compile(r"^R__(?P<description>.+)\.(?P<ext>sql|cypher)$")
_CALLBACK = re.compile(r"^(before|after)[A-Z][A-Za-z]*(__.*)?\.(sql|cypher)$")
PLACEHOLDER = re.compile(r"\$\{[^}\s]+\}")


def flyway_checksum(data: bytes) -> int:
    """Flyway's checksum: CRC32 over each line's UTF-8 bytes without its line ending (a leading
    byte-order mark left out), as a signed 32-bit integer; line endings do not change it."""
    text = data.decode("utf-8").removeprefix("\ufeff")
    crc = 0
    for line in re.split(r"\r\n|\r|\n", text):
        crc = zlib.crc32(line.encode(), crc)  # a final line ending's empty "line" adds no bytes, as with readLine()
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def placeholders(name: str, text: str) -> list[Problem]:
    return [Problem(name, Issue.TEMPLATING, f"line {text.count(chr(10), 0, m.start()) + 1}: placeholder '{m.group(0)}' is "
                    "substituted by the source tool before the script runs; write its value in")
            for m in PLACEHOLDER.finditer(text)]


class Flyway:
    format = Format.FLYWAY
    language = Language.SQL
    extension = "sql"

    def read(self, source: Path) -> ImportPlan:
        plan = ImportPlan(self.format, self.language, source)
        versioned: list[tuple[str, Path, re.Match[str]]] = []
        undo: list[tuple[str, Path]] = []
        configs: dict[str, Path] = {}
        for path in migration_files(source, recursive=True):
            name = relative(path, source)
            if path.name.endswith(f".{self.extension}.conf"):
                configs[path.name.removesuffix(".conf")] = path
                continue
            match = VERSIONED.match(path.name)
            if match is not None and match["ext"] == self.extension:
                if match["prefix"] == "V":
                    versioned.append((dotted_version(match["version"]), path, match))
                elif match["prefix"] == "U":
                    undo.append((dotted_version(match["version"]), path))
                else:
                    plan.problems.append(Problem(name, Issue.UNSUPPORTED, "a baseline migration (B…): polyshift has no kind that "
                                                 "replaces the versions below it; import the V scripts, or baseline the database"))
            elif REPEATABLE.match(path.name):
                plan.problems.append(Problem(name, Issue.UNSUPPORTED, "a repeatable migration (R__): polyshift has no migration that "
                                             "runs again whenever its checksum changes; fold it into a versioned migration, or "
                                             "leave it out with --exclude"))
            elif _CALLBACK.match(path.name):
                plan.problems.append(Problem(name, Issue.UNSUPPORTED, f"a {self.format.value} callback: polyshift runs no script "
                                             "around a migration; leave it out with --exclude or move it into a migration"))
            else:
                plan.ignored.append(f"{name}: not a {self.format.value} migration file name (V<version>__<description>.{self.extension})")
        versioned.sort(key=lambda item: tuple(int(p) for p in item[0].split(".")))
        for version, path, match in versioned:
            name = relative(path, source)
            clash = next((m for m in plan.migrations if same_version(m.version, version)), None)
            if clash is not None:
                plan.problems.append(Problem(name, Issue.DUPLICATE_VERSION, f"version {version} is also {clash.forward.source}"))
                continue
            text = read_text(path, source, plan.problems)
            if text is None:
                continue
            m = ImportedMigration(version, slugify(match["description"]), version, Script(text, name))
            self.finish(m, path, text, configs.pop(path.name, None), source)
            plan.migrations.append(m)
        for version, path in undo:
            target = next((m for m in plan.migrations if same_version(m.version, version)), None)
            name = relative(path, source)
            if target is None:
                plan.problems.append(Problem(name, Issue.MALFORMED, f"an undo script for version {version}, which has no V script"))
                continue
            text = read_text(path, source, target.problems)
            if text is not None:
                target.rollback = Script(text, name)
                if self.language is Language.SQL:
                    target.problems += placeholders(name, text)
        for name, path in configs.items():
            plan.problems.append(Problem(relative(path, source), Issue.MALFORMED,
                                         f"script configuration for {name}, which is no migration"))
        return plan

    def finish(self, m: ImportedMigration, path: Path, text: str, config: Path | None, source: Path) -> None:
        m.source_checksum = f"crc32:{flyway_checksum(path.read_bytes())}"
        replace = True
        if config is not None:
            for number, line in enumerate(config.read_text(encoding="utf-8").splitlines(), 1):
                key, _, value = line.partition("=")
                key, value = key.strip(), value.strip().lower()
                if not key or key.startswith("#"):
                    continue
                if key == "executeInTransaction" and value == "false":
                    m.notes.append(f"{relative(config, source)}: executeInTransaction=false — polyshift runs the step in one "
                                   "transaction, and on its own each statement PostgreSQL refuses there")
                elif key == "placeholderReplacement" and value == "false":
                    replace = False
                else:
                    m.problems.append(Problem(relative(config, source), Issue.UNSUPPORTED, f"line {number}: setting '{key}' has no "
                                              "polyshift counterpart"))
        if replace:
            m.problems += placeholders(m.forward.source, text)
