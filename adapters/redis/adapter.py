"""Redis adapter (redis-py): expiring token lock, ledger in Redis, Python steps; backups in ``backup``.

Redis has no transaction that spans a migration, so every forward counts as non-transactional:
a failure is undone by the rollback step and, where that does not verify, by restoring the
backup. Redis has no schema either: the schema part of a fingerprint is the scope's content.
Cluster URLs (``redis+cluster://`` or ``cluster = true``) scan and back up every primary.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import RedisCluster

from polyshift.adapters.boundary import python_checks, run_python_step, translate, translated
from polyshift.adapters.locking import Claim, ExpiringTokenLock, lock_ttl_ms
from polyshift.adapters.redis import backup as redis_backup
from polyshift.adapters.redis import inventory as redis_inventory
from polyshift.adapters.redis import keys as rk
from polyshift.adapters.redis.errors import REDIS_ERRORS
from polyshift.adapters.redis.helpers import RedisHelpers
from polyshift.framework.core.errors import StepFailed, StoreError
from polyshift.framework.core.kinds import REDIS
from polyshift.framework.core.lifecycle import Direction
from polyshift.framework.core.migration import Migration, MigrationContext, Risk
from polyshift.framework.core.protocol import Analysis, Fingerprint, LedgerEntry, RestoreReport, StepResult

if TYPE_CHECKING:
    from polyshift.framework.control.artifacts import ArtifactStore, ArtifactWriter, Manifest
    from polyshift.framework.core.config import StoreConfig
    from polyshift.framework.core.progress import Progress

log = logging.getLogger("polyshift.redis")
# Compare-and-delete / compare-and-extend: only the token's owner may release or renew the lock.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
# KEYS[1] the ledger list, ARGV[1] a store name: entries written before the ledger recorded the
# store are stamped with it, in place and atomically (other stores only ever append).
_CLAIM = """
local n = 0
for i, raw in ipairs(redis.call('lrange', KEYS[1], 0, -1)) do
  local entry = cjson.decode(raw)
  if entry['store'] == nil then
    entry['store'] = ARGV[1]
    redis.call('lset', KEYS[1], i - 1, cjson.encode(entry))
    n = n + 1
  end
