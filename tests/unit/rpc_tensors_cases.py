"""``ModelInferRequest`` to columns: the short path (``columns_of``) against the V2 envelope's (``to_request``).

Run by ``test_rpc_tensors.py`` in a process of its own: ``app.rpc``'s messages and
``tritonclient``'s share the ``inference`` package, and protobuf's default pool holds one.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pytest

from app.errors import ValidationFailed
from app.rpc import grpc_predict_v2_pb2 as pb
from app.rpc.tensors import CONTENTS, columns_of, to_request
from app.v2.codec import read_columns
from app.v2.types import DATATYPES, NUMPY

FEATURES = {"amount": DATATYPES["float"], "visits": DATATYPES["int"], "device": ("BYTES",), "new": ("BOOL",)}
EXPECTED = ["user_id", *FEATURES]
NULLABLE = frozenset({"amount"})
ROWS = {
    "user_id": (["u1", "u2", "u3"], "BYTES"),
    "amount": ([1.5, math.nan, -0.25], "FP32"),
    "visits": ([3, -1, 2**40], "INT64"),
    "device": (["ios", "wéb", ""], "BYTES"),
    "new": ([True, False, True], "BOOL"),
}


def message(raw: bool, rows: dict[str, tuple[list[Any], str]] = ROWS, shape: list[int] | None = None) -> Any:
    m = pb.ModelInferRequest(model_name="modelserve", id="req")
    for name, (values, datatype) in rows.items():
        tensor = m.inputs.add(name=name, datatype=datatype, shape=shape or [len(values)])
        encoded = [v.encode() for v in values] if datatype == "BYTES" else values
        if not raw:
            getattr(tensor.contents, CONTENTS[datatype]).extend(encoded)
        elif datatype == "BYTES":
            m.raw_input_contents.append(b"".join(struct.pack("<I", len(v)) + v for v in encoded))
        else:
            m.raw_input_contents.append(np.array(values, dtype=NUMPY[datatype]).tobytes())
    return m


def long_path(m: Any) -> tuple[dict[str, list[Any]], int]:
    request, tensors, offset = to_request(m)
    return read_columns(request, tensors, offset, FEATURES, EXPECTED, 100, NULLABLE)


def same(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> bool:
    """Equal columns, NaN included (there should be none: NaN of a nullable float is None)."""
    return a.keys() == b.keys() and all(repr(a[k]) == repr(b[k]) for k in a)


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_short_path_reads_what_the_envelope_does(raw):
    """Typed and raw contents become the same columns as through ``to_request`` and ``read_columns``."""
    columns, n = columns_of(message(raw), FEATURES, EXPECTED, 100, NULLABLE)
    assert n == 3
    assert same(columns, long_path(message(raw))[0])
    assert columns["amount"][1] is None  # NaN of a nullable float is missing
    assert columns["device"] == ["ios", "wéb", ""]


def test_raw_and_typed_columns_agree():
    """The two encodings of the same rows give the same columns (FP32 values as float32 in both)."""
    typed = columns_of(message(False), FEATURES, EXPECTED, 100, NULLABLE)
    raw = columns_of(message(True), FEATURES, EXPECTED, 100, NULLABLE)
    assert typed is not None and raw is not None
    assert same(typed[0], raw[0])


def irregular() -> dict[str, Any]:
    """Messages the short path leaves to the envelope's path, each with the input the error must name."""
    out: dict[str, Any] = {}
    out["missing input"] = (message(False, {k: v for k, v in ROWS.items() if k != "new"}), "new")
    out["unknown input"] = (message(False, {**ROWS, "extra": ([1.0, 2.0, 3.0], "FP32")}), "extra")
    out["datatype"] = (message(False, {**ROWS, "visits": ([1.0, 2.0, 3.0], "FP32")}), "visits")
    out["shape"] = (message(False, {**ROWS, "amount": ([1.0, 2.0], "FP32")}), "amount")
    m = message(False)
    m.inputs[1].shape[:] = [3, 2]
    out["not a column"] = (m, "amount")
    m = message(False)
    m.inputs[3].contents.bytes_contents[0] = b"\xff"
    out["not UTF-8"] = (m, "device")
    m = message(True)
    m.raw_input_contents[2] = m.raw_input_contents[2][:-1]
    out["raw too short"] = (m, "visits")
    m = message(True)
    m.inputs[4].contents.bool_contents.append(True)
    out["raw and typed"] = (m, "new")
    return out


@pytest.mark.parametrize("case", list(irregular()))
def test_irregular_messages_take_the_long_path(case):
    """Whatever is not plainly well formed is None here, and the envelope's path names the input."""
    m, name = irregular()[case]
    assert columns_of(m, FEATURES, EXPECTED, 100, NULLABLE) is None
    with pytest.raises(ValidationFailed) as exc:
        long_path(m)
    assert name in exc.value.message


def test_batch_over_the_limit_takes_the_long_path():
    assert columns_of(message(False), FEATURES, EXPECTED, 2, NULLABLE) is None
    with pytest.raises(ValidationFailed, match="batch of 3 over 2"):
        request, tensors, offset = to_request(message(False))
        read_columns(request, tensors, offset, FEATURES, EXPECTED, 2, NULLABLE)
