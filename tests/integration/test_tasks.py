"""Every serving path answers published multiclass and regression models as their own pipelines do.

Models come from ``tests.support.task_models`` (``m1``/``m2`` multiclass with
string labels, ``r1`` regression), published with ``app.publish.publish``.
Tolerances: 1e-4 absolute on probabilities, 1e-4 relative on regression
values (ONNX computes in float32, scikit-learn in float64).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.errors import ArtifactError
from app.jobs.batch import BatchOptions, run_batch
from app.jobs.drift import PREDICTION, compute_drift
from app.jobs.shadow_report import compute_shadow_report
from app.main import create_app
from app.model.pool import ModelPool
from app.model.repository import Repository
from app.telemetry.log_lines import PREDICTION_FIELDS
from harness import ServerProcess
from tests.integration.test_api import metric_value
from tests.integration.test_rollout_api import wait_for
from tests.support.task_models import REQUEST_FEATURES, TaskModels
from tests.support.workspace import serving

PROB_TOL = 1e-4
REL_TOL = 1e-4
CLASSES = ["core", "gold", "young"]


def assert_answers(task_models: TaskModels, version: str, answers: list[dict[str, Any]]) -> None:
    """Answers of /predict shape, one per held-out row in order, equal the pipeline's own."""
    labels, probs = task_models.expected(version, len(answers))
    for i, a in enumerate(answers):
        assert a["model_version"] == version
        if version == "r1":
            assert set(a) == {"request_id", "model_version", "prediction"}
            assert isinstance(a["prediction"], float)
            assert a["prediction"] == pytest.approx(float(labels[i]), rel=REL_TOL)
            continue
        assert set(a) == {"request_id", "model_version", "prediction", "probability", "probabilities"}
        assert a["prediction"] == labels[i]
        assert list(a["probabilities"]) == CLASSES
        assert list(a["probabilities"].values()) == pytest.approx(list(probs[i]), abs=PROB_TOL)
        assert a["probability"] == a["probabilities"][a["prediction"]]


