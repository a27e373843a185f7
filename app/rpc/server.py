"""The ``grpc.aio`` server: both services on ``MODELSERVE_HOST:MODELSERVE_GRPC_PORT``, on the running loop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2_grpc

from app.errors import NotReady
from app.rpc import grpc_predict_v2_pb2_grpc as pb_grpc
from app.rpc.limits import connection_options
from app.rpc.servicer import Calls, HealthServicer, InferenceServicer

if TYPE_CHECKING:
    from app.container import Container

log = logging.getLogger("modelserve.grpc")

VERSION = "0.1.0"
"""What ``ServerMetadata`` answers (the REST app's version)."""
STOP_GRACE_SECONDS = 10.0
"""How long calls in flight may finish once the server stops."""


class GrpcServer:
    """Started by ``Container.start()`` before the model loads (health NOT_SERVING meanwhile), stopped by
    ``stop()`` once readiness is off, letting calls in flight finish."""

    def __init__(self, container: Container) -> None:
        s = container.settings
        assert s.grpc_port is not None
        self.address = f"{s.host}:{s.grpc_port}"
        self.max_message_bytes = s.batch_max_body_bytes
        self.connection_options = connection_options(s)
        self.calls = Calls(
            container.v2,
            container.health,
            container.metrics,
            lambda: container.predictor,
            VERSION,
            s.max_error_details,
            container.admission,
        )
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        """The bound port (the configured one, or the one picked for 0)."""

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                # gRPC sets SO_REUSEPORT by default: a second server on the same port would bind without error.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", self.max_message_bytes),
                *self.connection_options,
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.calls), server)
        health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(self.calls), server)
        try:
            self.port = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise NotReady(f"gRPC cannot listen on {self.address}: {exc}") from None
        await server.start()
        self.server = server
        log.info("gRPC listening on %s", self.address)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(STOP_GRACE_SECONDS)
            self.server = None
