"""Shadow cost: /predict with the candidate shadowed against the same service without it.

    python -m bench.rollout                          # C=1,64, 3 rounds × 5 s
    python -m bench.rollout --duration 3 --rounds 2
    python -m bench.rollout --log                    # both sides with the prediction log on

Targets (issue: safe rollout): with the shadow on, req/s at C=64 at least
0.85 × shadow off, and p99 at C=1 at most 1.2 × shadow off. Both servers use
the repository's models (``candidate`` must exist; ``make models`` makes it);
``shadow-off`` sets ``MODELSERVE_SHADOW_ENABLED=false``. Without ``--log``,
shadow results go to the ``modelserve.shadow`` logger (one JSON line each),
which is part of the measured cost.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.harness import ROOT, BenchError, Check, Plan, Results, publish, render_report, run_bench
from bench.run import MANIFEST, MODELS_DIR, _exit_on_sigterm, predict_bodies, service_scenario

RESULTS = ROOT / "bench" / "results" / "rollout.md"


def checks(results: Results) -> list[Check]:
    c64 = results.summary("shadow-on", 64)
    c1 = results.summary("shadow-on", 1)
    return [
        Check("shadow on ÷ off req/s at C=64", c64.rps_ratio if c64 else None, 0.85, True),
        Check("shadow on ÷ off p99 at C=1", c1.p99_ratio if c1 else None, 1.2, False),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    p = argparse.ArgumentParser(prog="python -m bench.rollout", description=__doc__)
    p.add_argument("--concurrency", default="1,64")
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--log", action="store_true", help="prediction log on for both sides")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    try:
        if not MANIFEST.is_file() or not (MODELS_DIR / "candidate").is_symlink():
            raise BenchError(f"{MODELS_DIR} needs production and candidate aliases: run `make models` first")
        bodies, source = predict_bodies()
        extra = {"MODELSERVE_LOG_DIR": "{scratch}/log"} if args.log else {}
        scenarios = [
            service_scenario("shadow-off", bodies, {**extra, "MODELSERVE_SHADOW_ENABLED": "false"}),
            service_scenario("shadow-on", bodies, extra),
        ]
        plan = Plan(
            concurrency=tuple(int(c) for c in args.concurrency.split(",")),
            duration_s=args.duration,
            rounds=args.rounds,
            warmup_s=args.warmup,
        )
        print(f"bodies: {source}")
        results = run_bench(scenarios, plan, baseline="shadow-off")
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    notes = [f"Bodies: {source}.", f"Prediction log: {'on' if args.log else 'off (shadow records to the logger)'}."]
    report = render_report(results, checks(results), notes)
    publish(report, results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
