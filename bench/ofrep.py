"""OFREP over HTTP: `polyshift serve` (one uvicorn process) under 32 concurrent keep-alive
connections, single-flag and bulk evaluation of 50 flags, against the in-process FlagClient doing
the same evaluations (the reference: what the network and the ASGI stack add).

The load generator is wrk (Debian's package) when it is installed, else an asyncio client in this
process with the same connection count. Both send the same requests for a bounded time to
127.0.0.1 only. Target from issue 15: bulk p99 under 5 ms with 32 connections on 2 cores.

    python bench/ofrep.py [--seconds 10] [--connections 32] [--write bench/OFREP_RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402
from polyshift.feature_flags import FlagClient  # noqa: E402
from polyshift.feature_flags.admin import Change, FlagAdmin  # noqa: E402
from polyshift.feature_flags.server.accounts import Accounts  # noqa: E402
from polyshift.feature_flags.settings import flag_settings, open_store  # noqa: E402
from polyshift.framework.control.state import ControlPlane  # noqa: E402
from polyshift.framework.core.config import load_config  # noqa: E402

FLAGS = 50
SUBJECT = "user-4242"


def project(work: Path) -> tuple[Path, str]:
    config = work / "polyshift.toml"
    config.write_text(textwrap.dedent(f"""\
        [project]
        state_url = "sqlite:///{work}/state.db"
        [stores.main]
        kind = "postgres"
        url = "postgresql://bench@127.0.0.1:1/unused"
        [flags]
        refresh_interval = "1s"
        """))
    loaded = load_config(config)
    state = ControlPlane(loaded.state_url)
    admin = FlagAdmin(open_store(flag_settings(loaded)), state)
    for i in range(FLAGS):  # a mix like a real flag set: rollouts, full, off, a kill, lists
        kind = i % 5
        change = [Change(enabled=True, percent=30), Change(enabled=True, percent=100), Change(enabled=False),
                  Change(enabled=True, percent=50, allow_add=("vip",), deny_add=("bot",)), Change(enabled=True, killed=True)][kind]
        admin.change(f"flag_{i:02d}", change, reason="benchmark", create=True)
    _key, secret = Accounts(state).create_key("bench", "read", who="bench")
    return config, secret


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    log = config.parent / "serve.log"  # a file: an undrained pipe would stall the server when it fills
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "polyshift.framework.cli.main", "--config", str(config), "serve", "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"polyshift serve exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("polyshift serve did not start within 60 s")


# -- load generators ------------------------------------------------------------------------
def run_wrk(url: str, path: str, body: str, headers: dict[str, str], seconds: int, connections: int) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, non-2xx/3xx responses) from wrk --latency."""
    lua = "wrk.method = 'POST'\n" + f"wrk.body = {json.dumps(body)}\n" + "".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url + path],
                             capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    finally:
        os.unlink(script.name)

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, ms("50"), ms("99"), int(bad[1]) if bad else 0


async def _client(port: int, request: bytes, until: float, samples: list[float], bad: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I)[1]) if b"content-length" in head.lower() else 0  # type: ignore[index]
            if length:
                await reader.readexactly(length)
            samples.append(time.perf_counter() - t0)
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 304")):
                bad.append(1)
    finally:
        writer.close()


def run_asyncio(port: int, path: str, body: str, headers: dict[str, str], seconds: int,
                connections: int) -> tuple[float, float, float, int]:
    raw = body.encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode() + raw
    samples: list[float] = []
    bad: list[int] = []

    async def main() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, request, until, samples, bad) for _ in range(connections)))

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    samples.sort()
    return len(samples) / elapsed, statistics.median(samples) * 1000, samples[int(len(samples) * 0.99)] * 1000, len(bad)


