"""What every command that runs releases shares: the project, the store-level runner, the
event channel and, opened only when a release has a flag, the flag admin.

``up`` (``pipeline``), ``recover`` (``recovery``), ``emergency-rollback`` (``emergency``) and
``releases`` (``listing``) each take a session instead of inheriting from one another.
"""

from __future__ import annotations

from typing import Any, Self

from polyshift.feature_flags.admin import FlagAdmin
from polyshift.framework.engine.bluegreen import open_flags
from polyshift.framework.engine.events import Display, Events
from polyshift.framework.engine.project import Project
from polyshift.framework.engine.releases import Release, group, load_settings
from polyshift.framework.engine.runner import Runner


def _quiet(_kind: str, _data: dict[str, Any]) -> None:
    pass


class Session:
    def __init__(self, project: Project, display: Display | None = None) -> None:
        self.project = project
        self.runner = Runner(project, display)
        self.events = Events(project.config, project.state, display or _quiet)
        self._flags: FlagAdmin | None = None

    def flags(self) -> FlagAdmin:
        if self._flags is None:
            self._flags = open_flags(self.runner)
        return self._flags

    def releases(self, names: list[str] | None = None) -> list[Release]:
        """Releases of the given stores (every store by default), oldest first."""
        stores = list(self.project.config.stores) if names is None else names
        migrations = {name: self.project.migrations[name] for name in stores}
        return group(self.project.config, migrations, load_settings(self.project.config))

    def close(self) -> None:
        if self._flags is not None:
            self._flags.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
