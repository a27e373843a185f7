"""A calibration map for binary classifiers, fitted on the holdout at publish time, as plain numbers.

The map is isotonic (monotone, piecewise linear between its knots):
``{"method": "isotonic", "x": [...], "y": [...]}`` and a probability ``p``
maps to ``numpy.interp(p, x, y)``. It is stored in the manifest's
``calibration`` only when the model's holdout ECE says it is not calibrated
(above ``CALIBRATED_ECE``); otherwise ``{"method": "identity"}``. Serving
never uses it: the label-free estimate (:mod:`app.quality.cbpe`) needs
probabilities that mean what they say, the served answer stays the model's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from app.quality.metrics import expected_calibration_error

CALIBRATED_ECE = 0.02
"""Holdout ECE at or below which the model's own probabilities are used as they are."""
MAX_KNOTS = 200


def fit_map(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """The map to store for a binary model with holdout labels ``y`` (0/1) and probabilities ``p``."""
    from sklearn.isotonic import IsotonicRegression

    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    before = expected_calibration_error(y, p)(None)
    if before <= CALIBRATED_ECE or len(np.unique(y)) < 2:
        # A holdout of one class cannot say how probabilities map to outcomes: fitted on it, the map would send
        # every probability to that class and the label-free estimate would report a perfect model.
        return {"method": "identity", "holdout_ece": round(before, 6)}
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    x, v = np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_)
    if len(x) > MAX_KNOTS:  # keep the manifest small: evaluate the fitted map at evenly spaced knots
        x = np.quantile(x, np.linspace(0, 1, MAX_KNOTS))
        v = iso.predict(x)
    after = expected_calibration_error(y, np.interp(p, x, v))(None)
    return {
        "method": "isotonic",
        "x": [round(float(a), 6) for a in x],
        "y": [round(float(b), 6) for b in v],
        "holdout_ece": round(before, 6),
        "holdout_ece_calibrated": round(after, 6),
    }


def apply_map(calibration: Mapping[str, Any] | None, p: np.ndarray) -> np.ndarray:
    """Calibrated probabilities (the identity when there is no map)."""
    if not calibration or calibration.get("method") != "isotonic":
        return np.asarray(p, dtype=np.float64)
    return np.interp(np.asarray(p, dtype=np.float64), calibration["x"], calibration["y"])
