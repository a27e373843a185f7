"""``publish``: a user's fitted pipeline becomes a version the service verifies, loads and answers with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from lightgbm import LGBMClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from xgboost import XGBClassifier, XGBRegressor

from app.main import create_app
from app.model.pool import ModelPool
from app.model.repository import Repository, sha256_file
from app.model.runtime import OnnxModel
from app.publish import publish
from app.settings import Settings
from tests.support import publish_data as data
from tests.support.workspace import serving

MODELSERVE = Path(sys.executable).parent / "modelserve"


@pytest.fixture(scope="module")
def df():
    return data.frame()


@pytest.fixture(scope="module")
def hgb(df):
    return data.fit(HistGradientBoostingClassifier(max_iter=40, random_state=0), "churned", df, scale=False)


@pytest.fixture
def files(tmp_path, df):
    """The user's files: held-out rows as Parquet and the feature table."""
    holdout = tmp_path / "holdout.parquet"
    data.holdout(df).to_parquet(holdout)
    table = tmp_path / "features.parquet"
    data.feature_table(df).to_parquet(table)
    return holdout, table


def manifest_of(models: Path, version: str) -> dict:
    return json.loads((models / version / "manifest.json").read_text())


def assert_artifacts(models: Path, version: str) -> dict:
    """The three files exist, the checksums match, and the repository verifies them."""
    m = manifest_of(models, version)
    for name in ("model.onnx", "pipeline.joblib"):
        assert m["files"][name] == sha256_file(models / version / name)
    Repository(models).verify(version)
    assert not [p for p in models.iterdir() if p.name.startswith(".tmp-")]
    return m


def self_check(models: Path, version: str) -> None:
    """The sample row, run as the service runs it, gives the manifest's expected answer."""
    m = Repository(models).verify(version)
    runtime = OnnxModel.from_manifest(models / version / "model.onnx", m)
    got = runtime.scores(runtime.feeds([m.sample.row]))
    if m.task == "regression":
        assert float(got.values[0]) == pytest.approx(m.sample.expected["prediction"], abs=1e-6)
    else:
        assert got.labels[0] == m.sample.expected["label"]
        assert list(got.probabilities[0]) == pytest.approx(m.sample.expected["probabilities"], abs=1e-6)


