"""app.jobs.logdata.Frame: DuckDB results as numpy columns, NULLs never read as the fill value."""

from __future__ import annotations

import math

import duckdb
import numpy as np

from app.jobs.logdata import Frame

SQL = """SELECT * FROM (VALUES
    (1, 0.5, 'a', true, 7),
    (2, NULL, NULL, false, NULL),
    (3, 2.0, 'b', true, 9)
) t(win, x, s, flag, n)"""


def frame() -> Frame:
    return Frame.of(duckdb.connect().execute(SQL))


def test_columns_and_length():
    f = frame()
    assert f.columns == ["win", "x", "s", "flag", "n"] and len(f) == 3


def test_nulls_read_as_nan_in_numbers_and_none_elsewhere():
    f = frame()
    assert f["x"].dtype == np.float64 and math.isnan(f["x"][1]) and f["x"][2] == 2.0
    assert f["n"].dtype == np.float64 and math.isnan(f["n"][1]) and f["n"][0] == 7  # ints with NULLs turn float
    assert list(f["s"]) == ["a", None, "b"]
    assert f["win"].dtype.kind == "i" and not np.ma.isMaskedArray(f["win"])


def test_where_keeps_the_rows_of_a_mask():
    f = frame()
    part = f.where(f["win"] >= 2)
    assert len(part) == 2 and list(part["s"]) == [None, "b"]
    assert len(f.where(f["win"] > 5)) == 0


def test_an_empty_result_has_its_columns():
    f = Frame.of(duckdb.connect().execute(SQL + " WHERE win > 5"))
    assert len(f) == 0 and f.columns == ["win", "x", "s", "flag", "n"]
