"""The OpenAPI document: what clients generated from ``/openapi.json`` need.

Every operation has a named request schema (if it takes a body) and a named
200 schema; ``/predict``'s come from the served model (its decoder and its
answers, so per task), the rest are written here. Every error answer is the
one ``Error`` component (with ``ErrorDetail``), whatever route or status,
because one function builds them all (``app.api.errors.error_response``).
Operation ids are the route functions' names (``predict``,
``predict_batch``, ``model_version_metadata`` ...), which is what generated
clients name their functions after.

The document is built once the primary model is loaded (earlier ones are not
cached), since the request schemas are that model's.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

from app.model.decoder import Decoder
from app.model.pool import LoadedModel
from app.v2.repository import IndexRequest
from app.v2.types import InferRequest

REF = "#/components/schemas/"
NEVER_SUCCEEDS = "x-never-succeeds"
"""``openapi_extra`` key of a route that always answers an error (its default 200 is left out)."""


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def json_answer(name: str, description: str = "Success") -> dict[str, Any]:
    """A ``responses`` entry whose JSON body is the component ``name``."""
    return {"description": description, "content": {"application/json": {"schema": ref(name)}}}


def json_body(name: str, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body of the component ``name`` (routes read raw bytes)."""
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref(name)}}}}


def operation_id(route: APIRoute) -> str:
    """The route function's name: short, stable names for generated client functions."""
    return route.name


def _obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties), **extra}


_STR, _BOOL, _INT = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
_TENSOR = _obj({"name": _STR, "datatype": _STR, "shape": {"type": "array", "items": _INT}})

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _obj(
        {
            "error": {"type": "string", "description": "What is wrong, naming the offending fields"},
            "detail": {"type": "array", "items": ref("ErrorDetail"), "description": "One entry per problem"},
        },
        title="Error",
        description="Every error answer, whatever the route or status.",
    ),
    "ErrorDetail": _obj(
        {
            "loc": {
                "type": "array",
                "items": {"anyOf": [_STR, _INT]},
                "description": 'Where: ["body", "features", "amount"], ["body", "inputs", name, "data", row] ...',
            },
            "msg": _STR,
            "type": _STR,
        },
        title="ErrorDetail",
    ),
    "BatchResponse": _obj(
        {"predictions": {"type": "array", "items": ref("PredictResponse")}},
        title="BatchResponse",
        description="One answer per instance, in order.",
    ),
    "Live": _obj({"status": _STR}, title="Live"),
    "Ready": _obj(
        {"status": _STR, "models": {"type": "object", "additionalProperties": _STR, "description": "alias -> version"}},
        title="Ready",
    ),
    "AdminModels": _obj(
        {
            "aliases": {"type": "object", "additionalProperties": _STR},
            "flags": {"type": "array", "items": {"type": "object"}},
            "loaded_versions": {"type": "array", "items": _STR},
            "shadow": {"type": "object"},
            "recent_errors": {"type": "array", "items": {"type": "object"}},
        },
        ["aliases", "flags", "loaded_versions"],
        title="AdminModels",
    ),
    "ReloadResult": _obj(
        {
            "changed": {
                "type": "array",
                "items": {"type": "object"},
                "description": "What moved: alias (or flag version), from, to",
            },
            "aliases": {"type": "object", "additionalProperties": _STR},
            "loaded_versions": {"type": "array", "items": _STR},
        },
        title="ReloadResult",
        description="``changed`` and the state ``GET /admin/models`` answers.",
    ),
    "ServerMetadata": _obj(
        {"name": _STR, "version": _STR, "extensions": {"type": "array", "items": _STR}}, title="ServerMetadata"
    ),
    "ServerLive": _obj({"live": _BOOL}, title="ServerLive"),
    "ServerReady": _obj({"ready": _BOOL}, title="ServerReady"),
    "ModelReady": _obj({"name": _STR, "ready": _BOOL}, title="ModelReady"),
    "TensorMetadata": {**_TENSOR, "title": "TensorMetadata"},
    "ModelMetadata": _obj(
        {
            "name": _STR,
            "versions": {"type": "array", "items": _STR},
            "platform": _STR,
            "inputs": {"type": "array", "items": ref("TensorMetadata")},
            "outputs": {"type": "array", "items": ref("TensorMetadata")},
            "parameters": {"type": "object", "description": "version, task, store_features, nullable, classes"},
        },
        title="ModelMetadata",
    ),
    "InferOutputTensor": _obj(
        {
            **_TENSOR["properties"],
            "data": {"type": "array", "items": {}, "description": "Row-major, flat"},
            "parameters": {"type": "object"},
        },
        ["name", "datatype", "shape", "data"],
        title="InferOutputTensor",
    ),
    "InferResponse": _obj(
        {
            "model_name": _STR,
            "model_version": _STR,
            "id": _STR,
            "outputs": {"type": "array", "items": ref("InferOutputTensor")},
        },
        title="InferResponse",
    ),
    "RepositoryIndexEntry": _obj(
        {"name": _STR, "version": _STR, "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]}, "reason": _STR},
        title="RepositoryIndexEntry",
    ),
    "RepositoryIndex": {"type": "array", "items": ref("RepositoryIndexEntry"), "title": "RepositoryIndex"},
    "FeedbackAccepted": _obj({"accepted": _INT}, title="FeedbackAccepted"),
}
"""Components written by hand: the answers of routes that build their JSON directly."""


