"""Alembic: Python revisions chained by ``down_revision``, imported as the SQL Alembic itself renders
for them offline (what ``alembic upgrade PREV:REV --sql`` prints, per revision and direction).

Each revision's ``upgrade()`` and ``downgrade()`` run against Alembic's own ``MigrationContext`` in
``as_sql`` mode for PostgreSQL, through ``Operations.context``: the ``op`` calls emit their DDL into
a buffer instead of a database. The project's ``env.py`` is not run (it usually connects, or loads
the application's settings); the version table's statements and BEGIN/COMMIT are not emitted, as
polyshift keeps its own ledger and transaction. What cannot be rendered offline (a revision that
reads the database through ``op.get_bind()``, an exception in its code) is a problem naming the
file.

Alembic revision ids are not ordered, so the import numbers the revisions 0001, 0002, … in
``down_revision`` order from the base, and the provenance header keeps each revision id: baseline
finds the version whose provenance names the id in ``alembic_version``. polyshift applies one line
of migrations, so a branched history (several heads, a merge revision) is refused by file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyshift.framework.adopt.model import Format, ImportedMigration, ImportPlan, Issue, Language, Problem, Script, relative, slugify
from polyshift.framework.core.errors import UsageError

if TYPE_CHECKING:
    from alembic.script import Script as Revision
    from alembic.script import ScriptDirectory

INI = "alembic.ini"


def _alembic() -> None:
    try:
        import alembic  # noqa: F401
    except ImportError:
        raise UsageError("--from alembic renders the revisions with Alembic itself, which is not installed here",
                         hint="pip install alembic (the version the project uses) next to polyshift") from None


def script_directory(source: Path) -> tuple[ScriptDirectory, Path]:
    """Alembic's script directory from an ``alembic.ini`` (or a directory holding one), or from the
    script directory itself (the one with ``env.py`` and ``versions/``); and the root that file
    names in the plan are relative to."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    if not source.exists():
        raise UsageError(f"{source}: no such file or directory")
    ini = source if source.is_file() else source / INI
    try:
        if ini.is_file():
            config = Config(str(ini))
            location = config.get_main_option("script_location")
            if not location:
                raise UsageError(f"{ini}: no script_location in its [alembic] section")
            if not Path(location).is_absolute():  # alembic reads it from the working directory; the ini's is meant
                config.set_main_option("script_location", str(ini.parent / location))
            return ScriptDirectory.from_config(config), ini.parent
        if (source / "env.py").is_file() or (source / "versions").is_dir():
            return ScriptDirectory(str(source)), source
    except CommandError as exc:
        raise UsageError(f"{source}: Alembic cannot read it: {exc}") from None
    raise UsageError(f"{source}: neither an alembic.ini nor an Alembic script directory (env.py, versions/)")


def _render(revision: Revision, step: str) -> str:
    """The SQL Alembic emits for one revision's ``upgrade`` or ``downgrade`` on PostgreSQL, offline."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    buffer = io.StringIO()
    context = MigrationContext.configure(dialect_name="postgresql",
                                         opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True})
    with Operations.context(context):
        getattr(revision.module, step)()
    return buffer.getvalue()


class AlembicRevisions:
    format = Format.ALEMBIC
    language = Language.SQL

    def read(self, source: Path) -> ImportPlan:
        _alembic()
        plan = ImportPlan(self.format, self.language, source)
        directory, root = script_directory(source)
        try:
            revisions = list(reversed(list(directory.walk_revisions("base", "heads"))))
            heads = directory.get_heads()
        except Exception as exc:  # loading runs the project's revision modules: any error is theirs
            plan.problems.append(Problem(relative(Path(directory.versions), root), Issue.MALFORMED,
                                         f"Alembic cannot load the revisions: {type(exc).__name__}: {exc}"))
            return plan
        if len(heads) > 1:
            plan.problems.append(Problem(relative(Path(directory.versions), root), Issue.UNSUPPORTED,
                                         f"{len(heads)} heads ({', '.join(sorted(heads))}): polyshift applies one line of "
                                         "migrations; merge them ('alembic merge heads') and import again"))
        width = max(4, len(str(len(revisions))))
        known = set()
        for number, revision in enumerate(revisions, 1):
            name = relative(Path(revision.path), root)
            known.add(Path(revision.path).resolve())
            m = ImportedMigration(str(number).zfill(width), slugify(revision.doc or revision.revision), revision.revision,
                                  Script("", f"{name} (upgrade)"))
            if revision.is_merge_point:
                m.problems.append(Problem(name, Issue.UNSUPPORTED, f"merge revision of {', '.join(_down(revision))}: polyshift "
                                          "applies one line of migrations"))
            if revision.dependencies:
                m.problems.append(Problem(name, Issue.UNSUPPORTED, f"depends_on {revision.dependencies}: a dependency across "
                                          "branches has no polyshift counterpart"))
            for step in ("upgrade", "downgrade"):
                try:
                    text = _render(revision, step)
                except Exception as exc:  # the revision's own code raised: its file and error are the report
                    m.problems.append(Problem(name, Issue.UNSUPPORTED, f"{step}() cannot be rendered as offline SQL: "
                                              f"{type(exc).__name__}: {exc}"))
                    continue
                script = Script(text, f"{name} ({step})")
                if step == "upgrade":
                    m.forward = script
                else:
                    m.rollback = script
            m.notes.append(f"{name}: revision {revision.revision} rendered by Alembic as PostgreSQL SQL (offline mode)")
            plan.migrations.append(m)
        for path in sorted(Path(directory.versions).glob("*.py")):
            if path.name != "__init__.py" and path.resolve() not in known:
                plan.ignored.append(f"{relative(path, root)}: no revision Alembic loads")
        return plan


def _down(revision: Revision) -> list[str]:
    down: Any = revision.down_revision
    return [down] if isinstance(down, str) else list(down or ())
