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
- ``OTEL_BSP_*``: the batch span processor's queue and schedule. Unset, the
  queue holds 4,096 spans and a POST carries up to 2,048 (the SDK's 2,048 and
  512): a POST costs ~1.5 ms of CPU on the event loop's core whatever its
  size, ~3 µs a span in batches of 512, ~1 µs in 2,048.
- ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``: off.

Off, tracing costs one module-attribute check per instrumentation point:
``span()`` hands back one shared no-op context manager (no span object, no
context attach) and the HTTP middleware passes straight through.

On, a sampled request costs the SDK's spans (a live ``Span`` each, ended into
the batch processor: ~10 µs each here) and their export in the processor's
thread, on the same core as the event loop: the SDK's exporter sends them
(endpoint, headers, TLS, compression and retries are its own), but the
request body is written by ``app.telemetry.otlp_encode`` (~4.5 µs a span, the
SDK's encoder ~14 µs), and its ``requests`` session reads proxies, netrc
and the CA bundle once instead of on every POST. Measured in process
(``python -m bench.tracecost``), a sampled ``/predict`` (server, decode,
features, inference spans) costs ~140-150 µs more than one with tracing off
(~55 µs): ~9-11 µs to make each span, ~5.5 µs each to encode and send, and
the context and attribute work around them (``bench/README.md``).

A request the sampler drops costs one context-variable read per
instrumentation point, and its server span's decision; the SDK is not called
at all in the two common cases:

- An HTTP request without ``traceparent`` (and a root span of ``span()``:
  the shadow run, a batch job), under the SDK's trace-id-ratio sampler
  (``traceidratio``, ``parentbased_traceidratio``) or
  ``(parentbased_)always_off``: ``TracingMiddleware`` draws the trace id from
  the provider's id generator and applies the sampler's own rule (the id's low
  64 bits below the ratio's bound). Dropped, no span object, no context
  attached; the request's trace id is kept in a context variable, so outgoing
  calls still send ``traceparent`` (that id, a fresh span id, and the flags
  the SDK would set: not sampled), and the prediction log record and JSON log
  lines carry the trace id (no ``span_id``: there is no span). Kept, the SDK
  starts the server span with that very trace id (the id generator hands it
  over) and reaches the same decision.
- An HTTP request whose ``traceparent`` is valid and not sampled (flags
  ``00``), under a parent-based sampler (every ``parentbased_*``, the default
  included): the parent-based
  sampler would drop it, so ``TracingMiddleware`` does, the same way: the
  caller's trace id is the request's (log record, log lines), and outgoing
  calls send it with flags ``00`` (``02`` when the caller set the
  random-trace-id bit, as the SDK does) and the caller's ``tracestate``.
- Otherwise (any other sampler, a sampled or malformed ``traceparent``,
  gRPC): the SDK decides and a dropped request's non-recording span is
  current, as the SDK would have it.

Measured in process, a dropped request costs ~3-5 µs over tracing off (the
middleware's decision, the context variable, the instrumentation points'
reads, the trace id in the log record); at a ratio of 0.01 the 1 % that are
sampled add ~1.5 µs a request on average.

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
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
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


class _Current:
    """``with``: the span is current inside the block, ended (an exception recorded) on the way out.

    What ``Tracer.start_as_current_span`` does, without its two generator-based
    context managers: this is on every instrumentation point of every sampled
    request.
    """

    __slots__ = ("_parent", "_span", "_token")

    def __init__(self, span: Any, parent: Any) -> None:
        self._span = span
        self._parent = parent  # the current context, already looked up by the caller
        self._token: Any = None

    def __enter__(self) -> Any:
        self._token = _attach(trace.set_span_in_context(self._span, self._parent))
        return self._span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        _detach(self._token)
        span = self._span
        if isinstance(exc, Exception) and span.is_recording():  # as use_span: not CancelledError, GeneratorExit
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()


_unsampled: ContextVar[int] = ContextVar("modelserve_trace_unsampled", default=0)
"""Non-zero inside a request whose server span was not sampled: every instrumentation point is then a no-op
after one context-variable read, instead of looking the current span up (an ABC ``isinstance`` and two
context reads each, ten times a request). ``-1``: the SDK dropped it and its non-recording span is current.
Else the trace id of a request dropped without the SDK (nothing current; see ``TracingMiddleware``)."""

_pending_trace_id: ContextVar[int] = ContextVar("modelserve_pending_trace_id", default=0)
"""The trace id the next root span takes (set around ``start_span`` by ``TracingMiddleware``)."""

_remote: ContextVar[tuple[int, str, str | None] | None] = ContextVar("modelserve_trace_remote", default=None)
"""Inside a request whose incoming ``traceparent`` was not sampled (dropped without the SDK, see
``TracingMiddleware``): its trace id, the flags to send downstream and the incoming ``tracestate``."""

_parent_drops_unsampled = False
"""Whether the sampler drops whatever an unsampled remote parent starts (every parent-based sampler as
configured by ``OTEL_TRACES_SAMPLER``): then ``TracingMiddleware`` decides such requests without the SDK."""

_LOW_64 = (1 << 64) - 1
_root_bound: int | None = None
"""Set when a root span's decision is the SDK trace-id-ratio rule: sampled iff ``trace_id & _LOW_64 < bound``."""
_ids: Any = None  # the provider's id generator (wrapped)
_new_trace_id: Any = None  # its own generate_trace_id
_dropped_flags = "00"  # W3C trace-flags of a dropped root: "02" (random trace id) when the generator says so


def _handing_over(inner: Any) -> Any:
    """The provider's id generator ``inner``, handing a root span the trace id its sampling was decided on."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class HandingOverIds(IdGenerator):
        def generate_trace_id(self) -> int:
            return _pending_trace_id.get() or inner.generate_trace_id()

        def generate_span_id(self) -> int:
            return int(inner.generate_span_id())

        def is_trace_id_random(self) -> bool:
            return bool(getattr(inner, "is_trace_id_random", lambda: False)())

    return HandingOverIds()


def _ratio_bound(sampler: Any) -> int | None:
    """The bound of a root span's decision when ``sampler`` is (parent-based) trace-id-ratio or always-off.

    None for any other sampler, always-on included (nothing to skip): those go through the SDK.
    """
    from opentelemetry.sdk.trace import sampling

    if type(sampler) in (sampling.ParentBased, sampling.ParentBasedTraceIdRatio):
        sampler = getattr(sampler, "_root", None)
    if type(sampler) is sampling.TraceIdRatioBased:
        bound = int(sampler.bound)
        return bound if bound <= _LOW_64 else None
    if sampler is sampling.ALWAYS_OFF:
        return 0
    return None


def _drops_unsampled_parents(sampler: Any) -> bool:
    """True when ``sampler`` is parent-based and drops every span whose remote parent was not sampled."""
    from opentelemetry.sdk.trace import sampling

    return isinstance(sampler, sampling.ParentBased) and (
        getattr(sampler, "_remote_parent_not_sampled", None) is sampling.ALWAYS_OFF
    )


_ROOT = otel_context.Context()  # no parent: what extracting from headers without traceparent gives
_attach = otel_context.attach
_detach = otel_context.detach
_get_current = otel_context.get_current


def setup(env: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on from the standard OTEL_* variables; False (and off) when they don't ask for it."""
    global enabled, _provider, _tracer, _root_bound, _ids, _new_trace_id, _dropped_flags, _parent_drops_unsampled
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
    resource = _hashed(Resource.create(defaults))  # merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over these
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER, parent-based by default
    queue_size, batch_size = _batching()
    provider.add_span_processor(
        BatchSpanProcessor(_exporter(OTLPSpanExporter), max_queue_size=queue_size, max_export_batch_size=batch_size)
    )
    _new_trace_id = provider.id_generator.generate_trace_id
    _ids = provider.id_generator = _handing_over(provider.id_generator)  # before get_tracer: tracers copy it
    _root_bound = _ratio_bound(provider.sampler)
    _parent_drops_unsampled = _drops_unsampled_parents(provider.sampler)
    _dropped_flags = "02" if _ids.is_trace_id_random() else "00"  # as the SDK sets a root's flags
    _provider = provider
    _tracer = provider.get_tracer("modelserve")
    enabled = True
    log.info("tracing on: OTLP/HTTP to %s, sampler %s", endpoint, provider.sampler.get_description())
    return True


def _batching() -> tuple[int | None, int | None]:
    """The batch span processor's queue and batch sizes when neither ``OTEL_BSP_MAX_QUEUE_SIZE`` nor
    ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` is set: 4,096 and 2,048 instead of the SDK's 2,048 and 512.

    Each POST costs ~1.5 ms of CPU in the processor's thread (requests, urllib3, http.client), on the core
    the event loop shares: ~3 µs a span in batches of 512, ~1 µs in batches of 2,048 (~150 KB a POST).
    A batch still goes out at least every ``OTEL_BSP_SCHEDULE_DELAY`` (5 s).
    """
    if os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") or os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        return None, None  # the SDK reads them (from os.environ), with its own defaults for the other
    return 4096, 2048


def _exporter(base: Any) -> Any:
    """The SDK's OTLP/HTTP exporter (endpoint, headers, compression, TLS, retries: its own), with
    ``app.telemetry.otlp_encode`` writing the request body instead of the SDK's protobuf objects (~4.5 µs a span
    against ~14 µs, in the processor's thread on the event loop's core; see that module).

    Its ``requests`` session reads the environment (proxies, ``~/.netrc``, the CA bundle) once, here, instead
    of on every POST: ``requests`` looks for a netrc file and the proxy variables per request, which measured
    a third of an export's CPU here (two ``stat`` calls and the environment scan per POST). Not when a
    credential provider (``OTEL_PYTHON_EXPORTER_OTLP_HTTP_[TRACES_]CREDENTIAL_PROVIDER``) brings its own session.
    """
    import requests
    from opentelemetry.sdk.trace.export import SpanExportResult

    from app.telemetry.otlp_encode import encode_spans

    class Exporter(base):
        def export(self, spans: Any) -> Any:
            if self._shutdown:
                log.warning("Exporter already shutdown, ignoring batch")
                return SpanExportResult.FAILURE
            with self._metrics.export_operation(len(spans)) as result:
                try:
                    body = encode_spans(spans)
                except Exception as error:
                    log.error("Failed to encode span batch: %s", error)
                    result.error = error
                    return SpanExportResult.FAILURE
                answer = self._client.export(body)
                if not answer.success:
                    result.error = answer.error
                    return SpanExportResult.FAILURE
            return SpanExportResult.SUCCESS

    providers = (
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
    )
    own_session = not any(os.environ.get(name) for name in providers)  # the SDK reads these from os.environ
    session = requests.Session() if own_session else None
    exporter = Exporter(session=session)
    if session is not None:
        # What Session.request would work out from the environment for every POST to this one endpoint.
        url = exporter._endpoint
        session.proxies.update(requests.utils.get_environ_proxies(url))
        session.auth = requests.utils.get_netrc_auth(url)
        if session.verify is True:
            session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        session.trust_env = False
    return exporter


def _hashed(resource: Any) -> Any:
    """``resource`` with its hash computed once.

    The OTLP encoder groups each batch by resource, hashing it once per span,
    and ``Resource.__hash__`` serialises every attribute to JSON each time: an
    eighth of the export's CPU. A resource never changes after creation.
    """
    from opentelemetry.sdk.resources import Resource

    class HashedResource(Resource):
        def __init__(self, attributes: Any, schema_url: str | None = None) -> None:
            super().__init__(attributes, schema_url)
            self._hash = super().__hash__()

        def __hash__(self) -> int:
            return self._hash

        def merge(self, other: Resource) -> Resource:
            return _hashed(super().merge(other))

    return HashedResource(resource.attributes, resource.schema_url)


def shutdown() -> None:
    """Export what is queued and turn tracing off."""
    global enabled, _provider, _tracer, _root_bound, _ids, _new_trace_id, _parent_drops_unsampled
    provider = _provider
    enabled, _provider, _tracer, _root_bound, _ids, _new_trace_id = False, None, None, None, None, None
    _parent_drops_unsampled = False
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
    the not-sampled decision. A root span (the shadow run, a batch job) under a
    trace-id-ratio sampler is decided here as ``TracingMiddleware`` decides a
    request's, and a dropped one is a ``_Dropped`` block: no SDK span.
    """
    if not enabled or _unsampled.get():
        return NOOP
    ctx = _get_current()
    parent = trace.get_current_span(ctx).get_span_context()
    if parent.is_valid:
        if not parent.trace_flags.sampled:  # (a sampled parent may have ended: batch POSTs)
            return NOOP
    elif _root_bound is not None:
        trace_id = _new_trace_id()
        if trace_id & _LOW_64 >= _root_bound:  # TraceIdRatioBased.should_sample's rule: dropped
            return _Dropped(trace_id)
        return _Current(_start_root(trace_id, name, ctx, kind, attributes, links), ctx)
    return _Current(_tracer.start_span(name, ctx, kind, attributes, links), ctx)


def _start_root(trace_id: int, name: str, ctx: Any, kind: SpanKind, attributes: Any = None, links: Any = None) -> Any:
    """The SDK's root span ``name`` with ``trace_id``, its sampling already decided to keep it."""
    pending = _pending_trace_id.set(trace_id)  # the id generator hands it to the span
    try:
        return _tracer.start_span(name, ctx, kind, attributes, links)
    finally:
        _pending_trace_id.reset(pending)


class _Dropped(_NoopSpan):
    """``with``: a root the sampler dropped before the SDK made it; its trace id is the request's inside the block."""

    __slots__ = ("_token", "_trace_id")

    def __init__(self, trace_id: int) -> None:
        self._trace_id = trace_id
        self._token: Any = None

    def __enter__(self) -> _Dropped:
        self._token = _unsampled.set(self._trace_id)
        return self

    def __exit__(self, *exc: object) -> None:
        _unsampled.reset(self._token)


def current() -> Any:
    """The current span (an invalid one when there is none)."""
    return trace.get_current_span()


def current_context() -> SpanContext | None:
    """The current span's context when it is sampled (for links and exemplars), else None."""
    if not enabled or _unsampled.get():
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
        dropped = _unsampled.get()
        if dropped > 0:  # dropped without the SDK: no span is current, the trace id is here
            remote = _remote.get()
            flags = _dropped_flags if remote is None else remote[1]
            headers["traceparent"] = f"00-{dropped:032x}-{_ids.generate_span_id():016x}-{flags}"
            if remote is not None and remote[2]:
                headers["tracestate"] = remote[2]
        else:
            _propagator.inject(headers)
    return headers


unsampled_trace = _unsampled
"""For readers on every request (``logs``): ``unsampled_trace.get() > 0`` is the trace id of the request being
served when it was dropped without the SDK (see the module); 0 or -1 otherwise."""


def record_admission(seconds: float, outcome: str) -> None:
    """Admission control's wait (``seconds`` queued) and verdict (``admitted``, ``shed``...) on the server span."""
    if enabled and not _unsampled.get():
        trace.get_current_span().set_attributes(
            {"modelserve.admission.queue_seconds": seconds, "modelserve.admission.outcome": outcome}
        )


_TRACEPARENT = TraceContextTextMapPropagator._TRACEPARENT_HEADER_FORMAT_RE


def _unsampled_parent(value: bytes, tracestate: bytes | None, headers: Any) -> tuple[int, str, str | None] | None:
    """(trace id, downstream flags, tracestate) of an incoming ``traceparent`` that is valid and not sampled.

    None for anything else (sampled, malformed, too long): the SDK's propagator reads those as it always
    does. Valid means what ``TraceContextTextMapPropagator.extract`` accepts; the downstream flags are what
    the SDK gives the child of such a parent (not sampled, the parent's random-trace-id bit kept), and the
    tracestate is the SDK's reading of the incoming one (only read when there is one).
    """
    parts = value.split(b"-")
    if len(parts) == 4:  # the usual form, checked without the regular expression (~1 µs less)
        version, trace_hex, span_hex, flags_hex = parts
        flags = _FAST_FLAGS.get(flags_hex)
        if (
            flags is None
            or version != b"00"
            or len(trace_hex) != 32
            or len(span_hex) != 16
            or (trace_hex + span_hex).translate(None, b"0123456789abcdef")  # not all lowercase hex
        ):
            return _unsampled_parent_slowly(value, tracestate, headers)
        trace_id = int(trace_hex, 16)
        if not trace_id or span_hex == b"0000000000000000":
            return None
    else:
        return _unsampled_parent_slowly(value, tracestate, headers)
    return trace_id, flags, None if tracestate is None else _tracestate(headers)


_FAST_FLAGS = {b"00": "00", b"02": "02"}
"""Unsampled trace-flags the fast path knows, and what the SDK sends downstream for each."""


def _unsampled_parent_slowly(
    value: bytes, tracestate: bytes | None, headers: Any
) -> tuple[int, str, str | None] | None:
    """``_unsampled_parent`` of any form the propagator's regular expression accepts."""
    if len(value) > 512:
        return None
    match = _TRACEPARENT.search(value.decode("latin-1"))
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    flags = int(flags_hex, 16)
    if flags & 1 or version == "ff" or (version == "00" and rest):
        return None
    trace_id = int(trace_hex, 16)
    if not trace_id or not int(span_hex, 16):
        return None
    return trace_id, "02" if flags & 2 else "00", None if tracestate is None else _tracestate(headers)


def _tracestate(headers: Any) -> str | None:
    """The incoming ``tracestate`` as the SDK's propagator reads it (size limit, invalid members dropped)."""
    state = trace.get_current_span(_propagator.extract(headers, getter=_GETTER)).get_span_context().trace_state
    return (state.to_header() or None) if state is not None else None


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
    A request without ``traceparent`` under a trace-id-ratio sampler is decided
    here, by the sampler's rule, and so is one whose ``traceparent`` is not
    sampled under a parent-based sampler: a dropped one never reaches the SDK
    (see the module).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not enabled or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or ()
        method = scope["method"]
        traceparent = tracestate = None
        for key, value in headers:
            if key == b"traceparent":
                if traceparent is None:  # the first, as the propagator reads it
                    traceparent = value
            elif key == b"tracestate":
                tracestate = value
        if traceparent is None:
            bound = _root_bound
            if bound is None:
                server = _tracer.start_span(f"{method} unmatched", _ROOT, SERVER)
            else:
                trace_id = _new_trace_id()
                if trace_id & _LOW_64 >= bound:  # TraceIdRatioBased.should_sample's rule: dropped
                    flag = _unsampled.set(trace_id)
                    try:
                        await self.app(scope, receive, send)
                    finally:
                        _unsampled.reset(flag)
                    return
                server = _start_root(trace_id, f"{method} unmatched", _ROOT, SERVER)
        else:
            remote = _unsampled_parent(traceparent, tracestate, headers) if _parent_drops_unsampled else None
            if remote is not None:  # the caller did not sample it: neither does the parent-based sampler
                flag = _unsampled.set(remote[0])
                downstream = _remote.set(remote)
                try:
                    await self.app(scope, receive, send)
                finally:
                    _remote.reset(downstream)
                    _unsampled.reset(flag)
                return
            server = _tracer.start_span(f"{method} unmatched", _propagator.extract(headers, getter=_GETTER), SERVER)
        if not server.is_recording():
            # Not sampled: only its context matters (outgoing traceparent, children skipped).
            token = _attach(trace.set_span_in_context(server))
            flag = _unsampled.set(-1)
            try:
                await self.app(scope, receive, send)
            finally:
                _unsampled.reset(flag)
                _detach(token)
            return
        status = 0

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with _Current(server, _get_current()):
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                # One write for all of them: each set_attribute takes the span's lock and validates.
                attributes: dict[str, Any] = {"http.request.method": method, "url.path": scope.get("path", "")}
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    server.update_name(f"{method} {route}")
                    attributes["http.route"] = route
                if status:
                    attributes["http.response.status_code"] = status
                    if status >= 500:
                        server.set_status(Status(StatusCode.ERROR))
                server.set_attributes(attributes)


def annotate_prediction(model_version: str, variant: str | None, rows: int = 1) -> SpanContext | None:
    """Model version and variant on the current (server) span; returns its context for links (shadow)."""
    if _unsampled.get():
        return None
    s = trace.get_current_span()
    if variant is None:
        s.set_attribute("modelserve.model_version", model_version)
    else:
        s.set_attributes({"modelserve.model_version": model_version, "modelserve.variant": variant})
    ctx = s.get_span_context()
    return ctx if ctx.trace_flags.sampled else None
