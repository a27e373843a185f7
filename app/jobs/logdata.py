"""The prediction log as DuckDB views: ``predictions``, ``shadow`` and ``log``.

Every ``predictions-*.jsonl`` file under the log directory is read with an
explicit column list, derived from the line formats in
``app.telemetry.prediction_log`` (so the views have the same columns whatever
the files hold); ``kind`` splits prediction records from shadow records. ``features``
is a JSON value: ``features->>'device'`` is text, and
``CAST(features->>'amount' AS DOUBLE)`` a number. ``timestamp`` is a
``TIMESTAMPTZ``, so ``timestamp > now() - INTERVAL 24 HOUR`` works.
A line cut short by a writer that is still running is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.errors import ModelServeError
from app.telemetry.prediction_log import (
    FILE_PREFIX,
    FILE_SUFFIX,
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


class EmptyLog(ModelServeError):
    """No prediction log files where they were looked for."""


def log_files(log_dir: Path) -> list[Path]:
    if not log_dir.is_dir():
        raise EmptyLog(f"prediction log directory {log_dir} does not exist (set MODELSERVE_LOG_DIR or --log-dir)")
    files = sorted(log_dir.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"))
    files = [f for f in files if f.stat().st_size > 0]
    if not files:
        raise EmptyLog(f"no prediction log files ({FILE_PREFIX}*{FILE_SUFFIX}) in {log_dir}")
    return files


def connect(log_dir: Path) -> Any:
    """A DuckDB connection (in memory) with the log's views defined."""
    import duckdb

    files = log_files(log_dir)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items()) + "}"
    paths = "[" + ", ".join(_quote(str(f)) for f in files) + "]"
    con.execute(
        f"CREATE VIEW log AS SELECT * FROM read_json({paths}, format = 'newline_delimited', "
        f"columns = {columns}, ignore_errors = true)"
    )
    con.execute(f"CREATE VIEW predictions AS SELECT {PREDICTION_COLUMNS} FROM log WHERE kind = 'prediction'")
    con.execute(f"CREATE VIEW shadow AS SELECT {SHADOW_COLUMNS} FROM log WHERE kind = 'shadow'")
    return con


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"
