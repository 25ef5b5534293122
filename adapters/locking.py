"""The expiring token lock of the stores whose server cannot tie a lock to a session (Redis, graphs).

The holder writes a claim (a random token, its name, the time) that expires after ``lock_ttl``
unless renewed; a thread renews it every third of the TTL while the run lives. A runner that
dies stops renewing, so its lock expires and the next runner takes it over; a live holder's
lock is never released or extended by another, because every write is conditioned on the token.
Where the claim is kept, and how a write is conditioned on it, is the store's part: a
``TokenStore``. PostgreSQL needs none of this: its advisory lock dies with the holder's session.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from polyshift.framework.core.concurrency import Renewer
from polyshift.framework.core.durations import setting_duration
from polyshift.framework.core.errors import LockHeldError, StoreError

if TYPE_CHECKING:
    from polyshift.framework.core.config import StoreConfig

log = logging.getLogger("polyshift.lock")
DEFAULT_TTL_SECONDS = 30.0
_POLL_SECONDS = 0.2


def lock_ttl_ms(config: StoreConfig) -> int:
    """The store's ``lock_ttl`` in milliseconds (30 s unless set), read by the rule the config checks it with."""
    seconds = setting_duration(config.options.get("lock_ttl", DEFAULT_TTL_SECONDS), "lock_ttl", where=f"[stores.{config.name}]")
    return int(seconds * 1000)


@dataclass(frozen=True)
class Claim:
    """What a holder writes into the lock: only the token decides who owns it."""

    token: str
    holder: str
    since: str      # ISO 8601, seconds


class TokenStore(Protocol):
    """Where one store keeps its lock. Each method raises StoreError (the driver's error translated)
    when the store fails, and conditions every write on the claim's token."""

    def take(self, claim: Claim, ttl_ms: int) -> bool:
        """Write the claim with an expiry unless a live claim is there; True when it is ours now."""

    def extend(self, claim: Claim, ttl_ms: int) -> bool:
        """Push the claim's expiry back; False when the claim is no longer there (it expired and was taken)."""

    def give_back(self, claim: Claim) -> None:
        """Remove the claim if it is still this one."""

    def describe_holder(self) -> str:
        """Who holds the lock now and when it expires, for the message saying it is held."""


class ExpiringTokenLock:
    """One store's lock: ``acquire`` waits up to ``wait`` seconds, ``release`` gives back only our own claim."""

    def __init__(self, store: str, tokens: TokenStore, ttl_ms: int) -> None:
        self.store = store
        self.tokens = tokens
        self.ttl_ms = ttl_ms
        self._claim: Claim | None = None
        self._renewer: Renewer | None = None

    @property
    def held(self) -> bool:
        return self._claim is not None

    def acquire(self, holder: str, wait: float) -> None:
        if self._claim is not None:
            return
        claim = Claim(uuid.uuid4().hex, holder, datetime.now(UTC).isoformat(timespec="seconds"))
        deadline = time.monotonic() + wait
        while not self.tokens.take(claim, self.ttl_ms):
            if time.monotonic() >= deadline:
                raise LockHeldError(f"store {self.store} is locked by another polyshift run ({self.tokens.describe_holder()})",
                                    hint=f"wait for it to finish; a crashed runner's lock expires within {self.ttl_ms / 1000:g} s")
            time.sleep(_POLL_SECONDS)
        self._claim = claim
        self._renewer = Renewer(self._renew, self.ttl_ms / 3000, f"polyshift-lock-{self.store}")

    def _renew(self) -> bool:
        claim = self._claim
        if claim is None:
            return False
        try:
            if not self.tokens.extend(claim, self.ttl_ms):
                log.error("store %s: lost the lock (expired and taken over); stopping renewal", self.store)
                return False
        except StoreError as exc:  # the next renewal may get through before the claim expires
            log.warning("store %s: lock renewal failed: %s", self.store, exc)
        return True

    def release(self) -> None:
        """Stop renewing and remove our claim; a no-op when we hold none."""
        claim, self._claim = self._claim, None
        if claim is None:
            return
        if self._renewer is not None:
            self._renewer.stop()
            self._renewer = None
        self.tokens.give_back(claim)
