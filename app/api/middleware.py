"""HTTP metrics as plain ASGI middleware.

Starlette's ``BaseHTTPMiddleware`` costs a task and a memory stream per
request; this wraps ``send`` instead, which is a few microseconds. Routes are
labelled by their template (``/v2/models/{name}/infer``), never by the raw
path, and methods outside a known set as ``other`` (the parser accepts some
forty), so label cardinality stays bounded.

A client that goes away before its request is read (Starlette raises
``ClientDisconnect``) is its own outcome, ``status="disconnected"``: nobody
is waiting for an answer, so it is neither a 5xx (which pages) nor an error
with a traceback.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.health import Health
from app.telemetry import tracing
from app.telemetry.metrics import Metrics

log = logging.getLogger("modelserve.api")

_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class MetricsMiddleware:
    """Counts and times every HTTP request; while draining, asks clients to close their connection.

    ``Connection: close`` during the drain window makes keep-alive clients
    reconnect for their next request (and meet a clean refusal once the
    listener has closed) instead of racing the server's close of an idle
    keep-alive connection.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, health: Health) -> None:
        self.app = app
        self.metrics = metrics
        self.health = health
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        outcome: str | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.health.draining:
                    message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:
            outcome = "disconnected"
            log.debug("client disconnected before its request was read: %s", scope.get("path"))
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            key = (template, method, outcome or _CLASSES.get(status // 100, "5xx"))
            pair = self._children.get(key)
            if pair is None:
                pair = (
                    self.metrics.http_requests.labels(*key),
                    self.metrics.http_duration.labels(template, method),
                )
                self._children[key] = pair
            pair[0].inc()
            # Inside TracingMiddleware: the server span is current, its trace id the exemplar.
            pair[1].observe(time.perf_counter() - t0, tracing.exemplar() if tracing.enabled else None)
