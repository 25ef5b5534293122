"""polyshift.toml: project settings and one table per store, with ${ENV} interpolation."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from polyshift.framework.core import secrets
from polyshift.framework.core.errors import ConfigError

DEFAULT_STATE_URL = "sqlite:///.polyshift/state.db"
KNOWN_KINDS = ("postgres", "pgvector", "redis", "neo4j", "falkordb")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, None: 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}
_STORE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
# (minimum, maximum) seconds for every duration setting. Below the minimum a value means "no
# limit" to the server or a busy loop to us; above the maximum it is a typo ("1000000h").
DURATION_BOUNDS: dict[str, tuple[float, float]] = {
    "lock_timeout": (0.001, HOUR),
    "statement_timeout": (0.001, 7 * DAY),
    "retry_deadline": (0.0, DAY),
    "lock_wait": (0.0, DAY),
    "lock_ttl": (1.0, HOUR),
    "bake_seconds": (0.0, DAY),
    "timeout": (0.001, HOUR),          # a gate's
    "refresh_interval": (0.1, HOUR),   # [flags]
    "wait": (0.0, DAY),                # emergency-rollback --wait
}


def human_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    for unit, size in (("days", DAY), ("h", HOUR), ("min", MINUTE)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def parse_duration(value: Any, *, what: str, bounds: tuple[float, float] = (0.0, 7 * DAY)) -> float:
    """Seconds from ``5``, ``"5s"``, ``"250ms"``, ``"2min"``, within ``bounds`` (inclusive).

    NaN and infinities are refused, whatever the bounds: a NaN deadline never passes."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration like '5s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ConfigError(f"{what}: expected a duration like '5s' or '250ms', got {value!r}")
    low, high = bounds
    if not math.isfinite(seconds) or not low <= seconds <= high:
        raise ConfigError(f"{what}: must be between {human_duration(low)} and {human_duration(high)}, got {value!r}")
    return seconds


def setting_duration(value: Any, setting: str, *, where: str) -> float:
    """A duration setting named in DURATION_BOUNDS, checked against its bounds."""
    return parse_duration(value, what=f"{where} {setting}", bounds=DURATION_BOUNDS[setting])


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
    backups_url: str | None = None     # s3://bucket/prefix: backups in object storage instead of backups_dir

    def store(self, name: str) -> StoreConfig:
        try:
            return self.stores[name]
        except KeyError:
            known = ", ".join(self.stores) or "none"
            raise ConfigError(f"unknown store {name!r} (configured: {known})") from None


_STORE_KEYS = {"kind", "url", "password", "lock_timeout", "statement_timeout", "retry_deadline", "lock_wait"}


def _text(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} {key}: expected a non-empty string, got {value!r}")
    return value


def _flag(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} {key}: expected true or false, got {value!r}")
    return value


