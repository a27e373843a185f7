"""One handler map, one error shape: ``{"error": str, "detail": [...]}``."""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.errors import ModelServeError, Unavailable

log = logging.getLogger("modelserve.api")


def error_response(
    status: int, message: str, detail: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps({"error": message, "detail": detail or []})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def _modelserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelServeError)
    headers = None
    if isinstance(exc, Unavailable):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return error_response(exc.status_code, exc.message, exc.detail, headers)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    names = ", ".join(".".join(str(p) for p in d["loc"]) for d in detail)
    return error_response(422, f"invalid request: {names}", detail)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), None, dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Never leak internals (tokens, paths, Redis URLs) in a body; the log has the traceback.
    log.exception("unhandled error on %s", request.url.path)
    return error_response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ModelServeError, _modelserve_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
