"""The V2 codec on its own: tensors (JSON and binary) to columns, columns to rows, error entries."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from app.errors import ValidationFailed
from app.model.decoder import Decoder
from app.model.manifest import Manifest
from app.v2.codec import (
    NO_USER,
    column,
    decode_rows,
    failed,
    from_binary,
    one_row_json,
    read_columns,
    row_loc,
    user_row_loc,
)
from app.v2.types import DATATYPES, parse_request, requested_outputs

FEATURES = {"amount": ("FP32", "FP64"), "visits": DATATYPES["int"], "device": ("BYTES",), "new": ("BOOL",)}
EXPECTED = ["user_id", *FEATURES]


def manifest() -> Manifest:
    return Manifest.model_validate(
        {
            "version": "v1",
            "created_at": "2026-01-01T00:00:00Z",
            "task": "binary_classification",
            "features": [
                {"name": "age", "dtype": "int", "source": "store"},
                {"name": "amount", "dtype": "float", "source": "request"},
                {"name": "visits", "dtype": "int", "source": "request"},
                {"name": "device", "dtype": "string", "source": "request", "categories": ["ios", "web"]},
                {"name": "new", "dtype": "bool", "source": "request", "nullable": True},
            ],
            "outputs": {},
            "sample": {"request": {}, "row": {}, "expected": {}},
            "files": {},
        }
    )


def tensor(name: str, datatype: str, data: list[Any] | None = None, shape: list[int] | None = None, **params: Any):
    inp: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape or [len(data or [])]}
    if data is not None:
        inp["data"] = data
    if params:
        inp["parameters"] = params
    return inp


def bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def problems(call) -> list[dict[str, Any]]:
    with pytest.raises(ValidationFailed) as info:
        call()
    return info.value.detail


def read(inputs: list[dict[str, Any]], binary: bytes = b"", max_batch: int = 100, header: bool | None = None):
    """``read_columns`` on a request of ``inputs``, with ``binary`` appended after the JSON header."""
    head = orjson.dumps({"inputs": inputs})
    body = head + binary
    header_length = len(head) if (binary or header) else None
    request = parse_request(body, header_length)
    return read_columns(request, body, header_length, FEATURES, EXPECTED, max_batch)


class TestJsonColumns:
    @pytest.mark.parametrize(
        ("datatype", "data"),
        [
            ("FP32", [1.5, -2.0]),
            ("FP64", [1e300, 0.0]),
            ("INT64", [2**62, -1]),
            ("UINT8", [0, 255]),
            ("BOOL", [True, False]),
            ("BYTES", ["ios", "web"]),
        ],
    )
    def test_each_datatype(self, datatype, data):
        """JSON data of every accepted datatype comes back as the same flat values."""
        errors: list[dict[str, Any]] = []
        assert column(tensor("x", datatype, data), (datatype,), None, errors) == data
        assert errors == []

    def test_nested_n_by_1(self):
        """Data nested as shape [N, 1] says is flattened to N values."""
        errors: list[dict[str, Any]] = []
        assert column(tensor("x", "FP32", [[1.0], [2.0]], shape=[2, 1]), ("FP32",), None, errors) == [1.0, 2.0]

    def test_shape_mismatch(self):
        """Data whose length is not the shape's N is refused at the input's data."""
        errors: list[dict[str, Any]] = []
        assert column(tensor("x", "FP32", [1.0, 2.0], shape=[3]), ("FP32",), None, errors) is None
        assert errors == [
            {"loc": ["body", "inputs", "x", "data"], "msg": "data does not match shape [3]", "type": "shape"}
        ]

    @pytest.mark.parametrize("shape", [[2, 2], [0], [1, 1, 1]])
    def test_shape_not_a_column(self, shape):
        """A shape other than [N] or [N, 1] with N >= 1 is refused at the input's shape."""
        errors: list[dict[str, Any]] = []
        assert column(tensor("x", "FP32", [1.0], shape=shape), ("FP32",), None, errors) is None
        assert [e["loc"] for e in errors] == [["body", "inputs", "x", "shape"]]

    def test_datatype_not_accepted(self):
        """A datatype the feature does not take is refused, the message naming those it does."""
        errors: list[dict[str, Any]] = []
        assert column(tensor("x", "BYTES", ["1"]), ("FP32", "FP64"), None, errors) is None
        assert errors[0]["loc"][-1] == "datatype"
        assert "use FP32 or FP64" in errors[0]["msg"]

    def test_nested_containers_refused(self):
        """An element that is itself a list or object does not pass as a value."""
        errors: list[dict[str, Any]] = []
        assert column(tensor("x", "FP32", [[1.0, 2.0]], shape=[1]), ("FP32",), None, errors) is None
        assert errors[0]["type"] == "shape"


