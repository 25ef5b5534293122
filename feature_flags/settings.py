"""The ``[flags]`` section of polyshift.toml: which store holds the flags, and how often clients refresh.

    [flags]
    store = "state"                 # the control-plane database (default)
    # store = "redis"
    # url = "redis://127.0.0.1:6379/0"
    # prefix = "polyshift:"
    refresh_interval = "1s"         # how stale an application's view may get
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from polyshift.feature_flags.stores import FlagStore, RedisFlagStore, SqlFlagStore
from polyshift.framework.core import secrets
from polyshift.framework.core.config import Config, load_config, setting_duration
from polyshift.framework.core.errors import ConfigError


@dataclass(frozen=True)
class FlagSettings:
    store: str
    url: str
    prefix: str
    refresh_interval: float


def flag_settings(config: Config) -> FlagSettings:
    section = config.raw.get("flags", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{config.path}: [flags] must be a table")
    unknown = set(section) - {"store", "url", "prefix", "refresh_interval"}
    if unknown:
        raise ConfigError(f"{config.path}: unknown key(s) in [flags]: {', '.join(sorted(unknown))}")
    store = section.get("store", "state")
    if store not in ("state", "redis"):
        raise ConfigError(f"{config.path}: [flags] store must be 'state' or 'redis', got {store!r}")
    url = section.get("url", config.state_url if store == "state" else None)
    if store == "redis" and (not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://"))):
        raise ConfigError(f"{config.path}: [flags] store = 'redis' needs url = 'redis://host:port/db'")
    for key, value in (("url", url), ("prefix", section.get("prefix", "polyshift:"))):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{config.path}: [flags] {key}: expected a non-empty string, got {value!r}")
    secrets.register_url(url)
    interval = setting_duration(section.get("refresh_interval", 1), "refresh_interval", where="[flags]")
    return FlagSettings(store, url, section.get("prefix", "polyshift:"), interval)


def open_store(settings: FlagSettings) -> FlagStore:
    if settings.store == "redis":
        return RedisFlagStore(settings.url, settings.prefix)
    return SqlFlagStore(settings.url)


def settings_from_path(path: str | Path) -> FlagSettings:
    return flag_settings(load_config(path))
