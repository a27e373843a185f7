"""Feature-tier benchmark: the memory, Redis and degraded-Redis paths of /predict.

    python -m bench.features                      # C=1,64, BENCH_ROUNDS × BENCH_DURATION
    python -m bench.features --concurrency 8 --duration 3 --rounds 1

Starts its own ``redis-server``s (one healthy, one frozen with SIGSTOP, one
killed before the load so its port refuses), then loads ``modelserve serve``
in four configurations with ``run_bench``:

- ``memory``: default settings; after warm-up every lookup is a memory hit;
- ``redis``: memory tier off (``max_age`` 0), so every lookup is a Redis GET;
- ``redis-down``: Redis killed: connection refused, the breaker open, compute serves;
- ``redis-frozen``: Redis stopped (SIGSTOP): lookups time out, the breaker opens.

Besides wrk, it times the tiers in-process (memory hit, Redis GET against the
healthy server) to set the memory tier's cost against /predict's latency.
Targets print PASS / FAIL; they do not fail the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import uvloop

from bench.harness import Check, Plan, Results, render_report, run_bench, write_report
from bench.run import FEATURE_TABLE, MANIFEST, ROOT, predict_bodies, service_scenario
from harness import RedisServer

RESULTS = ROOT / "bench" / "results" / "features.md"
REDIS_TIMEOUT_MS = 5.0


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def tier_timings(redis_url: str, n: int = 5000) -> dict[str, float]:
    """µs per memory hit, and Redis GET p50/p99 in ms, measured in this process."""
    from app.features.build import build_feature_server
    from app.features.table import OfflineTable
    from app.settings import Settings
    from app.telemetry.metrics import Metrics

    table = OfflineTable.load(FEATURE_TABLE)
    users = list(table.rows)[:500]
    # Roomy timeouts here: this measures the lookup, not the fail-fast path.
    settings = Settings(
        feature_table=FEATURE_TABLE,
        redis_url=redis_url,
        memory_max_age_seconds=0,
        redis_timeout_ms=40,
        redis_connect_timeout_ms=40,
    )
    server = build_feature_server(settings, Metrics(), table.columns)
    assert server.redis is not None
    for user in users:  # compute and write back
        await server.get(user)
    await asyncio.sleep(0.2)
    redis = server.redis
    samples = []
    misses = 0
    for i in range(n):
        t0 = time.perf_counter()
        found = await redis.get(users[i % len(users)])
        samples.append(time.perf_counter() - t0)
        misses += found is None
    await server.close()

    memory = build_feature_server(Settings(feature_table=FEATURE_TABLE), Metrics(), table.columns)
    for user in users:
        await memory.get(user)
    t0 = time.perf_counter()
    for i in range(n * 10):
        await memory.get(users[i % len(users)])
    memory_us = (time.perf_counter() - t0) / (n * 10) * 1e6
    await memory.close()
    return {
        "memory_hit_us": memory_us,
        "redis_p50_ms": statistics.median(samples) * 1000,
        "redis_p99_ms": _percentile(samples, 0.99) * 1000,
        "redis_misses": misses,
    }


def checks(results: Results, timings: dict[str, float]) -> list[Check]:
    def figure(name: str, concurrency: int, attr: str) -> float | None:
        s = results.summary(name, concurrency)
        return float(getattr(s, attr)) if s is not None else None

    low = min(results.plan.concurrency)
    high = max(results.plan.concurrency)
    p50 = figure("memory", low, "p50_ms")
    share = timings["memory_hit_us"] / 1000 / p50 * 100 if p50 else None
    healthy, down = figure("redis", high, "rps"), figure("redis-down", high, "rps")
    down_summary = results.summary("redis-down", high)
    failures = (down_summary.non2xx + down_summary.errors) if down_summary else None
    return [
        Check(
            f"memory-tier hit ÷ /predict p50 at C={low}",
            share,
            5.0,
            False,
            " %",
            f"{timings['memory_hit_us']:.1f} µs per hit",
        ),
        Check("Redis-tier lookup p99 (in-process GET, loopback)", timings["redis_p99_ms"], 1.0, False, " ms"),
        Check(
            f"Redis killed: req/s ÷ healthy Redis at C={high}",
            down / healthy if down and healthy else None,
            0.9,
            True,
        ),
        Check(f"Redis killed: non-2xx + socket errors at C={high}", failures, 0, False),
        Check(
            f"Redis frozen: /predict p99 at C={high}",
            figure("redis-frozen", high, "p99_ms"),
            REDIS_TIMEOUT_MS + 5,
            False,
            " ms",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.features", description=__doc__)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION") or 5))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS") or 3))
    parser.add_argument("--warmup", type=int, default=int(os.environ.get("BENCH_WARMUP") or 1))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not MANIFEST.is_file():
        print(f"no model at {MANIFEST}; run `make models` first", file=sys.stderr)
        return 1
    plan = Plan(
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        duration_s=args.duration,
        rounds=args.rounds,
        warmup_s=args.warmup,
    )
    bodies, source = predict_bodies()
    common = {
        "MODELSERVE_REDIS_TIMEOUT_MS": str(REDIS_TIMEOUT_MS),
        "MODELSERVE_REDIS_CONNECT_TIMEOUT_MS": str(REDIS_TIMEOUT_MS),
    }
    redis_only = {**common, "MODELSERVE_MEMORY_MAX_AGE_SECONDS": "0"}
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is missing (make system-deps)")
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp, contextlib.ExitStack() as stack:
        healthy, frozen, dead = (stack.enter_context(RedisServer(Path(tmp))) for _ in range(3))
        dead.stop()
        frozen.freeze()
        timings = uvloop.run(tier_timings(healthy.url))  # the loop the service runs on
        scenarios = [
            service_scenario("memory", bodies),
            service_scenario("redis", bodies, {**redis_only, "MODELSERVE_REDIS_URL": healthy.url}),
            service_scenario("redis-down", bodies, {**redis_only, "MODELSERVE_REDIS_URL": dead.url}),
            service_scenario("redis-frozen", bodies, {**redis_only, "MODELSERVE_REDIS_URL": frozen.url}),
        ]
        results = run_bench(scenarios, plan, baseline="redis")
    notes = [
        f"Bodies: {source}. Redis timeouts {REDIS_TIMEOUT_MS:g} ms (connect and read); "
        "`redis*` scenarios turn the memory tier off so every lookup reaches Redis (or its failure path).",
        f"In-process: memory hit {timings['memory_hit_us']:.1f} µs; Redis GET p50 "
        f"{timings['redis_p50_ms']:.3f} ms, p99 {timings['redis_p99_ms']:.3f} ms "
        f"({timings['redis_misses']:.0f} misses of 5000).",
    ]
    report = render_report(results, checks(results, timings), notes)
    print(report)
    write_report(report, results, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
