"""Contract: one runner at a time per store, and a crashed runner never locks a store for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from polyshift.framework.core.errors import LockHeldError
from polyshift.framework.core.kinds import Capability
from tests.contract.stores import STORE, ContractStore

_HOLD = textwrap.dedent("""
    import sys, time
    from polyshift.adapters import adapter_for
    from polyshift.framework.core.config import load_config
    adapter = adapter_for(load_config(sys.argv[1]).store(sys.argv[2]))
    adapter.connect()
    adapter.acquire_lock("doomed-runner", wait=0)
    print("locked", flush=True)
    time.sleep(120)
""")


def _short_ttl(store: ContractStore, seconds: int = 1) -> str:
    """A short lock_ttl where the kind's lock expires, so a test waits seconds, not half a minute."""
    return f'lock_ttl = "{seconds}s"\n' if store.spec.can(Capability.EXPIRING_LOCK) else ""


def test_a_held_lock_refuses_a_second_runner_naming_the_holder(store: ContractStore) -> None:
    first, second = store.adapter(), store.adapter()
    first.acquire_lock("first-runner", wait=0)
    with pytest.raises(LockHeldError, match=f"store {STORE} is locked by another polyshift run") as refused:
        second.acquire_lock("second-runner", wait=0.5)
    assert "first-runner" in str(refused.value)
    assert refused.value.exit_code == 2


def test_a_released_lock_can_be_taken_and_release_by_a_non_holder_changes_nothing(store: ContractStore) -> None:
    first, second = store.adapter(), store.adapter()
    first.acquire_lock("first-runner", wait=0)
    second.release_lock()  # holds nothing: must not free the first runner's lock
    with pytest.raises(LockHeldError):
        second.acquire_lock("second-runner", wait=0)
    first.release_lock()
    second.acquire_lock("second-runner", wait=0)
    with pytest.raises(LockHeldError, match="second-runner"):
        first.acquire_lock("first-runner", wait=0)


def test_a_live_holder_keeps_its_lock_past_its_ttl(store: ContractStore) -> None:
    # Two seconds, not one: a renewal then has over a second to get through, even while the
    # server replans its queries (the suite drops Neo4j's lock constraint between tests).
    ttl = _short_ttl(store, seconds=2)
    holder, other = store.adapter(extra=ttl), store.adapter(extra=ttl)
    holder.acquire_lock("live-runner", wait=0)
    with pytest.raises(LockHeldError, match="live-runner"):
        other.acquire_lock("next-runner", wait=4.5)  # more than twice the TTL: only renewal keeps it held


def test_a_crashed_holders_lock_is_freed_and_taken_by_the_next_runner(store: ContractStore) -> None:
    ttl = _short_ttl(store)
    config = store.config_path(store.table(extra=ttl))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(config), STORE], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        taker = store.adapter(extra=ttl)
        with pytest.raises(LockHeldError, match="doomed-runner"):
            taker.acquire_lock("next-runner", wait=0)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # Freed with the dead holder's session (PostgreSQL) or once its claim expires (lock_ttl).
    taker.acquire_lock("next-runner", wait=10)