class TestBinary:
    def test_hist_gradient_boosting(self, tmp_path, df, hgb, files):
        """A HistGradientBoosting pipeline with a nullable number and a string publishes, verifies and loads."""
        holdout, _ = files
        path = tmp_path / "pipeline.joblib"
        joblib.dump(hgb, path)
        models = tmp_path / "models"
        summary = publish(path, data=holdout, target="churned", version="v4", id_column="user_id", models_dir=models)
        assert summary.task == "binary_classification" and summary.classes == [0, 1]
        by_name = {f.name: f for f in summary.features}
        assert list(by_name) == ["age", "income", "plan", "score", "mobile"]  # user_id is dropped by the pipeline
        assert (by_name["age"].dtype, by_name["mobile"].dtype, by_name["plan"].dtype) == ("int", "bool", "string")
        assert by_name["score"].nullable and not by_name["income"].nullable
        assert by_name["plan"].categories == ("basic", "pro", "team")
        assert summary.parity.rows == len(data.holdout(df))
        assert summary.parity.max_abs_prob_diff <= 1e-4 and summary.parity.label_agreement == 1.0
        assert set(summary.metrics) >= {"roc_auc", "log_loss"} and summary.metrics["roc_auc"] > 0.6
        assert "parity (ONNX vs pipeline)" in str(summary)
        m = assert_artifacts(models, "v4")
        assert m["parity"]["rows"] == summary.parity.rows and m["metrics"] == summary.metrics
        assert m["outputs"] == {
            "label": "label",
            "probabilities": "probabilities",
            "classes": [0, 1],
            "positive_class": 1,
        }  # a null output field with a null default (prediction) is left out: binary outputs keep their shape
        assert m["sample"]["row"]["score"] is None  # the sample exercises the null path
        model = ModelPool(Repository(models), warmup_iterations=1).load("v4")  # the service's self-check
        rows = data.holdout(df).head(50)
        _, positive = model.runtime.predict(
            [{f.name: _json(rows.iloc[i][f.name]) for f in summary.features} for i in range(50)]
        )
        assert np.abs(positive - hgb.predict_proba(data.inputs(rows))[:, 1]).max() <= 1e-4

    @pytest.mark.parametrize(
        "estimator",
        [
            XGBClassifier(n_estimators=40, max_depth=3, random_state=0),
            LGBMClassifier(n_estimators=40, num_leaves=8, random_state=0, verbose=-1),
        ],
        ids=["xgboost", "lightgbm"],
    )
    def test_boosters(self, tmp_path, df, files, estimator):
        """XGBoost and LightGBM classifiers convert through onnxmltools and pass the service's self-check."""
        pipeline = data.fit(estimator, "churned", df, scale=False, dense=True)
        models = tmp_path / "models"
        summary = publish(pipeline, data=files[0], target="churned", version="v1", models_dir=models)
        assert summary.parity.max_abs_prob_diff <= 1e-4
        m = assert_artifacts(models, "v1")
        assert m["estimator"] == type(estimator).__name__
        assert type(estimator).__module__.split(".")[0] in m["libraries"] and "onnxmltools" in m["libraries"]
        ModelPool(Repository(models), warmup_iterations=1).load("v1")

    @pytest.mark.parametrize(
        ("estimator", "target"),
        [(XGBClassifier(n_estimators=20, max_depth=3), "churned"), (XGBRegressor(n_estimators=20), "spend")],
        ids=["classifier", "regressor"],
    )
    def test_xgboost_fitted_on_a_frame(self, tmp_path, df, files, estimator, target):
        """An XGBoost estimator fitted on a DataFrame (trees naming columns, not f0, f1…) converts with parity."""
        columns = ["age", "income", "score"]
        train = df.iloc[: data.N_TRAIN]
        estimator.fit(train[columns], train[target])
        assert estimator.get_booster().feature_names == columns
        models = tmp_path / "models"
        summary = publish(estimator, data=files[0], target=target, version="x1", models_dir=models)
        assert [f.name for f in summary.features] == columns
        assert summary.parity.label_agreement in (None, 1.0)
        assert estimator.get_booster().feature_names == columns  # the user's model is left as it was
        assert_artifacts(models, "x1")
        ModelPool(Repository(models), warmup_iterations=1).load("x1")  # the service's self-check


class TestOtherTasks:
    def test_multiclass_string_labels(self, tmp_path, df, files):
        """A multiclass LogisticRegression with string labels keeps classes_ order and string labels."""
        pipeline = data.fit(LogisticRegression(max_iter=500), "segment", df)
        models = tmp_path / "models"
        summary = publish(pipeline, data=files[0], target="segment", version="m1", models_dir=models)
        assert summary.task == "multiclass_classification"
        assert summary.classes == ["core", "gold", "young"] == list(pipeline.classes_)
        assert set(summary.metrics) >= {"accuracy", "macro_f1", "log_loss"}
        m = assert_artifacts(models, "m1")
        assert m["outputs"]["classes"] == ["core", "gold", "young"] and m["outputs"]["positive_class"] is None
        assert m["sample"]["expected"]["label"] in summary.classes
        assert len(m["sample"]["expected"]["probabilities"]) == 3
        assert m["reference"]["prediction"]["kind"] == "categorical"
        self_check(models, "m1")

    def test_regression(self, tmp_path, df, files):
        """A Ridge regression publishes with a prediction output, RMSE/MAE/R² and relative parity."""
        pipeline = data.fit(Ridge(alpha=1.0), "spend", df)
        models = tmp_path / "models"
        summary = publish(pipeline, data=files[0], target="spend", version="r1", task="regression", models_dir=models)
        assert summary.task == "regression" and summary.classes is None
        assert summary.parity.max_rel_diff <= 1e-4 and summary.metrics["r2"] > 0.5
        assert set(summary.metrics) >= {"rmse", "mae", "r2"}
        m = assert_artifacts(models, "r1")
        assert m["outputs"]["prediction"] == "variable" and m["outputs"]["classes"] is None
        assert isinstance(m["sample"]["expected"]["prediction"], float)
        assert m["reference"]["prediction"]["kind"] == "numeric"
        self_check(models, "r1")

    def test_bare_random_forest(self, tmp_path, df, files):
        """A bare RandomForestRegressor (no pipeline, several numeric inputs) converts and keeps parity."""
        columns = ["age", "income", "mobile"]
        train = df.iloc[: data.N_TRAIN]
        forest = RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0).fit(train[columns], train["spend"])
        models = tmp_path / "models"
        summary = publish(forest, data=files[0], target="spend", version="rf", models_dir=models)
        assert [f.name for f in summary.features] == columns
        assert summary.parity.max_rel_diff <= 1e-4
        assert_artifacts(models, "rf")
        self_check(models, "rf")


