"""Key-level plumbing shared by the Redis adapter and its helpers: glob matching, node-wide SCAN,
content hashing of every Redis type, and the framed record format of backup artifacts."""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Iterator
from typing import IO, Any

from framework.errors import BackupError, UsageError

SCAN_COUNT = 1000
HASHED_TYPES = ("string", "hash", "list", "set", "zset", "stream")
_RECORD = struct.Struct(">IqI")  # key length, absolute expiry in ms (-1: none), payload length


def glob_regex(pattern: str) -> re.Pattern[bytes]:
    """Redis glob semantics (``*``, ``?``, ``[abc]``, ``[^a]``, ``[a-z]``, ``\\x``) as a regex, to dedupe patterns."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                raise UsageError(f"key pattern {pattern!r}: unclosed '['")
            body = pattern[i + 1:end]
            out.append("[" + ("^" + re.escape(body[1:]).replace("\\-", "-") if body.startswith("^") else
                              re.escape(body).replace("\\-", "-")) + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile(("^" + "".join(out) + "$").encode(), re.S)


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


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- content hashing ------------------------------------------------------------------------
def value_commands(pipe: Any, key: bytes, kind: str) -> None:
    """Queue the read that returns a key's whole logical value, in a canonical order."""
    if kind == "string":
        pipe.get(key)
    elif kind == "hash":
        pipe.hgetall(key)
    elif kind == "list":
        pipe.lrange(key, 0, -1)
    elif kind == "set":
        pipe.smembers(key)
    elif kind == "zset":
        pipe.zrange(key, 0, -1, withscores=True)
    elif kind == "stream":
        pipe.xrange(key, "-", "+")
    else:
        raise BackupError(f"key {key!r} has type {kind!r}, which polyshift cannot fingerprint "
                          f"(supported: {', '.join(HASHED_TYPES)}); leave it out of the scope")


def _canonical(kind: str, value: Any) -> bytes:
    if kind == "string":
        return value or b""
    if kind == "hash":
        return b"\0".join(k + b"\1" + v for k, v in sorted(value.items()))
    if kind == "list":
        return b"\0".join(value)
    if kind == "set":
        return b"\0".join(sorted(value))
    if kind == "zset":
        return b"\0".join(m + b"\1" + repr(float(s)).encode() for m, s in value)
    if kind == "stream":
        return b"\0".join(i + b"\1" + b"\2".join(k + b"\3" + v for k, v in sorted(f.items())) for i, f in value)
    raise BackupError(f"unsupported type {kind!r}")


def key_digest(key: bytes, kind: str, value: Any, has_ttl: bool) -> int:
    digest = hashlib.sha256(b"\0".join([key, kind.encode(), b"1" if has_ttl else b"0", _canonical(kind, value)])).digest()
    return int.from_bytes(digest[:16], "big")


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
