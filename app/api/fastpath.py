"""The prediction endpoints as plain ASGI: same contract, without the framework's per-request machinery.

``POST /predict``, ``POST /predict/batch`` and ``POST /v2/models/{name}[/versions/{version}]/infer``
are answered here, before FastAPI's router: no route matching over every
route, no dependency solving, no exit stacks, no ``Response`` objects. Their
FastAPI routes stay declared (they make the OpenAPI document) and answer
every other method, and any path this module does not recognise exactly
falls through to them.

The contract is theirs, step for step: readiness first (503 ``NotReady``
with ``Retry-After``), then the content type (415) and size (413) checks of
``app.api.body``, then the predictor; errors go through ``error_response``
(V2: 422 becomes 400); anything unexpected is answered by the app's handler
for unexpected errors (500) and raised on, as from a route. The answers carry
the same headers (``content-type``, ``content-length``, ``x-model-version``)
and bytes. ``app.main.ServiceApp`` hands these requests to the service's own
middleware in front of this one directly, past the framework's layers.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from types import SimpleNamespace
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.body import receive_json_body
from app.api.errors import error_response, unexpected_error
from app.container import Container
from app.errors import ModelServeError, NotReady
from app.predictor import Predictor
from app.v2.types import BINARY_HEADER, binary_header_length

PREDICT = "/predict"
BATCH = "/predict/batch"
V2_INFER = "/v2/models/{name}/infer"
V2_VERSION_INFER = "/v2/models/{name}/versions/{version}/infer"
_V2_PREFIX = "/v2/models/"
_INFER = "/infer"
_VERSIONS = "/versions/"
_JSON = b"application/json"
_CONTENT_TYPE = b"content-type"
_CONTENT_LENGTH = b"content-length"
_CONTENT_ENCODING = b"content-encoding"
_BINARY_HEADER = BINARY_HEADER.encode()

Answer = tuple[bytes, str] | Response
"""A 200 answer's JSON body and ``x-model-version``, or an error's answer."""


class PredictionRoutes:
    """Pure ASGI middleware answering the prediction endpoints; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, container: Container, routes: Mapping[str, Any] | None = None) -> None:
        self.app = app
        self.c = container
        # The route objects the framework would have matched: the HTTP metrics label answers by their template.
        routes = routes or {}
        self.route = {t: routes.get(t) or SimpleNamespace(path=t) for t in (PREDICT, BATCH, V2_INFER, V2_VERSION_INFER)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path == PREDICT:
                scope["route"] = self.route[PREDICT]
                await self._answer(self._predict(scope, receive), scope, receive, send)
                return
            if path == BATCH:
                scope["route"] = self.route[BATCH]
                await self._answer(self._batch(scope, receive), scope, receive, send)
                return
            if path.startswith(_V2_PREFIX) and path.endswith(_INFER):
                target = _v2_target(path)
                if target is not None:
                    scope["route"] = self.route[V2_INFER if target[1] is None else V2_VERSION_INFER]
                    await self._answer(self._infer(scope, receive, *target), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    def answers(scope: Scope) -> bool:
        """Whether this middleware answers the request itself (never hands it on to ``app``)."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path = scope["path"]
        if path in (PREDICT, BATCH):
            return True
        return path.startswith(_V2_PREFIX) and path.endswith(_INFER) and _v2_target(path) is not None

    async def _answer(self, answer: Coroutine[Any, Any, Answer], scope: Scope, receive: Receive, send: Send) -> None:
        """Send what ``answer`` comes to: a 200 JSON body, or an error's answer.

        An unexpected error is answered as the app's handler for it answers one
        (500, the one error shape), and then raised on, to be traced, counted
        and logged by the server: what the framework's outermost layer does
        for a route, done here so that a request the app hands straight to the
        middleware in front of this one (``app.main.ServiceApp``) is answered
        the same.
        """
        try:
            result = await answer
        except ClientDisconnect:
            raise  # nobody to answer: the metrics middleware counts it as its own outcome
        except Exception as exc:
            await (await unexpected_error(Request(scope), exc))(scope, receive, send)
            raise
        if isinstance(result, Response):
            await result(scope, receive, send)
            return
        body, model_version = result
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"x-model-version", model_version.encode("latin-1")),
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", _JSON),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _predictor(self) -> Predictor:
        c = self.c
        predictor = c.predictor
        if predictor is None or not c.health.ready:
            raise NotReady("model not ready", retry_after=c.health.retry_after)
        return predictor

    async def _predict(self, scope: Scope, receive: Receive) -> Answer:
        try:
            predictor = self._predictor()
            ctype, length, encoding, _ = _headers(scope)
            body = await receive_json_body(scope, receive, self.c.settings.max_body_bytes, ctype, length, encoding)
            record = await predictor.predict(body)
        except ModelServeError as exc:
            return self._error(exc, None)
        return orjson.dumps(record.response()), record.model_version

    async def _batch(self, scope: Scope, receive: Receive) -> Answer:
        try:
            predictor = self._predictor()
            ctype, length, encoding, _ = _headers(scope)
            limit = self.c.settings.batch_max_body_bytes
            body = await receive_json_body(scope, receive, limit, ctype, length, encoding)
            records = await predictor.predict_batch(body)
        except ModelServeError as exc:
            return self._error(exc, None)
        versions = ",".join(sorted({r.model_version for r in records}))
        return orjson.dumps({"predictions": [r.response() for r in records]}), versions

    async def _infer(self, scope: Scope, receive: Receive, name: str, version: str | None) -> Answer:
        try:
            predictor = self._predictor()
            target = self.c.v2.resolve(name, version)
            ctype, length, encoding, header = _headers(scope)
            limit = self.c.settings.batch_max_body_bytes
            body = await receive_json_body(
                scope, receive, limit, ctype, length, encoding, missing_ok=True, binary=header is not None
            )
            header_length = None if header is None else binary_header_length(header.decode("latin-1"))
            response = await self.c.v2.infer(predictor, target, body, header_length)
        except ModelServeError as exc:
            return self._error(exc, 400 if exc.status_code == 422 else None)
        return orjson.dumps(response), response["model_version"]

    def _error(self, exc: ModelServeError, status: int | None) -> Response:
        return error_response(exc, status, self.c.settings.max_error_details)


def _v2_target(path: str) -> tuple[str, str | None] | None:
    """``(name, version)`` of a V2 infer path, or None when it is not exactly one (the router decides then)."""
    inner = path[len(_V2_PREFIX) : -len(_INFER)]
    name, sep, version = inner.partition(_VERSIONS)
    if not name or "/" in name:
        return None
    if not sep:
        return name, None
    if not version or "/" in version:
        return None
    return name, version


def _headers(scope: Scope) -> tuple[bytes | None, bytes | None, bytes | None, bytes | None]:
    """The first Content-Type, Content-Length, Content-Encoding and Inference-Header-Content-Length values."""
    ctype = length = encoding = binary = None
    for key, value in scope["headers"]:
        if key == _CONTENT_TYPE:
            if ctype is None:
                ctype = value
        elif key == _CONTENT_LENGTH:
            if length is None:
                length = value
        elif key == _CONTENT_ENCODING:
            if encoding is None:
                encoding = value
        elif key == _BINARY_HEADER and binary is None:
            binary = value
    return ctype, length, encoding, binary