class TestService:
    def test_store_features_served(self, tmp_path, df, hgb, files):
        """With store features and an alias, the service answers held-out rows as the pipeline does."""
        holdout, table = files
        models = tmp_path / "models"
        summary = publish(
            hgb,
            data=holdout,
            target="churned",
            version="v7",
            store_features=["age", "income"],
            feature_table=table,
            id_column="user_id",
            alias="production",
            models_dir=models,
        )
        assert [f.name for f in summary.features if f.source == "store"] == ["age", "income"]
        assert Repository(models).aliases() == {"production": "v7"}
        assert Repository(models).history()[-1]["to"] == "v7"
        sample = manifest_of(models, "v7")["sample"]
        assert set(sample["request"]["features"]) == {"plan", "score", "mobile"}
        settings = Settings(models_dir=models, feature_table=table, warmup_iterations=2, alias_poll_seconds=0)
        rows = data.holdout(df).head(20)
        want = hgb.predict_proba(data.inputs(rows))[:, 1]
        with serving(create_app(settings)) as client:
            r = client.post("/predict", json=sample["request"])
            assert r.status_code == 200, r.text
            assert r.json()["probability"] == pytest.approx(sample["expected"]["probability"], abs=1e-5)
            for i in range(len(rows)):
                row = rows.iloc[i]
                body = {
                    "user_id": row["user_id"],
                    "features": {name: _json(row[name]) for name in ("plan", "score", "mobile")},
                }
                r = client.post("/predict", json=body)
                assert r.status_code == 200, r.text
                assert r.json()["model_version"] == "v7"
                assert r.json()["probability"] == pytest.approx(want[i], abs=1e-4)


