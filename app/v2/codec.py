"""V2 tensors ↔ columns ↔ decoded rows, as pure functions.

JSON ``data`` and binary tensors (Triton's extension: raw bytes after the
JSON header, ``binary_data_size`` per input) both become one flat column per
input; columns become one decoded instance per row. NaN in a float tensor
of a nullable feature means missing (``None``, what ``null`` is in
``/predict``): ``nan_as_missing``, which every protocol's reader applies.
Problems are collected, not raised one by one, so a bad request is answered
with every offending tensor named: each is an error entry ``{"loc", "msg",
"type"}`` whose ``loc`` is ``["body", "inputs", name, part?, row?]``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from app.errors import COLLECT_LIMIT, ValidationFailed, clip
from app.model.decoder import Decoded, Decoder
from app.v2.types import NUMPY, USER_ID, InferInput, InferRequest

Errors = list[dict[str, Any]]
_CONTAINERS = (list, dict)
FLOATS = frozenset({"FP32", "FP64"})
"""The datatypes that carry NaN."""
INT_RANGES = {
    t: (int(np.iinfo(NUMPY[t]).min), int(np.iinfo(NUMPY[t]).max))
    for t in ("INT8", "INT16", "INT32", "UINT8", "UINT16", "UINT32", "UINT64")
}
"""What a JSON value of each narrower int datatype may be (INT64's bound is the decoder's, as ``/predict``'s)."""


def read_columns(
    request: InferRequest,
    body: bytes,
    header_length: int | None,
    features: Mapping[str, tuple[str, ...]],
    expected: Sequence[str],
    max_batch: int,
    nullable: Collection[str] = (),
) -> tuple[dict[str, list[Any]], int]:
    """(one flat column per input, the batch size N), or ``ValidationFailed`` listing every problem.

    ``features`` maps each feature input to its accepted datatypes; ``expected``
    is every input the model takes (``user_id`` included when it needs one).
    Binary tensors are read from ``body`` after its first ``header_length``
    bytes, in input order. NaN in a float tensor of a ``nullable`` feature
    becomes ``None`` (missing); anywhere else the decoder refuses it.
    """
    errors: Errors = []
    columns: dict[str, list[Any]] = {}
    offset = len(body) if header_length is None else header_length  # gRPC: 0, all of body is tensors
    for inp in request["inputs"]:
        name = inp["name"]
        parameters = inp.get("parameters")
        binary_size = parameters.get("binary_data_size") if parameters else None
        if binary_size is None and name not in columns:
            # The common case first: JSON data of an accepted datatype, flat, of the shape given.
            accepted = ("BYTES",) if name == USER_ID else features.get(name)
            data = inp.get("data")
            if accepted is not None and data is not None and inp["datatype"] in accepted and _flat(inp["shape"], data):
                if name in nullable and inp["datatype"] in FLOATS:
                    data = nan_as_missing(data)
                elif inp["datatype"] in INT_RANGES:
                    out_of_range(name, inp["datatype"], data, errors)
                columns[name] = data
                continue
        raw = None
        if binary_size is not None:
            if header_length is None:
                errors.append(
                    input_error(
                        name, "parameters", "binary_data_size needs Inference-Header-Content-Length", "binary_size"
                    )
                )
                continue
            if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size < 0:
                errors.append(input_error(name, "parameters", "binary_data_size must be a whole number", "binary_size"))
                continue
            raw, offset = body[offset : offset + binary_size], offset + binary_size
            if len(raw) != binary_size:
                errors.append(input_error(name, "data", "binary data shorter than binary_data_size", "binary_size"))
                continue
        if name in columns:
            errors.append(input_error(name, None, "input given more than once", "duplicate_input"))
        elif raw is not None and inp["shape"] and inp["shape"][0] > max_batch:
            # Refused before its binary data is decoded: BYTES decode one element at a time, and a few MB of
            # empty elements held the event loop for seconds.
            errors.append(input_error(name, "shape", f"batch of {inp['shape'][0]} over {max_batch}", "batch_size"))
        elif name == USER_ID or name in features:
            col = column(inp, ("BYTES",) if name == USER_ID else features[name], raw, errors)
            if col is not None and raw is None and inp["datatype"] in INT_RANGES:
                out_of_range(name, inp["datatype"], col, errors)
            if col is not None:
                columns[name] = nan_as_missing(col) if name in nullable and inp["datatype"] in FLOATS else col
        else:
            errors.append(
                input_error(name, None, f"unknown input; the model takes {', '.join(expected)}", "extra_input")
            )
    if header_length is not None and offset < len(body):  # past the end: that tensor was reported as short
        errors.append(
            {"loc": ["body"], "msg": f"{len(body) - offset} bytes of binary data unclaimed", "type": "binary_size"}
        )
    if len(columns) != len(expected):  # columns only ever holds expected names
        for name in expected:
            if name not in columns and not any(e["loc"][2:3] == [name] for e in errors):
                errors.append(input_error(name, None, "missing input", "missing_input"))
    sizes = {name: len(col) for name, col in columns.items()}
    if len(set(sizes.values())) > 1:
        errors.append(
            {
                "loc": ["body", "inputs"],
                "msg": "inputs differ in batch size: " + ", ".join(f"{k}={v}" for k, v in sizes.items()),
                "type": "batch_size",
            }
        )
    n = next(iter(sizes.values()), 0)
    if n > max_batch:
        errors.append({"loc": ["body", "inputs"], "msg": f"batch of {n} over {max_batch}", "type": "batch_size"})
    if errors:
        raise failed(errors)
    return columns, n


_ENVELOPE_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})
MAX_ID = 100
"""Longest request ``id`` (``InferRequest``): with ``:row`` appended it still fits a request id."""
_SHAPE_1 = [1]
_BYTES = ("BYTES",)
_BIG = 2.0**63
"""orjson reads an integer beyond 64 bits as a float, pydantic as an int: such values take the general path."""
NO_USER: Any = object()
"""The request has no ``user_id`` input (not the same as one whose value is null)."""


