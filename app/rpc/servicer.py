"""The RPCs: ``inference.GRPCInferenceService`` (Open Inference Protocol) and ``grpc.health.v1.Health``.

Both answer from the container's parts, as the REST routes do: the V2 data
plane resolves names and infers, ``Health`` says ready. Every call is
counted (``modelserve_grpc_requests_total{method,code}``) and timed; a
``ModelServeError`` becomes its status (``app.rpc.status``), anything else
``INTERNAL`` with the traceback in the log.

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
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.errors import DeadlineExceeded, ModelServeError, NotFound, NotReady, Unavailable
from app.health import Health
from app.predictor import Predictor
from app.rpc import grpc_predict_v2_pb2 as pb
from app.rpc import grpc_predict_v2_pb2_grpc as pb_grpc
from app.rpc.status import code_of, message_of, trailing_metadata
from app.rpc.tensors import metadata_response, to_request, to_response
from app.telemetry.metrics import Metrics
from app.v2 import MODEL_NAME, V2Service

log = logging.getLogger("modelserve.grpc")

SERVICE = "inference.GRPCInferenceService"
WATCH_POLL_SECONDS = 0.5
"""How often a health ``Watch`` looks at readiness (it answers only on changes)."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Calls:
    """What both services share: the parts they answer from, and one way to count and fail a call."""

    def __init__(
        self,
        v2: V2Service,
        health: Health,
        metrics: Metrics,
        predictor: Callable[[], Predictor | None],
        version: str,
        max_details: int,
    ) -> None:
        self.v2 = v2
        self.health = health
        self.metrics = metrics
        self.predictor = predictor
        """The container's predictor, once built."""
        self.version = version
        self.max_details = max_details

    async def answer(
        self,
        method: str,
        handler: Callable[[Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]],
        request: Req,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Resp:
        """``handler``'s response, or the call aborted with the status of what it raised; counted either way."""
        t0 = time.perf_counter()
        try:
            response = await handler(request, context)
        except ModelServeError as exc:
            code = code_of(exc)
            message = message_of(exc, self.max_details)
            metadata = trailing_metadata(exc, code, message)
        except asyncio.CancelledError:
            self._count(method, grpc.StatusCode.CANCELLED, t0)
            raise
        except Exception:
            log.exception("gRPC %s failed", method)
            code, message, metadata = grpc.StatusCode.INTERNAL, "internal error", ()
        else:
            self._count(method, grpc.StatusCode.OK, t0)
            return response
        self._count(method, code, t0)
        await context.abort(code, message, metadata)
        raise AssertionError("abort returns by raising")  # pragma: no cover

    def _count(self, method: str, code: grpc.StatusCode, t0: float) -> None:
        self.metrics.grpc_requests.labels(method, code.name).inc()
        self.metrics.grpc_duration.labels(method).observe(time.perf_counter() - t0)

    def ready_predictor(self) -> Predictor:
        predictor = self.predictor()
        if predictor is None or not self.health.ready:
            raise NotReady("model not ready", retry_after=self.health.retry_after)
        return predictor


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
        return await self.calls.answer("ModelInfer", self._infer, request, context)

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
        # Admission control (load shedding) belongs here, first, before any decoding work.
        _check_deadline(context)
        predictor = self.calls.ready_predictor()
        v2 = self.calls.v2
        target = v2.resolve(request.model_name, request.model_version or None)
        v2_request, tensors, offset = to_request(request)
        answer = await v2.infer_request(
            predictor, target, v2_request, tensors, offset, before_inference=lambda: _check_deadline(context)
        )
        return to_response(answer, raw=offset is not None)


def _check_deadline(context: Any) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceeded("deadline exceeded before inference")


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
        return await self.calls.answer("Check", self._check, request, context)

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
