"""Backups in S3-compatible object storage (``[project] backups = "s3://bucket/prefix"``), so that
every runner of a pipeline reaches the rollback points any other runner took, and they outlive
the ephemeral machine that took them. The guarantees are the local store's
(``polyshift.framework.control.artifacts``):

- each file is zstd-compressed as it is streamed and uploaded in parts of ``PART_SIZE`` (one
  part in memory at a time, whatever the size), its sha256 computed over the uploaded bytes;
- nothing is overwritten: every object is written with ``If-None-Match: *`` (the server refuses
  a key that exists) after a look that it is not there yet, for servers that ignore the header;
- a backup is ``<prefix>/<id>/<file>`` plus ``<prefix>/<id>/manifest.json``, written last: a backup
  without its manifest was never sealed and is neither listed nor restored;
- ``seal`` downloads every file again and checks its sha256 and zstd frames; ``verify`` does the
  same before a restore, and the restore then reads exactly the object version it verified
  (``If-Match`` on its ETag);
- the manifest's sha256 is checked against the control plane's record on every read.

Endpoint, region and credentials come from the standard AWS settings (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws/config``, instance roles),
never from polyshift.toml. Errors name the bucket and the S3 error code (exit 2).
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import secrets as pysecrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any, cast

import zstandard

from polyshift.framework.control.artifacts import (
    CHUNK,
    ID,
    MANIFEST,
    ArtifactFile,
    ArtifactWriter,
    HashingReader,
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
from polyshift.framework.core.config import parse_s3_url
from polyshift.framework.core.errors import BackupCorruptError, BackupError, UsageError

log = logging.getLogger("polyshift.artifacts")

# S3 parts are at least 5 MiB (but the last) and at most 10,000 per object: 8 MiB parts hold a file
# of up to 78 GiB compressed, with 8 MiB of memory per upload.
PART_SIZE = 8 << 20
_MANIFEST_LIMIT = 64 << 20


_NOT_FOUND = ("404", "NoSuchKey", "NotFound")
_PRECONDITION = ("412", "PreconditionFailed")


class _Missing(Exception):
    """The object is not there (raised and caught inside this module)."""


class _Replaced(Exception):
    """The object is no longer the one that was verified (raised and caught inside this module)."""


@contextmanager
def _s3(where: str, doing: str) -> Iterator[None]:
    """botocore's errors as a BackupError naming the place, by their class and S3 error code."""
    from botocore import exceptions as bx

    try:
        yield
    except (bx.NoCredentialsError, bx.PartialCredentialsError):
        raise BackupError(f"{where}: no AWS credentials found while {doing}",
                          hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance role)") from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError) as exc:
        raise BackupError(f"{where}: object storage is unreachable while {doing} ({type(exc).__name__})",
                          hint="check AWS_ENDPOINT_URL (or the region) and the network") from None
    except bx.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "")) or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
        if code in ("NoSuchBucket",):
            raise BackupError(f"{where}: the bucket does not exist", hint="create it, or fix [project] backups") from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"):
            raise BackupError(f"{where}: access denied while {doing} ({code})",
                              hint="the credentials need s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject and "
                                   "s3:AbortMultipartUpload on the prefix (see README: Team set-up)") from None
        if code in _PRECONDITION:
            raise BackupError(f"{where}: the object exists already; backups are never overwritten") from None
        raise BackupError(f"{where}: {doing} failed: {code or type(exc).__name__}") from None
    except bx.BotoCoreError as exc:
        raise BackupError(f"{where}: {doing} failed: {type(exc).__name__}") from None


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


class _ObjectUpload:
    """One object being written: buffered to ``part_size``, then uploaded part by part; a file
    smaller than one part is a single conditional PUT."""

    def __init__(self, store: S3ArtifactStore, key: str, part_size: int) -> None:
        self.store, self.key, self.part_size = store, key, part_size
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> int:
        self.buffer += data
        while len(self.buffer) >= self.part_size:
            with memoryview(self.buffer) as view:
                part = bytes(view[: self.part_size])  # one copy: the part botocore sends
            del self.buffer[: self.part_size]
            self._send(part)
        return len(data)

    def _send(self, part: bytes) -> None:
        client, bucket = self.store.client, self.store.bucket
        with _s3(self.store.where(self.key), "uploading a part"):
            if self.upload_id is None:
                self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=self.key)["UploadId"]
            number = len(self.parts) + 1
            etag = client.upload_part(Bucket=bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=part)["ETag"]
        self.parts.append({"PartNumber": number, "ETag": etag})

    def finish(self) -> None:
        client, bucket = self.store.client, self.store.bucket
        with _s3(self.store.where(self.key), "writing"):
            if self.upload_id is None:
                client.put_object(Bucket=bucket, Key=self.key, Body=bytes(self.buffer), IfNoneMatch="*")
            else:
                if self.buffer or not self.parts:
                    self._send(bytes(self.buffer))
                client.complete_multipart_upload(Bucket=bucket, Key=self.key, UploadId=self.upload_id,
                                                 MultipartUpload={"Parts": self.parts}, IfNoneMatch="*")
                self.upload_id = None
        self.buffer = bytearray()

    def abort(self) -> None:
        """Never raises: called while another error is on its way out."""
        if self.upload_id is not None:
            try:
                self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception as exc:  # the bucket's lifecycle rule removes what is left (README)
                log.warning("could not abort the upload of %s: %s", self.key, type(exc).__name__)
            self.upload_id = None
        self.buffer = bytearray()


