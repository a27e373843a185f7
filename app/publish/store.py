"""Store features: inputs the service fetches by ``user_id`` from its feature tiers, not from the request.

They must be columns of the offline feature table (the tiers' source of
truth, keyed by ``user_id``) with a dtype the model accepts: the same, or an
int column for a float feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from app.errors import PublishRefused
from app.model.manifest import Feature
from app.publish.schema import column_dtype

USER_ID = "user_id"


def read_store_table(path: Path, names: Sequence[str]) -> pd.DataFrame:
    """``user_id`` and the ``names`` columns of the feature table, indexed by user id."""
    path = Path(path)
    if not path.is_file():
        raise PublishRefused(f"feature table {path} is not a file (--feature-table)")
    try:
        import pyarrow.parquet as pq

        columns = pq.read_schema(path).names
        missing = [n for n in (USER_ID, *names) if n not in columns]
        if missing:
            raise PublishRefused(f"feature table {path} lacks column(s) {missing} named by --store-features")
        table = pd.read_parquet(path, columns=[USER_ID, *names])
    except PublishRefused:
        raise
    except Exception as exc:
        raise PublishRefused(f"feature table {path} cannot be read ({type(exc).__name__}: {exc})") from None
    table[USER_ID] = table[USER_ID].astype(str)
    return table.drop_duplicates(USER_ID, keep="last").set_index(USER_ID)


def check_store_dtypes(table: pd.DataFrame, features: Sequence[Feature]) -> None:
    """Refuse a store feature whose table column holds another type than the model's input."""
    for f in features:
        if f.source != "store":
            continue
        found = column_dtype(table[f.name], f.name)
        if found != f.dtype and not (f.dtype == "float" and found == "int"):
            raise PublishRefused(f"store feature {f.name!r} is {f.dtype} in the data but {found} in the feature table")