class TestCommandLine:
    def test_publish_then_verify(self, tmp_path, hgb, files):
        """`modelserve publish` prints the summary and points the alias; `modelserve verify` accepts the version."""
        holdout, table = files
        joblib.dump(hgb, tmp_path / "pipeline.joblib")
        env = {**os.environ, "MODELSERVE_MODELS_DIR": str(tmp_path / "models"), "MODELSERVE_FEATURE_TABLE": str(table)}
        args = [
            "publish", str(tmp_path / "pipeline.joblib"), "--data", str(holdout), "--target", "churned",
            "--version", "v4", "--store-features", "age,income", "--id-column", "user_id", "--alias", "candidate",
        ]  # fmt: skip
        proc = subprocess.run([str(MODELSERVE), *args], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("published v4 to ")
        assert "binary_classification" in proc.stdout and "candidate: - -> v4" in proc.stdout
        assert "age     int     store" in proc.stdout
        proc = subprocess.run(
            [str(MODELSERVE), "verify", "candidate"], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        assert "v4: ok" in proc.stdout

    def test_csv_codes_that_look_like_numbers_stay_strings(self, tmp_path):
        """A string column of codes ("1", "02134") one-hot encoded by the pipeline, held out as CSV, publishes as
        a string feature with its leading zeros (the CSV reader took it for int: 'Category '1' is not an int64')."""
        import pandas as pd
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder

        rng = np.random.default_rng(0)
        frame = pd.DataFrame(
            {
                "amount": rng.normal(size=400),
                "tier": rng.choice(["1", "2", "3"], 400).astype(object),
                "zip": rng.choice(["02134", "10001", "94105"], 400).astype(object),
            }
        )
        frame["bought"] = ((frame["amount"] > 0) | (frame["tier"] == "3")).astype(int)
        encode = ColumnTransformer(
            [("n", "passthrough", ["amount"]), ("c", OneHotEncoder(handle_unknown="ignore"), ["tier", "zip"])]
        )
        inputs = frame.drop(columns="bought")
        pipeline = Pipeline([("encode", encode), ("model", LogisticRegression())]).fit(inputs, frame["bought"])
        holdout = tmp_path / "holdout.csv"
        frame.to_csv(holdout, index=False)
        models = tmp_path / "models"
        summary = publish(pipeline, data=holdout, target="bought", version="c1", models_dir=models)
        by_name = {f.name: f for f in summary.features}
        assert (by_name["tier"].dtype, by_name["zip"].dtype, by_name["amount"].dtype) == ("string", "string", "float")
        assert by_name["zip"].categories == ("02134", "10001", "94105")
        assert summary.parity.label_agreement == 1.0
        assert manifest_of(models, "c1")["sample"]["request"]["features"]["zip"] in ("02134", "10001", "94105")
        ModelPool(Repository(models), warmup_iterations=1).load("c1")


class TestMlflow:
    def test_mlflow_directory(self, tmp_path, df, hgb, files):
        """A directory written by mlflow.sklearn.save_model publishes; its signature decides the dtypes."""
        import mlflow.sklearn
        from mlflow.models import infer_signature

        x = data.inputs(data.holdout(df)).astype({"age": "float64"})  # the signature says age is a double
        directory = tmp_path / "mlflow-model"
        mlflow.sklearn.save_model(
            hgb,
            directory,
            signature=infer_signature(x, hgb.predict(x)),
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
        )
        models = tmp_path / "models"
        summary = publish(mlflow=directory, data=files[0], target="churned", version="ml1", models_dir=models)
        assert {f.name: f.dtype for f in summary.features}["age"] == "float"
        assert summary.parity.max_abs_prob_diff <= 1e-4
        assert_artifacts(models, "ml1")
        ModelPool(Repository(models), warmup_iterations=1).load("ml1")


def _json(value):
    """A frame value as a client sends it."""
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


class TestIntegerUserIds:
    def test_int_id_column_and_table_publish_and_serve(self, tmp_path):
        """Integer user ids, in the data's --id-column and the feature table's user_id, are the
        strings requests carry: an all-number frame once turned the id 1300 into '1300.0', so no
        held-out row matched the table, and the table's int keys stopped the service at start."""
        import pandas as pd
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline

        rng = np.random.default_rng(0)
        frame = pd.DataFrame({"cust": np.arange(1000, 1400), "tenure": rng.integers(0, 50, 400)})
        frame["x"] = rng.normal(size=400)
        frame["y"] = ((frame["x"] + frame["tenure"] / 25 - 1) > 0).astype(int)
        table = tmp_path / "features.parquet"
        frame[["cust", "tenure"]].rename(columns={"cust": "user_id"}).to_parquet(table)
        pre = ColumnTransformer([("n", "passthrough", ["tenure", "x"])])
        pipeline = Pipeline([("pre", pre), ("m", LogisticRegression())]).fit(frame.iloc[:300], frame["y"].iloc[:300])
        models = tmp_path / "models"
        publish(
            pipeline,
            data=frame.iloc[300:],
            target="y",
            version="v1",
            store_features=["tenure"],
            feature_table=table,
            id_column="cust",
            alias="production",
            models_dir=models,
        )
        sample = manifest_of(models, "v1")["sample"]
        assert sample["request"]["user_id"] == str(int(sample["request"]["user_id"]))
        settings = Settings(models_dir=models, feature_table=table, warmup_iterations=2, alias_poll_seconds=0)
        with serving(create_app(settings)) as client:
            assert client.get("/health/ready").status_code == 200
            r = client.post("/predict", json={"user_id": "1310", "features": {"x": 0.25}})
            assert r.status_code == 200, r.text
            want = pipeline.predict_proba(pd.DataFrame({"cust": [1310], "tenure": [frame["tenure"][310]], "x": [0.25]}))
            assert r.json()["probability"] == pytest.approx(want[0, 1], abs=1e-4)
