"""A real Neo4j Community for the sandbox, the demo, the tests and the benchmark, without Docker.

The jars come from Maven Central through the project's own launcher (``framework/neo4j_launcher``:
a small pom and one Java class using Neo4j's documented "embedded with a Bolt connector" set-up).
Maven keeps them in its local repository (``~/.m2``); the compiled launcher and its classpath
are cached per Neo4j version under ``~/.cache/polyshift/neo4j`` (``POLYSHIFT_CACHE_DIR``).

Two release lines are known: 5.26 LTS (Java 17 or 21, with APOC core) is the default, and the
newest calendar-versioned line (Java 21+). A line whose JDK or Maven is missing raises
``Neo4jUnavailable`` with a one-line reason, so callers can say it and fall back.

A server started here binds 127.0.0.1 only, with bounded heap and page cache, and never outlives
its starter unless ``detach`` is set (the sandbox): it runs in its own process group, is stopped
at interpreter exit, and watches its standard input, whose other end only the starter holds.

    python -m polyshift.framework.sandbox.neo4j build [LINE ...]   # fetch and compile ahead of time (make install)
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parent / "neo4j_launcher"
_MAIN_CLASS = "polyshift.neo4j.Launcher"


class Neo4jUnavailable(Exception):
    """Neo4j cannot run on this machine (no suitable JDK, no Maven, or the build failed)."""


@dataclass(frozen=True)
class Neo4jLine:
    """A Neo4j release line: the exact version fetched, the JDKs it runs on, its APOC core."""

    name: str
    version: str
    min_java: int
    max_java: int
    apoc: str | None = None


LINES: dict[str, Neo4jLine] = {
    # APOC core is published on Maven Central for the 5.x line only.
    "5.26": Neo4jLine("5.26", "5.26.30", 17, 21, apoc="5.26.19"),
    "2026": Neo4jLine("2026", "2026.08.1", 21, 25),
}
DEFAULT_LINE = "5.26"


@dataclass(frozen=True)
class Jdk:
    home: Path
    major: int

    @property
    def java(self) -> str:
        return str(self.home / "bin" / "java")


def _jdk_major(home: Path) -> int | None:
    release = home / "release"
    if not (home / "bin" / "javac").exists() or not release.exists():
        return None
    match = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(errors="replace"), re.M)
    return int(match.group(1)) if match else None


def _jdk_candidates() -> list[Path]:
    homes: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        homes.append(Path(os.environ["JAVA_HOME"]))
    javac = shutil.which("javac")
    if javac:
        homes.append(Path(javac).resolve().parent.parent)
    # Where distributions install JDKs; POLYSHIFT_NEO4J_JDK_DIRS (os.pathsep-separated) replaces it.
    for parent in os.environ.get("POLYSHIFT_NEO4J_JDK_DIRS", "/usr/lib/jvm").split(os.pathsep):
        jvm = Path(parent)
        if jvm.is_dir():
            homes.extend(sorted(p for p in jvm.iterdir() if p.is_dir() and not p.is_symlink()))
    return list(dict.fromkeys(h.resolve() for h in homes))


def find_jdk(line: Neo4jLine) -> Jdk:
    """The newest installed JDK (with javac) in the line's supported range."""
    found = [Jdk(home, major) for home in _jdk_candidates() if (major := _jdk_major(home)) is not None]
    fitting = [j for j in found if line.min_java <= j.major <= line.max_java]
    if not fitting:
        have = ", ".join(f"{j.major} ({j.home})" for j in found) or "none"
        raise Neo4jUnavailable(f"Neo4j {line.version} needs a JDK {line.min_java}-{line.max_java}; installed JDKs: {have}")
    return max(fitting, key=lambda j: j.major)


def cache_root() -> Path:
    explicit = os.environ.get("POLYSHIFT_CACHE_DIR")
    base = Path(explicit) if explicit else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "polyshift"
    return base / "neo4j"


