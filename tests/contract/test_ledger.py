"""Contract: every applied step leaves a ledger row, read back as written, per store."""

from __future__ import annotations

from datetime import datetime

from polyshift.framework.core.lifecycle import Direction
from tests.contract.stores import ContractStore


def test_an_empty_store_has_an_empty_ledger_and_ensure_ledger_is_idempotent(store: ContractStore) -> None:
    adapter = store.adapter()
    assert adapter.ledger() == []
    adapter.ensure_ledger()
    adapter.ensure_ledger()
    assert adapter.ledger() == []


def test_apply_and_record_reverted_round_trip_through_the_ledger(store: ContractStore) -> None:
    store.seed()
    migration = store.reversible("0001_notes")
    adapter = store.adapter()
    adapter.ensure_ledger()
    adapter.apply(migration, Direction.FORWARD, run_id="run-1", actor="contract-suite")
    adapter.record_reverted(migration, run_id="run-2", actor="contract-suite")
    entries = store.adapter().ledger()  # read by another connection, as the next run would
    assert [(e.version, e.slug, e.checksum, e.direction, e.run_id, e.applied_by, e.success) for e in entries] == [
        ("0001", "notes", migration.checksum, Direction.FORWARD, "run-1", "contract-suite", True),
        ("0001", "notes", migration.checksum, Direction.ROLLBACK, "run-2", "contract-suite", True),
    ]
    assert entries[0].rank < entries[1].rank
    assert all(isinstance(e.applied_at, datetime) and e.duration_ms >= 0 for e in entries)


def test_a_store_reads_only_its_own_ledger_rows(store: ContractStore) -> None:
    store.seed()
    migration = store.reversible("0001_notes")
    adapter = store.adapter()
    adapter.ensure_ledger()
    adapter.apply(migration, Direction.FORWARD, run_id="run-1", actor="contract-suite")
    neighbour = store.adapter(name="neighbour")  # the same server, another store name
    neighbour.ensure_ledger()
    assert neighbour.ledger() == []
    assert [e.version for e in adapter.ledger()] == ["0001"]
