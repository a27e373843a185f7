"""The Open Inference Protocol (V2, REST) data plane: tensors ↔ decoded instances.

Knows nothing of HTTP; ``app/api/routes/v2.py`` translates. What the protocol
leaves to the server is decided here:

Names and versions
    ``modelserve`` (``MODEL_NAME``) is the service's model: without a version
    it is routed exactly like ``/predict`` (primary alias, then rollout flags
    per user). An alias that is loaded (``production``, ``candidate``) is also
    a model name and pins that alias's model. ``versions/{v}`` picks a loaded
    version: under ``modelserve`` any loaded one, under an alias only the one
    the alias points at. Anything else is 404.

Inputs
    One tensor per ``request`` feature of the manifest, named after it, plus a
    ``user_id`` BYTES tensor when the model has ``store`` features (they are
    then fetched through the same feature server as ``/predict``). Shapes
    ``[N]`` or ``[N, 1]``, every input the same ``N``; data flat or nested
    as the shape says. Datatypes by manifest dtype (``DATATYPES``, the first
    is what metadata advertises)::

        float   FP32 (FP64 accepted)        int   INT64 (any INT*/UINT*)
        bool    BOOL                        string  BYTES (UTF-8)

    Values are then checked by the manifest-generated decoder, so the rules
    are those of ``/predict``: no string for a number, no bool for a number,
    finite floats only (NaN is refused), JSON ``null`` only for nullable
    features. Missing, unknown and duplicate inputs are refused. The Triton
    binary tensor extension (``Inference-Header-Content-Length``, the default
    of ``tritonclient``) is accepted for inputs; answers are always JSON.

Outputs
    ``label`` (INT64 ``[N]``) and ``probability`` (FP32 ``[N]``, the positive
    class), the same numbers ``/predict`` answers; ``outputs`` in the request
    selects and orders them (output parameters such as ``binary_data`` are
    ignored). Request and input ``parameters`` are accepted and ignored.
    ``id`` is echoed; without one a fresh id is answered, and it (suffixed
    ``:i`` for row ``i`` of a batch) is the prediction log's request id.

Errors are ``ValidationFailed`` (the route answers 400, the protocol's status),
``ModelNotFound`` (404) and ``NotReady`` (503), each naming what is wrong.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NotRequired

import numpy as np
from pydantic import ConfigDict, Field, StrictStr, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from app.errors import COLLECT_LIMIT, ModelNotFound, NotReady, UnknownUser, ValidationFailed, clip, from_pydantic
from app.model.decoder import Decoded
from app.model.manifest import Feature
from app.model.pool import LoadedModel, ModelPool
from app.predictor import Predictor

MODEL_NAME = "modelserve"
PLATFORM = "onnxruntime_onnx"
USER_ID = "user_id"
OUTPUTS = ("label", "probability")
_OUTPUT_TYPES = {"label": "INT64", "probability": "FP32"}

_INTS = ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")
DATATYPES: dict[str, tuple[str, ...]] = {
    "float": ("FP32", "FP64"),
    "int": _INTS,
    "bool": ("BOOL",),
    "string": ("BYTES",),
}
# Binary tensor extension: how each fixed-size datatype is laid out (little-endian).
_NUMPY = {
    "FP32": "<f4",
    "FP64": "<f8",
    "INT64": "<i8",
    "INT32": "<i4",
    "INT16": "<i2",
    "INT8": "i1",
    "UINT64": "<u8",
    "UINT32": "<u4",
    "UINT16": "<u2",
    "UINT8": "u1",
    "BOOL": "u1",
}

_CONTAINERS = (list, dict)
_STRICT = ConfigDict(extra="forbid", strict=True)


class _Input(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    name: StrictStr
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: StrictStr
    parameters: NotRequired[dict[str, Any]]
    data: NotRequired[list[Any]]


class _Output(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    name: StrictStr
    parameters: NotRequired[dict[str, Any]]


class _Request(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    id: NotRequired[Annotated[StrictStr, Field(min_length=1, max_length=100)]]  # + ":row" fits a request id
    parameters: NotRequired[dict[str, Any]]
    inputs: Annotated[list[_Input], Field(min_length=1)]
    outputs: NotRequired[list[_Output]]


@functools.cache
def _request_adapter() -> TypeAdapter[_Request]:
    return TypeAdapter(_Request)  # built on first use: nothing at import time


@dataclass(frozen=True)
class Target:
    """What a ``/v2/models/{name}[/versions/{v}]`` path names."""

    name: str
    model: LoadedModel
    """The model answering metadata (the primary when routed)."""
    pinned: bool
    """False: route per instance like /predict; True: always ``model``."""
    versions: list[str]


class V2Service:
    def __init__(self, pool: ModelPool, primary_alias: str, max_batch: int) -> None:
        self.pool = pool
        self.primary_alias = primary_alias
        self.max_batch = max_batch
        self._inputs: dict[str, tuple[dict[str, Feature], list[str]]] = {}

    # --- names --------------------------------------------------------------
    def resolve(self, name: str, version: str | None) -> Target:
        if name == MODEL_NAME:
            model = self.pool.get(self.primary_alias)  # NotReady while starting
            if version is None:
                return Target(name, model, False, sorted(self.pool.by_version))
            pinned = self.pool.by_version.get(version)
            if pinned is None:
                raise ModelNotFound(f"model {name!r} has no loaded version {clip(version)!r}", _loc("version", version))
            return Target(name, pinned, True, sorted(self.pool.by_version))
        aliased = self.pool.by_alias.get(name)
        if aliased is None:
            if name == self.primary_alias:
                raise NotReady(f"model {name!r} is not loaded yet")
            raise ModelNotFound(
                f"unknown model {clip(name)!r}; serving {', '.join([MODEL_NAME, *sorted(self.pool.by_alias)])}",
                _loc("name", name),
            )
        if version is not None and version != aliased.version:
            raise ModelNotFound(
                f"model {name!r} serves version {aliased.version!r}, not {clip(version)!r}", _loc("version", version)
            )
        return Target(name, aliased, True, [aliased.version])

    def metadata(self, target: Target) -> dict[str, Any]:
        manifest = target.model.manifest
        inputs = [{"name": USER_ID, "datatype": "BYTES", "shape": [-1]}] if target.model.needs_store else []
        inputs += [
            {"name": f.name, "datatype": DATATYPES[f.dtype][0], "shape": [-1]} for f in manifest.request_features
        ]
        return {
            "name": target.name,
            "versions": target.versions,
            "platform": PLATFORM,
            "inputs": inputs,
            "outputs": [{"name": o, "datatype": _OUTPUT_TYPES[o], "shape": [-1]} for o in OUTPUTS],
            "parameters": {
                "version": target.model.version,
                "store_features": [f.name for f in manifest.store_features],
                "nullable": [f.name for f in manifest.request_features if f.nullable],
                "positive_class": manifest.outputs.positive_class,
            },
        }

    # --- inference ------------------------------------------------------------
    async def infer(
        self, predictor: Predictor, target: Target, body: bytes, header_length: int | None = None
    ) -> dict[str, Any]:
        """The V2 response for a request body (JSON, or JSON + binary tensors)."""
        request = self._envelope(body, header_length)
        wanted = self._requested_outputs(request)
        request_id = request.get("id") or os.urandom(16).hex()
        instances = self._instances(target.model, request, body, header_length, request_id)
        try:
            records = await predictor.predict_instances(instances, target.model if target.pinned else None)
        except UnknownUser as exc:
            raise UnknownUser(exc.message, [_v2_loc(d) for d in exc.detail]) from None
        data = {
            "label": [r.prediction for r in records],
            "probability": [r.probability for r in records],
        }
        n = len(records)
        response = {
            "model_name": target.name,
            "model_version": ",".join(sorted({r.model_version for r in records})),
            "id": request_id,
            "outputs": [{"name": o, "datatype": _OUTPUT_TYPES[o], "shape": [n], "data": data[o]} for o in wanted],
        }
        return response

    def _envelope(self, body: bytes, header_length: int | None) -> _Request:
        if header_length is not None and not 0 < header_length <= len(body):
            raise _invalid(
                f"Inference-Header-Content-Length {header_length} outside the body of {len(body)} bytes",
                ["header", "inference-header-content-length"],
                "binary_header",
            )
        try:
            return _request_adapter().validate_json(body[:header_length] if header_length else body)
        except ValidationError as exc:
            raise from_pydantic(exc, what="invalid inference request") from None

    @staticmethod
    def _requested_outputs(request: _Request) -> Sequence[str]:
        asked = [o["name"] for o in request.get("outputs", [])]
        unknown = [o for o in asked if o not in OUTPUTS]
        if unknown:
            raise ValidationFailed(
                f"unknown output(s) {', '.join(clip(o) for o in unknown[:10])}; the model has {', '.join(OUTPUTS)}",
                [{"loc": ["body", "outputs", o], "msg": "unknown output", "type": "unknown_output"} for o in unknown],
            )
        return asked or OUTPUTS

    def _instances(
        self, model: LoadedModel, request: _Request, body: bytes, header_length: int | None, request_id: str
    ) -> list[Decoded]:
        features, expected = self._expected_inputs(model)
        errors: list[dict[str, Any]] = []
        columns: dict[str, list[Any]] = {}
        offset = header_length or len(body)
        for inp in request["inputs"]:
            name = inp["name"]
            binary_size = inp.get("parameters", {}).get("binary_data_size")
            raw = None
            if binary_size is not None:
                if header_length is None:
                    errors.append(
                        _err(
                            name, "parameters", "binary_data_size needs Inference-Header-Content-Length", "binary_size"
                        )
                    )
                    continue
                if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size < 0:
                    errors.append(_err(name, "parameters", "binary_data_size must be a whole number", "binary_size"))
                    continue
                raw, offset = body[offset : offset + binary_size], offset + binary_size
                if len(raw) != binary_size:
                    errors.append(_err(name, "data", "binary data shorter than binary_data_size", "binary_size"))
                    continue
            if name in columns:
                errors.append(_err(name, None, "input given more than once", "duplicate_input"))
            elif name == USER_ID:
                col = _column(inp, ("BYTES",), raw, errors)
                if col is not None:
                    columns[name] = col
            elif name in features:
                col = _column(inp, DATATYPES[features[name].dtype], raw, errors)
                if col is not None:
                    columns[name] = col
            else:
                errors.append(_err(name, None, f"unknown input; the model takes {', '.join(expected)}", "extra_input"))
        if header_length is not None and offset != len(body):
            errors.append(
                {"loc": ["body"], "msg": f"{len(body) - offset} bytes of binary data unclaimed", "type": "binary_size"}
            )
        for name in expected:
            if name not in columns and not any(e["loc"][2:3] == [name] for e in errors):
                errors.append(_err(name, None, "missing input", "missing_input"))
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
        if n > self.max_batch:
            errors.append(
                {"loc": ["body", "inputs"], "msg": f"batch of {n} over {self.max_batch}", "type": "batch_size"}
            )
        if errors:
            raise _failed(errors)
        return self._decode(model, columns, n, request_id, features)

    def _expected_inputs(self, model: LoadedModel) -> tuple[dict[str, Feature], list[str]]:
        """(request features by name, input names), computed once per version."""
        known = self._inputs.get(model.version)
        if known is None:
            features = {f.name: f for f in model.manifest.request_features}
            known = features, [*([USER_ID] if model.needs_store else []), *features]
            self._inputs[model.version] = known
        return known

    @staticmethod
    def _decode(
        model: LoadedModel, columns: dict[str, list[Any]], n: int, request_id: str, features: dict[str, Feature]
    ) -> list[Decoded]:
        decoder = model.decoder
        users = columns.get(USER_ID)
        feature_columns = [(name, columns[name]) for name in features]
        instances: list[Decoded] = []
        errors: list[dict[str, Any]] = []
        for i in range(n):
            obj: dict[str, Any] = {
                "features": {name: col[i] for name, col in feature_columns},
                "request_id": request_id if n == 1 else f"{request_id}:{i}",
            }
            if users is not None:
                obj["user_id"] = users[i]
            try:
                instances.append(decoder.validate_python(obj))
            except ValidationFailed as exc:
                errors.extend({**d, "loc": _row_loc(d["loc"], i)} for d in exc.detail)
        if errors:
            raise _failed(errors)
        return instances


def _column(
    inp: _Input, accepted: tuple[str, ...], raw: bytes | None, errors: list[dict[str, Any]]
) -> list[Any] | None:
    """The input's values as a flat list of length N, or None with the problems appended to ``errors``."""
    name, shape, datatype = inp["name"], inp["shape"], inp["datatype"]
    problems = len(errors)
    if datatype not in accepted:
        errors.append(
            _err(name, "datatype", f"datatype {datatype} not accepted; use {' or '.join(accepted)}", "datatype")
        )
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
        errors.append(_err(name, "shape", f"shape {shape} is not [N] or [N, 1] with N >= 1", "shape"))
    if len(errors) > problems:
        return None
    n = shape[0]
    if raw is not None:
        if "data" in inp:
            errors.append(_err(name, "data", "both data and binary_data_size given", "binary_size"))
            return None
        return _from_binary(name, datatype, raw, n, errors)
    if "data" not in inp:
        errors.append(_err(name, "data", "no data", "missing"))
        return None
    data = inp["data"]
    if len(shape) == 2 and data and isinstance(data[0], list) and all(isinstance(v, list) for v in data):
        if not all(len(v) == 1 for v in data):
            errors.append(_err(name, "data", f"nested data does not match shape {shape}", "shape"))
            return None
        data = [v[0] for v in data]
    if len(data) != n or any(isinstance(v, _CONTAINERS) for v in data):
        errors.append(_err(name, "data", f"data does not match shape {shape}", "shape"))
        return None
    return data


