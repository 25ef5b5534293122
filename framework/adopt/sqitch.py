"""Sqitch: ``sqitch.plan`` lists the changes in order, each with ``deploy/``, ``revert/`` and
``verify/`` scripts named after it. Verify becomes validate. A change is imported after every
change it ``requires`` (Sqitch refuses to deploy it earlier); a reworked change's earlier
versions are ``<name>@<tag>.sql``, the tag being the first one after it in the plan. Scripts run
through psql there, so psql meta-commands and ``:variables`` are named as templating."""

from __future__ import annotations

import configparser
import hashlib
import re
from dataclasses import dataclass, field
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
    slugify,
)
from polyshift.framework.core.errors import UsageError

_CHANGE = re.compile(r"^(?P<op>[+-])?(?P<name>[^\s\[@#:][^\s\[@#]*)\s*(?:\[(?P<deps>[^\]]*)\]\s*)?"
                     r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\s+(?P<planner>[^<]*?)\s*<(?P<email>[^>]*)>\s*(?:#\s?(?P<note>.*))?$")
_TAG = re.compile(r"^@(?P<name>\S+)\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+[^<]*<[^>]*>\s*(?:#.*)?$")
_PSQL = re.compile(r"^\s*(\\[a-zA-Z]+\S*)|(?<![:\w]):(?:\"[A-Za-z_]\w*\"|'[A-Za-z_]\w*'|[A-Za-z_]\w*)(?!\w)", re.MULTILINE)


@dataclass
class _Change:
    line: int
    name: str
    requires: list[str] = field(default_factory=list)
    tag_after: str | None = None      # the first tag after it: names an earlier version of a reworked change
    reworked_later: bool = False

    @property
    def ref(self) -> str:
        """How Sqitch refers to this change: ``name`` for its newest version, ``name@tag`` before."""
        return f"{self.name}@{self.tag_after}" if self.reworked_later else self.name


def _top_dir(source: Path) -> tuple[Path, Path]:
    """The plan file and the directory holding deploy/ revert/ verify/ (sqitch.conf may move both)."""
    plan, top = source / "sqitch.plan", source
    conf = source / "sqitch.conf"
    if conf.is_file():
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read_string(conf.read_text(encoding="utf-8"))
        except configparser.Error as exc:
            raise UsageError(f"{conf}: cannot be read: {exc}") from None
        if parser.has_option("core", "top_dir"):
            top = source / parser.get("core", "top_dir").strip().strip('"')
        plan = top / "sqitch.plan"
        if parser.has_option("core", "plan_file"):
            plan = source / parser.get("core", "plan_file").strip().strip('"')
    return plan, top


def psql_templating(name: str, text: str) -> list[Problem]:
    problems = []
    for match in _PSQL.finditer(_without_literals(text)):
        line = text.count("\n", 0, match.start()) + 1
        what = match.group(1) or match.group(0)
        problems.append(Problem(name, Issue.TEMPLATING, f"line {line}: '{what}' is psql, which Sqitch runs the script with; "
                                "polyshift sends SQL to the server, so write it as plain SQL"))
    return problems


def _without_literals(text: str) -> str:
    """Strings, quoted names, dollar-quoted bodies and comments blanked out (same length), so a
    ':' inside them is not read as a psql variable."""
    pattern = re.compile(r"--[^\n]*|/\*.*?\*/|(?<!:)'(?:[^']|'')*'|(?<!:)\"(?:[^\"]|\"\")*\"|(\$[A-Za-z_]*\$).*?\1|::", re.DOTALL)
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


class Sqitch:
    format = Format.SQITCH
    language = Language.SQL

    def read(self, source: Path) -> ImportPlan:
        if source.is_file() and source.name.endswith(".plan"):
            plan_path, top = source, source.parent
            source = source.parent
        else:
            if not source.is_dir():
                raise UsageError(f"{source}: no such directory")
            plan_path, top = _top_dir(source)
        if not plan_path.is_file():
            raise UsageError(f"{plan_path}: no Sqitch plan (sqitch.plan) here")
        plan = ImportPlan(self.format, self.language, source)
        self.project: str | None = None
        changes = self._parse(plan_path, plan)
        for change in self._ordered(changes, plan):
            self._add(change, top, source, plan)
        width = max(4, len(str(len(plan.migrations))))
        for number, m in enumerate(plan.migrations, 1):
            m.version = str(number).zfill(width)
        return plan

    def _parse(self, path: Path, plan: ImportPlan) -> list[_Change]:
        name = path.name
        text = read_text(path, path.parent, plan.problems)
        if text is None:
            return []
        changes: list[_Change] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("%"):
                if line.startswith("%project="):
                    self.project = line.partition("=")[2].strip()
                continue
            if line.startswith("@"):
                if _TAG.match(line) is None:
                    plan.problems.append(Problem(name, Issue.MALFORMED, f"line {number}: not a Sqitch tag line"))
                    continue
                tag = line[1:].split()[0]
                for change in reversed(changes):
                    if change.tag_after is not None:
                        break
                    change.tag_after = tag
                continue
            match = _CHANGE.match(line)
            if match is None:
                plan.problems.append(Problem(name, Issue.MALFORMED, f"line {number}: not a Sqitch change line: {line[:80]}"))
                continue
            if match["op"] == "-":
                plan.problems.append(Problem(name, Issue.UNSUPPORTED, f"line {number}: '-{match['name']}' plans a revert; "
                                             "polyshift imports deploys only"))
                continue
            change = _Change(number, match["name"], (match["deps"] or "").split())
            for earlier in changes:
                if earlier.name == change.name:
                    earlier.reworked_later = True
            changes.append(change)
        for change in changes:
            if change.reworked_later and change.tag_after is None:
                plan.problems.append(Problem(name, Issue.MALFORMED, f"line {change.line}: '{change.name}' is reworked later but no "
                                             "tag follows it (Sqitch needs one to name its earlier scripts)"))
        return changes

    def _ordered(self, changes: list[_Change], plan: ImportPlan) -> list[_Change]:
        """Plan order, except that a change never comes before one it requires."""
        index = {c.ref: i for i, c in enumerate(changes)}
        by_name = {c.name: i for i, c in enumerate(changes) if not c.reworked_later}
        needs: dict[int, set[int]] = {}
        for i, change in enumerate(changes):
            needs[i] = set()
            for dep in change.requires:
                if dep.startswith("!"):
                    continue  # a conflict: Sqitch refuses to deploy while that change is deployed
                if ":" in dep:
                    plan.problems.append(Problem("sqitch.plan", Issue.DEPENDENCY, f"line {change.line}: '{change.name}' requires "
                                                 f"'{dep}' from another Sqitch project, which this import cannot order"))
                    continue
                target = index.get(dep, by_name.get(dep.split("@")[0]))
                if target is None:
                    plan.problems.append(Problem("sqitch.plan", Issue.DEPENDENCY, f"line {change.line}: '{change.name}' requires "
                                                 f"'{dep}', which the plan does not have"))
                elif target != i:
                    needs[i].add(target)
        ordered: list[int] = []
        placed: set[int] = set()
        while len(ordered) < len(changes):
            ready = next((i for i in range(len(changes)) if i not in placed and needs[i] <= placed), None)
            if ready is None:
                stuck = [changes[i].name for i in range(len(changes)) if i not in placed]
                plan.problems.append(Problem("sqitch.plan", Issue.DEPENDENCY, f"requires form a cycle among {', '.join(stuck)}"))
                break
            ordered.append(ready)
            placed.add(ready)
        return [changes[i] for i in ordered]

    def _add(self, change: _Change, top: Path, source: Path, plan: ImportPlan) -> None:
        suffix = f"@{change.tag_after}" if change.reworked_later else ""
        files = {step: top / step / f"{change.name}{suffix}.sql" for step in ("deploy", "revert", "verify")}
        rel = {step: path.relative_to(source).as_posix() if path.is_relative_to(source) else str(path) for step, path in files.items()}
        if not files["deploy"].is_file():
            plan.problems.append(Problem(rel["deploy"], Issue.MALFORMED, f"change '{change.ref}' has no deploy script"))
            return
        problems: list[Problem] = []
        deploy = read_text(files["deploy"], source, problems)
        # The registry names a change with its project: 'flipr:users' is Sqitch's own spelling.
        source_id = f"{self.project}:{change.ref}" if self.project else change.ref
        m = ImportedMigration("0", slugify(change.name), source_id, Script(deploy or "", rel["deploy"]), problems=problems,
                              source_checksum=f"sha1:{hashlib.sha1(files['deploy'].read_bytes()).hexdigest()}")
        if change.requires:
            m.notes.append(f"{change.ref} requires {', '.join(change.requires)}")
        for step, attr in (("revert", "rollback"), ("verify", "validate")):
            if files[step].is_file():
                text = read_text(files[step], source, m.problems)
                if text is not None:
                    setattr(m, attr, Script(text, rel[step]))
        for script in (m.forward, m.rollback, m.validate):
            if script is not None:
                m.problems += psql_templating(script.source, script.text)
        plan.migrations.append(m)
