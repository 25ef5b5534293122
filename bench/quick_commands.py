"""How long the quick commands take to start and answer, as a user runs them: `polyshift --help`,
`status` and `plan` on a project with one PostgreSQL store and one pending migration, `flags list`
on a Redis flag store. Each is its own process (interpreter start included), median of --repeat
runs, next to two baselines measured in the same run: `python -c pass` (the interpreter alone) and
`alembic --help` (another migration tool's CLI, installed as a dev dependency). Issue 19's target
is under 250 ms for each.

    python bench/quick_commands.py [--repeat 10] [--write bench/QUICK_COMMANDS_RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import measure, user_env, write_results  # noqa: E402
from polyshift.framework.sandbox.servers import EmbeddedPostgres, EmbeddedRedis  # noqa: E402

TARGET_MS = 250


def project(root: Path, pg_url: str, redis_url: str) -> Path:
    main = root / "migrations" / "main"
    main.mkdir(parents=True)
    (main / "0001_users.forward.sql").write_text("CREATE TABLE users (id bigint PRIMARY KEY, email text);\n")
    (main / "0001_users.rollback.sql").write_text("DROP TABLE users;\n")
    config = root / "polyshift.toml"
    config.write_text(textwrap.dedent(f"""\
        [project]
        state_url = "sqlite:///.polyshift/state.db"
        [stores.main]
        kind = "postgres"
        url = "{pg_url}"
        [flags]
        store = "redis"
        url = "{redis_url}"
        prefix = "bench:"
        """))
    return config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    write = args.write.resolve() if args.write else None  # the runs below change directory
    cwd = Path.cwd()
    root = Path(tempfile.mkdtemp(prefix="polyshift-bench-quick-"))
    pg = EmbeddedPostgres(password="bench-pw").start()
    flags_server = EmbeddedRedis().start()
    bin_dir = Path(sys.executable).parent
    polyshift = str(bin_dir / "polyshift")
    try:
        config = project(root, pg.url(), flags_server.url)
        env = user_env(PYTHONPATH=str(REPO))
        os.chdir(root)
        # One flag to list, set through the CLI as an operator would (untimed).
        measure([polyshift, "--config", str(config), "flags", "set", "checkout_v2", "--create", "--on", "--percent", "10",
                 "--reason", "bench"], env)
        contenders = [
            ("`python -c pass` (baseline: the interpreter alone)", [sys.executable, "-c", "pass"]),
            ("`alembic --help` (baseline: another migration CLI)", [str(bin_dir / "alembic"), "--help"]),
            ("`polyshift --help`", [polyshift, "--help"]),
            ("`polyshift status` (1 PostgreSQL store)", [polyshift, "--config", str(config), "status"]),
            ("`polyshift plan` (1 pending migration)", [polyshift, "--config", str(config), "plan"]),
            ("`polyshift flags list` (Redis flag store)", [polyshift, "--config", str(config), "flags", "list"]),
        ]
        times: dict[str, list[float]] = {label: [] for label, _ in contenders}
        for _, cmd in contenders:  # untimed: each writes its bytecode once, as a user's first run would
            measure(cmd, env)
        for _ in range(args.repeat):  # interleaved, so a burst of load elsewhere hits every contender alike
            for label, cmd in contenders:
                times[label].append(measure(cmd, env)[0])
    finally:
        os.chdir(cwd)
        flags_server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    medians = {label: statistics.median(t) * 1000 for label, t in times.items()}
    interpreter, alembic = medians[contenders[0][0]], medians[contenders[1][0]]
    lines = [f"| command | median | ratio to `python -c pass` | ratio to `alembic --help` | under {TARGET_MS} ms |",
             "|---|---:|---:|---:|:---:|"]
    for label, ms in medians.items():
        verdict = "" if "baseline" in label else ("yes" if ms < TARGET_MS else "no")
        lines.append(f"| {label} | {ms:.0f} ms | {ms / interpreter:.2f}x | {ms / alembic:.2f}x | {verdict} |")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    machine = f"{os.cpu_count()} cores, load average {load} at the end of the run"
    table = "\n".join(lines) + f"\n\n{args.repeat} runs each, interleaved; {machine}."
    print(table)
    if write:
        write_results(write, "Quick commands: start-up and answer time", "make bench", table,
                      suffix=f" (median of {args.repeat} runs, each command its own process)")


if __name__ == "__main__":
    main()
