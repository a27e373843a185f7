"""Training/serving skew check: training and serving compute the same outputs from the same inputs.

Over an edge-case corpus, the training pipeline (``pipeline.joblib`` on a
pandas frame with the training dtypes) and the served path (HTTP → decoder →
feature tier → ONNX) must give the same labels and probabilities, and the feed
the server builds must match the training frame column by column.

Tolerance: probabilities agree within ``PROB_TOL`` = 1e-5 absolute. ONNX runs
the pipeline in float32 while scikit-learn runs float64; on this data the
difference is ~1e-7 (summed tree leaves and a logistic in float32), so 1e-5
leaves two orders of magnitude of headroom while any real transform skew
(a wrong scaling, a dropped one-hot column, a null imputed differently) moves
probabilities by far more. Labels must be equal except where the probability
is within ``PROB_TOL`` of the 0.5 decision threshold.

Models of the other tasks (``TestSkewPerTask``, published with
``app.publish``: multiclass with string labels, regression) are held to the
same corpus idea on their own inputs: every class probability within
``PROB_TOL``, the label equal unless the top two probabilities are within
``PROB_TOL`` of each other, regression values within ``REL_TOL`` relative.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.main import create_app
from app.model.repository import Repository
from app.model.runtime import OnnxModel
from app.training.data import model_frame
from tests.support.task_models import TaskModels
from tests.support.workspace import manifest, serving

PROB_TOL = 1e-5
REL_TOL = 1e-5
VERSIONS = ["v1", "v2", "v3"]


def corpus(users: pd.DataFrame) -> list[dict[str, Any]]:
    """Request bodies covering nulls, unknown categories, extremes and every known category."""
    picks: list[str] = []
    for col in ("age", "income", "days_since_signup"):
        picks += [users.loc[users[col].idxmin(), "user_id"], users.loc[users[col].idxmax(), "user_id"]]
    for _, group in users.groupby("country"):  # every known store category
        picks.append(group["user_id"].iloc[0])
    base = {"amount": 25.0, "device": "ios", "score": 0.5, "first_purchase": False}
    variants: list[dict[str, Any]] = []
    for device, score, first in itertools.product(
        ["ios", "android", "web", "smart-tv", ""], [None, 0.0, 0.37, 1.0], [True, False]
    ):
        variants.append({**base, "device": device, "score": score, "first_purchase": first})
    for amount in [0.0, 0.01, 1e-9, 3.5, 999.99, 1e6, 1e12, -5.0, 17]:
        variants.append({**base, "amount": amount})
    for score in [-1.0, 2.0, 1e-30]:
        variants.append({**base, "score": score})
    bodies = []
    for i, feats in enumerate(variants):
        bodies.append({"user_id": picks[i % len(picks)], "features": feats})
    for uid in picks:
        bodies.append({"user_id": uid, "features": base})
    return bodies


@dataclass
class Mismatch:
    index: int
    what: str


def compare(client: Any, pipeline: Any, version: str, bodies: list[dict], table: dict[str, dict]) -> list[Mismatch]:
    rows = [{**table[b["user_id"]], **b["features"]} for b in bodies]
    frame = model_frame(rows)
    want_p = pipeline.predict_proba(frame)[:, 1]
    want_label = pipeline.predict(frame)
    r = client.post("/predict/batch", json={"instances": bodies})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    out = []
    for i, (g, p, lab) in enumerate(zip(got, want_p, want_label, strict=True)):
        assert g["model_version"] == version
        if abs(g["probability"] - p) > PROB_TOL:
            out.append(Mismatch(i, f"probability {g['probability']} vs {p}"))
        if g["prediction"] != int(lab) and abs(p - 0.5) > PROB_TOL:
            out.append(Mismatch(i, f"label {g['prediction']} vs {lab}"))
    # Single /predict goes through the same path; check a few to cover it too.
    for i in range(0, len(bodies), 17):
        one = client.post("/predict", json=bodies[i]).json()
        if abs(one["probability"] - want_p[i]) > PROB_TOL:
            out.append(Mismatch(i, f"/predict probability {one['probability']} vs {want_p[i]}"))
    return out


def feed_matches_frame(runtime: OnnxModel, rows: list[dict], frame: pd.DataFrame) -> list[str]:
    feeds = runtime.feeds(rows)
    problems = []
    assert list(feeds) == list(frame.columns), "feed order differs from the training frame"
    for col in frame.columns:
        served = feeds[col][:, 0]
        trained = frame[col].to_numpy()
        if served.dtype == object:
            if list(served) != [str(v) for v in trained]:
                problems.append(col)
        else:
            t = pd.to_numeric(pd.Series(trained), errors="coerce").to_numpy(dtype=np.float64).astype(np.float32)
            if not np.array_equal(served, t, equal_nan=True):
                problems.append(col)
    return problems


@pytest.fixture(scope="module")
def table(trained) -> dict[str, dict]:
    df = pd.read_parquet(trained.feature_table)
    return {r["user_id"]: {k: v for k, v in r.items() if k != "user_id"} for r in df.to_dict("records")}


@pytest.fixture(scope="module")
def bodies(trained) -> list[dict]:
    return corpus(pd.read_parquet(trained.feature_table))


class SkewedOnnxModel(OnnxModel):
    """Test-only: a serving transform that imputes a missing score as 0 instead of leaving it to the pipeline."""

    def feeds(self, rows):  # type: ignore[override]
        fixed = [{**r, "score": 0.0 if r["score"] is None else r["score"]} for r in rows]
        return super().feeds(fixed)


class TestSkew:
    @pytest.mark.parametrize("version", VERSIONS)
    def test_served_matches_training(self, trained, table, bodies, version):
        """Every corpus row gets the training pipeline's label and probability from the served path."""
        reg = Repository(trained.models_dir)
        pipeline = reg.load_pipeline(version)
        # MODELSERVE_ALIAS names what the service serves; a version name resolves to itself.
        app = create_app(trained.settings(alias=version))
        with serving(app) as client:
            assert client.get("/health/ready").status_code == 200, client.get("/health/ready").text
            assert compare(client, pipeline, version, bodies, table) == []

    @pytest.mark.parametrize("version", VERSIONS)
    def test_feed_matches_training_frame(self, trained, table, bodies, version):
        """The tensors the server builds equal the training frame column by column (float32, NaN for null)."""
        manifest = Repository(trained.models_dir).verify(version)
        runtime = OnnxModel.from_manifest(trained.models_dir / version / "model.onnx", manifest)
        rows = [{**table[b["user_id"]], **b["features"]} for b in bodies]
        assert feed_matches_frame(runtime, rows, model_frame(rows)) == []

    @pytest.mark.parametrize("version", VERSIONS)
    def test_one_row_feed_matches_batch_feed(self, trained, table, bodies, version):
        """A single row's tensors (built on their own short path) equal that row's in a batch's tensors."""
        manifest = Repository(trained.models_dir).verify(version)
        runtime = OnnxModel.from_manifest(trained.models_dir / version / "model.onnx", manifest)
        rows = [{**table[b["user_id"]], **b["features"]} for b in bodies]
        batch = runtime.feeds(rows)
        for i, row in enumerate(rows):
            for col, one in runtime.feeds([row]).items():
                assert one.shape == (1, 1) and one.dtype == batch[col].dtype, col
                assert np.array_equal(one[0], batch[col][i], equal_nan=one.dtype != object), (i, col)

    def test_sample_row_resolves_from_request(self, trained, table):
        """The manifest sample's request resolves, through the feature table, to its recorded row."""
        sample = manifest(trained)["sample"]
        row = {**table[sample["request"]["user_id"]], **sample["request"]["features"]}
        assert row.keys() == sample["row"].keys()
        for k, v in sample["row"].items():
            assert row[k] == v or (isinstance(v, float) and math.isclose(row[k], v, rel_tol=1e-12)), k

    def test_skewed_transform_is_caught(self, trained, table, bodies):
        """A serving transform that differs from training (null score → 0) makes the check fail."""
        reg = Repository(trained.models_dir)
        pipeline = reg.load_pipeline("v2")
        app = create_app(trained.settings(selfcheck_tolerance=1.0))
        with serving(app) as client:
            model = app.state.container.pool.get("production")
            model.runtime = SkewedOnnxModel.from_manifest(trained.models_dir / "v2" / "model.onnx", model.manifest)
            mismatches = compare(client, pipeline, "v2", bodies, table)
        nulls = {i for i, b in enumerate(bodies) if b["features"]["score"] is None}
        assert mismatches, "the skewed transform went unnoticed"
        assert {m.index for m in mismatches} <= nulls
        rows = [{**table[b["user_id"]], **b["features"]} for b in bodies]
        assert feed_matches_frame(model.runtime, rows, model_frame(rows)) == ["score"]


