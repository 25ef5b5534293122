"""Contract: bad input is refused with exit code 2 naming the problem, and changes nothing."""

from __future__ import annotations

import re

import pytest

from polyshift.framework.core.errors import ConfigError, PolyshiftError, StepFailed
from polyshift.framework.core.lifecycle import Direction
from tests.contract.stores import ContractStore


def test_an_unknown_setting_in_the_store_table_is_refused(store: ContractStore) -> None:
    with pytest.raises(ConfigError, match=f"unknown key\\(s\\) lock_tll for kind '{store.kind}'"):
        store.store_config(extra="lock_tll = \"5s\"\n")


def test_every_setting_the_kind_takes_refuses_a_value_of_the_wrong_shape(store: ContractStore) -> None:
    for option in store.spec.options:
        with pytest.raises(ConfigError, match=f"\\[stores.contract\\] {option}"):
            store.store_config(extra=f"{option} = {{ nested = 1 }}\n", own_options=False)


@pytest.mark.parametrize("case", [0, 1])
def test_a_bad_backup_scope_is_refused_and_nothing_changes(store: ContractStore, case: int) -> None:
    store.seed()
    adapter = store.adapter()
    scope = adapter.resolve_scope(store.scope, missing_ok=False)
    before = adapter.fingerprint(scope)
    bad, named = store.bad_scopes[case]
    with pytest.raises(PolyshiftError, match=re.escape(named)) as refused:
        adapter.resolve_scope(bad, missing_ok=False)
    assert refused.value.exit_code == 2
    assert adapter.fingerprint(scope) == before


def test_a_forward_the_store_refuses_fails_its_step_and_leaves_no_trace(store: ContractStore) -> None:
    store.seed()
    migration = store.refused("0001_broken")
    adapter = store.adapter()
    adapter.ensure_ledger()
    scope = adapter.resolve_scope(store.scope, missing_ok=False)
    before = adapter.fingerprint(scope)
    with pytest.raises(StepFailed, match="0001_broken forward failed") as failed:
        adapter.apply(migration, Direction.FORWARD, run_id="run-1", actor="contract-suite")
    assert failed.value.step == "forward"
    assert adapter.ledger() == []
    assert adapter.fingerprint(scope) == before
