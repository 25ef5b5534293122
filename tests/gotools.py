"""The real golang-migrate and goose CLIs for the adoption tests, installed with ``go install``
from the Go module proxy into a cache outside the repository (once per machine). Without a Go
toolchain the tests that need them are skipped; with one, a tool that fails to install fails them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# name → (module path of its main package, version, build tags)
TOOLS = {
    "migrate": ("github.com/golang-migrate/migrate/v4/cmd/migrate", "v4.18.3", "postgres"),
    "goose": ("github.com/pressly/goose/v3/cmd/goose", "v3.24.3", ""),
}
BIN = Path(os.environ.get("POLYSHIFT_GO_TOOLS", Path.home() / ".cache" / "polyshift" / "go-tools")) / "bin"


def go_tool(name: str) -> Path:
    module, version, tags = TOOLS[name]
    path = BIN / name
    if path.exists():
        return path
    go = shutil.which("go")
    if go is None:
        pytest.skip(f"no Go toolchain to install {name} with")
    command = [go, "install"] + (["-tags", tags] if tags else []) + [f"{module}@{version}"]
    done = subprocess.run(command, env={**os.environ, "GOBIN": str(BIN)}, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"go install {module}@{version} failed: {done.stderr.strip()[-500:]}")
    return path
