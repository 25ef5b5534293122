"""Everything a command needs, opened once: config, control plane, artifact store, migrations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from polyshift.framework.control.artifacts import ArtifactStore, open_artifact_store
from polyshift.framework.control.state import ControlPlane
from polyshift.framework.core.config import Config, load_config
from polyshift.framework.core.loader import load_all
from polyshift.framework.core.migration import Migration
from polyshift.framework.core.progress import NullProgress, Progress


@dataclass
class Project:
    config: Config
    state: ControlPlane
    artifacts: ArtifactStore
    progress: Progress = field(default_factory=NullProgress)
    _migrations: dict[str, list[Migration]] | None = None

    @property
    def migrations(self) -> dict[str, list[Migration]]:
        if self._migrations is None:
            self._migrations = load_all(self.config.migrations_dir, {n: s.kind for n, s in self.config.stores.items()})
        return self._migrations

    def migration(self, store: str, version: str) -> Migration:
        for m in self.migrations[store]:
            if m.version == version:
                return m
        raise KeyError(version)

    def close(self) -> None:
        self.state.close()


def open_project(config_path: str | Path, progress: Progress | None = None) -> Project:
    config = load_config(config_path)
    state = ControlPlane(config.state_url)
    # Manifests are checked against the digests the control plane recorded when they were sealed.
    return Project(config=config, state=state, artifacts=open_artifact_store(config, state),
                   progress=progress or NullProgress())
