"""Redis backups, restores and fingerprints, over a ``Keyspace``: the client, its primaries and
the prefix of polyshift's own keys, which no scope ever includes.

A backup is DUMP + PTTL + a content digest per key in one pass, with expiry stored as absolute
server time (RESTORE ABSTTL). Redis has no snapshot to read from: each key is captured as it
was when its batch was read, and the manifest's fingerprint is computed from exactly those
values. A fingerprint is the order-independent sum of per-key content digests (key, type,
has-TTL, value), per pattern; Redis has no schema, so its content stands in for one.

Driver errors leave these functions untranslated: the adapter translates them at its boundary.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import redis

from polyshift.adapters.boundary import translated
from polyshift.adapters.redis import keys as rk
from polyshift.adapters.redis.errors import REDIS_ERRORS
from polyshift.framework.control import failpoints
from polyshift.framework.core.concurrency import batched
from polyshift.framework.core.errors import BackupCorruptError, BackupError
from polyshift.framework.core.protocol import Fingerprint, RestoreReport

if TYPE_CHECKING:
    from polyshift.framework.control.artifacts import ArtifactStore, ArtifactWriter, Manifest
    from polyshift.framework.core.progress import Progress

log = logging.getLogger("polyshift.redis")
_BATCH = 1000


class Keyspace:
    """What backups need of a Redis store. ``nodes`` gives one client per primary (SCAN is per node,
    so a cluster is scanned node by node); ``prefix`` starts polyshift's own keys."""

    def __init__(self, store: str, client: Any, nodes: Callable[[], list[Any]], *, cluster: bool, prefix: str) -> None:
        self.store = store
        self.client = client
        self.nodes = nodes
        self.cluster = cluster
        self.prefix = prefix
        self._digest_script: Any = None
        self._restore_script: Any = None

    @property
    def own(self) -> bytes:
        return self.prefix.encode()

    def server_ms(self) -> int:
        seconds, micros = self.nodes()[0].time()
        return int(seconds) * 1000 + int(micros) // 1000

    def digests(self, keys: list[bytes], *, dump: bool) -> list[tuple[str, int, bytes | None, str]]:
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
            replies = self._digest_script(keys=[keys[i] for i in indexes], args=["1" if dump else "0"])
            for i, reply in zip(indexes, replies, strict=True):
                out[i] = rk.described(keys[i], reply)
        return out

    def walk(self, patterns: tuple[str, ...], *, dump: bool, progress: Progress | None = None,
             limit: int | None = None) -> Iterator[list[Any]]:
        """Batches of (pattern, key, digest, pttl, payload, type) over the scope; vanished keys
        skipped; with ``limit``, the first that many keys of each pattern only."""
        keys: Iterator[tuple[str, bytes]] = rk.scope_keys(self.nodes(), patterns, self.own)
        if limit is not None:
            keys = _first_of_each(keys, limit)
        for batch in batched(keys, _BATCH):
            rows = self.digests([key for _, key in batch], dump=dump)
            if progress is not None:
                progress.advance(len(batch))
            yield [(pattern, key, *row) for (pattern, key), row in zip(batch, rows, strict=True) if row[3] != "none"]

    def restore_batch(self, records: list[tuple[bytes, int, bytes]], marker: str) -> list[Any] | None:
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
        replies = self._restore_script(keys=[k for k, _, _ in records] + [marker], args=args)
        return [rk.described(key, reply) for (key, _, _), reply in zip(records, replies, strict=True)]

    def remove_extras(self, patterns: tuple[str, ...], marker: str) -> int:
        """Unlink the scope's keys that the marker set (what a restore wrote) does not name."""
        removed = 0
        for batch in batched((key for _, key in rk.scope_keys(self.nodes(), patterns, self.own)), _BATCH):
            present = self.client.smismember(marker, batch)
            extras = [k for k, p in zip(batch, present, strict=True) if not p]
            if extras:
                pipe = self.client.pipeline(transaction=False)
                for key in extras:
                    pipe.unlink(key)
                pipe.execute()
                removed += len(extras)
        return removed


def _first_of_each(keys: Iterator[tuple[str, bytes]], limit: int) -> Iterator[tuple[str, bytes]]:
    """(pattern, key) pairs, at most ``limit`` per pattern."""
    seen: dict[str, int] = {}
    for pattern, key in keys:
        if seen.get(pattern, 0) < limit:
            seen[pattern] = seen.get(pattern, 0) + 1
            yield pattern, key


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


def fingerprint(ks: Keyspace, scope: tuple[str, ...]) -> Fingerprint:
    patterns = rk.validate_patterns(scope)
    tally = _Tally(patterns)
    for rows in ks.walk(patterns, dump=False):
        for pattern, _key, digest, _pttl, _payload, kind in rows:
            tally.add(pattern, digest, kind)
    return tally.fingerprint()


