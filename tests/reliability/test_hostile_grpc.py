"""Connections to the gRPC port that never start HTTP/2: capped, and closed after the header timeout.

gRPC core has no connection cap and waits 2 minutes for a connection's
HTTP/2 start by default, so idle sockets on the gRPC port held descriptors
(and, past the limit, starved the HTTP port and its probes) while the HTTP
port refused or timed out the same clients. The gRPC port now takes the HTTP
server's settings: ``MODELSERVE_MAX_CONNECTIONS`` and
``MODELSERVE_HEADER_READ_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness import ServerProcess, free_port
from tests.support.workspace import Workspace

pytestmark = pytest.mark.e2e

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CAP = 20


def closed_by_server(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass  # reset: closed too
    return True


def test_idle_grpc_connections_are_capped_and_timed_out(trained: Workspace, tmp_path: Path) -> None:
    """60 sockets that send nothing or only the preface: at most the cap are held, all closed after the timeout."""
    port = free_port()
    env = trained.env(
        MODELSERVE_GRPC_PORT=str(port),
        MODELSERVE_MAX_CONNECTIONS=str(CAP),
        MODELSERVE_HEADER_READ_TIMEOUT_SECONDS="1",
    )
    with ServerProcess(env, tmp_path / "server.log") as srv:
        srv.wait_ready()
        proc = psutil.Process(srv.pid)
        before = proc.num_fds()
        socks = []
        try:
            for i in range(3 * CAP):
                s = socket.create_connection(("127.0.0.1", port))
                if i % 2:
                    s.sendall(PREFACE)
                socks.append(s)
            time.sleep(0.5)
            held = proc.num_fds() - before
            assert held <= CAP + 2, held  # + the probe's own connection, if any
            assert httpx.get(srv.url + "/health/live", timeout=10).status_code == 200
            assert all(closed_by_server(s, 30) for s in socks)
        finally:
            for s in socks:
                s.close()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