async def _paced(port: int, request: bytes, start: float, interval: float, count: int, samples: list[float], bad: list[int]) -> None:
    """One connection sending at fixed times; latency counts from when the request was due, so a
    stalled server shows as the delay every waiting request saw (no coordinated omission)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(count):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            found = re.search(rb"content-length: (\d+)", head, re.I)
            if found:
                await reader.readexactly(int(found[1]))
            samples.append(time.perf_counter() - due)
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 304")):
                bad.append(1)
    finally:
        writer.close()


def run_open_loop(port: int, path: str, body: str, headers: dict[str, str], rate: int, seconds: int,
                  connections: int) -> tuple[float, float, float, int]:
    """A fixed offered rate spread over the connections: latency at a load the server can carry."""
    raw = body.encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode() + raw
    samples: list[float] = []
    bad: list[int] = []
    interval = connections / rate
    count = int(seconds / interval)

    async def main() -> None:
        start = time.perf_counter() + 0.1
        await asyncio.gather(*(_paced(port, request, start + c * interval / connections, interval, count, samples, bad)
                               for c in range(connections)))

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    samples.sort()
    return len(samples) / elapsed, statistics.median(samples) * 1000, samples[int(len(samples) * 0.99)] * 1000, len(bad)


def in_process(config: Path, bulk: bool, seconds: float = 2.0) -> tuple[float, float, float]:
    """The reference: the same evaluations in process, one thread (per 'request': 1 or 50 flags)."""
    client = FlagClient.from_config(config, background=False)
    names = sorted(client.flags())
    one = names[0]
    times: list[float] = []
    until = time.perf_counter() + seconds
    clock = time.perf_counter
    while clock() < until:
        t0 = clock()
        if bulk:
            [client.evaluate(n, SUBJECT) for n in names]
        else:
            client.evaluate(one, SUBJECT)
        times.append(clock() - t0)
    client.close()
    times.sort()
    return len(times) / sum(times), statistics.median(times) * 1000, times[int(len(times) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rates", type=int, nargs="*", default=[250, 500, 1000],
                        help="offered bulk requests/s for the fixed-rate rows")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="polyshift-ofrep-bench-"))
    config, key = project(work)
    port = free_port()
    server = serve(config, port)
    headers = {"Authorization": f"Bearer {key}"}
    body = json.dumps({"context": {"targetingKey": SUBJECT}})
    generator = "wrk" if shutil.which("wrk") else "asyncio client"
    load_before = os.getloadavg()[0]
    try:
        import httpx2 as httpx  # the ETag of the bulk answer, for the revalidation row

        tag = httpx.post(f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags", content=body,
                         headers=headers | {"Content-Type": "application/json"}).headers["ETag"]
        scenarios = [
            ("single flag", "/ofrep/v1/evaluate/flags/flag_00", headers, False),
            (f"bulk, {FLAGS} flags", "/ofrep/v1/evaluate/flags", headers, True),
            ("bulk revalidation (If-None-Match → 304)", "/ofrep/v1/evaluate/flags", headers | {"If-None-Match": tag}, True),
        ]
        rows = []
        for name, path, sent, bulk in scenarios:
            if generator == "wrk":
                rate, p50, p99, bad = run_wrk(f"http://127.0.0.1:{port}", path, body, sent | {"Content-Type": "application/json"},
                                              args.seconds, args.connections)
            else:
                rate, p50, p99, bad = run_asyncio(port, path, body, sent, args.seconds, args.connections)
            ref_rate, ref_p50, _ref_p99 = in_process(config, bulk)
            rows.append((name, rate, p50, p99, bad, ref_rate, ref_p50))
        paced = []
        for offered in args.rates:
            rate, p50, p99, bad = run_open_loop(port, "/ofrep/v1/evaluate/flags", body, headers, offered, args.seconds,
                                                args.connections)
            paced.append((offered, rate, p50, p99, bad))
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = [
        f"`polyshift serve` (one uvicorn process) on {os.cpu_count()} cores, load from {generator} on the same machine, "
        f"{args.connections} keep-alive connections, {args.seconds} s per row, POST with a targeting key. "
        "Reference: the in-process FlagClient evaluating the same flags in one thread.",
        "",
        "| request | requests/s | p50 ms | p99 ms | errors | in process, same work per s | in process p50 ms | HTTP / in process (p50) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rate, p50, p99, bad, ref_rate, ref_p50 in rows:
        lines.append(f"| {name} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {bad} | {ref_rate:,.0f} | {ref_p50:.4f} | {p50 / ref_p50:,.0f} x |")
    lines += ["", f"At a fixed offered rate (an asyncio client in the benchmark's process, {args.connections} connections, "
              "latency from when each request was due):", "",
              "| bulk, 50 flags, offered req/s | served req/s | p50 ms | p99 ms | errors |", "|---:|---:|---:|---:|---:|"]
    for offered, rate, p50, p99, bad in paced:
        lines.append(f"| {offered:,} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {bad} |")
    bulk_p99 = rows[1][3]
    met = [offered for offered, _rate, _p50, p99, _bad in paced if p99 < 5]
    lines += ["", f"Target: bulk p99 under 5 ms with {args.connections} connections: at saturation (wrk) "
              f"{'met' if bulk_p99 < 5 else 'NOT met'} ({bulk_p99:.2f} ms); at a fixed rate met up to "
              f"{max(met) if met else 'none'} req/s of those tried. "
              f"Load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}: every busy process on the "
              "machine shares the two cores with the server and the load generator, and widens the tail."]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_results(args.write, "OFREP over HTTP benchmark",
                      f"python bench/ofrep.py --seconds {args.seconds} --connections {args.connections}", table)


if __name__ == "__main__":
    main()
