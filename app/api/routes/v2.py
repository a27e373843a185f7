"""Open Inference Protocol (V2) REST endpoints; the protocol itself lives in ``app.v2``.

Errors on these routes use the protocol's statuses: 400 for bad input (where
the rest of the service answers 422), 404 for an unknown model or version,
503 (with ``Retry-After``) while not ready. The body is the service's usual
``{"error", "detail"}``, whose ``error`` key is what V2 clients read.

The repository extension's index lists versions on disk and why one is not
loaded (load errors name files), so it needs the admin token like
``/admin/models`` (tritonclient passes it as ``headers=``); its load and
unload answer 400 ``NotSupported`` to anyone: they reveal and change nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from app.api.body import read_json_body
from app.api.deps import ContainerDep, HealthDep, PredictorDep, SettingsDep, V2Dep
from app.api.errors import error_response, max_details
from app.api.openapi import NEVER_SUCCEEDS, json_answer, json_body
from app.api.routes.admin import AUTH_ERRORS, require_admin
from app.errors import ModelServeError, retry_after_value
from app.health import Health
from app.predictor import Predictor
from app.settings import Settings
from app.v2 import MODEL_NAME, Target, V2Service, repository
from app.v2.types import BINARY_HEADER, binary_header_length


class V2Route(APIRoute):
    """Answers ``ModelServeError`` with the V2 statuses (422 becomes 400)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ModelServeError as exc:
                return error_response(exc, 400 if exc.status_code == 422 else None, max_details(request))

        return route


router = APIRouter(prefix="/v2", tags=["v2"], route_class=V2Route)

NOT_READY: dict[int | str, dict[str, Any]] = {503: {"description": "Not ready (starting, failed self-check, draining)"}}
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown model or version"}, **NOT_READY}
INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid input: every offending tensor named"},
    404: {"description": "Unknown model, version or user"},
    413: {"description": "Body too large"},
    415: {"description": "Not JSON (nor a binary-extension body)"},
    **NOT_READY,
}


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _not_ready(body: dict[str, Any], health: Health) -> Response:
    body = {**body, "ready": False, "error": f"not ready: {health.reason}", "detail": []}
    return _json(body, 503, {"Retry-After": retry_after_value(health.retry_after)})


@router.get("", responses={200: json_answer("ServerMetadata")})
async def server_metadata(request: Request) -> Response:
    """Server name, version and protocol extensions."""
    return _json(
        {"name": MODEL_NAME, "version": request.app.version, "extensions": ["binary_tensor_data", "model_repository"]}
    )


@router.get("/health/live", responses={200: json_answer("ServerLive")})
async def server_live() -> Response:
    """200 while the process runs."""
    return _json({"live": True})


@router.get("/health/ready", responses={200: json_answer("ServerReady"), **NOT_READY})
async def server_ready(health: HealthDep) -> Response:
    """200 once the primary model is warm and self-checked; 503 before that and while draining."""
    if health.is_ready:
        return _json({"ready": True})
    return _not_ready({}, health)


# Each optional-version route is two routes, so a path parameter is never optional (generated clients need that).


@router.get("/models/{name}", responses={200: json_answer("ModelMetadata"), **MODEL_ERRORS})
async def model_metadata(name: str, v2: V2Dep) -> Response:
    """Inputs (one per request feature, plus ``user_id`` when store features exist) and outputs."""
    return _json(v2.metadata(v2.resolve(name, None)))


@router.get("/models/{name}/versions/{version}", responses={200: json_answer("ModelMetadata"), **MODEL_ERRORS})
async def model_version_metadata(name: str, version: str, v2: V2Dep) -> Response:
    """``model_metadata`` of one version of the model."""
    return _json(v2.metadata(v2.resolve(name, version)))


@router.get("/models/{name}/ready", responses={200: json_answer("ModelReady"), **MODEL_ERRORS})
async def model_ready(name: str, v2: V2Dep, health: HealthDep) -> Response:
    """200 when the named model is loaded and the service is ready; 404 for an unknown model."""
    return _model_ready(name, None, v2, health)


