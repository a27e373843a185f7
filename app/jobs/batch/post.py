"""The sink's POST bodies for a scored chunk, each with the ``Idempotency-Key`` a rerun reuses."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.jobs.batch.score import ChunkResult


def sink_items(run_id: str, result: ChunkResult, start_rows: np.ndarray, size: int) -> list[tuple[str, Any]]:
    """(idempotency key, body) per ``size`` output rows; ``start_rows`` are their input row numbers.

    The key is ``run-chunk-part``: the same run sends the same chunk as the same parts.
    """
    out = result.output
    cols = [c for c in ("user_id", "request_id") if c in out.column_names]
    data = {c: out.column(c).to_pylist() for c in cols}
    preds = out.column("prediction").to_pylist()
    # Regression answers no probability; multiclass adds one column per class.
    probs = out.column("probability").to_pylist() if "probability" in out.column_names else None
    per_class = [c for c in out.column_names if c.startswith("probability_")]
    class_probs = {c.removeprefix("probability_"): out.column(c).to_pylist() for c in per_class}
    version = out.column("model_version")[0].as_py() if out.num_rows else None
    rows = start_rows.tolist()
    items = []
    for part, lo in enumerate(range(0, out.num_rows, size)):
        hi = min(lo + size, out.num_rows)
        payload = {
            "chunk": result.index,
            "part": part,
            "model_version": version,
            "rows": [
                _row(rows[i], {c: data[c][i] for c in cols}, preds[i], probs, class_probs, i) for i in range(lo, hi)
            ],
        }
        items.append((f"{run_id}-{result.index}-{part}", payload))
    return items


def _row(
    row: int,
    ids: dict[str, Any],
    prediction: Any,
    probs: list[Any] | None,
    class_probs: dict[str, list[Any]],
    i: int,
) -> dict[str, Any]:
    """One posted row: like a /predict answer of the task, with the input row number and ids."""
    out = {"row": row, **ids, "prediction": prediction}
    if probs is not None:
        out["probability"] = probs[i]
    if class_probs:
        out["probabilities"] = {k: v[i] for k, v in class_probs.items()}
    return out
