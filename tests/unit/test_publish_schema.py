"""Pure parts of publish: column dtypes, which columns are features, manifest outputs per task, class labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from app.errors import PublishRefused
from app.model.manifest import Manifest
from app.publish.parity import MAX_ROWS, compared_rows
from app.publish.schema import build_features, column_dtype, encoder_categories, input_columns
from app.publish.tasks import class_labels, infer_task


class TestColumnDtype:
    @pytest.mark.parametrize(
        ("series", "dtype"),
        [
            (pd.Series([True, False]), "bool"),
            (pd.Series([True, None], dtype="boolean"), "bool"),
            (pd.Series([1, 2], dtype="int64"), "int"),
            (pd.Series([1, None], dtype="Int64"), "int"),
            (pd.Series([1.5, np.nan]), "float"),
            (pd.Series(["a", "b"], dtype=object), "string"),
            (pd.Series(["a", "b"], dtype="string"), "string"),
            (pd.Series(["a", "b"], dtype="category"), "string"),
            (pd.Series([1, 2], dtype=object), "int"),
            (pd.Series([1, 2.5, None], dtype=object), "float"),
        ],
    )
    def test_supported(self, series, dtype):
        """Each pandas representation maps to the manifest dtype the service validates."""
        assert column_dtype(series, "x") == dtype

    @pytest.mark.parametrize(
        ("series", "needle"),
        [
            (pd.Series(pd.to_datetime(["2026-01-01"])), "unsupported dtype datetime64"),
            (pd.Series(pd.to_timedelta([1], unit="D")), "unsupported dtype timedelta64"),
            (pd.Series(["a", 1], dtype=object), "mixes types (int, string)"),
            (pd.Series([b"raw"], dtype=object), "holds bytes values"),
        ],
    )
    def test_refused_naming_column(self, series, needle):
        """Types the service cannot carry are refused with the column's name."""
        with pytest.raises(PublishRefused) as info:
            column_dtype(series, "when")
        assert "'when'" in info.value.message and needle in info.value.message


def frame():
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "a": [1.0, np.nan, 3.0, 4.0],
            "unused": [0.0, 1.0, 0.0, 1.0],
            "plan": ["x", "y", "x", "z"],
            "y": [0, 1, 0, 1],
        }
    )


def fitted(remainder="drop"):
    df = frame()
    pre = ColumnTransformer(
        [
            ("num", SimpleImputer(), ["a"]),
            ("cat", Pipeline([("fill", SimpleImputer(strategy="most_frequent")), ("hot", OneHotEncoder())]), ["plan"]),
        ],
        remainder=remainder,
    )
    X = df.drop(columns="y") if remainder == "drop" else df[["a", "unused", "plan"]]
    return Pipeline([("pre", pre), ("model", LogisticRegression())]).fit(X, df["y"])


class TestFeatures:
    def test_dropped_columns_are_not_features(self):
        """Columns a leading ColumnTransformer drops (here user_id, unused) are fed but are not features."""
        fed, used = input_columns(fitted(), frame(), exclude=["y", "user_id"])
        assert fed == ["user_id", "a", "unused", "plan"] and used == ["a", "plan"]

    def test_passthrough_remainder_uses_everything(self):
        """With remainder='passthrough' every fitted column is a feature."""
        _, used = input_columns(fitted("passthrough"), frame(), exclude=["y"])
        assert used == ["a", "unused", "plan"]

    def test_target_as_input_refused(self):
        """A pipeline that reads the target column is refused."""
        with pytest.raises(PublishRefused, match="target or id column"):
            input_columns(fitted("passthrough"), frame(), exclude=["y", "unused"])

    def test_unnamed_pipeline(self):
        """A pipeline fitted on an array takes the frame's other columns, if their count matches."""
        model = LinearRegression().fit(np.zeros((3, 2)), [0, 1, 2])
        df = pd.DataFrame({"p": [1.0], "q": [2.0], "t": [0.0]})
        assert input_columns(model, df, exclude=["t"]) == (["p", "q"], ["p", "q"])
        with pytest.raises(PublishRefused, match="unnamed columns"):
            input_columns(model, df.assign(r=1.0), exclude=["t"])

    def test_encoder_categories_behind_imputer(self):
        """Categories come from a OneHotEncoder even behind an imputer in a sub-pipeline."""
        assert encoder_categories(fitted(), ["user_id", "a", "unused", "plan"]) == {"plan": ["x", "y", "z"]}

    def test_build(self):
        """Nullability from missing values and --nullable; sources from --store-features."""
        features, _ = build_features(fitted(), frame(), exclude=["y", "user_id"], store=["plan"])
        assert [(f.name, f.dtype, f.source, f.nullable, f.categories) for f in features] == [
            ("a", "float", "request", True, None),
            ("plan", "string", "store", False, ("x", "y", "z")),
        ]

    def test_string_with_missing_refused(self):
        """A string feature with missing values is refused: a string tensor has no null."""
        df = frame()
        df.loc[0, "plan"] = None
        with pytest.raises(PublishRefused, match="string column 'plan' has missing values"):
            build_features(fitted(), df, exclude=["y", "user_id"])

    def test_unknown_nullable_refused(self):
        """--nullable naming a column the pipeline does not read is refused."""
        with pytest.raises(PublishRefused, match="--nullable 'unused' is not an input"):
            build_features(fitted(), frame(), exclude=["y", "user_id"], nullable=["unused"])


