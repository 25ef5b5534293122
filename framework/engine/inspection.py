"""The read-only commands' engine: what ``status``, ``history`` and ``validate`` report, as
records the CLI only renders. Nothing here changes a store or the control plane."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from polyshift.framework.adopt.history import unadopted
from polyshift.framework.control.runs import interruptions, lock_holders
from polyshift.framework.core.status import StoreStatus
from polyshift.framework.engine.project import Project
from polyshift.framework.engine.runner import Runner


def store_statuses(project: Project, store: str | None = None) -> list[StoreStatus]:
    """Each store's ledger against the files on disk, with the unfinished run that concerns it
    and the runner holding its lock."""
    runner = Runner(project)
    unfinished = interruptions(project.state, list(project.config.stores))
    holders = lock_holders(project.state, list(project.config.stores))
    result = []
    for name in runner.stores(store):
        with runner.adapter(name) as adapter:
            status = runner.status(adapter)
            status.interrupted = unfinished.get(name)
            status.locked_by = holders.get(name)
            history = unadopted(adapter, status)
            status.unadopted = history.describe() if history else None
            result.append(status)
    return result


@dataclass(frozen=True)
class HistoryRow:
    """One ledger row as ``history`` shows it; ``direction`` is the word the ledger stores."""

    store: str
    rank: int
    version: str
    slug: str
    direction: str
    applied_by: str
    applied_at: str
    duration_ms: int
    checksum: str
    non_transactional: bool
    run_id: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ledger_history(project: Project, store: str | None = None) -> list[HistoryRow]:
    """The stores' own ledgers, each in application order."""
    runner = Runner(project)
    rows = []
    for name in runner.stores(store):
        with runner.adapter(name) as adapter:
            rows += [HistoryRow(name, e.rank, e.version, e.slug, e.direction.ledger_word, e.applied_by,
                                e.applied_at.isoformat(), e.duration_ms, e.checksum, e.non_transactional, e.run_id)
                     for e in adapter.ledger()]
    return rows


@dataclass(frozen=True)
class CheckResult:
    """The validate checks of one applied migration (or its drift): empty ``failures`` is a pass."""

    store: str
    version: str
    failures: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def validation_report(project: Project, store: str | None = None) -> list[CheckResult]:
    """Every applied migration's checks run again, and every applied file changed since (drift)."""
    runner = Runner(project)
    report: list[CheckResult] = []
    for name in runner.stores(store):
        with runner.adapter(name) as adapter:
            status = runner.status(adapter)
            report += [CheckResult(name, v, ["file changed after it was applied (drift)"]) for v in status.drift]
            report += [CheckResult(name, m.version, adapter.validate(m))
                       for m in project.migrations[name] if m.version in status.applied]
    return report
