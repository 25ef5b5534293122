"""Key-level plumbing shared by the Redis adapter and its helpers: glob matching, node-wide SCAN,
content hashing of every Redis type, and the framed record format of backup artifacts."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from polyshift.framework.core.errors import BackupError, UsageError

SCAN_COUNT = 1000
HASHED_TYPES = ("string", "hash", "list", "set", "zset", "stream")
RECORD = _RECORD = struct.Struct(">IqI")  # key length, absolute expiry in ms (-1: none), payload length
_BACKSLASH, _OPEN, _CLOSE, _DASH = ord("\\"), ord("["), ord("]"), ord("-")


def glob_regex(pattern: str) -> re.Pattern[bytes]:
    """Redis's glob, as its ``stringmatchlen`` reads it, as a regex over key bytes (to dedupe patterns).

    ``*``, ``?``, ``\\x`` and classes: ``[abc]``, ``[^a]``, ranges (a reversed range such as
    ``[z-a]`` is swapped, as Redis does), ``\\]`` inside a class, ``[]`` matching nothing. An
    unclosed ``[`` is refused: Redis reads it as a class running to the end of the pattern,
    which is surely a typo in a backup scope.
    """
    raw = pattern.encode()
    out: list[bytes] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == _BACKSLASH and i + 1 < len(raw):
            out.append(re.escape(raw[i + 1:i + 2]))
            i += 2
        elif c == _OPEN:
            cls, i = _glob_class(raw, i + 1, pattern)
            out.append(cls)
        else:
            out.append(b".*" if c == ord("*") else b"." if c == ord("?") else re.escape(raw[i:i + 1]))
            i += 1
    return re.compile(b"^" + b"".join(out) + b"$", re.S)


def _glob_class(raw: bytes, i: int, pattern: str) -> tuple[bytes, int]:
    """The class starting after ``[`` at ``i``: (its regex, the index after its ``]``)."""
    negate = i < len(raw) and raw[i] == ord("^")
    i += 1 if negate else 0
    spans: list[tuple[int, int]] = []
    while True:
        if i >= len(raw):
            raise UsageError(f"key pattern {pattern!r}: unclosed '['")
        c = raw[i]
        if c == _BACKSLASH and i + 1 < len(raw):
            spans.append((raw[i + 1], raw[i + 1]))
            i += 2
        elif c == _CLOSE:
            i += 1
            break
        elif i + 2 < len(raw) and raw[i + 1] == _DASH:
            low, high = sorted((c, raw[i + 2]))
            spans.append((low, high))
            i += 3
        else:
            spans.append((c, c))
            i += 1
    if not spans:
        return (b"[\\x00-\\xff]" if negate else b"(?!)"), i
    body = b"".join(b"\\x%02x-\\x%02x" % span for span in spans)
    return b"[" + (b"^" if negate else b"") + body + b"]", i


def validate_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    checked = []
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise UsageError(f"Redis backup scope entries are key patterns (globs); got {p!r}")
        glob_regex(p)
        checked.append(p)
    return tuple(checked)


def scan_nodes(nodes: list[Any], pattern: str, skip_prefix: bytes) -> Iterator[bytes]:
    """Every key matching ``pattern`` on every primary, via SCAN (never KEYS), minus polyshift's own."""
    for node in nodes:
        for key in node.scan_iter(match=pattern, count=SCAN_COUNT):
            if not key.startswith(skip_prefix):
                yield key


def scope_keys(nodes: list[Any], patterns: tuple[str, ...], skip_prefix: bytes) -> Iterator[tuple[str, bytes]]:
    """(pattern, key) for each key, attributed to the first pattern it matches, so overlaps count once."""
    earlier: list[re.Pattern[bytes]] = []
    for pattern in patterns:
        for key in scan_nodes(nodes, pattern, skip_prefix):
            if not any(r.match(key) for r in earlier):
                yield pattern, key
        earlier.append(glob_regex(pattern))


# -- content hashing ---------------------------------------------------------------------------
# A key's digest is sha1 over  key \0 type \0 has-ttl(0|1) \0 canonical value,  where the canonical
# value joins: a string as is; hash fields sorted, "field\1value" joined by \0; list items by \0;
# set members sorted, by \0; sorted-set "member\1score" in rank order (score as Redis prints it);
# stream entries "id\1f\2v\2f\2v" by \0. The Lua script below computes it inside Redis for a whole
# batch in one call: per-command client overhead (10-25 µs) dominated when values travelled to the
# client. It is the only definition: a cluster runs it once per hash-slot group of a batch, since a
# script's keys must share a slot, so single-node and cluster fingerprints are the same bytes.
_CANONICAL_LUA = """
local function canonical(key)
  local kind = redis.call('TYPE', key)['ok']
  local parts = {}
  if kind == 'string' then
    parts = {redis.call('GET', key)}
  elseif kind == 'hash' then
    local flat = redis.call('HGETALL', key)
    local fields = {}
    for j = 1, #flat, 2 do fields[#fields + 1] = {flat[j], flat[j + 1]} end
    table.sort(fields, function(a, b) return a[1] < b[1] end)
    for j, f in ipairs(fields) do parts[j] = f[1] .. '\\1' .. f[2] end
  elseif kind == 'list' then
    parts = redis.call('LRANGE', key, 0, -1)
  elseif kind == 'set' then
    parts = redis.call('SMEMBERS', key)
    table.sort(parts)
  elseif kind == 'zset' then
    local flat = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    for j = 1, #flat, 2 do parts[#parts + 1] = flat[j] .. '\\1' .. flat[j + 1] end
  elseif kind == 'stream' then
    for j, entry in ipairs(redis.call('XRANGE', key, '-', '+')) do
      parts[j] = entry[1] .. '\\1' .. table.concat(entry[2], '\\2')
    end
  else
    return kind, nil  -- 'none', or a type polyshift cannot fingerprint (see described())
  end
  return kind, table.concat(parts, '\\0')
end
"""

_DESCRIBE_LUA = _CANONICAL_LUA + """
local function describe(key)
  local kind, body = canonical(key)
  if kind == 'none' then return {'', -2, false, kind} end
  local pttl = redis.call('PTTL', key)
  if body == nil then return {false, pttl, false, kind} end
  local ttl_flag = '0'
  if pttl > 0 then ttl_flag = '1' end
  return {redis.sha1hex(key .. '\\0' .. kind .. '\\0' .. ttl_flag .. '\\0' .. body), pttl, false, kind}
end
"""

# Scripts below take key names in ARGV, not KEYS: a batch comes from one node, and in a cluster
# its keys span many slots of that node, which declared keys may not (see script_source()).
# Content digests of a batch (ARGV: key names).
DIGEST_LUA = _DESCRIBE_LUA + """
local out = {}
for i, key in ipairs(ARGV) do out[i] = describe(key) end
return out
"""

# Backup of one SCAN page (ARGV: cursor, pattern, count): the next cursor, server time, then each
# key's name, DUMP payload (false if it vanished) and PTTL, flat. SCAN runs in the script so key
# names cross the wire once; no per-key digest here: the restore proves its result against these
# very bytes (RESTORE_LUA).
SCAN_DUMP_LUA = """
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local t = redis.call('TIME')
local out = {page[1], t[1], t[2]}
for i, key in ipairs(page[2]) do
  out[3 * i + 1] = key
  out[3 * i + 2] = redis.call('DUMP', key)
  out[3 * i + 3] = redis.call('PTTL', key)
end
return out
"""

# Restore of a batch (ARGV: marker set, then the batch's records as framed in the artifact, one
# string: fewer, larger arguments cost both sides less). Each key is RESTOREd, named in the marker
# set, then proven: a DUMP of what is now stored, byte-equal to the backed-up payload (type,
# encoding, content, RDB version and CRC64 all included), shows the key holds exactly what was
# backed up, without a payload travelling back. Expiry is checked apart: DUMP carries none.
# Returns {expired, differs, ttl-wrong} as lists of 1-based record positions; keys already past
# their expiry are left alone (restoring them would resurrect them).
RESTORE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local marker, blob = ARGV[1], ARGV[2]
local expired, differs, ttl, names = {}, {}, {}, {}
local pos, i, size = 1, 0, #blob
while pos <= size do
  i = i + 1
  local key_len, at, payload_len, start = struct.unpack('>I4>l>I4', blob, pos)
  local key = string.sub(blob, start, start + key_len - 1)
  local payload = string.sub(blob, start + key_len, start + key_len + payload_len - 1)
  pos = start + key_len + payload_len
  if at > 0 and at <= now then
    expired[#expired + 1] = i
  else
    if at > 0 then
      redis.call('RESTORE', key, at, payload, 'REPLACE', 'ABSTTL')
    else
      redis.call('RESTORE', key, 0, payload, 'REPLACE')
    end
    names[#names + 1] = key
    if redis.call('DUMP', key) ~= payload then differs[#differs + 1] = i end
    if (redis.call('PTTL', key) > 0) ~= (at > 0) then ttl[#ttl + 1] = i end
    if #names == 500 then
      redis.call('SADD', marker, unpack(names))
      names = {}
    end
  end
end
if #names > 0 then redis.call('SADD', marker, unpack(names)) end
return {expired, differs, ttl}
"""

# After a restore, one SCAN page of a scope pattern (ARGV: cursor, pattern, count, marker set,
# polyshift's own prefix): UNLINK each key the restore did not write (not in the marker set), so
# the scope holds what the backup held and nothing else. Returns {next cursor, keys removed}.
REMOVE_EXTRAS_LUA = """
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local marker, own = ARGV[4], ARGV[5]
local removed = 0
for _, key in ipairs(page[2]) do
  if string.sub(key, 1, #own) ~= own and redis.call('SISMEMBER', marker, key) == 0 then
    redis.call('UNLINK', key)
    removed = removed + 1
  end
end
return {page[1], removed}
"""

# Content proof for keys whose DUMP no longer equals the backed-up payload (ARGV: key, scratch
# name, payload per key): the server re-encoded the value on RESTORE (other listpack limits, a
# newer RDB version). The payload is restored under the scratch name, both keys' canonical
# content (as fingerprints read it) compared in full, and the scratch deleted, all within this
# script: no client ever sees the scratch key. Returns the 1-based positions that differ.
CONTENT_EQUAL_LUA = _CANONICAL_LUA + """
local differs = {}
for i = 1, #ARGV / 3 do
  local key, scratch, payload = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  if redis.call('EXISTS', scratch) == 1 then return redis.error_reply('scratch key ' .. scratch .. ' exists') end
  redis.call('RESTORE', scratch, 0, payload)
  local kind, body = canonical(key)
  local want_kind, want = canonical(scratch)
  redis.call('DEL', scratch)
  if body == nil or kind ~= want_kind or body ~= want then differs[#differs + 1] = i end
end
return differs
"""


def script_source(body: str, *, cluster: bool) -> str:
    """A script's source for a cluster or a single node. In a cluster, a script that reaches keys
    of several slots (all on the node it runs on) must say so (Redis 7+); a single node needs no
    flag, which keeps older servers working."""
    return "#!lua flags=allow-cross-slot-keys\n" + body if cluster else body


def described(key: bytes, reply: list[Any]) -> tuple[str, int, bytes | None, str]:
    """One key's row as the scripts return it: (digest, pttl, DUMP payload or None, type). A key of
    a type polyshift cannot fingerprint comes back without a digest, and is refused here."""
    digest, pttl, payload, kind = reply
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if not digest and kind != "none":
        raise BackupError(f"key {key!r} has type {kind!r}, which polyshift cannot fingerprint "
                          f"(supported: {', '.join(HASHED_TYPES)}); leave it out of the scope")
    return (digest.decode() if isinstance(digest, bytes) else str(digest or ""), int(pttl), payload or None, kind)


def digest_int(hexdigest: str | bytes) -> int:
    """The 128-bit prefix that fingerprints sum, order-independently."""
    return int(hexdigest[:32], 16)


# -- backup records ---------------------------------------------------------------------------
def encode_record(key: bytes, expire_at_ms: int, payload: bytes) -> bytes:
    return _RECORD.pack(len(key), expire_at_ms, len(payload)) + key + payload


_READ = 1 << 20


def framed_batches(stream: IO[bytes], size: int, route: Callable[[bytes], int] | None = None,
                   nodes: int = 1) -> Iterator[tuple[int, bytes, int]]:
    """(node index, records as framed, count): batches of up to ``size`` whole records for each
    node, cut from large reads; ``route`` gives a key's node (none: everything to node 0)."""
    head = RECORD.size
    unpack = RECORD.unpack_from
    pending = [bytearray() for _ in range(nodes)]
    counts = [0] * nodes
    rest = b""
    want = _READ
    while True:
        chunk = stream.read(want)
        if not chunk:
            if rest:
                raise BackupError("backup artifact ends in the middle of a record")
            break
        buf = rest + chunk if rest else chunk
        pos, end = 0, len(buf)
        want = _READ
        start, n = 0, counts[0]
        while end - pos >= head:
            key_len, _, payload_len = unpack(buf, pos)
            stop = pos + head + key_len + payload_len
            if stop > end:
                want = max(_READ, stop - end)
                break
            if route is None:
                pos, n = stop, n + 1
                if n == size:
                    yield 0, bytes(pending[0] + buf[start:pos]), n
                    pending[0], start, n = bytearray(), pos, 0
                continue
            i = route(buf[pos + head:pos + head + key_len])
            pending[i] += buf[pos:stop]
            counts[i] += 1
            pos = stop
            if counts[i] == size:
                yield i, bytes(pending[i]), size
                pending[i], counts[i] = bytearray(), 0
        if route is None:
            pending[0] += buf[start:pos]
            counts[0] = n
        rest = buf[pos:]
    for i, batch in enumerate(pending):
        if counts[i]:
            yield i, bytes(batch), counts[i]


def decode_records(stream: IO[bytes]) -> Iterator[tuple[bytes, int, bytes]]:
    """Records from a decompressed artifact, parsed out of large reads (per-record reads cost more
    than the restore itself); a record larger than a read is completed by one read of its size."""
    head = _RECORD.size
    unpack = _RECORD.unpack_from
    rest = b""
    want = _READ
    while True:
        chunk = stream.read(want)
        if not chunk:
            if rest:
                raise BackupError("backup artifact ends in the middle of a record")
            return
        buf = rest + chunk if rest else chunk
        pos, end = 0, len(buf)
        want = _READ
        while end - pos >= head:
            key_len, expire_at, payload_len = unpack(buf, pos)
            start = pos + head
            stop = start + key_len + payload_len
            if stop > end:
                want = max(_READ, stop - end)
                break
            yield buf[start:start + key_len], expire_at, buf[start + key_len:stop]
            pos = stop
        rest = buf[pos:]
