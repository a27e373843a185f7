"""The V2 request envelope and the datatypes each manifest dtype accepts.

``parse_request`` is the only place a V2 body is validated as JSON; the
tensors it carries are turned into columns by :mod:`app.v2.codec`.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, NotRequired

from pydantic import ConfigDict, Field, StrictStr, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from app.errors import ValidationFailed, clip, from_pydantic

MODEL_NAME = "modelserve"
PLATFORM = "onnxruntime_onnx"
USER_ID = "user_id"
OUTPUTS = ("label", "probability")
"""The outputs of a binary model with int classes (the demo's); ``outputs_of`` gives any model's."""
OUTPUT_TYPES = {"label": "INT64", "probability": "FP32", "probabilities": "FP32", "prediction": "FP32"}


def outputs_of(task: str, string_labels: bool) -> dict[str, str]:
    """Output name -> datatype of a model of ``task``, in answer order.

    Classifiers answer ``label`` (INT64, or BYTES for string classes) and
    ``probability`` (of the positive class for binary, of the predicted label
    for multiclass); multiclass adds ``probabilities`` ([N, K]); regression
    answers ``prediction`` only.
    """
    if task == "regression":
        return {"prediction": "FP32"}
    out = {"label": "BYTES" if string_labels else "INT64", "probability": "FP32"}
    if task == "multiclass_classification":
        out["probabilities"] = "FP32"
    return out


_INTS = ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")
DATATYPES: dict[str, tuple[str, ...]] = {
    "float": ("FP32", "FP64"),
    "int": _INTS,
    "bool": ("BOOL",),
    "string": ("BYTES",),
}
"""Accepted datatypes per manifest dtype; the first is what metadata advertises."""

NUMPY = {
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
"""Binary tensor extension: how each fixed-size datatype is laid out (little-endian)."""

_STRICT = ConfigDict(extra="forbid", strict=True)


class InferInput(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    name: StrictStr
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: StrictStr
    parameters: NotRequired[dict[str, Any]]
    data: NotRequired[list[Any]]


class InferOutput(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    name: StrictStr
    parameters: NotRequired[dict[str, Any]]


class InferRequest(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    id: NotRequired[Annotated[StrictStr, Field(min_length=1, max_length=100)]]  # + ":row" fits a request id
    parameters: NotRequired[dict[str, Any]]
    inputs: Annotated[list[InferInput], Field(min_length=1)]
    outputs: NotRequired[list[InferOutput]]


@functools.cache
def _request_adapter() -> TypeAdapter[InferRequest]:
    return TypeAdapter(InferRequest)  # built on first use: nothing at import time


def parse_request(body: bytes, header_length: int | None) -> InferRequest:
    """The JSON part of ``body`` (all of it, or its first ``header_length`` bytes) as a request.

    Raises ``ValidationFailed`` naming every offending field, or the header
    length when it does not fall inside the body.
    """
    if header_length is not None and not 0 < header_length <= len(body):
        msg = f"Inference-Header-Content-Length {header_length} outside the body of {len(body)} bytes"
        raise ValidationFailed(
            msg, [{"loc": ["header", "inference-header-content-length"], "msg": msg, "type": "binary_header"}]
        )
    try:
        return _request_adapter().validate_json(body[:header_length] if header_length else body)
    except ValidationError as exc:
        raise from_pydantic(exc, what="invalid inference request") from None


BINARY_HEADER = "inference-header-content-length"
"""The binary tensor extension's header: the JSON part's length; the binary tensors follow it."""


def binary_header_length(value: str | None) -> int | None:
    """``Inference-Header-Content-Length`` as a number: None when absent, a 4xx naming it when not a number."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationFailed(
            f"{BINARY_HEADER} must be a whole number",
            [{"loc": ["header", BINARY_HEADER], "msg": "not a whole number", "type": "binary_header"}],
        ) from None


def requested_outputs(request: InferRequest, available: tuple[str, ...] = OUTPUTS) -> tuple[str, ...]:
    """The outputs to answer, in the order asked (all ``available`` ones when none are named)."""
    asked = tuple(o["name"] for o in request.get("outputs", []))
    unknown = [o for o in asked if o not in available]
    if unknown:
        raise ValidationFailed(
            f"unknown output(s) {', '.join(clip(o) for o in unknown[:10])}; the model has {', '.join(available)}",
            [{"loc": ["body", "outputs", o], "msg": "unknown output", "type": "unknown_output"} for o in unknown],
        )
    return asked or available