@dataclass(frozen=True)
class Build:
    """A compiled launcher for one Neo4j version: where its classes are and what to run it with."""

    line: Neo4jLine
    jdk: Jdk
    directory: Path

    @property
    def classpath(self) -> str:
        return f"{self.directory / 'classes'}{os.pathsep}{(self.directory / 'classpath.txt').read_text().strip()}"

    def jars(self, artifact: str) -> list[Path]:
        return [Path(p) for p in self.classpath.split(os.pathsep) if Path(p).name.startswith(f"{artifact}-")]


def build(line_name: str = DEFAULT_LINE, *, quiet: bool = True) -> Build:
    """Fetch the line's jars through Maven and compile the launcher, once per version and source."""
    line = LINES[line_name]
    jdk = find_jdk(line)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise Neo4jUnavailable("Maven (mvn) is not installed; it fetches Neo4j's jars from Maven Central")
    sources = [LAUNCHER / "pom.xml", *sorted((LAUNCHER / "src").rglob("*.java"))]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources) + str(jdk.home).encode()).hexdigest()[:12]
    directory = cache_root() / f"{line.version}-{digest}"
    done = directory / "built"
    if done.exists():
        return Build(line, jdk, directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Two processes (the suite and a sandbox) may build at once: one builds, the other waits.
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return Build(line, jdk, directory)
        command = [mvn, "-B", "-q", "-f", str(LAUNCHER / "pom.xml"), f"-Dneo4j.version={line.version}",
                   f"-Djava.release={line.min_java}", f"-Dlauncher.out={directory}", "compile", "dependency:build-classpath"]
        if line.apoc:
            command.insert(-2, f"-Dapoc.version={line.apoc}")
        if not quiet:
            print(f"fetching Neo4j {line.version} (and its dependencies) through Maven, building the launcher with "
                  f"JDK {jdk.major}", file=sys.stderr)
        env = {**os.environ, "JAVA_HOME": str(jdk.home), "PATH": f"{jdk.home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        try:
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            raise Neo4jUnavailable(f"building the Neo4j {line.version} launcher took over 30 min") from None
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise Neo4jUnavailable(f"building the Neo4j {line.version} launcher failed (mvn exit {result.returncode}):\n{tail}")
        done.write_text(json.dumps({"version": line.version, "jdk": str(jdk.home)}))
    return Build(line, jdk, directory)


def _free_port() -> int:
    from polyshift.framework.sandbox.servers import free_port

    return free_port()


@dataclass
class Neo4jServer:
    """One Neo4j Community process with Bolt on 127.0.0.1:``port``.

    ``heap`` and ``pagecache`` bound its memory (defaults fit a 2-core, 24 GB machine shared with
    other servers). ``password`` turns authentication on for user ``neo4j``; it reaches the JVM
    through its environment only. ``detach`` leaves it running after this process exits (the
    sandbox), otherwise it is stopped at exit and when this process dies.
    """

    line: str = DEFAULT_LINE
    root: Path | None = None
    port: int = 0
    heap: str = "512m"
    pagecache: str = "128m"
    password: str | None = None
    detach: bool = False
    start_timeout: float = 180.0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    info: dict[str, str] = field(default_factory=dict)
    started_in: float = 0.0
    _owns_root: bool = False
    _launched_at: float = 0.0

    @property
    def url(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    @property
    def version(self) -> str:
        return self.info.get("version", LINES[self.line].version)

    @property
    def java_version(self) -> str:
        return self.info.get("java", "")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def log(self) -> Path:
        assert self.root is not None
        return self.root / "launcher.log"

    def _write_config(self, b: Build) -> Path:
        assert self.root is not None
        lines = [f"server.memory.pagecache.size={self.pagecache}",
                 # No usage reports: the server is a throwaway on loopback.
                 "dbms.usage_report.enabled=false",
                 # A stopped test server is thrown away: keep its transaction logs small.
                 "db.tx_log.rotation.retention_policy=2 files"]
        apoc = b.jars("apoc-core") + b.jars("apoc-common")
        if apoc:
            plugins = self.root / "plugins"
            plugins.mkdir(exist_ok=True)
            for jar in apoc:
                link = plugins / jar.name
                if not link.exists():
                    link.symlink_to(jar)
            lines += [f"server.directories.plugins={plugins}", "dbms.security.procedures.unrestricted=apoc.*"]
            # APOC reads its own settings from apoc.conf beside neo4j.conf; exports go to the import directory.
            conf = self.root / "conf"
            conf.mkdir(exist_ok=True)
            (conf / "apoc.conf").write_text("apoc.export.file.enabled=true\napoc.import.file.enabled=true\n")
        path = self.root / "neo4j.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _jvm_options(self, b: Build) -> list[str]:
        options = ["-Xms128m", f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError", "-Dfile.encoding=UTF-8"]
        if b.jdk.major >= 24:
            # Netty and JNA use sun.misc.Unsafe and native access, which newer JDKs warn about on stderr.
            options += ["--enable-native-access=ALL-UNNAMED", "--sun-misc-unsafe-memory-access=allow"]
        return options

    def start(self) -> Neo4jServer:
        """Launch and wait until the default database answers (bounded by ``start_timeout``)."""
        return self.launch().wait_ready()

    def launch(self) -> Neo4jServer:
        """Start the process without waiting for it (servers of two lines start side by side)."""
        b = build(self.line)
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix=f"polyshift-neo4j-{self.line}-"))
            self._owns_root = True
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        config = self._write_config(b)
        env = {k: v for k, v in os.environ.items() if k != "POLYSHIFT_NEO4J_PASSWORD"}
        if self.password:
            env["POLYSHIFT_NEO4J_PASSWORD"] = self.password
        command = [b.jdk.java, *self._jvm_options(b), "-cp", b.classpath, _MAIN_CLASS, "--home", str(self.root),
                   "--port", str(self.port), "--config", str(config), "--ready-timeout", str(int(self.start_timeout))]
        if not self.detach:
            command.append("--watch-stdin")
        self._launched_at = time.monotonic()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL if self.detach else subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=self.root, start_new_session=True)
        if not self.detach:
            atexit.register(self.stop, graceful=False)
        return self

    def wait_ready(self) -> Neo4jServer:
        assert self.process is not None and self.root is not None
        ready = self.root / "ready.json"
        deadline = self._launched_at + self.start_timeout
        while not ready.exists():
            if self.process.poll() is not None:
                output = self.log.read_text(errors="replace")
                self.stop()
                raise Neo4jUnavailable(f"Neo4j {LINES[self.line].version} exited during start-up: {_cause(output)}")
            if time.monotonic() > deadline:
                self.stop()
                raise Neo4jUnavailable(f"Neo4j {LINES[self.line].version} did not start within {self.start_timeout:g} s")
            time.sleep(0.1)
        self.info = json.loads(ready.read_text())
        self.started_in = time.monotonic() - self._launched_at
        return self

    def rss_mib(self) -> float:
        """Resident memory of the server process now, in MiB (0 when it is not running)."""
        if self.pid is None:
            return 0.0
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0.0
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) / 1024 if match else 0.0

    def stop(self, *, remove: bool = True, graceful: bool = True, timeout: float = 60.0) -> None:
        """SIGTERM (the launcher's shutdown hook checkpoints and closes the store), then SIGKILL after
        ``timeout``; a server whose data is thrown away anyway is killed at once (``graceful=False``)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
        self.process = None
        if remove and self._owns_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def _cause(output: str) -> str:
    """The most specific cause in a Java stack trace, else the output's last line."""
    causes = [line.strip() for line in output.splitlines() if line.startswith(("Caused by:", "polyshift neo4j launcher:", "Error"))]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return (causes[-1] if causes else lines[-1] if lines else "no output")[:400]


def main(argv: list[str]) -> int:
    """``build [LINE ...]``: fetch and compile every line this machine has a JDK for."""
    if not argv or argv[0] != "build":
        print("usage: python -m polyshift.framework.sandbox.neo4j build [LINE ...]", file=sys.stderr)
        return 2
    for name in argv[1:] or list(LINES):
        try:
            b = build(name, quiet=False)
            print(f"Neo4j {b.line.version}: launcher ready (JDK {b.jdk.major}, {b.directory})", file=sys.stderr)
        except Neo4jUnavailable as exc:
            print(f"Neo4j {LINES[name].version}: not available here: {str(exc).splitlines()[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
