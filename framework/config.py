"""polyshift.toml: project settings and one table per store, with ${ENV} interpolation."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework import secrets
from framework.errors import ConfigError

KNOWN_KINDS = ("postgres", "pgvector", "redis", "neo4j", "falkordb")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, None: 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}
_STORE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def parse_duration(value: Any, *, what: str) -> float:
    """Seconds from ``5``, ``"5s"``, ``"250ms"``, ``"2min"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration like '5s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ConfigError(f"{what}: expected a duration like '5s' or '250ms', got {value!r}")
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds < 0:
        raise ConfigError(f"{what}: duration must not be negative")
    return seconds


def interpolate(value: Any, where: str) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable {name} is not set (referenced as ${{{name}}})")
        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, where) for v in value]
    return value


@dataclass(frozen=True)
class StoreConfig:
    name: str
    kind: str
    url: str
    lock_timeout: float = 5.0
    statement_timeout: float = 300.0
    retry_deadline: float = 60.0
    lock_wait: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # never leak the URL password through a repr in a traceback
        return f"StoreConfig(name={self.name!r}, kind={self.kind!r}, url={secrets.url_without_password(self.url)!r})"

    @property
    def display_url(self) -> str:
        return secrets.url_without_password(self.url)


@dataclass(frozen=True)
class Config:
    path: Path
    root: Path
    migrations_dir: Path
    state_url: str
    backups_dir: Path
    stores: dict[str, StoreConfig]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    on_event: str | None = None
    events_log: Path | None = None

    def store(self, name: str) -> StoreConfig:
        try:
            return self.stores[name]
        except KeyError:
            known = ", ".join(self.stores) or "none"
            raise ConfigError(f"unknown store {name!r} (configured: {known})") from None


_STORE_KEYS = {"kind", "url", "password", "lock_timeout", "statement_timeout", "retry_deadline", "lock_wait"}
# Settings only some kinds understand; anything else in a store table is a typo worth stopping for.
KIND_OPTIONS: dict[str, set[str]] = {
    "postgres": set(),
    "pgvector": {"maintenance_work_mem", "ef_search"},
    "redis": {"prefix", "cluster", "lock_ttl"},
    "neo4j": {"user", "database", "lock_ttl"},
    "falkordb": {"graph", "lock_ttl"},
}


def _store(name: str, table: Any) -> StoreConfig:
    where = f"[stores.{name}]"
    if not _STORE_NAME.match(name):
        raise ConfigError(f"{where}: store names use lowercase letters, digits, '-' and '_'")
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    kind = table.get("kind")
    if kind not in KNOWN_KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KNOWN_KINDS)}, got {kind!r}")
    url = table.get("url")
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"{where}: url is required, e.g. postgresql://user@host:5432/db")
    password = table.get("password")
    if password is not None:
        secrets.register(str(password))
        if "@" in url:
            scheme, rest = url.split("://", 1)
            userinfo, hostpart = rest.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            from urllib.parse import quote

            url = f"{scheme}://{user}:{quote(str(password), safe='')}@{hostpart}"
    m = re.match(r"^[^:]+://[^:/@]*:([^@/]*)@", url)
    if m:
        from urllib.parse import unquote

        secrets.register(m.group(1))
        secrets.register(unquote(m.group(1)))
    options = {k: v for k, v in table.items() if k not in _STORE_KEYS}
    unknown = set(options) - KIND_OPTIONS[kind]
    if unknown:
        allowed = sorted(_STORE_KEYS | KIND_OPTIONS[kind])
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for kind {kind!r} (known: {', '.join(allowed)})")
    return StoreConfig(
        name=name,
        kind=kind,
        url=url,
        lock_timeout=parse_duration(table.get("lock_timeout", 5), what=f"{where} lock_timeout"),
        statement_timeout=parse_duration(table.get("statement_timeout", 300), what=f"{where} statement_timeout"),
        retry_deadline=parse_duration(table.get("retry_deadline", 60), what=f"{where} retry_deadline"),
        lock_wait=parse_duration(table.get("lock_wait", 0), what=f"{where} lock_wait"),
        options=options,
    )


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (run 'polyshift init' to create one)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    raw = interpolate(raw, path.name)
    root = path.resolve().parent
    project = raw.get("project", {})
    if not isinstance(project, dict):
        raise ConfigError(f"{path}: [project] must be a table")
    unknown = set(project) - {"migrations", "state_url", "backups", "name", "on_event", "events_log"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [project]: {', '.join(sorted(unknown))}")
    stores_raw = raw.get("stores", {})
    if not isinstance(stores_raw, dict) or not stores_raw:
        raise ConfigError(f"{path}: define at least one [stores.<name>] table")
    stores = {name: _store(name, table) for name, table in stores_raw.items()}
    state_url = str(project.get("state_url", "sqlite:///.polyshift/state.db"))
    state_url = _resolve_sqlite(state_url, root)
    for url in (state_url,):
        m = re.match(r"^[^:]+://[^:/@]*:([^@/]*)@", url)
        if m:
            secrets.register(m.group(1))
    return Config(
        path=path,
        root=root,
        migrations_dir=(root / project.get("migrations", "migrations")).resolve(),
        state_url=state_url,
        backups_dir=(root / project.get("backups", ".polyshift/backups")).resolve(),
        stores=stores,
        raw=raw,
        on_event=_on_event(project.get("on_event"), path),
        events_log=(root / project.get("events_log", ".polyshift/events.jsonl")).resolve(),
    )


def _on_event(value: Any, path: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: [project] on_event must be a shell command (a non-empty string)")
    return value


def _resolve_sqlite(url: str, root: Path) -> str:
    """Relative sqlite paths are relative to the config file, not the working directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        return prefix + str((root / url[len(prefix):]).resolve())
    return url
