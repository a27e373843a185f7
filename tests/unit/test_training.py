"""Training: synthetic data, reference binning, artifacts, manifests, aliases."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from app.model.reference import PREDICTION_EDGES, categorical_reference, histogram, numeric_reference
from app.model.repository import set_alias, sha256_file
from app.model.runtime import OnnxModel
from app.publish.parity import threshold_ties
from app.training.data import (
    FEATURE_NAMES,
    FEATURES,
    REQUEST_FEATURES,
    STORE_FEATURES,
    generate_events,
    generate_requests,
    generate_users,
    model_frame,
)
from app.training.train import prepare, train
from tests.support.workspace import manifest

SMALL = {"n_users": 300, "n_events": 3000}
VERSIONS = ["v1", "v2", "v3"]
MANIFEST_KEYS = [
    "version",
    "created_at",
    "task",
    "estimator",
    "features",
    "outputs",
    "sample",
    "reference",
    "metrics",
    "parity",
    "calibration",
    "files",
    "libraries",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    written = train(root / "models", root / "data", seed=7, **SMALL)
    assert written == VERSIONS
    return root


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retrained")
    train(root / "models", root / "data", seed=7, **SMALL)
    return root


def feature_table(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "data" / "features.parquet")


def resolve(body: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
    """The model input row a /predict body resolves to, store features from the table."""
    store = table.set_index("user_id").loc[body["user_id"]]
    row = {name: store[name] for name in STORE_FEATURES}
    return {**row, **body["features"]}


class TestData:
    def test_users_have_ids_and_store_features_in_range(self) -> None:
        """The user table holds u-NNNNN ids and plausible store features with exact dtypes."""
        users = generate_users(500, seed=1)
        assert list(users.columns) == ["user_id", *STORE_FEATURES]
        assert users["user_id"].map(lambda u: bool(re.fullmatch(r"u-\d{5}", u))).all()
        assert users["user_id"].is_unique
        assert users["age"].between(18, 90).all() and users["age"].dtype == np.int64
        assert (users["income"] > 0).all() and users["income"].dtype == np.float64
        assert (users["days_since_signup"] >= 0).all() and users["days_since_signup"].dtype == np.int64
        assert set(users["country"]) <= {"US", "GB", "DE", "FR", "IN", "BR"}

    def test_events_join_features_and_label(self) -> None:
        """Events carry every feature in FEATURES order plus a binary label, with about 15% null scores."""
        events = generate_events(generate_users(500, seed=1), n=4000, seed=1)
        assert list(events.columns) == ["user_id", *FEATURE_NAMES, "label"]
        assert set(events["label"].unique()) == {0, 1}
        assert 0.1 < events["score"].isna().mean() < 0.2
        assert events["score"].dropna().between(0, 1).all()
        assert (events["amount"] > 0).all()
        assert set(events["device"]) == {"ios", "android", "web"}

    def test_same_seed_same_data(self) -> None:
        """Users, events and requests are a pure function of the seed."""
        users = generate_users(200, seed=3)
        pd.testing.assert_frame_equal(users, generate_users(200, seed=3))
        pd.testing.assert_frame_equal(generate_events(users, 500, 3), generate_events(users, 500, 3))
        assert generate_requests(50, 3, users) == generate_requests(50, 3, users)
        assert generate_requests(50, 3, users) != generate_requests(50, 4, users)

    def test_requests_use_only_request_features_and_known_users(self) -> None:
        """Every generated body names a known user and exactly the request features, with JSON types."""
        users = generate_users(200, seed=3)
        bodies = generate_requests(300, 9, users)
        known = set(users["user_id"])
        for body in bodies:
            assert set(body) == {"user_id", "features"}
            assert body["user_id"] in known
            features = body["features"]
            assert list(features) == list(REQUEST_FEATURES)
            assert isinstance(features["amount"], float) and features["amount"] > 0
            assert features["device"] in {"ios", "android", "web"}
            assert features["score"] is None or 0.0 <= features["score"] <= 1.0
            assert isinstance(features["first_purchase"], bool)
        assert any(b["features"]["score"] is None for b in bodies)
        json.dumps(bodies)

    def test_shift_changes_only_the_shifted_feature(self) -> None:
        """A shift of amount multiplies every amount and leaves users and other features alone."""
        users = generate_users(200, seed=3)
        base = generate_requests(100, 5, users)
        shifted = generate_requests(100, 5, users, shift={"amount": 3.0})
        for a, b in zip(base, shifted, strict=True):
            assert a["user_id"] == b["user_id"]
            assert b["features"]["amount"] == pytest.approx(3.0 * a["features"]["amount"])
            assert {k: v for k, v in a["features"].items() if k != "amount"} == {
                k: v for k, v in b["features"].items() if k != "amount"
            }

    def test_unknown_shift_is_refused(self) -> None:
        """Shifting a feature that has no shift rule raises ValueError."""
        with pytest.raises(ValueError, match="device"):
            generate_requests(10, 1, generate_users(10, seed=1), shift={"device": 2.0})

    def test_model_frame_orders_and_types_columns(self) -> None:
        """model_frame puts columns in FEATURES order with training dtypes, null scores as NaN."""
        row = {"first_purchase": True, "score": None, "device": "web", "amount": 3.5}
        row |= {"country": "US", "days_since_signup": 4, "income": 1000.0, "age": 30}
        frame = model_frame([row])
        assert list(frame.columns) == list(FEATURE_NAMES)
        assert math.isnan(frame["score"].iloc[0])
        assert frame["score"].dtype == np.float64 and frame["first_purchase"].dtype == bool


class TestReference:
    def test_numeric_bins_are_right_closed(self) -> None:
        """Bin i holds edges[i-1] < x <= edges[i]; nulls only count in null_freq."""
        spec = {"kind": "numeric", "edges": [1.0, 2.0]}
        freqs, null_freq = histogram([0.0, 1.0, 1.5, 2.0, 3.0, None, float("nan"), 2.5], spec)
        assert freqs == [2 / 6, 2 / 6, 2 / 6]
        assert null_freq == 2 / 8

    def test_categorical_counts_bools_and_others(self) -> None:
        """Bools count as "false"/"true"; unknown categories go to other_freq."""
        spec = categorical_reference([True, False, True, None], ["false", "true"])
        assert spec["freqs"] == [1 / 3, 2 / 3] and spec["null_freq"] == 0.25 and spec["other_freq"] == 0.0
        spec = categorical_reference(["a", "b", "zz", "a"], ["a", "b"])
        assert spec["freqs"] == [0.5, 0.25] and spec["other_freq"] == 0.25

    def test_numeric_reference_uses_unique_deciles(self) -> None:
        """Edges are at most nine unique observed deciles and freqs sum to one."""
        spec = numeric_reference(pd.Series([1, 1, 1, 1, 1, 2, 3, 4, 5, 6] * 10))
        assert spec["edges"] == sorted(set(spec["edges"])) and len(spec["edges"]) <= 9
        assert math.isclose(sum(spec["freqs"]), 1.0)
        assert len(spec["freqs"]) == len(spec["edges"]) + 1

    def test_empty_input_gives_zero_frequencies(self) -> None:
        """No values, or only nulls, give all-zero frequencies rather than a division error."""
        assert histogram([], {"kind": "numeric", "edges": [0.5]}) == ([0.0, 0.0], 0.0)
        assert histogram([None], {"kind": "categorical", "categories": ["a"]}) == ([0.0], 1.0)


class TestArtifacts:
    def test_versions_have_their_files(self, trained: Path) -> None:
        """Each version directory holds the model, the pipeline and the manifest, and no temp dirs remain."""
        models = trained / "models"
        for version in VERSIONS:
            assert {p.name for p in (models / version).iterdir()} == {"model.onnx", "pipeline.joblib", "manifest.json"}
        assert not [p for p in models.iterdir() if p.name.startswith(".")]

    def test_sha256s_match_files(self, trained: Path) -> None:
        """The manifest's sha256 of each artifact matches the file on disk."""
        for version in VERSIONS:
            files = manifest(trained, version)["files"]
            assert set(files) == {"model.onnx", "pipeline.joblib"}
            for name, digest in files.items():
                assert sha256_file(trained / "models" / version / name) == digest

    def test_aliases_point_at_v2_and_v3(self, trained: Path) -> None:
        """production and candidate are relative symlinks to v2 and v3."""
        models = trained / "models"
        assert os.readlink(models / "production") == "v2"
        assert os.readlink(models / "candidate") == "v3"

    def test_onnx_graph_has_one_input_per_feature(self, trained: Path) -> None:
        """Inputs are named and typed as the features, [None, 1]; outputs are label and probabilities."""
        graph = OnnxModel(trained / "models" / "v2" / "model.onnx", FEATURES).describe()
        expected = [(f.name, "tensor(string)" if f.dtype == "string" else "tensor(float)") for f in FEATURES]
        assert [(name, kind) for name, kind, _ in graph["inputs"]] == expected
        assert all(shape[1] == 1 for _, _, shape in graph["inputs"])
        assert [(name, kind) for name, kind, _ in graph["outputs"]] == [
            ("label", "tensor(int64)"),
            ("probabilities", "tensor(float)"),
        ]

    def test_feature_table_has_users_and_exact_types(self, trained: Path) -> None:
        """The offline table holds every user with int64/float64/string store columns."""
        import pyarrow.parquet as pq

        schema = pq.read_schema(trained / "data" / "features.parquet")
        assert [(f.name, str(f.type)) for f in schema] == [
            ("user_id", "string"),
            ("age", "int64"),
            ("income", "double"),
            ("days_since_signup", "int64"),
            ("country", "string"),
        ]
        assert len(feature_table(trained)) == SMALL["n_users"]

    @pytest.mark.parametrize("version", VERSIONS)
    def test_onnx_and_joblib_agree(self, trained: Path, version: str) -> None:
        """On 400 generated requests ONNX and the joblib pipeline agree, bar rare split-threshold ties."""
        table = feature_table(trained)
        bodies = generate_requests(400, 11, table)
        frame = model_frame([resolve(b, table) for b in bodies])
        pipeline = joblib.load(trained / "models" / version / "pipeline.joblib")
        _, onnx_positive = OnnxModel(trained / "models" / version / "model.onnx", FEATURES).predict_columns(frame)
        diff = np.abs(onnx_positive - pipeline.predict_proba(frame)[:, 1])
        apart = np.flatnonzero(diff > 1e-5)
        assert len(apart) <= 4
        assert threshold_ties(pipeline, frame.iloc[apart]).all()


