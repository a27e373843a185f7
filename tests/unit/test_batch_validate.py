"""Vectorised batch validation gives every row exactly the decoder's errors."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pyarrow as pa
import pytest

from app.errors import ValidationFailed
from app.jobs.validate import BadColumns, check_columns, convert_csv_table, merge, validate_table
from app.model.decoder import Decoder
from app.model.repository import Repository
from tests.support.workspace import Workspace

# Values per Arrow type, good and bad, for the request features of the demo model
# (amount: float, device: string, score: nullable float, first_purchase: bool).
CORPUS: dict[str, list[tuple[pa.DataType, list[Any]]]] = {
    "user_id": [
        (pa.string(), ["u-00001", "", "x" * 128, "x" * 129, None, "ü" * 128]),
        (pa.int64(), [1, None]),
    ],
    "amount": [
        (pa.float64(), [1.5, 0.0, -3.0, math.nan, math.inf, -math.inf, None, 1e308]),
        (pa.float32(), [2.5, math.nan, None]),
        (pa.int64(), [3, -7, None]),
        (pa.string(), ["1.5", None]),
        (pa.bool_(), [True, None]),
    ],
    "device": [
        (pa.string(), ["ios", "unknown-device", "", "d" * 256, "d" * 257, "é" * 256, "é" * 257, None]),
        (pa.int64(), [1, None]),
        (pa.float64(), [1.0]),
    ],
    "score": [
        (pa.float64(), [0.5, None, math.nan, math.inf]),
        (pa.int64(), [1, None]),
        (pa.string(), ["0.5", None]),
        (pa.null(), [None]),
    ],
    "first_purchase": [
        (pa.bool_(), [True, False, None]),
        (pa.int64(), [1, 0, None]),
        (pa.string(), ["true"]),
    ],
    "request_id": [
        (pa.string(), ["r-1", None, "", "r" * 128, "r" * 129]),
    ],
}


def decoder_errors(decoder: Decoder, row: dict[str, Any]) -> list[tuple[Any, ...]]:
    instance: dict[str, Any] = {"features": {k: v for k, v in row.items() if k not in ("user_id", "request_id")}}
    if "user_id" in row:
        instance["user_id"] = row["user_id"]
    if row.get("request_id") is not None:  # a null request_id in a file means "not given"
        instance["request_id"] = row["request_id"]
    try:
        decoder.validate_python(instance)
    except ValidationFailed as exc:
        return sorted((tuple(d["loc"]), d["type"], d["msg"]) for d in exc.detail)
    return []


def tables() -> list[pa.Table]:
    """One table per combination of column types, the columns' values cycled to a common length."""
    out = []
    names = list(CORPUS)
    for types in itertools.product(*(range(len(CORPUS[n])) for n in names)):
        chosen = [CORPUS[n][t] for n, t in zip(names, types, strict=True)]
        length = max(len(values) for _, values in chosen)
        columns = {
            n: pa.array([values[i % len(values)] for i in range(length)], type=t)
            for n, (t, values) in zip(names, chosen, strict=True)
        }
        out.append(pa.table(columns))
    return out


@pytest.fixture(scope="module")
def manifest(trained: Workspace) -> Any:
    return Repository(trained.models_dir).read_manifest("v2")


class TestEquivalence:
    def test_every_row_gets_the_decoders_errors(self, manifest: Any) -> None:
        """Over every combination of column types and a corpus of good and bad values, the
        vectorised checks reject exactly the rows the decoder rejects, with the same errors."""
        decoder = Decoder(manifest)
        rows_checked = rejected = 0
        for table in tables():
            checked = validate_table(table, manifest)
            for i, row in enumerate(table.to_pylist()):
                want = decoder_errors(decoder, row)
                got = sorted((tuple(d["loc"]), d["type"], d["msg"]) for d in checked.errors.get(i, []))
                assert got == want, (row, table.schema)
                assert bool(checked.valid[i]) == (not want)
                rows_checked += 1
                rejected += bool(want)
        assert rows_checked > 1000 and 0 < rejected < rows_checked

    def test_csv_text_is_converted_then_checked(self, manifest: Any) -> None:
        """CSV cells are numbers/bools only when they read as one; otherwise the decoder's type error."""
        text = {
            "user_id": ["u-1", "u-2", "u-3", "u-4", None],
            "amount": ["1.5", "abc", " 2e3 ", None, "7"],
            "device": ["ios", "web", "x", "y", "z"],
            "score": ["", "0.5", "nan", "0.1", None],
            "first_purchase": ["true", "FALSE", "yes", "false", "true"],
        }
        table = pa.table({k: pa.array(v, pa.string()) for k, v in text.items()})
        converted, conversion = convert_csv_table(table, manifest)
        checked = merge(validate_table(converted, manifest), conversion)
        assert converted.column("amount").to_pylist() == [1.5, None, 2000.0, None, 7.0]
        assert checked.valid.tolist() == [True, False, False, False, False]
        kinds = {i: sorted(e["type"] for e in errs) for i, errs in checked.errors.items()}
        assert kinds == {
            1: ["float_type"],
            2: ["bool_type", "float_type"],
            3: ["float_type"],
            4: ["string_type"],
        }


class TestColumns:
    def test_missing_and_unknown_columns_refuse_the_file(self, manifest: Any) -> None:
        """A file lacking a feature or carrying an unknown column is refused as a whole, naming them."""
        check_columns(["user_id", "amount", "device", "score", "first_purchase", "request_id"], manifest)
        with pytest.raises(BadColumns, match=r"missing columns \['score'\].*unknown columns \['extra'\]"):
            check_columns(["user_id", "amount", "device", "first_purchase", "extra"], manifest)
