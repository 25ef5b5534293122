"""Health gates read at each cutover stage. A gate that cannot be evaluated (timeout, error,
unreachable target) counts as failing: the cutover only advances on positive evidence."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg

from framework.config import Config
from framework.migration import call_user_code, describe_failure
from framework.releases import Gate
from framework.secrets import redact


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


def _python(gate: Gate, ctx: GateContext) -> tuple[bool, str]:
    module_name, _, function_name = gate.spec["callable"].partition(":")
    if str(ctx.config.root) not in sys.path:
        sys.path.insert(0, str(ctx.config.root))
    function = getattr(call_user_code(importlib.import_module, module_name), function_name)
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
