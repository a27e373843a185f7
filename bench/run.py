"""``make bench``: the service against the floor, with the targets it must meet.

    python -m bench.run                                  # floor vs service, C=1,8,64
    python -m bench.run --only service --concurrency 1,64 --duration 3
    python -m bench.run --subject floor                  # floor vs floor: the harness's own noise

Environment: ``BENCH_ROUNDS`` (default 3), ``BENCH_DURATION`` (seconds per
run, default 5), ``BENCH_WARMUP`` (seconds, default 1). The report is printed
and written to ``bench/results/latest.md`` (raw rounds in ``latest.json``).

To compare another configuration, add one entry to ``catalog()`` and name it
with ``--subject`` (or put it in ``DEFAULT_SUBJECTS``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench.harness import (
    ROOT,
    BenchError,
    Check,
    Plan,
    Results,
    Scenario,
    publish,
    render_report,
    run_bench,
)

BASELINE = "floor"
DEFAULT_SUBJECTS = ("service",)
# The same places the service reads (its settings' defaults, relative to the repository).
MODELS_DIR = ROOT / os.environ.get("MODELSERVE_MODELS_DIR", "models")
MANIFEST = MODELS_DIR / "production" / "manifest.json"
FEATURE_TABLE = ROOT / os.environ.get("MODELSERVE_FEATURE_TABLE", "data/features.parquet")
RESULTS = ROOT / "bench" / "results" / "latest.md"
# Stands in for /predict bodies when there is no model yet; only the floor accepts it.
PLACEHOLDER_BODY = {"user_id": "u-1", "features": {"x": 1.0}}


def floor_scenario(name: str, bodies: Sequence[Any], path: str = "/predict") -> Scenario:
    command = [sys.executable, "-m", "bench.floor", "--port", "{port}", "--path", path]
    return Scenario(name, command, bodies, path=path)


def service_scenario(
    name: str,
    bodies: Sequence[Any],
    env: Mapping[str, str] | None = None,
    path: str = "/predict",
) -> Scenario:
    """``modelserve serve`` with its default settings, changed by ``env`` (``MODELSERVE_*``)."""
    modelserve = Path(sys.executable).parent / "modelserve"
    command = [str(modelserve), "serve", "--host", "127.0.0.1", "--port", "{port}"]
    # Throughput runs measure the answered path: on a loaded machine C=64 alone can queue past the
    # default queue-time limit, and wrk would count the refusals as requests served
    # (`python -m bench.overload` measures admission control as shipped).
    return Scenario(name, command, bodies, path=path, env={"MODELSERVE_MAX_QUEUE_MS": "60000", **(env or {})})


def catalog(bodies: Sequence[Any]) -> dict[str, Scenario]:
    """Every scenario ``--baseline`` / ``--subject`` can name."""
    from bench.v2 import V2_PATH, v2_bodies  # bench.v2 builds on this module

    return {
        "floor": floor_scenario("floor", bodies),
        "service": service_scenario("service", bodies),
        "service-log": service_scenario("service-log", bodies, {"MODELSERVE_LOG_DIR": "{scratch}/log"}),
        "service-no-shadow": service_scenario("service-no-shadow", bodies, {"MODELSERVE_SHADOW_ENABLED": "false"}),
        # The same rows as one-row V2 infer requests (JSON tensors), shadow on, no log.
        "service-v2": service_scenario("service-v2", v2_bodies(bodies), path=V2_PATH),
        # Traced: export to an OTLP/HTTP receiver at BENCH_OTLP_ENDPOINT (start `python -m bench.otlp_sink` first).
        "service-traced": service_scenario("service-traced", bodies, traced("1.0")),
        "service-traced-1pct": service_scenario("service-traced-1pct", bodies, traced("0.01")),
    }


def traced(ratio: str) -> dict[str, str]:
    """The standard OTEL_* variables for a service that samples ``ratio`` of its (root) traces."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": os.environ.get("BENCH_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": ratio,
    }