end
return n
"""


class _LockKey:
    """The store's lock: ``<prefix>lock:<store>``, SET NX PX with the claim as its JSON value.

    One lock per store, so two stores on one server and prefix never wait for each other.
    ``<prefix>lock`` is the key versions before per-store locks took: a runner of such a
    version may still hold it, and then every store under the prefix counts as locked.
    """

    def __init__(self, adapter: RedisAdapter) -> None:
        self._adapter = adapter
        self.key = f"{adapter.prefix}lock:{adapter.name}"
        self.shared_key = f"{adapter.prefix}lock"

    @staticmethod
    def _value(claim: Claim) -> bytes:
        return json.dumps({"holder": claim.holder, "token": claim.token, "since": claim.since}).encode()

    def _translated(self, what: str) -> Any:
        return translated(REDIS_ERRORS, f"store {self._adapter.name}: {what}")

    def take(self, claim: Claim, ttl_ms: int) -> bool:
        client = self._adapter.client
        with self._translated("cannot take the lock"):
            return not client.exists(self.shared_key) and bool(client.set(self.key, self._value(claim), nx=True, px=ttl_ms))

    def extend(self, claim: Claim, ttl_ms: int) -> bool:
        with self._translated("cannot renew the lock"):
            return bool(self._adapter.client.eval(_RENEW, 1, self.key, self._value(claim), ttl_ms))

    def give_back(self, claim: Claim) -> None:
        with self._translated("cannot release the lock"):
            self._adapter.client.eval(_RELEASE, 1, self.key, self._value(claim))

    def describe_holder(self) -> str:
        client = self._adapter.client
        with self._translated("reading the lock holder"):
            key = self.shared_key if client.exists(self.shared_key) else self.key
            raw = client.get(key)
            if raw is None:
                return "holder unknown"
            try:
                info = json.loads(raw)
            except ValueError:
                return "holder unknown"
            ttl = client.pttl(key)
        return f"{info.get('holder')}, since {info.get('since')}, expires in {max(ttl, 0) / 1000:.0f} s unless renewed"


class RedisAdapter:
    spec = REDIS
    kind = REDIS.name

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.name = config.name
        self.prefix = str(config.options.get("prefix", "polyshift:"))
        self.cluster = bool(config.options.get("cluster", False)) or config.url.startswith("redis+cluster://")
        self._client: Any = None
        self._keyspace: redis_backup.Keyspace | None = None
        self.lock_ttl_ms = lock_ttl_ms(config)
        self.lock = ExpiringTokenLock(config.name, _LockKey(self), self.lock_ttl_ms)

    # -- connection -------------------------------------------------------------------
    def connect(self) -> None:
        if self._client is not None:
            return
        try:
            if self.cluster:
                url = self.config.url.replace("redis+cluster://", "redis://", 1)
                self._client = RedisCluster.from_url(url, socket_timeout=self.config.statement_timeout, socket_connect_timeout=10)
            else:
                self._client = redis.Redis.from_url(self.config.url, socket_timeout=self.config.statement_timeout,
                                                    socket_connect_timeout=10)
            self._client.ping()
        except REDIS_ERRORS.catches as exc:
            self._client = None
            raise translate(REDIS_ERRORS, exc, f"store {self.name}: cannot connect to {self.config.display_url}") from None

    @property
    def client(self) -> Any:
        """The native client: ``redis.Redis``, or ``redis.cluster.RedisCluster`` for a cluster."""
        self.connect()
        return self._client

    def nodes(self) -> list[Any]:
        """One client per primary: SCAN is per node, so a cluster is scanned node by node."""
        if self.cluster:
            return [self.client.get_redis_connection(node) for node in self.client.get_primaries()]
        return [self.client]

    @property
    def keyspace(self) -> redis_backup.Keyspace:
        """What backups, restores and fingerprints work on."""
        if self._keyspace is None or self._keyspace.client is not self.client:
            self._keyspace = redis_backup.Keyspace(self.name, self.client, self.nodes, cluster=self.cluster, prefix=self.prefix)
        return self._keyspace

    def close(self) -> None:
        try:
            self.release_lock()
        except StoreError:
            pass
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing must never mask the error that got us here
                pass
        self._client = None

    # -- lock -------------------------------------------------------------------------
    def acquire_lock(self, holder: str, wait: float) -> None:
        """SET NX PX with a random token; a thread renews it while we run, so a dead runner's lock expires."""
        self.lock.acquire(holder, wait)

    def release_lock(self) -> None:
        self.lock.release()

    # -- ledger -----------------------------------------------------------------------
    # One list per prefix, ``<prefix>ledger``; each entry names its store, so stores sharing a
    # server and prefix each read only their own. Entries without a store were written before
    # entries named it, by the one store that could use the prefix then: they are read as this
    # store's, and the store's next write stamps them with its name (after its status check
    # accepted them as its own), so a store added later under the prefix starts empty.
    @property
    def _ledger_key(self) -> str:
        return f"{self.prefix}ledger"

    def ensure_ledger(self) -> None:
        """The ledger is a list created by its first push: nothing to prepare."""

    def ledger(self) -> list[LedgerEntry]:
        with translated(REDIS_ERRORS, f"store {self.name}: cannot read the ledger"):
            rows = self.client.lrange(self._ledger_key, 0, -1)
        entries: list[LedgerEntry] = []
        for raw in rows:
            e = json.loads(raw)
            if e.get("store", self.name) != self.name:
                continue
            entries.append(LedgerEntry(len(entries) + 1, e["version"], e["slug"], e["checksum"], e["direction"], e["applied_by"],
                                       datetime.fromisoformat(e["applied_at"]), e["duration_ms"], True, True, e.get("run_id")))
        return entries

    def _record(self, migration: Migration, direction: Direction, *, run_id: str, actor: str, duration_ms: int) -> None:
        entry = {"store": self.name, "version": migration.version, "slug": migration.slug, "checksum": migration.checksum,
                 "direction": direction.ledger_word, "applied_by": actor, "applied_at": datetime.now(UTC).isoformat(),
                 "duration_ms": duration_ms, "run_id": run_id}
        with translated(REDIS_ERRORS, f"store {self.name}: cannot write the ledger"):
            self.client.eval(_CLAIM, 1, self._ledger_key, self.name)
            self.client.rpush(self._ledger_key, json.dumps(entry))

    def record_reverted(self, migration: Migration, *, run_id: str, actor: str) -> None:
        self._record(migration, Direction.ROLLBACK, run_id=run_id, actor=actor, duration_ms=0)

    def record_baseline(self, migrations: list[Migration], *, run_id: str, actor: str) -> None:
        """Rows saying ``migrations`` are applied (``polyshift baseline``), one write each."""
        for migration in migrations:
            self._record(migration, Direction.FORWARD, run_id=run_id, actor=actor, duration_ms=0)

    # -- migrations -------------------------------------------------------------------
    def parse(self, migration: Migration) -> None:
        """Redis migrations are Python modules, imported when loaded: only the scope is left to check."""
        rk.validate_patterns(migration.declared_scope or ())

    def analyze(self, migration: Migration, direction: Direction = Direction.FORWARD) -> Analysis:
        scope = rk.validate_patterns(migration.declared_scope or ())
        return Analysis(migration.declared_risk or Risk.C, scope, "declared" if scope else "none",
                        non_transactional=("Redis has no transaction spanning a migration",))

    def resolve_scope(self, scope: tuple[str, ...], *, missing_ok: bool) -> tuple[str, ...]:
        patterns = rk.validate_patterns(scope)
        with translated(REDIS_ERRORS, f"store {self.name}: resolving the backup scope"):
            for pattern in patterns:
                if next(rk.scan_nodes(self.nodes(), pattern, self.prefix.encode()), None) is None:
                    log.warning("store %s: backup pattern %r matches no key", self.name, pattern)
        return patterns

    def _context(self, migration: Migration, run_id: str) -> MigrationContext:
        helpers = RedisHelpers(self.client, self.nodes(), progress_prefix=f"{self.prefix}progress:{self.name}:{migration.id}:",
                               skip_prefix=self.prefix.encode())
        return MigrationContext(client=self.client, store=self.name, migration=migration, helpers=helpers,
                                log=logging.getLogger(f"polyshift.migration.{migration.id}"))

    def apply(self, migration: Migration, direction: Direction, *, run_id: str, actor: str) -> StepResult:
        step = migration.forward if direction is Direction.FORWARD else migration.rollback
        if step is None or step.function is None:
            raise StepFailed(f"{self.name} {migration.id} has no {direction} function",
                             step="rollback")
        started = time.monotonic()
        run_python_step(step, self._context(migration, run_id), REDIS_ERRORS)
        duration = int((time.monotonic() - started) * 1000)
        self._record(migration, direction, run_id=run_id, actor=actor, duration_ms=duration)
        return StepResult(duration, 1, True)

    def validate(self, migration: Migration) -> list[str]:
        step = migration.validate
        if step is None or step.function is None:
            return []
        return python_checks(step, self._context(migration, "validate"))

    # -- backup, restore, fingerprint -----------------------------------------------------
    def backup(self, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress) -> dict[str, Any]:
        return redis_backup.backup(self.keyspace, scope, writer, progress)

    def backup_sample(self, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress, *, limit: int) -> dict[str, Any]:
        """At most ``limit`` keys of each pattern (a rehearsal's sample, never a rollback point)."""
        return redis_backup.backup(self.keyspace, scope, writer, progress, limit=limit)

    def restore(self, manifest: Manifest, artifacts: ArtifactStore, progress: Progress) -> RestoreReport:
        return redis_backup.restore(self.keyspace, manifest, artifacts, progress)

    def fingerprint(self, scope: tuple[str, ...]) -> Fingerprint:
        with translated(REDIS_ERRORS, f"store {self.name}: fingerprint failed"):
            return redis_backup.fingerprint(self.keyspace, scope)

    def estimate_backup_bytes(self, scope: tuple[str, ...]) -> int:
        with translated(REDIS_ERRORS, f"store {self.name}: cannot estimate the backup size"):
            return redis_backup.estimate_bytes(self.keyspace, scope)

    def invariants(self) -> list[str]:
        """A cluster that is not 'ok' (a slot uncovered, a primary failing) serves errors for some keys."""
        if not self.cluster:
            return []
        problems = []
        with translated(REDIS_ERRORS, f"store {self.name}: cannot read the cluster state"):
            for node in self.nodes():
                info = node.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                state = dict(line.split(":", 1) for line in text.splitlines() if ":" in line).get("cluster_state", "?").strip()
                if state != "ok":
                    where = node.connection_pool.connection_kwargs
                    problems.append(f"cluster_state is {state} on {where.get('host')}:{where.get('port')}")
        return problems

    def inventory(self, scope: tuple[str, ...]) -> dict[str, str]:
        patterns = rk.validate_patterns(scope)
        with translated(REDIS_ERRORS, f"store {self.name}: inventory failed"):
            return redis_inventory.account(patterns, self.keyspace.walk(patterns))