@functools.cache
def _typed_schemas() -> dict[str, dict[str, Any]]:
    """Request components from the types the V2 routes validate with, so they cannot drift apart."""
    out: dict[str, dict[str, Any]] = {}
    for name, tp in (("InferRequest", InferRequest), ("RepositoryIndexRequest", IndexRequest)):
        schema = TypeAdapter(tp).json_schema(ref_template=REF + "{model}")
        out.update(schema.pop("$defs", {}))
        out[name] = {**schema, "title": name}
    return out


def build(app: FastAPI, model: LoadedModel | None) -> dict[str, Any]:
    """The document; ``model`` is the primary (None while loading: the model's schemas are then missing)."""
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)  # FastAPI's own 422 shape: never answered here
    components.pop("ValidationError", None)
    components.update(SCHEMAS)
    components.update(_typed_schemas())
    if model is not None:
        components.update(model_schemas(model.decoder))
        components["PredictResponse"] = model.answers.response_schema()
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            if operation.pop(NEVER_SUCCEEDS, False):
                operation["responses"].pop("200", None)
            for status, response in operation.get("responses", {}).items():
                if status[:1] in ("4", "5"):
                    response["content"] = {"application/json": {"schema": ref("Error")}}
    return doc


def model_schemas(decoder: Decoder) -> dict[str, dict[str, Any]]:
    """``PredictRequest``, ``BatchRequest`` (whose items are ``PredictRequest``) and ``Features``, from the decoder."""
    out: dict[str, dict[str, Any]] = {}
    one = dict(decoder.json_schema())
    out.update(_rewrite_refs(one.pop("$defs", {})))
    out["PredictRequest"] = {**_rewrite_refs(one), "title": "PredictRequest"}
    batch = dict(decoder.batch_json_schema())
    batch.pop("$defs", None)  # Features and Instance: the same as the single request's
    out["BatchRequest"] = _rewrite_refs(batch, {"#/$defs/Instance": REF + "PredictRequest"})
    return out


def _rewrite_refs(node: Any, renamed: dict[str, str] | None = None) -> Any:
    """``node`` with ``$defs`` references pointing into the document's components."""
    renamed = renamed or {}
    if isinstance(node, dict):
        return {
            k: (
                renamed.get(v, v.replace("#/$defs/", REF))
                if k == "$ref" and isinstance(v, str)
                else _rewrite_refs(v, renamed)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v, renamed) for v in node]
    return node