def _from_binary(name: str, datatype: str, raw: bytes, n: int, errors: list[dict[str, Any]]) -> list[Any] | None:
    if datatype == "BYTES":
        values: list[Any] = []
        pos = 0
        try:
            while pos < len(raw):
                (size,) = struct.unpack_from("<I", raw, pos)
                chunk = raw[pos + 4 : pos + 4 + size]
                if len(chunk) != size:
                    raise ValueError("truncated element")
                values.append(chunk.decode("utf-8"))
                pos += 4 + size
        except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            errors.append(_err(name, "data", f"bad BYTES binary data: {exc}", "binary_data"))
            return None
    else:
        dtype = np.dtype(_NUMPY[datatype])
        if len(raw) != n * dtype.itemsize:
            errors.append(_err(name, "data", f"{len(raw)} bytes is not {n} × {datatype}", "shape"))
            return None
        array = np.frombuffer(raw, dtype=dtype)
        if datatype == "BOOL":
            if array.size and array.max() > 1:
                errors.append(_err(name, "data", "BOOL bytes must be 0 or 1", "binary_data"))
                return None
            values = array.astype(bool).tolist()
        else:
            values = array.tolist()
    if len(values) != n:
        errors.append(_err(name, "data", f"{len(values)} values for shape [{n}]", "shape"))
        return None
    return values


