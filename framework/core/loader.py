"""Finds and parses migrations under ``migrations/<store>/`` (ordering, checksums, directives).

Layout per store directory:
  <version>_<slug>.forward.<ext>   required for script migrations
  <version>_<slug>.rollback.<ext>  required unless the forward is marked irreversible
  <version>_<slug>.validate.<ext>  optional
  <version>_<slug>.py              Python migration: forward(ctx), rollback(ctx), validate(ctx)
where <ext> is the store's script language (sql, cypher). Header comment lines of the
forward script carry directives: ``-- polyshift: backup=users,orders``; ``allow=PS130,PS110``
acknowledges lock-hazard findings by code (the store's adapter checks each code is one it
reports). A rollback script's header may carry ``backup=`` only: the scope its own step destroys.

Scripts are UTF-8 (a byte-order mark is ignored; the checksum covers the bytes on disk). A
forward or rollback script with no statement is refused unless its header says
``-- polyshift: noop`` (a line the checksum leaves out); a validate script with no statement
means no checks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path

from polyshift.framework.core.errors import MigrationLoadError
from polyshift.framework.core.kinds import store_kind
from polyshift.framework.core.migration import (
    Migration,
    Risk,
    ScriptLanguage,
    Step,
    call_user_code,
    describe_failure,
    version_key,
)

_NAME = re.compile(r"^(?P<version>\d+(?:\.\d+)*)_(?P<slug>[a-z0-9][a-z0-9_]*)(?:\.(?P<step>forward|rollback|validate))?\.(?P<ext>[a-z]+)$")
_DIRECTIVE_KEYS = {"backup", "irreversible", "flag", "risk", "vector", "noop", "allow"}
_ROLLBACK_DIRECTIVE_KEYS = {"backup", "noop"}
_BOM = "\ufeff"
_FLAG_NAME = re.compile(r"^[a-z0-9_.-]+$")
_FINDING_CODE = re.compile(r"^[A-Z]{2}[0-9]{3}$")
_IGNORED = {"README.md", ".gitkeep", "__pycache__", "__init__.py"}


def checksum(parts: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for label, data in parts:
        # Line endings are normalised so a checkout on another OS is not reported as drift.
        digest.update(label.encode() + b"\0" + data.replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()


def parse_directives(script: str, comment: str, path: Path) -> dict[str, str]:
    directives: dict[str, str] = {}
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith(comment):
            break  # directives live only in the header comment block
        body = stripped[len(comment):].strip()
        if not body.lower().startswith("polyshift:"):
            continue
        for token in _tokens(body.split(":", 1)[1]):
            key, _, value = token.partition("=")
            key = key.strip().lower()
            if key not in _DIRECTIVE_KEYS:
                raise MigrationLoadError(f"{path.name}: unknown directive {key!r} (known: {', '.join(sorted(_DIRECTIVE_KEYS))})")
            directives[key] = value.strip()
    return directives


def _split_outside_quotes(text: str, is_separator: Callable[[str], bool]) -> list[str]:
    """Split where ``is_separator`` says, except inside a double-quoted SQL name."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if is_separator(ch) and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return parts


def _tokens(text: str) -> list[str]:
    """Whitespace-separated directives (a quoted name such as "my table" is one)."""
    return [t for t in _split_outside_quotes(text, str.isspace) if t]


def split_names(text: str) -> list[str]:
    """Comma-separated names (a comma inside a quoted SQL name belongs to the name)."""
    return [n.strip() for n in _split_outside_quotes(text, lambda ch: ch == ",")]


def _checksummed(data: bytes, comment: str) -> bytes:
    """A script's bytes as its checksum sees them: without a line that is only the noop marker.
    The marker says an empty step is meant and changes nothing that runs, so marking a step that
    an earlier version applied while it accepted empty steps is not drift."""
    marker = re.compile(rb"^[ \t]*" + re.escape(comment.encode()) + rb"[ \t]*polyshift:[ \t]*noop[ \t]*(?:\r?\n|$)",
                        re.IGNORECASE | re.MULTILINE)
    return marker.sub(b"", data)