@pytest.fixture(params=["m1", "r1"], ids=["multiclass", "regression"])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestPredict:
    def test_predict(self, task_models, tmp_path, version):
        """/predict answers each held-out row with the task's fields and the pipeline's values."""
        models = task_models.workspace(tmp_path, version)
        with serving(create_app(task_models.settings(models))) as c:
            answers = []
            for body in task_models.bodies(30):
                r = c.post("/predict", json=body)
                assert r.status_code == 200, r.text
                answers.append(r.json())
        assert [a["request_id"] for a in answers] == [f"t-{i}" for i in range(30)]
        assert_answers(task_models, version, answers)

    def test_predict_batch(self, task_models, tmp_path, version):
        """/predict/batch answers every instance as /predict would, in order."""
        models = task_models.workspace(tmp_path, version)
        bodies = task_models.bodies(30)
        with serving(create_app(task_models.settings(models))) as c:
            r = c.post("/predict/batch", json={"instances": bodies})
        assert r.status_code == 200, r.text
        assert_answers(task_models, version, r.json()["predictions"])

    def test_openapi_answer_schema(self, task_models, tmp_path, version):
        """The OpenAPI answer of /predict is the served model's: class labels and probabilities, or a value."""
        models = task_models.workspace(tmp_path, version)
        with serving(create_app(task_models.settings(models))) as c:
            doc = c.get("/openapi.json").json()
            answer = c.post("/predict", json=task_models.bodies(1)[0]).json()
        ref = doc["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert set(schema["required"]) == set(answer)
        if version == "r1":
            assert schema["properties"]["prediction"] == {"type": "number"}
        else:
            assert schema["properties"]["prediction"]["enum"] == CLASSES
            assert schema["properties"]["probabilities"]["required"] == CLASSES


class TestSelfCheck:
    @pytest.mark.parametrize(
        ("version", "change", "loads"),
        [
            ("m1", lambda e: {**e, "probabilities": [p + 2e-4 for p in e["probabilities"]]}, False),
            ("m1", lambda e: {**e, "label": "gold" if e["label"] != "gold" else "core"}, False),
            ("m1", lambda e: {**e, "probabilities": [p + 5e-5 for p in e["probabilities"]]}, True),
            ("r1", lambda e: {"prediction": e["prediction"] * (1 + 1e-3)}, False),
            ("r1", lambda e: {"prediction": e["prediction"] * (1 + 1e-5)}, True),
        ],
        ids=["multiclass-prob", "multiclass-label", "multiclass-noise", "regression-off", "regression-noise"],
    )
    def test_sample_expected_per_task(self, task_models, tmp_path, version, change, loads):
        """The warm-up self-check holds every class probability within 1e-4 absolute and a value within
        1e-4 relative; a different label or anything further is refused."""
        models = task_models.workspace(tmp_path, version)
        path = models / version / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["sample"]["expected"] = change(manifest["sample"]["expected"])
        path.write_text(json.dumps(manifest))  # manifest.json is not among the checksummed files
        pool = ModelPool(Repository(models), warmup_iterations=1)
        if loads:
            pool.load(version)
        else:
            with pytest.raises(ArtifactError, match="self-check failed"):
                pool.load(version)


class TestV2:
    def test_metadata(self, task_models, tmp_path, version):
        """Metadata lists the task's outputs: BYTES labels and class names for multiclass, one FP32 for regression."""
        models = task_models.workspace(tmp_path, version)
        with serving(create_app(task_models.settings(models))) as c:
            meta = c.get("/v2/models/modelserve").json()
        if version == "r1":
            assert meta["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [-1]}]
            assert meta["parameters"]["task"] == "regression" and meta["parameters"]["classes"] is None
        else:
            assert meta["outputs"] == [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "probability", "datatype": "FP32", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            ]
            assert meta["parameters"]["classes"] == CLASSES

    def test_infer_json(self, task_models, tmp_path, version):
        """A JSON V2 request answers the same numbers as /predict, in the task's output tensors."""
        models = task_models.workspace(tmp_path, version)
        bodies = task_models.bodies(12)
        inputs = v2_inputs(task_models, 12)
        with serving(create_app(task_models.settings(models))) as c:
            want = [c.post("/predict", json=b).json() for b in bodies]
            r = c.post("/v2/models/modelserve/infer", json={"inputs": inputs})
        assert r.status_code == 200, r.text
        outputs = {o["name"]: o for o in r.json()["outputs"]}
        if version == "r1":
            assert list(outputs) == ["prediction"]
            assert outputs["prediction"]["datatype"] == "FP32" and outputs["prediction"]["shape"] == [12]
            assert outputs["prediction"]["data"] == pytest.approx([w["prediction"] for w in want], rel=1e-6)
            return
        assert list(outputs) == ["label", "probability", "probabilities"]
        assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["data"] == [w["prediction"] for w in want]
        # One batched run against one run per row: float32 rounding may differ in the last bits.
        assert outputs["probability"]["data"] == pytest.approx([w["probability"] for w in want], abs=1e-6)
        matrix = outputs["probabilities"]
        assert matrix["shape"] == [12, 3] and matrix["parameters"] == {"classes": CLASSES}
        assert matrix["data"] == pytest.approx([p for w in want for p in w["probabilities"].values()], abs=1e-6)

    def test_unknown_output_names_the_task_outputs(self, task_models, tmp_path):
        """Asking a regression model for ``label`` is a 400 naming the outputs it has."""
        models = task_models.workspace(tmp_path, "r1")
        with serving(create_app(task_models.settings(models))) as c:
            r = c.post(
                "/v2/models/modelserve/infer",
                json={"inputs": v2_inputs(task_models, 1), "outputs": [{"name": "label"}]},
            )
        assert r.status_code == 400 and "label" in r.text and "prediction" in r.text

    def test_tritonclient(self, task_models, tmp_path, version):
        """A real tritonclient call against a real server decodes the task's outputs to the pipeline's answers."""
        httpclient = pytest.importorskip("tritonclient.http")
        models = task_models.workspace(tmp_path, version)
        rows = task_models.holdout(8).copy()
        rows["score"] = rows["score"].fillna(0.5)  # a null cannot travel as FP32
        with ServerProcess(task_models.env(models), tmp_path / "server.log") as srv:
            srv.wait_ready()
            client = httpclient.InferenceServerClient(url=srv.url.removeprefix("http://"))
            try:
                meta = client.get_model_metadata("modelserve")
                inputs = []
                for m in meta["inputs"]:
                    values = rows[m["name"]].to_numpy()
                    if m["datatype"] == "BYTES":
                        array = np.array([str(v).encode() for v in values], dtype=np.object_)
                    else:
                        array = values.astype({"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_}[m["datatype"]])
                    inp = httpclient.InferInput(m["name"], [len(rows)], m["datatype"])
                    inp.set_data_from_numpy(array, binary_data=True)
                    inputs.append(inp)
                result = client.infer("modelserve", inputs)
            finally:
                client.close()
        pipeline = task_models.pipelines[version]
        x = rows.drop(columns=["churned", "segment", "spend"])
        if version == "r1":
            got = result.as_numpy("prediction")
            assert got.shape == (8,)
            assert got.tolist() == pytest.approx(pipeline.predict(x).tolist(), rel=REL_TOL)
            return
        labels = [v.decode() if isinstance(v, bytes) else str(v) for v in result.as_numpy("label").tolist()]
        assert labels == pipeline.predict(x).tolist()
        probs = result.as_numpy("probabilities")
        assert probs.shape == (8, 3)
        assert np.abs(probs - pipeline.predict_proba(x)).max() <= PROB_TOL


class TestLogAndJobs:
    def test_prediction_log_and_drift(self, task_models, tmp_path, version):
        """Log lines carry the task's prediction, a null or label probability and per-class probabilities;
        drift compares the logged prediction with the manifest's reference of that task."""
        models = task_models.workspace(tmp_path, version)
        log_dir = tmp_path / "log"
        bodies = task_models.bodies(60)
        with serving(create_app(task_models.settings(models, log_dir=log_dir))) as c:
            answers = [c.post("/predict", json=b).json() for b in bodies]
        lines = read_log(log_dir)
        predictions = {x["request_id"]: x for x in lines if x["kind"] == "prediction"}
        assert len(predictions) == 60
        for a in answers:
            line = predictions[a["request_id"]]
            assert list(line) == ["kind", *(name for name, _ in PREDICTION_FIELDS)]
            assert line["prediction"] == a["prediction"]
            assert line["probability"] == a.get("probability")
            assert line["probabilities"] == a.get("probabilities")
        report = compute_drift(log_dir, models, None, timedelta(hours=1))
        [row] = [r for r in report.rows if r.name == PREDICTION]
        if version == "r1":
            assert row.dtype == "float" and len(row.labels) >= 5
        else:
            assert row.dtype == "string" and row.labels[:3] == CLASSES
            counts = pd.Series([a["prediction"] for a in answers]).value_counts(normalize=True)
            assert row.actual[:3] == pytest.approx([counts.get(c, 0.0) for c in CLASSES], abs=1e-3)
        assert sum(row.actual) == pytest.approx(1.0, abs=1e-3)

    def test_batch_job(self, task_models, tmp_path, version):
        """The batch job writes the task's answer columns, equal to the pipeline's answers, in input order."""
        models = task_models.workspace(tmp_path, version)
        rows = task_models.holdout(200)
        src = tmp_path / "in.parquet"
        rows[["user_id", *REQUEST_FEATURES]].to_parquet(src)
        out = tmp_path / "out.parquet"
        summary = run_batch(task_models.settings(models), BatchOptions(src, out, chunk_rows=64, progress=False))
        assert summary.rows_out == 200 and summary.rejected == 0
        got = pd.read_parquet(out)
        labels, probs = task_models.expected(version, 200)
        if version == "r1":
            assert "probability" not in got.columns
            assert got["prediction"].tolist() == pytest.approx(labels.tolist(), rel=REL_TOL)
            return
        assert got["prediction"].tolist() == labels.tolist()
        per_class = got[[f"probability_{c}" for c in CLASSES]].to_numpy()
        assert np.abs(per_class - probs).max() <= PROB_TOL
        picked = per_class[np.arange(200), [CLASSES.index(v) for v in got["prediction"]]]
        assert got["probability"].to_numpy() == pytest.approx(picked)


class TestShadow:
    def test_same_task_candidate(self, task_models, tmp_path):
        """A multiclass candidate is compared by largest probability difference and label disagreement,
        and shadow-report reads that back from the log."""
        models = task_models.workspace(tmp_path, "m1", candidate="m2")
        log_dir = tmp_path / "log"
        bodies = task_models.bodies(40)
        app = create_app(task_models.settings(models, log_dir=log_dir))
        with serving(app) as c:
            shadow = app.state.container.rollout.shadow
            answers = [c.post("/predict", json=b).json() for b in bodies]
            wait_for(lambda: shadow.counts["ok"] == 40)
            text = c.get("/metrics").text
        assert shadow.counts["incompatible"] == 0
        m2_labels, m2_probs = task_models.expected("m2", 40)
        disagree = sum(a["prediction"] != m2_labels[i] for i, a in enumerate(answers))
        assert metric_value(text, "modelserve_shadow_label_disagreements_total") == disagree
        by_id = {x["request_id"]: x for x in read_log(log_dir) if x["kind"] == "shadow"}
        for i, a in enumerate(answers):
            line = by_id[a["request_id"]]
            assert line["task"] == "multiclass_classification" and line["shadow_prediction"] == m2_labels[i]
            mine = np.array(list(a["probabilities"].values()))
            assert line["abs_diff"] == pytest.approx(np.abs(mine - m2_probs[i]).max(), abs=PROB_TOL)
        [pair] = compute_shadow_report(log_dir, timedelta(hours=1)).pairs
        assert (pair.primary_version, pair.shadow_version, pair.task) == ("m1", "m2", "multiclass_classification")
        assert pair.ok == 40 and pair.label_disagreement == pytest.approx(disagree / 40)

    def test_regression_candidate_report(self, task_models, tmp_path):
        """Two regression versions compare by |value difference|, with no label disagreement in the report."""
        models = task_models.workspace(tmp_path, "r1", candidate="r2")  # r2 is r1's fit: no difference
        log_dir = tmp_path / "log"
        app = create_app(task_models.settings(models, log_dir=log_dir))
        with serving(app) as c:
            shadow = app.state.container.rollout.shadow
            for b in task_models.bodies(10):
                c.post("/predict", json=b)
            wait_for(lambda: shadow.counts["ok"] == 10)
        [pair] = compute_shadow_report(log_dir, timedelta(hours=1)).pairs
        assert pair.task == "regression" and pair.label_disagreement is None and pair.max_abs_diff == 0.0

    def test_other_task_candidate_refused(self, task_models, tmp_path, caplog):
        """A regression candidate of a multiclass primary never runs: one warning, every request counted."""
        models = task_models.workspace(tmp_path, "m1", candidate="r1")
        app = create_app(task_models.settings(models))
        with caplog.at_level(logging.WARNING, logger="modelserve.rollout"), serving(app) as c:
            shadow = app.state.container.rollout.shadow
            for b in task_models.bodies(15):
                assert c.post("/predict", json=b).status_code == 200
            text = c.get("/metrics").text
        assert shadow.counts["incompatible"] == 15 and shadow.counts["ok"] == shadow.counts["error"] == 0
        assert metric_value(text, "modelserve_shadow_predictions_total", {"outcome": "incompatible"}) == 15
        refusals = [r for r in caplog.records if "shadow refused" in r.getMessage()]
        assert len(refusals) == 1
        assert (
            "r1" in refusals[0].getMessage() and "regression vs multiclass_classification" in refusals[0].getMessage()
        )


def v2_inputs(task_models: TaskModels, n: int) -> list[dict[str, Any]]:
    """V2 JSON input tensors of the first ``n`` held-out rows (nulls where the frame has NaN)."""
    bodies = task_models.bodies(n)
    types = {"age": "INT64", "income": "FP32", "plan": "BYTES", "score": "FP32", "mobile": "BOOL"}
    return [
        {"name": name, "datatype": types[name], "shape": [n], "data": [b["features"][name] for b in bodies]}
        for name in REQUEST_FEATURES
    ]


def read_log(log_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(log_dir.glob("predictions-*.jsonl")) for line in path.open()]
