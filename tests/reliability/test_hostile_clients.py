"""Clients that go away mid-request, and requests that try to grow the metrics without bound.

A client that disconnects while sending its body is its own outcome
(``status="disconnected"``): never a 5xx (which pages), never a traceback.
The ``method`` label of the HTTP metrics takes a known set of methods and
``other``, so random methods, paths and model names cannot add series.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from harness import ServerProcess
from tests.support.metrics import metric_value
from tests.support.workspace import Workspace

pytestmark = pytest.mark.e2e

# Every method llhttp (the parser behind uvicorn's httptools protocol) accepts, and so every one the app can see.
PARSER_METHODS = [
    "DELETE",
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PATCH",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
    "QUERY",
]


@pytest.fixture(scope="module")
def server(trained: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("clients") / "server.log"
    with ServerProcess(trained.env(), log) as srv:
        srv.wait_ready()
        yield srv


def sample_body(ws: Workspace) -> bytes:
    return json.dumps(json.loads((ws.models_dir / "v2" / "manifest.json").read_text())["sample"]["request"]).encode()


def abandon(port: int, path: str, body: bytes) -> None:
    """Send the headers and half the body, then close the connection."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        s.sendall(head + body[: len(body) // 2])
        time.sleep(0.01)


def test_mid_body_disconnects_are_their_own_outcome(server, trained):
    """200 clients that leave mid-body: counted as disconnected, no 5xx, no traceback, at most a line each."""
    body = sample_body(trained)
    before = server.log_path.stat().st_size
    for i in range(200):
        abandon(server.port, "/predict" if i % 2 else "/v2/models/production/infer", body)
    time.sleep(0.5)
    text = httpx.get(server.url + "/metrics").text
    output = server.output()
    grown = server.log_path.stat().st_size - before
    routes = ("/predict", "/v2/models/{name}/infer")  # /health/ready was 503 (5xx) while the server warmed up
    fives = sum(metric_value(text, "modelserve_http_requests_total", {"status": "5xx", "route": r}) for r in routes)
    gone = metric_value(text, "modelserve_http_requests_total", {"status": "disconnected"})
    print(f"\n200 mid-body disconnects: {gone:.0f} disconnected, {fives:.0f} 5xx, log grew {grown} bytes")
    assert fives == 0
    assert gone == 200
    assert "Traceback" not in output
    assert grown <= 200 * 200, grown  # at info level nothing at all; a debug line each at most
    assert (
        httpx.post(server.url + "/predict", content=body, headers={"content-type": "application/json"}).status_code
        == 200
    )


def http_series(text: str) -> set[tuple[tuple[str, str], ...]]:
    out = set()
    for line in text.splitlines():
        if line.startswith(("modelserve_http_requests_total{", "modelserve_http_request_duration_seconds_count{")):
            labels = line[line.index("{") + 1 : line.index("}")]
            out.add((line.split("{", 1)[0], *sorted(tuple(kv.split("=", 1)) for kv in labels.split(","))))  # type: ignore[arg-type]
    return out


def test_random_methods_paths_and_names_do_not_grow_the_metrics(server):
    """860 requests with random methods, paths and model names leave the HTTP series within a fixed bound."""
    rng = random.Random(5)
    paths = ["/predict", "/health/live", "/metrics", "/nope", "/v2/models/{}/infer", "/v2/models/{}", "/admin/models"]
    with httpx.Client(base_url=server.url, timeout=5) as c:
        for i in range(860):
            method = PARSER_METHODS[i % len(PARSER_METHODS)] if i % 3 else rng.choice(["FOO", "get", "X-Y"])
            path = rng.choice(paths).format(f"m{rng.randrange(10**6)}") + ("/x" * rng.randrange(3))
            # A parser-rejected method or CONNECT closes the connection; the series count is what matters.
            with contextlib.suppress(httpx.HTTPError):
                c.request(method, path, content=b"{}" if method not in ("GET", "HEAD") else None)
    text = httpx.get(server.url + "/metrics").text
    series = http_series(text)
    methods = {dict(s[1:]).get("method") for s in series}
    print(f"\n860 random requests: {len(series)} HTTP series, methods {sorted(m for m in methods if m)}")
    known = {'"GET"', '"HEAD"', '"POST"', '"PUT"', '"DELETE"', '"PATCH"', '"OPTIONS"', '"other"'}
    assert methods <= known, methods
    # route templates (about 15) x 8 methods x 6 outcomes, for both families: far below what the traffic could make.
    assert len(series) <= 400, len(series)


@pytest.mark.parametrize("path", ["/predict/", "/predict/batch/", "/health/live/", "/v2/models/production/"])
def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(server, trained, path):
    """No route answers a redirect: its Location would name whatever host the client put in its Host header."""
    r = httpx.request(
        "GET" if path.startswith(("/health", "/v2")) else "POST",
        server.url + path,
        content=sample_body(trained),
        headers={"Host": "evil.example", "Content-Type": "application/json"},
    )
    assert r.status_code == 404, (r.status_code, r.headers)
    assert "location" not in r.headers
    assert set(r.json()) == {"error", "detail"}