def task_corpus(task_models: TaskModels) -> list[dict[str, Any]]:
    """Bodies for the published models: nulls, an unknown and every known plan, extremes, both bools."""
    base = task_models.bodies(1)[0]["features"]
    variants: list[dict[str, Any]] = []
    for plan, score, mobile in itertools.product(
        ["basic", "pro", "team", "enterprise", ""], [None, 0.0, 0.61, 1.0], [True, False]
    ):
        variants.append({**base, "plan": plan, "score": score, "mobile": mobile})
    for age in [0, 18, 79, 120, -3]:
        variants.append({**base, "age": age})
    for income in [0.0, 1.5, 45_000.0, 1e6, 1e9]:
        variants.append({**base, "income": income})
    variants += [b["features"] for b in task_models.bodies(40)]
    return [{"features": f} for f in variants]


def task_frame(bodies: list[dict[str, Any]]) -> pd.DataFrame:
    """The frame the data scientist's pipeline takes (training dtypes, NaN for null, the dropped id)."""
    rows = [b["features"] for b in bodies]
    return pd.DataFrame(
        {
            "user_id": [f"u-{i}" for i in range(len(rows))],
            "age": np.array([r["age"] for r in rows], dtype=np.int64),
            "income": np.array([r["income"] for r in rows], dtype=np.float64),
            "plan": pd.Series([r["plan"] for r in rows], dtype=object),
            "score": np.array([np.nan if r["score"] is None else r["score"] for r in rows], dtype=np.float64),
            "mobile": np.array([r["mobile"] for r in rows], dtype=bool),
        }
    )


