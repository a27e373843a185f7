"""``publish`` refuses, in one line naming the cause, and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder, StandardScaler

from app.errors import ArtifactError, InvalidName, PublishRefused
from app.publish import publish
from tests.support import publish_data as data

MODELSERVE = Path(sys.executable).parent / "modelserve"


@pytest.fixture(scope="module")
def df():
    return data.frame(n=1200)


@pytest.fixture(scope="module")
def logreg(df):
    return data.fit(LogisticRegression(max_iter=500), "churned", df)


@pytest.fixture
def models(tmp_path):
    return tmp_path / "models"


@pytest.fixture
def holdout(df):
    return data.holdout(df)


def refused(models: Path, error: type[Exception] = PublishRefused, **kwargs) -> str:
    """The refusal's message, after checking it is one line and nothing was written."""
    kwargs.setdefault("target", "churned")
    kwargs.setdefault("version", "v9")
    with pytest.raises(error) as info:
        publish(models_dir=models, **kwargs)
    message = info.value.message
    assert "\n" not in message
    assert not (models / kwargs["version"]).exists()
    assert not models.exists() or not [p for p in models.iterdir() if p.name.startswith(".tmp-")]
    return message


class TestFiles:
    def test_not_an_estimator(self, tmp_path, models, holdout):
        """A pickle of something else, or no pickle at all, is refused naming the file."""
        joblib.dump({"weights": [1, 2]}, tmp_path / "dict.joblib")
        assert "not a scikit-learn estimator" in refused(models, pipeline=tmp_path / "dict.joblib", data=holdout)
        (tmp_path / "text.joblib").write_text("hello")
        assert "is not a pickled scikit-learn estimator" in refused(
            models, pipeline=tmp_path / "text.joblib", data=holdout
        )

    def test_unfitted(self, tmp_path, models, holdout):
        """An unfitted pipeline is refused."""
        joblib.dump(Pipeline([("model", LogisticRegression())]), tmp_path / "p.joblib")
        assert "unfitted Pipeline" in refused(models, pipeline=tmp_path / "p.joblib", data=holdout)

    def test_symlinked_pipeline(self, tmp_path, models, holdout, logreg):
        """A pipeline path that is a symbolic link is refused: only the named file is unpickled."""
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        joblib.dump(logreg, elsewhere / "real.joblib")
        (tmp_path / "pipeline.joblib").symlink_to(elsewhere / "real.joblib")
        assert "symbolic link" in refused(models, pipeline=tmp_path / "pipeline.joblib", data=holdout)

    def test_mlflow_pickle_outside_directory(self, tmp_path, models, holdout, logreg):
        """An MLmodel whose pickle path leaves the MLflow directory is refused."""
        joblib.dump(logreg, tmp_path / "outside.pkl")
        directory = tmp_path / "mlflow"
        directory.mkdir()
        (directory / "MLmodel").write_text(
            "flavors:\n  sklearn:\n    pickled_model: ../outside.pkl\n    serialization_format: pickle\n"
        )
        assert "resolves outside" in refused(models, mlflow=directory, data=holdout)
        (directory / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: x\n")
        assert "no sklearn flavour" in refused(models, mlflow=directory, data=holdout)


class TestConversion:
    def test_unconvertible_step(self, models, df, holdout):
        """A step skl2onnx cannot convert is named with its class, and how to register a converter."""
        numeric = Pipeline([("impute", StandardScaler()), ("double", data.Doubler())])
        pipeline = Pipeline(
            [
                ("preprocess", ColumnTransformer([("numeric", numeric, ["age", "income"])])),
                ("model", LogisticRegression()),
            ]
        ).fit(data.inputs(df.iloc[: data.N_TRAIN]), df["churned"].iloc[: data.N_TRAIN])
        message = refused(models, pipeline=pipeline, data=holdout)
        assert "'preprocess/numeric/double' (tests.support.publish_data.Doubler)" in message
        assert "update_registered_converter" in message

    def test_parity_failure_names_row_values_and_step(self, models, df, holdout):
        """Inputs float32 cannot hold change the scaler's output: the error names the row, both values and the step."""
        shifted = df.assign(score=df["score"] + 1e7)  # float32 keeps no digit of the score
        pipeline = data.fit(LogisticRegression(max_iter=500), "churned", shifted)
        message = refused(models, pipeline=pipeline, data=data.holdout(shifted))
        assert "ONNX and the pipeline disagree on" in message and "worst row" in message
        assert "pipeline label" in message and "ONNX label" in message
        assert "preprocessing step 'preprocess/numeric' (sklearn.pipeline.Pipeline): its output for 'score'" in message

    def test_tight_tolerance(self, models, holdout, logreg):
        """A tolerance below float32 noise refuses, and the figures say by how much."""
        message = refused(models, pipeline=logreg, data=holdout, tolerance=1e-15)
        assert "tolerance 1e-15" in message and "most likely at fault" in message

    def test_native_categorical_splits(self, models, df, holdout):
        """A HistGradientBoosting model splitting on categories natively (which ONNX would answer as numeric
        thresholds) is refused naming the step and what to do, whether its categories come from a pandas
        category column or from an OrdinalEncoder's output."""
        train = df.iloc[: data.N_TRAIN]
        frame = train[["age", "plan"]].astype({"plan": "category"})
        native = HistGradientBoostingClassifier(max_iter=10, categorical_features="from_dtype")
        native.fit(frame, train["churned"])
        encoded = Pipeline(
            [
                ("encode", ColumnTransformer([("plan", OrdinalEncoder(), ["plan"]), ("age", "passthrough", ["age"])])),
                ("model", HistGradientBoostingClassifier(max_iter=10, categorical_features=[0])),
            ]
        ).fit(train[["plan", "age"]], train["churned"])
        for pipeline, step in ((native, "'HistGradientBoostingClassifier'"), (encoded, "'model'")):
            message = refused(models, pipeline=pipeline, data=holdout)
            assert f"step {step} (sklearn." in message and "splits on categories natively" in message
            assert "OneHotEncoder" in message


class TestColumns:
    def test_target_missing(self, models, holdout, logreg):
        """A target column the data lacks is named."""
        assert "target column 'churn'" in refused(models, pipeline=logreg, data=holdout, target="churn")

    def test_store_feature_missing_from_table(self, tmp_path, models, df, holdout, logreg):
        """A store feature the feature table lacks is named."""
        table = tmp_path / "features.parquet"
        df[["user_id", "age"]].to_parquet(table)
        message = refused(
            models,
            pipeline=logreg,
            data=holdout,
            store_features=["age", "income"],
            feature_table=table,
            id_column="user_id",
        )
        assert "lacks column(s) ['income']" in message

    def test_store_feature_not_an_input(self, tmp_path, models, df, holdout, logreg):
        """A store feature the pipeline does not read is refused."""
        table = tmp_path / "features.parquet"
        df[["user_id", "age"]].assign(tenure=3).to_parquet(table)
        message = refused(
            models, pipeline=logreg, data=holdout, store_features=["tenure"], feature_table=table, id_column="user_id"
        )
        assert "--store-features 'tenure' is not an input of the pipeline" in message

    def test_store_feature_dtype_mismatch(self, tmp_path, models, df, holdout, logreg):
        """A store column holding strings where the model takes numbers is refused."""
        table = tmp_path / "features.parquet"
        df[["user_id", "income"]].assign(age=df["age"].astype(str)).to_parquet(table)
        message = refused(
            models, pipeline=logreg, data=holdout, store_features=["age"], feature_table=table, id_column="user_id"
        )
        assert "'age' is int in the data but string in the feature table" in message

    def test_datetime_column(self, models, holdout, logreg):
        """A datetime column the pipeline reads is refused by name."""
        frame = holdout.assign(age=pd.Timestamp("2026-01-01") + pd.to_timedelta(holdout["age"], unit="D"))
        assert "column 'age' has unsupported dtype datetime64" in refused(models, pipeline=logreg, data=frame)

    def test_mixed_object_column(self, models, holdout, logreg):
        """An object column mixing strings and numbers is refused by name."""
        plan = holdout["plan"].astype(object).copy()
        plan.iloc[0] = 3
        message = refused(models, pipeline=logreg, data=holdout.assign(plan=plan))
        assert "column 'plan' mixes types (int, string)" in message

    @pytest.mark.parametrize("estimator", [IsolationForest(random_state=0), KMeans(3, n_init=1, random_state=0)])
    def test_unsupervised_estimator(self, models, estimator):
        """An outlier detector or a clusterer is no regression model: its labels are not values to
        compare with a target, so it is refused naming what it is, not published as ``regression``."""
        rng = np.random.default_rng(0)
        frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200), "y": rng.normal(size=200)})
        fitted = estimator.fit(frame[["a", "b"]])
        message = refused(models, pipeline=fitted, data=frame, target="y")
        assert type(estimator).__name__ in message and "neither a classifier nor a regressor" in message

    def test_task_mismatch(self, models, holdout, logreg):
        """An explicit task the estimator does not have is refused."""
        assert "is a binary classification model" in refused(models, pipeline=logreg, data=holdout, task="regression")

    def test_classifier_without_probabilities(self, models, df, holdout):
        """A classifier with no predict_proba (RidgeClassifier, LinearSVC) is refused with the usual way out."""
        pipeline = data.fit(RidgeClassifier(), "churned", df)
        message = refused(models, pipeline=pipeline, data=holdout)
        assert "RidgeClassifier has no predict_proba" in message and "CalibratedClassifierCV" in message


