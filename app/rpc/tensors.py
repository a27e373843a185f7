"""``ModelInferRequest`` → V2 request (and binary tensors), V2 answers → response messages.

A well-formed message (every input the model takes, once, of an accepted
datatype and shape, all typed or all raw) goes straight to columns
(``columns_of``). Any other becomes the same request envelope a REST body
does (``to_request``), so the codec (``app.v2.codec``) reads and checks it
with the same rules and messages: typed ``contents`` become each input's
``data``; ``raw_input_contents`` become binary tensors (each input's
``binary_data_size`` is its entry's length, the entries laid end to end,
starting at offset 0). Both ways read the same values. Request and tensor
``parameters`` are ignored, as over REST.

Outputs are answered the way inputs came: ``raw_output_contents`` when the
request used raw inputs (what Triton and its clients do), typed
``contents`` otherwise. A multiclass ``probabilities`` output carries its
class names as the JSON-encoded ``string_param`` of its ``classes``
parameter (a parameter holds no list).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Mapping, Sequence
from typing import Any, cast

import numpy as np
import orjson

from app.rpc import grpc_predict_v2_pb2 as pb
from app.v2.codec import FLOATS, failed, from_binary, input_error, nan_as_missing
from app.v2.types import NUMPY, USER_ID, InferInput, InferOutput, InferRequest

ID_CHARS = 100
"""Longest request id, as over REST (``:row`` is appended per row of a batch)."""

CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The ``InferTensorContents`` field each datatype's typed values travel in."""


def columns_of(
    message: pb.ModelInferRequest,
    features: Mapping[str, tuple[str, ...]],
    expected: Sequence[str],
    max_batch: int,
    nullable: Collection[str],
) -> tuple[dict[str, list[Any]], int] | None:
    """The message's inputs straight as columns (what ``read_columns`` makes of ``to_request``'s), or None.

    The short path for a well-formed message: every expected input once, of
    an accepted datatype, shaped ``[N]`` or ``[N, 1]`` with the same N, its
    values all typed or all raw. Anything else is None, and the caller takes
    the long path (``to_request``, then ``read_columns``), which finds and
    names every problem; so both paths accept the same messages, read the
    same values and refuse with the same errors.
    """
    inputs = message.inputs
    raws = message.raw_input_contents
    if len(inputs) != len(expected) or len(message.id) > ID_CHARS or (raws and len(raws) != len(inputs)):
        return None
    columns: dict[str, list[Any]] = {}
    n = 0
    for i, tensor in enumerate(inputs):
        name, datatype = tensor.name, tensor.datatype
        accepted = ("BYTES",) if name == USER_ID else features.get(name)
        if accepted is None or datatype not in accepted or name in columns:
            return None
        shape = tensor.shape
        if len(shape) != 1 and (len(shape) != 2 or shape[1] != 1):
            return None
        size = shape[0]
        if size < 1 or (n and size != n) or size > max_batch:
            return None
        n = size
        col: list[Any] | None
        if raws:
            if tensor.HasField("contents"):
                return None
            col = from_binary(name, datatype, raws[i], size, [])
            if col is None:
                return None
        else:
            values = getattr(tensor.contents, CONTENTS[datatype])
            if len(values) != size:
                return None
            if datatype == "BYTES":
                try:
                    col = [v.decode("utf-8") for v in values]
                except UnicodeDecodeError:
                    return None
            else:
                col = list(values)
        columns[name] = nan_as_missing(col) if datatype in FLOATS and name in nullable else col
    return columns, n


def to_request(message: pb.ModelInferRequest) -> tuple[InferRequest, bytes, int | None]:
    """(the V2 request, its binary tensors, the offset they start at: 0, or None without any).

    Raises ``ValidationFailed`` for what the envelope itself gets wrong: a
    request id too long, raw contents not one per input, BYTES that are not
    UTF-8; everything else is the codec's to find.
    """
    raws = message.raw_input_contents
    errors: list[dict[str, Any]] = []
    if len(message.id) > ID_CHARS:
        errors.append({"loc": ["body", "id"], "msg": f"longer than {ID_CHARS} characters", "type": "string_too_long"})
    if raws and len(raws) != len(message.inputs):
        errors.append(
            {
                "loc": ["body", "raw_input_contents"],
                "msg": f"{len(raws)} raw_input_contents for {len(message.inputs)} inputs",
                "type": "binary_size",
            }
        )
    if not message.inputs:
        errors.append({"loc": ["body", "inputs"], "msg": "no inputs", "type": "too_short"})
    if errors:
        raise failed(errors)
    inputs: list[InferInput] = []
    for i, tensor in enumerate(message.inputs):
        inp = cast(InferInput, {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype})
        if raws:
            inp["parameters"] = {"binary_data_size": len(raws[i])}
        if tensor.HasField("contents") or not raws:
            inp["data"] = _typed(tensor, errors)
        inputs.append(inp)
    if errors:
        raise failed(errors)
    request = cast(InferRequest, {"inputs": inputs})
    if message.id:
        request["id"] = message.id
    if message.outputs:
        request["outputs"] = [cast(InferOutput, {"name": o.name}) for o in message.outputs]
    if raws:
        return request, b"".join(raws), 0
    return request, b"", None


def _typed(tensor: pb.ModelInferRequest.InferInputTensor, errors: list[dict[str, Any]]) -> list[Any]:
    field = CONTENTS.get(tensor.datatype)
    if field is None:
        return []  # the codec names the datatype
    values = list(getattr(tensor.contents, field))
    if field == "bytes_contents":
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError as exc:
            errors.append(input_error(tensor.name, "data", f"BYTES not UTF-8: {exc.reason}", "binary_data"))
            return []
    return values


def to_response(answer: dict[str, Any], raw: bool) -> pb.ModelInferResponse:
    """The response message for a V2 answer (``V2Service.answer``), raw or typed."""
    response = pb.ModelInferResponse(
        model_name=answer["model_name"], model_version=answer["model_version"], id=answer["id"]
    )
    for out in answer["outputs"]:
        tensor = response.outputs.add(name=out["name"], datatype=out["datatype"], shape=out["shape"])
        if "parameters" in out:
            classes = orjson.dumps(out["parameters"]["classes"]).decode()
            tensor.parameters["classes"].string_param = classes
        datatype, data = out["datatype"], out["data"]
        if raw:
            response.raw_output_contents.append(_raw(datatype, data))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(str(v).encode() for v in data)
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(data)
    return response


def _raw(datatype: str, data: list[Any]) -> bytes:
    if datatype == "BYTES":
        encoded = [str(v).encode() for v in data]
        return b"".join(struct.pack("<I", len(b)) + b for b in encoded)
    return np.asarray(data, dtype=NUMPY[datatype]).tobytes()


def metadata_response(meta: dict[str, Any]) -> pb.ModelMetadataResponse:
    """``V2Service.metadata`` as a message (its ``parameters`` have no place in it)."""
    return pb.ModelMetadataResponse(
        name=meta["name"],
        versions=meta["versions"],
        platform=meta["platform"],
        inputs=[_tensor_meta(t) for t in meta["inputs"]],
        outputs=[_tensor_meta(t) for t in meta["outputs"]],
    )


def _tensor_meta(t: dict[str, Any]) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
