"""What a store's ledger says against the migrations on disk: current, pending, drift, missing."""

from __future__ import annotations

from dataclasses import dataclass, field

from polyshift.framework.core.lifecycle import Direction
from polyshift.framework.core.migration import Migration, version_key
from polyshift.framework.core.protocol import Adapter, LedgerEntry, ReadsLedgerVersion


@dataclass
class StoreStatus:
    store: str
    kind: str
    current: str | None
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    interrupted: str | None = None    # an unfinished run left this store mid-release, mid-rollback or mid-restore
    # Another tool's history in a store whose polyshift ledger is empty (a warning; not in the JSON,
    # whose shape is documented).
    unadopted: str | None = None
    locked_by: str | None = None      # the runner (host, pid, CI job) of a live run holding the store's lock

    def to_json(self) -> dict[str, object]:
        return {"store": self.store, "kind": self.kind, "current": self.current, "applied": self.applied,
                "pending": self.pending, "drift": self.drift, "missing": self.missing, "out_of_order": self.out_of_order,
                "interrupted": self.interrupted, "locked_by": self.locked_by}


def applied_entries(ledger: list[LedgerEntry]) -> dict[str, LedgerEntry]:
    """Net effect of the ledger: each version whose latest successful row is a forward."""
    applied: dict[str, LedgerEntry] = {}
    for entry in ledger:
        if not entry.success:
            continue
        if entry.direction is Direction.FORWARD:
            applied[entry.version] = entry
        else:
            applied.pop(entry.version, None)
    return applied


def is_applied(adapter: Adapter, version: str) -> bool:
    """Whether the ledger's net effect has ``version`` applied. Whether a version is applied
    depends on its own rows only, so an adapter that reads those alone answers the same."""
    rows = adapter.ledger_rows(version) if isinstance(adapter, ReadsLedgerVersion) else adapter.ledger()
    return version in applied_entries(rows)


def store_status(store: str, kind: str, migrations: list[Migration], ledger: list[LedgerEntry]) -> StoreStatus:
    applied = applied_entries(ledger)
    by_version = {m.version: m for m in migrations}
    ordered = sorted(applied, key=version_key)
    current = ordered[-1] if ordered else None
    status = StoreStatus(store, kind, current, applied=ordered)
    for version, entry in applied.items():
        mig = by_version.get(version)
        if mig is None:
            status.missing.append(version)
        elif mig.checksum != entry.checksum:
            status.drift.append(version)
    for mig in migrations:
        if mig.version not in applied:
            status.pending.append(mig.version)
            if current is not None and mig.version_key < version_key(current):
                status.out_of_order.append(mig.version)
    status.drift.sort(key=version_key)
    status.missing.sort(key=version_key)
    return status
