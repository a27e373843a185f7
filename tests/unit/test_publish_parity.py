"""The parity gate exempts rows on a tree split threshold, where float32 ONNX and float64 sklearn may branch apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from app.errors import PublishRefused
from app.model.manifest import Outputs
from app.model.runtime import OnnxModel
from app.publish import parity
from app.publish.convert import output_names, to_onnx
from app.publish.schema import build_features

BINARY = "binary_classification"


def fitted(estimator: object) -> tuple[Pipeline, pd.DataFrame]:
    """A scaler and a one-split tree on a large-valued column, so float32 scaling is coarse near the threshold."""
    x = np.random.default_rng(0).normal(40_000.0, 9_000.0, 400)
    frame = pd.DataFrame({"income": x})
    return make_pipeline(StandardScaler(), estimator).fit(frame, (x > 41_234.5).astype(int)), frame


def runtime(model: Pipeline, frame: pd.DataFrame, task: str) -> tuple[OnnxModel, list, list[str]]:
    features, fed = build_features(model, frame, exclude=[])
    graph = to_onnx(model, features)
    names = output_names(graph, task)
    blank = {} if task == BINARY else {"label": None, "probabilities": None, "classes": None, "positive_class": None}
    outputs = Outputs(**blank, **names)
    return OnnxModel(graph.SerializeToString(), features, version="t", outputs=outputs, task=task), features, fed


def tie_rows(model: Pipeline, onnx: OnnxModel) -> pd.DataFrame:
    """Float32 inputs around the split threshold on which ONNX and the pipeline branch apart (at least one)."""
    scaler, tree = model[0], model[-1].tree_
    on = np.float32(tree.threshold[0] * scaler.scale_[0] + scaler.mean_[0])
    values = (on + np.arange(-200, 201) * np.spacing(on)).astype(np.float64)
    rows = pd.DataFrame({"income": values})
    got = onnx.scores(onnx.feeds_from_columns({"income": values}))
    want = model.predict(rows)
    apart = got.labels != want if got.labels is not None else np.abs(got.values - want) > 1e-4
    assert apart.any(), "no value near the threshold branches apart; the construction needs one"
    return rows[apart].reset_index(drop=True)


class TestThresholdTies:
    def test_classifier_tie_is_exempt_and_counted(self) -> None:
        """A row on the split threshold that ONNX sends the other way passes the gate and is counted as a tie."""
        model, frame = fitted(DecisionTreeClassifier(max_depth=1, random_state=0))
        onnx, features, fed = runtime(model, frame, BINARY)
        ties = tie_rows(model, onnx)
        rows = pd.concat([frame.head(50), ties], ignore_index=True)
        result = parity.check(model, onnx, rows, features=features, fed=fed, task=BINARY, classes=[0, 1])
        assert result.threshold_ties == len(ties)
        assert result.label_agreement == pytest.approx(1 - len(ties) / len(rows), abs=1e-6)
        assert result.max_abs_prob_diff <= 1e-4  # the rows held to the tolerance
        assert result.to_manifest()["threshold_ties"] == len(ties)
        assert parity.threshold_ties(model, ties, fed).all() and not parity.threshold_ties(model, frame.head(50)).any()

    def test_regressor_tie_is_exempt(self) -> None:
        """The same tie on a regression tree is exempt from the relative-difference bound."""
        model, frame = fitted(DecisionTreeRegressor(max_depth=1, random_state=0))
        onnx, features, fed = runtime(model, frame, "regression")
        ties = tie_rows(model, onnx)
        rows = pd.concat([frame.head(50), ties], ignore_index=True)
        result = parity.check(model, onnx, rows, features=features, fed=fed, task="regression", classes=None)
        assert result.threshold_ties == len(ties) and result.max_rel_diff <= 1e-4

    def test_answer_no_branch_gives_is_not_explained(self) -> None:
        """A row on a threshold is exempt only for an answer one side of the split gives, not for any answer."""
        model, frame = fitted(DecisionTreeClassifier(max_depth=1, random_state=0))
        onnx, _, fed = runtime(model, frame, BINARY)
        ties = tie_rows(model, onnx).head(1)
        got = onnx.scores(onnx.feeds_from_columns({"income": ties["income"].to_numpy()})).probabilities
        assert parity.explained_by_ties(model, ties, fed, BINARY, got, 1e-4).all()
        assert not parity.explained_by_ties(model, ties, fed, BINARY, np.array([[0.3, 0.7]]), 1e-4).any()

    def test_disagreement_off_the_thresholds_is_still_refused(self) -> None:
        """A tree's disagreement on rows nowhere near a threshold is refused, ties or not."""
        model, frame = fitted(DecisionTreeClassifier(max_depth=1, random_state=0))
        onnx, features, fed = runtime(model, frame, BINARY)
        flipped = make_pipeline(StandardScaler(), DecisionTreeClassifier(max_depth=1, random_state=0))
        flipped.fit(frame, (frame["income"] <= 41_234.5).astype(int))  # the opposite answer everywhere
        with pytest.raises(PublishRefused, match="disagree on"):
            parity.check(flipped, onnx, frame, features=features, fed=fed, task=BINARY, classes=[0, 1])

    def test_models_without_trees_have_no_ties(self) -> None:
        """Without trees no row is a tie, so nothing is exempt."""
        from sklearn.linear_model import LogisticRegression

        model, frame = fitted(LogisticRegression())
        assert parity.splits(model, frame, ["income"]) is None
        assert not parity.threshold_ties(model, frame).any()

    @pytest.mark.parametrize("library", ["sklearn-hgb", "xgboost", "lightgbm"])
    def test_split_thresholds_of_other_tree_models(self, library: str) -> None:
        """HistGradientBoosting, XGBoost and LightGBM splits are found, on the input column they split."""
        x = np.random.default_rng(1).normal(size=(400, 3))
        y = (x[:, 1] > 0.2).astype(int)
        if library == "xgboost":
            from xgboost import XGBClassifier

            model = XGBClassifier(n_estimators=5, max_depth=2, random_state=0).fit(x, y)
        elif library == "lightgbm":
            from lightgbm import LGBMClassifier

            model = LGBMClassifier(n_estimators=5, num_leaves=4, random_state=0, verbose=-1).fit(x, y)
        else:
            from sklearn.ensemble import HistGradientBoostingClassifier

            model = HistGradientBoostingClassifier(max_iter=5, max_depth=2, random_state=0).fit(x, y)
        found = parity.split_thresholds(model)
        assert found is not None
        feature, threshold = found
        assert len(feature) == len(threshold) > 0 and set(feature) <= {0, 1, 2}
        first = threshold[feature == 1]
        assert len(first) and np.abs(first - 0.2).min() < 0.1  # the split that decides the label