class TestBinaryColumns:
    @pytest.mark.parametrize(
        ("datatype", "values"),
        [
            ("FP32", [1.5, -2.25]),
            ("FP64", [1e300, -0.5]),
            ("INT64", [2**62, -7]),
            ("INT32", [2**31 - 1, -1]),
            ("INT16", [-32768, 5]),
            ("INT8", [-128, 127]),
            ("UINT64", [2**64 - 1, 0]),
            ("UINT32", [2**32 - 1, 1]),
            ("UINT16", [65535, 2]),
            ("UINT8", [255, 3]),
        ],
    )
    def test_each_fixed_size_datatype(self, datatype, values):
        """Little-endian binary of every fixed-size datatype decodes to the values it encodes."""
        from app.v2.types import NUMPY

        raw = np.array(values, dtype=NUMPY[datatype]).tobytes()
        errors: list[dict[str, Any]] = []
        assert from_binary("x", datatype, raw, len(values), errors) == values
        assert errors == []

    def test_bool(self):
        """BOOL bytes 0 and 1 decode to False and True; any other byte is refused."""
        errors: list[dict[str, Any]] = []
        assert from_binary("x", "BOOL", b"\x01\x00", 2, errors) == [True, False]
        assert from_binary("x", "BOOL", b"\x02", 1, errors) is None
        assert errors == [
            {"loc": ["body", "inputs", "x", "data"], "msg": "BOOL bytes must be 0 or 1", "type": "binary_data"}
        ]

    def test_bytes(self):
        """BYTES elements (uint32 length + UTF-8) decode to strings, empty and non-ASCII included."""
        errors: list[dict[str, Any]] = []
        raw = bytes_tensor([b"ios", b"", "café".encode()])
        assert from_binary("x", "BYTES", raw, 3, errors) == ["ios", "", "café"]
        assert errors == []

    @pytest.mark.parametrize(
        "raw",
        [struct.pack("<I", 5) + b"abc", b"\x01\x00", struct.pack("<I", 2) + b"\xff\xfe"],
        ids=["truncated element", "truncated length", "not utf-8"],
    )
    def test_bad_bytes(self, raw):
        """Truncated or non-UTF-8 BYTES binary data is refused as bad binary data."""
        errors: list[dict[str, Any]] = []
        assert from_binary("x", "BYTES", raw, 1, errors) is None
        assert errors[0]["type"] == "binary_data"
        assert errors[0]["msg"].startswith("bad BYTES binary data")

    def test_bytes_count_mismatch(self):
        """A BYTES tensor with more elements than its shape says is a shape error."""
        errors: list[dict[str, Any]] = []
        assert from_binary("x", "BYTES", bytes_tensor([b"a", b"b"]), 1, errors) is None
        assert errors[0] == {
            "loc": ["body", "inputs", "x", "data"],
            "msg": "more than 1 values for shape [1]",
            "type": "shape",
        }

    def test_wrong_byte_length(self):
        """Fixed-size binary data not exactly N × the item size is refused, naming both."""
        errors: list[dict[str, Any]] = []
        assert from_binary("x", "FP32", b"\x00" * 7, 2, errors) is None
        assert errors[0]["msg"] == "7 bytes is not 2 × FP32"

    def test_data_and_binary_both(self):
        """An input with both JSON data and binary data is refused."""
        errors: list[dict[str, Any]] = []
        assert column(tensor("x", "FP32", [1.0]), ("FP32",), b"\x00" * 4, errors) is None
        assert errors[0]["type"] == "binary_size"