def estimate_bytes(ks: Keyspace, scope: tuple[str, ...]) -> int:
    """The dataset's memory across primaries: an upper bound for a compressed backup of part of it."""
    if not scope:
        return 0
    return sum(int(node.info("memory").get("used_memory_dataset", 0)) for node in ks.nodes())


def backup(ks: Keyspace, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress,
           limit: int | None = None) -> dict[str, Any]:
    """With ``limit``, at most that many keys of each pattern: a rehearsal's sample, never a rollback point."""
    patterns = rk.validate_patterns(scope)
    tally = _Tally(patterns)
    progress.start(f"backup {', '.join(patterns)[:60]}")

    def records() -> Iterator[bytes]:
        for rows in ks.walk(patterns, dump=True, progress=progress, limit=limit):
            now = ks.server_ms()
            chunk = bytearray()
            for pattern, key, digest, pttl, payload, kind in rows:
                chunk += rk.encode_record(key, now + pttl if pttl > 0 else -1, payload)
                tally.add(pattern, digest, kind)
            yield bytes(chunk)

    try:
        with translated(REDIS_ERRORS, f"store {ks.store}: backup failed", BackupError):
            writer.write_stream("keys.bin.zst", records())
    finally:
        progress.finish()
    meta = {"patterns": list(patterns), "counts": dict(tally.counts), "fingerprint": tally.fingerprint().to_json()}
    return meta | ({"sample": limit} if limit is not None else {})


def restore(ks: Keyspace, manifest: Manifest, artifacts: ArtifactStore, progress: Progress) -> RestoreReport:
    """RESTORE … REPLACE ABSTTL in batches (one script call each), then remove scope keys the backup did not have.

    Restored names are collected in a temporary Redis set rather than in memory, so the
    restore stays bounded whatever the number of keys and never leaves a gap with keys missing.
    """
    patterns: tuple[str, ...] = tuple(manifest.meta.get("patterns", ()))
    if not patterns:
        raise BackupCorruptError(f"backup {manifest.id}: manifest lists no key patterns")
    # One marker per backup, not per process: a restore killed half-way leaves its marker, and
    # the restore that finishes it (under the same store lock) starts by clearing it.
    marker = f"{ks.prefix}restore:{manifest.id}"
    with translated(REDIS_ERRORS, f"store {ks.store}: restore of {manifest.id} could not start"):
        ks.client.unlink(marker)
    restored = expired = 0
    # On one node the restore script describes each key right after writing it, so the
    # verification needs no second pass; a cluster restores by pipeline and re-reads instead.
    tally = None if ks.cluster else _Tally(patterns)
    regexes = [(p, rk.glob_regex(p)) for p in patterns]

    def attribute(key: bytes) -> str:
        return next((p for p, r in regexes if r.match(key)), patterns[0])

    progress.start(f"restore {manifest.id}", total=sum(manifest.meta.get("counts", {}).values()) or None)
    try:
        with translated(REDIS_ERRORS, f"store {ks.store}: restore of {manifest.id} failed part-way",
                        hint="the safety backup taken before this restore holds what was there"):
            with artifacts.open(manifest, "keys.bin.zst") as stream:
                for batch in batched(rk.decode_records(stream), _BATCH):
                    now = ks.server_ms()
                    live = [(k, e, p) for k, e, p in batch if not 0 < e <= now]
                    expired += len(batch) - len(live)  # already past their expiry: restoring would resurrect them
                    if live:
                        described = ks.restore_batch(live, marker)
                        if tally is not None and described is not None:
                            for (key, _, _), (digest, _pttl, _payload, kind) in zip(live, described, strict=True):
                                tally.add(attribute(key), digest, kind)
                    restored += len(live)
                    progress.advance(len(batch))
                    failpoints.passed("restore-batch")
            removed = ks.remove_extras(patterns, marker)
    finally:
        try:
            ks.client.unlink(marker)
        except redis.RedisError:
            pass  # the next restore of this backup clears it first
        progress.finish()
    log.info("store %s: restored %d keys, skipped %d already expired, removed %d not in the backup",
             ks.store, restored, expired, removed)
    with translated(REDIS_ERRORS, f"store {ks.store}: verifying the restore of {manifest.id} failed"):
        return _verify(ks, manifest, expired, tally.fingerprint() if tally is not None else None, removed)


def _verify(ks: Keyspace, manifest: Manifest, expired: int, written: Fingerprint | None, removed: int) -> RestoreReport:
    """Content equal to the backup's fingerprint; with keys that expired meanwhile, counts must add up."""
    patterns = tuple(manifest.meta["patterns"])
    now = written if written is not None else fingerprint(ks, patterns)
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
