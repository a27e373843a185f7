"""A fitted pipeline as ONNX: skl2onnx, plus the XGBoost and LightGBM converters of onnxmltools.

The graph has one input per feature, named as the feature, shape
``[None, 1]``: float32 for float, int and bool features (what the runtime
feeds, nulls as NaN), string tensors for strings. Integer columns reach the
pipeline's ONNX twin as float32; the parity gate (``app.publish.parity``)
checks that this changes no answer. Classifiers are converted with
``zipmap=False``, so the outputs are ``label`` [N] and ``probabilities``
[N, K] in ``classes_`` order; regressors give ``variable`` [N, 1].
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import onnx

from app.errors import PublishRefused
from app.model.manifest import Feature
from app.publish.steps import describe, final_estimator, first_step, walk

# Pinned so an artifact does not depend on the converter's newest opset and
# loads on any onnxruntime from the last few years.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}

_CLASSIFIER_OPTIONS = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
_registered = False


def register_converters() -> list[str]:
    """Teach skl2onnx the XGBoost and LightGBM estimators that are installed; returns their libraries."""
    global _registered
    libraries = []
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor
    except ImportError:
        pass
    else:
        libraries.append("xgboost")
        if not _registered:
            update_registered_converter(
                XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes, convert_xgboost,
                options=_CLASSIFIER_OPTIONS,
            )  # fmt: skip
            update_registered_converter(
                XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
            )
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    except ImportError:
        pass
    else:
        libraries.append("lightgbm")
        if not _registered:
            update_registered_converter(
                LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes, convert_lightgbm,
                options=_CLASSIFIER_OPTIONS,
            )  # fmt: skip
            update_registered_converter(
                LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes, convert_lightgbm,
                options={"split": None},
            )  # fmt: skip
    if not _registered:
        _tree_missing_flags_as_ints()
    _registered = True
    return libraries


def _tree_missing_flags_as_ints() -> None:
    # skl2onnx's HistGradientBoosting converter passes Python bools for
    # nodes_missing_value_tracks_true, which current protobuf refuses in an
    # int list ("Expected an int, got a boolean"); cast them on the way in.
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node
    if getattr(original, "_casts_missing_flags", False):
        return

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    add_node._casts_missing_flags = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = add_node


def initial_types(features: Sequence[Feature]) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return [
        (f.name, StringTensorType([None, 1]) if f.dtype == "string" else FloatTensorType([None, 1])) for f in features
    ]


def to_onnx(model: Any, features: Sequence[Feature]) -> onnx.ModelProto:
    """``model`` (a fitted pipeline or estimator) as an ONNX graph over ``features``."""
    from skl2onnx import to_onnx as skl_to_onnx

    register_converters()
    _refuse_native_categories(model)
    model = _xgboost_positional(model)
    estimator = final_estimator(model)
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    try:
        return skl_to_onnx(
            _one_input_tensor(model, features),
            initial_types=initial_types(features),
            options=options,
            target_opset=TARGET_OPSET,
        )
    except Exception as exc:
        raise PublishRefused(_conversion_failure(model, exc)) from None


def _refuse_native_categories(model: Any) -> None:
    """Refuse a HistGradientBoosting step that splits on categories natively.

    skl2onnx converts its trees as if every split were a numeric threshold,
    so a categorical split answers differently (the parity gate then blamed
    the estimator without saying why), and with ``categorical_features="from_dtype"``
    on a bare estimator the conversion failed on its string input.
    """
    for path, step in walk(model):
        categorical = getattr(step, "is_categorical_", None)
        if type(step).__name__.startswith("HistGradientBoosting") and categorical is not None and categorical.any():
            raise PublishRefused(
                f"step {describe(path, step)} splits on categories natively (categorical_features), which the ONNX"
                " converter does not support; encode those columns in the pipeline instead (OneHotEncoder, or"
                " OrdinalEncoder without categorical_features) and fit again"
            )


def _xgboost_positional(model: Any) -> Any:
    """``model``, copied with its XGBoost boosters' feature names cleared, when it has any.

    An XGBoost estimator fitted on a DataFrame keeps the column names in its
    booster, and its trees then name features by column ("income < 3.5");
    onnxmltools reads only positional names (``f0``, ``f1``…) and refuses the
    rest. The booster's inputs are positional in the graph anyway, so only the
    converted copy loses the names: the pipeline written and compared is the user's.
    """
    named = [step for _, step in walk(model) if _booster_feature_names(step)]
    if not named:
        return model
    import copy

    clone = copy.deepcopy(model)
    for _, step in walk(clone):
        if _booster_feature_names(step):
            step.get_booster().feature_names = None
    return clone


def _booster_feature_names(step: Any) -> bool:
    try:
        from xgboost import XGBModel
    except ImportError:
        return False
    return isinstance(step, XGBModel) and bool(getattr(step.get_booster(), "feature_names", None))


def _one_input_tensor(model: Any, features: Sequence[Feature]) -> Any:
    """``model``, behind a pass-through ColumnTransformer when it takes several numeric inputs without one.

    Most skl2onnx estimators accept a single [N, F] tensor; a ColumnTransformer
    is what joins one-column inputs into it. Only the conversion sees the
    wrapper: the pipeline written and compared is the user's.
    """
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if len(features) < 2 or isinstance(first_step(model), ColumnTransformer):
        return model
    if any(f.dtype == "string" for f in features):
        return model  # a string column cannot join a float tensor; leave it to the model's first step
    names = [f.name for f in features]
    columns = ColumnTransformer([("inputs", "passthrough", names)]).fit(
        pd.DataFrame([[0.0] * len(names)], columns=names)
    )
    return Pipeline([("inputs", columns), ("model", model)])


def _conversion_failure(model: Any, exc: Exception) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    named = re.search(r"<class '([\w.]+)'>", text)
    if named:
        for path, step in walk(model):
            if (
                f"{type(step).__module__}.{type(step).__name__}" == named.group(1)
                or type(step).__name__ == named.group(1).rsplit(".", 1)[-1]
            ):
                return (
                    f"step {describe(path, step)} cannot be converted to ONNX: skl2onnx has no converter for it;"
                    " replace the step, or register one (skl2onnx.update_registered_converter with a shape"
                    " calculator and a converter) and call app.publish.publish from Python"
                )
    return f"the pipeline cannot be converted to ONNX: {type(exc).__name__}: {first[:300]}"


def output_names(graph: onnx.ModelProto, task: str) -> dict[str, str]:
    """The manifest's output names for a converted graph."""
    outs = [o.name for o in graph.graph.output]
    if task == "regression":
        return {"prediction": outs[0]}
    if len(outs) < 2:
        raise PublishRefused(f"the converted classifier has outputs {outs}, expected a label and probabilities")
    return {"label": outs[0], "probabilities": outs[1]}
