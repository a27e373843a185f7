"""The RPCs: ``inference.GRPCInferenceService`` (Open Inference Protocol) and ``grpc.health.v1.Health``.

Both answer from the container's parts, as the REST routes do: the V2 data
plane resolves names and infers, ``Health`` says ready. Every call is
counted (``modelserve_grpc_requests_total{method,code}``) and timed; a
``ModelServeError`` becomes its status (``app.rpc.status``), anything else
``INTERNAL`` with the traceback in the log.

Admission: ``ModelInfer`` goes through the worker's ``Admission`` (the one
REST's prediction routes use: the same slots, queue time and counters)
before anything of its message is read. The client's deadline is gRPC's own
(``grpc-timeout``, ``context.time_remaining()``). Refused for queue time or
no free slot: ``UNAVAILABLE`` with retry info, like every ``Unavailable``
(the client did nothing wrong and a retry may succeed; ``RESOURCE_EXHAUSTED``
is for quotas and is not retried by default retry policies). Refused because
the deadline is past or cannot be met: ``DEADLINE_EXCEEDED`` (a retry with
the same deadline would fail again). A call whose deadline passes after
admission, while its features are fetched, is dropped before inference the
same way. Every refusal counts in ``modelserve_requests_shed_total{reason}``.
Health, readiness and metadata calls are never refused.

Tracing: one server span per unary call, named ``service/method``
(``inference.GRPCInferenceService/ModelInfer``) with the OpenTelemetry RPC
attributes, the status code and, for ``ModelInfer``, the model version;
an incoming W3C ``traceparent``/``tracestate`` (gRPC metadata) is its
parent. The children (decode, features, inference) come from the V2 data
plane and the predictor, as for REST.

Readiness: ``ServerReady`` and ``ModelReady`` answer ``ready`` as
``/v2/health/ready`` would be 200; ``ModelReady`` of an unknown model or
version is ``NOT_FOUND``. The health service answers SERVING for the
server (``""``) and for ``inference.GRPCInferenceService`` exactly when
``/health/ready`` is 200, NOT_SERVING otherwise (starting, failed
start-up, draining, a failing readiness check); other services are
``NOT_FOUND``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.api.admission import REFUSALS, RETRY_AFTER_SECONDS, Admission, arrival_time
from app.errors import DeadlineExceeded, ModelServeError, NotFound, NotReady, Unavailable
from app.health import Health
from app.predictor import Predictor, new_request_id
from app.rpc import grpc_predict_v2_pb2 as pb
from app.rpc import grpc_predict_v2_pb2_grpc as pb_grpc
from app.rpc.status import code_of, message_of, trailing_metadata
from app.rpc.tensors import columns_of, metadata_response, to_request, to_response
from app.telemetry import tracing
from app.telemetry.metrics import Metrics
from app.v2 import MODEL_NAME, V2Service
from app.v2.codec import decode_rows, read_columns
from app.v2.types import InferRequest, requested_outputs

log = logging.getLogger("modelserve.grpc")

SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"
ADMISSION_KIND = "grpc"
"""``ModelInfer``'s kind for ``Admission`` (its own recent service time)."""
ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Codes that mark a server span as an error (OpenTelemetry's RPC conventions); the others are the client's."""
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_KEYS = frozenset(_PROPAGATOR.fields)
WATCH_POLL_SECONDS = 0.5
"""How often a health ``Watch`` looks at readiness (it answers only on changes)."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
Handler: TypeAlias = Callable[[Req, Context], Awaitable[Resp]]


class Calls:
    """What both services share: the parts they answer from, and one way to admit, trace, count and fail a call."""

    def __init__(
        self,
        v2: V2Service,
        health: Health,
        metrics: Metrics,
        predictor: Callable[[], Predictor | None],
        version: str,
        max_details: int,
        admission: Admission,
    ) -> None:
        self.v2 = v2
        self.health = health
        self.metrics = metrics
        self.predictor = predictor
        """The container's predictor, once built."""
        self.version = version
        self.max_details = max_details
        self.admission = admission
        self._metrics: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}
        """(calls counter, duration histogram) per method and code: ``labels()`` costs a lock and a dict per call."""

    async def answer(
        self,
        method: str,
        handler: Handler[Req, Resp],
        request: Req,
        context: Context,
        admit: bool = False,
        service: str = SERVICE,
    ) -> Resp:
        """``handler``'s response, or the call aborted with the status of what it raised; counted either way.

        ``admit``: the call takes a slot from ``Admission`` first (or is refused without running ``handler``).
        """
        if not tracing.enabled:
            return await self._answer(method, handler, request, context, admit, tracing.NOOP)
        token = otel_context.attach(_PROPAGATOR.extract(_trace_headers(context)))
        try:
            attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
            with tracing.span(f"{service}/{method}", tracing.SERVER, attributes) as span:
                return await self._answer(method, handler, request, context, admit, span)
        finally:
            otel_context.detach(token)

    async def _answer(
        self, method: str, handler: Handler[Req, Resp], request: Req, context: Context, admit: bool, span: Any
    ) -> Resp:
        t0 = time.perf_counter()
        try:
            if admit:
                response = await self._admitted(handler, request, context, t0)
            else:
                response = await handler(request, context)
        except ModelServeError as exc:
            code = code_of(exc)
            message = message_of(exc, self.max_details)
            metadata = trailing_metadata(exc, code, message)
        except asyncio.CancelledError:
            self._count(method, grpc.StatusCode.CANCELLED, t0, span)
            raise
        except Exception:
            log.exception("gRPC %s failed", method)
            code, message, metadata = grpc.StatusCode.INTERNAL, "internal error", ()
        else:
            self._count(method, grpc.StatusCode.OK, t0, span)
            return response
        self._count(method, code, t0, span)
        await context.abort(code, message, metadata)
        raise AssertionError("abort returns by raising")  # pragma: no cover

    async def _admitted(self, handler: Handler[Req, Resp], request: Req, context: Context, now: float) -> Resp:
        """``handler`` run holding one of the worker's slots, or the refusal raised (counted, nothing run)."""
        arrival = arrival_time(now)
        remaining = context.time_remaining()
        deadline = None if remaining is None else now + remaining
        reason = await self.admission.enter(ADMISSION_KIND, arrival, now, deadline)
        if reason is not None:
            self.admission.shed(reason, arrival, time.perf_counter())
            if reason == "deadline":
                raise DeadlineExceeded(REFUSALS[reason])
            raise Unavailable(REFUSALS[reason], retry_after=RETRY_AFTER_SECONDS)
        started = time.perf_counter()
        try:
            return await handler(request, context)
        finally:
            self.admission.leave(ADMISSION_KIND, started)

    def _count(self, method: str, code: grpc.StatusCode, t0: float, span: Any) -> None:
        children = self._metrics.get((method, code))
        if children is None:
            children = (self.metrics.grpc_requests.labels(method, code.name), self.metrics.grpc_duration.labels(method))
            self._metrics[(method, code)] = children
        children[0].inc()
        if not tracing.enabled:
            children[1].observe(time.perf_counter() - t0)
            return
        children[1].observe(time.perf_counter() - t0, tracing.exemplar())
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in ERROR_CODES:
            span.set_status(Status(StatusCode.ERROR, code.name))

    def ready_predictor(self) -> Predictor:
        predictor = self.predictor()
        if predictor is None or not self.health.ready:
            raise NotReady("model not ready", retry_after=self.health.retry_after)
        return predictor

    def expired(self, context: Context) -> None:
        """Raise (and count) ``DeadlineExceeded`` once the call's deadline has passed: run just before inference."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            now = time.perf_counter()
            self.admission.shed("deadline", arrival_time(now), now)
            raise DeadlineExceeded("deadline exceeded before inference")


def _trace_headers(context: Context) -> dict[str, str]:
    """The call's W3C trace context headers (gRPC metadata keys are lower case)."""
    return {k: v for k, v in context.invocation_metadata() or () if k in _TRACE_KEYS and isinstance(v, str)}


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return await self.calls.answer("ServerLive", self._live, request, context)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return await self.calls.answer("ServerReady", self._ready, request, context)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return await self.calls.answer("ModelReady", self._model_ready, request, context)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return await self.calls.answer("ServerMetadata", self._server_metadata, request, context)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return await self.calls.answer("ModelMetadata", self._model_metadata, request, context)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return await self.calls.answer("ModelInfer", self._infer, request, context, admit=True)

    # --- handlers -------------------------------------------------------------------
    async def _live(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def _ready(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.calls.health.is_ready)

    async def _model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            self.calls.v2.resolve(request.name, request.version or None)
        except Unavailable:
            return pb.ModelReadyResponse(ready=False)  # known, not loaded yet
        return pb.ModelReadyResponse(ready=self.calls.health.is_ready)

    async def _server_metadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=MODEL_NAME, version=self.calls.version)

    async def _model_metadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        v2 = self.calls.v2
        return metadata_response(v2.metadata(v2.resolve(request.name, request.version or None)))

    async def _infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        calls = self.calls
        predictor = calls.ready_predictor()
        v2 = calls.v2
        target = v2.resolve(request.model_name, request.model_version or None)
        model = target.model
        available = v2.output_types(model)[1]
        features, expected, nullable = v2.inputs_of(model)
        with tracing.span("decode"):
            # A well-formed message goes straight to columns; any other takes the V2 envelope's
            # path (as a REST body would), which names every problem in the same words.
            found = columns_of(request, features, expected, v2.max_batch, nullable)
            if found is None:
                v2_request, tensors, offset = to_request(request)
                wanted = requested_outputs(v2_request, available) if "outputs" in v2_request else available
                columns, n = read_columns(v2_request, tensors, offset, features, expected, v2.max_batch, nullable)
            else:
                columns, n = found
                wanted = requested_outputs(_outputs(request), available) if request.outputs else available
            request_id = request.id or new_request_id()
            instances = decode_rows(model.decoder, columns, n, request_id, features)
        answer = await v2.answer(
            predictor, target, instances, request_id, wanted, before_inference=lambda: calls.expired(context)
        )
        if tracing.enabled:
            tracing.current().set_attribute("modelserve.model_version", answer["model_version"])
        return to_response(answer, raw=bool(request.raw_input_contents))


