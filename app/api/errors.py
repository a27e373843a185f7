"""One error shape, ``{"error": str, "detail": [...]}``, built by one function.

``error_response`` answers every ``app.errors`` error: the global handlers
use it, and so does the V2 route class with the protocol's own status.
Framework errors (unknown path, wrong method, invalid path parameters) are
first turned into their ``app.errors`` class.

Every answer is bounded, so a hostile body cannot turn into a huge one: at
most ``max_details`` entries (``MODELSERVE_MAX_ERROR_DETAILS``) and never
more than ``MAX_ANSWER_BYTES``; a final ``more_errors`` entry counts what
was left out. Client text in ``loc`` is clipped (``app.errors.clip``), long
messages are cut.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.errors import MethodNotAllowed, ModelServeError, NotFound, Unauthorized, clip, from_pydantic

log = logging.getLogger("modelserve.api")


MAX_ANSWER_BYTES = 64 * 1024
"""Largest error answer body."""
_MESSAGE_CHARS = 1024
_MSG_CHARS = 512
_LOC_PARTS = 8
# Room kept for the summary (escaped, up to 6 bytes a character) and the final count entry.
_RESERVED = 6 * _MESSAGE_CHARS + 256


def error_response(exc: ModelServeError, status: int | None = None, max_details: int = 50) -> Response:
    """The answer to ``exc``: its class's status (or ``status``), its headers, the one error shape, bounded."""
    listed: list[bytes] = []
    budget = MAX_ANSWER_BYTES - _RESERVED
    for d in exc.detail[:max_details]:
        entry = orjson.dumps(_bounded(d))
        budget -= len(entry) + 1
        if budget < 0:
            break
        listed.append(entry)
    rest = max(exc.total, len(exc.detail)) - len(listed)
    if rest > 0:
        listed.append(orjson.dumps({"loc": [], "msg": f"{rest} more problem(s) not listed", "type": "more_errors"}))
    message = orjson.dumps(exc.message[:_MESSAGE_CHARS])
    body = b'{"error":' + message + b',"detail":[' + b",".join(listed) + b"]}"
    return Response(body, status_code=status or exc.status_code, media_type="application/json", headers=exc.headers())


def _bounded(d: dict[str, Any]) -> dict[str, Any]:
    loc = [p if isinstance(p, int) else clip(p) for p in d.get("loc", ())[:_LOC_PARTS]]
    return {"loc": loc, "msg": str(d.get("msg", ""))[:_MSG_CHARS], "type": clip(d.get("type", ""))}


def max_details(request: Request) -> int:
    """The answer's ``detail`` limit, from the app's settings."""
    limit: int = request.app.state.container.settings.max_error_details
    return limit


async def _modelserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelServeError)  # registered for this class only
    return error_response(exc, max_details=max_details(request))


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # registered for this class only
    # Its locs already start with where the value was ("path", "query", ...).
    return error_response(from_pydantic(exc.errors(), prefix=()), max_details=max_details(request))


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


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # Never leak internals (tokens, paths, Redis URLs) in a body; the log has the traceback.
    log.exception("unhandled error on %s", request.url.path)
    return error_response(ModelServeError("internal error"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ModelServeError, _modelserve_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, unexpected_error)
