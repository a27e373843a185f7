"""``/predict/batch`` against ``/predict``: rows per second through each, in the same run.

    python -m bench.batch                                # 100 rows a request, C=1,8,64, 3 rounds × 5 s
    python -m bench.batch --rows 100 --concurrency 8,64 --duration 3 --rounds 2
    python -m bench.batch --no-log                       # without the prediction log

Two ``modelserve serve`` processes (same settings, same model, one worker
each) are loaded in alternating rounds: ``service`` with /predict bodies and
``service-batch`` with the same rows grouped ``--rows`` to a
``/predict/batch`` request. The target is about what batching is for: a
batch of 100 rows must carry ≥ 25 × the rows per second of one-row requests,
each at the concurrency that suits it best (the best median over ``C``).
Both serve as ``make run`` does, with the prediction log on (each in a
directory of its own) and the shadow on, unless ``--no-log``. Bodies and
environment otherwise as for ``python -m bench.run``; the report goes to
``bench/results/batch.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from bench import paired
from bench.harness import ROOT, BenchError, Check, Results
from bench.paired import Comparison
from bench.run import service_scenario

RESULTS = ROOT / "bench" / "results" / "batch.md"
TARGET = 25.0
"""Batch rows/s ÷ /predict rows/s, each at its best concurrency."""


def batch_bodies(bodies: Sequence[Any], rows: int) -> list[dict[str, Any]]:
    """The /predict bodies grouped ``rows`` to a /predict/batch body (the last group filled from the start)."""
    cycled = list(bodies) * (rows // len(bodies) + 2)
    return [{"instances": cycled[i : i + rows]} for i in range(0, max(len(bodies), rows), rows)]


def best_rows_per_second(results: Results, name: str, rows: int) -> float | None:
    rates = [s.rps for c in results.plan.concurrency if (s := results.summary(name, c)) is not None]
    return max(rates) * rows if rates else None


def checks(results: Results, rows: int) -> list[Check]:
    single = best_rows_per_second(results, "service", 1)
    batch = best_rows_per_second(results, "service-batch", rows)
    ratio = batch / single if batch is not None and single else None
    detail = f"{batch:,.0f} ÷ {single:,.0f} rows/s" if ratio is not None else ""
    return [Check(f"batch of {rows} ÷ /predict rows/s (best C each)", ratio, TARGET, True, "", detail)]


def _compare(args: argparse.Namespace, bodies: list[Any], source: str) -> Comparison:
    if args.rows < 1:
        raise BenchError("--rows must be at least 1")
    env = {} if args.no_log else {"MODELSERVE_LOG_DIR": "{scratch}/log"}
    scenarios = [
        service_scenario("service", bodies, env),
        service_scenario("service-batch", batch_bodies(bodies, args.rows), env, path="/predict/batch"),
    ]
    notes = [
        f"Bodies: {source}; `service-batch` sends the same rows, {args.rows} to a request, to `/predict/batch` "
        f"(its req/s × {args.rows} = rows/s; the ÷ column compares requests, not rows). "
        + ("Prediction log off." if args.no_log else "Prediction log on (`MODELSERVE_LOG_DIR`), as `make run` serves.")
    ]
    return Comparison(scenarios, lambda results: checks(results, args.rows), notes)


def main(argv: Sequence[str] | None = None) -> int:
    def rows(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rows", type=int, default=100, help="rows per /predict/batch request")
        parser.add_argument("--no-log", action="store_true", help="serve without the prediction log")

    return paired.main(
        argv, prog="python -m bench.batch", description=__doc__, output=RESULTS, build=_compare, extra=rows
    )


if __name__ == "__main__":
    sys.exit(main())
