"""The model artifact: a scikit-learn pipeline, and the same pipeline as ONNX.

Preprocessing travels with the model. Numeric features (float, int, bool) are
median-imputed and standardised; strings are one-hot encoded, unknown values
ignored (string features are never nullable, so they are not imputed).

The ONNX graph has one input per feature, named as the feature, shape
``[None, 1]``: float32 for float, int and bool features (bools as 0/1, nulls
as NaN), strings as string tensors. Its outputs are ``label`` (int64 ``[N]``)
and ``probabilities`` (float32 ``[N, 2]``).

Training-side checks run the graph through ``app.model.runtime`` — the service's
own feeds and session settings (single-threaded, so a recorded expected
output is bit-for-bit reproducible) — so the manifest sample's expected
output is what the service computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from app.model.manifest import Feature

# Pinned so an artifact does not depend on which skl2onnx trained it, and
# loads on any onnxruntime from the last few years.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}


def build_pipeline(features: Sequence[Feature], estimator: BaseEstimator) -> Pipeline:
    """``Pipeline([("preprocess", ColumnTransformer), ("model", estimator)])`` for ``features``."""
    numeric = [f.name for f in features if f.dtype != "string"]
    strings = [f.name for f in features if f.dtype == "string"]
    preprocess = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            ("strings", OneHotEncoder(handle_unknown="ignore"), strings),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def export_onnx(pipeline: Pipeline, features: Sequence[Feature]) -> bytes:
    """The whole fitted pipeline as a serialized ONNX model."""
    initial_types = [
        (f.name, StringTensorType([None, 1]) if f.dtype == "string" else FloatTensorType([None, 1])) for f in features
    ]
    estimator = pipeline.named_steps["model"]
    onx = to_onnx(
        pipeline,
        initial_types=initial_types,
        options={id(estimator): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    return bytes(onx.SerializeToString())


def threshold_ties(pipeline: Pipeline, frame: pd.DataFrame, tolerance: float = 1e-5) -> np.ndarray:
    """Which rows sit on one of the model's tree split thresholds (bool per row).

    A tree splits halfway between two training values; a row whose
    preprocessed value lies (within float32 rounding) on that midpoint may go
    one way in float64 scikit-learn and the other in float32 ONNX, so the two
    may disagree on it without either being wrong. Always false for models
    without trees. Costs rows × split nodes: meant for the few rows on which
    the two disagree, not for a whole data set.
    """
    model = pipeline.named_steps["model"]
    trees = [t.tree_ for t in np.ravel(getattr(model, "estimators_", [])) if hasattr(t, "tree_")]
    if hasattr(model, "tree_"):
        trees.append(model.tree_)
    if not trees or len(frame) == 0:
        return np.zeros(len(frame), dtype=bool)
    z = pipeline.named_steps["preprocess"].transform(frame)
    z = np.asarray(z.toarray() if hasattr(z, "toarray") else z, dtype=np.float64)
    feature = np.concatenate([t.feature[t.feature >= 0] for t in trees])
    threshold = np.concatenate([t.threshold[t.feature >= 0] for t in trees])
    near = np.abs(z[:, feature] - threshold) <= tolerance * np.maximum(1.0, np.abs(threshold))
    return np.asarray(near.any(axis=1))
