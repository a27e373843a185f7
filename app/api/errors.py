"""One error shape, ``{"error": str, "detail": [...]}``, built by one function.

``error_response`` answers every ``app.errors`` error: the global handlers
use it, and so does the V2 route class with the protocol's own status.
Framework errors (unknown path, wrong method, invalid path parameters) are
first turned into their ``app.errors`` class.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.errors import MethodNotAllowed, ModelServeError, NotFound, Unauthorized, from_pydantic

log = logging.getLogger("modelserve.api")


def error_response(exc: ModelServeError, status: int | None = None) -> Response:
    """The answer to ``exc``: its class's status (or ``status``), its headers, the one error shape."""
    body = orjson.dumps({"error": exc.message, "detail": exc.detail})
    return Response(body, status_code=status or exc.status_code, media_type="application/json", headers=exc.headers())


async def _modelserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelServeError)  # registered for this class only
    return error_response(exc)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # registered for this class only
    # Its locs already start with where the value was ("path", "query", ...).
    return error_response(from_pydantic(exc.errors(), prefix=()))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # registered for this class only
    message = str(exc.detail)
    err: ModelServeError
    if exc.status_code == 404:
        err = NotFound(message)
    elif exc.status_code == 405:
        err = MethodNotAllowed(message, (exc.headers or {}).get("Allow"))
    elif exc.status_code == 401:
        err = Unauthorized(message)
    else:  # no other status is raised by the framework for these routes; keep its status if one is
        return error_response(ModelServeError(message), exc.status_code)
    return error_response(err)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Never leak internals (tokens, paths, Redis URLs) in a body; the log has the traceback.
    log.exception("unhandled error on %s", request.url.path)
    return error_response(ModelServeError("internal error"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ModelServeError, _modelserve_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
