"""Backups (artifacts): what every artifact store guarantees, and the store a project configures.

Two stores keep the same promises: a local directory (``localstore``, the default) and an
S3-compatible bucket (``s3store``, ``backups = "s3://bucket/prefix"``) that every runner of a
pipeline can reach. Either way:

- files are zstd-compressed as they are streamed, so memory stays flat whatever the size, and
  the sha256 is computed over the stored bytes;
- ``seal`` writes the manifest last and then reads every file back from where it is stored,
  checking its sha256 and zstd frames, before anything may rely on the backup;
- the manifest is trusted only as it was sealed: its own sha256 is recorded in the control plane
  (``ManifestIndex``) and checked on every read, and every file name it lists must follow the rule
  the writer follows (``valid_file_name``);
- nothing is ever overwritten: a name that exists already is an error, not a replacement;
- storage errors are a ``BackupError`` naming the place (exit 2, nothing changed).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import secrets as pysecrets
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Protocol, cast

import zstandard

from polyshift.framework import __version__
from polyshift.framework.core.errors import BackupCorruptError

if TYPE_CHECKING:
    from polyshift.framework.core.config import Config

CHUNK = 1 << 20
ID_PATTERN = r"[0-9]{8}T[0-9]{6}Z-[a-z0-9_-]+-[0-9a-f]{6}"
ID = re.compile(rf"^{ID_PATTERN}$")
MANIFEST = "manifest.json"


def valid_file_name(name: object) -> bool:
    """The one rule for an artifact file's name, for the writer and for every read: a plain name
    inside the backup's directory (no separator, no leading dot, so no '..' and no hidden file)."""
    return (isinstance(name, str) and bool(name) and not name.startswith(".") and name != MANIFEST
            and not any(c in name for c in "/\\\0"))


class ManifestIndex(Protocol):
    """Where the sha256 of each sealed manifest is on record (the control plane)."""

    def manifest_digest(self, artifact_id: str) -> str | None:
        """The digest recorded when the backup was sealed; None if none is on record."""


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    bytes: int
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    id: str
    store: str
    kind: str
    version: str | None
    scope: tuple[str, ...]
    created_at: str
    files: tuple[ArtifactFile, ...]
    meta: dict[str, Any]
    reason: str = ""
    digest: str = field(default="", compare=False)      # sha256 of manifest.json as sealed / as read
    on_record: bool = field(default=True, compare=False)  # False: no digest on record to check it against

    @property
    def size(self) -> int:
        return sum(f.bytes for f in self.files)

    def file(self, name: str) -> ArtifactFile:
        for f in self.files:
            if f.name == name:
                return f
        raise BackupCorruptError(f"backup {self.id}: manifest lists no file {name!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "store": self.store, "kind": self.kind, "version": self.version,
            "scope": list(self.scope), "created_at": self.created_at, "reason": self.reason,
            "files": [{"name": f.name, "bytes": f.bytes, "sha256": f.sha256, "meta": f.meta} for f in self.files],
            "meta": self.meta, "polyshift": __version__,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Manifest:
        return Manifest(
            id=data["id"], store=data["store"], kind=data["kind"], version=data.get("version"),
            scope=tuple(data["scope"]), created_at=data["created_at"], reason=data.get("reason", ""),
            files=tuple(ArtifactFile(f["name"], int(f["bytes"]), f["sha256"], f.get("meta", {})) for f in data["files"]),
            meta=data.get("meta", {}),
        )


class ArtifactWriter(Protocol):
    """Collects the files of one backup while an adapter streams them."""

    base: dict[str, Any]
    files: list[ArtifactFile]

    def write_stream(self, name: str, chunks: Iterator[bytes], meta: dict[str, Any] | None = None) -> ArtifactFile:
        """Compress ``chunks`` into ``name``; memory stays bounded whatever the size."""

    def write_bytes(self, name: str, data: bytes, meta: dict[str, Any] | None = None) -> ArtifactFile: ...


@dataclass(frozen=True)
class Leftover:
    """What a backup that never sealed left behind (its runner was killed mid-backup). Never a
    rollback point: nothing lists or restores a backup without its manifest."""

    id: str
    files: int
    bytes: int
    uploads: int  # multipart uploads begun and never finished (object storage)
    last_written: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "files": self.files, "bytes": self.bytes, "uploads": self.uploads,
                "last_written": self.last_written.isoformat() if self.last_written else None}


