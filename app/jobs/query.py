"""``modelserve query "SQL"``: SQL over the prediction log with DuckDB.

The views are those of :mod:`app.jobs.logdata` (``predictions``, ``shadow``, ``labels``,
``log``). Output is an aligned text table (default), CSV or JSON (one array
of objects; timestamps in ISO 8601).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from app.errors import ModelServeError
from app.jobs.logdata import connect

Format = Literal["table", "csv", "json"]


JSON_COLUMNS = (
    "prediction, probabilities, features and label are JSON values: compare text as prediction->>'$' = 'yes',"
    " numbers as CAST(prediction AS DOUBLE)"
)
"""The hint for DuckDB's error when a JSON column is compared with a text literal (``prediction = 'yes'``)."""


class QueryFailed(ModelServeError):
    pass


def run_query(log_dir: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    import duckdb

    con = connect(log_dir)
    try:
        cursor = con.execute(sql)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Malformed JSON" in first:
            first += f"; {JSON_COLUMNS}"
        raise QueryFailed(f"query failed: {first}") from None
    if cursor.description is None:
        return [], []
    names = [d[0] for d in cursor.description]
    return names, cursor.fetchall()


def render(names: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Format) -> str:
    if fmt == "json":
        return orjson.dumps(
            [dict(zip(names, row, strict=True)) for row in rows],
            default=str,
            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
        ).decode()
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_cell(v) for v in row] for row in rows)
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(names))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    out = [line(list(names)), "  ".join("-" * w for w in widths), *(line(r) for r in cells)]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(s.rstrip() for s in out)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) or v is None


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if hasattr(v, "isoformat"):
        return str(v.isoformat())
    return str(v)
