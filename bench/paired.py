"""Two ``modelserve serve`` configurations side by side: the command line both ``bench.v2`` and ``bench.batch`` share.

Each builds its scenarios (the first is the baseline), its checks and its
notes from the parsed arguments and the /predict bodies; this runs them in
alternating rounds (``bench.rounds``) and publishes the report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import BenchError, Check, Plan, Results, Scenario, publish, render_report, run_bench
from bench.run import MANIFEST, predict_bodies


@dataclass
class Comparison:
    scenarios: list[Scenario]
    checks: Callable[[Results], list[Check]]
    notes: list[str] = field(default_factory=list)


def main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str | None,
    output: Path,
    build: Callable[[argparse.Namespace, list[Any], str], Comparison],
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output", type=Path, default=output)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    try:
        if not MANIFEST.exists():
            raise BenchError(f"{MANIFEST} not found: run `make models` first")
        bodies, source = predict_bodies()
        plan = Plan(
            concurrency=tuple(int(c) for c in args.concurrency.split(",")),
            duration_s=args.duration,
            rounds=args.rounds,
            warmup_s=args.warmup,
        )
        comparison = build(args, bodies, source)
        print(f"bodies: {source}")
        results = run_bench(comparison.scenarios, plan, baseline=comparison.scenarios[0].name)
    except (BenchError, ValueError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    report = render_report(results, comparison.checks(results), comparison.notes)
    publish(report, results, args.output)
    return 0
