"""Redis backups, restores and fingerprints, over a ``Keyspace``: the client, its primaries and
the prefix of polyshift's own keys, which no scope ever includes.

A backup is SCAN + DUMP + PTTL per page, in one script call, one thread per primary, with expiry
stored as absolute server time (RESTORE ABSTTL). Redis has no snapshot to read from: each key is
captured as it was when its page was read. No digest is computed at backup time: a restore proves
each key as it writes it, by a DUMP of the restored key byte-equal to the backed-up payload (the
same serialization, so the same type and content; it includes the RDB version and a CRC64), and
where the server re-encoded the value (other listpack limits, another RDB version) by comparing
the key's content with the payload's in Redis. The artifact's sha256, read back when it is sealed
and checked before a restore, proves the payloads are the ones that were read.

A fingerprint (drift, rollback verification) is the order-independent sum of per-key content
digests (key, type, has-TTL, value), per pattern: content, not encoding, since a hash whose
fields were renamed and renamed back is equal but serialized differently. Redis has no schema,
so its content stands in for one.

Driver errors leave these functions untranslated: the adapter translates them at its boundary.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import redis
from redis.crc import key_slot

from polyshift.adapters.boundary import translated
from polyshift.adapters.redis import keys as rk
from polyshift.adapters.redis.errors import REDIS_ERRORS
from polyshift.adapters.redis.parallel import fan_in, fan_out
from polyshift.framework.control import failpoints
from polyshift.framework.core.concurrency import batched
from polyshift.framework.core.errors import BackupCorruptError, BackupError
from polyshift.framework.core.protocol import Fingerprint, RestoreReport

if TYPE_CHECKING:
    from polyshift.framework.control.artifacts import ArtifactStore, ArtifactWriter, Manifest
    from polyshift.framework.core.progress import Progress

log = logging.getLogger("polyshift.redis")
_BATCH = 1000


# The type of a value by the first byte of its DUMP payload (the RDB object type). A byte not
# listed (a module type, or one added by a newer server) is asked of the server with TYPE.
_RDB_KINDS: dict[int, str] = {
    0: "string", 1: "list", 2: "set", 3: "zset", 4: "hash", 5: "zset", 9: "hash", 10: "list", 11: "set",
    12: "zset", 13: "hash", 14: "list", 15: "stream", 16: "hash", 17: "zset", 18: "list", 19: "stream",
    20: "set", 21: "stream",
}
# What a manifest says its restore is proven against: ``dump`` (each restored key's DUMP equal to
# the backed-up payload, else its content equal to the payload's). Backups without it carry a
# content fingerprint taken at backup time, and are verified against it.
PROOF = "dump"
_SLOTS = 16384


class Keyspace:
    """What backups need of a Redis store. ``nodes`` gives one client per primary (SCAN is per node,
    so a cluster is scanned node by node); ``prefix`` starts polyshift's own keys."""

    def __init__(self, store: str, client: Any, nodes: Callable[[], list[Any]], *, cluster: bool, prefix: str) -> None:
        self.store = store
        self.client = client
        self.nodes = nodes
        self.cluster = cluster
        self.prefix = prefix
        self._scripts: dict[str, Any] = {}
        self._slot_tags: list[str] | None = None

    @property
    def own(self) -> bytes:
        return self.prefix.encode()

    def run(self, node: Any, body: str, args: list[Any]) -> Any:
        """One of keys.py's batch scripts on ``node`` (key names in ARGV: see script_source)."""
        script = self._scripts.get(body)
        if script is None:
            script = self._scripts[body] = self.client.register_script(rk.script_source(body, cluster=self.cluster))
        return script(keys=[], args=args, client=node)

    def batches(self, nodes: list[Any], patterns: tuple[str, ...],
                limit: int | None = None) -> Iterator[tuple[Any, list[tuple[str, bytes]]]]:
        """(node, batch of (pattern, key)) over ``nodes`` in turn: a batch never spans two nodes,
        since one script call reads it. With ``limit``, the first that many keys of each pattern."""
        seen: dict[str, int] = {}
        for node in nodes:
            keys: Iterator[tuple[str, bytes]] = rk.scope_keys([node], patterns, self.own)
            if limit is not None:
                keys = _first_of_each(keys, limit, seen)
            for batch in batched(keys, _BATCH):
                yield node, batch

    def walk(self, patterns: tuple[str, ...], *, progress: Progress | None = None,
             limit: int | None = None) -> Iterator[list[Any]]:
        """Batches of (pattern, key, digest, pttl, None, type) over the scope, content digests
        computed in Redis; vanished keys skipped; with ``limit``, the first that many keys of each pattern."""
        for node, batch in self.batches(self.nodes(), patterns, limit):
            replies = self.run(node, rk.DIGEST_LUA, [key for _, key in batch])
            rows = [rk.described(key, reply) for (_, key), reply in zip(batch, replies, strict=True)]
            if progress is not None:
                progress.advance(len(batch))
            yield [(pattern, key, *row) for (pattern, key), row in zip(batch, rows, strict=True) if row[3] != "none"]

    def kind(self, node: Any, key: bytes) -> str:
        """The type of a key whose payload's first byte is not one polyshift knows; refused when
        polyshift cannot fingerprint it."""
        kind = node.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind not in rk.HASHED_TYPES:
            raise BackupError(f"key {key!r} has type {kind!r}, which polyshift cannot fingerprint "
                              f"(supported: {', '.join(rk.HASHED_TYPES)}); leave it out of the scope")
        return kind

    # -- cluster routing ------------------------------------------------------------------
    def owners(self) -> tuple[list[Any], Callable[[bytes], int]]:
        """The primaries' clients and, for a key, the index of the primary that holds it."""
        nodes = self.nodes()
        if not self.cluster:
            return nodes, lambda _key: 0
        primaries = self.client.get_primaries()
        index = {p.name: i for i, p in enumerate(primaries)}
        cache = self.client.nodes_manager.slots_cache
        owner: list[int] = [index.get(cache[slot][0].name, -1) if slot in cache else -1 for slot in range(_SLOTS)]
        keyslot: Callable[[bytes], int] = key_slot  # the client's keyslot encodes first: these are bytes already

        def route(key: bytes) -> int:
            i = owner[keyslot(key)]
            if i < 0:
                raise BackupError(f"no primary serves the hash slot of key {key!r}: the cluster is not ok")
            return i

        return [self.client.get_redis_connection(p) for p in primaries], route

    def tag(self, slot: int) -> str:
        """A hash tag of ``slot``: names ending in ``{tag}`` live on the node that holds the slot."""
        if self._slot_tags is None:
            tags: list[str | None] = [None] * _SLOTS
            left, n = _SLOTS, 0
            while left:
                slot_of = self.client.keyslot(str(n))
                if tags[slot_of] is None:
                    tags[slot_of] = str(n)
                    left -= 1
                n += 1
            self._slot_tags = [t or "" for t in tags]
        return self._slot_tags[slot]

    def local_name(self, name: str, near: bytes | None, node_index: int, route: Callable[[bytes], int]) -> str:
        """``name`` as a key of one node: in a cluster, tagged to the slot of ``near`` (or to a slot
        of that node), so a script on the node may write it; unchanged on a single node."""
        if not self.cluster:
            return name
        if near is not None:
            return f"{name}{{{self.tag(self.client.keyslot(near))}}}"
        for slot in range(_SLOTS):
            candidate = f"{name}{{{self.tag(slot)}}}"
            if route(candidate.encode()) == node_index:
                return candidate
        raise BackupError(f"store {self.store}: primary {node_index} serves no hash slot")

    def remove_extras(self, node: Any, patterns: tuple[str, ...], marker: str) -> int:
        """Unlink the node's scope keys that the marker set (what the restore wrote there) does not
        name, a SCAN page per script call: key names never leave the server."""
        removed = 0
        for pattern in patterns:
            cursor: Any = 0
            while True:
                cursor, n = self.run(node, rk.REMOVE_EXTRAS_LUA, [cursor, pattern, _BATCH, marker, self.prefix])
                removed += int(n)
                if cursor in (0, b"0"):
                    break
        return removed