class TestManifest:
    @pytest.mark.parametrize("version", VERSIONS)
    def test_structure(self, trained: Path, version: str) -> None:
        """The manifest has exactly the contracted keys, features, outputs and metrics."""
        m = manifest(trained, version)
        assert list(m) == MANIFEST_KEYS
        assert m["version"] == version and m["task"] == "binary_classification"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["created_at"])
        assert m["features"] == [f.model_dump(mode="json") for f in FEATURES]
        assert m["features"][3] == {
            "name": "country",
            "dtype": "string",
            "source": "store",
            "nullable": False,
            "categories": ["BR", "DE", "FR", "GB", "IN", "US"],
        }
        assert m["outputs"] == {
            "label": "label",
            "probabilities": "probabilities",
            "classes": [0, 1],
            "positive_class": 1,
        }
        assert set(m["metrics"]) == {"roc_auc", "accuracy", "log_loss", "brier", "ece", "n_train", "n_holdout"}
        assert m["metrics"]["n_train"] + m["metrics"]["n_holdout"] == SMALL["n_events"]
        assert m["metrics"]["n_holdout"] == SMALL["n_events"] // 5
        assert 0.5 < m["metrics"]["roc_auc"] <= 1.0
        assert set(m["libraries"]) == {"python", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy"}

    def test_estimators(self, trained: Path) -> None:
        """v1 is logistic regression, v2 and v3 gradient boosting."""
        names = [manifest(trained, v)["estimator"] for v in VERSIONS]
        assert names == ["LogisticRegression", "GradientBoostingClassifier", "GradientBoostingClassifier"]

    @pytest.mark.parametrize("version", VERSIONS)
    def test_sample_resolves_through_the_feature_table(self, trained: Path, version: str) -> None:
        """sample.request names a user in the table and sample.row is what it resolves to."""
        sample = manifest(trained, version)["sample"]
        assert set(sample) == {"request", "row", "expected"}
        table = feature_table(trained)
        assert sample["request"]["user_id"] in set(table["user_id"])
        assert list(sample["request"]["features"]) == list(REQUEST_FEATURES)
        assert list(sample["row"]) == list(FEATURE_NAMES)
        resolved = resolve(sample["request"], table)
        assert {k: resolved[k] for k in FEATURE_NAMES} == sample["row"]

    @pytest.mark.parametrize("version", VERSIONS)
    def test_expected_is_the_onnx_output(self, trained: Path, version: str) -> None:
        """sample.expected is the ONNX output for sample.row, and the pipeline agrees within 1e-5."""
        sample = manifest(trained, version)["sample"]
        frame = model_frame([sample["row"]])
        label, positive = OnnxModel(trained / "models" / version / "model.onnx", FEATURES).predict_columns(frame)
        want = int(label[0])
        assert sample["expected"] == {"prediction": want, "label": want, "probability": float(positive[0])}
        pipeline = joblib.load(trained / "models" / version / "pipeline.joblib")
        assert abs(pipeline.predict_proba(frame)[0, 1] - sample["expected"]["probability"]) <= 1e-5

    def test_reference_covers_every_feature_and_the_prediction(self, trained: Path) -> None:
        """Reference specs exist for each feature (bools categorical) and for the prediction, freqs summing to 1."""
        reference = manifest(trained, "v2")["reference"]
        assert list(reference["features"]) == list(FEATURE_NAMES)
        for f in FEATURES:
            spec = reference["features"][f.name]
            if f.dtype in ("int", "float"):
                assert spec["kind"] == "numeric"
                assert len(spec["edges"]) <= 9 and spec["edges"] == sorted(set(spec["edges"]))
                assert len(spec["freqs"]) == len(spec["edges"]) + 1
            else:
                assert spec["kind"] == "categorical"
                expected = ["false", "true"] if f.dtype == "bool" else list(f.categories or ())
                assert spec["categories"] == expected
            assert math.isclose(sum(spec["freqs"]) + spec.get("other_freq", 0.0), 1.0)
        assert 0.1 < reference["features"]["score"]["null_freq"] < 0.2
        prediction = reference["prediction"]
        assert prediction["kind"] == "numeric" and prediction["edges"] == list(PREDICTION_EDGES)
        assert len(prediction["freqs"]) == 10 and math.isclose(sum(prediction["freqs"]), 1.0)

    def test_reference_matches_histogram_of_training_rows(self, trained: Path) -> None:
        """histogram() of the training rows against each stored spec reproduces its frequencies."""
        reference = manifest(trained, "v2")["reference"]["features"]
        rows = prepare(7, SMALL["n_users"], SMALL["n_events"]).train
        for name, spec in reference.items():
            assert histogram(rows[name], spec) == (spec["freqs"], spec["null_freq"])


class TestReproducibility:
    def test_same_seed_same_feature_table(self, trained: Path, retrained: Path) -> None:
        """Two runs with one seed write the same feature table content."""
        pd.testing.assert_frame_equal(feature_table(trained), feature_table(retrained))

    @pytest.mark.parametrize("version", VERSIONS)
    def test_same_seed_same_manifest(self, trained: Path, retrained: Path, version: str) -> None:
        """Two runs with one seed write identical manifests bar created_at and library versions."""
        first, second = manifest(trained, version), manifest(retrained, version)
        for m in (first, second):
            del m["created_at"], m["libraries"]
        assert first == second


class TestRetraining:
    @pytest.fixture
    def models(self, trained: Path, tmp_path: Path) -> Path:
        shutil.copytree(trained, tmp_path, symlinks=True, dirs_exist_ok=True)
        return tmp_path / "models"

    def test_existing_versions_are_kept(self, models: Path) -> None:
        """Without force, existing versions are skipped and their files left untouched."""
        before = {v: sha256_file(models / v / "manifest.json") for v in VERSIONS}
        assert train(models, models.parent / "data", seed=2, **SMALL) == []
        assert {v: sha256_file(models / v / "manifest.json") for v in VERSIONS} == before

    def test_missing_version_is_rebuilt(self, models: Path) -> None:
        """Without force, only a missing version is trained, and it comes back the same."""
        before = manifest(models.parent, "v1")
        shutil.rmtree(models / "v1")
        assert train(models, models.parent / "data", seed=7, **SMALL) == ["v1"]
        after = manifest(models.parent, "v1")
        assert after["files"] == before["files"] and after["sample"] == before["sample"]

    def test_aliases_are_kept_unless_forced(self, models: Path) -> None:
        """A promoted alias survives a plain retrain; force rebuilds everything and resets the aliases."""
        set_alias(models, "production", "v3")
        train(models, models.parent / "data", seed=7, **SMALL)
        assert os.readlink(models / "production") == "v3"
        assert train(models, models.parent / "data", seed=7, force=True, **SMALL) == VERSIONS
        assert os.readlink(models / "production") == "v2"
        assert not [p for p in models.iterdir() if p.name.startswith(".")]
