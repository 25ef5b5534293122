"""Releases: migrations that share a version across stores, and their settings in migrations/releases.toml.

    [release."0003"]
    flag = "docs_v2"                  # the flag the cutover moves (none: no cutover)
    stages = [1, 10, 50, 100]         # percent of subjects on green at each stage
    bake_seconds = 30                 # wait at each stage before the health gates are read
    order = ["main", "vectors", "graph", "cache"]   # forward order (default: the config's order)
    gates = [
      { kind = "sql", store = "main", query = "SELECT count(*) = 0 FROM failed_jobs" },
      { kind = "http", url = "http://127.0.0.1:8080/health", timeout = 2 },
    ]

Every error here is found before any store is touched (exit 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from polyshift.feature_flags.model import validate_name
from polyshift.framework.core.config import Config, interpolate, read_toml, setting_duration
from polyshift.framework.core.errors import ConfigError, PolyshiftError
from polyshift.framework.core.kinds import Capability
from polyshift.framework.core.migration import Migration, version_key

DEFAULT_STAGES = (1.0, 10.0, 50.0, 100.0)
GATE_KINDS = {
    "sql": ({"store", "query"}, {"timeout", "name"}),
    "http": ({"url"}, {"timeout", "name"}),
    "shell": ({"command"}, {"timeout", "name"}),
    "python": ({"callable"}, {"timeout", "name"}),
}
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class Gate:
    kind: str
    name: str
    timeout: float
    spec: dict[str, Any]

    def describe(self) -> str:
        target = self.spec.get("query") or self.spec.get("url") or self.spec.get("command") or self.spec.get("callable")
        return f"{self.kind} gate {self.name!r} ({target})"


@dataclass(frozen=True)
class ReleaseSettings:
    version: str
    flag: str | None = None
    stages: tuple[float, ...] = DEFAULT_STAGES
    bake_seconds: float = 0.0
    gates: tuple[Gate, ...] = ()
    order: tuple[str, ...] | None = None


@dataclass
class Release:
    """One version: at most one migration per store, applied in ``order``."""

    version: str
    settings: ReleaseSettings
    migrations: dict[str, Migration] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def ordered(self) -> list[Migration]:
        return [self.migrations[s] for s in self.order if s in self.migrations]


def _where(version: str) -> str:
    return f'migrations/releases.toml [release."{version}"]'


def _gate(raw: Any, version: str, index: int, config: Config) -> Gate:
    where = f"{_where(version)} gates[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each gate is a table like {{ kind = \"http\", url = \"...\" }}")
    kind = raw.get("kind")
    if kind not in GATE_KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(GATE_KINDS)}, got {kind!r}")
    required, optional = GATE_KINDS[kind]
    missing = required - set(raw)
    if missing:
        raise ConfigError(f"{where}: a {kind} gate needs {', '.join(sorted(missing))}")
    unknown = set(raw) - required - optional - {"kind"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for a {kind} gate")
    for key in required:
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise ConfigError(f"{where}: {key} must be a non-empty string")
    if kind == "sql":
        store = config.stores.get(raw["store"])
        if store is None:
            raise ConfigError(f"{where}: unknown store {raw['store']!r} (configured: {', '.join(config.stores)})")
        if not store.spec.can(Capability.SQL):
            raise ConfigError(f"{where}: store {raw['store']!r} is {store.kind}; sql gates need a postgres or pgvector store")
    if kind == "http" and not raw["url"].startswith(("http://", "https://")):
        raise ConfigError(f"{where}: url must start with http:// or https://")
    if kind == "python" and not _CALLABLE.match(raw["callable"]):
        raise ConfigError(f"{where}: callable must look like 'package.module:function', got {raw['callable']!r}")
    timeout = setting_duration(raw.get("timeout", 5), "timeout", where=where)
    spec = {k: v for k, v in raw.items() if k in required}
    return Gate(kind, str(raw.get("name") or f"{kind}-{index + 1}"), timeout, spec)


def _stages(raw: Any, version: str) -> tuple[float, ...]:
    where = f"{_where(version)} stages"
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a non-empty list of percentages like [1, 10, 50, 100]")
    stages: list[float] = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
            raise ConfigError(f"{where}: {value!r} is not a percentage in (0, 100]")
        if stages and value <= stages[-1]:
            raise ConfigError(f"{where}: stages must increase, {value:g} follows {stages[-1]:g}")
        stages.append(float(value))
    if stages[-1] != 100:
        raise ConfigError(f"{where}: the last stage must be 100 (a release ends with everyone on green)")
    return tuple(stages)


def _settings(version: str, raw: Any, config: Config) -> ReleaseSettings:
    where = _where(version)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - {"flag", "stages", "bake_seconds", "gates", "order"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: bake_seconds, flag, gates, order, stages)")
    flag = raw.get("flag")
    if flag is not None:
        try:
            validate_name(flag if isinstance(flag, str) else repr(flag))
        except PolyshiftError as exc:
            raise ConfigError(f"{where} flag: {exc}") from None
    gates_raw = raw.get("gates", [])
    if not isinstance(gates_raw, list):
        raise ConfigError(f"{where} gates: expected a list of tables")
    gates = tuple(_gate(g, version, i, config) for i, g in enumerate(gates_raw))
    if gates and flag is None:
        raise ConfigError(f"{where}: gates are read during the cutover, which needs a flag")
    order = raw.get("order")
    if order is not None:
        if not isinstance(order, list) or not all(isinstance(s, str) for s in order):
            raise ConfigError(f"{where} order: expected a list of store names")
        unknown_stores = [s for s in order if s not in config.stores]
        if unknown_stores:
            raise ConfigError(f"{where} order: unknown store(s) {', '.join(unknown_stores)} (configured: {', '.join(config.stores)})")
        if len(set(order)) != len(order):
            raise ConfigError(f"{where} order: a store is listed twice")
        order = tuple(order)
    return ReleaseSettings(
        version=version,
        flag=flag,
        stages=_stages(raw["stages"], version) if "stages" in raw else DEFAULT_STAGES,
        bake_seconds=setting_duration(raw.get("bake_seconds", 0), "bake_seconds", where=where),
        gates=gates,
        order=order,
    )


def load_settings(config: Config) -> dict[str, ReleaseSettings]:
    path: Path = config.migrations_dir / "releases.toml"
    if not path.is_file():
        return {}
    raw = interpolate(read_toml(path), path.name)
    unknown = set(raw) - {"release"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}; releases are [release.\"VERSION\"]")
    table = raw.get("release", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [release] must hold one table per version")
    settings = {}
    for version, body in table.items():
        if not re.fullmatch(r"\d+(\.\d+)*", version):
            raise ConfigError(f'{path}: [release."{version}"]: a version is digits like "0003"')
        settings[version] = _settings(version, body, config)
    return settings


def group(config: Config, migrations: dict[str, list[Migration]], settings: dict[str, ReleaseSettings]) -> list[Release]:
    """Every version on disk as a release, oldest first."""
    by_version: dict[str, dict[str, Migration]] = {}
    for store, items in migrations.items():
        for m in items:
            by_version.setdefault(m.version, {})[store] = m
    unknown = sorted(set(settings) - set(by_version), key=version_key)
    if unknown:
        raise ConfigError(f"migrations/releases.toml: release(s) {', '.join(unknown)} have no migration in any store")
    releases = []
    for version in sorted(by_version, key=version_key):
        s = _with_declared_flag(settings.get(version, ReleaseSettings(version)), by_version[version])
        order = list(s.order) if s.order else list(config.stores)
        missing = [store for store in by_version[version] if store not in order]
        if missing:
            raise ConfigError(f"{_where(version)} order: leaves out store(s) {', '.join(missing)} that have a {version} migration")
        releases.append(Release(version, s, by_version[version], order))
    return releases


def _with_declared_flag(settings: ReleaseSettings, migrations: dict[str, Migration]) -> ReleaseSettings:
    """A migration's own flag directive (FLAG = ... / -- polyshift: flag=...) names its release's flag
    when releases.toml does not; two different names for one release are a mistake worth stopping for."""
    declared = {m.flag: m for m in migrations.values() if m.flag}
    named = set(declared) | ({settings.flag} if settings.flag else set())
    if len(named) > 1:
        sources = [f"{m.store}/{m.id} says {flag}" for flag, m in sorted(declared.items())]
        if settings.flag:
            sources.append(f"releases.toml says {settings.flag}")
        raise ConfigError(f"release {settings.version} has more than one flag: {'; '.join(sources)}")
    if settings.flag is None and declared:
        return replace(settings, flag=next(iter(declared)))
    return settings