def read_script(path: Path, origin: str) -> str:
    """A script's text: UTF-8, without a byte-order mark."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationLoadError(f"{origin}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                                 "save it as UTF-8") from None
    return text.removeprefix(_BOM)


def has_statements(script: str, language: ScriptLanguage) -> bool:
    """Whether anything but whitespace, ``;`` and comments is left: the first such character is
    outside every comment, so no string literal needs reading to find it."""
    comment, nested = language.comment, language.nested_block_comments
    i, n = 0, len(script)
    while i < n:
        if script[i].isspace() or script[i] == ";":
            i += 1
        elif script.startswith(comment, i):
            end = script.find("\n", i)
            i = n if end == -1 else end + 1
        elif script.startswith("/*", i):
            depth, i = 1, i + 2
            while depth and i < n:
                if nested and script.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif script.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            if depth:
                return True  # unterminated: the parser names that mistake
        else:
            return True
    return False


def _check_not_empty(store: str, path: Path, script: str, language: ScriptLanguage) -> None:
    """An empty forward or rollback is a step someone forgot to write, unless it says it is empty."""
    comment = language.comment
    noop = "noop" in parse_directives(script, comment, path)
    filled = has_statements(script, language)
    if filled and noop:
        raise MigrationLoadError(f"{store}/{path.name}: marked '{comment} polyshift: noop' but has statements; "
                                 "remove one or the other")
    if not filled and not noop:
        raise MigrationLoadError(f"{store}/{path.name}: has no statements (only comments or whitespace); write the step, "
                                 f"or mark an intentionally empty one with '{comment} polyshift: noop' in its header")


def _scope(value: object, path: Path) -> tuple[str, ...]:
    if isinstance(value, str):
        items = split_names(value)
    elif isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    else:
        raise MigrationLoadError(f"{path.name}: backup scope must be a list of names, got {type(value).__name__}")
    if any(not item for item in items):
        raise MigrationLoadError(f"{path.name}: backup scope has an empty entry")
    return tuple(items)


def _risk(value: object, path: Path) -> Risk | None:
    if value in (None, ""):
        return None
    try:
        return Risk(str(value).upper())
    except ValueError:
        raise MigrationLoadError(f"{path.name}: risk must be A, B or C, got {value!r}") from None


def _flag(value: object, path: Path) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _FLAG_NAME.match(value):
        raise MigrationLoadError(f"{path.name}: flag name {value!r} must match [a-z0-9_.-]+")
    return value


def _allowed(value: str, path: Path) -> tuple[str, ...]:
    """``allow=PS130,PS110``: finding codes, each written as the analysis prints it."""
    codes = [c.strip().upper() for c in value.split(",")]
    if not value.strip() or any(not c for c in codes):
        raise MigrationLoadError(f"{path.name}: allow= needs finding codes separated by commas, e.g. allow=PS130,PS110")
    malformed = [c for c in codes if not _FINDING_CODE.match(c)]
    if malformed:
        raise MigrationLoadError(f"{path.name}: allow={value}: {', '.join(malformed)} is not a finding code "
                                 "(two letters and three digits, as 'polyshift plan' lists them, e.g. PS130)")
    return tuple(dict.fromkeys(codes))


def _load_script_migration(store: str, version: str, slug: str, files: dict[str, Path], language: ScriptLanguage) -> Migration:
    forward_path = files.get("forward")
    if forward_path is None:
        present = ", ".join(p.name for p in files.values())
        raise MigrationLoadError(f"{store}/{version}_{slug}: no forward script (found only {present})")
    texts = {step: read_script(path, f"{store}/{path.name}") for step, path in files.items()}
    comment = language.comment
    directives = parse_directives(texts["forward"], comment, forward_path)
    rollback_directives = parse_directives(texts["rollback"], comment, files["rollback"]) if "rollback" in files else {}
    misplaced = sorted(set(rollback_directives) - _ROLLBACK_DIRECTIVE_KEYS)
    if misplaced:
        raise MigrationLoadError(f"{store}/{files['rollback'].name}: a rollback script's header takes only 'backup=' "
                                 f"(the scope its step destroys); {', '.join(misplaced)} belongs in {forward_path.name}")
    irreversible = "irreversible" in directives
    if "rollback" not in files and not irreversible:
        raise MigrationLoadError(
            f"{store}/{forward_path.name}: no rollback script; add {version}_{slug}.rollback.{forward_path.suffix[1:]} "
            f"or mark the forward with '{comment} polyshift: irreversible'",
        )
    for step in ("forward", "rollback"):
        if step in files:
            _check_not_empty(store, files[step], texts[step], language)
    steps = {step: Step(name=step, path=path, script=texts[step]) for step, path in files.items()}
    # A validate script without statements checks nothing: the same as having none.
    validate = steps.get("validate") if has_statements(texts.get("validate", ""), language) else None
    return Migration(
        version=version,
        slug=slug,
        store=store,
        forward=steps["forward"],
        rollback=steps.get("rollback"),
        validate=validate,
        checksum=checksum([(s, _checksummed(files[s].read_bytes(), comment)) for s in ("forward", "rollback", "validate")
                           if s in files]),
        declared_scope=_scope(directives["backup"], forward_path) if "backup" in directives else None,
        rollback_scope=_scope(rollback_directives["backup"], files["rollback"]) if "backup" in rollback_directives else None,
        flag=_flag(directives.get("flag"), forward_path),
        declared_risk=_risk(directives.get("risk"), forward_path),
        irreversible=irreversible,
        allowed=_allowed(directives["allow"], forward_path) if "allow" in directives else (),
        directives=directives,
        language=language,
    )


def _load_python_migration(store: str, version: str, slug: str, path: Path) -> Migration:
    module_name = f"polyshift_migrations.{store}.m{version.replace('.', '_')}_{slug}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MigrationLoadError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        call_user_code(spec.loader.exec_module, module)
    except Exception as exc:  # a migration module that does not import is bad input, not a crash
        raise MigrationLoadError(f"{store}/{path.name}: import failed: {describe_failure(exc)}") from None
    sys.modules[module_name] = module
    forward = getattr(module, "forward", None)
    if not callable(forward):
        raise MigrationLoadError(f"{store}/{path.name}: defines no forward(ctx) function")
    irreversible = bool(getattr(module, "IRREVERSIBLE", False))
    rollback = getattr(module, "rollback", None)
    if not callable(rollback) and not irreversible:
        raise MigrationLoadError(f"{store}/{path.name}: defines no rollback(ctx); add one or set IRREVERSIBLE = True")
    if not hasattr(module, "BACKUP"):
        raise MigrationLoadError(
            f"{store}/{path.name}: Python migrations must declare BACKUP (the scope to back up; BACKUP = [] for none), "
            "since their effect cannot be inferred",
        )
    validate = getattr(module, "validate", None)
    return Migration(
        version=version,
        slug=slug,
        store=store,
        forward=Step("forward", path, function=forward),
        rollback=Step("rollback", path, function=rollback) if callable(rollback) else None,
        validate=Step("validate", path, function=validate) if callable(validate) else None,
        checksum=checksum([("python", path.read_bytes())]),
        declared_scope=_scope(module.BACKUP, path),
        flag=_flag(getattr(module, "FLAG", None), path),
        declared_risk=_risk(getattr(module, "RISK", None), path) or Risk.C,
        irreversible=irreversible,
        module=module,
    )


def load_store_migrations(directory: Path, store: str, kind: str) -> list[Migration]:
    """Every migration for one store, ordered by version. Raises MigrationLoadError on bad files."""
    if not directory.is_dir():
        return []
    lang = store_kind(kind, where=f"[stores.{store}]").script
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    python: dict[tuple[str, str], Path] = {}
    for path in sorted(directory.iterdir()):
        if path.name in _IGNORED or path.name.startswith("."):
            continue
        m = _NAME.match(path.name)
        if m is None:
            raise MigrationLoadError(
                f"{store}/{path.name}: not a migration file name; expected <version>_<slug>.forward.<ext>, "
                "<version>_<slug>.rollback.<ext>, <version>_<slug>.validate.<ext> or <version>_<slug>.py "
                "(slug: lowercase letters, digits, '_')",
            )
        key = (m["version"], m["slug"])
        if m["ext"] == "py" and m["step"] is None:
            python[key] = path
        elif lang is not None and m["ext"] == lang.extension and m["step"] is not None:
            groups.setdefault(key, {})[m["step"]] = path
        else:
            expected = f".{lang.extension} scripts or .py modules" if lang else ".py modules"
            raise MigrationLoadError(f"{store}/{path.name}: a {kind} store takes {expected}")
    migrations: list[Migration] = []
    for key in python.keys() & groups.keys():
        raise MigrationLoadError(f"{store}/{key[0]}_{key[1]}: both a Python module and scripts; keep one")
    for (version, slug), files in groups.items():
        assert lang is not None
        migrations.append(_load_script_migration(store, version, slug, files, lang))
    for (version, slug), path in python.items():
        migrations.append(_load_python_migration(store, version, slug, path))
    seen: dict[tuple[int, ...], Migration] = {}
    for mig in migrations:
        other = seen.get(mig.version_key)
        if other is not None:
            raise MigrationLoadError(f"{store}: version {mig.version} is used twice ({other.id} and {mig.id})")
        seen[mig.version_key] = mig
    return sorted(migrations, key=lambda mg: mg.version_key)


def load_all(migrations_dir: Path, stores: dict[str, str]) -> dict[str, list[Migration]]:
    """Migrations for every configured store (store name → kind), in config order."""
    if migrations_dir.is_dir():
        for child in migrations_dir.iterdir():
            if child.is_dir() and not child.name.startswith((".", "_")) and child.name not in stores:
                raise MigrationLoadError(
                    f"migrations/{child.name}/ has no matching [stores.{child.name}] in the config "
                    f"(configured: {', '.join(stores)})",
                )
    return {name: load_store_migrations(migrations_dir / name, name, kind) for name, kind in stores.items()}


def next_version(directory: Path) -> str:
    """The version after the highest one named in ``directory``, read from file names only, so
    scaffolding works while another scaffolded migration is still empty."""
    versions = [m["version"] for p in directory.iterdir() if (m := _NAME.match(p.name))] if directory.is_dir() else []
    if not versions:
        return "0001"
    head = max(versions, key=version_key).split(".")[0]
    return str(int(head) + 1).zfill(max(4, len(head)))


__all__ = ["checksum", "has_statements", "load_all", "load_store_migrations", "next_version", "parse_directives",
           "read_script", "split_names", "version_key"]
