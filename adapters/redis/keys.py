"""Key-level plumbing shared by the Redis adapter and its helpers: glob matching, node-wide SCAN,
content hashing of every Redis type, and the framed record format of backup artifacts."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from typing import IO, Any

from polyshift.framework.core.errors import BackupError, UsageError

SCAN_COUNT = 1000
HASHED_TYPES = ("string", "hash", "list", "set", "zset", "stream")
_RECORD = struct.Struct(">IqI")  # key length, absolute expiry in ms (-1: none), payload length
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
_DESCRIBE_LUA = """
local function describe(key, want_dump)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return {'', -2, false, kind} end
  local pttl = redis.call('PTTL', key)
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
    return {false, pttl, false, kind}  -- no digest: a type polyshift cannot fingerprint (see described())
  end
  local ttl_flag = '0'
  if pttl > 0 then ttl_flag = '1' end
  local digest = redis.sha1hex(key .. '\\0' .. kind .. '\\0' .. ttl_flag .. '\\0' .. table.concat(parts, '\\0'))
  local payload = false
  if want_dump then payload = redis.call('DUMP', key) end
  return {digest, pttl, payload, kind}
end
"""

DIGEST_LUA = _DESCRIBE_LUA + """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = describe(key, ARGV[1] == '1')
end
return out
"""

# RESTORE a batch (ARGV: expire-at-ms or -1, payload, ...), record each name in the marker set (the
# last key), and describe each restored key: the restore computes its own verification as it writes.
RESTORE_LUA = _DESCRIBE_LUA + """
local marker = table.remove(KEYS)
local out = {}
for i, key in ipairs(KEYS) do
  local expire_at = tonumber(ARGV[2 * i - 1])
  if expire_at > 0 then
    redis.call('RESTORE', key, expire_at, ARGV[2 * i], 'REPLACE', 'ABSTTL')
  else
    redis.call('RESTORE', key, 0, ARGV[2 * i], 'REPLACE')
  end
  redis.call('SADD', marker, key)
  out[i] = describe(key, false)
end
return out
"""


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


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        block = stream.read(remaining)
        if not block:
            raise BackupError("backup artifact ends in the middle of a record")
        chunks.append(block)
        remaining -= len(block)
    return b"".join(chunks)


def decode_records(stream: IO[bytes]) -> Iterator[tuple[bytes, int, bytes]]:
    while True:
        head = stream.read(_RECORD.size)
        if not head:
            return
        if len(head) < _RECORD.size:
            head += _read_exact(stream, _RECORD.size - len(head))
        key_len, expire_at, payload_len = _RECORD.unpack(head)
        key = _read_exact(stream, key_len)
        yield key, expire_at, _read_exact(stream, payload_len)
