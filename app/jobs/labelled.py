"""Logged predictions joined with their labels, as the arrays ``app.quality`` measures.

The join is on ``request_id`` between the ``predictions`` (or ``shadow``)
view and the ``labels`` view (one row per request, the latest label) of
:func:`app.jobs.logdata.connect`. Labels are JSON values; they are read as
text and matched against the manifest's classes as text (``1`` and ``"1"``
are the same class), or cast to a number for regression. A label outside the
model's classes is not a right or wrong answer of this model: those rows are
counted (``unknown_labels``) and left out of the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import ModelServeError
from app.model.manifest import Manifest
from app.model.repository import Repository
from app.quality.metrics import Rows


def text(column: str) -> str:
    """SQL: a JSON (or plain text) value as the text a class is compared with (strings unquoted)."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL WHEN json_valid(CAST({column} AS VARCHAR)) "
        f"THEN CAST({column} AS JSON)->>'$' ELSE CAST({column} AS VARCHAR) END"
    )


def columns_of(con: Any, view: str) -> set[str]:
    return {d[0] for d in con.execute(f"SELECT * FROM {view} LIMIT 0").description}


@dataclass
class ModelInfo:
    """What the measurements need from a version's manifest (``manifest`` None when it is gone)."""

    version: str
    task: Any
    classes: list[str] | None
    positive: str | None
    holdout: dict[str, Any]
    calibration: dict[str, Any] | None
    manifest: Manifest | None = None


def model_info(repository: Repository, version: str, guess_task: str = "binary_classification") -> ModelInfo:
    try:
        m = repository.read_manifest(version)
    except ModelServeError:
        return ModelInfo(
            version,
            guess_task,
            ["0", "1"] if guess_task == "binary_classification" else None,
            "1" if guess_task == "binary_classification" else None,
            {},
            None,
        )
    classes = [str(c) for c in m.outputs.classes] if m.outputs.classes else None
    positive = str(m.outputs.positive_class) if m.outputs.positive_class is not None else None
    return ModelInfo(version, m.task, classes, positive, dict(m.metrics), m.calibration, m)


def target_sql(info: ModelInfo, label_text: str) -> str:
    """SQL: the label as the model's target (binary 0/1, multiclass class index, -1 outside; regression a number)."""
    if info.task == "regression":
        return f"TRY_CAST({label_text} AS DOUBLE)"
    assert info.classes is not None
    if info.task == "binary_classification":
        negative = next(c for c in info.classes if c != info.positive)
        return f"CASE {label_text} WHEN {_lit(info.positive)} THEN 1 WHEN {_lit(negative)} THEN 0 ELSE -1 END"
    cases = " ".join(f"WHEN {_lit(c)} THEN {i}" for i, c in enumerate(info.classes))
    return f"CASE {label_text} {cases} ELSE -1 END"


def unmasked(column: Any) -> np.ndarray:
    """DuckDB's ``fetchnumpy`` hands NULLs over as a masked array: a missing number must read as NaN, not as
    the fill value underneath."""
    if np.ma.isMaskedArray(column) and column.dtype.kind == "f":
        return np.ma.filled(column, np.nan)
    return np.asarray(column)


def probabilities_sql(info: ModelInfo, column: str) -> list[str]:
    assert info.classes is not None
    return [f"TRY_CAST({column}->>{_lit('$.' + _json_key(c))} AS DOUBLE)" for c in info.classes]


def _json_key(c: str) -> str:
    return '"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lit(s: str | None) -> str:
    return "NULL" if s is None else "'" + s.replace("'", "''") + "'"


def to_rows(info: ModelInfo, data: dict[str, np.ndarray]) -> tuple[Rows, int]:
    """Rows for the metrics from fetched columns ``y``, ``prediction``, ``probability``, ``p0``.. (+ unknown count)."""
    y = data["y"]
    if info.task == "regression":
        keep = ~np.isnan(y.astype(np.float64)) & ~np.isnan(data["prediction"].astype(np.float64))
        return Rows(info.task, y[keep].astype(np.float64), data["prediction"][keep].astype(np.float64)), int(
            (~keep).sum()
        )
    keep = y >= 0
    prob = data.get("probability")
    probs = None
    if info.task == "multiclass_classification" and "p0" in data:
        probs = np.column_stack([data[f"p{i}"] for i in range(len(info.classes or []))]).astype(np.float64)
        if np.isnan(probs).any():
            probs = None
    if info.task == "binary_classification" and prob is not None:
        keep &= ~np.isnan(prob.astype(np.float64))
    binary_prob = prob is not None and info.task == "binary_classification"
    rows = Rows(
        info.task,
        y[keep].astype(np.int64),
        data["prediction"][keep].astype(np.int64),
        probability=prob[keep].astype(np.float64) if binary_prob and prob is not None else None,
        probabilities=probs[keep] if probs is not None else None,
    )
    return rows, int((~keep).sum())


def select_columns(info: ModelInfo, available: Sequence[str], prefix: str = "") -> str:
    """SQL select list producing ``prediction``, ``probability`` and (multiclass) ``p0``.. for ``to_rows``.

    ``prefix`` may start with a table alias (``"p."``, ``"s.primary_"``); ``available`` names the view's
    columns without it.
    """
    pred = f"{prefix}prediction"
    column = prefix.rpartition(".")[2]
    if info.task == "regression":
        out = [f"TRY_CAST({text(pred)} AS DOUBLE) AS prediction"]
    else:
        out = [f"{target_sql(info, text(pred))} AS prediction"]
        out.append(f"{prefix}probability AS probability")
        if info.task == "multiclass_classification" and f"{column}probabilities" in available:
            out += [f"{sql} AS p{i}" for i, sql in enumerate(probabilities_sql(info, f"{prefix}probabilities"))]
    return ", ".join(out)
