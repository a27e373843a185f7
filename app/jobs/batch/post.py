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
    probs = out.column("probability").to_pylist()
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
                {"row": rows[i], **{c: data[c][i] for c in cols}, "prediction": preds[i], "probability": probs[i]}
                for i in range(lo, hi)
            ],
        }
        items.append((f"{run_id}-{result.index}-{part}", payload))
    return items
