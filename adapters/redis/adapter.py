"""Redis adapter (redis-py): SET-NX lock with renewal, ledger in Redis, DUMP/RESTORE backups, content fingerprints.

Redis has no transaction that spans a migration, so every forward counts as non-transactional:
a failure is undone by the rollback step and, where that does not verify, by restoring the
backup. Redis has no schema either: the schema part of a fingerprint is the scope's content.
Cluster URLs (``redis+cluster://`` or ``cluster = true``) scan and back up every primary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
from polyshift.adapters.redis import keys as rk
from polyshift.adapters.redis.helpers import RedisHelpers
from polyshift.framework.control import failpoints
from polyshift.framework.core.concurrency import Renewer
from polyshift.framework.core.config import setting_duration
from polyshift.framework.core.errors import BackupCorruptError, BackupError, LockHeldError, StepFailed, StoreError
from polyshift.framework.core.lifecycle import Direction
from polyshift.framework.core.migration import Migration, MigrationContext, Risk, describe_failure
from polyshift.framework.core.protocol import Analysis, Fingerprint, LedgerEntry, RestoreReport, StepResult
from polyshift.framework.core.secrets import redact
from redis.cluster import RedisCluster

if TYPE_CHECKING:
    from polyshift.framework.control.artifacts import ArtifactStore, ArtifactWriter, Manifest
    from polyshift.framework.core.config import StoreConfig
    from polyshift.framework.core.progress import Progress

log = logging.getLogger("polyshift.redis")
_BATCH = 1000
_LOCK_TTL_MS = 30_000  # default; a store's lock_ttl option overrides it
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


class RedisAdapter:
    kind = "redis"

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.name = config.name
        self.prefix = str(config.options.get("prefix", "polyshift:"))
        self.cluster = bool(config.options.get("cluster", False)) or config.url.startswith("redis+cluster://")
        self._client: Any = None
        self._lock_token: bytes | None = None
        self._renewer: Renewer | None = None
        self._digest_script: Any = None
        self._restore_script: Any = None
        self.lock_ttl_ms = int(setting_duration(config.options.get("lock_ttl", _LOCK_TTL_MS / 1000), "lock_ttl",
                                                where=f"[stores.{config.name}]") * 1000)

    # -- connection -------------------------------------------------------------------
    def _fail(self, what: str, exc: Exception) -> StoreError:
        return StoreError(f"store {self.name}: {what}: {redact(str(exc))}")

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
        except (redis.RedisError, OSError) as exc:
            self._client = None
            raise self._fail(f"cannot connect to {self.config.display_url}", exc) from None

    @property
    def client(self) -> Any:
        self.connect()
        return self._client

    def nodes(self) -> list[Any]:
        """One client per primary: SCAN is per node, so a cluster is scanned node by node."""
        if self.cluster:
            return [self.client.get_redis_connection(node) for node in self.client.get_primaries()]
        return [self.client]

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
    # One lock per store, so two stores on one server and prefix never wait for each other.
    # ``<prefix>lock`` is the key versions before per-store locks took: a runner of such a
    # version may still hold it, and then every store under the prefix counts as locked.
    @property
    def _lock_key(self) -> str:
        return f"{self.prefix}lock:{self.name}"

    @property
    def _shared_lock_key(self) -> str:
        return f"{self.prefix}lock"

    def acquire_lock(self, holder: str, wait: float) -> None:
        """SET NX PX with a random token; a thread renews it while we run, so a dead runner's lock expires."""
        if self._lock_token is not None:
            return
        token = json.dumps({"holder": holder, "token": uuid.uuid4().hex,
                            "since": datetime.now(UTC).isoformat(timespec="seconds")}).encode()
        deadline = time.monotonic() + wait
        try:
            while self.client.exists(self._shared_lock_key) or not self.client.set(self._lock_key, token, nx=True,
                                                                                    px=self.lock_ttl_ms):
                if time.monotonic() >= deadline:
                    raise LockHeldError(f"store {self.name} is locked by another polyshift run ({self.lock_holder()})",
                                        hint=f"wait for it to finish; a crashed runner's lock expires within {self.lock_ttl_ms / 1000:g} s")
                time.sleep(0.2)
        except redis.RedisError as exc:
            raise self._fail("cannot take the lock", exc) from None
        self._lock_token = token
        self._renewer = Renewer(self._renew, self.lock_ttl_ms / 3000, "polyshift-redis-lock")

    def _renew(self) -> bool:
        try:
            if not self.client.eval(_RENEW, 1, self._lock_key, self._lock_token, self.lock_ttl_ms):
                log.error("store %s: lost the lock (expired or taken over); stopping renewal", self.name)
                return False
        except redis.RedisError as exc:
            log.warning("store %s: lock renewal failed: %s", self.name, redact(str(exc)))
        return True

    def lock_holder(self) -> str:
        try:
            return self._lock_holder()
        except redis.RedisError as exc:
            raise self._fail("reading the lock holder", exc) from None

    def _lock_holder(self) -> str:
        key = self._shared_lock_key if self.client.exists(self._shared_lock_key) else self._lock_key
        raw = self.client.get(key)
        if raw is None:
            return "holder unknown"
        try:
            info = json.loads(raw)
        except ValueError:
            return "holder unknown"
        ttl = self.client.pttl(key)
        return f"{info.get('holder')}, since {info.get('since')}, expires in {max(ttl, 0) / 1000:.0f} s unless renewed"

    def release_lock(self) -> None:
        if self._lock_token is None:
            return
        if self._renewer is not None:
            self._renewer.stop()
        try:
            self.client.eval(_RELEASE, 1, self._lock_key, self._lock_token)
        except redis.RedisError as exc:
            raise self._fail("cannot release the lock", exc) from None
        finally:
            self._lock_token = None

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
        try:
            rows = self.client.lrange(self._ledger_key, 0, -1)
        except redis.RedisError as exc:
            raise self._fail("cannot read the ledger", exc) from None
        entries = []
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
        try:
            self.client.eval(_CLAIM, 1, self._ledger_key, self.name)
            self.client.rpush(self._ledger_key, json.dumps(entry))
        except redis.RedisError as exc:
            raise self._fail("cannot write the ledger", exc) from None

    def record_reverted(self, migration: Migration, *, run_id: str, actor: str) -> None:
        self._record(migration, Direction.ROLLBACK, run_id=run_id, actor=actor, duration_ms=0)

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
        skip = self.prefix.encode()
        try:
            for pattern in patterns:
                if next(rk.scan_nodes(self.nodes(), pattern, skip), None) is None:
                    log.warning("store %s: backup pattern %r matches no key", self.name, pattern)
        except redis.RedisError as exc:
            raise self._fail("resolving the backup scope", exc) from None
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
        try:
            step.call(self._context(migration, run_id))
        except redis.RedisError as exc:
            raise StepFailed(f"{self.name} {migration.id} {step.name} failed: {redact(str(exc))}", step=step.name) from None
        except StepFailed:
            raise
        except Exception as exc:  # a Python step's own bug is a failed step, not a crash
            raise StepFailed(f"{self.name} {migration.id} {step.name} raised {redact(describe_failure(exc))}",
                             step=step.name) from exc
        duration = int((time.monotonic() - started) * 1000)
        self._record(migration, direction, run_id=run_id, actor=actor, duration_ms=duration)
        return StepResult(duration, 1, True)

    def validate(self, migration: Migration) -> list[str]:
        step = migration.validate
        if step is None or step.function is None:
            return []
        try:
            result = step.call(self._context(migration, "validate"))
        except Exception as exc:
            return [f"validate raised {redact(describe_failure(exc))}"]
        if result is False:
            return ["validate returned False"]
        return [str(r) for r in result] if isinstance(result, (list, tuple)) else []

    # -- backup -----------------------------------------------------------------------
    def _server_ms(self, node: Any) -> int:
        seconds, micros = node.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def _digests(self, keys: list[bytes], *, dump: bool) -> list[tuple[str, int, bytes | None, str]]:
        """(digest, pttl, DUMP payload or None, type) per key, computed in Redis by one script call per batch.

        In a cluster a script's keys must share a hash slot, so the batch is split by slot there.
        """
        if self._digest_script is None:
            self._digest_script = self.client.register_script(rk.DIGEST_LUA)
        groups: dict[int, list[int]] = {}
        if self.cluster:
            for index, key in enumerate(keys):
                groups.setdefault(self.client.keyslot(key), []).append(index)
        else:
            groups[0] = list(range(len(keys)))
        out: list[Any] = [None] * len(keys)
        for indexes in groups.values():
            try:
                replies = self._digest_script(keys=[keys[i] for i in indexes], args=["1" if dump else "0"])
            except redis.ResponseError as exc:
                if "POLYSHIFT unsupported type" in str(exc):
                    kind, _, key = str(exc).split("unsupported type ", 1)[1].partition(" for key ")
                    raise rk.unsupported(kind, key.encode()) from None
                raise
            for i, (digest, pttl, payload, kind) in zip(indexes, replies, strict=True):
                out[i] = (digest.decode() if isinstance(digest, bytes) else digest, int(pttl), payload or None,
                          kind.decode() if isinstance(kind, bytes) else kind)
        return out

    def _walk(self, patterns: tuple[str, ...], *, dump: bool, progress: Progress | None = None) -> Any:
        """Batches of (pattern, key, digest, pttl, payload, type) over the scope; vanished keys skipped."""
        for batch in rk.batched(rk.scope_keys(self.nodes(), patterns, self.prefix.encode()), _BATCH):
            rows = self._digests([key for _, key in batch], dump=dump)
            if progress is not None:
                progress.advance(len(batch))
            yield [(pattern, key, *row) for (pattern, key), row in zip(batch, rows, strict=True) if row[3] != "none"]

    def backup(self, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress) -> dict[str, Any]:
        """DUMP + PTTL + content digest per key in one pass; expiry stored as absolute server time (RESTORE ABSTTL).

        Redis has no snapshot to read from: each key is captured as it was when its batch was read,
        and the manifest's fingerprint is computed from exactly those values.
        """
        patterns = rk.validate_patterns(scope)
        tally = _Tally(patterns)
        progress.start(f"backup {', '.join(patterns)[:60]}")

        def records() -> Any:
            for rows in self._walk(patterns, dump=True, progress=progress):
                now = self._server_ms(self.nodes()[0])
                chunk = bytearray()
                for pattern, key, digest, pttl, payload, kind in rows:
                    chunk += rk.encode_record(key, now + pttl if pttl > 0 else -1, payload)
                    tally.add(pattern, digest, kind)
                yield bytes(chunk)

        try:
            writer.write_stream("keys.bin.zst", records())
        except redis.RedisError as exc:
            raise BackupError(f"store {self.name}: backup failed: {redact(str(exc))}") from None
        finally:
            progress.finish()
        return {"patterns": list(patterns), "counts": dict(tally.counts), "fingerprint": tally.fingerprint().to_json()}

    def restore(self, manifest: Manifest, artifacts: ArtifactStore, progress: Progress) -> RestoreReport:
        """RESTORE … REPLACE ABSTTL in batches (one script call each), then remove scope keys the backup did not have.

        Restored names are collected in a temporary Redis set rather than in memory, so the
        restore stays bounded whatever the number of keys and never leaves a gap with keys missing.
        """
        patterns = tuple(manifest.meta.get("patterns", ()))
        if not patterns:
            raise BackupCorruptError(f"backup {manifest.id}: manifest lists no key patterns")
        # One marker per backup, not per process: a restore killed half-way leaves its marker, and
        # the restore that finishes it (under the same store lock) starts by clearing it.
        marker = f"{self.prefix}restore:{manifest.id}"
        try:
            self.client.unlink(marker)
        except redis.RedisError as exc:
            raise StoreError(f"store {self.name}: restore of {manifest.id} could not start: {redact(str(exc))}") from None
        restored = expired = 0
        # On one node the restore script describes each key right after writing it, so the
        # verification needs no second pass; a cluster restores by pipeline and re-reads instead.
        tally = None if self.cluster else _Tally(patterns)
        regexes = [(p, rk.glob_regex(p)) for p in patterns]

        def attribute(key: bytes) -> str:
            return next((p for p, r in regexes if r.match(key)), patterns[0])

        progress.start(f"restore {manifest.id}", total=sum(manifest.meta.get("counts", {}).values()) or None)
        try:
            with artifacts.open(manifest, "keys.bin.zst") as stream:
                for batch in rk.batched(rk.decode_records(stream), _BATCH):
                    now = self._server_ms(self.nodes()[0])
                    live = [(k, e, p) for k, e, p in batch if not 0 < e <= now]
                    expired += len(batch) - len(live)  # already past their expiry: restoring would resurrect them
                    if live:
                        described = self._restore_batch(live, marker)
                        if tally is not None and described is not None:
                            for (key, _, _), (digest, _pttl, _payload, kind) in zip(live, described, strict=True):
                                tally.add(attribute(key), digest.decode() if isinstance(digest, bytes) else digest,
                                          kind.decode() if isinstance(kind, bytes) else kind)
                    restored += len(live)
                    progress.advance(len(batch))
                    failpoints.passed("restore-batch")
            removed = self._remove_extras(patterns, marker)
        except redis.RedisError as exc:
            raise StoreError(f"store {self.name}: restore of {manifest.id} failed part-way: {redact(str(exc))}",
                             hint="the safety backup taken before this restore holds what was there") from None
        finally:
            try:
                self.client.unlink(marker)
            except redis.RedisError:
                pass
            progress.finish()
        log.info("store %s: restored %d keys, skipped %d already expired, removed %d not in the backup",
                 self.name, restored, expired, removed)
        return self._verify(manifest, expired, tally.fingerprint() if tally is not None else None, removed)

    def _restore_batch(self, records: list[tuple[bytes, int, bytes]], marker: str) -> list[Any] | None:
        """RESTORE a batch; on a single node also returns each key's description as written."""
        if self.cluster:
            pipe = self.client.pipeline(transaction=False)
            for key, expire_at, payload in records:
                pipe.restore(key, max(expire_at, 0), payload, replace=True, absttl=expire_at > 0)
            pipe.execute()
            self.client.sadd(marker, *[k for k, _, _ in records])
            return None
        if self._restore_script is None:
            self._restore_script = self.client.register_script(rk.RESTORE_LUA)
        args: list[Any] = []
        for _, expire_at, payload in records:
            args += [expire_at, payload]
        return list(self._restore_script(keys=[k for k, _, _ in records] + [marker], args=args))

    def _remove_extras(self, patterns: tuple[str, ...], marker: str) -> int:
        removed = 0
        for batch in rk.batched((key for _, key in rk.scope_keys(self.nodes(), patterns, self.prefix.encode())), _BATCH):
            present = self.client.smismember(marker, batch)
            extras = [k for k, p in zip(batch, present, strict=True) if not p]
            if extras:
                pipe = self.client.pipeline(transaction=False)
                for key in extras:
                    pipe.unlink(key)
                pipe.execute()
                removed += len(extras)
        return removed

    def _verify(self, manifest: Manifest, expired: int, written: Fingerprint | None, removed: int) -> RestoreReport:
        """Content equal to the backup's fingerprint; with keys that expired meanwhile, counts must add up."""
        patterns = tuple(manifest.meta["patterns"])
        now = written if written is not None else self.fingerprint(patterns)
        expected = Fingerprint.from_json(manifest.meta["fingerprint"])
        mismatches: list[str] = []
        notes: list[str] = [f"{removed} keys written since the backup were removed"] if removed else []
        if expired:
            notes.append(f"{expired} keys expired since the backup and were not brought back")
            if sum(now.counts.values()) != sum(expected.counts.values()) - expired:
                mismatches.append(f"{sum(now.counts.values())} keys restored, expected {sum(expected.counts.values()) - expired}")
        elif now.data_hash != expected.data_hash:
            differing = [p for p in patterns if now.items.get(p) != expected.items.get(p)]
            mismatches.append(f"content differs from the backup for {', '.join(differing)}")
        return RestoreReport(manifest.id, {p: now.counts.get(p, 0) for p in patterns}, verified=not mismatches,
                             mismatches=tuple(mismatches), notes=tuple(notes))

    # -- fingerprint ------------------------------------------------------------------
    def estimate_backup_bytes(self, scope: tuple[str, ...]) -> int:
        """The dataset's memory across primaries: an upper bound for a compressed backup of part of it."""
        if not scope:
            return 0
        try:
            return sum(int(node.info("memory").get("used_memory_dataset", 0)) for node in self.nodes())
        except redis.RedisError as exc:
            raise self._fail("cannot estimate the backup size", exc) from None

    def invariants(self) -> list[str]:
        """A cluster that is not 'ok' (a slot uncovered, a primary failing) serves errors for some keys."""
        if not self.cluster:
            return []
        problems = []
        try:
            for node in self.nodes():
                info = node.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                state = dict(line.split(":", 1) for line in text.splitlines() if ":" in line).get("cluster_state", "?").strip()
                if state != "ok":
                    where = node.connection_pool.connection_kwargs
                    problems.append(f"cluster_state is {state} on {where.get('host')}:{where.get('port')}")
        except redis.RedisError as exc:
            raise self._fail("cannot read the cluster state", exc) from None
        return problems

    def fingerprint(self, scope: tuple[str, ...]) -> Fingerprint:
        """Order-independent sum of per-key content digests (key, type, has-TTL, value), per pattern."""
        patterns = rk.validate_patterns(scope)
        tally = _Tally(patterns)
        try:
            for rows in self._walk(patterns, dump=False):
                for pattern, _key, digest, _pttl, _payload, kind in rows:
                    tally.add(pattern, digest, kind)
        except redis.RedisError as exc:
            raise self._fail("fingerprint failed", exc) from None
        return tally.fingerprint()


class _Tally:
    """Running fingerprint of a scope: digest sums, counts and type counts per pattern."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        self.sums = dict.fromkeys(patterns, 0)
        self.counts = dict.fromkeys(patterns, 0)
        self.types: dict[str, dict[str, int]] = {p: {} for p in patterns}

    def add(self, pattern: str, digest: str, kind: str) -> None:
        self.sums[pattern] = (self.sums[pattern] + rk.digest_int(digest)) % (1 << 128)
        self.counts[pattern] += 1
        self.types[pattern][kind] = self.types[pattern].get(kind, 0) + 1

    def fingerprint(self) -> Fingerprint:
        items = {p: {"data": f"{self.sums[p]:032x}", "rows": self.counts[p], "types": self.types[p]} for p in self.patterns}
        data_hash = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
        # No schema in Redis: the scope's content stands in for it, so a rollback is verified by content.
        return Fingerprint(data_hash, data_hash, dict(self.counts), items)
