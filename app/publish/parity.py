"""The parity gate: the ONNX graph, run by the service's runtime, must answer as the pipeline does.

Compared on every held-out row, or on a seeded sample of ``MAX_ROWS`` when
there are more: the same label, every class probability within
``tolerance`` (absolute), regression values within ``tolerance`` relative to
``max(|value|, 1)`` (so absolute below 1, where a relative bound means
nothing). A label may differ only where the pipeline's two most likely
classes are themselves within ``tolerance`` of each other: a tie, which
float32 arithmetic may break either way.

On failure the error names the worst row, both answers, and the step most
likely at fault: the preprocessing is converted on its own and compared with
its scikit-learn output on that row; if it agrees, the final estimator is
named.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from app.errors import PublishRefused
from app.model.manifest import Feature, Task
from app.model.runtime import OnnxModel
from app.publish.schema import feed_columns
from app.publish.steps import describe, final_estimator
from app.publish.tasks import as_classes

MAX_ROWS = 10_000
DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Parity:
    """Publish-time agreement figures, as stored in the manifest's ``parity``."""

    rows: int
    tolerance: float
    label_agreement: float | None = None
    label_ties: int | None = None
    max_abs_prob_diff: float | None = None
    max_rel_diff: float | None = None

    def to_manifest(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def compared_rows(n: int, seed: int) -> np.ndarray:
    """Positions of the rows the gate compares: all, or a seeded sample of ``MAX_ROWS``."""
    if n <= MAX_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_ROWS, replace=False))


def check(
    model: Any,
    runtime: OnnxModel,
    frame: pd.DataFrame,
    *,
    features: list[Feature],
    fed: list[str],
    task: Task,
    classes: list[int] | list[str] | None,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
) -> Parity:
    """Parity figures of ``runtime`` against ``model`` on ``frame``; refuses beyond ``tolerance``."""
    rows = frame.iloc[compared_rows(len(frame), seed)]
    onnx = runtime.scores(runtime.feeds_from_columns(feed_columns(rows, features)))
    if task == "regression":
        assert onnx.values is not None
        want = np.asarray(model.predict(rows[fed]), dtype=np.float64).reshape(-1)
        got = onnx.values.astype(np.float64)
        rel = np.abs(got - want) / np.maximum(np.abs(want), 1.0)
        bad = ~(rel <= tolerance)  # NaN is bad
        if bad.any():
            i = int(np.nanargmax(np.where(bad, np.nan_to_num(rel, nan=np.inf), -1.0)))
            what = f"pipeline {want[i]:.9g}, ONNX {got[i]:.9g} (relative difference {rel[i]:.3g})"
            _refuse(model, rows, i, int(bad.sum()), what, features, fed, tolerance)
        return Parity(rows=len(rows), tolerance=tolerance, max_rel_diff=_f(rel.max()))
    assert classes is not None and onnx.probabilities is not None and onnx.labels is not None
    want_p = np.asarray(model.predict_proba(rows[fed]), dtype=np.float64)
    want_l = as_classes(model.predict(rows[fed]), classes)
    got_p = onnx.probabilities.astype(np.float64)
    got_l = as_classes(onnx.labels, classes)
    diff = np.abs(got_p - want_p).max(axis=1)
    top2 = np.sort(want_p, axis=1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) <= tolerance
    mismatch = got_l != want_l
    bad = ~(diff <= tolerance) | (mismatch & ~tie)
    if bad.any():
        i = int(np.argmax(np.where(bad, np.nan_to_num(diff, nan=np.inf) + 1.0, -1.0)))
        k = int(np.nanargmax(np.abs(got_p[i] - want_p[i])))
        what = (
            f"pipeline label {_plain(want_l[i])!r} P({classes[k]!r})={want_p[i, k]:.9g},"
            f" ONNX label {_plain(got_l[i])!r} P({classes[k]!r})={got_p[i, k]:.9g}"
        )
        _refuse(model, rows, i, int(bad.sum()), what, features, fed, tolerance)
    return Parity(
        rows=len(rows),
        tolerance=tolerance,
        label_agreement=_f(1.0 - mismatch.mean()),
        label_ties=int((mismatch & tie).sum()),
        max_abs_prob_diff=_f(diff.max()),
    )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _f(value: Any) -> float:
    return float(f"{float(value):.6g}")


def _refuse(
    model: Any,
    rows: pd.DataFrame,
    i: int,
    count: int,
    what: str,
    features: list[Feature],
    fed: list[str],
    tolerance: float,
) -> None:
    suspect = blame(model, rows.iloc[[i]], features, fed, tolerance)
    raise PublishRefused(
        f"ONNX and the pipeline disagree on {count} of {len(rows)} held-out rows (tolerance {tolerance:g});"
        f" worst row {rows.index[i]!r}: {what}; most likely at fault: {suspect}"
    )


def blame(model: Any, row: pd.DataFrame, features: list[Feature], fed: list[str], tolerance: float) -> str:
    """The step whose ONNX output first departs from scikit-learn's on ``row``, as a phrase."""
    last_name = model.steps[-1][0] if isinstance(model, Pipeline) else type(model).__name__
    estimator = describe(last_name, final_estimator(model))
    fallback = f"the final estimator {estimator} (float32 inputs near its split thresholds or float64-sensitive maths)"
    if not isinstance(model, Pipeline) or len(model.steps) < 2:
        return fallback
    head = model[:-1]
    try:
        import onnxruntime as ort

        from app.publish.convert import to_onnx

        session = ort.InferenceSession(to_onnx(head, features).SerializeToString(), providers=["CPUExecutionProvider"])
        columns = feed_columns(row, features)
        feeds = {
            f.name: columns[f.name].astype(object if f.dtype == "string" else np.float32).reshape(-1, 1)
            for f in features
        }
        got = np.asarray(session.run(None, feeds)[0], dtype=np.float64).reshape(-1)
        want = head.transform(row[fed])
        want = np.asarray(want.toarray() if hasattr(want, "toarray") else want, dtype=np.float64).reshape(-1)
    except Exception:
        return fallback
    if got.shape != want.shape:
        return fallback
    err = np.abs(got - want) / np.maximum(np.abs(want), 1.0)
    column = int(np.nanargmax(np.nan_to_num(err, nan=np.inf)))
    if not err[column] > tolerance:
        return f"the final estimator {estimator}: the preprocessing agrees on that row"
    owner, name = _output_owner(head, column)
    where = f"its output for {name!r}" if name else f"its output column {column}"
    return f"preprocessing {owner}: {where} is {want[column]:.9g} in scikit-learn, {got[column]:.9g} in ONNX"


def _output_owner(head: Pipeline, column: int) -> tuple[str, str | None]:
    """The step (inside a ColumnTransformer, the transformer) that produced output ``column``, and its input column.

    The input column is known when that transformer maps its inputs one to one (scalers, imputers).
    """
    name, step = head.steps[-1]
    if len(head.steps) == 1 and isinstance(step, ColumnTransformer):
        inputs = getattr(step, "_transformer_to_input_indices", {})
        names = list(getattr(step, "feature_names_in_", []))
        for part, span in getattr(step, "output_indices_", {}).items():
            if span.start <= column < span.stop:
                owner = f"step {describe(f'{name}/{part}', step.named_transformers_[part])}"
                indices = list(inputs.get(part, ()))
                if names and len(indices) == span.stop - span.start:
                    return owner, str(names[int(indices[column - span.start])])
                return owner, None
    if len(head.steps) == 1:
        return f"step {describe(name, step)}", None
    return "steps " + ", ".join(describe(n, s) for n, s in head.steps), None
