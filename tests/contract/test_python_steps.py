"""Contract: a Python step runs and fails the same way on every kind, and its checks read one way."""

from __future__ import annotations

import importlib

import pytest

from polyshift.framework.core.errors import StepFailed
from polyshift.framework.core.lifecycle import Direction
from tests.contract.stores import STORE, ContractStore

_VALIDATE = """\
    BACKUP = []
    SEEN = []

    def forward(ctx):
        SEEN.append(ctx)

    def rollback(ctx):
        pass

    def validate(ctx):
        return {result}
    """


def test_a_python_step_gets_the_store_the_migration_and_the_documented_client(store: ContractStore) -> None:
    migration = store.python_migration("0001_look", _VALIDATE.format(result="None"))
    adapter = store.adapter()
    adapter.ensure_ledger()
    adapter.apply(migration, Direction.FORWARD, run_id="run-1", actor="contract-suite")
    assert migration.module is not None
    [ctx] = migration.module.SEEN
    assert (ctx.store, ctx.migration) == (STORE, migration)
    if store.native_client is None:
        assert callable(ctx.client.run)  # polyshift's statement runner (MigrationContext's docstring)
    else:
        module, _, name = store.native_client.partition(":")
        assert isinstance(ctx.client, getattr(importlib.import_module(module), name))
    assert [e.direction for e in adapter.ledger()] == [Direction.FORWARD]


def test_a_python_step_that_raises_is_a_failed_step_naming_its_exception(store: ContractStore) -> None:
    migration = store.python_migration("0001_boom", """\
        BACKUP = []

        def forward(ctx):
            raise ValueError("boom")

        def rollback(ctx):
            pass
        """)
    adapter = store.adapter()
    adapter.ensure_ledger()
    with pytest.raises(StepFailed, match="0001_boom forward raised ValueError: boom"):
        adapter.apply(migration, Direction.FORWARD, run_id="run-1", actor="contract-suite")
    assert adapter.ledger() == []


@pytest.mark.parametrize(("result", "failures"), [
    ("None", []),
    ("True", []),
    ("[]", []),
    ("False", ["validate returned False"]),
    ("['2 items have no note', 'item 3 is empty']", ["2 items have no note", "item 3 is empty"]),
    ("1 / 0", ["validate raised ZeroDivisionError: division by zero"]),
])
def test_a_python_validate_result_reads_the_same_on_every_kind(store: ContractStore, result: str,
                                                                failures: list[str]) -> None:
    migration = store.python_migration("0001_check", _VALIDATE.format(result=result))
    assert store.adapter().validate(migration) == failures
