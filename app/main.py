"""The FastAPI application: ``create_app(settings=None, container=None)``.

Nothing happens at import time. The lifespan builds (or takes) the container,
loads, warms up and self-checks the primary model, then marks ready; on the
way out it drains and tears down in reverse order.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import openapi
from app.api.admission import AdmissionControl, install_arrival_stamps
from app.api.errors import install_error_handlers
from app.api.fastpath import PredictionRoutes
from app.api.middleware import MetricsMiddleware
from app.api.routes import admin, feedback, health, predict, v2
from app.container import Container, build_container
from app.errors import ModelServeError
from app.labels import rules_for
from app.settings import Settings
from app.telemetry.tracing import TracingMiddleware

log = logging.getLogger("modelserve")


def create_app(
    settings: Settings | None = None, container: Container | None = None, *, warm_before_listening: bool = False
) -> FastAPI:
    """The app. ``warm_before_listening`` holds the lifespan until the model is ready.

    A single server loads in the background so its probes answer while it
    warms up. A supervised worker (``--workers N``) waits instead: its
    siblings serve meanwhile, and a worker that replaces a dead one must not
    take connections off the shared socket only to answer 503.
    """
    c = container or build_container(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load in the background: the server listens at once, /health/live is
        # 200 and /health/ready 503 until the model is warm and self-checked
        # (what a startupProbe expects).
        install_arrival_stamps(asyncio.get_running_loop())  # request tasks carry their arrival time
        app.state.startup = asyncio.create_task(_start(c))
        _install_drain_handler(c)
        if warm_before_listening:
            await asyncio.shield(app.state.startup)
        try:
            yield
        finally:
            app.state.startup.cancel()
            await asyncio.gather(app.state.startup, return_exceptions=True)
            await c.stop()

    app = ServiceApp(
        title="modelserve",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        # No 307 from "/predict/" to "/predict": its Location was built from the request's Host header, so any
        # client could have the service answer a redirect to a host of its choosing; a wrong path is a 404.
        redirect_slashes=False,
        generate_unique_id_function=openapi.operation_id,
        # The service traces and counts requests itself (TracingMiddleware, MetricsMiddleware). FastAPI's
        # native telemetry would add its own spans once a tracer provider is set (or auto-configure one), and
        # even while off it asks the global OpenTelemetry providers on every request (~20 µs, a refusal's budget).
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    app.state.container = c
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(feedback.router)
    app.include_router(health.router)
    app.include_router(v2.router)
    app.include_router(admin.router)
    # Innermost first: the prediction endpoints as plain ASGI (app.api.fastpath); admission control
    # around them; the metrics middleware outermost, so refused requests are counted and timed too.
    routes = {route.path: route for route in app.routes if isinstance(route, APIRoute)}
    s = c.settings
    admission: dict[str, Any] = {
        "metrics": c.metrics,
        "max_in_flight": s.max_in_flight,
        "max_queue_ms": s.max_queue_ms,
        "limits": c.admission,  # shared with the gRPC server
    }
    app.add_middleware(PredictionRoutes, container=c, routes=routes)
    app.add_middleware(AdmissionControl, **admission)
    app.add_middleware(MetricsMiddleware, metrics=c.metrics, health=c.health)
    # Outermost (added last): every request, whatever answers it, gets its server span.
    app.add_middleware(TracingMiddleware)
    # The same layers again for the requests PredictionRoutes answers, which skip the framework's own.
    predictions = PredictionRoutes(app.router, container=c, routes=routes)
    metrics = MetricsMiddleware(AdmissionControl(predictions, **admission), metrics=c.metrics, health=c.health)
    app.predictions = TracingMiddleware(metrics)
    app.openapi = lambda: _openapi(app, c)  # type: ignore[method-assign]
    return app


class ServiceApp(FastAPI):
    """The app; the prediction requests go straight to the service's middleware and ``PredictionRoutes``.

    FastAPI and Starlette wrap every request in layers of their own (the app
    call, the server-error, telemetry and body-limit middlewares: ~2 µs, a
    twentieth of a one-row prediction). For the requests ``PredictionRoutes``
    answers itself they do nothing: it answers unexpected errors as the
    server-error layer would, and the body limits are its own. So those
    requests go to ``predictions`` (tracing, metrics, admission control and
    ``PredictionRoutes``, as in the middleware stack); everything else takes
    the framework's way through the same middleware.
    """

    predictions: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        predictions = self.predictions
        if predictions is not None and PredictionRoutes.answers(scope):
            scope["app"] = self
            await predictions(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _install_drain_handler(c: Container) -> None:
    """On SIGTERM/SIGINT: readiness 503 at once, then the server's own handler after the drain delay.

    The server (uvicorn) installed its handlers before the lifespan runs; this
    wraps them, so every worker drains the same way. During the delay requests
    are still answered, which lets a load balancer notice the 503 and stop
    routing here; a second signal skips the wait.

    A signal handler runs in the main thread between two bytecodes of whatever
    it was doing, perhaps inside prometheus_client's lock (not re-entrant; one
    for every metric under ``--workers``) while a request is being counted:
    setting a metric there would wait for itself forever. So the handler only
    flips flags (the server's own handler does no more) and leaves the metric
    and the log line to the event loop.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # in-process test clients run the lifespan in a thread: no signals there
    loop = asyncio.get_running_loop()

    def drain(signum: int, frame: FrameType | None, previous: Callable[..., Any]) -> None:
        """On the loop: the gauge, then the server's handler once the drain delay has passed."""
        c.metrics.ready.set(0)
        delay = c.settings.shutdown_drain_seconds
        log.info("draining for %.1fs before shutdown", delay)
        loop.call_later(delay, previous, signum, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Callable[..., Any] = previous) -> None:
            first = not c.health.draining
            c.health.start_draining()
            if first and c.settings.shutdown_drain_seconds > 0:
                loop.call_soon_threadsafe(drain, signum, frame, previous)
                return
            if first:
                loop.call_soon_threadsafe(c.metrics.ready.set, 0)
            previous(signum, frame)

        signal.signal(sig, handler)


async def _start(c: Container) -> None:
    try:
        await c.start()
        # Everything loaded so far (libraries, models, feature tables) lives as long as the process:
        # moved out of the collector's reach, a full collection no longer walks it and stalls every
        # request in flight for tens of milliseconds.
        gc.collect()
        gc.freeze()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        message = exc.message if isinstance(exc, ModelServeError) else f"{type(exc).__name__}: {exc}"
        log.error("start-up failed: %s", message)
        c.health.mark_not_ready(f"start-up failed: {message}")
        if c.on_fatal is not None:
            c.on_fatal(message)


def _openapi(app: FastAPI, c: Container) -> dict[str, Any]:
    """The OpenAPI document (``app.api.openapi``), cached once it has the served model's schemas."""
    if app.openapi_schema:
        return app.openapi_schema
    try:
        model = c.pool.get(c.settings.alias)
    except Exception:
        return openapi.build(app, None)  # not loaded yet: don't cache an incomplete document
    doc = openapi.build(app, model)
    components = doc["components"]["schemas"]
    label = rules_for(model.manifest).json_schema()
    components["FeedbackRequest"] = label
    components["FeedbackBatchRequest"] = {
        "type": "object",
        "required": ["labels"],
        "additionalProperties": False,
        "properties": {
            "labels": {"type": "array", "minItems": 1, "maxItems": c.settings.max_batch_size, "items": label}
        },
    }
    app.openapi_schema = doc
    return doc