class TestNames:
    def test_existing_version(self, models, holdout, logreg):
        """Versions are immutable: publishing over one is refused and leaves it as it was."""
        publish(logreg, data=holdout, target="churned", version="v9", models_dir=models)
        before = (models / "v9" / "manifest.json").read_bytes()
        with pytest.raises(PublishRefused, match="exists"):
            publish(logreg, data=holdout, target="churned", version="v9", models_dir=models)
        assert (models / "v9" / "manifest.json").read_bytes() == before

    @pytest.mark.parametrize(("version", "alias"), [("../v9", None), ("v9", "bad/alias"), ("v9", ".hidden")])
    def test_bad_names(self, models, holdout, logreg, version, alias):
        """Version and alias names outside the repository's pattern are refused before any work."""
        message = refused(models, InvalidName, pipeline=logreg, data=holdout, version=version, alias=alias)
        assert "must match" in message

    @pytest.mark.parametrize("column", ["plan type", "1st_plan", "région", "a" * 65])
    def test_column_that_is_no_feature_name(self, models, column):
        """A column name a request cannot carry is refused, saying what a feature name may be."""
        rng = np.random.default_rng(0)
        frame = pd.DataFrame({column: rng.normal(size=200), "y": rng.integers(0, 2, 200)})
        fitted = LogisticRegression().fit(frame[[column]], frame["y"])
        message = refused(models, pipeline=fitted, data=frame, target="y")
        assert repr(column) in message
        assert "a letter or _ first, then letters, digits or _, at most 64 characters" in message

    def test_feature_named_user_id(self, models):
        """A feature may not be named ``user_id``: that name is the user id requests carry and V2's
        ``user_id`` input, so V2 would refuse the feature's own datatype."""
        rng = np.random.default_rng(0)
        frame = pd.DataFrame({"user_id": rng.integers(0, 100, 200), "x": rng.normal(size=200)})
        frame["y"] = (frame["x"] > 0).astype(int)
        fitted = LogisticRegression().fit(frame[["user_id", "x"]], frame["y"])
        message = refused(models, pipeline=fitted, data=frame, target="y")
        assert "'user_id'" in message and "--id-column" in message

    @pytest.mark.parametrize("column", ["prediction", "probability", "model_version", "request_id", "probability_7"])
    def test_feature_named_like_a_batch_column(self, models, column):
        """A feature may not take the name of a column batch scoring reads (request_id) or writes
        (prediction, probability, probability_<class>, model_version): its output file had two
        columns of that name, which pandas cannot read."""
        rng = np.random.default_rng(0)
        frame = pd.DataFrame({column: rng.normal(size=300), "x": rng.normal(size=300)})
        frame["y"] = np.where(frame["x"] > 0.5, 7, np.where(frame["x"] < -0.5, 3, 5))
        fitted = LogisticRegression().fit(frame[[column, "x"]], frame["y"])
        message = refused(models, pipeline=fitted, data=frame, target="y")
        assert repr(column) in message and "batch" in message

    def test_alias_that_is_a_version(self, models, holdout, logreg):
        """An alias may not take the name of an existing version."""
        publish(logreg, data=holdout, target="churned", version="v1", models_dir=models)
        assert "is the name of a version" in refused(models, ArtifactError, pipeline=logreg, data=holdout, alias="v1")