def _ef_search(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ConfigError(f"{where} {key}: expected a whole number from 1 to 1000 (pgvector's range), got {value!r}")
    return value


def _memory(where: str, key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not re.fullmatch(r"\d+\s*(kB|MB|GB|TB)?", str(value)):
        raise ConfigError(f"{where} {key}: expected a PostgreSQL memory size like '256MB', got {value!r}")
    return str(value)


def _ttl(where: str, key: str, value: Any) -> float:
    return setting_duration(value, key, where=where)


# Settings only some kinds understand, each with its check; anything else in a store table is a
# typo worth stopping for.
KIND_OPTIONS: dict[str, dict[str, Callable[[str, str, Any], Any]]] = {
    "postgres": {},
    "pgvector": {"maintenance_work_mem": _memory, "ef_search": _ef_search},
    "redis": {"prefix": _text, "cluster": _flag, "lock_ttl": _ttl},
    "neo4j": {"user": _text, "database": _text, "lock_ttl": _ttl},
    "falkordb": {"graph": _text, "lock_ttl": _ttl},
}
_URL_USERINFO = re.compile(r"^(?P<scheme>[^:/]+://)(?P<netloc>[^/?#]*)(?P<tail>.*)$", re.S)


def _store_url(where: str, kind: str, url: str, password: Any, options: dict[str, Any]) -> str:
    """The URL drivers get: one password, in the userinfo, whether it was written there, in the
    query string (``?password=``, which libpq accepts) or as ``password =``. Every form is
    registered for redaction."""
    if password is not None:
        password = _text(where, "password", password)
    m = _URL_USERINFO.match(url)
    if m is None:
        return url
    userinfo, _, hostpart = m["netloc"].rpartition("@")
    user, colon, in_userinfo = userinfo.partition(":")
    tail, in_query = secrets.pop_query_password(m["tail"])
    given = [p for p in (unquote(in_userinfo) if colon else None, in_query, password) if p is not None]
    if not given:
        return url
    if len(set(given)) > 1:
        raise ConfigError(f"{where}: two different passwords (in the url and in password =, or in the url's userinfo "
                          "and its query string); keep one")
    if kind == "neo4j" and not unquote(user) and not options.get("user"):
        raise ConfigError(f"{where}: a neo4j password needs a user: bolt://neo4j@host:7687, or user = \"...\"")
    secrets.register(given[0])
    normalised = f"{m['scheme']}{user}:{quote(given[0], safe='')}@{hostpart}{tail}"
    secrets.register_url(normalised)
    return normalised


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
    raw_options = {k: v for k, v in table.items() if k not in _STORE_KEYS}
    unknown = set(raw_options) - set(KIND_OPTIONS[kind])
    if unknown:
        allowed = sorted(_STORE_KEYS | set(KIND_OPTIONS[kind]))
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for kind {kind!r} (known: {', '.join(allowed)})")
    options = {k: KIND_OPTIONS[kind][k](where, k, v) for k, v in raw_options.items()}
    url = _store_url(where, kind, url, table.get("password"), options)
    durations = {key: setting_duration(table.get(key, default), key, where=where)
                 for key, default in (("lock_timeout", 5), ("statement_timeout", 300), ("retry_deadline", 60), ("lock_wait", 0))}
    return StoreConfig(name=name, kind=kind, url=url, options=options, **durations)


PROJECT_KEYS = ("migrations", "state_url", "backups", "name", "on_event", "events_log")
TOP_LEVEL_TABLES = ("project", "stores", "flags")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (run 'polyshift init' to create one)")
    raw = interpolate(read_toml(path), path.name)
    root = path.resolve().parent
    unknown_tables = sorted(set(raw) - set(TOP_LEVEL_TABLES))
    if unknown_tables:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(f'[{t}]' for t in unknown_tables)} "
                          f"(known: {', '.join(f'[{t}]' for t in TOP_LEVEL_TABLES)})")
    project = raw.get("project", {})
    if not isinstance(project, dict):
        raise ConfigError(f"{path}: [project] must be a table")
    unknown = set(project) - set(PROJECT_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [project]: {', '.join(sorted(unknown))} (known: {', '.join(PROJECT_KEYS)})")
    for key, value in project.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{path}: [project] {key}: expected a non-empty string, got {value!r}")
    stores_raw = raw.get("stores", {})
    if not isinstance(stores_raw, dict) or not stores_raw:
        raise ConfigError(f"{path}: define at least one [stores.<name>] table")
    stores = {name: _store(name, table) for name, table in stores_raw.items()}
    state_url = resolve_sqlite(_store_url("[project] state_url", "state", project.get("state_url", DEFAULT_STATE_URL),
                                           None, {}), root)
    backups = project.get("backups", ".polyshift/backups")
    backups_url = None
    if "://" in backups:
        parse_s3_url(backups, where=f"{path}: [project] backups")
        backups_url, backups = backups, ".polyshift/backups"
    config = Config(
        path=path,
        root=root,
        migrations_dir=(root / project.get("migrations", "migrations")).resolve(),
        state_url=state_url,
        backups_dir=(root / backups).resolve(),
        backups_url=backups_url,
        stores=stores,
        raw=raw,
        on_event=project.get("on_event"),
        events_log=(root / project.get("events_log", ".polyshift/events.jsonl")).resolve(),
    )
    from polyshift.feature_flags.settings import flag_settings  # [flags] is the feature_flags package's; checked here, at load

    flag_settings(config)
    return config


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_s3_url(url: str, *, where: str = "backups") -> tuple[str, str]:
    """``s3://bucket/prefix`` as (bucket, prefix without surrounding slashes); ConfigError naming
    what is wrong. Endpoint and credentials come from the standard AWS environment, not the URL."""
    scheme, _, rest = url.partition("://")
    if scheme != "s3":
        raise ConfigError(f"{where}: {url!r}: only s3:// URLs name object storage (or give a directory path)")
    if "@" in rest or "?" in rest or "#" in rest:
        raise ConfigError(f"{where}: {url!r}: write s3://bucket/prefix; credentials and the endpoint come from the "
                          "standard AWS settings (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ~/.aws/config)")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(f"{where}: {url!r}: {bucket!r} is not a bucket name (3-63 lowercase letters, digits, dots, hyphens)")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ConfigError(f"{where}: {url!r}: the prefix has an empty, '.' or '..' segment")
    return bucket, prefix


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file: UTF-8 as TOML requires, a byte-order mark ignored, mistakes named."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def resolve_sqlite(url: str, root: Path) -> str:
    """Relative sqlite paths are relative to the config file, not the working directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        return prefix + str((root / url[len(prefix):]).resolve())
    return url
