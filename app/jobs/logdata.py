"""The prediction and label logs as DuckDB views: ``predictions``, ``shadow``, ``labels`` and ``log``.

``connect(log_dir)`` reads the Parquet warehouse (``app.jobs.warehouse``,
written by ``modelserve compact``) and the JSONL files not compacted yet
(``predictions-*.jsonl``, ``labels-*.jsonl``) together, each row once.
JSONL is read with an explicit column list derived from the line formats in
``app.telemetry.log_lines``, so the views have the same columns
whatever the files hold, and a kind with no rows yet (no labels) is an empty
view, not an error. ``kind`` splits the lines.

``features`` and ``label`` are JSON values: ``features->>'device'`` is text,
``CAST(features->>'amount' AS DOUBLE)`` a number; ``CAST(label AS BIGINT)``,
``label->>'$'`` (text) or ``CAST(label AS DOUBLE)`` per the model's task.
``timestamp`` is a ``TIMESTAMPTZ``, so ``timestamp > now() - INTERVAL 24 HOUR``
works. ``labels`` holds one row per ``request_id``: its latest label (latest
``timestamp``). A line cut short by a writer that is still running is
skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb  # imported here, not on first use: a job without the 'jobs' extra fails before doing anything
import numpy as np

from app.errors import ModelServeError
from app.jobs.warehouse import committed, committed_parts
from app.telemetry.log_files import FILE_SUFFIX, LOG_FILE_PREFIXES
from app.telemetry.log_lines import (
    LABEL_FIELDS,
    LINE_FIELDS,
    PREDICTION_FIELDS,
    SHADOW_FIELDS,
    FieldType,
)

_DUCKDB: dict[FieldType, str] = {
    "text": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "json": "JSON",
    "timestamp": "TIMESTAMPTZ",
}
COLUMNS: dict[str, str] = {
    "kind": "VARCHAR",
    **{name: _DUCKDB[type_] for fields in LINE_FIELDS.values() for name, type_ in fields},
}
"""Every field of every kind of line, as DuckDB types (a line's absent fields read as NULL)."""
PREDICTION_COLUMNS = ", ".join(name for name, _ in PREDICTION_FIELDS)
SHADOW_COLUMNS = ", ".join(name for name, _ in SHADOW_FIELDS)
LABEL_COLUMNS = ("request_id", "label", "observed_at", "timestamp")
"""The columns of the ``labels`` view."""


class EmptyLog(ModelServeError):
    """No prediction log files where they were looked for."""


def log_files(log_dir: Path, done: dict[str, str] | None = None) -> list[Path]:
    """The JSONL files of the log directory not committed to the warehouse (in ``done``, default: now), non-empty."""
    if not log_dir.is_dir():
        raise EmptyLog(f"prediction log directory {log_dir} does not exist (set MODELSERVE_LOG_DIR or --log-dir)")
    if done is None:
        done = committed(log_dir)
    files = sorted(
        f
        for prefix in LOG_FILE_PREFIXES
        for f in log_dir.glob(f"{prefix}*{FILE_SUFFIX}")
        if f.name not in done and f.stat().st_size > 0
    )
    return files


def connect(log_dir: Path) -> Any:
    """A DuckDB connection (in memory) with the log's views defined."""
    log_dir = Path(log_dir)
    done = committed(log_dir)  # one snapshot: each source is read from JSONL or from Parquet, never both
    files = log_files(log_dir, done)
    parts = {kind: committed_parts(log_dir, kind, done) for kind in LINE_FIELDS}
    if not files and not any(parts.values()):
        raise EmptyLog(
            f"no prediction log files ({'/'.join(LOG_FILE_PREFIXES)}*{FILE_SUFFIX} or warehouse) in {log_dir}"
        )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # An empty row set with every column typed: the union below takes its types and column order.
    branches = ["SELECT " + ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in COLUMNS.items()) + " WHERE false"]
    if files:
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items()) + "}"
        paths = "[" + ", ".join(quote(str(f)) for f in files) + "]"
        branches.append(
            f"SELECT * FROM read_json({paths}, format = 'newline_delimited', columns = {columns}, ignore_errors = true)"
        )
    for kind, kind_parts in parts.items():
        if kind_parts:
            paths = "[" + ", ".join(quote(str(p)) for p in kind_parts) + "]"
            cols = ", ".join(f"CAST({c} AS {COLUMNS[c]}) AS {c}" for c, _ in LINE_FIELDS[kind])
            branches.append(
                f"SELECT {quote(kind)} AS kind, {cols} FROM read_parquet({paths}, hive_partitioning = false)"
            )
    con.execute("CREATE VIEW log AS " + " UNION ALL BY NAME ".join(branches))
    con.execute(f"CREATE VIEW predictions AS SELECT {PREDICTION_COLUMNS} FROM log WHERE kind = 'prediction'")
    con.execute(f"CREATE VIEW shadow AS SELECT {SHADOW_COLUMNS} FROM log WHERE kind = 'shadow'")
    label_all = ", ".join(name for name, _ in LABEL_FIELDS)
    con.execute(
        f"CREATE VIEW labels AS SELECT {', '.join(LABEL_COLUMNS)} FROM ("
        f"SELECT {label_all}, row_number() OVER (PARTITION BY request_id ORDER BY timestamp DESC) AS latest "
        "FROM log WHERE kind = 'label' AND request_id IS NOT NULL) WHERE latest = 1"
    )
    return con


def quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@dataclass(frozen=True)
class Frame:
    """A query's result as numpy columns, for the jobs that work column-wise (drift, monitor, gate).

    NULL reads as NaN in a numeric column (an integer column with NULLs turns
    float, as in a pandas frame) and as None elsewhere: DuckDB's
    ``fetchnumpy`` hands NULLs over as masked arrays, whose fill value must
    not pass for data. No pandas needed.
    """

    data: Mapping[str, np.ndarray]

    @classmethod
    def of(cls, relation: Any) -> Frame:
        """The result of an executed DuckDB statement."""
        return cls({name: _nulls_out(column) for name, column in relation.fetchnumpy().items()})

    @property
    def columns(self) -> list[str]:
        return list(self.data)

    def __len__(self) -> int:
        return len(next(iter(self.data.values()))) if self.data else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def where(self, mask: np.ndarray) -> Frame:
        """The rows where ``mask`` is true."""
        return Frame({name: column[mask] for name, column in self.data.items()})


def _nulls_out(column: Any) -> np.ndarray:
    if not np.ma.isMaskedArray(column):
        return np.asarray(column)
    if not np.ma.getmaskarray(column).any():
        return np.asarray(column.data)
    if column.dtype.kind in "fiu":
        return np.ma.filled(column.astype(np.float64), np.nan)
    out = np.asarray(column.data, dtype=object).copy()
    out[np.ma.getmaskarray(column)] = None
    return out
