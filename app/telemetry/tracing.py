"""Distributed tracing with the OpenTelemetry SDK, configured only by the standard variables.

``setup()`` (called by the container at start) turns tracing on when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is
set; ``shutdown()`` (at stop) flushes and turns it off. The SDK itself reads
the rest:

- ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf`` (the default) is
  supported. ``grpc`` needs the gRPC exporter package, which the service does
  not install: tracing stays off and the start-up log says why (point the
  endpoint at the collector's OTLP/HTTP port, 4318, instead). ``http/json``
  is refused the same way.
- ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``: the resource
  (``service.name`` defaults to ``modelserve``).
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: parent-based
  always-on unless set (e.g. ``parentbased_traceidratio`` with ``0.01``).
- ``OTEL_BSP_*``: the batch span processor's queue and schedule.
- ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``: off.

Off, tracing costs one module-attribute check per instrumentation point:
``span()`` hands back one shared no-op context manager (no span object, no
context attach) and the HTTP middleware passes straight through.

Spans are made on this module's own provider, never the process-global one
(which can be set only once per process; tests build several apps). Readers
of the current span (``opentelemetry.trace.get_current_span()``, e.g. log
records carrying trace and span ids) see them all the same: the current span
lives in the context, not in the provider.

Admission control (queueing or shedding before the route runs) reports its
wait with ``record_admission(seconds, outcome)``: attributes on the request's
server span, which exists as long as ``TracingMiddleware`` is the outermost
middleware (``create_app`` adds it last).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("modelserve.tracing")

enabled = False
"""True between a successful ``setup()`` and ``shutdown()``; every instrumentation point checks it first."""

_provider: Any = None
_tracer: Any = None
_propagator = TraceContextTextMapPropagator()  # W3C traceparent / tracestate

CLIENT = SpanKind.CLIENT
SERVER = SpanKind.SERVER
INTERNAL = SpanKind.INTERNAL


class _NoopSpan:
    """What ``span()`` yields while tracing is off: accepts attributes and drops them."""

    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        pass

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _NoopSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


NOOP = _NoopSpan()


def setup(env: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on from the standard OTEL_* variables; False (and off) when they don't ask for it."""
    global enabled, _provider, _tracer
    env = os.environ if env is None else env
    if enabled:
        return True
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return False
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    ).strip()
    if protocol != "http/protobuf":
        log.error(
            "tracing off: OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported "
            "(use http/protobuf, the collector's port 4318)",
            protocol,
        )
        return False
    # Imported here: a service without an endpoint never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    defaults = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "modelserve"}
    resource = Resource.create(defaults)  # merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over these
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER, parent-based by default
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _provider = provider
    _tracer = provider.get_tracer("modelserve")
    enabled = True
    log.info("tracing on: OTLP/HTTP to %s, sampler %s", endpoint, provider.sampler.get_description())
    return True


def shutdown() -> None:
    """Export what is queued and turn tracing off."""
    global enabled, _provider, _tracer
    provider = _provider
    enabled, _provider, _tracer = False, None, None
    if provider is not None:
        provider.shutdown()


def force_flush(timeout_millis: int = 10_000) -> bool:
    """Export every finished span now (tests, and before a batch job exits)."""
    return _provider.force_flush(timeout_millis) if _provider is not None else True


def span(
    name: str,
    kind: SpanKind = INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    links: list[Link] | None = None,
) -> Any:
    """A context manager: a child of the current span, current inside the block; the no-op while off.

    Also the no-op under a parent that was not sampled: its children would not
    be either (every sampler offered is parent-based or decides by trace id),
    so at 1 % sampling the other 99 % of requests pay for one span, not six.
    The context stays the parent's, so outgoing ``traceparent`` still carries
    the not-sampled decision.
    """
    if not enabled:
        return NOOP
    parent = trace.get_current_span().get_span_context()
    if parent.is_valid and not parent.trace_flags.sampled:  # (a sampled parent may have ended: batch POSTs)
        return NOOP
    return _tracer.start_as_current_span(name, kind=kind, attributes=attributes, links=links)


def current() -> Any:
    """The current span (an invalid one when there is none)."""
    return trace.get_current_span()


def current_context() -> SpanContext | None:
    """The current span's context when it is sampled (for links and exemplars), else None."""
    if not enabled:
        return None
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.trace_flags.sampled else None


def exemplar() -> dict[str, str] | None:
    """``{"trace_id": ...}`` of the current sampled span, for a histogram observation; None otherwise."""
    ctx = current_context()
    return {"trace_id": format(ctx.trace_id, "032x")} if ctx is not None else None


def link(ctx: SpanContext | None) -> list[Link] | None:
    return [Link(ctx)] if ctx is not None else None


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current context's ``traceparent`` (and ``tracestate``) to outgoing ``headers``."""
    if enabled:
        _propagator.inject(headers)
    return headers


def record_admission(seconds: float, outcome: str) -> None:
    """Admission control's wait (``seconds`` queued) and verdict (``admitted``, ``shed``...) on the server span."""
    if enabled:
        s = trace.get_current_span()
        s.set_attribute("modelserve.admission.queue_seconds", seconds)
        s.set_attribute("modelserve.admission.outcome", outcome)


class _Getter(Getter[Any]):
    """Reads W3C headers from an ASGI scope's raw header list."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        raw = key.encode()
        values = [v.decode("latin-1") for k, v in carrier if k == raw]
        return values or None

    def keys(self, carrier: Any) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_GETTER = _Getter()


class TracingMiddleware:
    """One server span per HTTP request, continuing an incoming W3C ``traceparent``.

    Named ``METHOD /route/template`` once routing has happened (``unmatched``
    otherwise); carries the status and, when a route sets them, the model
    version and variant (``annotate_prediction``). A pass-through while off.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not enabled or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = _propagator.extract(scope.get("headers") or [], getter=_GETTER)
        method = scope["method"]
        with _tracer.start_as_current_span(
            f"{method} unmatched", context=parent, kind=SERVER, record_exception=True, set_status_on_exception=True
        ) as server:
            status = 0

            async def send_wrapper(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    server.update_name(f"{method} {route}")
                    server.set_attribute("http.route", route)
                server.set_attribute("http.request.method", method)
                server.set_attribute("url.path", scope.get("path", ""))
                if status:
                    server.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        server.set_status(Status(StatusCode.ERROR))


def annotate_prediction(model_version: str, variant: str | None, rows: int = 1) -> SpanContext | None:
    """Model version and variant on the current (server) span; returns its context for links (shadow)."""
    s = trace.get_current_span()
    s.set_attribute("modelserve.model_version", model_version)
    if variant is not None:
        s.set_attribute("modelserve.variant", variant)
    ctx = s.get_span_context()
    return ctx if ctx.trace_flags.sampled else None