@router.get("/models/{name}/versions/{version}/ready", responses={200: json_answer("ModelReady"), **MODEL_ERRORS})
async def model_version_ready(name: str, version: str, v2: V2Dep, health: HealthDep) -> Response:
    """``model_ready`` for one version of the model."""
    return _model_ready(name, version, v2, health)


def _model_ready(name: str, version: str | None, v2: V2Service, health: Health) -> Response:
    v2.resolve(name, version)
    if health.is_ready:
        return _json({"name": name, "ready": True})
    return _not_ready({"name": name}, health)


INFER: dict[str, Any] = {
    "responses": {200: json_answer("InferResponse"), **INFER_ERRORS},
    "openapi_extra": json_body("InferRequest"),
}


@router.post("/models/{name}/infer", **INFER)
async def infer(request: Request, name: str, v2: V2Dep, predictor: PredictorDep, settings: SettingsDep) -> Response:
    """Inference on V2 tensors (JSON, or Triton's binary tensor extension for inputs)."""
    return await _infer(request, v2.resolve(name, None), v2, predictor, settings)


@router.post("/models/{name}/versions/{version}/infer", **INFER)
async def infer_version(
    request: Request, name: str, version: str, v2: V2Dep, predictor: PredictorDep, settings: SettingsDep
) -> Response:
    """``infer`` on one version of the model."""
    return await _infer(request, v2.resolve(name, version), v2, predictor, settings)


async def _infer(request: Request, target: Target, v2: V2Service, predictor: Predictor, settings: Settings) -> Response:
    header = request.headers.get(BINARY_HEADER)
    # Triton's clients send no Content-Type; binary-extension bodies may say octet-stream.
    body = await read_json_body(request, settings.batch_max_body_bytes, missing_ok=True, binary=header is not None)
    header_length = binary_header_length(header)
    response = await v2.infer(predictor, target, body, header_length)
    return _json(response, headers={"X-Model-Version": response["model_version"]})


@router.post(
    "/repository/index",
    dependencies=[Depends(require_admin)],
    responses={200: json_answer("RepositoryIndex"), **AUTH_ERRORS, 400: {"description": "Invalid index request"}},
    openapi_extra=json_body("RepositoryIndexRequest", required=False),
)
async def repository_index(request: Request, c: ContainerDep, settings: SettingsDep) -> Response:
    """Every version (under ``modelserve``) and alias with its state: READY, or UNAVAILABLE and why."""
    ready_only = repository.parse_index_request(await read_json_body(request, settings.max_body_bytes, missing_ok=True))
    versions, aliases = await asyncio.gather(
        asyncio.to_thread(c.repository.versions), asyncio.to_thread(c.repository.aliases)
    )
    refused = {e["version"]: e["error"] for e in c.rollout.follower.recent_errors}
    index = repository.repository_index(
        versions,
        aliases,
        loaded=c.pool.by_version,
        serving={alias: m.version for alias, m in c.v2.aliases().items()},
        refused=refused,
        not_ready=None if c.health.is_ready else f"not ready: {c.health.reason}",
        ready_only=ready_only,
    )
    return Response(orjson.dumps(index), media_type="application/json")


NOT_SUPPORTED: dict[int | str, dict[str, Any]] = {400: {"description": "Not supported: promote with the CLI"}}


@router.post("/repository/models/{name}/load", responses=NOT_SUPPORTED, openapi_extra={NEVER_SUCCEEDS: True})
async def repository_load(name: str) -> Response:
    """Not supported: versions are loaded by pointing an alias at them (``modelserve promote``)."""
    raise repository.not_supported("load", name)


@router.post("/repository/models/{name}/unload", responses=NOT_SUPPORTED, openapi_extra={NEVER_SUCCEEDS: True})
async def repository_unload(name: str) -> Response:
    """Not supported: a version is unloaded when no alias or flag names it any more."""
    raise repository.not_supported("unload", name)