class TestReadColumns:
    def inputs(self, n: int = 2) -> list[dict[str, Any]]:
        return [
            tensor("user_id", "BYTES", [f"u{i}" for i in range(n)]),
            tensor("amount", "FP64", [1.0] * n),
            tensor("visits", "INT32", [3] * n),
            tensor("device", "BYTES", ["ios"] * n),
            tensor("new", "BOOL", [True] * n),
        ]

    def test_json_request(self):
        """Every input becomes a column by name and N is their common length."""
        columns, n = read(self.inputs())
        assert n == 2
        assert columns["user_id"] == ["u0", "u1"]
        assert columns["visits"] == [3, 3]

    def test_binary_in_input_order(self):
        """Binary tensors are read after the JSON header in the order the inputs are listed."""
        inputs = self.inputs()
        inputs[1] = tensor("amount", "FP32", shape=[2], binary_data_size=8)
        inputs[3] = tensor("device", "BYTES", shape=[2], binary_data_size=14)
        binary = np.array([0.5, 2.0], dtype="<f4").tobytes() + bytes_tensor([b"ios", b"web"])
        columns, _ = read(inputs, binary)
        assert columns["amount"] == [0.5, 2.0]
        assert columns["device"] == ["ios", "web"]

    def test_unclaimed_and_short_binary(self):
        """Binary bytes no input claims, or fewer than an input claims, are refused."""
        inputs = self.inputs()
        inputs[1] = tensor("amount", "FP32", shape=[2], binary_data_size=8)
        detail = problems(lambda: read(inputs, b"\x00" * 12))
        assert detail == [{"loc": ["body"], "msg": "4 bytes of binary data unclaimed", "type": "binary_size"}]
        detail = problems(lambda: read(inputs, b"\x00" * 4))
        assert detail[0]["msg"] == "binary data shorter than binary_data_size"

    def test_short_binary_is_one_problem(self):
        """A body shorter than the binary tensors claim is named once, at the tensor: the bytes it
        lacks are not also counted as a negative number of unclaimed bytes."""
        inputs = self.inputs()
        inputs[1] = tensor("amount", "FP32", shape=[2], binary_data_size=8)
        with pytest.raises(ValidationFailed) as info:
            read(inputs, b"\x00" * 4)
        assert info.value.detail == [
            {
                "loc": ["body", "inputs", "amount", "data"],
                "msg": "binary data shorter than binary_data_size",
                "type": "binary_size",
            }
        ]
        assert info.value.message == "invalid input: 1 error(s) in amount"

    def test_binary_size_needs_header(self):
        """binary_data_size without the header length, or not a whole number, is refused at parameters."""
        inputs = self.inputs()
        inputs[1] = tensor("amount", "FP32", shape=[2], binary_data_size=8)
        detail = problems(lambda: read(inputs))
        assert detail[0]["loc"] == ["body", "inputs", "amount", "parameters"]
        inputs[1] = tensor("amount", "FP32", shape=[2], binary_data_size=True)
        detail = problems(lambda: read(inputs, header=True))
        assert detail[0]["msg"] == "binary_data_size must be a whole number"

    def test_missing_unknown_duplicate(self):
        """Missing, unknown and repeated inputs are all reported at once, each by name."""
        inputs = [*self.inputs()[1:], tensor("colour", "BYTES", ["red", "red"]), tensor("new", "BOOL", [True, True])]
        detail = problems(lambda: read(inputs))
        assert {(e["loc"][2], e["type"]) for e in detail} == {
            ("colour", "extra_input"),
            ("new", "duplicate_input"),
            ("user_id", "missing_input"),
        }

    def test_batch_sizes(self):
        """Inputs of different lengths, or a batch over the limit, are refused at the inputs."""
        inputs = self.inputs()
        inputs[0] = tensor("user_id", "BYTES", ["u0"])
        assert problems(lambda: read(inputs))[0]["msg"].startswith("inputs differ in batch size: user_id=1, amount=2")
        assert problems(lambda: read(self.inputs(3), max_batch=2)) == [
            {"loc": ["body", "inputs"], "msg": "batch of 3 over 2", "type": "batch_size"}
        ]

    def test_binary_tensor_over_the_batch_limit_is_refused_undecoded(self):
        """A binary tensor whose shape is over the batch limit is refused at its shape; its data is never read
        (here it is not even valid BYTES data, and that is not reported)."""
        inputs = self.inputs()
        inputs[0] = tensor("user_id", "BYTES", shape=[3], binary_data_size=6)
        detail = problems(lambda: read(inputs, binary=b"\xff" * 6, max_batch=2, header=True))
        expected = {"loc": ["body", "inputs", "user_id", "shape"], "msg": "batch of 3 over 2", "type": "batch_size"}
        assert expected in detail
        assert not any(e["type"] == "binary_data" for e in detail), detail


