"""Admission control as pure ASGI: slots, queue time and deadlines, in front of an app that counts its calls."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from app.api.admission import (
    CONGESTED_HOLD,
    MIN_CUT,
    ROUND_KEY,
    Admission,
    AdmissionControl,
    StampedTask,
    install_arrival_stamps,
)
from app.telemetry.metrics import Metrics


class CountingApp:
    """Stands in for the routed app: counts the requests that reach it; ``hold`` keeps one running."""

    def __init__(self) -> None:
        self.calls = 0
        self.hold = asyncio.Event()
        self.hold.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        await self.hold.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def http(path: str, method: str = "POST", headers: dict[str, str] | None = None) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http", "method": method, "path": path, "headers": raw}


async def call(app: AdmissionControl, scope: dict[str, Any]) -> tuple[int, dict[bytes, bytes], Any]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    headers = dict(messages[0]["headers"])
    body = messages[1]["body"]
    return messages[0]["status"], headers, orjson.loads(body) if body else None


def shed(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("modelserve_requests_shed_total", {"reason": reason}) or 0.0


def make(max_in_flight: int = 1, max_queue_ms: float = 20.0) -> tuple[AdmissionControl, CountingApp, Metrics]:
    inner, metrics = CountingApp(), Metrics()
    return AdmissionControl(inner, metrics, max_in_flight, max_queue_ms), inner, metrics


def test_over_the_limit_is_refused_without_running():
    """With every slot taken for longer than the queue time, the next prediction is a 503 with Retry-After."""

    async def scenario() -> None:
        app, inner, metrics = make(max_in_flight=1, max_queue_ms=20)
        inner.hold.clear()
        first = asyncio.create_task(call(app, http("/predict")))
        await asyncio.sleep(0)
        status, headers, body = await asyncio.wait_for(call(app, http("/predict")), 10)
        assert status == 503
        assert headers[b"retry-after"] == b"1"
        assert set(body) == {"error", "detail"} and "overloaded" in body["error"]
        assert inner.calls == 1
        assert shed(metrics, "overloaded") == 1
        inner.hold.set()
        assert (await first)[0] == 200

    asyncio.run(scenario())


def test_waiting_request_takes_the_freed_slot():
    """A request waiting for a slot runs once the one before it finishes within its queue time."""

    async def scenario() -> None:
        app, inner, metrics = make(max_in_flight=1, max_queue_ms=10_000)
        inner.hold.clear()
        first = asyncio.create_task(call(app, http("/predict")))
        await asyncio.sleep(0)
        second = asyncio.create_task(call(app, http("/v2/models/m/infer")))
        await asyncio.sleep(0)
        assert inner.calls == 1 and app.in_flight == 1
        inner.hold.set()
        assert [(await first)[0], (await second)[0]] == [200, 200]
        assert inner.calls == 2 and app.in_flight == 0
        assert metrics.registry.get_sample_value("modelserve_requests_in_flight") == 0

    asyncio.run(scenario())


def test_request_older_than_the_queue_time_is_dropped():
    """A request whose task was created longer ago than the queue time is refused before the app sees it."""

    async def scenario() -> None:
        install_arrival_stamps(asyncio.get_running_loop())
        app, inner, metrics = make(max_in_flight=8, max_queue_ms=50)

        async def late() -> tuple[int, dict[bytes, bytes], Any]:
            task = asyncio.current_task()
            assert isinstance(task, StampedTask)
            task.arrival -= 1.0  # as if it had waited a second behind other work
            return await call(app, http("/predict/batch"))

        status, headers, _ = await asyncio.create_task(late())
        assert status == 503 and b"retry-after" in headers
        assert inner.calls == 0
        assert shed(metrics, "queue_time") == 1
        assert (await asyncio.create_task(call(app, http("/predict/batch"))))[0] == 200

    asyncio.run(scenario())


def test_health_metrics_and_admin_are_never_refused():
    """While every slot is taken, probes, metrics, admin and non-POST requests still reach the app."""

    async def scenario() -> None:
        app, inner, _ = make(max_in_flight=1, max_queue_ms=1)
        inner.hold.clear()
        held = asyncio.create_task(call(app, http("/predict")))
        await asyncio.sleep(0)
        inner.hold.set()  # later requests answer at once, the held one stays counted until it resumes
        for scope in (
            http("/health/ready", "GET"),
            http("/metrics", "GET"),
            http("/admin/reload"),
            http("/v2/health/ready", "GET"),
            http("/predict", "GET"),
        ):
            assert (await call(app, scope))[0] == 200
        assert inner.calls == 6
        await held

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Request-Deadline-Ms": str(int(time.time() * 1000) - 1000)},
        {"x-envoy-expected-rq-timeout-ms": "0"},
        {"x-envoy-expected-rq-timeout-ms": "60000", "X-Request-Deadline-Ms": "1"},
    ],
)
def test_past_deadline_is_refused(headers):
    """A deadline already past (either header; the earlier wins) is a 503 and never runs."""

    async def scenario() -> None:
        app, inner, metrics = make(max_in_flight=8, max_queue_ms=50)
        status, resp_headers, body = await call(app, http("/predict", headers=headers))
        assert status == 503 and b"retry-after" in resp_headers
        assert "deadline" in body["error"]
        assert inner.calls == 0
        assert shed(metrics, "deadline") == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Request-Deadline-Ms": str(int(time.time() * 1000) + 86_400_000)},  # collected minutes before it runs
        {"x-envoy-expected-rq-timeout-ms": "600000"},
    ],
)
def test_future_deadline_is_served(headers):
    """A deadline far in the future is served."""

    async def scenario() -> None:
        app, inner, _ = make(max_in_flight=8, max_queue_ms=50)
        assert (await call(app, http("/predict", headers=headers)))[0] == 200
        assert inner.calls == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(("path", "status"), [("/predict", 422), ("/v2/models/m/versions/v1/infer", 400)])
def test_malformed_deadline_is_named(path, status):
    """A deadline header that is not a whole number of milliseconds is a 4xx naming the header."""

    async def scenario() -> None:
        app, inner, _ = make()
        got, _, body = await call(app, http(path, headers={"X-Request-Deadline-Ms": "soon"}))
        assert got == status
        assert body["detail"][0]["loc"] == ["header", "x-request-deadline-ms"]
        assert inner.calls == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("header", ["X-Request-Deadline-Ms", "X-Envoy-Expected-Rq-Timeout-Ms"])
def test_deadline_header_digits_only_and_any_length(header):
    """A deadline of 400 digits is a deadline too far to matter, served: it was a 500 (OverflowError
    converting it to float). Only ASCII digits are a number: '1_000' and '+5' are int() literals, not HTTP's."""

    async def scenario() -> None:
        app, inner, _ = make()
        assert (await call(app, http("/predict", headers={header: "9" * 400})))[0] == 200
        assert inner.calls == 1
        for bad in ("1_000", "+5", "1e3", "-0"):
            got, _, body = await call(app, http("/predict", headers={header: bad}))
            assert got == 422, bad
            assert body["detail"][0]["loc"] == ["header", header.lower()]
        assert inner.calls == 1

    asyncio.run(scenario())


