"""What one ``polyshift serve`` process holds: the flags (read through a FlagClient, written through
the same FlagAdmin as the CLI), the accounts, the API keys in memory, the sign-in throttle and the
audit of refusals.

Evaluation never touches a database on the request path: the FlagClient holds every flag and
polls the store's global version (``[flags] refresh_interval``), and the key ring holds the
digests of the active API keys and reloads them on the same interval. Changes made through this
process refresh both at once; changes made elsewhere (the CLI, the runner, another server) are
seen within one interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyshift.feature_flags.admin import FlagAdmin
from polyshift.feature_flags.client import FlagClient
from polyshift.feature_flags.server.accounts import Accounts, ApiKey, digest
from polyshift.feature_flags.settings import FlagSettings, flag_settings, open_store
from polyshift.framework.control.state import ControlPlane
from polyshift.framework.core.config import Config, load_config
from polyshift.framework.core.errors import PolyshiftError, UsageError
from polyshift.framework.core.secrets import redact

log = logging.getLogger("polyshift.serve")


STORE_LABELS = {"state": "the control-plane database", "redis": "Redis"}


def public_error(exc: PolyshiftError) -> str:
    """What a page or an API answer may say about ``exc``. Bad input is named as it is; a store
    error names store URLs and driver text, which stay in the server's log and are never rendered."""
    from polyshift.feature_flags.admin import FlagChanged

    if isinstance(exc, UsageError | FlagChanged):
        return str(exc)
    log.warning("%s", redact(str(exc)))
    return "the flag store or the state database did not answer (the server log has the details); reload to see the current state"


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8400
    # Mark cookies Secure even on plain HTTP requests (behind a TLS proxy that does not send
    # X-Forwarded-Proto). Over HTTPS they are always Secure.
    secure_cookies: bool = False
    # Browser origins allowed to call /ofrep (the web provider in a front end on another origin).
    cors_origins: tuple[str, ...] = ()
    session_seconds: float = 12 * 3600
    # Failed sign-ins allowed per user name and per client address within the window.
    login_failures: int = 5
    login_window: float = 15 * 60


class KeyRing:
    """The active API keys by digest, reloaded every ``interval``; a store outage keeps the last set."""

    def __init__(self, accounts: Accounts, interval: float) -> None:
        self.accounts = accounts
        self.interval = interval
        self._keys: dict[str, ApiKey] = {}
        self._stop = threading.Event()
        self.reload()
        self._thread = threading.Thread(target=self._poll, name="polyshift-apikeys-refresh", daemon=True)
        self._thread.start()

    def reload(self) -> None:
        try:
            self._keys = self.accounts.active_keys()
        except PolyshiftError as exc:
            log.warning("API keys: %s; keeping the %d keys loaded before", exc, len(self._keys))

    def lookup(self, secret: str) -> ApiKey | None:
        return self._keys.get(digest(secret))

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.reload()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)


class Throttle:
    """Failed sign-ins per key (a user name, a client address) within a sliding window."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, *keys: str) -> float:
        """Seconds until another attempt is allowed for every key (0: allowed now)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if not times:
                    continue
                while times and times[0] <= now - self.window:
                    times.popleft()
                if len(times) >= self.limit:
                    wait = max(wait, times[0] + self.window - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class Refusals:
    """Every refused request goes to the audit log. The same refusal repeated (a client retrying a
    revoked key in a loop) is written once per ``window`` with the count of repeats, so a flood of
    bad requests cannot turn into a flood of audit writes."""

    def __init__(self, state: ControlPlane, window: float = 10.0) -> None:
        self.state = state
        self.window = window
        self._last: dict[tuple[str, str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def record(self, *, who: str, action: str, path: str, why: str, status: int) -> None:
        key = (who, action, f"{path} {why}")
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.window:
                self._last[key] = (last[0], last[1] + 1)
                return
            repeated = last[1] if last is not None else 0
            self._last[key] = (now, 0)
            if len(self._last) > 10_000:  # forget the oldest; a long-running server must not grow
                for stale in sorted(self._last, key=lambda k: self._last[k][0])[:5_000]:
                    del self._last[stale]
        detail: dict[str, Any] = {"path": path, "why": why, "status": status}
        if repeated:
            detail["repeated_before"] = repeated
        try:
            self.state.audit(action, f"serve:{path}", detail, who=who)
        except PolyshiftError as exc:
            log.warning("could not audit a refused request (%s %s): %s", action, path, exc)


class Service:
    """Opened once per ``polyshift serve``; closed when it stops."""

    def __init__(self, config_path: str | Path, settings: ServeSettings | None = None) -> None:
        self.config_path = Path(config_path)
        self.settings = settings or ServeSettings()
        self.config: Config = load_config(self.config_path)
        self.flag_settings: FlagSettings = flag_settings(self.config)
        self.state = ControlPlane(self.config.state_url)
        self.admin = FlagAdmin(open_store(self.flag_settings), self.state)
        self.client = FlagClient.from_settings(self.flag_settings)
        self.accounts = Accounts(self.state)
        self.keys = KeyRing(self.accounts, self.flag_settings.refresh_interval)
        self.throttle = Throttle(self.settings.login_failures, self.settings.login_window)
        self.refusals = Refusals(self.state)

    def changed(self) -> None:
        """After a write through this process: serve it now, not one interval later."""
        self.client.refresh()

    def close(self) -> None:
        self.keys.close()
        self.client.close()
        self.admin.store.close()
        self.state.close()
