"""Confidence-based performance estimation: quality on traffic whose labels have not arrived.

If probabilities are calibrated, a row predicted with probability ``p`` is a
positive with probability ``p``; the expected confusion matrix, and with it
accuracy and ROC AUC, follow without labels (NannyML's CBPE). Accuracy: a
row served as positive is right with probability ``p``, one served as
negative with ``1 − p``. ROC AUC: the Mann-Whitney statistic with each row a
``p`` positive and a ``1 − p`` negative, ranked by the model's own score.

It estimates the effect of a change in the *inputs* (rows moving to where
the model is less sure); a change in the relation between inputs and labels
(concept drift) is invisible without labels, which is why the monitor also
looks at realized quality where labels exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from app.quality.bootstrap import REPLICATES, SEED, Interval, Weighted, intervals
from app.quality.calibration import apply_map
from app.quality.metrics import roc_auc


def estimate_binary(
    probability: np.ndarray,
    prediction: np.ndarray,
    calibration: Mapping[str, Any] | None = None,
    replicates: int = REPLICATES,
    seed: int = SEED,
) -> dict[str, Interval]:
    """Estimated ``accuracy`` and ``roc_auc`` of a binary model (``prediction`` 0/1, served)."""
    score = np.asarray(probability, dtype=np.float64)
    p = np.clip(apply_map(calibration, score), 0.0, 1.0)
    right = np.where(np.asarray(prediction) == 1, p, 1.0 - p)
    metrics: dict[str, Weighted] = {
        "accuracy": lambda w: float(right.mean() if w is None else right @ w / w.sum()),
        "roc_auc": roc_auc(p, score),
    }
    return intervals(metrics, len(score), replicates, seed)


def estimate_multiclass(probabilities: np.ndarray, prediction: np.ndarray, seed: int = SEED) -> dict[str, Interval]:
    """Estimated ``accuracy`` of a multiclass model: the mean probability of the served label."""
    right = probabilities[np.arange(len(prediction)), np.maximum(prediction, 0)]
    return intervals(
        {"accuracy": lambda w: float(right.mean() if w is None else right @ w / w.sum())}, len(right), REPLICATES, seed
    )
