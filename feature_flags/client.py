"""What applications call on every request: ``FlagClient.is_enabled``.

Flags are held in process and evaluated without I/O. A daemon thread polls the store's global
version every ``refresh_interval`` and reloads only when it changed, so a change reaches every
process within one interval. If the store becomes unreachable the client keeps serving the last
values it knew and reports itself ``stale``; nothing on the hot path ever raises.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

from polyshift.feature_flags.model import CompiledFlag, Evaluation, Flag
from polyshift.feature_flags.settings import FlagSettings, open_store, settings_from_path, settings_from_url
from polyshift.feature_flags.stores import FlagStore
from polyshift.framework.core.errors import PolyshiftError

log = logging.getLogger("polyshift.flags")


class FlagClient:
    """Read side of the flags.

    >>> client = FlagClient.from_config("polyshift.toml")
    >>> client.is_enabled("checkout_v2", subject="user-42")
    """

    def __init__(self, store: FlagStore, *, refresh_interval: float = 1.0, background: bool = True) -> None:
        self._store = store
        self.refresh_interval = refresh_interval
        self._flags: dict[str, CompiledFlag] = {}
        self._version = -1
        self._snapshot: tuple[int, dict[str, CompiledFlag]] = (-1, {})
        self._unknown_reported: set[str] = set()
        self.stale = False
        self.last_refresh = 0.0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self.refresh()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._poll, name="polyshift-flags-refresh", daemon=True)
            self._thread.start()

    @classmethod
    def from_config(cls, path: str | Path = "polyshift.toml", *, refresh_interval: float | None = None,
                    background: bool = True) -> FlagClient:
        """A client from polyshift.toml's ``[flags]`` table alone: the stores' tables and their
        secrets are never read, so an application needs none of the migrator's credentials."""
        settings = settings_from_path(path)
        if refresh_interval is not None:
            settings = replace(settings, refresh_interval=refresh_interval)
        return cls.from_settings(settings, background=background)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "polyshift:", refresh_interval: float = 1.0,
                 background: bool = True) -> FlagClient:
        """A client from the flags' store URL (``redis://…``, or the control plane's database URL)."""
        return cls.from_settings(settings_from_url(url, prefix=prefix, refresh_interval=refresh_interval), background=background)

    @classmethod
    def from_settings(cls, settings: FlagSettings, *, background: bool = True) -> FlagClient:
        return cls(open_store(settings), refresh_interval=settings.refresh_interval, background=background)

    # -- hot path ---------------------------------------------------------------------
    def is_enabled(self, name: str, subject: str | None = None, default: bool = False) -> bool:
        """True when ``name`` is on for ``subject``. Unknown flags return ``default`` (reported once)."""
        compiled = self._flags.get(name)
        if compiled is None:
            self._unknown(name)
            return default
        return compiled.evaluate(subject).value

    def evaluate(self, name: str, subject: str | None = None) -> Evaluation | None:
        """The full decision (value, reason, variant), or None for an unknown flag."""
        compiled = self._flags.get(name)
        if compiled is None:
            self._unknown(name)
            return None
        return compiled.evaluate(subject)

    def _unknown(self, name: str) -> None:
        if name not in self._unknown_reported:
            self._unknown_reported.add(name)
            log.warning("flag %r is not defined in %s; returning the caller's default", name, self._store.description)

    # -- refresh ----------------------------------------------------------------------
    def refresh(self) -> bool:
        """Reload if the store's version moved. Returns True when flags changed. Never raises."""
        try:
            version = self._store.version()
            changed = version != self._version
            if changed:
                version, flags = self._store.load()
                self._flags = {name: CompiledFlag(flag) for name, flag in flags.items()}  # one atomic swap
                self._version = version
                self._snapshot = (version, self._flags)
            if self.stale:
                log.warning("flags: %s reachable again", self._store.description)
            self.stale, self.last_error = False, None
            self.last_refresh = time.monotonic()
            return changed
        except (PolyshiftError, OSError) as exc:
            if not self.stale:
                log.warning("flags: %s; serving the last known values (stale)", exc)
            self.stale, self.last_error = True, str(exc)
            return False

    def _poll(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            self.refresh()

    def snapshot(self) -> tuple[int, dict[str, CompiledFlag]]:
        """The flags held now and the store version they are consistent with, read together
        (version -1: never loaded). A remote evaluator tags its answers with this version."""
        return self._snapshot

    def flag(self, name: str) -> Flag | None:
        compiled = self._flags.get(name)
        return compiled.flag if compiled is not None else None

    def flags(self) -> dict[str, Flag]:
        return {name: c.flag for name, c in self._flags.items()}

    @property
    def unknown_flags(self) -> frozenset[str]:
        return frozenset(self._unknown_reported)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.refresh_interval + 5)
        self._store.close()

    def __enter__(self) -> FlagClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
