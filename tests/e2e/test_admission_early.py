"""Prediction requests refused by the HTTP protocol before they become requests, on a real ``modelserve serve``.

A flood is made of rounds: every one of many keep-alive connections writes a
``/predict/batch`` at once, so the worker reads them in one go, far more work
than a small queue-time limit allows; then each reads its answer. The first
rounds are refused by admission control as requests queue too long, which
measures what each request handed over costs; after that the protocol
hands the app only what fits and refuses the rest without building it. Those refusals are told apart by the server's own
counters: admission control's are timed in
``modelserve_http_request_duration_seconds``, the protocol's are not.
Nothing here depends on how fast either side runs: how many requests are
refused varies, what every answer looks like and what is counted does not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.api.admission import CONGESTED_HOLD
from harness import ServerProcess
from tests.support.metrics import metric_value
from tests.support.workspace import manifest

pytestmark = pytest.mark.e2e

CONNECTIONS = 128
ROUNDS = 30
ROWS = 200
"""Rows per request: enough work per request that the worker, not this client, is the bottleneck."""
ROUTE = {"route": "/predict/batch", "method": "POST"}


@pytest.fixture(scope="module")
def flooded(trained, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server whose queue-time limit one queued batch request exceeds (2 ms)."""
    env = trained.env(MODELSERVE_MAX_QUEUE_MS="2")
    with ServerProcess(env, tmp_path_factory.mktemp("early") / "server.log") as srv:
        srv.wait_ready()
        yield srv


def body(trained) -> bytes:
    return json.dumps({"instances": [manifest(trained, "production")["sample"]["request"]] * ROWS}).encode()


def post(port: int, payload: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /predict/batch HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n%s\r\n%s" % (port, len(payload), extra, payload)
    )


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer: status, headers (lower-case names), body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers, await reader.readexactly(int(headers["content-length"]))


Answer = tuple[int, dict[str, str], bytes]


