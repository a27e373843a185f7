"""The parity gate: the ONNX graph, run by the service's runtime, must answer as the pipeline does.

Compared on every held-out row, or on a seeded sample of ``MAX_ROWS`` when
there are more: the same label, every class probability within
``tolerance`` (absolute), regression values within ``tolerance`` relative to
``max(|value|, 1)`` (so absolute below 1, where a relative bound means
nothing). A label may differ only where the pipeline's two most likely
classes are themselves within ``tolerance`` of each other: a tie, which
float32 arithmetic may break either way.

A row may also differ by more where it sits on a split threshold of the
model's trees: float32 ONNX (float32 inputs and preprocessing, float32
thresholds) and float64 scikit-learn can send a value lying within rounding
of a threshold down different branches, and neither is wrong. Such a row is
exempt when the final estimator itself, given the row with just its
near-threshold inputs moved across those thresholds, reproduces the ONNX
answer within ``tolerance`` (``explained_by_ties``); the figures count these
rows (``threshold_ties``) and hold every other row to the tolerance.

On failure the error names the worst row, both answers, and the step most
likely at fault: the preprocessing is converted on its own and compared with
its scikit-learn output on that row; if it agrees, the final estimator is
named.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from app.errors import PublishRefused
from app.model.manifest import Feature, Task
from app.model.runtime import OnnxModel, Scores
from app.publish.schema import feed_columns
from app.publish.steps import describe, final_estimator
from app.publish.tasks import as_classes

MAX_ROWS = 10_000
DEFAULT_TOLERANCE = 1e-4
TIE_WINDOW = 1e-5
"""How close to a split threshold (relative to ``max(|threshold|, 1)``) an estimator input counts as on it.

