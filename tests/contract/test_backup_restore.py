"""Contract: a backup restores its scope exactly, verified against the fingerprint it recorded,
and the preflight disk check knows roughly how large it will be."""

from __future__ import annotations

from pathlib import Path

from polyshift.framework.control.artifacts import ArtifactStore, Manifest
from polyshift.framework.control.localstore import LocalArtifactStore
from polyshift.framework.core.progress import NullProgress
from polyshift.framework.core.protocol import Adapter, EstimatesBackup
from tests.contract.stores import ContractStore


def _backup(adapter: Adapter, scope: tuple[str, ...], root: Path) -> tuple[ArtifactStore, Manifest]:
    artifacts = LocalArtifactStore(root)
    writer = artifacts.new_writer(store=adapter.name, kind=adapter.kind, version=None, scope=scope, reason="contract suite")
    manifest = artifacts.seal(writer, adapter.backup(scope, writer, NullProgress()))
    return artifacts, manifest


def test_a_backup_restores_its_scope_exactly_and_verified(store: ContractStore) -> None:
    store.seed()
    adapter = store.adapter()
    scope = adapter.resolve_scope(store.scope, missing_ok=False)
    before = adapter.fingerprint(scope)
    artifacts, manifest = _backup(adapter, scope, store.root / "backups")
    store.change_directly()
    assert adapter.fingerprint(scope) != before
    report = adapter.restore(artifacts.verify(manifest.id), artifacts, NullProgress())
    assert report.verified, report.mismatches
    assert report.mismatches == ()
    assert adapter.fingerprint(scope) == before


def test_restoring_twice_is_the_same_as_restoring_once(store: ContractStore) -> None:
    store.seed()
    adapter = store.adapter()
    scope = adapter.resolve_scope(store.scope, missing_ok=False)
    before = adapter.fingerprint(scope)
    artifacts, manifest = _backup(adapter, scope, store.root / "backups")
    store.change_directly()
    for _ in range(2):
        assert adapter.restore(artifacts.verify(manifest.id), artifacts, NullProgress()).verified
    assert adapter.fingerprint(scope) == before


def test_the_backup_size_estimate_covers_the_backup_taken(store: ContractStore) -> None:
    store.seed()
    adapter = store.adapter()
    assert isinstance(adapter, EstimatesBackup)
    scope = adapter.resolve_scope(store.scope, missing_ok=False)
    _, manifest = _backup(adapter, scope, store.root / "backups")
    assert 0 < manifest.size <= adapter.estimate_backup_bytes(scope)
    assert adapter.estimate_backup_bytes(()) == 0
