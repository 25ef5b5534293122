"""The demo's stand-in application: an HTTP health endpoint fed by simulated traffic.

Each check sends 2,000 simulated requests, one per user. Each asks for its user's flags as an
application in any language would: over OFREP from `polyshift serve` (one bulk evaluation per
user, on a kept-alive connection), or, without a flag service, through polyshift's own client.
The same users land on the green code paths as in a real rollout. The sample's bug: the
new notes export (flag ``notes_cleanup``) fails for one user in 25, whose documents still had
legacy notes. Health is 503 when more than 0.2% of requests fail, which a cutover crosses
between 1% (about 0.04% failing) and 10% (about 0.4%).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from polyshift.feature_flags.client import FlagClient

USERS = 2_000
ERROR_BUDGET = 0.002


class OfrepFlags:
    """Bulk OFREP evaluation for one user at a time; a flag missing from the answer is off."""

    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)

    def for_user(self, user: str) -> dict[str, bool]:
        body = json.dumps({"context": {"targetingKey": user}})
        try:
            self.conn.request("POST", "/ofrep/v1/evaluate/flags", body, self.headers)
            response = self.conn.getresponse()
        except (ConnectionError, http.client.HTTPException):
            # The server closes a kept-alive connection left idle between health checks: one new one.
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            self.conn.request("POST", "/ofrep/v1/evaluate/flags", body, self.headers)
            response = self.conn.getresponse()
        data = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"OFREP answered {response.status}: {data}")
        return {f["key"]: f.get("value") is True for f in data["flags"]}

    def close(self) -> None:
        self.conn.close()


class DemoApp:
    def __init__(self, config: Path, ofrep: tuple[str, str] | None = None) -> None:
        # The application asks for notes_cleanup before any release created it: expected, not news.
        logging.getLogger("polyshift.flags").setLevel(logging.ERROR)
        self.flags = FlagClient.from_config(config, refresh_interval=0.2)
        self.ofrep = OfrepFlags(*ofrep) if ofrep else None
        self.lock = threading.Lock()  # one OFREP connection, one health check at a time
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, name="demo-app", daemon=True)

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/health"

    def start(self) -> DemoApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.flags.close()
        if self.ofrep is not None:
            self.ofrep.close()

    def traffic(self) -> dict[str, float]:
        self.flags.refresh()
        failed = green = 0
        with self.lock:
            for i in range(USERS):
                user = f"user-{i}"
                if self.ofrep is not None:
                    flags = self.ofrep.for_user(user)
                    notes, docs = flags.get("notes_cleanup", False), flags.get("docs_v2", False)
                else:
                    notes, docs = self.flags.is_enabled("notes_cleanup", user), self.flags.is_enabled("docs_v2", user)
                if notes:
                    green += 1
                    failed += i % 25 == 0  # the bug: users whose documents had legacy notes
                elif docs:
                    green += 1
        return {"requests": USERS, "green": green, "failed": failed, "error_rate": failed / USERS}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stats = app.traffic()
                healthy = stats["error_rate"] <= ERROR_BUDGET
                via = "OFREP" if app.ofrep is not None else "in process"
                body = json.dumps(stats | {"healthy": healthy, "flags_via": via}).encode()
                self.send_response(200 if healthy else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        return Handler
