"""The ``[flags]`` section of polyshift.toml: which store holds the flags, and how often clients refresh.

    [flags]
    store = "state"                 # the control-plane database (default)
    # store = "redis"
    # url = "redis://127.0.0.1:6379/0"
    # prefix = "polyshift:"
    refresh_interval = "1s"         # how stale an application's view may get

An application reads only this table (and, for flags in the control plane, ``[project]
state_url``): the stores' tables and the secrets their ``${ENV}`` references name are never
read, so an application process needs none of the migrator's credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyshift.feature_flags.stores import FlagStore
from polyshift.framework.core import secrets
from polyshift.framework.core.config import (
    DEFAULT_STATE_URL,
    Config,
    interpolate,
    read_toml,
    resolve_sqlite,
    setting_duration,
)
from polyshift.framework.core.errors import ConfigError

_KEYS = {"store", "url", "prefix", "refresh_interval"}
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class FlagSettings:
    store: str
    url: str
    prefix: str
    refresh_interval: float


def _settings(section: Any, state_url: str | None, where: str) -> FlagSettings:
    """The one validation of a ``[flags]`` table; ``state_url`` is the control plane's URL."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: [flags] must be a table")
    unknown = set(section) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in [flags]: {', '.join(sorted(unknown))} (known: {', '.join(sorted(_KEYS))})")
    store = section.get("store", "state")
    if store not in ("state", "redis"):
        raise ConfigError(f"{where}: [flags] store must be 'state' or 'redis', got {store!r}")
    url = section.get("url", state_url if store == "state" else None)
    if store == "redis" and (not isinstance(url, str) or not url.startswith(_REDIS_SCHEMES)):
        raise ConfigError(f"{where}: [flags] store = 'redis' needs url = 'redis://host:port/db'")
    prefix = section.get("prefix", "polyshift:")
    for key, value in (("url", url), ("prefix", prefix)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: [flags] {key}: expected a non-empty string, got {value!r}")
    assert isinstance(url, str) and isinstance(prefix, str)
    secrets.register_url(url)
    interval = setting_duration(section.get("refresh_interval", 1), "refresh_interval", where="[flags]")
    return FlagSettings(store, url, prefix, interval)


def flag_settings(config: Config) -> FlagSettings:
    """``[flags]`` of a fully loaded config (the migrator's view)."""
    return _settings(config.raw.get("flags", {}), config.state_url, str(config.path))


def settings_from_path(path: str | Path) -> FlagSettings:
    """``[flags]`` of polyshift.toml as an application reads it: that table alone is interpolated
    (and ``[project] state_url`` when the flags live in the control plane)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    raw = read_toml(path)
    section = interpolate(raw.get("flags", {}), f"{path.name} [flags]")
    state_url = None
    if isinstance(section, dict) and section.get("store", "state") == "state" and "url" not in section:
        project = raw.get("project", {})
        value = project.get("state_url", DEFAULT_STATE_URL) if isinstance(project, dict) else DEFAULT_STATE_URL
        state_url = resolve_sqlite(str(interpolate(value, f"{path.name} [project] state_url")), path.resolve().parent)
    return _settings(section, state_url, str(path))


def settings_from_url(url: str, *, prefix: str = "polyshift:", refresh_interval: float = 1.0) -> FlagSettings:
    """Settings for an application given only the flags' URL: Redis, or the control plane's database."""
    store = "redis" if url.startswith(_REDIS_SCHEMES) else "state"
    return _settings({"store": store, "url": url, "prefix": prefix, "refresh_interval": refresh_interval}, None, "flags URL")


def open_store(settings: FlagSettings) -> FlagStore:
    """The store itself; its driver is imported here, on use."""
    if settings.store == "redis":
        from polyshift.feature_flags.stores import RedisFlagStore

        return RedisFlagStore(settings.url, settings.prefix)
    from polyshift.feature_flags.sql_store import SqlFlagStore  # SQLAlchemy and the control plane, only for this store

    return SqlFlagStore(settings.url)
