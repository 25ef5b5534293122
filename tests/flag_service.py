"""Fixtures for `polyshift serve`: the real ASGI app over a real flag store (the ``flags`` fixture:
the control-plane database or Redis), driven in process (httpx through Starlette's TestClient)
or as a real server process (``polyshift serve`` under uvicorn) for the OFREP providers."""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from polyshift.feature_flags.admin import Change
from polyshift.feature_flags.model import Flag
from polyshift.feature_flags.server.app import create_app
from polyshift.feature_flags.server.service import ServeSettings, Service
from tests.conftest import REPO, FlagProject

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
VERSION = re.compile(r'id="version">(\d+)<')
ERROR = re.compile(r'id="error">([^<]*)<')


def wait_for(condition: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Browser:
    """One person's session in the console (its own cookie jar)."""

    def __init__(self, app: Any, base_url: str = "http://testserver") -> None:
        self.http = TestClient(app, base_url=base_url, follow_redirects=False)

    def sign_in(self, user: str, password: str = PASSWORD) -> httpx.Response:
        page = self.http.get("/login")
        token = CSRF.search(page.text)
        assert token, page.text
        return self.http.post("/login", data={"csrf": token.group(1), "user": user, "password": password, "next": "/flags"})

    def csrf(self, path: str = "/flags") -> str:
        page = self.http.get(path)
        found = CSRF.search(page.text)
        assert found, f"no CSRF token on {path}: {page.status_code}"
        return found.group(1)

    def change(self, flag: str, action: str, *, expected: int | None = None, **fields: str) -> httpx.Response:
        """Post a flag page's form as the page would, with the version the page showed (or ``expected``)."""
        page = self.http.get(f"/flags/{flag}")
        token, version = CSRF.search(page.text), VERSION.search(page.text)
        assert token and version, page.text[:500]
        data = {"csrf": token.group(1), "action": action, "expected_version": str(version.group(1) if expected is None else expected),
                "reason": f"test {action}"} | fields
        return self.http.post(f"/flags/{flag}", data=data)


def error_of(response: httpx.Response) -> str:
    found = ERROR.search(response.text)
    return html.unescape(found.group(1)) if found else ""


class Served:
    """The app of `polyshift serve` over a FlagProject's store."""

    def __init__(self, project: FlagProject, settings: ServeSettings | None = None) -> None:
        self.project = project
        self.service = Service(project.config, settings)
        self.app = create_app(self.service)
        self.admin = self.service.admin

    def http(self, base_url: str = "http://testserver") -> TestClient:
        return TestClient(self.app, base_url=base_url, follow_redirects=False)

    def key(self, name: str = "app", scope: str = "read") -> str:
        _key, secret = self.service.accounts.create_key(name, scope, who="test")
        self.service.keys.reload()
        return secret

    def user(self, name: str, role: str, password: str = PASSWORD) -> None:
        self.service.accounts.add_user(name, role, password, who="test")

    def browser(self, user: str | None = None, role: str = "editor", base_url: str = "http://testserver") -> Browser:
        browser = Browser(self.app, base_url)
        if user is not None:
            self.user(user, role)
            signed = browser.sign_in(user)
            assert signed.status_code == 303, signed.text
        return browser

    def set(self, name: str, reason: str = "setup", **change: Any) -> Flag:
        flag: Flag = self.admin.change(name, Change(**change), reason=reason, create=True, who="setup")
        self.service.changed()
        return flag

    def flag(self, name: str) -> Flag | None:
        flag: Flag | None = self.admin.store.get(name)
        return flag

    def audit(self, action: str | None = None) -> list[Any]:
        return [e for e in self.service.state.audit_entries() if action is None or e.action == action]

    def close(self) -> None:
        self.service.close()


@pytest.fixture
def served(flags: FlagProject) -> Iterator[Served]:
    s = Served(flags)
    try:
        yield s
    finally:
        s.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """`polyshift serve` as its own process on a free loopback port."""

    def __init__(self, project: FlagProject) -> None:
        self.project = project
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A file, not a pipe: a pipe nobody drains fills up and blocks the server mid-log-line.
        self.log = project.root / "serve.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(project.config), "serve", "--port", str(self.port)],
                cwd=project.root, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
        wait_for(self._up, 60, f"polyshift serve on port {self.port}")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"polyshift serve exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/login", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def key(self, name: str = "app", scope: str = "read") -> str:
        result = self.project.run("--json", "apikeys", "create", name, "--scope", scope)
        assert result.exit_code == 0, result.output
        secret: str = json.loads(result.stdout)["key"]
        # The server reloads keys once per refresh interval: wait until it accepts this one.
        wait_for(lambda: httpx.post(f"{self.url}/ofrep/v1/evaluate/flags", json={"context": {}},
                                    headers={"Authorization": f"Bearer {secret}"}).status_code == 200, 10, "the new key")
        return secret

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def live(flags: FlagProject) -> Iterator[LiveServer]:
    server = LiveServer(flags)
    try:
        yield server
    finally:
        server.stop()
