"""The pieces of ``manifest.json`` that do not depend on the estimator.

The structure is ``app.model.manifest.Manifest``, the type the repository, the
runtime, the request decoder and the drift job read it back with.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from typing import Any

import numpy as np
import pandas as pd

from app.model.manifest import Feature, Manifest, Outputs, Sample
from app.model.reference import PREDICTION_EDGES, categorical_reference, numeric_reference
from app.training.data import FEATURES

TASK = "binary_classification"
LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")
BOOL_CATEGORIES = ("false", "true")


def created_at() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def libraries() -> dict[str, str]:
    return {"python": platform.python_version(), **{name: dist_version(name) for name in LIBRARIES}}


def native(value: Any, feature: Feature) -> Any:
    """A feature value as the JSON a client would send (NaN → None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if feature.dtype == "float":
        return float(value)
    if feature.dtype == "int":
        return int(value)
    if feature.dtype == "bool":
        return bool(value)
    return str(value)


def sample_candidates(holdout: pd.DataFrame, limit: int = 20) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(request, row)`` pairs for the manifest sample, best first.

    Holdout events with a null nullable feature come first: they make the
    warm-up self-check exercise imputation as well as every other input.
    """
    nullable = [f.name for f in FEATURES if f.nullable]
    has_null = holdout[nullable].isna().any(axis=1) if nullable else pd.Series(False, index=holdout.index)
    ordered = pd.concat([holdout[has_null], holdout[~has_null]]).head(limit)
    candidates = []
    for _, event in ordered.iterrows():
        row = {f.name: native(event[f.name], f) for f in FEATURES}
        request = {
            "user_id": str(event["user_id"]),
            "features": {f.name: row[f.name] for f in FEATURES if f.source == "request"},
        }
        candidates.append((request, row))
    return candidates


def feature_reference(train: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Reference distribution of every feature over the training rows."""
    specs: dict[str, dict[str, Any]] = {}
    for f in FEATURES:
        column = train[f.name]
        if f.dtype in ("float", "int"):
            specs[f.name] = numeric_reference(column)
        elif f.dtype == "bool":
            specs[f.name] = categorical_reference(column, BOOL_CATEGORIES)
        else:
            specs[f.name] = categorical_reference(column, f.categories or ())
    return specs


def prediction_reference(probabilities: np.ndarray) -> dict[str, Any]:
    """Reference distribution of the positive-class probability, fixed edges 0.1 … 0.9."""
    return numeric_reference(pd.Series(probabilities, dtype=np.float64), edges=PREDICTION_EDGES)


def build_manifest(
    *,
    version: str,
    estimator: str,
    features: Sequence[Feature],
    sample: Sample,
    reference: Mapping[str, Any],
    metrics: Mapping[str, float | int],
    files: Mapping[str, str],
) -> Manifest:
    return Manifest(
        version=version,
        created_at=created_at(),
        task=TASK,
        estimator=estimator,
        features=list(features),
        outputs=Outputs(),
        sample=sample,
        reference=dict(reference),
        metrics=dict(metrics),
        files=dict(files),
        libraries=libraries(),
    )
