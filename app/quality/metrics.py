"""The task's quality metrics over labelled rows, as weighted functions (for the bootstrap).

Every metric is written over per-row weights so one definition serves the
point estimate (weights ``None``) and each bootstrap replicate; with unit
weights each equals scikit-learn's function of the same name on the same rows
(``roc_auc_score``, ``log_loss``, ``brier_score_loss``, ``accuracy_score``,
``f1_score(average="macro")``, ``root_mean_squared_error``,
``mean_absolute_error``, ``r2_score``), which the tests check.

``accuracy`` is of the *served* label (what the service answered), so it is
the accuracy at the threshold in use, not at a re-chosen one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.model.manifest import Task
from app.quality.bootstrap import REPLICATES, SEED, Interval, Weighted, bootstrap, wsum

HIGHER_IS_BETTER = frozenset({"roc_auc", "accuracy", "macro_f1", "r2"})
IN_TARGET_UNITS = frozenset({"rmse", "mae"})
"""Metrics measured in the target's units, whose margins are relative to a reference figure."""
PRIMARY: dict[str, str] = {
    "binary_classification": "roc_auc",
    "multiclass_classification": "accuracy",
    "regression": "rmse",
}
"""The metric a comparison (gate, monitor, shadow-report) is decided on, per task."""
ECE_BINS = 10


@dataclass
class Rows:
    """Labelled rows of one group.

    ``y`` and ``prediction``: binary 0/1 (1 = the positive class), multiclass
    the class index in the manifest's order (-1 for a label outside it),
    regression the values. ``probability``: binary, of the positive class.
    ``probabilities``: multiclass, ``[n, K]`` in class order.
    """

    task: Task
    y: np.ndarray
    prediction: np.ndarray
    probability: np.ndarray | None = None
    probabilities: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray | None) -> Rows:
        if index is None:
            return self
        return Rows(
            self.task,
            self.y[index],
            self.prediction[index],
            None if self.probability is None else self.probability[index],
            None if self.probabilities is None else self.probabilities[index],
        )


def _mean(values: np.ndarray) -> Weighted:
    def f(w: np.ndarray | None) -> float:
        if w is None:
            return float(values.mean()) if len(values) else float("nan")
        total = w.sum()
        return wsum(values, w) / total if total > 0 else float("nan")

    return f