def _loc(kind: str, value: str) -> list[dict[str, Any]]:
    return [{"loc": ["path", kind], "msg": f"no such model {kind} {clip(value)!r}", "type": "not_found"}]


def _err(name: str, part: str | None, msg: str, kind: str) -> dict[str, Any]:
    loc: list[str | int] = ["body", "inputs", name]
    if part is not None:
        loc.append(part)
    return {"loc": loc, "msg": msg, "type": kind}


def _row_loc(loc: Sequence[str | int], row: int) -> list[str | int]:
    # Decoder locs are ("features", name) or ("user_id",); in V2 terms: the input's row.
    name = loc[1] if len(loc) > 1 and loc[0] == "features" else loc[0] if loc else "<instance>"
    return ["body", "inputs", name, "data", row]


def _v2_loc(d: dict[str, Any]) -> dict[str, Any]:
    # The predictor names instances ["instances", i, "user_id"]: the user_id input's row here.
    loc = list(d.get("loc", []))
    if "instances" in loc and loc.index("instances") + 1 < len(loc):
        loc = ["body", "inputs", USER_ID, "data", loc[loc.index("instances") + 1]]
    return {**d, "loc": loc}


def _invalid(msg: str, loc: list[str | int], kind: str) -> ValidationFailed:
    return ValidationFailed(msg, [{"loc": loc, "msg": msg, "type": kind}])


def _failed(errors: list[dict[str, Any]]) -> ValidationFailed:
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