def test_progress_floor_serves_some_when_every_request_is_late():
    """When every request is already older than the queue time, refusing does not turn into serving none."""

    async def scenario() -> None:
        install_arrival_stamps(asyncio.get_running_loop())
        app, inner, metrics = make(max_in_flight=8, max_queue_ms=50)

        async def late() -> int:
            task = asyncio.current_task()
            assert isinstance(task, StampedTask)
            task.arrival -= 1.0
            return (await call(app, http("/predict")))[0]

        statuses = [await asyncio.create_task(late()) for _ in range(10)]
        assert statuses[0] == 503  # one late request alone is refused
        assert 200 in statuses
        assert inner.calls == statuses.count(200)
        assert shed(metrics, "queue_time") == statuses.count(503)

    asyncio.run(scenario())


def run_round(limits: Admission, waits: list[float], now: float) -> None:
    """One loop round as the server reports it: ``len(waits)`` requests handed over, then each starts."""
    limits.handed = len(waits)
    limits.next_round()
    for position, wait in enumerate(waits):
        limits.waited(position, wait, now)


def test_cut_follows_what_the_last_request_of_a_round_waited_beyond_the_first():
    """The cut is the requests whose cost fits in part of the limit: measured as (last wait - first wait) per
    request between them, so a round's reading time (which every request waits for) does not shrink it."""
    limits = Admission(Metrics(), max_in_flight=64, max_queue_ms=50)
    assert limits.cut > 10**6 and limits.congested_until < 0  # nothing measured: the protocol never refuses
    now = 100.0
    # 101 requests, each 0.3 ms of work, behind 20 ms of reading: the first waited 20 ms, the last 50 ms.
    run_round(limits, [0.020 + 0.0003 * i for i in range(101)], now)
    assert limits.cut == pytest.approx(0.050 * 0.3 / 0.0003, rel=0.02)  # 50
    assert limits.congested_until == pytest.approx(now + CONGESTED_HOLD)
    for _ in range(40):  # the work per request halves: the cut grows back
        run_round(limits, [0.020 + 0.00015 * i for i in range(101)], now)
    assert limits.cut == pytest.approx(100, rel=0.05)


def test_small_rounds_and_unmeasured_ones_leave_the_cut_alone():
    limits = Admission(Metrics(), max_in_flight=64, max_queue_ms=50)
    run_round(limits, [0.0, 0.030, 0.060], 100.0)  # three requests: too few to say what one costs
    assert limits.cut > 10**6
    limits.handed = 50
    limits.next_round()
    for position in range(1, 50):  # the first request of the round was not a prediction: nothing to compare with
        limits.waited(position, 0.001 * position, 100.0)
    assert limits.cut > 10**6
    run_round(limits, [0.0] + [1.0] * 9, 100.0)  # however slow, the protocol still hands some over
    assert limits.cut == MIN_CUT


def test_congestion_needs_a_long_wait_and_expires():
    """Short waits never mark the worker congested; a long one does, for ``CONGESTED_HOLD`` seconds."""
    limits = Admission(Metrics(), max_in_flight=64, max_queue_ms=50)
    run_round(limits, [0.0001 * i for i in range(100)], 100.0)  # busy but quick: last waited 10 ms
    assert limits.congested_until < 100.0
    limits.waited(5, 0.030, 101.0)
    assert limits.congested_until == pytest.approx(101.0 + CONGESTED_HOLD)


def test_middleware_reports_each_request_s_place_in_its_round():
    """A request the server stamped with its place in the round is measured; the cut then reflects it."""

    async def scenario() -> None:
        install_arrival_stamps(asyncio.get_running_loop())
        app, inner, _ = make(max_in_flight=64, max_queue_ms=50)
        limits = app.limits
        limits.handed = 10
        limits.next_round()

        async def placed(position: int) -> int:
            task = asyncio.current_task()
            assert isinstance(task, StampedTask)
            task.arrival -= 0.002 * position  # each waited 2 ms more than the one before
            scope = http("/predict")
            scope[ROUND_KEY] = position
            return (await call(app, scope))[0]

        assert [await asyncio.create_task(placed(p)) for p in range(10)] == [200] * 10
        assert inner.calls == 10
        assert limits.cut == pytest.approx(0.050 * 0.3 / 0.002, abs=1)  # 2 ms a request: 7 fit in 15 ms

    asyncio.run(scenario())