def _outputs(request: pb.ModelInferRequest) -> InferRequest:
    """The request's ``outputs`` as ``requested_outputs`` reads them."""
    return cast(InferRequest, {"inputs": [], "outputs": [{"name": o.name} for o in request.outputs]})


class HealthServicer(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health`` from the same ``Health`` as ``/health/ready`` (Kubernetes ``grpc`` probes)."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def _status(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
        if service not in ("", SERVICE):
            raise NotFound(f"unknown service {service[:64]!r}; health is reported for '' and {SERVICE}")
        if self.calls.health.is_ready:
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        return await self.calls.answer("Check", self._check, request, context, service=HEALTH_SERVICE)

    async def _check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=self._status(request.service))

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The status now, then each change (looked at every ``WATCH_POLL_SECONDS``) until the client leaves."""
        try:
            status = self._status(request.service)
        except ModelServeError:
            # The protocol's Watch answers SERVICE_UNKNOWN for a service it does not know, not an error.
            yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            return
        self.calls.metrics.grpc_requests.labels("Watch", "OK").inc()
        yield health_pb2.HealthCheckResponse(status=status)
        while True:
            await asyncio.sleep(WATCH_POLL_SECONDS)
            now = self._status(request.service)
            if now != status:
                status = now
                yield health_pb2.HealthCheckResponse(status=status)
