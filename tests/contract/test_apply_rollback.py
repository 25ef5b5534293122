"""Contract: a rollback undoes its forward exactly, as the store's fingerprint sees it."""

from __future__ import annotations

from polyshift.framework.core.lifecycle import Direction
from tests.contract.stores import ContractStore


def test_apply_then_rollback_returns_the_fingerprint_it_started_from(store: ContractStore) -> None:
    store.seed()
    migration = store.reversible("0001_notes")
    adapter = store.adapter()
    adapter.ensure_ledger()
    scope = adapter.resolve_scope(store.scope, missing_ok=False)
    before = adapter.fingerprint(scope)
    adapter.apply(migration, Direction.FORWARD, run_id="run-1", actor="contract-suite")
    forwarded = adapter.fingerprint(scope)
    assert forwarded != before
    adapter.apply(migration, Direction.ROLLBACK, run_id="run-1", actor="contract-suite")
    assert adapter.fingerprint(scope) == before


def test_a_fingerprint_is_the_same_when_read_twice_and_counts_the_scope(store: ContractStore) -> None:
    store.seed()
    adapter = store.adapter()
    scope = adapter.resolve_scope(store.scope, missing_ok=False)
    first = adapter.fingerprint(scope)
    assert store.adapter().fingerprint(scope) == first
    assert sum(first.counts.values()) >= 5


def test_the_analysis_of_a_migration_names_its_declared_scope(store: ContractStore) -> None:
    store.seed()
    migration = store.reversible("0001_notes")
    adapter = store.adapter()
    adapter.parse(migration)
    analysis = adapter.analyze(migration, Direction.FORWARD)
    resolved = adapter.resolve_scope(analysis.scope, missing_ok=False)
    assert set(adapter.resolve_scope(store.scope, missing_ok=False)) <= set(resolved)
