"""A real S3-compatible server for the tests, the benchmark and team set-ups tried on one machine:
VersityGW (Apache-2.0), an S3 gateway over a local directory, built from the Go module proxy with
``go install`` and cached outside the repository (``~/.cache/polyshift/versitygw/<version>/``).

    python -m polyshift.framework.sandbox.objectstore build     # what 'make install' runs

The server speaks the S3 API that polyshift's object-store backend uses, conditional writes
(``If-None-Match: *``) and multipart uploads included, so the tests exercise the same requests
a bucket in the cloud receives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyshift.framework.sandbox.servers import free_port

VERSITYGW_MODULE = "github.com/versity/versitygw"
VERSITYGW_VERSION = "v1.8.0"


class ObjectStoreUnavailable(Exception):
    """The server cannot be built or started on this machine (no Go toolchain, say)."""


def cache_dir() -> Path:
    explicit = os.environ.get("POLYSHIFT_CACHE_DIR")
    base = Path(explicit) if explicit else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "polyshift"
    return base / "versitygw" / VERSITYGW_VERSION


def binary() -> Path:
    return cache_dir() / "versitygw"


def build(*, quiet: bool = True) -> Path:
    """The server binary, built once per version with ``go install`` (a few minutes the first time)."""
    target = binary()
    if target.is_file():
        return target
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if go is None:
        raise ObjectStoreUnavailable("building VersityGW needs the Go toolchain ('go' on PATH)")
    staging = Path(tempfile.mkdtemp(prefix="polyshift-versitygw-"))
    try:
        env = {**os.environ, "GOBIN": str(staging), "CGO_ENABLED": "0"}
        command = [go, "install", "-trimpath", "-ldflags=-s -w", f"{VERSITYGW_MODULE}/cmd/versitygw@{VERSITYGW_VERSION}"]
        if not quiet:
            print(f"building VersityGW {VERSITYGW_VERSION} with go install (once; cached in {target.parent})", file=sys.stderr)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            why = lines[-1] if lines else f"exit {done.returncode}"
            raise ObjectStoreUnavailable(f"go install {VERSITYGW_MODULE}@{VERSITYGW_VERSION} failed: {why}")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Renamed into place whole, so a build killed half-way never leaves a binary that looks done.
        shutil.move(str(staging / "versitygw"), str(target.with_suffix(".partial")))
        os.replace(target.with_suffix(".partial"), target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class EmbeddedObjectStore:
    """VersityGW serving the buckets of a throwaway directory on 127.0.0.1."""

    access_key: str = "polyshift-test"
    secret_key: str = "polyshift-test-secret"
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="polyshift-s3-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "buckets"

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client of this server needs."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, timeout: float = 30.0) -> EmbeddedObjectStore:
        exe = build()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ROOT_ACCESS_KEY": self.access_key, "ROOT_SECRET_KEY": self.secret_key}
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server writes it while it runs
        self.process = subprocess.Popen([str(exe), "--port", f"127.0.0.1:{self.port}", "posix", str(self.data_dir)],
                                        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ObjectStoreUnavailable(f"VersityGW exited at start: {(self.root / 'server.log').read_text()[-400:]}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                break
            except urllib.error.HTTPError:
                break  # answering (an unsigned request is refused): it is up
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ObjectStoreUnavailable(f"VersityGW did not answer on {self.endpoint} within {timeout:g} s") from None
                time.sleep(0.05)
        return self

    def client(self) -> Any:
        import boto3

        env = self.env()
        return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=env["AWS_DEFAULT_REGION"])

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv != ["build"]:
        print("usage: python -m polyshift.framework.sandbox.objectstore build", file=sys.stderr)
        return 2
    try:
        path = build(quiet=False)
    except ObjectStoreUnavailable as exc:
        print(f"S3-compatible test server: not available here: {exc}", file=sys.stderr)
        return 0
    print(f"VersityGW {VERSITYGW_VERSION}: ready ({path})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