def one_row() -> dict[str, Any]:
    return {
        "inputs": [
            tensor("user_id", "BYTES", ["u1"]),
            tensor("amount", "FP32", [1.5]),
            tensor("visits", "INT64", [3]),
            tensor("device", "BYTES", ["ios"]),
            tensor("new", "BOOL", [None]),
        ]
    }


def variant(change: Any) -> bytes:
    doc = one_row()
    change(doc)
    return orjson.dumps(doc)


def set_input(i: int, **fields: Any) -> Any:
    return lambda doc: doc["inputs"][i].update(fields)


class TestOneRowJson:
    """The one-pass reader of the common request agrees with ``parse_request`` + ``read_columns`` or stands aside."""

    def general(self, body: bytes) -> tuple[Any, Any]:
        """What the general path makes of ``body``: (request, columns), or the errors it answers."""
        try:
            request = parse_request(body, None)
            return request, read_columns(request, body, None, FEATURES, EXPECTED, 100)[0]
        except ValidationFailed as exc:
            return None, exc.detail

    def columns(self, got: tuple[Any, dict[str, Any], Any]) -> tuple[Any, Any]:
        """The reader's answer as the general path's: (request, one column per input)."""
        request, values, user = got
        users = {} if user is NO_USER else {"user_id": [user]}
        return request, {**users, **{name: [value] for name, value in values.items()}}

    def test_plain_request_read_as_the_general_path_reads_it(self):
        """A plain one-row request gives the same request and columns, values of every datatype as sent."""
        body = variant(lambda doc: doc.update(id="r-1", parameters={"x": 1}, outputs=[{"name": "label"}]))
        got = one_row_json(body, FEATURES, True)
        assert got is not None
        assert self.columns(got) == self.general(body)
        assert got[1:] == ({"amount": 1.5, "visits": 3, "device": "ios", "new": None}, "u1")

    @pytest.mark.parametrize(
        "change",
        [
            set_input(1, shape=[1, 1]),  # [N, 1] with flat data
            set_input(2, datatype="UINT8"),  # any accepted integer datatype, its values within its range
            set_input(2, datatype="INT8", data=[-128]),
            set_input(1, data=[3]),  # an int for a float
            lambda doc: doc["inputs"].reverse(),  # any input order
        ],
    )
    def test_other_plain_forms_agree(self, change):
        """Other forms the reader takes: the same request and columns as the general path."""
        body = variant(change)
        got = one_row_json(body, FEATURES, True)
        assert got is not None
        assert self.columns(got) == self.general(body)

    @pytest.mark.parametrize(
        "body",
        [
            variant(set_input(1, shape=[True])),  # true equals 1 but is no int
            variant(set_input(1, shape=[1.0])),
            variant(set_input(1, shape=[2], data=[1.0, 2.0])),
            variant(set_input(1, shape=[1, 1], data=[[1.5]])),  # nested: the general path unwraps it
            variant(set_input(1, data=[[1.5]])),
            variant(set_input(1, data=[])),
            variant(set_input(1, datatype="INT64")),
            variant(set_input(1, parameters={"binary_data_size": 4})),
            variant(set_input(1, parameters={})),
            variant(set_input(1, name="amount2")),
            variant(set_input(1, name="visits")),  # duplicate
            variant(set_input(0, datatype="FP32")),
            variant(lambda doc: doc["inputs"].pop()),  # missing
            variant(lambda doc: doc["inputs"].append(tensor("extra", "FP32", [1.0]))),
            variant(lambda doc: doc.update(id="")),
            variant(lambda doc: doc.update(id="x" * 101)),
            variant(lambda doc: doc.update(id=None)),
            variant(lambda doc: doc.update(id=7)),
            variant(lambda doc: doc.update(parameters=[])),
            variant(lambda doc: doc.update(outputs=[{"name": 1}])),
            variant(lambda doc: doc.update(outputs=[{"name": "label", "extra": 1}])),
            variant(lambda doc: doc.update(outputs={})),
            variant(lambda doc: doc.update(other=1)),
            variant(lambda doc: doc.update(inputs=[])),
            variant(lambda doc: doc["inputs"][0].pop("shape")),
            # beyond 64 bits: orjson reads a float where pydantic reads an int
            variant(set_input(1, data=["<>"])).replace(b'"<>"', b"18446744073709551616"),
            variant(set_input(1, shape=["<>"])).replace(b'"<>"', b"18446744073709551616"),
            variant(set_input(1, data=["<>"])).replace(b'"<>"', b"1e400"),  # orjson refuses, pydantic reads inf
            variant(set_input(1, data=["<>"])).replace(b'"<>"', b"NaN"),
            variant(set_input(2, datatype="UINT8", data=[256])),  # outside the datatype: the general path names it
            variant(set_input(2, datatype="INT8", data=[-129])),
            b"[]",
            b"",
            b"{",
        ],
    )
    def test_anything_else_left_to_the_general_path(self, body):
        """Every other form, valid or not, is None: the general path reads it or names what is wrong."""
        assert one_row_json(body, FEATURES, True) is None

    def test_user_id_only_where_the_model_takes_it(self):
        """Without store features a ``user_id`` input is not the common request."""
        doc = one_row()
        assert one_row_json(orjson.dumps(doc), FEATURES, False) is None
        doc["inputs"].pop(0)
        got = one_row_json(orjson.dumps(doc), FEATURES, False)
        assert got == (doc, {i["name"]: i["data"][0] for i in doc["inputs"]}, NO_USER)