class TestCommandLine:
    def test_one_line_error(self, tmp_path, holdout, logreg):
        """The CLI prints a refusal as one `error:` line and exits non-zero, with nothing written."""
        joblib.dump(logreg, tmp_path / "pipeline.joblib")
        holdout.to_csv(tmp_path / "holdout.csv", index=False)
        env = {**os.environ, "MODELSERVE_MODELS_DIR": str(tmp_path / "models")}
        args = ["publish", str(tmp_path / "pipeline.joblib"), "--data", str(tmp_path / "holdout.csv")]
        proc = subprocess.run(
            [str(MODELSERVE), *args, "--target", "nope", "--version", "v1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: target column 'nope'")
        assert not (tmp_path / "models" / "v1").exists()


def test_csv_and_parquet_agree(tmp_path, holdout, logreg):
    """The same rows as CSV and as Parquet publish the same features."""
    holdout.to_csv(tmp_path / "h.csv", index=False)
    holdout.to_parquet(tmp_path / "h.parquet")
    a = publish(logreg, data=tmp_path / "h.csv", target="churned", version="a", models_dir=tmp_path / "m")
    b = publish(logreg, data=tmp_path / "h.parquet", target="churned", version="b", models_dir=tmp_path / "m")
    assert a.features == b.features
    assert np.isclose(a.metrics["roc_auc"], b.metrics["roc_auc"])