def roc_auc(y: np.ndarray, score: np.ndarray) -> Weighted:
    """Mann-Whitney form (ties count a half), equal to the trapezoidal area under the ROC curve."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    positive = y[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, dtype=np.int64)

    def f(w: np.ndarray | None) -> float:
        if not len(s):
            return float("nan")
        ww = np.ones(len(s)) if w is None else w[order]
        pos = np.add.reduceat(ww * positive, starts)
        neg = np.add.reduceat(ww * (1.0 - positive), starts)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos <= 0 or total_neg <= 0:
            return float("nan")
        below = np.cumsum(neg) - neg
        return float(np.sum(pos * (below + 0.5 * neg)) / (total_pos * total_neg))

    return f


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> Weighted:
    """Σ over equal-width probability bins of (bin share) · |observed positive rate − mean probability|."""
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    gap = y.astype(np.float64) - p

    def f(w: np.ndarray | None) -> float:
        ww = np.ones(len(p)) if w is None else w
        total = ww.sum()
        if total <= 0:
            return float("nan")
        return float(np.abs(np.bincount(index, ww * gap, minlength=bins)).sum() / total)

    return f


def reliability(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float | int]]:
    """Per equal-width bin: rows, mean predicted probability, observed positive rate (the reliability diagram)."""
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, p, minlength=bins)
    sum_y = np.bincount(index, y.astype(np.float64), minlength=bins)
    return [
        {
            "low": b / bins,
            "high": (b + 1) / bins,
            "rows": int(count[b]),
            "mean_probability": float(sum_p[b] / count[b]),
            "positive_rate": float(sum_y[b] / count[b]),
        }
        for b in range(bins)
        if count[b]
    ]


def _log_loss_rows(p_true: np.ndarray) -> np.ndarray:
    eps = np.finfo(np.float64).eps
    return -np.log(np.clip(p_true, eps, 1 - eps))


def _macro_f1(y: np.ndarray, prediction: np.ndarray) -> Weighted:
    labels = np.union1d(y, prediction)
    k = int(labels.max()) + 2 if len(labels) else 1
    yy, pp = y + 1, prediction + 1  # -1 (a label outside the classes) becomes bin 0
    correct = yy == pp
    present = labels + 1

    def f(w: np.ndarray | None) -> float:
        ww = np.ones(len(y)) if w is None else w
        tp = np.bincount(yy[correct], ww[correct], minlength=k)[present]
        denominator = np.bincount(yy, ww, minlength=k)[present] + np.bincount(pp, ww, minlength=k)[present]
        # float out: with no right answer tp is bincount of nothing, which numpy makes an int array
        f1 = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
        return float(f1.mean()) if len(f1) else float("nan")

    return f


def _regression(y: np.ndarray, prediction: np.ndarray) -> dict[str, Weighted]:
    err = prediction - y
    sq, ab = _mean(err * err), _mean(np.abs(err))

    def r2(w: np.ndarray | None) -> float:
        ww = np.ones(len(y)) if w is None else w
        total = ww.sum()
        if total <= 0:
            return float("nan")
        mean = wsum(y, ww) / total
        ss_tot = wsum((y - mean) ** 2, ww)
        return 1.0 - wsum(err * err, ww) / ss_tot if ss_tot > 0 else float("nan")

    return {"rmse": lambda w: float(np.sqrt(sq(w))), "mae": ab, "r2": r2}


def metric_functions(rows: Rows) -> dict[str, Weighted]:
    """The task's metrics over these rows (only those the logged columns allow)."""
    y, pred = rows.y, rows.prediction
    if rows.task == "regression":
        return _regression(y.astype(np.float64), pred.astype(np.float64))
    out: dict[str, Weighted] = {}
    if rows.task == "binary_classification" and rows.probability is not None:
        p = rows.probability.astype(np.float64)
        yf = y.astype(np.float64)
        out["roc_auc"] = roc_auc(y, p)
        out["log_loss"] = _mean(_log_loss_rows(np.where(y == 1, p, 1 - p)))
        out["brier"] = _mean((p - yf) ** 2)
    out["accuracy"] = _mean((y == pred).astype(np.float64))
    if rows.task == "binary_classification" and rows.probability is not None:
        out["ece"] = expected_calibration_error(y, rows.probability.astype(np.float64))
    if rows.task == "multiclass_classification":
        out["macro_f1"] = _macro_f1(y, pred)
        if rows.probabilities is not None:
            probs = rows.probabilities
            known = y >= 0
            p_true = np.where(known, probs[np.arange(len(y)), np.maximum(y, 0)], 0.0)
            out["log_loss"] = _mean(_log_loss_rows(p_true))
    return out


def measure(rows: Rows, replicates: int = REPLICATES, seed: int = SEED) -> dict[str, Interval]:
    """Each metric of the task with its seeded 95% bootstrap interval."""
    return bootstrap(lambda index: metric_functions(rows.take(index)), len(rows), replicates, seed)


def paired_difference(
    candidate: Rows, primary: Rows, replicates: int = REPLICATES, seed: int = SEED
) -> dict[str, Interval]:
    """candidate − primary of each shared metric on the same rows, with a paired bootstrap interval.

    Both sides see the same replicate weights, so the interval is of the
    difference itself (narrower than two separate intervals suggest).
    """

    def build(index: np.ndarray | None) -> dict[str, Weighted]:
        a, b = metric_functions(candidate.take(index)), metric_functions(primary.take(index))
        return {name: _minus(a[name], b[name]) for name in a if name in b}

    return bootstrap(build, len(candidate), replicates, seed)


def _minus(f: Weighted, g: Weighted) -> Callable[[np.ndarray | None], float]:
    return lambda w: f(w) - g(w)


def improvement(name: str, difference: float) -> float:
    """A difference (candidate − primary) signed so that positive is better."""
    return difference if name in HIGHER_IS_BETTER else -difference


def scaled_improvement(name: str, difference: float, reference: float | None) -> float:
    """``improvement``, as a fraction of ``reference`` for a metric in the target's units (RMSE, MAE).

    A margin such as 0.01 means something for ROC AUC or accuracy whatever the
    model; in RMSE it is 0.01 of a dollar or of a house price, i.e. nothing. So
    margins for those metrics are relative: 0.01 is 1% of the reference figure.
    """
    better = improvement(name, difference)
    if name in IN_TARGET_UNITS and reference is not None and reference > 0:
        return better / reference
    return better
