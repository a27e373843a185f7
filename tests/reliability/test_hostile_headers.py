"""Huge request headers: refused with 431 before the parser does work that grows with their size.

A header of many megabytes, sent in the chunks a socket delivers, made the
parser's work grow quadratically and froze the event loop for seconds. The
total header bytes are capped (``MODELSERVE_MAX_HEADER_BYTES``); past it the
answer is 431 and probes on other connections are never held up.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import ServerProcess
from harness.hostile import send_huge_header
from tests.support.workspace import Workspace

pytestmark = pytest.mark.e2e

HUGE = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def server(trained: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("headers") / "server.log"
    with ServerProcess(trained.env(), log) as srv:
        srv.wait_ready()
        yield srv


def test_huge_header_is_431_and_probes_keep_answering(server):
    """A 16 MiB header is answered 431 quickly; /health/live on other connections stays under 1 s meanwhile."""
    result: list[tuple[bytes, float]] = []
    sender = threading.Thread(target=lambda: result.append(send_huge_header(server.port, HUGE)))
    worst = 0.0
    sender.start()
    while sender.is_alive():
        t0 = time.monotonic()
        assert httpx.get(server.url + "/health/live", timeout=10).status_code == 200
        worst = max(worst, time.monotonic() - t0)
        time.sleep(0.01)
    sender.join()
    answer, took = result[0]
    print(f"\n16 MiB header: answered {answer[:12]!r} after {took:.2f} s; slowest probe meanwhile {worst * 1e3:.0f} ms")
    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert worst < 1.0, worst
    assert httpx.get(server.url + "/health/live").status_code == 200


@pytest.mark.parametrize("size,status", [(60 * 1024, 200), (70 * 1024, 431)])
def test_header_bytes_at_the_default_cap(server, size, status):
    """Headers just under 64 KiB in total are served; just over are 431 in the service's error shape."""
    r = httpx.get(server.url + "/health/live", headers={"X-Pad": "a" * size}, timeout=10)
    assert r.status_code == status, r.text[:200]
    if status == 431:
        assert "header" in r.json()["error"]


def test_the_cap_is_per_request_not_per_read(server):
    """Two pipelined requests with 40 KiB of headers each, sent in one write: both served, neither is 431."""
    one = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40 * 1024 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(one * 2)
        s.settimeout(10)
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 and (chunk := s.recv(65536)):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 2, data[:300]


def test_cap_is_a_setting(trained: Workspace, tmp_path: Path):
    """MODELSERVE_MAX_HEADER_BYTES lowers the cap: a 9 KiB header is 431 under an 8 KiB cap."""
    with ServerProcess(trained.env(MODELSERVE_MAX_HEADER_BYTES="8192"), tmp_path / "server.log") as srv:
        srv.wait_live()
        assert httpx.get(srv.url + "/health/live", headers={"X-Pad": "a" * 7000}).status_code == 200
        assert httpx.get(srv.url + "/health/live", headers={"X-Pad": "a" * 9 * 1024}).status_code == 431


def read_until_closed(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)
        s.settimeout(10)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "request_bytes,reason",
    [
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", "chunk size"),
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            "Content-Length",
        ),
        (b"GET /health/live HTTP/1.1\nHost: x\n\n", "CRLF"),
    ],
)
def test_unparseable_request_is_400_in_the_error_shape(server, request_bytes, reason):
    """A request the HTTP parser refuses is a JSON 400 saying what the parser found, counted as malformed."""
    answer = read_until_closed(server.port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error.startswith("malformed HTTP request") and reason in error, error
    metrics = httpx.get(server.url + "/metrics").text
    assert 'modelserve_http_connections_refused_total{reason="malformed"}' in metrics


def test_garbage_after_pipelined_requests_does_not_lose_their_answers(server):
    """Two pipelined requests then bytes the parser refuses: both are answered, then the connection closes."""
    one = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = read_until_closed(server.port, one * 2 + b"GARBAGE\x00 / HTTP/1.1\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200") == 2, answer[:600]
    assert b"connection: close" in answer.lower()
