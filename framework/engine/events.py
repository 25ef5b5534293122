"""Release events: each goes to the audit log, to one JSON line in the events log, to the
optional ``on_event`` command, and to whatever the caller displays.

The on_event command is a notification, not a gate: it runs with a timeout, and its failure
is a warning that never changes the course of a release.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from polyshift.framework.control.localfiles import append_private
from polyshift.framework.control.state import ControlPlane, actor
from polyshift.framework.core.config import Config
from polyshift.framework.core.errors import StoreError
from polyshift.framework.core.lifecycle import Progress, ReleaseEvent
from polyshift.framework.core.secrets import redact, redact_obj

log = logging.getLogger("polyshift.events")

ON_EVENT_TIMEOUT = 10.0

Display = Callable[[str, dict[str, Any]], None]


class Events:
    def __init__(self, config: Config, state: ControlPlane, display: Display) -> None:
        self.config = config
        self.state = state
        self.display = display

    def release(self, event: ReleaseEvent, version: str, data: dict[str, Any]) -> None:
        record = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event.audit_action,
                  "release": version, "actor": actor(), "pid": os.getpid(), **data}
        record = redact_obj(record)
        try:
            self.state.audit(event.audit_action, f"release:{version}", data)
        except StoreError as exc:
            # The journal already holds the step; losing one audit line must not stop an undo.
            log.error("audit entry for %s failed: %s", event.audit_action, exc)
        self._log_line(record)
        self._hook(record)
        self.display(event.audit_action, data | {"release": version})

    def _log_line(self, record: dict[str, Any]) -> None:
        path = self.config.events_log
        if path is None:
            return
        try:
            with append_private(path) as f:
                f.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
        except OSError as exc:
            log.error("cannot append to %s: %s", path, exc)

    def _hook(self, record: dict[str, Any]) -> None:
        command = self.config.on_event
        if not command:
            return
        payload = json.dumps(record, default=str) + "\n"
        try:
            done = subprocess.run(command, shell=True, input=payload, text=True, capture_output=True,
                                  timeout=ON_EVENT_TIMEOUT, cwd=self.config.root,
                                  env={**os.environ, "POLYSHIFT_EVENT": record["event"], "POLYSHIFT_RELEASE": record["release"]})
            if done.returncode != 0:
                self._hook_failed(record["event"], f"exit {done.returncode}: {redact(done.stderr.strip()[:200])}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._hook_failed(record["event"], str(exc))

    def _hook_failed(self, event: str, why: str) -> None:
        log.warning("on_event command failed for %s: %s", event, why)
        self.display(Progress.HOOK_FAILED, {"event": event, "why": why})