def one_row_json(
    body: bytes, features: Mapping[str, tuple[str, ...]], needs_user: bool
) -> tuple[InferRequest, dict[str, Any], Any] | None:
    """(the request, each feature's value, the ``user_id`` value) of a plain one-row JSON request, else None.

    The common request read in one pass: a JSON object of ``id``,
    ``parameters``, ``inputs`` and ``outputs`` only, every input exactly
    ``name``, ``shape`` (``[1]`` or ``[1, 1]``), an accepted ``datatype`` and
    one flat value of ``data``, each input the model takes given once (the
    user id only when it takes one; ``NO_USER`` for it otherwise). Whatever
    ``parse_request`` and ``read_columns`` would accept and read the same way;
    anything else (another shape, input ``parameters``, binary data, a number
    orjson reads differently, a problem to name) is None, and those two
    decide, so answers and errors stay theirs. JSON has no NaN, so there is
    nothing for ``nan_as_missing``.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    inputs = doc.get("inputs")
    if type(inputs) is not list or not inputs or len(inputs) != len(features) + needs_user:
        return None
    if len(doc) > 1 and not _plain_envelope(doc):
        return None
    values: dict[str, Any] = {}
    user: Any = NO_USER
    for inp in inputs:
        if type(inp) is not dict or len(inp) != 4:
            return None
        try:  # four keys, these four: nothing else (``parameters``) is there
            name, datatype, shape, data = inp["name"], inp["datatype"], inp["shape"], inp["data"]
        except KeyError:
            return None
        if type(name) is not str or type(data) is not list or len(data) != 1:
            return None
        if (shape != _SHAPE_1 or type(shape[0]) is not int) and not _one(shape):
            return None
        value = data[0]
        if isinstance(value, _CONTAINERS) or (type(value) is float and not -_BIG < value < _BIG):
            return None
        if name == USER_ID and needs_user:
            if user is not NO_USER or datatype not in _BYTES:
                return None
            user = value
            continue
        accepted = features.get(name)
        if accepted is None or datatype not in accepted or name in values:
            return None
        if datatype in INT_RANGES and not _fits(value, datatype):
            return None  # out of the datatype's range: ``read_columns`` names it
        values[name] = value
    return doc, values, user  # type: ignore[return-value]  # checked above as parse_request would


def _fits(value: Any, datatype: str) -> bool:
    """Whether a value of a narrower int datatype is within its range (not a number: the decoder's to refuse)."""
    if not isinstance(value, (int, float)):
        return True
    lo, hi = INT_RANGES[datatype]
    return lo <= value <= hi


def _plain_envelope(doc: dict[str, Any]) -> bool:
    """Whether the request's other members are as ``InferRequest`` has them (``inputs`` is checked apart)."""
    if not doc.keys() <= _ENVELOPE_KEYS:
        return False
    if "id" in doc:
        rid = doc["id"]
        if type(rid) is not str or not 0 < len(rid) <= MAX_ID:
            return False
    if "parameters" in doc and type(doc["parameters"]) is not dict:
        return False
    return "outputs" not in doc or _plain_outputs(doc["outputs"])


def _one(shape: Any) -> bool:
    """Whether ``shape`` is ``[1]`` or ``[1, 1]`` (JSON ints: ``true`` equals 1 but is no int)."""
    if type(shape) is not list or not 0 < len(shape) < 3:
        return False
    return all(type(d) is int and d == 1 for d in shape)


def _plain_outputs(outputs: Any) -> bool:
    """Whether ``outputs`` is a list of ``{"name": str, "parameters"?: object}`` (as ``InferOutput``)."""
    if type(outputs) is not list:
        return False
    for out in outputs:
        if type(out) is not dict or "name" not in out or not out.keys() <= _OUTPUT_KEYS:
            return False
        if type(out["name"]) is not str or ("parameters" in out and type(out["parameters"]) is not dict):
            return False
    return True


def column(inp: InferInput, accepted: tuple[str, ...], raw: bytes | None, errors: Errors) -> list[Any] | None:
    """The input's values as a flat list of length N, or None with the problems appended to ``errors``."""
    name, shape, datatype = inp["name"], inp["shape"], inp["datatype"]
    problems = len(errors)
    if datatype not in accepted:
        errors.append(
            input_error(name, "datatype", f"datatype {datatype} not accepted; use {' or '.join(accepted)}", "datatype")
        )
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
        errors.append(input_error(name, "shape", f"shape {shape} is not [N] or [N, 1] with N >= 1", "shape"))
    if len(errors) > problems:
        return None
    n = shape[0]
    if raw is not None:
        if "data" in inp:
            errors.append(input_error(name, "data", "both data and binary_data_size given", "binary_size"))
            return None
        return from_binary(name, datatype, raw, n, errors)
    if "data" not in inp:
        errors.append(input_error(name, "data", "no data", "missing"))
        return None
    data = inp["data"]
    if len(shape) == 2 and data and isinstance(data[0], list) and all(isinstance(v, list) for v in data):
        if not all(len(v) == 1 for v in data):
            errors.append(input_error(name, "data", f"nested data does not match shape {shape}", "shape"))
            return None
        data = [v[0] for v in data]
    if len(data) != n or any(isinstance(v, _CONTAINERS) for v in data):
        errors.append(input_error(name, "data", f"data does not match shape {shape}", "shape"))
        return None
    return data


def out_of_range(name: str, datatype: str, values: list[Any], errors: Errors) -> None:
    """Append an error at the first value of ``values`` that ``datatype`` cannot hold, if any.

    One min/max over the column, not a check per value; values that are not numbers are the decoder's to refuse.
    """
    lo, hi = INT_RANGES[datatype]
    try:
        fits = lo <= min(values) and max(values) <= hi
    except TypeError:  # a string or null among them
        numbers = [v for v in values if isinstance(v, (int, float))]
        fits = not numbers or (lo <= min(numbers) and max(numbers) <= hi)
    if not fits:
        row = next(i for i, v in enumerate(values) if not _fits(v, datatype))
        errors.append(
            {
                "loc": ["body", "inputs", name, "data", row],
                "msg": f"{values[row]!r:.40} is outside {datatype}'s range {lo}..{hi}",
                "type": "datatype_range",
            }
        )


def _flat(shape: list[int], data: list[Any]) -> bool:
    """Whether ``data`` is flat and as long as a valid ``[N]`` or ``[N, 1]`` shape says (else ``column`` explains)."""
    n = shape[0] if shape else 0
    if n < 1 or len(data) != n or not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        return False
    if n == 1:
        return not isinstance(data[0], _CONTAINERS)
    return not any(isinstance(v, _CONTAINERS) for v in data)


def nan_as_missing(values: list[Any]) -> list[Any]:
    """``values`` with every NaN as ``None``: for a nullable feature's float tensor, NaN is how a
    tensor says "missing" (binary tensors and numpy arrays have no null). ±Inf is kept, so the
    decoder still refuses it."""
    # ``v != v`` is true only for NaN; the comprehension is built only when there is one.
    if any(isinstance(v, float) and v != v for v in values):
        return [None if isinstance(v, float) and math.isnan(v) else v for v in values]
    return values


def from_binary(name: str, datatype: str, raw: bytes, n: int, errors: Errors) -> list[Any] | None:
    """``n`` values of a binary tensor, or None with the problem appended to ``errors``.

    BYTES elements are each a little-endian uint32 length and that many UTF-8
    bytes; every other datatype is ``n`` fixed-size little-endian values.
    """
    if datatype == "BYTES":
        values: list[Any] = []
        pos = 0
        try:
            while pos < len(raw):
                if len(values) == n:  # more elements than the shape says: not decoded, however many
                    errors.append(input_error(name, "data", f"more than {n} values for shape [{n}]", "shape"))
                    return None
                (size,) = struct.unpack_from("<I", raw, pos)
                chunk = raw[pos + 4 : pos + 4 + size]
                if len(chunk) != size:
                    raise ValueError("truncated element")
                values.append(chunk.decode("utf-8"))
                pos += 4 + size
        except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            errors.append(input_error(name, "data", f"bad BYTES binary data: {exc}", "binary_data"))
            return None
    else:
        dtype = np.dtype(NUMPY[datatype])
        if len(raw) != n * dtype.itemsize:
            errors.append(input_error(name, "data", f"{len(raw)} bytes is not {n} × {datatype}", "shape"))
            return None
        array = np.frombuffer(raw, dtype=dtype)
        if datatype == "BOOL":
            if array.size and array.max() > 1:
                errors.append(input_error(name, "data", "BOOL bytes must be 0 or 1", "binary_data"))
                return None
            values = array.astype(bool).tolist()
        else:
            values = array.tolist()
    if len(values) != n:
        errors.append(input_error(name, "data", f"{len(values)} values for shape [{n}]", "shape"))
        return None
    return values


def decode_rows(
    decoder: Decoder, columns: dict[str, list[Any]], n: int, request_id: str, features: Iterable[str]
) -> list[Decoded]:
    """One decoded instance per row (request id ``id:i`` for row ``i`` of a batch), or every row's errors."""
    users = columns.get(USER_ID)
    if n == 1:  # one row: no per-row loop and naming
        values = {name: columns[name][0] for name in features}
        return [decode_one(decoder, values, request_id, NO_USER if users is None else users[0])]
    request_ids = [f"{request_id}:{i}" for i in range(n)]
    instances = decoder.validate_columns(columns, n, request_ids, users)
    if instances is not None:
        return instances
    # Something a rule may refuse: row by row, every row's problems named.
    feature_columns = [(name, columns[name]) for name in features]
    instances = []
    errors: Errors = []
    for i in range(n):
        obj: dict[str, Any] = {
            "features": {name: col[i] for name, col in feature_columns},
            "request_id": request_ids[i],
        }
        if users is not None:
            obj["user_id"] = users[i]
        try:
            instances.append(decoder.validate_python(obj))
        except ValidationFailed as exc:
            errors.extend({**d, "loc": row_loc(d["loc"], i)} for d in exc.detail)
    if errors:
        raise failed(errors)
    return instances


def decode_one(decoder: Decoder, features: dict[str, Any], request_id: str, user: Any = NO_USER) -> Decoded:
    """The one row of a request (feature values by name, the ``user_id`` input's value if any), or its errors.

    The decoder answers its features in the manifest's order, whatever order they come in.
    """
    one: dict[str, Any] = {"features": features, "request_id": request_id}
    if user is not NO_USER:
        one["user_id"] = user
    try:
        return decoder.validate_python(one)
    except ValidationFailed as exc:
        raise failed([{**d, "loc": row_loc(d["loc"], 0)} for d in exc.detail]) from None


def input_error(name: str, part: str | None, msg: str, kind: str) -> dict[str, Any]:
    loc: list[str | int] = ["body", "inputs", name]
    if part is not None:
        loc.append(part)
    return {"loc": loc, "msg": msg, "type": kind}


def row_loc(loc: Sequence[str | int], row: int) -> list[str | int]:
    """A decoder loc (``("features", name)`` or ``("user_id",)``) as the V2 input's row."""
    name = loc[1] if len(loc) > 1 and loc[0] == "features" else loc[0] if loc else "<instance>"
    return ["body", "inputs", name, "data", row]


def user_row_loc(entry: dict[str, Any]) -> dict[str, Any]:
    """A predictor error entry (``["instances", i, "user_id"]``) as the ``user_id`` input's row."""
    loc = list(entry.get("loc", []))
    if "instances" in loc and loc.index("instances") + 1 < len(loc):
        loc = ["body", "inputs", USER_ID, "data", loc[loc.index("instances") + 1]]
    return {**entry, "loc": loc}


def failed(errors: Errors) -> ValidationFailed:
    """One error for all entries, its message naming each input (and row) at most once, ten at most."""
    names: dict[str, None] = {}  # ordered, and O(1) to test: there may be thousands
    for e in errors:
        loc = e["loc"][2:] if e["loc"][:2] == ["body", "inputs"] else e["loc"][1:]
        label = clip(loc[0]) if loc else e["msg"]
        if len(loc) >= 3 and isinstance(loc[-1], int):
            label += f"[{loc[-1]}]"
        names.setdefault(label)
    listed = list(names)
    shown = ", ".join(listed[:10]) + (f" and {len(listed) - 10} more" if len(listed) > 10 else "")
    return ValidationFailed(f"invalid input: {len(errors)} error(s) in {shown}", errors[:COLLECT_LIMIT], len(errors))