async def flood(port: int, payload: bytes, rounds: int) -> tuple[list[Answer], list[int], list[Answer]]:
    """``rounds`` rounds on ``CONNECTIONS`` keep-alive connections: the answers, /health/live's statuses, and the
    answers to one more request each round whose deadline (``x-envoy-expected-rq-timeout-ms: 0``) is already past."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CONNECTIONS)]
    probe_reader, probe_writer = await asyncio.open_connection("127.0.0.1", port)
    late_reader, late_writer = await asyncio.open_connection("127.0.0.1", port)
    answers: list[Answer] = []
    probes: list[int] = []
    late: list[Answer] = []
    request = post(port, payload)
    try:
        for _ in range(rounds):
            for _, writer in conns:
                writer.write(request)
            probe_writer.write(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            late_writer.write(post(port, payload, b"x-envoy-expected-rq-timeout-ms: 0\r\n"))
            answers += await asyncio.gather(*(answer(reader) for reader, _ in conns))
            probes.append((await answer(probe_reader))[0])
            late.append(await answer(late_reader))
    finally:
        for _, writer in [*conns, (probe_reader, probe_writer), (late_reader, late_writer)]:
            writer.close()
    return answers, probes, late


def counters(server: ServerProcess) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return {
        "predictions": metric_value(text, "modelserve_predictions_total"),
        "shed": sum(
            metric_value(text, "modelserve_requests_shed_total", {"reason": r}) for r in ("queue_time", "overloaded")
        ),
        "deadline": metric_value(text, "modelserve_requests_shed_total", {"reason": "deadline"}),
        "shed_timed": metric_value(text, "modelserve_requests_shed_seconds_count"),
        "ok": metric_value(text, "modelserve_http_requests_total", {**ROUTE, "status": "2xx"}),
        "refused": metric_value(text, "modelserve_http_requests_total", {**ROUTE, "status": "5xx"}),
        "timed": metric_value(text, "modelserve_http_request_duration_seconds_count", ROUTE),
    }


def test_flood_is_refused_in_the_protocol_and_never_reaches_inference(flooded, trained):
    """Under a flood of batch requests: every answer is 200 or admission's 503 (error shape, Retry-After), byte
    for byte the same whichever part refused it; refusals are counted as shed and as 5xx on the route; some were
    refused by the protocol (never timed by the app); only the answered ones ran a prediction; kept-alive
    connections stay usable (every round reuses them, so a refused request's body was read and dropped);
    /health/live answers throughout; a request whose deadline has passed is still refused for its deadline."""
    before = counters(flooded)
    answers, probes, late = asyncio.run(flood(flooded.port, body(trained), ROUNDS))
    after = counters(flooded)
    delta = {k: after[k] - before[k] for k in after}

    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503}
    refusals = [(headers, payload) for status, headers, payload in answers if status == 503]
    assert refusals, "the flood was never refused"
    shapes = {(h["retry-after"], h["content-type"], h.get("connection"), payload) for h, payload in refusals}
    assert len(shapes) == 1  # one refusal, whoever sent it
    retry_after, content_type, connection, payload = shapes.pop()
    assert (retry_after, content_type, connection) == ("1", "application/json", None)
    refused = json.loads(payload)
    assert set(refused) == {"error", "detail"} and "overloaded" in refused["error"]

    assert delta["shed"] == len(refusals) == delta["refused"] - ROUNDS  # the late ones are 5xx on the route too
    assert delta["shed_timed"] == delta["shed"] + delta["deadline"]  # every refusal's server time is observed
    assert delta["ok"] == statuses.count(200) == delta["predictions"] / ROWS
    assert 200 in statuses, "the flood was refused whole"
    early = len(answers) + ROUNDS - delta["timed"]
    assert early > 0, "no request was refused by the protocol"
    assert probes == [200] * ROUNDS
    assert [status for status, _, _ in late] == [503] * ROUNDS and delta["deadline"] == ROUNDS
    assert {json.loads(payload)["error"] for _, _, payload in late} == {
        "deadline cannot be met; retry with a later deadline"
    }


def test_light_load_after_a_flood_is_never_refused(flooded, trained):
    """Right after a flood (the congestion it marked still held) and once that has expired, requests sent one
    at a time are all served: the protocol refuses only past the cut, never a request alone in its round."""
    asyncio.run(flood(flooded.port, body(trained), 3))
    before = counters(flooded)

    async def light() -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", flooded.port)
        statuses = []
        try:
            for i in range(30):
                if i == 15:
                    await asyncio.sleep(CONGESTED_HOLD + 0.1)
                writer.write(post(flooded.port, body(trained)))
                statuses.append((await answer(reader))[0])
        finally:
            writer.close()
        return statuses

    statuses = asyncio.run(light())
    delta = {k: v - before[k] for k, v in counters(flooded).items()}
    assert statuses == [200] * 30
    assert delta["shed"] == 0 and delta["ok"] == 30


def test_refused_request_with_connection_close_is_answered_then_closed(flooded, trained):
    """A request refused by the protocol that asked to close gets the 503 with ``connection: close``, then EOF."""

    async def run() -> list[tuple[int, dict[str, str], bytes, bytes]]:
        seen = []
        for _ in range(ROUNDS):  # until the protocol is refusing: a round of flood first, then the closing request
            await flood(flooded.port, body(trained), 2)
            reader, writer = await asyncio.open_connection("127.0.0.1", flooded.port)
            others = [await asyncio.open_connection("127.0.0.1", flooded.port) for _ in range(CONNECTIONS)]
            for _, w in others:
                w.write(post(flooded.port, body(trained)))
            writer.write(post(flooded.port, body(trained), b"connection: close\r\n"))
            status, headers, payload = await answer(reader)
            rest = await reader.read()
            await asyncio.gather(*(answer(r) for r, _ in others))
            for _, w in [*others, (reader, writer)]:
                w.close()
            seen.append((status, headers, payload, rest))
            if status == 503:
                break
        return seen

    seen = asyncio.run(run())
    status, headers, payload, rest = seen[-1]
    assert status == 503, "the closing request was never refused"
    assert headers["connection"] == "close" and headers["retry-after"] == "1"
    assert set(json.loads(payload)) == {"error", "detail"}
    assert rest == b""  # closed after the answer


@pytest.fixture(scope="module")
def normal(trained, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server with the shipped settings but a queue-time limit of 250 ms.

    The limit is raised so that a stall of the shared test machine (tens of ms) is not what gets refused; every
    threshold of the protocol's refusal scales with it, so it can still refuse here if it misjudges load.
    """
    env = {**trained.env(), "MODELSERVE_MAX_QUEUE_MS": "250"}
    with ServerProcess(env, tmp_path_factory.mktemp("normal") / "server.log") as srv:
        srv.wait_ready()
        yield srv


def test_normal_load_is_never_refused(normal, trained):
    """Sixteen clients, one request at a time each, on every prediction route: nothing is refused or shed.

    Sixteen requests can arrive in one loop round, more than the protocol always lets through (``MIN_CUT``),
    so a protocol that refused at this load would show here."""
    m = manifest(trained, "production")
    request: dict[str, Any] = m["sample"]["request"]
    paths = [("/predict", request), ("/predict/batch", {"instances": [request] * 4})]

    async def client(c: httpx.AsyncClient) -> list[int]:
        return [(await c.post(path, json=payload)).status_code for _ in range(40) for path, payload in paths]

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=normal.url, timeout=30) as c:
            results = await asyncio.gather(*(client(c) for _ in range(16)))
        return [s for statuses in results for s in statuses]

    statuses = asyncio.run(run())
    assert statuses == [200] * len(statuses)
    assert counters(normal)["shed"] == 0


def test_refused_request_whose_body_comes_later_keeps_its_connection(flooded, trained):
    """A request refused before all its body has arrived: the 503 comes at once, the rest of the body is read
    and dropped when it comes, and the next request on the same connection is answered."""
    payload = body(trained)
    request = post(flooded.port, payload)
    head = len(request) - len(payload) + 10  # the headers and the body's first bytes

    async def run() -> tuple[int, int]:
        for _ in range(ROUNDS):  # until a round refuses it: a round of flood first, then the unfinished request
            await flood(flooded.port, payload, 2)
            reader, writer = await asyncio.open_connection("127.0.0.1", flooded.port)
            others = [await asyncio.open_connection("127.0.0.1", flooded.port) for _ in range(CONNECTIONS)]
            try:
                for _, w in others:
                    w.write(request)
                writer.write(request[:head])
                try:
                    first = (await asyncio.wait_for(answer(reader), 2.0))[0]
                except TimeoutError:
                    first = 0  # admitted: it waits for its body
                writer.write(request[head:] + request)  # the rest of the body, then another request
                if first == 0:
                    first = (await answer(reader))[0]
                second = (await answer(reader))[0]
                await asyncio.gather(*(answer(r) for r, _ in others))
            finally:
                for _, w in [*others, (reader, writer)]:
                    w.close()
            if first == 503:
                return first, second
        raise AssertionError("the unfinished request was never refused")

    first, second = asyncio.run(run())
    assert first == 503 and second in (200, 503)
