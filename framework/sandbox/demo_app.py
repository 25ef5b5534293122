"""The demo's stand-in application: an HTTP health endpoint fed by simulated traffic.

Each check sends 2,000 simulated requests, one per user, through polyshift's own flag client,
so the same users land on the green code paths as in a real rollout. The sample's bug: the
new notes export (flag ``notes_cleanup``) fails for one user in 25, whose documents still had
legacy notes. Health is 503 when more than 0.2% of requests fail, which a cutover crosses
between 1% (about 0.04% failing) and 10% (about 0.4%).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from polyshift.feature_flags.client import FlagClient

USERS = 2_000
ERROR_BUDGET = 0.002


class DemoApp:
    def __init__(self, config: Path) -> None:
        # The application asks for notes_cleanup before any release created it: expected, not news.
        logging.getLogger("polyshift.flags").setLevel(logging.ERROR)
        self.flags = FlagClient.from_config(config, refresh_interval=0.2)
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

    def traffic(self) -> dict[str, float]:
        self.flags.refresh()
        failed = green = 0
        for i in range(USERS):
            user = f"user-{i}"
            if self.flags.is_enabled("notes_cleanup", user):
                green += 1
                failed += i % 25 == 0  # the bug: users whose documents had legacy notes
            elif self.flags.is_enabled("docs_v2", user):
                green += 1
        return {"requests": USERS, "green": green, "failed": failed, "error_rate": failed / USERS}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stats = app.traffic()
                healthy = stats["error_rate"] <= ERROR_BUDGET
                body = json.dumps(stats | {"healthy": healthy}).encode()
                self.send_response(200 if healthy else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        return Handler
