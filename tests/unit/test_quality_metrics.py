"""The quality metrics against scikit-learn, the bootstrap, calibration and CBPE on known truth."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from app.quality import calibration, cbpe
from app.quality.metrics import Rows, measure, paired_difference


def _binary(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-2 * x))
    y = (rng.random(n) < p).astype(np.int64)
    return y, np.round(p, 3)  # rounding makes ties, which the AUC must count as sklearn does


def test_binary_metrics_equal_sklearn() -> None:
    """ROC AUC (with ties), log loss, Brier, accuracy of the served label equal scikit-learn's on the same rows."""
    y, p = _binary(3000, 1)
    pred = (p >= 0.6).astype(np.int64)
    got = measure(Rows("binary_classification", y, pred, probability=p), replicates=0)
    assert got["roc_auc"].value == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert got["log_loss"].value == pytest.approx(skm.log_loss(y, p), abs=1e-12)
    assert got["brier"].value == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
    assert got["accuracy"].value == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)


def test_multiclass_and_regression_metrics_equal_sklearn() -> None:
    """Multiclass accuracy, macro F1 and log loss, regression RMSE, MAE and R² equal scikit-learn's."""
    rng = np.random.default_rng(2)
    probs = rng.dirichlet([1, 1, 1], size=500)
    y = np.array([rng.choice(3, p=row) for row in probs])
    pred = probs.argmax(axis=1)
    got = measure(Rows("multiclass_classification", y, pred, probabilities=probs), replicates=0)
    assert got["accuracy"].value == pytest.approx(skm.accuracy_score(y, pred))
    assert got["macro_f1"].value == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert got["log_loss"].value == pytest.approx(skm.log_loss(y, probs, labels=[0, 1, 2]))
    t = rng.normal(size=400)
    v = t + rng.normal(scale=0.5, size=400)
    got = measure(Rows("regression", t, v), replicates=0)
    assert got["rmse"].value == pytest.approx(skm.root_mean_squared_error(t, v))
    assert got["mae"].value == pytest.approx(skm.mean_absolute_error(t, v))
    assert got["r2"].value == pytest.approx(skm.r2_score(t, v))


def test_multiclass_with_no_right_answer() -> None:
    """A window where every served label is wrong (a broken model, or labels of another) measures
    macro F1 0 as scikit-learn does: it once stopped ``evaluate`` with a numpy casting error."""
    rng = np.random.default_rng(3)
    probs = rng.dirichlet([1, 1, 1], size=60)
    y = rng.integers(0, 3, size=60)
    pred = (y + 1) % 3
    got = measure(Rows("multiclass_classification", y, pred, probabilities=probs), replicates=20)
    assert got["accuracy"].value == 0.0
    assert got["macro_f1"].value == skm.f1_score(y, pred, average="macro") == 0.0
    assert got["macro_f1"].low == got["macro_f1"].high == 0.0


def test_bootstrap_interval_is_seeded_and_covers_the_value() -> None:
    """The same seed gives the same interval, and the interval contains the point estimate."""
    y, p = _binary(2000, 3)
    rows = Rows("binary_classification", y, (p >= 0.5).astype(np.int64), probability=p)
    a, b = measure(rows, replicates=100, seed=7), measure(rows, replicates=100, seed=7)
    assert a == b
    auc = a["roc_auc"]
    assert auc.low is not None and auc.high is not None
    assert auc.low < auc.value < auc.high and auc.high - auc.low < 0.1


def test_paired_difference_sees_a_better_model() -> None:
    """On the same rows, a model with more signal has a paired AUC difference whose interval is above zero."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-2 * x))).astype(np.int64)
    good = 1 / (1 + np.exp(-2 * x))
    bad = 1 / (1 + np.exp(-2 * (x + rng.normal(scale=1.5, size=4000))))
    rows = [Rows("binary_classification", y, (s >= 0.5).astype(np.int64), probability=s) for s in (good, bad)]
    diff = paired_difference(rows[0], rows[1], replicates=100)["roc_auc"]
    assert diff.value > 0 and diff.low is not None and diff.low > 0


def test_calibration_map_repairs_an_overconfident_model_and_cbpe_follows_it() -> None:
    """An overconfident model gets an isotonic map; with it CBPE's estimates match the realized figures."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-x))).astype(np.int64)
    overconfident = 1 / (1 + np.exp(-3 * x))
    fitted = calibration.fit_map(y[:10000], overconfident[:10000])
    assert fitted["method"] == "isotonic" and fitted["holdout_ece_calibrated"] < fitted["holdout_ece"]
    p, yy = overconfident[10000:], y[10000:]
    pred = (p >= 0.5).astype(np.int64)
    est = cbpe.estimate_binary(p, pred, fitted, replicates=0)
    assert est["roc_auc"].value == pytest.approx(skm.roc_auc_score(yy, p), abs=0.02)
    assert est["accuracy"].value == pytest.approx(skm.accuracy_score(yy, pred), abs=0.02)
    assert calibration.fit_map(y, 1 / (1 + np.exp(-x)))["method"] == "identity"


def test_no_calibration_map_from_a_one_class_holdout() -> None:
    """A holdout holding one class only gives the identity, not a map sending every probability to that class."""
    p = np.linspace(0.05, 0.6, 50)
    fitted = calibration.fit_map(np.zeros(50), p)
    assert fitted["method"] == "identity"
    assert np.array_equal(calibration.apply_map(fitted, p), p)