class TestRows:
    def test_request_ids_per_row(self):
        """A single row keeps the request id; row i of a batch gets ``id:i``."""
        decoder = Decoder(manifest())
        columns = {"user_id": ["a", "b"], "amount": [1.0, 2.0], "visits": [1, 2], "device": ["ios", "web"]}
        columns["new"] = [None, True]
        rows = decode_rows(decoder, columns, 2, "req", list(FEATURES))
        assert [r.request_id for r in rows] == ["req:0", "req:1"]
        assert [r.user_id for r in rows] == ["a", "b"]
        assert rows[1].features == {"amount": 2.0, "visits": 2, "device": "web", "new": True}
        one = {k: v[:1] for k, v in columns.items()}
        assert decode_rows(decoder, one, 1, "req", list(FEATURES))[0].request_id == "req"

    def test_decoder_errors_at_rows(self):
        """Values the decoder refuses are reported as the input's row, for every bad row."""
        decoder = Decoder(manifest())
        columns = {
            "user_id": ["a", "b"],
            "amount": [math.nan, 1.0],
            "visits": [1, "2"],
            "device": ["ios", "web"],
            "new": [True, True],
        }
        detail = problems(lambda: decode_rows(decoder, columns, 2, "req", list(FEATURES)))
        assert {tuple(e["loc"]) for e in detail} == {
            ("body", "inputs", "amount", "data", 0),
            ("body", "inputs", "visits", "data", 1),
        }

    def test_columns_decode_as_rows_do(self):
        """A batch checked column by column decodes to exactly what row-by-row validation gives."""
        decoder = Decoder(manifest())
        columns = {
            "user_id": ["a", "b", "c"],
            "amount": [1.5, -2.25, 3.4e38],
            "visits": [0, -7, 2**40],
            "device": ["ios", "", "x" * 256],
            "new": [None, True, False],
        }
        ids = ["req:0", "req:1", "req:2"]
        by_columns = decoder.validate_columns(columns, 3, ids, columns["user_id"])
        by_rows = [
            decoder.validate_python(
                {
                    "user_id": columns["user_id"][i],
                    "features": {k: columns[k][i] for k in FEATURES},
                    "request_id": ids[i],
                }
            )
            for i in range(3)
        ]
        assert by_columns == by_rows
        assert decode_rows(decoder, columns, 3, "req", list(FEATURES)) == by_rows

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("amount", math.nan),
            ("amount", math.inf),
            ("amount", 3.5e38),  # beyond float32
            ("amount", None),  # not nullable
            ("amount", "1.0"),
            ("visits", True),  # a bool is no int
            ("visits", 1.0),
            ("device", "x" * 257),
            ("new", 1),
            ("user_id", ""),
            ("user_id", "u" * 129),
        ],
    )
    def test_columns_refused_are_named_by_row(self, name, value):
        """A value any rule refuses is left to row-by-row validation, which names its input and row."""
        decoder = Decoder(manifest())
        columns = {"user_id": ["a", "b"], "amount": [1.0, 2.0], "visits": [1, 2], "device": ["ios", "web"]}
        columns["new"] = [True, None]
        columns[name] = [columns[name][0], value]
        assert decoder.validate_columns(columns, 2, ["r:0", "r:1"], columns["user_id"]) is None
        detail = problems(lambda: decode_rows(decoder, columns, 2, "r", list(FEATURES)))
        assert {tuple(e["loc"]) for e in detail} == {("body", "inputs", name, "data", 1)}

    def test_columns_unusual_but_valid_still_decode(self):
        """An int in a float column is not taken column-wise, yet accepted row by row, as in /predict."""
        decoder = Decoder(manifest())
        columns = {"user_id": ["a", "b"], "amount": [1.0, 2], "visits": [1, 2], "device": ["ios", "web"]}
        columns["new"] = [True, True]
        assert decoder.validate_columns(columns, 2, ["r:0", "r:1"], columns["user_id"]) is None
        assert decode_rows(decoder, columns, 2, "r", list(FEATURES))[1].features["amount"] == 2

    def test_columns_without_the_needed_user(self):
        """A model with store features needs user ids: without them the rows say so, row by row."""
        decoder = Decoder(manifest())
        columns = {"amount": [1.0, 2.0], "visits": [1, 2], "device": ["ios", "web"], "new": [True, True]}
        assert decoder.validate_columns(columns, 2, ["r:0", "r:1"], None) is None
        detail = problems(lambda: decode_rows(decoder, columns, 2, "r", list(FEATURES)))
        assert {tuple(e["loc"]) for e in detail} == {("body", "inputs", "user_id", "data", i) for i in (0, 1)}

    def test_row_loc(self):
        """Decoder locations map to the V2 input and row they came from."""
        assert row_loc(("features", "amount"), 3) == ["body", "inputs", "amount", "data", 3]
        assert row_loc(("user_id",), 0) == ["body", "inputs", "user_id", "data", 0]
        assert row_loc((), 1) == ["body", "inputs", "<instance>", "data", 1]

    def test_user_row_loc(self):
        """The predictor's unknown-user entries point at the user_id input's row; other entries are kept."""
        entry = {"loc": ["instances", 4, "user_id"], "msg": "unknown user", "type": "unknown_user"}
        assert user_row_loc(entry) == {**entry, "loc": ["body", "inputs", "user_id", "data", 4]}
        other = {"loc": ["body"], "msg": "x", "type": "y"}
        assert user_row_loc(other) == other