def predict_bodies(n: int = 1000, seed: int = 0) -> tuple[list[Any], str]:
    """Varied /predict bodies from the training data generator, else the manifest's sample."""
    sample = json.loads(MANIFEST.read_text())["sample"]["request"]
    try:
        generate = importlib.import_module("app.training.data").generate_requests
    except (ImportError, AttributeError):
        return [sample], "manifest `sample.request` (one body)"
    try:
        import pandas as pd

        bodies = list(generate(n, seed, pd.read_parquet(FEATURE_TABLE)))
    except Exception as exc:  # a broken generator must not stop the benchmark
        print(f"WARNING generate_requests failed ({exc!r}); using the manifest sample")
        return [sample], "manifest `sample.request` (one body)"
    return bodies, f"{len(bodies)} bodies from `generate_requests(n={n}, seed={seed})`"


def service_checks(results: Results) -> list[Check]:
    """The service's targets; each latency is shown next to the baseline's, to judge a FAIL by."""
    if "service" not in results.names:
        return []
    base = results.baseline

    def figure(name: str | None, concurrency: int, attr: str) -> float | None:
        summary = results.summary(name, concurrency) if name else None
        value = getattr(summary, attr) if summary else None
        return float(value) if value is not None else None

    def beside(value: float | None, unit: str) -> str:
        return f"{base} {value:.2f}{unit}" if base and value is not None else ""

    rss = results.rss_bytes.get("service")
    return [
        Check(f"service ÷ {base or 'baseline'} req/s at C=64", figure("service", 64, "rps_ratio"), 0.5, True),
        Check(
            "service p99 at C=64",
            figure("service", 64, "p99_ms"),
            15.0,
            False,
            " ms",
            beside(figure(base, 64, "p99_ms"), " ms"),
        ),
        Check(
            "service p50 at C=1",
            figure("service", 1, "p50_ms"),
            0.5,
            False,
            " ms",
            beside(figure(base, 1, "p50_ms"), " ms"),
        ),
        Check("service RSS after the run", rss / 1e6 if rss else None, 200.0, False, " MB"),
    ]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise BenchError(f"{name} must be a whole number, got {value!r}") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--baseline", default=BASELINE, help="scenario ratios are taken against")
    parser.add_argument(
        "--subject",
        default=",".join(DEFAULT_SUBJECTS),
        help="scenarios to compare, comma-separated",
    )
    parser.add_argument("--only", help="run only these of baseline and subjects, comma-separated")
    parser.add_argument("--concurrency", default="1,8,64", help="wrk connections, comma-separated")
    parser.add_argument("--duration", type=int, default=_env_int("BENCH_DURATION", 5))
    parser.add_argument("--rounds", type=int, default=_env_int("BENCH_ROUNDS", 3))
    parser.add_argument("--warmup", type=int, default=_env_int("BENCH_WARMUP", 1))
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers, so no server outlives us


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        args = parse_args(argv)
        try:
            concurrency = tuple(int(c) for c in _names(args.concurrency))
        except ValueError:
            raise BenchError(f"--concurrency takes numbers like 1,8,64, not {args.concurrency!r}") from None
        plan = Plan(
            concurrency=concurrency,
            duration_s=args.duration,
            rounds=args.rounds,
            warmup_s=args.warmup,
        )
        if not plan.concurrency or min(plan.concurrency) < 1:
            raise BenchError("--concurrency needs positive numbers")
        if plan.duration_s < 1 or plan.rounds < 1:
            raise BenchError("duration and rounds must be at least 1")

        wanted = [args.baseline, *_names(args.subject)]
        if args.only:
            wanted = [name for name in wanted if name in _names(args.only)] or _names(args.only)

        unknown = [name for name in wanted if name not in catalog(())]
        if unknown:
            raise BenchError(f"unknown scenario {unknown}; known: {', '.join(catalog(()))}")

        if MANIFEST.is_file():
            bodies, source = predict_bodies()
        elif set(wanted) <= {"floor"}:
            bodies, source = [PLACEHOLDER_BODY], "a placeholder body (no model yet)"
        else:
            raise BenchError(f"{MANIFEST} not found: run `make models` first")

        known = catalog(bodies)
        scenarios: list[Scenario] = []
        for name in wanted:
            scenario = known[name]
            if name in (s.name for s in scenarios):  # e.g. floor against floor
                scenario = dataclasses.replace(scenario, name=f"{name}-{len(scenarios) + 1}")
            scenarios.append(scenario)

        print(f"bodies: {source}")
        results = run_bench(scenarios, plan, baseline=args.baseline)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # servers are already stopped by their context managers
        print("bench: interrupted", file=sys.stderr)
        return 130

    report = render_report(results, service_checks(results), [f"Bodies: {source}."])
    publish(report, results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
