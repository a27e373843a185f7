"""Vectorised row validation for batch files: the /predict decoder's rules over Arrow columns.

Per-row pydantic validation costs ~10 µs a row; these checks run on whole
columns and give every row the same errors ``Decoder.validate_python``
would give the instance ``{"user_id", "features": {...}, "request_id"}``
built from that row (``tests/unit/test_batch_validate.py`` proves it on a
corpus of good and bad rows). The rules, per manifest dtype:

* ``float``: integer or floating columns; NaN/±inf → ``finite_number``, beyond float32 → ``float32_range``;
* ``int``: integer columns only (strict: a float, even ``3.0``, is refused), within 64 bits;
* ``bool``: boolean columns only; ``string``: string columns, ≤ ``MAX_STRING`` characters;
* a column of another type refuses every value (``*_type``), as the decoder
  refuses a string for a number;
* null only where the feature is nullable;
* ``user_id``: a string of 1–128 characters, required when the model has store
  features; ``request_id``: optional — in a columnar file a null means "not given".

Missing and unknown columns concern the whole file, not a row: they are
reported at once by :func:`check_columns` instead of rejecting every row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.errors import ModelServeError
from app.model.decoder import FLOAT32_OVERFLOW, FLOAT32_RANGE, INT64_MAX, INT64_MIN, MAX_STRING
from app.model.manifest import Manifest

USER_ID_MAX = 128
REQUEST_ID_MAX = 128
OPTIONAL_COLUMNS = ("request_id",)

_TYPE_ERROR = {
    "float": ("float_type", "Input should be a valid number"),
    "int": ("int_type", "Input should be a valid integer"),
    "bool": ("bool_type", "Input should be a valid boolean"),
    "string": ("string_type", "Input should be a valid string"),
}
_FINITE = ("finite_number", "Input should be a finite number")
_INT64_OVER = ("less_than_equal", f"Input should be less than or equal to {INT64_MAX}")
_INT64_UNDER = ("greater_than_equal", f"Input should be greater than or equal to {INT64_MIN}")


def _too_long(n: int) -> tuple[str, str]:
    return ("string_too_long", f"String should have at most {n} characters")


_TOO_SHORT = ("string_too_short", "String should have at least 1 character")
UNKNOWN_USER = {"loc": ["user_id"], "msg": "unknown user", "type": "unknown_user"}


class BadColumns(ModelServeError):
    pass


def expected_columns(manifest: Manifest) -> list[str]:
    """Columns a batch file must have: user_id (if store features) and the request features."""
    user = ["user_id"] if manifest.store_features else []
    return [*user, *(f.name for f in manifest.request_features)]


def check_columns(names: Sequence[str], manifest: Manifest) -> None:
    """Refuse a file whose columns are not exactly the expected ones (+ optional ones), each named once."""
    expected = expected_columns(manifest)
    allowed = {*expected, *OPTIONAL_COLUMNS, "user_id"}
    missing = [c for c in expected if c not in names]
    unknown = [c for c in names if c not in allowed]
    twice = sorted(c for c, n in Counter(names).items() if n > 1)  # which of them is meant cannot be known
    if missing or unknown or twice:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if unknown:
            parts.append(f"unknown columns {unknown}")
            if any(not c.strip() or c.startswith("Unnamed: ") for c in unknown):
                parts[-1] += " (a column without a name: a DataFrame index written by to_csv? write with index=False)"
        if twice:
            parts.append(f"columns named more than once {twice}")
        raise BadColumns(f"input {' and '.join(parts)}; expected {expected} (+ optional {list(OPTIONAL_COLUMNS)})")


@dataclass
class Checked:
    """Which rows passed, and the decoder-shaped errors of those that did not."""

    valid: np.ndarray
    errors: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    inputs: dict[int, Any] = field(default_factory=dict)
    """Refused rows as read, where the typed table cannot show them (a CSV's text: its "abc" is null there;
    a JSONL line's object, or its text when it is not one)."""

    @property
    def rejected(self) -> int:
        return len(self.errors)


class _Collector:
    def __init__(self, n: int) -> None:
        self.n = n
        self.checks: list[tuple[np.ndarray, list[str | int], tuple[str, str]]] = []

    def add(self, mask: np.ndarray, loc: list[str | int], error: tuple[str, str]) -> None:
        if mask.any():
            self.checks.append((mask, loc, error))

    def result(self) -> Checked:
        bad = np.zeros(self.n, dtype=bool)
        for mask, _, _ in self.checks:
            bad |= mask
        errors: dict[int, list[dict[str, Any]]] = {}
        for mask, loc, (kind, msg) in self.checks:  # in decoder order: user_id, features..., request_id
            for i in np.flatnonzero(mask).tolist():
                errors.setdefault(i, []).append({"loc": loc, "msg": msg, "type": kind})
        return Checked(~bad, errors)


def _np(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(a.to_numpy(zero_copy_only=False), dtype=bool)


def _plain(a: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    if pa.types.is_dictionary(a.type):
        a = a.dictionary_decode()
    return a


def _string_checks(
    c: _Collector, a: pa.Array, loc: list[str | int], nulls_ok: bool, min_len: int, max_len: int
) -> None:
    nulls = _np(a.is_null())
    if not (pa.types.is_string(a.type) or pa.types.is_large_string(a.type)):
        c.add(~nulls | (nulls & (not nulls_ok)), loc, _TYPE_ERROR["string"])
        return
    if not nulls_ok:
        c.add(nulls, loc, _TYPE_ERROR["string"])
    lengths = pc.utf8_length(a).to_numpy(zero_copy_only=False)
    lengths = np.where(nulls, 0, np.nan_to_num(lengths.astype(np.float64), nan=0.0))
    if min_len > 0:
        c.add(~nulls & (lengths < min_len), loc, _TOO_SHORT)
    c.add(~nulls & (lengths > max_len), loc, _too_long(max_len))


def validate_table(table: pa.Table, manifest: Manifest) -> Checked:
    """Check every row of ``table`` (columns already passed :func:`check_columns`)."""
    c = _Collector(table.num_rows)
    needs_user = bool(manifest.store_features)
    if "user_id" in table.column_names:
        _string_checks(c, _plain(table.column("user_id")), ["user_id"], not needs_user, 1, USER_ID_MAX)
    for f in manifest.request_features:
        a = _plain(table.column(f.name))
        loc: list[str | int] = ["features", f.name]
        t = a.type
        nulls = _np(a.is_null())
        type_error = _TYPE_ERROR[f.dtype]
        null_bad = nulls if not f.nullable else np.zeros(len(a), dtype=bool)
        if f.dtype == "string":
            _string_checks(c, a, loc, f.nullable, 0, MAX_STRING)
            continue
        if f.dtype == "float":
            ok_type = (pa.types.is_integer(t) or pa.types.is_floating(t)) or pa.types.is_null(t)
        elif f.dtype == "int":
            ok_type = pa.types.is_integer(t) or pa.types.is_null(t)
        else:
            ok_type = pa.types.is_boolean(t) or pa.types.is_null(t)
        if not ok_type:
            c.add(~nulls | null_bad, loc, type_error)
            continue
        c.add(null_bad, loc, type_error)
        if f.dtype == "int" and t == pa.uint64():  # the only integer type reaching past int64
            beyond = pc.fill_null(pc.greater(a, pa.scalar(INT64_MAX, pa.uint64())), False)
            c.add(_np(beyond), loc, _INT64_OVER)
        if f.dtype == "float" and pa.types.is_floating(t):
            finite = pc.fill_null(pc.is_finite(a), True)
            c.add(~_np(finite), loc, _FINITE)
            beyond = pc.fill_null(pc.greater_equal(pc.abs(a), FLOAT32_OVERFLOW), False)
            c.add(_np(finite) & _np(beyond), loc, FLOAT32_RANGE)
    if "request_id" in table.column_names:
        _string_checks(c, _plain(table.column("request_id")), ["request_id"], True, 1, REQUEST_ID_MAX)
    return c.result()


# --- CSV: text cells to typed columns ------------------------------------------
_FLOAT_RE = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
_INT_RE = r"^\s*[+-]?\d+\s*$"


def convert_csv_table(table: pa.Table, manifest: Manifest) -> tuple[pa.Table, Checked | None]:
    """Typed columns from a CSV read as text (empty cell = null).

    An empty (or blank) cell is null. A number is a decimal literal (``1``, ``-2.5``, ``1e3``), a bool is
    ``true``/``false`` (any case). A cell that is not one is refused with the
    error the decoder gives a string where that type belongs. Returns the
    converted table and the conversion errors (``None`` when there were none).
    """
    c = _Collector(table.num_rows)
    columns = {}
    by_name = {f.name: f for f in manifest.request_features}
    for name in table.column_names:
        a = _plain(table.column(name))
        f = by_name.get(name)
        if f is None or f.dtype == "string" or not pa.types.is_string(a.type):
            columns[name] = a
            continue
        blank = pc.equal(pc.utf8_trim_whitespace(a), "")
        nulls = _np(pc.fill_null(pc.or_(a.is_null(), blank), True))
        a = pc.if_else(pa.array(nulls), pa.scalar(None, pa.string()), a)
        if f.dtype == "bool":
            lower = pc.utf8_lower(pc.utf8_trim_whitespace(a))
            is_true = _np(pc.fill_null(pc.equal(lower, "true"), False))
            is_false = _np(pc.fill_null(pc.equal(lower, "false"), False))
            bad = ~nulls & ~is_true & ~is_false
            columns[name] = pa.array(is_true, mask=nulls | bad)
        else:
            pattern = _FLOAT_RE if f.dtype == "float" else _INT_RE
            good = _np(pc.fill_null(pc.match_substring_regex(a, pattern), False))
            bad = ~nulls & ~good
            cleaned = pc.if_else(pa.array(good), pc.utf8_trim_whitespace(a), pa.scalar(None, pa.string()))
            if f.dtype == "int":
                cleaned = _int64_cells(c, cleaned, ["features", name])
            columns[name] = pc.cast(cleaned, pa.float64() if f.dtype == "float" else pa.int64())
        c.add(bad, ["features", name], _TYPE_ERROR[f.dtype])
    converted = pa.table(columns)
    return converted, (c.result() if c.checks else None)


def _int64_cells(c: _Collector, cells: pa.Array, loc: list[Any]) -> pa.Array:
    """Integer literals with those beyond 64 bits nulled and refused with the decoder's bound errors."""
    try:
        pc.cast(cells, pa.int64())
        return cells
    except pa.ArrowInvalid:  # rare: find the cells that overflow, one by one
        pass
    values = [None if v is None else int(v) for v in cells.to_pylist()]
    over = np.array([v is not None and v > INT64_MAX for v in values], dtype=bool)
    under = np.array([v is not None and v < INT64_MIN for v in values], dtype=bool)
    c.add(over, loc, _INT64_OVER)
    c.add(under, loc, _INT64_UNDER)
    return pc.if_else(pa.array(over | under), pa.scalar(None, pa.string()), cells)


def merge(a: Checked, b: Checked | None) -> Checked:
    """Errors of two passes over the same rows, conversion errors first."""
    if b is None:
        return a
    errors = {i: list(errs) for i, errs in b.errors.items()}
    for i, errs in a.errors.items():
        known = {(tuple(e["loc"])) for e in errors.get(i, [])}
        errors.setdefault(i, []).extend(e for e in errs if tuple(e["loc"]) not in known)
    return Checked(a.valid & b.valid, errors)
