"""The gRPC server's connection limits (apart from ``app.rpc.server``, which imports the generated messages)."""

from __future__ import annotations

import resource
from typing import TYPE_CHECKING

from app.server.descriptors import connection_cap

if TYPE_CHECKING:
    from app.settings import Settings

IDLE_SECONDS = 300.0
"""A connection with no call for this long is sent GOAWAY and closed (a client reconnects on its next call)."""


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC core's connection limits, which are off by default, from the HTTP server's settings.

    Without them a connection that never sent the HTTP/2 preface held its
    descriptor for gRPC's default 2 minutes, one that sent it and then nothing
    (or stayed idle after its calls) for ever, and their number had no cap: a
    flood of them used every descriptor, HTTP probes included. Now a
    connection must finish its HTTP/2 start within ``header_read_timeout_seconds``,
    is closed after ``IDLE_SECONDS`` without a call, and at most
    ``max_connections`` are open, fewer when half of what the descriptor
    limit leaves is less (the HTTP port has the other half; new connections
    past the cap are closed at once).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return [
        ("grpc.server_handshake_timeout_ms", max(1, round(settings.header_read_timeout_seconds * 1000))),
        ("grpc.max_connection_idle_ms", round(IDLE_SECONDS * 1000)),
        ("grpc.max_allowed_incoming_connections", connection_cap(settings.max_connections, soft, listeners=2)),
    ]