def manifest(task, outputs):
    return Manifest.model_validate(
        {
            "version": "v1",
            "created_at": "2026-01-01T00:00:00Z",
            "task": task,
            "features": [],
            "outputs": outputs,
            "sample": {"request": {}, "row": {}, "expected": {}},
            "files": {},
        }
    )


class TestManifestOutputs:
    def test_existing_binary_manifests_stay_valid(self):
        """A binary manifest with the demo outputs, or none spelled out, reads as before."""
        m = manifest("binary_classification", {})
        assert (m.outputs.classes, m.outputs.positive_class, m.outputs.prediction) == ([0, 1], 1, None)

    def test_regression_names_prediction_only(self):
        """A regression manifest needs `prediction` and has no classes."""
        m = manifest("regression", {"prediction": "variable"})
        assert m.outputs.classes is None and m.outputs.label is None
        with pytest.raises(ValidationError):
            manifest("regression", {"prediction": "variable", "classes": [0, 1]})
        with pytest.raises(ValidationError):
            manifest("regression", {})

    def test_multiclass(self):
        """Multiclass takes string (or int) classes, three or more, without a positive class."""
        m = manifest("multiclass_classification", {"classes": ["a", "b", "c"], "positive_class": None})
        assert m.outputs.classes == ["a", "b", "c"]
        with pytest.raises(ValidationError):
            manifest("multiclass_classification", {"classes": ["a", "b", "c"], "positive_class": "a"})
        with pytest.raises(ValidationError):
            manifest("multiclass_classification", {"classes": [1, "b", "c"], "positive_class": None})

    def test_binary_positive_class_among_classes(self):
        """A binary positive class must be one of the two classes; unknown tasks are refused."""
        assert manifest("binary_classification", {"classes": ["no", "yes"], "positive_class": "yes"})
        with pytest.raises(ValidationError):
            manifest("binary_classification", {"classes": ["no", "yes"], "positive_class": 1})
        with pytest.raises(ValidationError):
            manifest("ranking", {})


class TestTasks:
    def test_infer(self):
        """The task follows the final estimator and its number of classes; a wrong --task is refused."""
        x = np.arange(12, dtype=float).reshape(-1, 1)
        binary = LogisticRegression().fit(x, [0, 1] * 6)
        multi = LogisticRegression().fit(x, ["a", "b", "c"] * 4)
        assert infer_task(binary) == "binary_classification"
        assert infer_task(Pipeline([("m", multi)])) == "multiclass_classification"
        assert infer_task(LinearRegression().fit(x, np.arange(12)), "regression") == "regression"
        with pytest.raises(PublishRefused, match="--task multiclass"):
            infer_task(binary, "multiclass")

    def test_bool_classes_become_ints(self):
        """Bool classes are written as 0/1; strings stay strings."""
        x = np.arange(4, dtype=float).reshape(-1, 1)
        assert class_labels(LogisticRegression().fit(x, [True, False] * 2)) == [0, 1]
        assert class_labels(LogisticRegression().fit(x, ["n", "y"] * 2)) == ["n", "y"]


class TestComparedRows:
    def test_all_or_seeded_sample(self):
        """Up to MAX_ROWS every row is compared; above, a seeded sample of MAX_ROWS distinct rows."""
        assert list(compared_rows(5, seed=0)) == [0, 1, 2, 3, 4]
        a, b = compared_rows(MAX_ROWS * 3, seed=1), compared_rows(MAX_ROWS * 3, seed=1)
        assert len(set(a)) == MAX_ROWS and (a == b).all() and (np.diff(a) > 0).all()
