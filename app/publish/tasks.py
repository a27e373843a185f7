"""What differs per task: which task an estimator has, its classes, metrics, reference and sample answer.

Answers (``app.model.runtime.Scores``) come from the ONNX graph run by the
service's own runtime, so metrics and references describe what the service
will answer, not what scikit-learn would.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import is_classifier

from app.errors import PublishRefused
from app.model.manifest import Task
from app.model.reference import PREDICTION_EDGES, categorical_reference, numeric_reference
from app.model.runtime import Scores
from app.publish.steps import final_estimator

TaskOption = Literal["auto", "binary", "multiclass", "regression"]
TASKS: dict[str, Task] = {
    "binary": "binary_classification",
    "multiclass": "multiclass_classification",
    "regression": "regression",
}


def infer_task(model: Any, requested: str = "auto") -> Task:
    """The task of ``model``'s final estimator; ``requested`` must agree with it."""
    estimator = final_estimator(model)
    found: Task = "regression"
    if is_classifier(estimator) or hasattr(estimator, "classes_"):
        if not hasattr(estimator, "predict_proba"):
            raise PublishRefused(
                f"classifier {type(estimator).__name__} has no predict_proba; the service answers probabilities:"
                " wrap it in sklearn.calibration.CalibratedClassifierCV (SVC: probability=True) and fit again"
            )
        found = "binary_classification" if len(estimator.classes_) == 2 else "multiclass_classification"
    elif (kind := _estimator_type(estimator)) not in (None, "regressor"):
        # An outlier detector's or a clusterer's predict is no value to compare with a target.
        raise PublishRefused(
            f"{type(estimator).__name__} is neither a classifier nor a regressor (a {kind.replace('_', ' ')});"
            " the service serves supervised models"
        )
    if requested == "auto":
        return found
    if requested not in TASKS:
        raise PublishRefused(f"unknown task {requested!r}; one of auto, {', '.join(TASKS)}")
    if TASKS[requested] != found:
        raise PublishRefused(f"--task {requested}, but {type(estimator).__name__} is a {found.replace('_', ' ')} model")
    return found


def _estimator_type(estimator: Any) -> str | None:
    """scikit-learn's word for what ``estimator`` is (``regressor``, ``clusterer``, ...), None if it has none."""
    try:
        from sklearn.utils import get_tags  # scikit-learn >= 1.6
    except ImportError:
        return getattr(estimator, "_estimator_type", None)
    try:
        return get_tags(estimator).estimator_type
    except Exception:  # a third-party estimator whose tags cannot be read: judged by its classes_ alone
        return None


def class_labels(model: Any) -> list[int] | list[str]:
    """The estimator's ``classes_`` in order: ints (bools as 0/1) or strings."""
    classes = list(final_estimator(model).classes_)
    if all(isinstance(c, bool | np.bool_) for c in classes):
        return [int(c) for c in classes]
    if all(isinstance(c, int | np.integer) and not isinstance(c, bool | np.bool_) for c in classes):
        return [int(c) for c in classes]
    if all(isinstance(c, str) for c in classes):
        return [str(c) for c in classes]
    if all(isinstance(c, float | np.floating) and float(c).is_integer() for c in classes):
        return [int(c) for c in classes]
    raise PublishRefused(f"classes {classes[:5]} are not all ints or all strings; encode the target as one of them")


def as_classes(values: Any, classes: list[int] | list[str]) -> np.ndarray:
    """Labels (from the target column, the pipeline or ONNX) in the manifest's class type."""
    array = np.asarray(values).reshape(-1)
    if isinstance(classes[0], str):
        return np.asarray([str(v) for v in array], dtype=object)
    return array.astype(np.int64)


def metrics(task: Task, y: Any, scores: Scores, classes: list[int] | list[str] | None) -> dict[str, float | int]:
    """Holdout metrics of the service's answers."""
    from sklearn import metrics as m

    n = len(y)
    if task == "regression":
        assert scores.values is not None
        truth = np.asarray(y, dtype=np.float64)
        pred = scores.values.astype(np.float64)
        return {
            "rmse": _r(np.sqrt(m.mean_squared_error(truth, pred))),
            "mae": _r(m.mean_absolute_error(truth, pred)),
            "r2": _r(m.r2_score(truth, pred)),
            "n_holdout": n,
        }
    assert classes is not None and scores.probabilities is not None and scores.labels is not None
    truth = as_classes(y, classes)
    unknown = sorted({str(v) for v in truth} - {str(c) for c in classes})
    if unknown:
        raise PublishRefused(f"the target holds values {unknown[:5]} that are not classes of the model {classes}")
    probs = np.clip(scores.probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    probs = probs / probs.sum(axis=1, keepdims=True)
    labels = as_classes(scores.labels, classes)
    out: dict[str, float | int] = {"accuracy": _r(m.accuracy_score(truth, labels))}
    if task == "binary_classification":
        positive = truth == classes[1]
        out["roc_auc"] = _r(m.roc_auc_score(positive, probs[:, 1])) if 0 < positive.sum() < n else float("nan")
    else:
        out["macro_f1"] = _r(m.f1_score(truth, labels, average="macro", labels=np.asarray(classes, dtype=object)))
    out["log_loss"] = _r(m.log_loss(truth, probs, labels=classes))
    out["n_holdout"] = n
    return out


def _r(value: Any) -> float:
    return round(float(value), 6)


def prediction_reference(task: Task, scores: Scores, classes: list[int] | list[str] | None) -> dict[str, Any]:
    """Reference distribution of the answers (what drift compares new predictions with)."""
    if task == "binary_classification":
        assert scores.probabilities is not None
        return numeric_reference(pd.Series(scores.probabilities[:, 1], dtype=np.float64), edges=PREDICTION_EDGES)
    if task == "multiclass_classification":
        assert classes is not None and scores.labels is not None
        return categorical_reference([str(v) for v in as_classes(scores.labels, classes)], [str(c) for c in classes])
    assert scores.values is not None
    return numeric_reference(pd.Series(scores.values, dtype=np.float64))


def expected(task: Task, scores: Scores, classes: list[int] | list[str] | None) -> dict[str, Any]:
    """The sample row's answer (first row of ``scores``), as the warm-up self-check compares it."""
    if task == "regression":
        assert scores.values is not None
        return {"prediction": float(scores.values[0])}
    assert classes is not None and scores.labels is not None and scores.probabilities is not None
    label = as_classes(scores.labels[:1], classes)[0]
    label = str(label) if isinstance(classes[0], str) else int(label)
    probs = [float(p) for p in scores.probabilities[0]]
    if task == "binary_classification":
        # "prediction" is the key the binary self-check has always read; "label" the task-generic one.
        return {"prediction": label, "label": label, "probability": probs[1]}
    return {"label": label, "probabilities": probs}
