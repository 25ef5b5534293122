"""Flag evaluations per second (warm cache, one thread) and per-call latency.

The same flag in every contender: on for 30% of subjects, bucketed by subject key.
  - polyshift FlagClient.is_enabled (flags in the control-plane database, cache warm)
  - polyshift through the OpenFeature SDK (PolyshiftProvider)
  - UnleashClient, flexibleRollout 30% by userId, bootstrapped from a local config (the baseline)
  - OpenFeature's InMemoryProvider with a context evaluator doing the same 30% split

    python bench/flags_eval.py [--evaluations 300000] [--write bench/FLAGS_RESULTS.md]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import textwrap
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402
from polyshift.feature_flags import FlagClient  # noqa: E402
from polyshift.feature_flags.admin import Change, FlagAdmin  # noqa: E402
from polyshift.feature_flags.openfeature_provider import PolyshiftProvider  # noqa: E402
from polyshift.feature_flags.settings import flag_settings, open_store  # noqa: E402
from polyshift.framework.control.state import ControlPlane  # noqa: E402
from polyshift.framework.core.config import load_config  # noqa: E402

SUBJECTS = [f"user-{i}" for i in range(100_000)]


def throughput(fn: Callable[[str], bool], n: int) -> tuple[float, float]:
    """Evaluations per second over n calls, and the share that came out on."""
    subjects = (SUBJECTS * (n // len(SUBJECTS) + 1))[:n]
    on = 0
    started = time.perf_counter()
    for s in subjects:
        on += fn(s)
    return n / (time.perf_counter() - started), on / n


def latencies(fn: Callable[[str], bool], n: int) -> tuple[float, float]:
    """p50 and p99 of single calls in microseconds (timer overhead included, ~0.05 µs)."""
    clock = time.perf_counter_ns
    samples = []
    for s in SUBJECTS[:n]:
        t0 = clock()
        fn(s)
        samples.append(clock() - t0)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


def polyshift_client(work: Path) -> FlagClient:
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
    admin = FlagAdmin(open_store(flag_settings(loaded)), ControlPlane(loaded.state_url))
    admin.change("checkout_v2", Change(enabled=True, percent=30), reason="benchmark", create=True)
    return FlagClient.from_config(config)


def unleash_client(work: Path):  # type: ignore[no-untyped-def]
    from UnleashClient.cache import FileCache
    from UnleashClient.clients.unleash_client import UnleashClient

    cache = FileCache("polyshift-bench", directory=str(work / "unleash-cache"))
    cache.bootstrap_from_dict({"version": 1, "features": [{
        "name": "checkout_v2", "enabled": True, "strategies": [{
            "name": "flexibleRollout", "parameters": {"rollout": "30", "stickiness": "userId", "groupId": "checkout_v2"},
        }],
    }]})
    client = UnleashClient(url="http://127.0.0.1:9/api", app_name="polyshift-bench", disable_metrics=True,
                           disable_registration=True, cache=cache)
    client.initialize_client(fetch_toggles=False)
    return client


def in_memory_openfeature() -> Any:
    from openfeature import api
    from openfeature.flag_evaluation import FlagResolutionDetails, Reason
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    def split(flag, ctx):  # type: ignore[no-untyped-def]
        on = zlib.crc32(f"checkout_v2:{ctx.targeting_key}".encode()) % 10_000 < 3_000
        return FlagResolutionDetails(value=on, reason=Reason.SPLIT, variant="on" if on else "off")

    flag = InMemoryFlag("off", {"on": True, "off": False}, context_evaluator=split)
    api.set_provider(InMemoryProvider({"checkout_v2": flag}), domain="in-memory")
    return api.get_client(domain="in-memory")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--evaluations", type=int, default=300_000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    work = Path(tempfile.mkdtemp(prefix="polyshift-flags-bench-"))
    ours = polyshift_client(work)
    api.set_provider(PolyshiftProvider(ours), domain="polyshift")
    ours_of = api.get_client(domain="polyshift")
    unleash = unleash_client(work)
    memory_of = in_memory_openfeature()
    contenders: list[tuple[str, Callable[[str], bool]]] = [
        ("polyshift FlagClient.is_enabled", lambda s: ours.is_enabled("checkout_v2", s)),
        ("polyshift via OpenFeature SDK", lambda s: ours_of.get_boolean_value("checkout_v2", False, EvaluationContext(targeting_key=s))),
        ("UnleashClient.is_enabled (baseline)", lambda s: unleash.is_enabled("checkout_v2", {"userId": s})),
        ("OpenFeature InMemoryProvider", lambda s: memory_of.get_boolean_value("checkout_v2", False, EvaluationContext(targeting_key=s))),
    ]
    results = []
    for name, fn in contenders:
        for s in SUBJECTS[:2000]:  # warm-up
            fn(s)
        n = args.evaluations if "SDK" not in name and "InMemory" not in name else args.evaluations // 5
        per_second, share = throughput(fn, n)
        p50, p99 = latencies(fn, 50_000)
        results.append((name, per_second, share, p50, p99))
    ours.close()
    unleash.destroy()
    baseline = results[2][1]
    lines = [
        f"Warm-cache boolean evaluations, one thread, a 30% rollout flag with a subject key; {os.cpu_count()} cores. "
        "Baseline: UnleashClient.",
        "",
        "| evaluator | evaluations/s | ratio to baseline | share on | p50 µs | p99 µs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, per_second, share, p50, p99 in results:
        lines.append(f"| {name} | {per_second:,.0f} | {per_second / baseline:.1f} | {share:.3f} | {p50:.2f} | {p99:.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_results(args.write, "Feature flag evaluation benchmark", f"python bench/flags_eval.py --evaluations {args.evaluations}",
                      table)


if __name__ == "__main__":
    main()