class TestSkewPerTask:
    @pytest.mark.parametrize("version", ["m1", "r1"], ids=["multiclass", "regression"])
    def test_served_matches_pipeline(self, task_models, tmp_path, version):
        """Every corpus row gets the published pipeline's answer from /predict/batch and /predict."""
        bodies = task_corpus(task_models)
        pipeline = task_models.pipelines[version]
        frame = task_frame(bodies)
        models = task_models.workspace(tmp_path, version)
        with serving(create_app(task_models.settings(models))) as client:
            r = client.post("/predict/batch", json={"instances": bodies})
            assert r.status_code == 200, r.text
            got = r.json()["predictions"]
            got_one = [client.post("/predict", json=bodies[i]).json() for i in range(0, len(bodies), 7)]
        mismatches = []
        if version == "r1":
            want = pipeline.predict(frame)
            for i, g in enumerate(got):
                if not math.isclose(g["prediction"], want[i], rel_tol=REL_TOL, abs_tol=1e-9):
                    mismatches.append((i, g["prediction"], want[i]))
            for j, g in enumerate(got_one):
                if not math.isclose(g["prediction"], want[7 * j], rel_tol=REL_TOL, abs_tol=1e-9):
                    mismatches.append((7 * j, g["prediction"], want[7 * j]))
            assert mismatches == []
            return
        probs = pipeline.predict_proba(frame)
        labels = pipeline.predict(frame)
        for i, g in enumerate(got):
            served = np.array(list(g["probabilities"].values()))
            if np.abs(served - probs[i]).max() > PROB_TOL:
                mismatches.append((i, "probabilities", served, probs[i]))
            top2 = np.sort(probs[i])[-2:]
            if g["prediction"] != labels[i] and top2[1] - top2[0] > PROB_TOL:
                mismatches.append((i, "label", g["prediction"], labels[i]))
        for j, g in enumerate(got_one):
            if g["probabilities"] != pytest.approx(got[7 * j]["probabilities"], abs=1e-6):
                mismatches.append((7 * j, "/predict", g["probabilities"], got[7 * j]["probabilities"]))
        assert mismatches == []