def _first_of_each(keys: Iterator[tuple[str, bytes]], limit: int, seen: dict[str, int]) -> Iterator[tuple[str, bytes]]:
    """(pattern, key) pairs, at most ``limit`` per pattern (``seen`` counts them across calls)."""
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
    for rows in ks.walk(patterns):
        for pattern, _key, digest, _pttl, _payload, kind in rows:
            tally.add(pattern, digest, kind)
    return tally.fingerprint()


def estimate_bytes(ks: Keyspace, scope: tuple[str, ...]) -> int:
    """The dataset's memory across primaries: an upper bound for a compressed backup of part of it."""
    if not scope:
        return 0
    return sum(int(node.info("memory").get("used_memory_dataset", 0)) for node in ks.nodes())


class _Counts:
    """Keys per (pattern, type), kept by one thread."""

    def __init__(self) -> None:
        self.by: dict[tuple[str, str], int] = {}

    def per_pattern(self, patterns: tuple[str, ...]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        counts = dict.fromkeys(patterns, 0)
        types: dict[str, dict[str, int]] = {p: {} for p in patterns}
        for (pattern, kind), n in self.by.items():
            counts[pattern] += n
            types[pattern][kind] = types[pattern].get(kind, 0) + n
        return counts, types


def backup(ks: Keyspace, scope: tuple[str, ...], writer: ArtifactWriter, progress: Progress,
           limit: int | None = None) -> dict[str, Any]:
    """DUMP + PTTL per batch (one script call each), one thread per primary, into one zstd stream.

    No digest is computed here: the restore proves each key against its backed-up payload, and
    the artifact's sha256 (read back when it is sealed) proves the payloads are those that were
    read. With ``limit``, at most that many keys of each pattern: a rehearsal's sample, never a
    rollback point (read one node after another, so the limit holds across the cluster).
    """
    patterns = rk.validate_patterns(scope)
    nodes = ks.nodes()
    progress.start(f"backup {', '.join(patterns)[:60]}")

    counts = _Counts()
    by = counts.by
    kinds, own = _RDB_KINDS, ks.own
    seen = dict.fromkeys(patterns, 0)

    def reader(node_group: list[Any]) -> Callable[[], Iterator[tuple[Any, str, int, list[Any]]]]:
        """SCAN pages of each node as the script returns them: this thread mostly waits on the
        server, while the caller's thread frames, counts and compresses the previous page."""
        def read() -> Iterator[tuple[Any, str, int, list[Any]]]:
            for node in node_group:
                for index, pattern in enumerate(patterns):
                    cursor: Any = 0
                    while limit is None or seen[pattern] < limit:
                        reply = ks.run(node, rk.SCAN_DUMP_LUA, [cursor, pattern, _BATCH])
                        cursor = reply[0]
                        yield node, pattern, index, reply
                        if cursor in (0, b"0"):
                            break
        return read

    groups = [nodes] if limit is not None else [[node] for node in nodes]
    earlier = [[rk.glob_regex(p) for p in patterns[:i]] for i in range(len(patterns))]

    def records() -> Iterator[bytes]:
        pack = rk.RECORD.pack
        for node, pattern, index, reply in fan_in([reader(group) for group in groups]):
            now = int(reply[1]) * 1000 + int(reply[2]) // 1000
            before = earlier[index]
            parts: list[bytes] = []
            first = bytearray()  # each payload's first byte: its type, counted in C below
            for key, payload, pttl in zip(reply[3::3], reply[4::3], reply[5::3], strict=True):
                if payload is None or key.startswith(own) or (before and any(r.match(key) for r in before)):
                    continue  # vanished since SCAN listed it, polyshift's own, or an earlier pattern's
                if limit is not None:
                    if seen[pattern] >= limit:
                        break
                    seen[pattern] += 1
                parts += (pack(len(key), now + pttl if pttl > 0 else -1, len(payload)), key, payload)
                first.append(payload[0])
            for byte, n in Counter(first).items():
                kind = kinds.get(byte)
                if kind is None:  # not a type byte polyshift knows: ask the server (refused if unsupported)
                    kind = next(ks.kind(node, parts[i + 1]) for i in range(0, len(parts), 3) if parts[i + 2][0] == byte)
                by[pattern, kind] = by.get((pattern, kind), 0) + n
            progress.advance(len(first))
            yield b"".join(parts)

    try:
        with translated(REDIS_ERRORS, f"store {ks.store}: backup failed", BackupError):
            writer.write_stream("keys.bin.zst", records())
    finally:
        progress.finish()
    per_pattern, types = counts.per_pattern(patterns)
    meta = {"patterns": list(patterns), "counts": per_pattern, "types": types, "proof": PROOF}
    return meta | ({"sample": limit} if limit is not None else {})


class NodeRestore:
    """One primary's share of a restore, run on that primary's own thread."""

    def __init__(self, ks: Keyspace, node: Any, marker: str, scratch: Callable[[bytes], str],
                 patterns: tuple[str, ...]) -> None:
        self.ks, self.node, self.marker, self.scratch = ks, node, marker, scratch
        self.only = patterns[0]
        self.attribute: Callable[[bytes], str] | None = None
        if len(patterns) > 1:
            regexes = [(p, rk.glob_regex(p)) for p in patterns]
            self.attribute = lambda key: next((p for p, r in regexes if r.match(key)), patterns[0])
        self.restored: dict[str, int] = {}
        self.expired = 0
        self.reencoded = 0  # DUMP differed, content proven equal
        self.differing: list[bytes] = []
        self.ttl_wrong: list[bytes] = []

    def __call__(self, batch: tuple[bytes, int]) -> None:
        blob, count = batch
        expired, differs, ttl_wrong = self.ks.run(self.node, rk.RESTORE_LUA, [self.marker, blob])
        self.expired += len(expired)
        records: list[tuple[bytes, int, bytes]] | None = None
        if self.attribute is None:
            self.restored[self.only] = self.restored.get(self.only, 0) + count - len(expired)
        else:
            records = list(rk.decode_records(io.BytesIO(blob)))
            gone = set(expired)
            for i, (key, _, _) in enumerate(records, 1):
                if i not in gone:
                    pattern = self.attribute(key)
                    self.restored[pattern] = self.restored.get(pattern, 0) + 1
        if differs or ttl_wrong:
            records = records or list(rk.decode_records(io.BytesIO(blob)))
            if differs:
                self.prove_content([records[i - 1] for i in differs])
            self.ttl_wrong += [records[i - 1][0] for i in ttl_wrong]
        failpoints.passed("restore-batch")

    def prove_content(self, records: list[tuple[bytes, int, bytes]]) -> None:
        """Keys Redis re-encoded on RESTORE: their content against the payload's, in Redis."""
        args: list[Any] = []
        for key, _, payload in records:
            args += [key, self.scratch(key), payload]
        differs = self.ks.run(self.node, rk.CONTENT_EQUAL_LUA, args)
        self.reencoded += len(records) - len(differs)
        self.differing += [records[i - 1][0] for i in differs]


def restore(ks: Keyspace, manifest: Manifest, artifacts: ArtifactStore, progress: Progress) -> RestoreReport:
    """RESTORE … REPLACE ABSTTL in batches (one script call each, one thread per primary), each key
    proven as it is written; then remove scope keys the backup did not have.

    Restored names are collected in a temporary Redis set per primary rather than in memory, so
    the restore stays bounded whatever the number of keys and never leaves a gap with keys missing.
    """
    patterns: tuple[str, ...] = tuple(manifest.meta.get("patterns", ()))
    if not patterns:
        raise BackupCorruptError(f"backup {manifest.id}: manifest lists no key patterns")
    with translated(REDIS_ERRORS, f"store {ks.store}: restore of {manifest.id} could not start"):
        nodes, route = ks.owners()
        # One marker per backup, not per process: a restore killed half-way leaves its marker, and
        # the restore that finishes it (under the same store lock) starts by clearing it.
        markers = [ks.local_name(f"{ks.prefix}restore:{manifest.id}", None, i, route) for i in range(len(nodes))]
        for node, marker in zip(nodes, markers, strict=True):
            node.unlink(marker)
    scratch_name = f"{ks.prefix}scratch"
    workers = [NodeRestore(ks, node, marker, lambda key: ks.local_name(scratch_name, key, 0, route), patterns)
               for node, marker in zip(nodes, markers, strict=True)]
    removed = 0
    progress.start(f"restore {manifest.id}", total=sum(manifest.meta.get("counts", {}).values()) or None)
    try:
        with translated(REDIS_ERRORS, f"store {ks.store}: restore of {manifest.id} failed part-way",
                        hint="the safety backup taken before this restore holds what was there"):
            with artifacts.open(manifest, "keys.bin.zst") as stream:
                batches = rk.framed_batches(stream, _BATCH, route if ks.cluster else None, len(nodes))
                fan_out(_advancing(batches, progress), list(workers))
            removed = sum(ks.remove_extras(node, patterns, marker) for node, marker in zip(nodes, markers, strict=True))
    finally:
        for node, marker in zip(nodes, markers, strict=True):
            try:
                node.unlink(marker)
            except redis.RedisError:
                pass  # the next restore of this backup clears it first
        progress.finish()
    restored: dict[str, int] = dict.fromkeys(patterns, 0)
    for worker in workers:
        for pattern, n in worker.restored.items():
            restored[pattern] += n
    expired = sum(w.expired for w in workers)
    log.info("store %s: restored %d keys, skipped %d already expired, removed %d not in the backup",
             ks.store, sum(restored.values()), expired, removed)
    if manifest.meta.get("proof") != PROOF:
        with translated(REDIS_ERRORS, f"store {ks.store}: verifying the restore of {manifest.id} failed"):
            return _verify_by_fingerprint(ks, manifest, expired, removed)
    return _report(manifest, restored, workers, removed)


def _advancing(batches: Iterator[tuple[int, bytes, int]], progress: Progress) -> Iterator[tuple[int, tuple[bytes, int]]]:
    for index, blob, count in batches:
        progress.advance(count)
        yield index, (blob, count)


def _names(keys: list[bytes]) -> str:
    shown = ", ".join(k.decode(errors="backslashreplace") for k in keys[:10])
    return shown + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")


def _report(manifest: Manifest, restored: dict[str, int], workers: list[NodeRestore], removed: int) -> RestoreReport:
    """Every key proven (its DUMP byte-equal to the backed-up payload, or its content equal to the
    payload's), expiry present exactly where the backup had one, and as many records as the backup counted."""
    expired = sum(w.expired for w in workers)
    differing = [k for w in workers for k in w.differing]
    ttl_wrong = [k for w in workers for k in w.ttl_wrong]
    reencoded = sum(w.reencoded for w in workers)
    mismatches: list[str] = []
    if differing:
        mismatches.append(f"{len(differing)} key(s) hold other content than the backup: {_names(differing)}")
    if ttl_wrong:
        mismatches.append(f"{len(ttl_wrong)} key(s) differ from the backup in having an expiry: {_names(ttl_wrong)}")
    expected = sum(manifest.meta.get("counts", {}).values())
    if sum(restored.values()) + expired != expected:
        mismatches.append(f"the backup holds {sum(restored.values()) + expired} keys, its manifest counts {expected}")
    notes = [f"{removed} keys written since the backup were removed"] if removed else []
    if expired:
        notes.append(f"{expired} keys expired since the backup and were not brought back")
    if reencoded:
        notes.append(f"{reencoded} keys were re-encoded by the server on restore and verified by content")
    return RestoreReport(manifest.id, restored, verified=not mismatches, mismatches=tuple(mismatches), notes=tuple(notes))


def _verify_by_fingerprint(ks: Keyspace, manifest: Manifest, expired: int, removed: int) -> RestoreReport:
    """A backup taken before restores were proven key by key carries a content fingerprint: the
    scope's content must equal it; with keys that expired meanwhile, counts must add up."""
    patterns = tuple(manifest.meta["patterns"])
    now = fingerprint(ks, patterns)
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