Float32 rounding of a raw input, then of its preprocessing (a scaler's
subtraction of a large mean), stays well inside it."""
MAX_TIE_VARIANTS = 64
_NEAR_CELLS = 4_000_000


@dataclass(frozen=True)
class Parity:
    """Publish-time agreement figures, as stored in the manifest's ``parity``.

    ``label_agreement`` is over every compared row; the largest differences
    are over the rows held to ``tolerance``, i.e. all but the
    ``threshold_ties`` exempt ones.
    """

    rows: int
    tolerance: float
    threshold_ties: int = 0
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
    try:
        return _compare(model, rows, onnx, features, fed, task, classes, tolerance)
    except PublishRefused:
        raise
    except Exception as exc:  # the user's pipeline raising on its own held-out rows
        raise PublishRefused(f"the pipeline fails on the held-out rows: {type(exc).__name__}: {exc}") from None


def _compare(
    model: Any,
    rows: pd.DataFrame,
    onnx: Scores,
    features: list[Feature],
    fed: list[str],
    task: Task,
    classes: list[int] | list[str] | None,
    tolerance: float,
) -> Parity:
    if task == "regression":
        assert onnx.values is not None
        want = np.asarray(model.predict(rows[fed]), dtype=np.float64).reshape(-1)
        got = onnx.values.astype(np.float64)
        rel = np.abs(got - want) / np.maximum(np.abs(want), 1.0)
        bad = ~(rel <= tolerance)  # NaN is bad
        ties = _exempt(model, rows, fed, task, bad, got, tolerance)
        bad &= ~ties
        if bad.any():
            i = int(np.nanargmax(np.where(bad, np.nan_to_num(rel, nan=np.inf), -1.0)))
            what = f"pipeline {want[i]:.9g}, ONNX {got[i]:.9g} (relative difference {rel[i]:.3g})"
            _refuse(model, rows, i, int(bad.sum()), what, features, fed, tolerance)
        return Parity(
            rows=len(rows), tolerance=tolerance, threshold_ties=int(ties.sum()), max_rel_diff=_max(rel[~ties])
        )
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
    ties = _exempt(model, rows, fed, task, bad, got_p, tolerance)
    bad &= ~ties
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
        threshold_ties=int(ties.sum()),
        label_agreement=_f(1.0 - mismatch.mean()),
        label_ties=int((mismatch & tie).sum()),
        max_abs_prob_diff=_max(diff[~ties]),
    )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _f(value: Any) -> float:
    return float(f"{float(value):.6g}")


def _max(values: np.ndarray) -> float:
    return _f(values.max()) if len(values) else 0.0


def _exempt(
    model: Any, rows: pd.DataFrame, fed: list[str], task: Task, bad: np.ndarray, onnx: np.ndarray, tolerance: float
) -> np.ndarray:
    """``bad`` rows whose disagreement float32 rounding at a split threshold explains (bool per row)."""
    out = np.zeros(len(rows), dtype=bool)
    where = np.flatnonzero(bad)
    if len(where):
        out[where] = explained_by_ties(model, rows.iloc[where], fed, task, onnx[where], tolerance)
    return out


@dataclass(frozen=True)
class Splits:
    """The numeric splits of a tree-based final estimator, and its input for some rows."""

    estimator: Any
    x: np.ndarray
    """The estimator's input (after the pipeline's preprocessing), float64, one row per row."""
    feature: np.ndarray
    """Input column of each split."""
    threshold: np.ndarray

    def near(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, [rows, splits] bools) in chunks: the row's input to the split lies on its threshold.

        "On" is within ``TIE_WINDOW``. Chunked, so a model with many splits and
        many disagreeing rows costs bounded memory.
        """
        t = self.threshold
        window = TIE_WINDOW * np.maximum(1.0, np.abs(t))
        step = max(1, _NEAR_CELLS // max(1, len(t)))
        for start in range(0, len(self.x), step):
            yield start, np.asarray(np.abs(self.x[start : start + step, self.feature] - t) <= window)


def splits(model: Any, rows: pd.DataFrame, fed: list[str]) -> Splits | None:
    """The splits of ``model``'s trees and their input for ``rows``; None when it has no trees or fails."""
    try:
        x: Any = rows[fed]
        estimator = model
        while isinstance(estimator, Pipeline):
            if len(estimator.steps) > 1:
                x = estimator[:-1].transform(x)
            estimator = estimator.steps[-1][1]
        found = split_thresholds(estimator)
        if found is None:
            return None
        x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    except Exception:
        return None
    return Splits(estimator, x, *found)


def split_thresholds(estimator: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(input column, threshold) of every numeric split of a tree model; None for other models.

    Single trees, forests, bagged and boosted trees (``tree_`` on the model or
    its ``estimators_``), HistGradientBoosting (its predictors' nodes), and
    XGBoost and LightGBM (their tree dumps).
    """
    members = [estimator, *np.ravel(np.asarray(getattr(estimator, "estimators_", []), dtype=object))]
    features: list[np.ndarray] = []
    thresholds: list[np.ndarray] = []
    for member in members:
        tree = getattr(member, "tree_", None)
        if tree is not None:
            split = tree.feature >= 0
            features.append(tree.feature[split])
            thresholds.append(tree.threshold[split])
    for predictors in getattr(estimator, "_predictors", None) or []:
        for predictor in predictors:
            nodes = predictor.nodes
            split = (nodes["is_leaf"] == 0) & (nodes["is_categorical"] == 0)
            features.append(nodes["feature_idx"][split])
            thresholds.append(nodes["num_threshold"][split])
    booster = _booster_splits(estimator)
    if booster is not None:
        features.append(booster[0])
        thresholds.append(booster[1])
    if not features:
        return None
    return np.concatenate(features).astype(np.int64), np.concatenate(thresholds).astype(np.float64)


def _booster_splits(estimator: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The numeric splits of an XGBoost or LightGBM model (their own tree dumps), else None."""
    try:
        if hasattr(estimator, "booster_"):  # LightGBM
            booster = estimator.booster_
            table = booster.trees_to_dataframe()
            names = list(booster.feature_name())
            table = table[table["split_feature"].notna() & (table["decision_type"] == "<=")]
            column, threshold = table["split_feature"], table["threshold"]
        elif hasattr(estimator, "get_booster"):  # XGBoost
            booster = estimator.get_booster()
            table = booster.trees_to_dataframe()
            names = list(booster.feature_names or [f"f{i}" for i in range(booster.num_features())])
            table = table[(table["Feature"] != "Leaf") & table["Split"].notna()]
            column, threshold = table["Feature"], table["Split"]
        else:
            return None
        index = {name: i for i, name in enumerate(names)}
        return (
            np.asarray([index[str(c)] for c in column], dtype=np.int64),
            np.asarray(threshold, dtype=np.float64),
        )
    except Exception:  # a booster version whose dump differs: no ties rather than a wrong one
        return None


def threshold_ties(model: Any, rows: pd.DataFrame, fed: list[str] | None = None) -> np.ndarray:
    """Which rows put an input of ``model``'s trees on a split threshold (bool per row; all false without trees).

    Costs rows × split nodes: meant for the few rows that disagree, not a whole data set.
    """
    out = np.zeros(len(rows), dtype=bool)
    found = splits(model, rows, list(rows.columns) if fed is None else fed)
    if found is not None:
        for start, near in found.near():
            out[start : start + len(near)] = near.any(axis=1)
    return out


def explained_by_ties(
    model: Any, rows: pd.DataFrame, fed: list[str], task: Task, onnx: np.ndarray, tolerance: float
) -> np.ndarray:
    """Which rows' ONNX answer (``onnx``: probabilities [N, K] or values [N]) a threshold tie explains.

    A row is explained when it lies on split thresholds and the final
    estimator, with those inputs moved just below, onto or just above each
    threshold (the nearest float32 values, as ONNX compares them), answers
    as ONNX did within ``tolerance``.
    """
    out = np.zeros(len(rows), dtype=bool)
    found = splits(model, rows, fed)
    if found is None:
        return out
    for start, near in found.near():
        for j in np.flatnonzero(near.any(axis=1)):
            i = start + j
            variants = _across_thresholds(found.x[i], found.feature[near[j]], found.threshold[near[j]])
            out[i] = _answers_as(found.estimator, variants, task, onnx[i], tolerance)
    return out


def _answers_as(estimator: Any, variants: np.ndarray, task: Task, onnx: Any, tolerance: float) -> bool:
    """Whether ``estimator`` gives the ONNX answer on any of ``variants``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # feature-name warnings of an estimator fitted on a frame
            if task == "regression":
                want = np.asarray(estimator.predict(variants), dtype=np.float64).reshape(-1)
                close = np.abs(want - float(onnx)) <= tolerance * np.maximum(np.abs(want), 1.0)
            else:
                want = np.asarray(estimator.predict_proba(variants), dtype=np.float64)
                close = np.abs(want - onnx).max(axis=1) <= tolerance
    except Exception:
        return False
    return bool(close.any())


def _across_thresholds(x: np.ndarray, feature: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Copies of ``x`` with each near-threshold input at its value, or just below or above each of its thresholds."""
    choices: dict[int, list[float]] = {}
    for column, t in zip(feature.tolist(), threshold.tolist(), strict=True):
        # The float32 values either side of t, and t itself when it is one (for "<" splits as well as "<=").
        # Compared in float64: numpy would compare a float32 with a Python float in float32.
        below = np.float32(t)
        if float(below) >= t:
            below = np.nextafter(below, np.float32(-np.inf))
        values = [float(below), float(np.nextafter(below, np.float32(np.inf)))]
        if values[-1] == t:
            values.append(float(np.nextafter(np.float32(t), np.float32(np.inf))))
        choices.setdefault(column, [float(x[column])]).extend(values)
    columns = list(choices)
    combos = itertools.islice(itertools.product(*(choices[c] for c in columns)), MAX_TIE_VARIANTS)
    variants = []
    for combo in combos:
        v = x.copy()
        v[columns] = combo
        variants.append(v)
    return np.asarray(variants)


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
