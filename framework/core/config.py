"""polyshift.toml: project settings and one table per store, with ${ENV} interpolation."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from polyshift.framework.core import secrets
from polyshift.framework.core.durations import DURATION_BOUNDS as DURATION_BOUNDS  # re-exported: settings read them here
from polyshift.framework.core.durations import parse_duration as parse_duration
from polyshift.framework.core.durations import setting_duration as setting_duration
from polyshift.framework.core.errors import ConfigError
from polyshift.framework.core.kinds import StoreKind, store_kind, text

DEFAULT_STATE_URL = "sqlite:///.polyshift/state.db"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_STORE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


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

    @property
    def spec(self) -> StoreKind:
        """What the store's kind is: its adapter, script language, options and capabilities."""
        return store_kind(self.kind, where=f"[stores.{self.name}]")


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
    rehearsal_stores: dict[str, StoreConfig] = field(default_factory=dict)  # [rehearsal.stores.<name>]
    backups_url: str | None = None     # s3://bucket/prefix: backups in object storage instead of backups_dir

    def store(self, name: str) -> StoreConfig:
        try:
            return self.stores[name]
        except KeyError:
            known = ", ".join(self.stores) or "none"
            raise ConfigError(f"unknown store {name!r} (configured: {known})") from None


_STORE_KEYS = {"kind", "url", "password", "lock_timeout", "statement_timeout", "retry_deadline", "lock_wait"}


_URL_USERINFO = re.compile(r"^(?P<scheme>[^:/]+://)(?P<netloc>[^/?#]*)(?P<tail>.*)$", re.S)


def _store_url(where: str, url: str, password: Any, *, user_option: Any = None, needs_user: bool = False) -> str:
    """The URL drivers get: one password, in the userinfo, whether it was written there, in the
    query string (``?password=``, which libpq accepts) or as ``password =``. Every form is
    registered for redaction. ``needs_user``: a password without a user (in the URL or as
    ``user_option``) is refused."""
    if password is not None:
        password = text(where, "password", password)
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
    if needs_user and not unquote(user) and not user_option:
        raise ConfigError(f"{where}: a neo4j password needs a user: bolt://neo4j@host:7687, or user = \"...\"")
    secrets.register(given[0])
    normalised = f"{m['scheme']}{user}:{quote(given[0], safe='')}@{hostpart}{tail}"
    secrets.register_url(normalised)
    return normalised


def _store(name: str, table: Any, where: str | None = None) -> StoreConfig:
    where = where or f"[stores.{name}]"
    if not _STORE_NAME.match(name):
        raise ConfigError(f"{where}: store names use lowercase letters, digits, '-' and '_'")
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    kind = store_kind(table.get("kind"), where=where)
    url = table.get("url")
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"{where}: url is required, e.g. postgresql://user@host:5432/db")
    raw_options = {k: v for k, v in table.items() if k not in _STORE_KEYS}
    unknown = set(raw_options) - set(kind.options)
    if unknown:
        allowed = sorted(_STORE_KEYS | set(kind.options))
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for kind {kind.name!r} "
                          f"(known: {', '.join(allowed)})")
    options = {k: kind.options[k](where, k, v) for k, v in raw_options.items()}
    url = _store_url(where, url, table.get("password"), user_option=options.get("user"), needs_user=kind.password_needs_user)
    durations = {key: setting_duration(table.get(key, default), key, where=where)
                 for key, default in (("lock_timeout", 5), ("statement_timeout", 300), ("retry_deadline", 60), ("lock_wait", 0))}
    return StoreConfig(name=name, kind=kind.name, url=url, options=options, **durations)


def store_address(store: StoreConfig) -> tuple[str, str, int, str]:
    """Where a store's data lives: (server family, host, port, database). Two stores with one
    address are one store, however their URLs are spelled (user, password, options, localhost)."""
    family, default_port = store.spec.server, store.spec.default_port
    parts = urlsplit(store.url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = (query.get("host") or parts.hostname or "").lower()
    host = "127.0.0.1" if host in ("", "localhost", "::1", "[::1]") else host
    try:
        port = int(query.get("port") or parts.port or default_port)
    except ValueError:
        port = default_port
    path = unquote(parts.path.lstrip("/"))
    if family == "postgres":
        database = query.get("dbname") or path or unquote(parts.username or "")
    elif family == "redis":
        database = path or "0"  # a graph and a key prefix share their Redis database with everything in it
    else:
        database = str(store.options.get("database", "neo4j"))
    return family, host, port, database


def _rehearsal_stores(section: Any, stores: dict[str, StoreConfig], path: Path) -> dict[str, StoreConfig]:
    """``[rehearsal.stores.<name>]``: where ``polyshift rehearse`` runs store <name>'s releases instead
    of fresh embedded servers. The kind is the production store's; the address must not be any
    production store's, since a rehearsal rolls back, restores and re-applies."""
    if not isinstance(section, dict) or set(section) - {"stores"}:
        raise ConfigError(f"{path}: [rehearsal] holds only [rehearsal.stores.<name>] tables")
    tables = section.get("stores", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [rehearsal.stores] must hold one table per store")
    out = {}
    for name, table in tables.items():
        where = f"[rehearsal.stores.{name}]"
        production = stores.get(name)
        if production is None:
            raise ConfigError(f"{where}: no store {name!r} in [stores] (configured: {', '.join(stores)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        if table.get("kind", production.kind) != production.kind:
            raise ConfigError(f"{where}: kind {table['kind']!r} differs from the store's own kind {production.kind!r}")
        rehearsal = _store(name, {"kind": production.kind, **table}, where)
        for other in stores.values():
            if store_address(rehearsal) == store_address(other):
                raise ConfigError(f"{where}: url {rehearsal.display_url} is production store {other.name!r} "
                                  f"({other.display_url}); a rehearsal never runs on a production store",
                                  hint="point it at a staging store, or remove the table to rehearse on fresh embedded servers")
        out[name] = rehearsal
    return out


PROJECT_KEYS = ("migrations", "state_url", "backups", "name", "on_event", "events_log")
TOP_LEVEL_TABLES = ("project", "stores", "flags", "rehearsal")


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
    state_url = resolve_sqlite(_store_url("[project] state_url", project.get("state_url", DEFAULT_STATE_URL), None), root)
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
        rehearsal_stores=_rehearsal_stores(raw.get("rehearsal", {}), stores, path),
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
