"""Contract: driver errors reach the runner translated the same way on every kind: a server that
does not answer is StoreUnavailable (trying again later may work), one that refuses us is a
StoreError that is not; both name the store and exit 2."""

from __future__ import annotations

import socket

import pytest

from polyshift.framework.core.errors import StoreError, StoreUnavailable
from tests.contract.stores import STORE, ContractStore


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_server_that_does_not_answer_is_unavailable(store: ContractStore) -> None:
    adapter = store.adapter_at(store.url_with(port=_closed_port()))
    with pytest.raises(StoreUnavailable, match=f"store {STORE}: cannot connect") as failed:
        adapter.connect()
    assert failed.value.exit_code == 2


def test_a_server_that_refuses_our_credentials_is_a_store_error_not_unavailable(store: ContractStore) -> None:
    # A user of its own, so that Neo4j's lock-out after failed logins never reaches the suite's user.
    adapter = store.adapter_at(store.url_with(user="nobody", password="not-the-password"))
    with pytest.raises(StoreError, match=f"store {STORE}: cannot connect") as failed:
        adapter.connect()
    assert not isinstance(failed.value, StoreUnavailable)
    assert "not-the-password" not in str(failed.value)
