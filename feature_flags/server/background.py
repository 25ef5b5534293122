"""`polyshift serve` as a child process, for programs that run the flag service next to
themselves (the demo): a free loopback port, a bounded wait until it answers, and a stop."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from polyshift.feature_flags.server.accounts import Accounts
from polyshift.framework.control.state import ControlPlane
from polyshift.framework.core.config import load_config
from polyshift.framework.core.errors import StoreError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ServeProcess:
    """The server's output goes to ``log`` (default ``.polyshift/serve.log`` beside the config), never
    to a pipe: a pipe nobody reads fills up, and a server blocked writing a log line answers nothing."""

    def __init__(self, config: Path, *, port: int | None = None, host: str = "127.0.0.1", log: Path | None = None) -> None:
        self.config, self.host = Path(config), host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.log = log or self.config.resolve().parent / ".polyshift" / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def start(self, timeout: float = 60) -> ServeProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(self.config), "serve", "--host", self.host,
                 "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StoreError(f"polyshift serve exited with {self.proc.returncode}: {self._tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise StoreError(f"polyshift serve did not answer on {self.url} within {timeout:g} s: {self._tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def demo_access(config: Path, *, user: str = "demo", key_name: str = "demo-app") -> tuple[str, str]:
    """An admin account with a fresh random password and a read key, for a throwaway project:
    (password, key). Both are made as `polyshift users add` and `apikeys create` make them."""
    state = ControlPlane(load_config(config).state_url)
    try:
        accounts = Accounts(state)
        password = secrets.token_urlsafe(12)
        accounts.add_user(user, "admin", password, who="polyshift demo")
        _key, secret = accounts.create_key(key_name, "read", who="polyshift demo")
        return password, secret
    finally:
        state.close()
