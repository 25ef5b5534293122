"""Local artifact store: one directory per backup (0700), files 0600, a JSON manifest with sha256
(the guarantees every store keeps are in ``polyshift.framework.control.artifacts``).

The sha256 is computed over the bytes on disk, and ``verify`` reads every file back from disk,
recomputes the digest and decompresses it (zstd frame checksums).

A backup is written in ``.<id>.partial/`` and renamed to ``<id>/`` once its manifest is on
disk, so a backup directory is sealed whole or not at all. The writer holds an exclusive
``flock`` on its partial directory, which the kernel drops if the writer dies; the next
backup removes partial directories nobody holds, and never a sealed one. File-system errors
(the directory is a file, not writable, full) are a ``BackupError``: exit 2, nothing changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import secrets as pysecrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import zstandard

from polyshift.framework.control.artifacts import (
    CHUNK,
    ID,
    ID_PATTERN,
    MANIFEST,
    ArtifactFile,
    ArtifactWriter,
    Leftover,
    Manifest,
    ManifestIndex,
    checked_manifest,
    compress_into,
    new_artifact_id,
    sealed_manifest,
    valid_file_name,
    writer_base,
)
from polyshift.framework.control.localfiles import private_dir
from polyshift.framework.core.errors import BackupCorruptError, BackupError, UsageError

log = logging.getLogger("polyshift.artifacts")
_PARTIAL = re.compile(rf"^\.{ID_PATTERN}\.partial$")


@contextmanager
def _disk(directory: Path) -> Iterator[None]:
    """A file-system error is an unusable backups directory, named: never an unexpected crash."""
    try:
        yield
    except OSError as exc:
        raise BackupError(f"backups directory {directory} is unusable: {exc.strerror or exc}",
                          hint="point [project] backups at a writable directory with free space") from None


class _DiskSink:
    """A file being written: every write's file-system error named as the backups directory's."""

    def __init__(self, raw: IO[bytes], root: Path) -> None:
        self.raw, self.root = raw, root

    def write(self, data: bytes) -> int:
        with _disk(self.root):
            return self.raw.write(data)


class LocalArtifactWriter:
    """Collects the files of one backup while an adapter streams them."""

    def __init__(self, directory: Path, manifest_base: dict[str, Any], lock_fd: int | None = None) -> None:
        self.directory = directory
        self.base = manifest_base
        self.files: list[ArtifactFile] = []
        self._lock_fd = lock_fd

    def _open(self, name: str) -> IO[bytes]:
        if not valid_file_name(name):
            raise BackupError(f"invalid artifact file name {name!r}")
        with _disk(self.directory.parent):
            fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return os.fdopen(fd, "wb")

    def write_stream(self, name: str, chunks: Iterator[bytes], meta: dict[str, Any] | None = None) -> ArtifactFile:
        """Compress ``chunks`` into ``name``; memory stays at one chunk whatever the size."""
        with self._open(name) as raw:
            size, digest = compress_into(_DiskSink(raw, self.directory.parent), chunks)
            with _disk(self.directory.parent):
                raw.flush()
                os.fsync(raw.fileno())
        entry = ArtifactFile(name, size, digest, dict(meta or {}))
        self.files.append(entry)
        return entry

    def write_bytes(self, name: str, data: bytes, meta: dict[str, Any] | None = None) -> ArtifactFile:
        return self.write_stream(name, iter([data]), meta)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None


class LocalArtifactStore:
    def __init__(self, root: Path, index: ManifestIndex | None = None) -> None:
        self.root = root
        self.index = index

    @property
    def location(self) -> str:
        return str(self.root)

    def _ensure_root(self) -> None:
        with _disk(self.root):
            private_dir(self.root)
            os.chmod(self.root, 0o700)

    def check_usable(self) -> None:
        """Preflight: the directory exists (or is created) and takes a file; BackupError otherwise."""
        self._ensure_root()
        probe = self.root / f".probe-{pysecrets.token_hex(4)}"
        with _disk(self.root):
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            probe.unlink()

    def check_room(self, needed: int) -> None:
        free = shutil.disk_usage(self.root).free
        if free < needed:
            raise BackupError(f"backups need about {needed / 2**20:,.0f} MiB but {self.root} has {free / 2**20:,.0f} MiB free",
                              hint="free space, or point [project] backups at a larger volume")

    def new_writer(self, *, store: str, kind: str, version: str | None, scope: tuple[str, ...], reason: str) -> LocalArtifactWriter:
        self._ensure_root()
        self.remove_abandoned()
        artifact_id, now = new_artifact_id(store)
        # Created under a name no cleanup looks at, locked, then renamed to .<id>.partial: a
        # cleanup running meanwhile never sees a partial directory before its writer holds it.
        fresh, partial = self.root / f".{artifact_id}.new", self.root / f".{artifact_id}.partial"
        with _disk(self.root):
            fresh.mkdir(mode=0o700)
            lock_fd = os.open(fresh, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            os.rename(fresh, partial)
        return LocalArtifactWriter(partial, writer_base(artifact_id, now, store=store, kind=kind, version=version,
                                                        scope=scope, reason=reason), lock_fd)

    def remove_abandoned(self) -> list[str]:
        """Remove partial directories whose writer is gone (its flock is free); never a sealed backup."""
        return [leftover.id for leftover in self.leftovers(0.0) if self.remove_leftover(leftover)]

    def leftovers(self, older_than: float) -> list[Leftover]:
        """Partial directories nobody holds: the kernel dropped the writer's flock when it died, so
        unlike object storage no age is needed to tell them from a live backup; ``older_than``
        only keeps the recent ones for a look."""
        found: list[Leftover] = []
        if not self.root.is_dir():
            return found
        now = time.time()
        for child in sorted(self.root.iterdir()):
            if not _PARTIAL.match(child.name) or child.is_symlink() or not child.is_dir():
                continue
            with self._held(child) as free:
                if not free:
                    continue  # a live writer
                stats = [entry.stat() for entry in child.iterdir() if entry.is_file()]
                newest = max([child.stat().st_mtime, *(st.st_mtime for st in stats)])
                if now - newest < older_than:
                    continue
                found.append(Leftover(child.name[1:-len(".partial")], len(stats), sum(st.st_size for st in stats), 0,
                                      datetime.fromtimestamp(newest, UTC)))
        return found

    def remove_leftover(self, leftover: Leftover) -> bool:
        child = self.root / f".{leftover.id}.partial"
        if not ID.match(leftover.id) or child.is_symlink() or not child.is_dir():
            return False
        with self._held(child) as free:
            if not free:
                return False
            shutil.rmtree(child, ignore_errors=True)
        log.info("removed %s, left by a backup whose writer stopped", child.name)
        return True

    @contextmanager
    def _held(self, directory: Path) -> Iterator[bool]:
        """Whether the directory's flock was free; held meanwhile so no writer can take it back."""
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
            else:
                yield True
        finally:
            os.close(fd)

    def seal(self, writer: ArtifactWriter, meta: dict[str, Any]) -> Manifest:
        """Write the manifest, rename the partial directory to the backup's id, then read every file back and verify it."""
        assert isinstance(writer, LocalArtifactWriter)
        manifest, body = sealed_manifest(writer, meta)
        sealed = self.root / manifest.id
        with _disk(self.root):
            fd = os.open(writer.directory / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(writer.directory, sealed)
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(root_fd)  # the rename itself survives a crash
            finally:
                os.close(root_fd)
        writer.directory = sealed
        writer.unlock()
        digest = hashlib.sha256(body).hexdigest()
        # Not on record yet (the caller records it once this returns): check against what we wrote.
        read_back = self.verify(manifest.id, expected_digest=digest)
        return replace(manifest, digest=read_back.digest, on_record=True)

    def discard(self, writer: ArtifactWriter) -> None:
        """Remove a backup that failed before or during sealing. Called while another error is
        on its way out, so it never raises; what it cannot remove, the next backup does."""
        assert isinstance(writer, LocalArtifactWriter)
        try:
            shutil.rmtree(writer.directory)
        except OSError as exc:
            log.warning("could not remove %s: %s", writer.directory, exc)
        writer.unlock()

    def path(self, artifact_id: str) -> Path:
        if not ID.match(artifact_id):
            raise UsageError(f"{artifact_id!r} is not a backup id (see 'polyshift backup list')")
        directory = self.root / artifact_id
        if not directory.is_dir():
            raise UsageError(f"no backup {artifact_id} in {self.root}")
        return directory

    def manifest(self, artifact_id: str, *, expected_digest: str | None = None) -> Manifest:
        """The manifest as sealed (see ``checked_manifest``)."""
        path = self.path(artifact_id) / MANIFEST
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            raise BackupCorruptError(f"backup {artifact_id}: {MANIFEST} is missing") from None
        recorded = expected_digest or (self.index.manifest_digest(artifact_id) if self.index is not None else None)
        return checked_manifest(artifact_id, body, recorded)

    def list(self) -> list[Manifest]:
        if not self.root.is_dir():
            return []
        found = []
        for child in sorted(self.root.iterdir()):
            if child.is_dir() and ID.match(child.name):
                try:
                    found.append(self.manifest(child.name))
                except BackupCorruptError:
                    continue  # listed by 'backup verify', not by list
        return found

    def verify(self, artifact_id: str, *, decompress: bool = True, expected_digest: str | None = None) -> Manifest:
        """The manifest's own sha256, then every file's sha256 (and, unless told otherwise, its zstd
        frames) checked from disk.

        Raises BackupCorruptError naming the file. ``seal`` decompresses once when the backup is
        written; after that a matching sha256 proves the file is that same verified file, so a
        restore skips the second decompression.
        """
        manifest = self.manifest(artifact_id, expected_digest=expected_digest)
        directory = self.path(artifact_id)
        for entry in manifest.files:
            path = directory / entry.name
            if not path.is_file():
                raise BackupCorruptError(f"backup {artifact_id}: file {entry.name} is missing")
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                while block := fh.read(CHUNK):
                    digest.update(block)
            if digest.hexdigest() != entry.sha256:
                raise BackupCorruptError(
                    f"backup {artifact_id}: {entry.name} is corrupted (sha256 {digest.hexdigest()[:12]}… "
                    f"!= manifest {entry.sha256[:12]}…); it will not be restored",
                )
            if not decompress:
                continue
            try:
                with open(path, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
                    while reader.read(CHUNK):
                        pass
            except zstandard.ZstdError as exc:
                raise BackupCorruptError(f"backup {artifact_id}: {entry.name} does not decompress ({exc})") from None
        return manifest

    def open(self, manifest: Manifest, name: str) -> IO[bytes]:
        """A decompressing reader over one file of a verified backup."""
        manifest.file(name)
        if not valid_file_name(name):
            raise BackupCorruptError(f"backup {manifest.id}: invalid file name {name!r}; it will not be read")
        raw = open(self.path(manifest.id) / name, "rb")  # noqa: SIM115 - closed by the reader (closefd)
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)

    def iter_chunks(self, manifest: Manifest, name: str, size: int = CHUNK) -> Iterator[bytes]:
        with self.open(manifest, name) as reader:
            while block := reader.read(size):
                yield block
