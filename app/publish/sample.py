"""The manifest sample: a valid ``/predict`` body, the row the service resolves from it, its expected answer.

Candidates are held-out rows, those with a null in a nullable feature first
(so the warm-up self-check exercises imputation too). With store features
the row's user must be in the feature table, and the store values are the
table's (what the service will fetch), not the frame's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd

from app.errors import PublishRefused
from app.model.manifest import Feature
from app.publish.schema import native

LIMIT = 50


def candidates(
    frame: pd.DataFrame, features: list[Feature], id_column: str | None, table: pd.DataFrame | None
) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(position in ``frame``, request body, resolved row), best first."""
    nullable = [f.name for f in features if f.nullable]
    has_null = frame[nullable].isna().any(axis=1).to_numpy() if nullable else None
    order = list(range(len(frame)))
    if has_null is not None:
        order.sort(key=lambda i: not has_null[i])
    seen = 0
    for i in order:
        record = frame.iloc[i]
        # From the column, not the row: a row of an all-number frame is floats, and 1300 would be '1300.0'.
        user = None if id_column is None else str(frame[id_column].iat[i])
        row = {f.name: native(record[f.name], f.dtype) for f in features}
        if table is not None:
            if user not in table.index:
                continue
            stored = table.loc[user]
            row.update({f.name: native(stored[f.name], f.dtype) for f in features if f.source == "store"})
        request: dict[str, Any] = {} if user is None else {"user_id": user}
        request["features"] = {f.name: row[f.name] for f in features if f.source == "request"}
        yield i, request, row
        seen += 1
        if seen >= LIMIT:
            return
    if table is not None and not seen:
        raise PublishRefused(f"no held-out row's {id_column} is a user in the feature table; the sample needs one")