class ArtifactStore(Protocol):
    """Where backups are kept: a local directory or an S3-compatible bucket."""

    index: ManifestIndex | None

    @property
    def location(self) -> str:
        """Where the backups are, as users configured it (a directory, ``s3://bucket/prefix``)."""

    def check_usable(self) -> None:
        """Preflight: the place exists (or is created) and takes a new object; BackupError otherwise."""

    def check_room(self, needed: int) -> None:
        """Preflight: ``needed`` bytes of backups fit; BackupError naming the shortfall otherwise."""

    def new_writer(self, *, store: str, kind: str, version: str | None, scope: tuple[str, ...], reason: str) -> ArtifactWriter: ...

    def seal(self, writer: ArtifactWriter, meta: dict[str, Any]) -> Manifest:
        """Write the manifest, then read every file back and verify it; the sealed manifest."""

    def discard(self, writer: ArtifactWriter) -> None:
        """Remove a backup that failed before or during sealing. Never raises."""

    def manifest(self, artifact_id: str, *, expected_digest: str | None = None) -> Manifest:
        """The manifest as sealed (checked against the digest on record, or ``expected_digest``)."""

    def list(self) -> list[Manifest]:
        """Every sealed backup whose manifest checks out."""

    def verify(self, artifact_id: str, *, decompress: bool = True, expected_digest: str | None = None) -> Manifest:
        """The manifest, then every file's sha256 (and, unless told otherwise, zstd frames) as stored."""

    def open(self, manifest: Manifest, name: str) -> IO[bytes]:
        """A decompressing reader over one file of a verified backup."""

    def iter_chunks(self, manifest: Manifest, name: str, size: int = CHUNK) -> Iterator[bytes]: ...

    def leftovers(self, older_than: float) -> builtins.list[Leftover]:
        """Backups that never sealed and whose writer is gone, nothing written for ``older_than`` seconds."""

    def remove_leftover(self, leftover: Leftover) -> bool:
        """Remove one, if it is still unsealed and still abandoned (looked at again first)."""


def new_artifact_id(store: str) -> tuple[str, datetime]:
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{store}-{pysecrets.token_hex(3)}", now


def writer_base(artifact_id: str, now: datetime, *, store: str, kind: str, version: str | None,
                scope: tuple[str, ...], reason: str) -> dict[str, Any]:
    return {"id": artifact_id, "store": store, "kind": kind, "version": version, "scope": scope,
            "created_at": now.isoformat(timespec="microseconds"), "reason": reason}


def sealed_manifest(writer: ArtifactWriter, meta: dict[str, Any]) -> tuple[Manifest, bytes]:
    """The manifest of a finished writer and the exact bytes that are stored as manifest.json."""
    b = writer.base
    manifest = Manifest(b["id"], b["store"], b["kind"], b["version"], tuple(b["scope"]), b["created_at"],
                        tuple(writer.files), meta, b["reason"])
    return manifest, json.dumps(manifest.to_json(), indent=2, sort_keys=True).encode()


def checked_manifest(artifact_id: str, body: bytes, recorded: str | None) -> Manifest:
    """A manifest read back as stored, trusted only as sealed. Raises BackupCorruptError when its
    sha256 differs from the one on record, when it names another backup, or lists a file name the
    writer could not have written."""
    digest = hashlib.sha256(body).hexdigest()
    if recorded is not None and recorded != digest:
        raise BackupCorruptError(
            f"backup {artifact_id}: {MANIFEST} was changed after the backup was sealed (sha256 {digest[:12]}… != "
            f"{recorded[:12]}… on record); it will not be used",
            hint="restore the original manifest.json, or use another backup ('polyshift backup list')")
    try:
        manifest = Manifest.from_json(json.loads(body))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupCorruptError(f"backup {artifact_id}: {MANIFEST} is unreadable ({exc})") from None
    if manifest.id != artifact_id:
        raise BackupCorruptError(f"backup {artifact_id}: {MANIFEST} describes backup {manifest.id}; it will not be used")
    for f in manifest.files:
        if not valid_file_name(f.name):
            raise BackupCorruptError(f"backup {artifact_id}: {MANIFEST} lists an invalid file name {f.name!r} "
                                     "(outside the backup's directory); it will not be used")
    return replace(manifest, digest=digest, on_record=recorded is not None)


class Sink(Protocol):
    """Where compressed bytes go: a file on disk, or the parts of an object being uploaded."""

    def write(self, data: bytes) -> int: ...


class HashingSink:
    """File object the zstd stream writes into: counts and hashes what reaches storage."""

    def __init__(self, raw: Sink) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.raw.write(data)
        return len(data)

    def flush(self) -> None:
        pass


def compress_into(raw: Sink, chunks: Iterator[bytes]) -> tuple[int, str]:
    """zstd-compress ``chunks`` into ``raw`` one chunk at a time; the stored size and sha256."""
    sink = HashingSink(raw)
    # Level 1 in the calling thread: measured faster than multi-threaded level 3 and smaller
    # (threaded mode compresses independent jobs), and the other core serves the database.
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
    with compressor.stream_writer(cast("IO[bytes]", sink), closefd=False) as zw:
        for chunk in chunks:
            zw.write(chunk)
    return sink.size, sink.digest.hexdigest()


class HashingReader:
    """Reads through to ``raw`` and hashes every byte that passes (read-back verification)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = CHUNK) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def open_artifact_store(config: Config, index: ManifestIndex | None) -> ArtifactStore:
    """The store ``[project] backups`` names: an ``s3://`` URL, else a local directory."""
    if config.backups_url is not None:
        from polyshift.framework.control.s3store import S3ArtifactStore  # boto3 only for projects that use it

        return S3ArtifactStore(config.backups_url, index)
    from polyshift.framework.control.localstore import LocalArtifactStore

    return LocalArtifactStore(config.backups_dir, index)