class TestErrors:
    def test_failed_names_each_input_once(self):
        """The summary names each input (and row) once, in order, ten at most."""
        errors = [
            {"loc": ["body", "inputs", "amount", "data", 0], "msg": "a", "type": "t"},
            {"loc": ["body", "inputs", "amount", "data", 0], "msg": "b", "type": "t"},
            {"loc": ["body", "inputs", "device", "shape"], "msg": "c", "type": "t"},
            {"loc": ["body"], "msg": "4 bytes unclaimed", "type": "binary_size"},
        ]
        exc = failed(errors)
        assert exc.message == "invalid input: 4 error(s) in amount[0], device, 4 bytes unclaimed"
        assert exc.detail == errors
        many = [{"loc": ["body", "inputs", f"f{i}"], "msg": "m", "type": "t"} for i in range(12)]
        assert failed(many).message.endswith("f9 and 2 more")

    def test_parse_request_names_fields(self):
        """An envelope that is not a V2 request is refused naming the offending fields."""
        detail = problems(lambda: parse_request(b'{"inputs": [{"name": 1, "shape": [1], "datatype": "FP32"}]}', None))
        assert [d["loc"] for d in detail] == [["body", "inputs", 0, "name"]]
        detail = problems(lambda: parse_request(b"{}", 10))
        assert detail[0]["loc"] == ["header", "inference-header-content-length"]

    def test_requested_outputs(self):
        """Outputs default to all of them, keep the order asked, and unknown ones are refused by name."""
        assert requested_outputs({"inputs": []}) == ("label", "probability")
        assert requested_outputs({"inputs": [], "outputs": [{"name": "probability"}]}) == ("probability",)
        detail = problems(lambda: requested_outputs({"inputs": [], "outputs": [{"name": "logits"}]}))
        assert detail[0]["loc"] == ["body", "outputs", "logits"]
