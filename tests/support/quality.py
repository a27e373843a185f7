"""Synthetic models and logs with known truth, for the quality jobs.

A "model" here is a manifest only (two request features ``x1``, ``x2``, the
reference distributions of N(0, 1) inputs, holdout metrics): the quality jobs
read manifests and logs, never the ONNX graph. Logs are written exactly in
the line formats of the prediction log and the label log.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn.metrics import roc_auc_score

from app.model.reference import numeric_reference

WEIGHTS = np.array([2.0, 1.0])
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def truth(x: np.ndarray) -> np.ndarray:
    """The true P(y = 1 | x); the synthetic model predicts exactly this, so it is calibrated."""
    return 1.0 / (1.0 + np.exp(-(x @ WEIGHTS)))


def write_model(models_dir: Path, version: str, seed: int = 0, calibration: dict[str, Any] | None = None) -> None:
    rng = np.random.default_rng(seed + 1000)
    x = rng.normal(size=(20000, 2))
    p = truth(x)
    y = rng.random(len(p)) < p
    manifest: dict[str, Any] = {
        "version": version,
        "created_at": "2026-01-01T00:00:00Z",
        "task": "binary_classification",
        "estimator": "synthetic",
        "features": [{"name": n, "dtype": "float", "source": "request"} for n in ("x1", "x2")],
        "outputs": {"label": "label", "probabilities": "probabilities", "classes": [0, 1], "positive_class": 1},
        "sample": {"request": {}, "row": {}, "expected": {}},
        "reference": {
            "features": {"x1": numeric_reference(x[:, 0]), "x2": numeric_reference(x[:, 1])},
            "prediction": numeric_reference(p),
        },
        "metrics": {"roc_auc": float(roc_auc_score(y, p)), "accuracy": float(np.mean((p >= 0.5) == y))},
        "files": {},
    }
    if calibration is not None:
        manifest["calibration"] = calibration
    (models_dir / version).mkdir(parents=True, exist_ok=True)
    (models_dir / version / "manifest.json").write_bytes(orjson.dumps(manifest))


def write_multiclass_model(models_dir: Path, version: str, classes: list[Any], accuracy: float) -> None:
    """``write_model``'s version as a multiclass one with ``classes`` and a holdout ``accuracy``."""
    write_model(models_dir, version)
    path = models_dir / version / "manifest.json"
    manifest = orjson.loads(path.read_bytes())
    manifest["task"] = "multiclass_classification"
    manifest["outputs"] = {
        "label": "label",
        "probabilities": "probabilities",
        "classes": classes,
        "positive_class": None,
    }
    manifest["metrics"] = {"accuracy": accuracy}
    path.write_bytes(orjson.dumps(manifest))


def _iso(t: datetime | str) -> str:
    return t if isinstance(t, str) else t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_lines(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(orjson.dumps(r) + b"\n" for r in records))


def predictions(
    ids: list[str],
    times: list[datetime],
    version: str,
    x: np.ndarray,
    probability: np.ndarray,
    prediction: np.ndarray,
    variant: str = "control",
) -> list[dict[str, Any]]:
    return [
        {
            "kind": "prediction",
            "timestamp": _iso(t),
            "request_id": i,
            "model_version": version,
            "variant": variant,
            "user_id": "u",
            "features": {"x1": float(a), "x2": float(b)},
            "prediction": int(c),
            "probability": float(p),
            "latency": 0.001,
            "feature_tier": "none",
        }
        for i, t, (a, b), p, c in zip(ids, times, x, probability, prediction, strict=True)
    ]


def labels(ids: list[str], times: list[datetime] | list[str], values: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"kind": "label", "timestamp": _iso(t), "request_id": i, "label": int(v), "observed_at": None, "source": "api"}
        for i, t, v in zip(ids, times, values, strict=True)
    ]


def shadow(
    ids: list[str],
    times: list[datetime],
    primary: str,
    candidate: str,
    p_primary: np.ndarray,
    p_shadow: np.ndarray,
    outcome: list[str],
    shadow_latency: float = 0.002,
) -> list[dict[str, Any]]:
    out = []
    for i, t, a, b, o in zip(ids, times, p_primary, p_shadow, outcome, strict=True):
        ok = o == "ok"
        out.append(
            {
                "kind": "shadow",
                "timestamp": _iso(t),
                "request_id": i,
                "primary_version": primary,
                "shadow_version": candidate,
                "primary_prediction": int(a >= 0.5),
                "primary_probability": float(a),
                "shadow_prediction": int(b >= 0.5) if ok else None,
                "shadow_probability": float(b) if ok else None,
                "abs_diff": abs(float(a) - float(b)) if ok else None,
                "outcome": o,
                "primary_latency": 0.001,
                "shadow_latency": shadow_latency,
            }
        )
    return out


def simulate_traffic(
    log_dir: Path,
    version: str,
    seed: int,
    windows: int,
    rows: int,
    window: timedelta,
    start: datetime = T0,
    shift_at: int | None = None,
    scale: float = 0.35,
    label_delay: timedelta = timedelta(hours=6),
    label_share: float = 0.5,
) -> None:
    """``windows`` × ``rows`` predictions of a calibrated model; from window ``shift_at`` on the inputs shrink
    towards 0 (the model grows unsure, realized ROC AUC drops) and a share of the labels arrives after a delay."""
    rng = np.random.default_rng(seed)
    n = windows * rows
    x = rng.normal(size=(n, 2))
    offsets = np.sort(rng.random(n)) * windows
    if shift_at is not None:
        x[offsets >= shift_at] *= scale
    p = truth(x)
    y = (rng.random(n) < p).astype(np.int64)
    times = [start + window * float(o) for o in offsets]
    ids = [f"{seed}-{i}" for i in range(n)]
    write_lines(
        log_dir / f"predictions-sim-{seed}.jsonl", predictions(ids, times, version, x, p, (p >= 0.5).astype(np.int64))
    )
    sel = np.flatnonzero(rng.random(n) < label_share)
    write_lines(
        log_dir / f"labels-sim-{seed}.jsonl",
        labels([ids[i] for i in sel], [times[i] + label_delay for i in sel], y[sel]),
    )
