"""V2 infer against /predict: the same rows through both protocols, in the same run.

    python -m bench.v2                                   # C=1,8,64, 3 rounds × 5 s
    python -m bench.v2 --concurrency 8,64 --duration 3 --rounds 2

Two ``modelserve serve`` processes (same settings, same model) are loaded in
alternating rounds: ``service`` with /predict bodies, ``service-v2`` with the
same rows as single-row V2 requests on ``/v2/models/modelserve/infer``. The
``÷ service`` column is the V2 throughput as a share of /predict's. Bodies and
environment as for ``python -m bench.run`` (``MODELSERVE_MODELS_DIR``,
``MODELSERVE_FEATURE_TABLE``, ``BENCH_*``); the report goes to
``bench/results/v2.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from bench import paired
from bench.harness import ROOT, Check, Results
from bench.paired import Comparison
from bench.run import MANIFEST, service_scenario

V2_PATH = "/v2/models/modelserve/infer"
DATATYPE = {"float": "FP32", "int": "INT64", "bool": "BOOL", "string": "BYTES"}
RESULTS = ROOT / "bench" / "results" / "v2.md"
TARGET = 0.75
"""V2 req/s as a share of /predict's at C=64 that we hold ourselves to."""


def v2_body(manifest: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The /predict body as a one-row V2 request (user_id first, then the request features)."""
    inputs = []
    if "user_id" in body:
        inputs.append({"name": "user_id", "datatype": "BYTES", "shape": [1], "data": [body["user_id"]]})
    for f in manifest["features"]:
        if f["source"] == "request":
            value = body["features"][f["name"]]
            inputs.append({"name": f["name"], "datatype": DATATYPE[f["dtype"]], "shape": [1], "data": [value]})
    return {"inputs": inputs}


def v2_bodies(bodies: Sequence[Any]) -> list[dict[str, Any]]:
    """``bodies`` as one-row V2 requests (none without a model: the list is only named then)."""
    if not bodies or not MANIFEST.exists():
        return []
    manifest = json.loads(MANIFEST.read_text())
    return [v2_body(manifest, b) for b in bodies]


def checks(results: Results) -> list[Check]:
    summary = results.summary("service-v2", 64)
    ratio = summary.rps_ratio if summary else None
    return [Check("service-v2 ÷ service req/s at C=64", ratio, TARGET, True)]


def _compare(args: argparse.Namespace, bodies: list[Any], source: str) -> Comparison:
    manifest = json.loads(MANIFEST.read_text())
    scenarios = [
        service_scenario("service", bodies),
        service_scenario("service-v2", [v2_body(manifest, b) for b in bodies], path=V2_PATH),
    ]
    notes = [f"Bodies: {source}; V2 sends the same rows, one per request, to `{V2_PATH}`."]
    return Comparison(scenarios, checks, notes)


def main(argv: Sequence[str] | None = None) -> int:
    return paired.main(argv, prog="python -m bench.v2", description=__doc__, output=RESULTS, build=_compare)


if __name__ == "__main__":
    sys.exit(main())