class S3ArtifactWriter:
    """Collects the files of one backup while an adapter streams them into the bucket."""

    def __init__(self, store: S3ArtifactStore, base: dict[str, Any]) -> None:
        self.store = store
        self.base = base
        self.files: list[ArtifactFile] = []
        self.keys: list[str] = []
        self._uploads: set[_ObjectUpload] = set()  # a big table's parts are written by several threads at once

    def write_stream(self, name: str, chunks: Iterator[bytes], meta: dict[str, Any] | None = None) -> ArtifactFile:
        """Compress ``chunks`` into the object ``name``; memory stays at one part whatever the size."""
        if not valid_file_name(name):
            raise BackupError(f"invalid artifact file name {name!r}")
        key = self.store.key(self.base["id"], name)
        self.store.refuse_existing(key)
        upload = _ObjectUpload(self.store, key, self.store.part_size)
        self._uploads.add(upload)
        try:
            size, digest = compress_into(upload, chunks)
            upload.finish()
        except BaseException:
            upload.abort()
            raise
        finally:
            self._uploads.discard(upload)
        self.keys.append(key)
        entry = ArtifactFile(name, size, digest, dict(meta or {}))
        self.files.append(entry)
        return entry

    def write_bytes(self, name: str, data: bytes, meta: dict[str, Any] | None = None) -> ArtifactFile:
        return self.write_stream(name, iter([data]), meta)

    def abort(self) -> None:
        for upload in list(self._uploads):
            upload.abort()


_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass
class _Unsealed:
    keys: list[str] = field(default_factory=list)
    size: int = 0
    uploads: list[tuple[str, str]] = field(default_factory=list)
    last_written: datetime = _NEVER

    def add_object(self, key: str, size: int, modified: datetime) -> None:
        self.keys.append(key)
        self.size += size
        self.last_written = max(self.last_written, modified)

    def add_upload(self, key: str, upload_id: str, initiated: datetime) -> None:
        self.uploads.append((key, upload_id))
        self.last_written = max(self.last_written, initiated)

    def leftover(self, artifact_id: str) -> Leftover:
        return Leftover(artifact_id, len(self.keys), self.size, len(self.uploads), self.last_written)


