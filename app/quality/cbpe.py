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

from app.quality.bootstrap import REPLICATES, SEED, Interval, Weighted, bootstrap, wsum
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

    def build(index: np.ndarray | None) -> dict[str, Weighted]:
        r, pp, s = (right, p, score) if index is None else (right[index], p[index], score[index])
        return {"accuracy": _mean(r), "roc_auc": roc_auc(pp, s)}

    return bootstrap(build, len(score), replicates, seed)


def _mean(values: np.ndarray) -> Weighted:
    return lambda w: float(values.mean() if w is None else wsum(values, w) / w.sum())


def estimate_multiclass(probabilities: np.ndarray, prediction: np.ndarray, seed: int = SEED) -> dict[str, Interval]:
    """Estimated ``accuracy`` of a multiclass model: the mean probability of the served label."""
    right = probabilities[np.arange(len(prediction)), np.maximum(prediction, 0)]
    return bootstrap(
        lambda index: {"accuracy": _mean(right if index is None else right[index])}, len(right), REPLICATES, seed
    )
