"""Store-level operations shared by every command: connect and lock, verified backups and
restores, explicit rollbacks. Releases (``up``) are driven by ``framework.pipeline`` and
``framework.bluegreen`` on top of these; their undo ladder is ``framework.saga``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapters import adapter_for
from framework.artifacts import Manifest
from framework.errors import (
    DriftError,
    MigrationFailedRestored,
    MigrationFailedUnverified,
    PolyshiftError,
    RefusedError,
    StepFailed,
    UsageError,
)
from framework.migration import Migration, Risk, version_key
from framework.project import Project
from framework.protocol import Adapter, Analysis, ExpiringLock, Fingerprint, RestoreReport
from framework.state import actor
from framework.status import StoreStatus, applied_entries, store_status

Emit = Callable[[str, dict[str, Any]], None]


@dataclass
class Outcome:
    store: str
    version: str
    slug: str
    action: str                 # applied | rolled-back | would-apply | would-roll-back
    risk: str = ""
    scope: list[str] = field(default_factory=list)
    backup: str | None = None
    duration_ms: int = 0
    non_transactional: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _quiet(_event: str, _data: dict[str, Any]) -> None:
    pass


class Runner:
    def __init__(self, project: Project, emit: Emit | None = None) -> None:
        self.project = project
        self.state = project.state
        self.emit = emit or _quiet

    # -- plumbing ---------------------------------------------------------------------
    @contextmanager
    def adapter(self, store: str) -> Iterator[Adapter]:
        adapter = adapter_for(self.project.config.store(store))
        try:
            adapter.connect()
            yield adapter
        finally:
            adapter.close()

    def holder(self, run_id: str) -> str:
        return f"{actor()} pid={os.getpid()} run={run_id[:8]}"

    def stores(self, only: str | None) -> list[str]:
        if only is not None:
            self.project.config.store(only)
            return [only]
        return list(self.project.config.stores)

    def status(self, adapter: Adapter) -> StoreStatus:
        return store_status(adapter.name, adapter.kind, self.project.migrations[adapter.name], adapter.ledger())

    def take_backup(self, adapter: Adapter, scope: tuple[str, ...], *, version: str | None, reason: str,
                    run_id: str | None) -> Manifest:
        """Stream, seal and read back a backup; nothing destructive may run until this returns."""
        artifacts = self.project.artifacts
        writer = artifacts.new_writer(store=adapter.name, kind=adapter.kind, version=version, scope=scope, reason=reason)
        try:
            meta = adapter.backup(scope, writer, self.project.progress)
            manifest = artifacts.seal(writer, meta)
        except BaseException:
            artifacts.discard(writer)
            raise
        self.state.add_backup(manifest, run_id)
        self.state.audit("backup.created", adapter.name, {"backup": manifest.id, "version": version, "scope": list(scope),
                                                          "bytes": manifest.size, "reason": reason, "run": run_id})
        self.emit("backup", {"store": adapter.name, "backup": manifest.id, "scope": list(scope), "bytes": manifest.size})
        return manifest

    def _journal(self, run_id: str, step: str, phase: str, m: Migration | None = None, **detail: Any) -> None:
        self.state.journal(run_id, step, phase, store=m.store if m else None, version=m.version if m else None, detail=detail)

    # -- preflight --------------------------------------------------------------------
    def _check_status(self, status: StoreStatus) -> None:
        if status.drift:
            raise DriftError(
                f"store {status.store}: applied migration(s) {', '.join(status.drift)} changed on disk after being applied",
                hint="restore the original files; to change an applied migration, write a new one",
            )
        if status.missing:
            raise DriftError(f"store {status.store}: applied migration(s) {', '.join(status.missing)} have no file on disk",
                             hint="restore the missing files from version control")

    def _targets(self, status: StoreStatus, to: str | None) -> list[Migration]:
        migrations = {m.version: m for m in self.project.migrations[status.store]}
        if status.out_of_order:
            raise RefusedError(
                f"store {status.store}: pending migration(s) {', '.join(status.out_of_order)} are older than the "
                f"current version {status.current}; renumber them above it",
            )
        pending = [migrations[v] for v in status.pending]
        if to is not None:
            pending = [m for m in pending if m.version_key <= version_key(to)]
        return pending

    def _resolve_scope(self, adapter: Adapter, m: Migration, analysis: Analysis) -> tuple[str, ...]:
        declared = set(m.declared_scope or ()) if analysis.scope_source.startswith("declared") else set()
        strict = tuple(s for s in analysis.scope if s in declared)
        lenient = tuple(s for s in analysis.scope if s not in declared)
        resolved = adapter.resolve_scope(strict, missing_ok=False) + adapter.resolve_scope(lenient, missing_ok=True)
        return tuple(dict.fromkeys(resolved))

    @staticmethod
    def _refuse_irreversible(m: Migration, allow_irreversible: bool) -> None:
        if m.irreversible and not allow_irreversible:
            raise RefusedError(f"{m.store}/{m.id} is irreversible; run 'up --allow-irreversible' to apply it after a verified backup")

    @staticmethod
    def _require_backup(m: Migration, analysis: Analysis, scope: tuple[str, ...]) -> None:
        if m.irreversible and not scope:
            raise RefusedError(f"{m.store}/{m.id} is irreversible but has nothing to back up; declare its scope "
                               f"({m.directive_hint('backup')}) so a verified backup exists before it runs")
        if analysis.risk == Risk.C and not scope and not m.is_python:
            raise RefusedError(f"{m.store}/{m.id} is destructive (risk C) but no backup scope could be inferred; "
                               f"declare one with '{m.directive_hint('backup')}'")

    @contextmanager
    def _locked(self, names: list[str], run_id: str, *, lock: bool, wait: float | None = None,
                outlive_dead: bool = False) -> Iterator[list[Adapter]]:
        """Connect to every store and take every lock, all or none, before anything changes.

        ``outlive_dead``: the previous holder is known dead (recover), so wait out its lock's
        expiry instead of failing at once; a live holder still keeps it."""
        adapters: list[Adapter] = []
        try:
            for name in names:
                cfg = self.project.config.store(name)
                adapter = adapter_for(cfg)
                adapters.append(adapter)
                adapter.connect()
                if lock:
                    patience = max(cfg.lock_wait, wait or 0.0)
                    if outlive_dead:
                        ttl = adapter.lock_ttl_ms / 1000 if isinstance(adapter, ExpiringLock) else 0.0
                        patience = max(patience, ttl + 5)
                    adapter.acquire_lock(self.holder(run_id), patience)
                    self.state.journal(run_id, "lock", "done", store=name)
            yield adapters
        finally:
            for adapter in reversed(adapters):
                adapter.close()

    def _verify_untouched(self, adapter: Adapter, m: Migration, pre: Fingerprint, scope: tuple[str, ...], *, cause: str) -> None:
        try:
            post = adapter.fingerprint(scope)
        except PolyshiftError as exc:
            raise MigrationFailedUnverified(f"{cause}; and the store could not be checked afterwards: {exc}",
                                            hint=f"check the store, then run: polyshift status --store {m.store}") from None
        if post.schema_hash == pre.schema_hash:
            raise MigrationFailedRestored(f"{cause}; the transaction was rolled back and {m.store} is verified unchanged")
        raise MigrationFailedUnverified(f"{cause}; the schema of {m.store} differs from before the forward step",
                                        hint=f"inspect {m.store}; 'polyshift backup list' shows the rollback points")

    # -- restore ----------------------------------------------------------------------
    def restore_into(self, adapter: Adapter, manifest: Manifest, run_id: str | None, *, verified: bool = False) -> RestoreReport:
        """Verify every sha256 (unless the caller just did), take a safety backup of what is there now,
        restore, verify the result against the backup's fingerprints, audit the overwritten window."""
        if not verified:
            self.project.artifacts.verify(manifest.id, decompress=False)
        present = adapter.resolve_scope(manifest.scope, missing_ok=True)
        safety = None
        if present:
            safety = self.take_backup(adapter, present, version=manifest.version,
                                      reason=f"before restore of {manifest.id}", run_id=run_id)
        window_end = datetime.now(UTC).isoformat(timespec="seconds")
        report = adapter.restore(manifest, self.project.artifacts, self.project.progress)
        self.state.audit("backup.restored", adapter.name, {
            "backup": manifest.id, "scope": list(manifest.scope), "verified": report.verified,
            "mismatches": list(report.mismatches), "rows": report.items, "safety_backup": safety.id if safety else None,
            "overwrote_writes_between": [manifest.created_at, window_end], "run": run_id,
        })
        return report

    # -- rollback ---------------------------------------------------------------------
    def rollback(self, *, store: str | None = None, to: str | None = None, steps: int | None = None,
                 dry_run: bool = False) -> list[Outcome]:
        if to is not None and steps is not None:
            raise UsageError("use either --to or --steps, not both")
        if steps is not None and steps < 1:
            raise UsageError("--steps must be at least 1")
        names = self.stores(store)
        if len(names) > 1 and to is None:
            raise UsageError("rollback across several stores needs --to VERSION (or pick one with --store)")
        run_id = self.state.start_run("rollback", {"stores": names, "to": to, "steps": steps})
        outcomes: list[Outcome] = []
        status = "failed"
        try:
            with self._locked(names, run_id, lock=not dry_run) as adapters:
                plans = {}
                for adapter in adapters:
                    adapter.ensure_ledger()
                    st = self.status(adapter)
                    self._check_status(st)
                    applied = sorted(applied_entries(adapter.ledger()), key=version_key, reverse=True)
                    if to is not None:
                        targets = [v for v in applied if version_key(v) > version_key(to)]
                    else:
                        targets = applied[: steps or 1]
                    migs = [self.project.migration(adapter.name, v) for v in targets]
                    for mg in migs:
                        if mg.rollback is None:
                            raise RefusedError(f"{mg.store}/{mg.id} is irreversible and has no rollback step",
                                               hint=self._backup_hint(mg) or "restore a backup taken before it")
                        adapter.analyze(mg, "down")
                    plans[adapter.name] = migs
                for adapter in reversed(adapters):
                    for mg in plans[adapter.name]:
                        if dry_run:
                            a = adapter.analyze(mg, "down")
                            outcomes.append(Outcome(mg.store, mg.version, mg.slug, "would-roll-back", a.risk.value, list(a.scope)))
                            continue
                        outcomes.append(self._rollback_one(adapter, mg, run_id))
            status = "succeeded"
            return outcomes
        finally:
            self.state.finish_run(run_id, status, {"outcomes": [o.to_json() for o in outcomes]})

    def _backup_hint(self, m: Migration) -> str | None:
        points = [p for p in self.state.rollback_points(m.store) if p["version"] == m.version and p["reason"] == f"before {m.id} up"]
        if points:
            return f"data as it was before {m.id} is in backup {points[-1]['id']}: polyshift backup restore {points[-1]['id']} --yes"
        return None

    def _rollback_one(self, adapter: Adapter, m: Migration, run_id: str) -> Outcome:
        analysis = adapter.analyze(m, "down")
        scope = adapter.resolve_scope(analysis.scope + (m.declared_scope or ()), missing_ok=True)
        pre = adapter.fingerprint(scope)
        manifest = None
        if scope:
            manifest = self.take_backup(adapter, scope, version=m.version, reason=f"before {m.id} rollback", run_id=run_id)
        self._journal(run_id, "rollback", "intent", m)
        try:
            result = adapter.apply(m, "down", run_id=run_id, actor=actor())
        except StepFailed as exc:
            self._journal(run_id, "rollback", "failed", m, error=str(exc))
            self.state.audit("rollback.failed", m.store, {"version": m.version, "error": str(exc)})
            if analysis.non_transactional and manifest is not None:
                self.restore_into(adapter, manifest, run_id)
            self._verify_untouched(adapter, m, pre, scope, cause=str(exc))
        self._journal(run_id, "rollback", "done", m)
        self.state.audit("migration.rolled_back", m.store, {"version": m.version, "slug": m.slug, "run": run_id,
                                                             "backup": manifest.id if manifest else None})
        self.emit("rolled-back", {"store": m.store, "version": m.version, "hint": self._backup_hint(m)})
        return Outcome(m.store, m.version, m.slug, "rolled-back", analysis.risk.value, list(scope),
                       manifest.id if manifest else None, result.duration_ms, result.non_transactional)

    # -- backups ----------------------------------------------------------------------
    def backup(self, store: str, scope: tuple[str, ...]) -> Manifest:
        if not scope:
            raise UsageError("--scope needs at least one name")
        with self.adapter(store) as adapter:
            resolved = adapter.resolve_scope(scope, missing_ok=False)
            return self.take_backup(adapter, resolved, version=None, reason="manual", run_id=None)

    def restore(self, artifact_id: str) -> RestoreReport:
        manifest = self.project.artifacts.verify(artifact_id, decompress=False)
        return self.restore_verified(manifest)

    def restore_verified(self, manifest: Manifest) -> RestoreReport:
        """Restore a backup whose files were verified by the caller just now."""
        artifact_id = manifest.id
        run_id = self.state.start_run("restore", {"backup": artifact_id})
        status = "failed"
        try:
            with self._locked([manifest.store], run_id, lock=True) as (adapter,):
                report = self.restore_into(adapter, manifest, run_id, verified=True)
            status = "succeeded" if report.verified else "unverified"
        finally:
            self.state.finish_run(run_id, status)
        if not report.verified:
            raise MigrationFailedUnverified(f"restored {artifact_id} but it does not verify: {'; '.join(report.mismatches)}",
                                            hint="inspect the store; the safety backup taken before the restore is listed by 'backup list'")
        return report
