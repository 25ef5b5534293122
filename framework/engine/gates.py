"""Health gates read at each cutover stage. A gate that cannot be evaluated (timeout, error,
unreachable target) counts as failing: the cutover only advances on positive evidence.

What can be known about a gate without running it is checked in preflight (``check``), so a
gate that could never pass stops the release before any store changes rather than after the
forward and a flag move."""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pglast
import psycopg

from polyshift.framework.core.config import Config
from polyshift.framework.core.errors import ConfigError
from polyshift.framework.core.migration import call_user_code, describe_failure
from polyshift.framework.core.secrets import redact
from polyshift.framework.engine.releases import Gate


@dataclass(frozen=True)
class GateResult:
    gate: str
    ok: bool
    detail: str
    duration_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"gate": self.gate, "ok": self.ok, "detail": self.detail, "duration_ms": self.duration_ms}


@dataclass(frozen=True)
class GateContext:
    """What a Python gate receives."""

    release: str
    flag: str | None
    percent: float
    config: Config


def _sql(gate: Gate, ctx: GateContext) -> tuple[bool, str]:
    url = ctx.config.store(gate.spec["store"]).url
    ms = int(gate.timeout * 1000)
    with psycopg.connect(url, connect_timeout=max(1, int(gate.timeout)), autocommit=True,
                         options=f"-c statement_timeout={ms} -c default_transaction_read_only=on") as conn:
        row = conn.execute(gate.spec["query"]).fetchone()
    if row is None:
        return False, "the query returned no row"
    return bool(row[0]), f"first value {row[0]!r}"


def _http(gate: Gate, _ctx: GateContext) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(gate.spec["url"], timeout=gate.timeout) as response:
            return 200 <= response.status < 300, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"


def _shell(gate: Gate, ctx: GateContext) -> tuple[bool, str]:
    env = {**os.environ, "POLYSHIFT_RELEASE": ctx.release, "POLYSHIFT_FLAG": ctx.flag or "", "POLYSHIFT_PERCENT": f"{ctx.percent:g}"}
    done = subprocess.run(gate.spec["command"], shell=True, capture_output=True, text=True, timeout=gate.timeout,
                          env=env, cwd=ctx.config.root)
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    return done.returncode == 0, f"exit {done.returncode}" + (f": {tail[0][:200]}" if tail[0] else "")


_PROJECT_ROOTS: set[str] = set()  # project roots this process put on sys.path for gates


def _within(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.abspath(path), root]) == root


def _project_module(name: str, root: str) -> Any:
    """The gate module as this project's files define it. One process may run several projects
    (the Python API, a test suite): a module of the same name that another project's gate loaded
    is not reused, since its code and the settings it captured are that project's. Only modules
    loaded from a project root are ever evicted, never a library of the same name."""
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    _PROJECT_ROOTS.add(root)
    top = name.partition(".")[0]
    origin = getattr(sys.modules.get(top), "__file__", None)
    if origin and not _within(origin, root) and any(_within(origin, other) for other in _PROJECT_ROOTS):
        for loaded in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[loaded]
    importlib.invalidate_caches()  # a gate file written since the last import is seen
    return importlib.import_module(name)


def _gate_function(gate: Gate, config: Config) -> Any:
    """The python gate's function, imported from the project root."""
    module_name, _, function_name = gate.spec["callable"].partition(":")
    module = call_user_code(_project_module, module_name, os.path.abspath(config.root))
    return getattr(module, function_name)


def _python(gate: Gate, ctx: GateContext) -> tuple[bool, str]:
    function = _gate_function(gate, ctx.config)
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = call_user_code(function, ctx)
        except Exception as exc:  # reported as the gate's failure, never raised into the runner
            outcome["error"] = exc

    worker = threading.Thread(target=call, name=f"gate-{gate.name}", daemon=True)
    worker.start()
    worker.join(gate.timeout)
    if worker.is_alive():
        raise TimeoutError(f"did not return within {gate.timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    value = outcome["value"]
    if isinstance(value, tuple):
        return bool(value[0]), str(value[1]) if len(value) > 1 else ""
    return bool(value), f"returned {value!r}"


_EVALUATORS = {"sql": _sql, "http": _http, "shell": _shell, "python": _python}


def check(gate: Gate, release: str, config: Config) -> None:
    """Refuse (ConfigError, exit 2) a gate that could never be evaluated: a python gate whose
    module does not import or whose function is missing or not callable, a sql gate whose query
    does not parse, a shell gate whose program is a path that is not an executable file. Its
    store's kind was checked when releases.toml was read."""
    where = f"release {release}: {gate.describe()}"
    if gate.kind == "python":
        module_name, _, function_name = gate.spec["callable"].partition(":")
        try:
            function = _gate_function(gate, config)
        except AttributeError:
            raise ConfigError(f"{where}: module {module_name} has no {function_name}") from None
        except Exception as exc:  # whatever the module raises while importing: the gate cannot work
            raise ConfigError(f"{where}: module {module_name} cannot be imported from {config.root}: "
                              f"{type(exc).__name__}: {redact(str(exc))}") from None
        if not callable(function):
            raise ConfigError(f"{where}: {gate.spec['callable']} is not callable")
    elif gate.kind == "sql":
        try:
            pglast.parse_sql(gate.spec["query"])
        except pglast.parser.ParseError as exc:
            raise ConfigError(f"{where}: SQL syntax error: {exc}") from None
    elif gate.kind == "shell":
        try:
            program = shlex.split(gate.spec["command"])[0]
        except (ValueError, IndexError):
            raise ConfigError(f"{where}: the command does not parse as a shell command line") from None
        path = config.root / program
        if "/" in program and not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"{where}: {program} is not an executable file (relative to {config.root})")


def evaluate(gate: Gate, ctx: GateContext) -> GateResult:
    started = time.monotonic()
    try:
        ok, detail = _EVALUATORS[gate.kind](gate, ctx)
    except subprocess.TimeoutExpired:
        ok, detail = False, f"timed out after {gate.timeout:g} s"
    except Exception as exc:  # a gate that cannot be evaluated counts as failing
        ok, detail = False, f"could not be evaluated: {redact(describe_failure(exc).splitlines()[0])}"
    return GateResult(gate.name, ok, detail, int((time.monotonic() - started) * 1000))


def evaluate_all(gates: tuple[Gate, ...], ctx: GateContext) -> list[GateResult]:
    return [evaluate(gate, ctx) for gate in gates]
