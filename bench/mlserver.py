"""modelserve against Seldon MLServer serving the same pipeline, in the same run.

    python3 -m venv /tmp/mlserver && /tmp/mlserver/bin/pip install mlserver mlserver-sklearn 'uvloop<0.22' \\
        scikit-learn==<the version in requirements/> joblib
    python -m bench.mlserver --mlserver /tmp/mlserver/bin/mlserver --concurrency 1,64 --duration 5 --rounds 2

MLServer is not a dependency of the project and this comparison is not part
of ``make bench``: it needs MLServer in an environment of its own (its pins
clash with ours). The peer serves the production version's own scikit-learn
pipeline (``pipeline.joblib`` in the artifact, the one exported to ONNX) with
``mlserver_sklearn.SKLearnModel`` and ``parallel_workers: 0`` (inference in
the server's process, as modelserve runs it; MLServer's worker pool would add
a process hop per request). Both servers are pinned to the same core and
loaded alike by wrk from the other (``bench.rounds``).

The rows are the ones ``python -m bench.run`` sends. MLServer has no feature
store, so its requests carry every feature: the request features of each
/predict body plus the user's stored ones from the feature table, one V2
input per column with ``content_type: pd`` (the runtime builds the
DataFrame the pipeline was trained on). A missing nullable value is sent as
the column's training median: MLServer's JSON tensors cannot hold ``null``.
modelserve runs as ``make run`` starts it (shadow on, no prediction log) and
with the prediction log on; each is reported as a multiple of MLServer's
req/s (target ≥ 15 ×).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import paired
from bench.harness import ROOT, BenchError, Check, Results, Scenario, free_port
from bench.paired import Comparison
from bench.run import FEATURE_TABLE, MANIFEST, MODELS_DIR, service_scenario

PEER = "mlserver"
MODEL_NAME = "peer"
TARGET = 15.0
RESULTS = ROOT / "bench" / "results" / "mlserver.md"
DATATYPE = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}


def peer_bodies(manifest: dict[str, Any], bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each /predict body as a one-row V2 request carrying every feature (store ones looked up)."""
    import duckdb

    store = [f["name"] for f in manifest["features"] if f["source"] == "store"]
    rows = duckdb.sql(f"SELECT user_id, {', '.join(store)} FROM read_parquet('{FEATURE_TABLE}')").fetchall()
    stored = {row[0]: dict(zip(store, row[1:], strict=True)) for row in rows}
    out = []
    for body in bodies:
        values = {**stored.get(body.get("user_id"), {}), **body["features"]}
        inputs = []
        for f in manifest["features"]:
            value = values.get(f["name"])
            if value is None:
                value = _fill(manifest, f["name"])
            inputs.append({"name": f["name"], "datatype": DATATYPE[f["dtype"]], "shape": [1], "data": [value]})
        out.append({"inputs": inputs, "parameters": {"content_type": "pd"}})
    return out


def _fill(manifest: dict[str, Any], name: str) -> Any:
    """The training median of a numeric feature: the middle decile edge of its reference histogram."""
    edges = manifest.get("reference", {}).get("features", {}).get(name, {}).get("edges") or [0.0]
    return edges[len(edges) // 2]


def peer_scenario(mlserver: str, model_dir: Path, bodies: list[dict[str, Any]]) -> Scenario:
    return Scenario(
        PEER,
        [mlserver, "start", str(model_dir)],
        bodies,
        path=f"/v2/models/{MODEL_NAME}/infer",
        ready_path=f"/v2/models/{MODEL_NAME}/ready",
        env={
            "MLSERVER_HTTP_PORT": "{port}",
            "MLSERVER_GRPC_PORT": str(free_port()),
            "MLSERVER_METRICS_PORT": str(free_port()),
            "MLSERVER_PARALLEL_WORKERS": "0",
            "MLSERVER_LOGGING_LEVEL": "WARNING",
        },
    )


def write_model_dir(directory: Path, pipeline: Path) -> Path:
    """An MLServer model repository holding ``pipeline`` (a joblib file) as the model ``peer``."""
    shutil.copy(pipeline, directory / "model.joblib")
    settings = {"parallel_workers": 0}
    model = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    (directory / "settings.json").write_text(json.dumps(settings))
    (directory / "model-settings.json").write_text(json.dumps(model))
    return directory


def checks(results: Results) -> list[Check]:
    out = []
    for name in ("service", "service-log"):
        for concurrency in results.plan.concurrency:
            summary = results.summary(name, concurrency)
            ratio = summary.rps_ratio if summary else None
            out.append(Check(f"{name} ÷ {PEER} req/s at C={concurrency}", ratio, TARGET, True))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="bench-mlserver-"))

    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--mlserver",
            default=os.environ.get("MLSERVER", "mlserver"),
            help="the mlserver executable (of its own environment); $MLSERVER",
        )

    def build(args: argparse.Namespace, bodies: list[Any], source: str) -> Comparison:
        mlserver = shutil.which(args.mlserver)
        if mlserver is None:
            raise BenchError(f"{args.mlserver!r} not found: install MLServer as this module's docstring says")
        manifest = json.loads(MANIFEST.read_text())
        pipeline = MODELS_DIR / "production" / "pipeline.joblib"
        if not pipeline.is_file():
            raise BenchError(f"{pipeline} not found: the peer serves the production version's pipeline")
        scenarios = [
            peer_scenario(mlserver, write_model_dir(scratch, pipeline), peer_bodies(manifest, bodies)),
            service_scenario("service", bodies),
            service_scenario("service-log", bodies, {"MODELSERVE_LOG_DIR": "{scratch}/log"}),
        ]
        notes = [
            f"Bodies: {source}; MLServer gets the same rows with the stored features added "
            f"(version {manifest['version']}, {manifest.get('estimator', '')}).",
        ]
        return Comparison(scenarios, checks, notes)

    try:
        return paired.main(
            argv, prog="python -m bench.mlserver", description=__doc__, output=RESULTS, build=build, extra=extra
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