class S3ArtifactStore:
    def __init__(self, url: str, index: ManifestIndex | None = None, *, part_size: int = PART_SIZE) -> None:
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_s3_url(url)
        self.index = index
        self.part_size = part_size
        self._client: Any = None
        # ETag of each file as it was last verified: a restore reads exactly that object.
        self._verified: dict[tuple[str, str], str] = {}

    @property
    def location(self) -> str:
        return self.url

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            with _s3(self.url, "connecting"):
                self._client = boto3.session.Session().client(
                    "s3", config=BotoConfig(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=120))
        return self._client

    def key(self, artifact_id: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, artifact_id, name) if p)

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def refuse_existing(self, key: str) -> None:
        if self._object_exists(key):
            raise BackupError(f"{self.where(key)}: the object exists already; backups are never overwritten")

    def _object_exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with _s3(self.where(key), "looking it up"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    return False
                raise
        return True

    # -- preflight ----------------------------------------------------------------------
    def check_usable(self) -> None:
        """The bucket answers and takes a new object: a multipart upload started and aborted, so
        the probe needs no delete permission and leaves nothing behind."""
        from botocore.exceptions import ClientError

        probe = self.key(f".probe-{pysecrets.token_hex(4)}", "x")
        with _s3(self.url, "checking the bucket"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:  # HEAD has no body: a bare 404 is the missing bucket
                    raise BackupError(f"{self.url}: the bucket does not exist", hint="create it, or fix [project] backups") from None
                raise
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=probe)["UploadId"]
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=probe, UploadId=upload)

    def check_room(self, needed: int) -> None:
        """Object storage has no fixed free space to check; quotas refuse the upload itself (exit 2)."""

    # -- writing ------------------------------------------------------------------------
    def new_writer(self, *, store: str, kind: str, version: str | None, scope: tuple[str, ...], reason: str) -> S3ArtifactWriter:
        artifact_id, now = new_artifact_id(store)
        return S3ArtifactWriter(self, writer_base(artifact_id, now, store=store, kind=kind, version=version, scope=scope, reason=reason))

    def seal(self, writer: ArtifactWriter, meta: dict[str, Any]) -> Manifest:
        """Write the manifest (last, never over another), then download every file and verify it."""
        assert isinstance(writer, S3ArtifactWriter)
        manifest, body = sealed_manifest(writer, meta)
        key = self.key(manifest.id, MANIFEST)
        self.refuse_existing(key)
        with _s3(self.where(key), "writing the manifest"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", ContentType="application/json")
        writer.keys.append(key)
        digest = hashlib.sha256(body).hexdigest()
        # Not on record yet (the caller records it once this returns): check against what we wrote.
        read_back = self.verify(manifest.id, expected_digest=digest)
        return replace(manifest, digest=read_back.digest, on_record=True)

    def discard(self, writer: ArtifactWriter) -> None:
        """Remove what a failed backup uploaded. Never raises; without a manifest it is never used anyway."""
        assert isinstance(writer, S3ArtifactWriter)
        writer.abort()
        for key in writer.keys:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                log.warning("could not remove %s: %s", self.where(key), type(exc).__name__)

    # -- reading ------------------------------------------------------------------------
    def _get(self, key: str, doing: str, **conditions: str) -> Any:
        """The object's response; ``_Missing`` when it is not there, ``_Replaced`` when a condition fails."""
        from botocore.exceptions import ClientError

        with _s3(self.where(key), doing):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key, **conditions)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    raise _Missing(key) from None
                if conditions and _code(exc) in _PRECONDITION:
                    raise _Replaced(key) from None
                raise

    def _exists_any(self, artifact_id: str) -> bool:
        with _s3(self.url, "listing"):
            found = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(artifact_id, ""), MaxKeys=1)
        return bool(found.get("KeyCount") or found.get("Contents"))

    def manifest(self, artifact_id: str, *, expected_digest: str | None = None) -> Manifest:
        """The manifest as sealed (see ``checked_manifest``)."""
        if not ID.match(artifact_id):
            raise UsageError(f"{artifact_id!r} is not a backup id (see 'polyshift backup list')")
        key = self.key(artifact_id, MANIFEST)
        try:
            response = self._get(key, "reading the manifest")
        except _Missing:
            if self._exists_any(artifact_id):
                raise BackupCorruptError(f"backup {artifact_id}: {MANIFEST} is missing (the backup was never sealed)") from None
            raise UsageError(f"no backup {artifact_id} in {self.url}") from None
        with _s3(self.where(key), "reading the manifest"):
            try:
                body = response["Body"].read(_MANIFEST_LIMIT + 1)
            finally:
                response["Body"].close()
        if len(body) > _MANIFEST_LIMIT:
            raise BackupCorruptError(f"backup {artifact_id}: {MANIFEST} is larger than any manifest polyshift writes")
        recorded = expected_digest or (self.index.manifest_digest(artifact_id) if self.index is not None else None)
        return checked_manifest(artifact_id, body, recorded)

    def _root(self) -> str:
        prefix = self.key("", "")
        return prefix + "/" if prefix and not prefix.endswith("/") else prefix

    def list(self) -> list[Manifest]:
        found = []
        prefix = self._root()
        with _s3(self.url, "listing backups"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            ids = sorted(p["Prefix"][len(prefix):].rstrip("/") for page in pages for p in page.get("CommonPrefixes", []))
        for artifact_id in ids:
            if not ID.match(artifact_id):
                continue
            try:
                found.append(self.manifest(artifact_id))
            except BackupCorruptError:
                continue  # listed by 'backup verify', not by list
        return found

    # -- leftovers of backups that never sealed ------------------------------------------------
    def _unsealed(self) -> dict[str, _Unsealed]:
        """Per backup id under the prefix: its objects and unfinished uploads, if it has no manifest."""
        root = self._root()
        seen: dict[str, _Unsealed] = {}
        sealed: set[str] = set()
        with _s3(self.url, "listing backups"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root):
                for obj in page.get("Contents", []):
                    artifact_id, _, name = obj["Key"][len(root):].partition("/")
                    if not ID.match(artifact_id):
                        continue
                    if name == MANIFEST:
                        sealed.add(artifact_id)
                    seen.setdefault(artifact_id, _Unsealed()).add_object(obj["Key"], obj["Size"], obj["LastModified"])
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=root):
                for upload in page.get("Uploads", []):
                    artifact_id = upload["Key"][len(root):].partition("/")[0]
                    if ID.match(artifact_id):
                        seen.setdefault(artifact_id, _Unsealed()).add_upload(upload["Key"], upload["UploadId"], upload["Initiated"])
        return {artifact_id: found for artifact_id, found in seen.items() if artifact_id not in sealed}

    def leftovers(self, older_than: float) -> builtins.list[Leftover]:
        """Backups without a manifest where nothing was written for ``older_than`` seconds. Object
        storage has no lock that dies with its writer, so quiet time is the only sign that the
        writer is gone: it must be longer than any one file of a backup takes to upload."""
        now = datetime.now(UTC)
        return [found.leftover(artifact_id) for artifact_id, found in sorted(self._unsealed().items())
                if (now - found.last_written).total_seconds() >= older_than]

    def remove_leftover(self, leftover: Leftover) -> bool:
        found = self._unsealed().get(leftover.id)
        # Looked at again: sealed since, or written to since it was listed, it is left alone.
        if found is None or found.leftover(leftover.id) != leftover:
            return False
        with _s3(self.url, f"removing the leftovers of backup {leftover.id}"):
            for key, upload_id in found.uploads:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            for key in found.keys:
                self.client.delete_object(Bucket=self.bucket, Key=key)
        log.info("removed %s, left by a backup whose writer stopped", self.where(self.key(leftover.id, "")))
        return True

    def verify(self, artifact_id: str, *, decompress: bool = True, expected_digest: str | None = None) -> Manifest:
        """The manifest's own sha256, then every file downloaded: its size and sha256 (and, unless
        told otherwise, its zstd frames, in the same pass). Raises BackupCorruptError naming the file."""
        from botocore.exceptions import FlexibleChecksumError

        manifest = self.manifest(artifact_id, expected_digest=expected_digest)
        for entry in manifest.files:
            key = self.key(artifact_id, entry.name)
            try:
                response = self._get(key, f"reading {entry.name}")
            except _Missing:
                raise BackupCorruptError(f"backup {artifact_id}: file {entry.name} is missing") from None
            stream = HashingReader(response["Body"])
            undecodable: str | None = None
            try:
                with _s3(self.where(key), f"reading {entry.name}"):
                    try:
                        if decompress:
                            try:
                                with zstandard.ZstdDecompressor().stream_reader(cast("IO[bytes]", stream), closefd=False) as reader:
                                    while reader.read(CHUNK):
                                        pass
                            except zstandard.ZstdError as exc:
                                undecodable = str(exc)  # said after the sha256, which names the cause better
                        stream.drain()
                    except FlexibleChecksumError:
                        raise BackupCorruptError(
                            f"backup {artifact_id}: {entry.name} is corrupted (its bytes no longer match the checksum the "
                            "server recorded when it was uploaded); it will not be restored") from None
            finally:
                response["Body"].close()
            if stream.size != entry.bytes or stream.digest.hexdigest() != entry.sha256:
                raise BackupCorruptError(
                    f"backup {artifact_id}: {entry.name} is corrupted (sha256 {stream.digest.hexdigest()[:12]}… "
                    f"!= manifest {entry.sha256[:12]}…); it will not be restored")
            if undecodable is not None:
                raise BackupCorruptError(f"backup {artifact_id}: {entry.name} does not decompress ({undecodable})")
            self._verified[artifact_id, entry.name] = str(response.get("ETag", ""))
        return manifest

    def open(self, manifest: Manifest, name: str) -> IO[bytes]:
        """A decompressing reader over one file of a verified backup: the very object verified."""
        manifest.file(name)
        if not valid_file_name(name):
            raise BackupCorruptError(f"backup {manifest.id}: invalid file name {name!r}; it will not be read")
        etag = self._verified.get((manifest.id, name))
        try:
            response = self._get(self.key(manifest.id, name), f"reading {name}", **({"IfMatch": etag} if etag else {}))
        except _Missing:
            raise BackupCorruptError(f"backup {manifest.id}: file {name} is missing") from None
        except _Replaced:
            raise BackupCorruptError(f"backup {manifest.id}: {name} changed since it was verified; it will not be restored") from None
        return zstandard.ZstdDecompressor().stream_reader(response["Body"], closefd=True)

    def iter_chunks(self, manifest: Manifest, name: str, size: int = CHUNK) -> Iterator[bytes]:
        with self.open(manifest, name) as reader:
            while block := reader.read(size):
                yield block
